// Internal to the CUDA backend: the cuBLASLt GEMM every matmul-shaped kernel goes through (the
// linear layers, the chunked lm_head + cross-entropy) and the matmul ops working inside a
// caller's workspace cursor (cross-entropy carves its own buffers first). Mirrors cpu/gemm.h.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/cuda_common.h"
#include "backend/kernels.h"

namespace tuner::cuda {

enum class GemmType : uint8_t { F32, BF16 };  // the element type of A and B

// Row-major, as cpu::sgemm: C (M, N) = or += op(A) (M, K) @ op(B) (K, N). A is stored (M, lda),
// or (K, lda) when trans_a; B is stored (K, ldb), or (N, ldb) when trans_b; C is (M, ldc), f32,
// or bf16 with BF16 operands (f32 accumulation, the result rounded once on store).
// accumulate: beta = 1. tf32: F32 operands multiplied in TF32 on tensor cores.
// cuBLASLt is column-major: the call computes C^T = op(B)^T op(A)^T (see matmul.cu).
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const void* A, int64_t lda, const void* B,
          int64_t ldb, ActOut C, int64_t ldc, bool accumulate, GemmType type, bool tf32, cudaStream_t stream);

// The matmul ops with their scratch taken from ws (sized by matmul_workspace_bytes). Activations
// as in the kernel table (f32 or bf16; bf16 needs BF16 compute, see matmul.cu).
void matmul_forward_ws(Workspace& ws, ActOut y, ActIn x, const WeightView& w, const float* bias, int64_t N,
                       bool accumulate);
void matmul_backward_input_ws(Workspace& ws, float* dx, ActIn dy, const WeightView& w, int64_t N,
                              bool accumulate);
void matmul_backward_weight_ws(Workspace& ws, float* dw, float* dbias, ActIn dy, ActIn x, int64_t N,
                               int64_t out, int64_t in);

}  // namespace tuner::cuda
