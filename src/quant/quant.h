// One entry point for weights stored in any dtype: sizes, quantisation of f32 rows, and the
// conversion of weight rows to f32 that every CPU kernel with a frozen weight goes through
// (matmul, embedding, lm_head + cross-entropy), tile by tile.
//
// Storage of a weight W (rows, cols), row-major, for each dtype:
//   F32 / BF16 / F16          rows * cols elements of dtype_size bytes.
//   Q8_0, Q4_0, Q4_K, Q5_K, Q6_K (GGUF blocks, quant/ggml_blocks.h)
//                             each row is cols / block_elems whole blocks, rows back to back:
//                             row r starts at byte r * dtype_row_bytes(dtype, cols).
//   NF4 (quant/nf4.h)         one NF4 buffer of rows * cols elements (bitsandbytes quantises
//                             the flattened tensor): row r is elements [r * cols, (r+1) * cols).
// For the GGUF block types cols must be a multiple of dtype_block_elems (for the K types 256:
// a 576-wide weight cannot be Q4_K, as in llama.cpp); NF4 needs only rows * cols to be a
// multiple of 64 (rows may start and end inside a block).
//
//   std::vector<uint8_t> buf(dtype_nbytes(DType::NF4, out * in, {.nf4_double_quant = true}));
//   quantize_rows(buf.data(), DType::NF4, w_f32, out, in, {.nf4_double_quant = true});
//   cpu::matmul_forward(y, x, WeightView{buf.data(), DType::NF4, out, in}, nullptr, N, false);
#pragma once

#include <cstddef>
#include <cstdint>

#include "backend/kernels.h"  // WeightView
#include "core/dtype.h"

namespace tuner {

struct QuantOptions {
    bool nf4_double_quant = false;  // NF4 only: 8-bit double quantisation of the block absmax
};

// Elements per block: 1 for non-quantised types, 64 for NF4, 32 for Q8_0 / Q4_0, 256 for K types.
int64_t dtype_block_elems(DType t);
// Bytes to store n elements of type t (n a multiple of dtype_block_elems(t)).
size_t dtype_nbytes(DType t, int64_t n, const QuantOptions& opt = {});
// Bytes of one row of cols elements for row-addressable types (everything except NF4, whose
// per-block scales live after all the codes).
size_t dtype_row_bytes(DType t, int64_t cols);

// dst (rows, w.cols) f32 = rows [r0, r0 + rows) of w, for every weight dtype (F32, BF16, F16,
// NF4, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K). Parallel over rows (OpenMP) when the tile is large.
void weight_rows_to_f32(float* dst, const WeightView& w, int64_t r0, int64_t rows);

// dst = src (rows, cols) f32 stored as dtype t (any quantised type, or F32/BF16/F16);
// dst holds dtype_nbytes(t, rows * cols, opt) bytes.
void quantize_rows(void* dst, DType t, const float* src, int64_t rows, int64_t cols, const QuantOptions& opt = {});

// dst (w.rows x w.cols, stored as dst_type) = w converted from its dtype, a few rows at a time:
// the f32 working copy is at most chunk_bytes (default 4 MiB), never the whole weight, so a
// loader can quantise a 7B model's 11008 x 4096 matrices straight from a memory-mapped file.
// Any weight dtype to F32/BF16/F16/NF4/Q8_0/Q4_0/Q4_K/Q5_K/Q6_K (same-dtype copies are memcpy).
// For NF4 the block absmax values (rows * cols / 64 floats) are gathered and stored at the end.
void convert_weight(void* dst, DType dst_type, const WeightView& w, const QuantOptions& opt = {},
                    size_t chunk_bytes = size_t(4) << 20);

}  // namespace tuner
