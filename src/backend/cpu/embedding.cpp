// embedding: token ids -> rows of a (V, C) table stored in any dtype.

#include <algorithm>

#include "backend/kernels.h"
#include "quant/quant.h"

namespace tuner::cpu {

// out (N, C) = table[ids]; table (V, C) in any weight dtype, converted row by row (a quantised
// row is cols / block_elems whole blocks, or for NF4 elements [id * C, (id + 1) * C)).
void embedding_forward(float* out, const int32_t* ids, const WeightView& table, int64_t N) {
    const int64_t C = table.cols;
    if (dtype_is_quantized(table.dtype)) {
#pragma omp parallel for schedule(static) if (N * C > 65536)
        for (int64_t n = 0; n < N; n++) weight_rows_to_f32(out + n * C, table, ids[n], 1);
        return;
    }
    const size_t row_bytes = size_t(C) * dtype_size(table.dtype);
    const char* base = static_cast<const char*>(table.data);
#pragma omp parallel for schedule(static) if (N * C > 65536)
    for (int64_t n = 0; n < N; n++)
        convert_to_f32(out + n * C, base + size_t(ids[n]) * row_bytes, table.dtype, size_t(C));
}

// dtable (V, C) += scatter of dout (N, C) at ids. Repeated ids add up. Threads split the columns
// rather than the rows, so two threads never write the same element and the summation order
// (row order) is the same for any thread count.
void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t N, int64_t C) {
    constexpr int64_t kCols = 64;
    const int64_t nblocks = (C + kCols - 1) / kCols;
#pragma omp parallel for schedule(static) if (N * C > 65536)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        const int64_t c0 = blk * kCols, nc = std::min(kCols, C - c0);
        for (int64_t n = 0; n < N; n++) {
            float* dst = dtable + int64_t(ids[n]) * C + c0;
            const float* src = dout + n * C + c0;
#pragma omp simd
            for (int64_t c = 0; c < nc; c++) dst[c] += src[c];
        }
    }
}

}  // namespace tuner::cpu
