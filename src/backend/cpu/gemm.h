// Internal to the CPU backend: the f32 GEMM every matmul-shaped kernel goes through (linear
// layers, the fused lm_head + cross-entropy), and the conversion of WeightView rows to f32 tiles.
// Implemented in matmul.cpp on oneDNN matmul primitives, cached by shape.
#pragma once

#include <cstdint>

#include "backend/kernels.h"
#include "quant/quant.h"

namespace tuner::cpu {

// C (M, N) = or += op(A) (M, K) @ op(B) (K, N), then + bias (N) when bias is not null.
// Row-major with leading dimensions: A is stored (M, lda), or (K, lda) when trans_a (op(A) = A^T);
// B is stored (K, ldb), or (N, ldb) when trans_b; C is (M, ldc). accumulate: C += (beta = 1).
// Parallel inside (OpenMP threads); call it from one thread at a time.
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
           int64_t ldb, float* C, int64_t ldc, bool accumulate, const float* bias = nullptr);

// weight_rows_to_f32 (rows of a WeightView of any dtype as f32) lives in quant/quant.h.

// Rows per converted tile for a low-precision weight: about 4 MiB of f32 (large enough that the
// GEMM on a tile runs near full speed, small enough to stay in the last-level cache).
int64_t weight_tile_rows(int64_t cols);

}  // namespace tuner::cpu
