// Internal to the CUDA backend: frozen weights of any stored dtype decoded on the device, the
// counterpart of quant/quant.h's weight_rows_to_f32. Used by matmul (dequantise a tile of rows,
// then GEMM), embedding (gather rows) and lm_head + cross-entropy.
//
// Decoding is bit-identical to the CPU decoders (quant/nf4.h, quant/ggml_blocks.h): every
// product and sum is an explicitly rounded __fmul_rn / __fadd_rn (no contraction into FMA),
// and the Q4_K / Q5_K d1 * q - m1 is one __fmaf_rn as on the CPU. NF4's code books live in
// __constant__ memory, filled once by init_weight_tables() (from quant/nf4.cpp's tables).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/kernels.h"

namespace tuner::cuda {

void init_weight_tables();  // called by init()

// Throws "[cuda] OP: ..." for a dtype the device cannot decode or a row that is not whole blocks.
void check_weight(const WeightView& w, const char* op);

// dst (rows, w.cols) = rows [r0, r0 + rows) of w, converted (bf16: round to nearest even).
void weight_rows_to_f32(float* dst, const WeightView& w, int64_t r0, int64_t rows, cudaStream_t stream);
void weight_rows_to_bf16(__nv_bfloat16* dst, const WeightView& w, int64_t r0, int64_t rows, cudaStream_t stream);
// dst (n) = src (n) rounded to bf16.
void f32_to_bf16(__nv_bfloat16* dst, const float* src, int64_t n, cudaStream_t stream);
// out (N, C) = rows ids[n] of table (V, C).
void embedding_gather(float* out, const int32_t* ids, const WeightView& table, int64_t N, cudaStream_t stream);

}  // namespace tuner::cuda
