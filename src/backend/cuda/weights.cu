// Device decoders for every weight dtype (layouts in quant/quant.h, quant/nf4.h,
// quant/ggml_blocks.h), the tile conversion matmul uses, and the embedding gather.
//
// One thread per output element: each thread finds its block and decodes its own value (the
// block's scale bytes are re-read by its neighbours, from L1). The conversion is bound by the
// tile writes (4 or 2 bytes per element against 0.5-1 byte read), so this simple form is within
// a small factor of a block-per-warp decoder; the GEMM that follows dominates either way.
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/weights.h"
#include "quant/ggml_blocks.h"
#include "quant/nf4.h"
#include "quant/quant.h"

namespace tuner::cuda {

namespace {

__constant__ float c_nf4_code[16];
__constant__ float c_nf4_dynamic[256];

// What a kernel needs to address a weight: the dtype and the bytes of one row (row-addressable
// types), or for NF4 the total element count (its scales follow all codes).
struct DevWeight {
    const uint8_t* data;
    DType dtype;
    int64_t rows, cols;
    int64_t row_bytes;
};

DevWeight dev_weight(const WeightView& w) {
    DevWeight d;
    d.data = static_cast<const uint8_t*>(w.data);
    d.dtype = w.dtype;
    d.rows = w.rows, d.cols = w.cols;
    d.row_bytes = dtype_is_quantized(w.dtype) ? (w.dtype == DType::NF4 ? 0 : int64_t(dtype_row_bytes(w.dtype, w.cols)))
                                              : int64_t(dtype_size(w.dtype)) * w.cols;
    return d;
}

__device__ __forceinline__ float f16_at(const uint8_t* p) {
    // Assembled from bytes: no alignment assumption about the block.
    const unsigned short bits = (unsigned short)(p[0] | (p[1] << 8));
    return __half2float(__ushort_as_half(bits));
}

// The 6-bit scale and min of sub-block j of a Q4_K / Q5_K block (quant/ggml_blocks.h).
__device__ __forceinline__ void k_scale_min(int j, const uint8_t* s, int* sc, int* m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// Element (r, c) of the weight as f32, exactly as the CPU decoders compute it.
__device__ float weight_at(const DevWeight& w, int64_t r, int64_t c) {
    switch (w.dtype) {
        case DType::F32: return reinterpret_cast<const float*>(w.data)[r * w.cols + c];
        case DType::F16: return __half2float(reinterpret_cast<const __half*>(w.data)[r * w.cols + c]);
        case DType::BF16: return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(w.data)[r * w.cols + c]);
        case DType::NF4: {
            // Header {magic, flags, n}, codes (n / 2 bytes, first value in the high nibble), then
            // f32 absmax[nb], or f32 offset, f32 absmax2[nb2], u8 qabsmax[nb].
            const Nf4Header* h = reinterpret_cast<const Nf4Header*>(w.data);
            if (h->magic != kNF4Magic) return __int_as_float(0x7fc00000);  // not an NF4 buffer: NaN, never a number
            const int64_t n = h->n, e = r * w.cols + c, b = e / kNF4Block;
            const uint8_t* codes = w.data + sizeof(Nf4Header);
            const uint8_t* tail = codes + n / 2;
            float absmax;
            if (h->flags & kNF4FlagDoubleQuant) {
                const float offset = *reinterpret_cast<const float*>(tail);
                const float* absmax2 = reinterpret_cast<const float*>(tail) + 1;
                const int64_t nb = n / kNF4Block, nb2 = (nb + kNF4DQBlock - 1) / kNF4DQBlock;
                const uint8_t* q8 = reinterpret_cast<const uint8_t*>(absmax2 + nb2);
                // bitsandbytes: f32(code8 * absmax2), then + offset, two roundings.
                absmax = __fadd_rn(__fmul_rn(c_nf4_dynamic[q8[b]], absmax2[b / kNF4DQBlock]), offset);
            } else {
                absmax = reinterpret_cast<const float*>(tail)[b];
            }
            const uint8_t byte = codes[e >> 1];
            const int idx = (e & 1) ? (byte & 15) : (byte >> 4);
            return __fmul_rn(c_nf4_code[idx], absmax);
        }
        case DType::Q8_0: {
            const uint8_t* blk = w.data + r * w.row_bytes + (c / 32) * 34;
            return __fmul_rn(float(int8_t(blk[2 + c % 32])), f16_at(blk));
        }
        case DType::Q4_0: {
            const uint8_t* blk = w.data + r * w.row_bytes + (c / 32) * 18;
            const int e = int(c % 32);
            const int q = (e < 16 ? (blk[2 + e] & 15) : (blk[2 + e - 16] >> 4)) - 8;
            return __fmul_rn(float(q), f16_at(blk));
        }
        case DType::Q4_K:
        case DType::Q5_K: {
            const bool q5 = w.dtype == DType::Q5_K;
            const uint8_t* blk = w.data + r * w.row_bytes + (c / 256) * (q5 ? 176 : 144);
            const int e = int(c % 256), j = e / 32, chunk = e / 64, l = e % 64;
            const uint8_t* qs = blk + (q5 ? 48 : 16);
            int q = l < 32 ? (qs[32 * chunk + l] & 15) : (qs[32 * chunk + l - 32] >> 4);
            if (q5) q += 16 * ((blk[16 + e % 32] >> j) & 1);
            int sc, m;
            k_scale_min(j, blk + 4, &sc, &m);
            const float d1 = __fmul_rn(f16_at(blk), float(sc)), m1 = __fmul_rn(f16_at(blk + 2), float(m));
            return __fmaf_rn(d1, float(q), -m1);
        }
        case DType::Q6_K: {
            const uint8_t* blk = w.data + r * w.row_bytes + (c / 256) * 210;
            const int e = int(c % 256), h = e / 128, i = e % 128, p = i / 32, l = i % 32;
            const uint8_t qlb = blk[64 * h + 32 * (p & 1) + l];
            const int lo4 = p < 2 ? (qlb & 15) : (qlb >> 4);
            const int hi2 = (blk[128 + 32 * h + l] >> (2 * p)) & 3;
            const int q = (lo4 | (hi2 << 4)) - 32;
            const float ds = __fmul_rn(f16_at(blk + 208), float(int8_t(blk[192 + e / 16])));
            return __fmul_rn(ds, float(q));
        }
        default: return __int_as_float(0x7fc00000);
    }
}

template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) {
    return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}

// dst (rows, cols) = rows [r0, r0 + rows) of w.
template <typename T>
__global__ void weight_rows_kernel(T* dst, DevWeight w, int64_t r0, int64_t rows) {
    const int64_t n = rows * w.cols;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t r = i / w.cols, c = i - r * w.cols;
        dst[i] = from_f32<T>(weight_at(w, r0 + r, c));
    }
}

