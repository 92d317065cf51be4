// Sizes, quantisation and f32 conversion of weight rows for every weight dtype (see quant.h).

#include "quant/quant.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "quant/ggml_blocks.h"
#include "quant/nf4.h"

namespace tuner {

int64_t dtype_block_elems(DType t) {
    if (!dtype_is_quantized(t)) return 1;
    if (t == DType::NF4) return kNF4Block;
    return ggml_block_elems(t);
}

size_t dtype_nbytes(DType t, int64_t n, const QuantOptions& opt) {
    TUNER_ASSERT_MSG(n >= 0 && n % dtype_block_elems(t) == 0, "element count is not a whole number of blocks");
    if (!dtype_is_quantized(t)) return size_t(n) * dtype_size(t);
    if (t == DType::NF4) return nf4_nbytes(n, opt.nf4_double_quant);
    return size_t(n / ggml_block_elems(t)) * ggml_block_bytes(t);
}

size_t dtype_row_bytes(DType t, int64_t cols) {
    TUNER_ASSERT_MSG(t != DType::NF4, "NF4 rows are not byte-addressable (the scales follow all codes)");
    return dtype_nbytes(t, cols);
}

void weight_rows_to_f32(float* dst, const WeightView& w, int64_t r0, int64_t nrows) {
    const int64_t cols = w.cols;
    TUNER_ASSERT(r0 >= 0 && nrows >= 0 && r0 + nrows <= w.rows);
    if (!dtype_is_quantized(w.dtype)) {
        const size_t esize = dtype_size(w.dtype);
        const char* base = static_cast<const char*>(w.data) + size_t(r0) * size_t(cols) * esize;
#pragma omp parallel for schedule(static) if (nrows * cols > 65536)
        for (int64_t r = 0; r < nrows; r++)
            convert_to_f32(dst + r * cols, base + size_t(r) * size_t(cols) * esize, w.dtype, size_t(cols));
        return;
    }
    if (w.dtype == DType::NF4) {
        // bitsandbytes quantises the flattened tensor, so a row range is the element range
        // [e0, e1), whose ends need not fall on a block boundary (e.g. a 64 x 172 down_proj): the
        // whole blocks inside go straight to dst, the partial blocks at either end through a
        // one-block buffer.
        TUNER_ASSERT_MSG(nf4_numel(w.data) == w.rows * cols, "NF4 buffer does not match the weight shape");
        const int64_t e0 = r0 * cols, e1 = (r0 + nrows) * cols;
        const int64_t a = (e0 + 63) / 64 * 64, b = std::max(a, e1 / 64 * 64);
        auto partial = [&](int64_t from, int64_t to) {  // [from, to) inside one block
            if (from >= to) return;
            float block[64];
            const int64_t start = from / 64 * 64;
            nf4_dequantize(block, w.data, start, 64);
            std::memcpy(dst + (from - e0), block + (from - start), size_t(to - from) * sizeof(float));
        };
        if (e1 <= a) {  // the whole range lies inside one block
            partial(e0, e1);
            return;
        }
        partial(e0, a);
        partial(b, e1);
        const int64_t chunk = 64 * 256;
        const int64_t nchunks = (b - a + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (b - a > 65536)
        for (int64_t c = 0; c < nchunks; c++) {
            const int64_t from = a + c * chunk, count = std::min(chunk, b - from);
            nf4_dequantize(dst + (from - e0), w.data, from, count);
        }
        return;
    }
    TUNER_ASSERT_MSG(cols % dtype_block_elems(w.dtype) == 0, "quantised weight rows must be whole blocks");
    const size_t row_bytes = dtype_row_bytes(w.dtype, cols);
    const int64_t nblocks = cols / ggml_block_elems(w.dtype);
    const char* base = static_cast<const char*>(w.data) + size_t(r0) * row_bytes;
#pragma omp parallel for schedule(static) if (nrows * cols > 65536)
    for (int64_t r = 0; r < nrows; r++) ggml_dequantize(w.dtype, dst + r * cols, base + size_t(r) * row_bytes, nblocks);
}

void quantize_rows(void* dst, DType t, const float* src, int64_t rows, int64_t cols, const QuantOptions& opt) {
    const int64_t n = rows * cols;
    if (!dtype_is_quantized(t)) {
        convert_from_f32(dst, t, src, size_t(n));
        return;
    }
    if (t == DType::NF4) {  // the flattened tensor: only n must be whole blocks (nf4_quantize checks)
        nf4_quantize(dst, src, n, opt.nf4_double_quant);
        return;
    }
    TUNER_ASSERT_MSG(cols % dtype_block_elems(t) == 0, "quantised weight rows must be whole blocks");
    const size_t row_bytes = dtype_row_bytes(t, cols);
    const int64_t nblocks = cols / ggml_block_elems(t);
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t r = 0; r < rows; r++)
        ggml_quantize(t, static_cast<char*>(dst) + size_t(r) * row_bytes, src + r * cols, nblocks);
}

void convert_weight(void* dst, DType dst_type, const WeightView& w, const QuantOptions& opt, size_t chunk_bytes) {
    const int64_t rows = w.rows, cols = w.cols, n = rows * cols;
    if (dst_type == w.dtype && !(dst_type == DType::NF4 && nf4_double_quant(w.data) != opt.nf4_double_quant)) {
        std::memcpy(dst, w.data, dst_type == DType::NF4 ? nf4_nbytes(n, opt.nf4_double_quant) : dtype_nbytes(w.dtype, n));
        return;
    }
    // Rows per chunk: whole NF4 blocks (64 elements) when the target is NF4.
    int64_t chunk_rows = std::max<int64_t>(1, int64_t(chunk_bytes / sizeof(float)) / std::max<int64_t>(cols, 1));
    if (dst_type == DType::NF4) {
        TUNER_ASSERT_MSG(n % 64 == 0, "an NF4 tensor must have a multiple of 64 elements");
        while ((chunk_rows * cols) % 64 != 0) chunk_rows++;
    }
    chunk_rows = std::min(chunk_rows, rows);
    std::vector<float> tile(size_t(chunk_rows * cols));
    std::vector<float> absmax;
    if (dst_type == DType::NF4) {
        nf4_init(dst, n, opt.nf4_double_quant);
        absmax.resize(size_t(n / 64));
    }
    const size_t row_bytes = dst_type == DType::NF4 ? 0 : dtype_row_bytes(dst_type, cols);
    for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows) {
        const int64_t nr = std::min(chunk_rows, rows - r0);
        weight_rows_to_f32(tile.data(), w, r0, nr);
        if (dst_type == DType::NF4)
            nf4_quantize_range(dst, tile.data(), r0 * cols, nr * cols, absmax.data() + r0 * cols / 64);
        else
            quantize_rows(static_cast<char*>(dst) + size_t(r0) * row_bytes, dst_type, tile.data(), nr, cols, opt);
    }
    if (dst_type == DType::NF4) nf4_store_absmax(dst, absmax.data());
}

}  // namespace tuner