__global__ void f32_to_bf16_kernel(__nv_bfloat16* dst, const float* src, int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

// out (N, C): block n copies row ids[n].
__global__ void embedding_gather_kernel(float* out, const int32_t* ids, DevWeight w, int64_t N) {
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        const int64_t id = ids[n];
        float* o = out + n * w.cols;
        for (int64_t c = threadIdx.x; c < w.cols; c += blockDim.x) o[c] = weight_at(w, id, c);
    }
}

template <typename T>
void launch_weight_rows(T* dst, const WeightView& w, int64_t r0, int64_t rows, cudaStream_t stream) {
    TUNER_ASSERT(r0 >= 0 && rows >= 0 && r0 + rows <= w.rows);
    const int64_t n = rows * w.cols;
    if (n == 0) return;
    launch(weight_rows_kernel<T>, grid_for(n, 256), 256, 0, stream, dst, dev_weight(w), r0, rows);
    CUDA_LAUNCH_CHECK("weight_rows_kernel");
}

}  // namespace

void init_weight_tables() {
    CUDA_CHECK(cudaMemcpyToSymbol(c_nf4_code, kNF4Code, sizeof(float) * 16));
    CUDA_CHECK(cudaMemcpyToSymbol(c_nf4_dynamic, kNF4DynamicCode, sizeof(float) * 256));
}

void check_weight(const WeightView& w, const char* op) {
    switch (w.dtype) {
        case DType::F32:
        case DType::F16:
        case DType::BF16:
        case DType::NF4:
        case DType::Q8_0:
        case DType::Q4_0:
        case DType::Q4_K:
        case DType::Q5_K:
        case DType::Q6_K: break;
        default: fail("[cuda] {}: weights of dtype {} are not supported", op, dtype_name(w.dtype));
    }
    // NF4 quantises the flattened tensor (a row may start inside a block: weight_at finds the
    // block of each element); the GGUF types store whole blocks per row.
    if (w.dtype == DType::NF4 && (w.rows * w.cols) % kNF4Block != 0)
        fail("[cuda] {}: an NF4 weight needs rows * cols to be a multiple of 64 ({} x {})", op, w.rows, w.cols);
    if (dtype_is_quantized(w.dtype) && w.dtype != DType::NF4 && w.cols % dtype_block_elems(w.dtype) != 0)
        fail("[cuda] {}: a {} weight needs rows of whole blocks of {} (cols = {})", op, dtype_name(w.dtype),
             dtype_block_elems(w.dtype), w.cols);
}

void weight_rows_to_f32(float* dst, const WeightView& w, int64_t r0, int64_t rows, cudaStream_t stream) {
    launch_weight_rows(dst, w, r0, rows, stream);
}

void weight_rows_to_bf16(__nv_bfloat16* dst, const WeightView& w, int64_t r0, int64_t rows, cudaStream_t stream) {
    launch_weight_rows(dst, w, r0, rows, stream);
}

void f32_to_bf16(__nv_bfloat16* dst, const float* src, int64_t n, cudaStream_t stream) {
    if (n <= 0) return;
    launch(f32_to_bf16_kernel, grid_for(n, 256), 256, 0, stream, dst, src, n);
    CUDA_LAUNCH_CHECK("f32_to_bf16_kernel");
}

void embedding_gather(float* out, const int32_t* ids, const WeightView& table, int64_t N, cudaStream_t stream) {
    if (N <= 0 || table.cols <= 0) return;
    const unsigned blocks = unsigned(N < 65535 ? N : 65535);
    launch(embedding_gather_kernel, blocks, 256, 0, stream, out, ids, dev_weight(table), N);
    CUDA_LAUNCH_CHECK("embedding_gather_kernel");
}

}  // namespace tuner::cuda
