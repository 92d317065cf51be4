// Tensor-core flash attention (bf16 WMMA, f32 accumulation): the kernels behind attention_forward /
// attention_backward when cuda::config().compute is BF16 and HD <= 128 (attention.cu picks them;
// F32 and TF32 compute keep the f32 kernels there). Self-contained (CUDA headers only) so that the
// kernel lab (dev/cuda/attention_forward.cu, attention_backward.cu, version 3) compiles and times
// exactly these kernels.
//
// Shapes and conventions are attention.cu's: q, out, dq (B, T, NH, HD); k, v, dk, dv (B, T, NKV,
// HD); lse, D (B, NH, T); query head h reads kv head h / G (G = NH / NKV); query t sees keys
// [seg_start[b*T + t], t]; scores scaled by 1/sqrt(HD); lse = m + log(l) of the scaled scores;
// D = rowsum(dout * out) (attention.cu's delta kernel, f32).
//
// Numerics: q, k, v, dout are rounded to bf16 when staged into shared memory (one rounding,
// relative 2^-9; q, k, v stored as bf16, Dims::q16 / k16 / v16 (kernels.h ActIn), are staged as
// they are: the values an f32 copy of them would round to); every product runs on tensor cores
// (WMMA m16n16k16, bf16 x bf16 exact, f32 accumulation); masking, the online softmax (running max m, sum l of the f32 probabilities),
// lse, dS = P (dP - D) and the final scaling are f32 on CUDA cores; P and dS are rounded to bf16
// as the A operand of P V, P^T dO, dS K and dS^T Q. Accumulators are never read element by
// element: each product is stored to a per-warp f32 tile in shared memory (store_matrix_sync)
// and the lanes read it back with a layout we choose (lane = 2 * row + half, float4 chunks
// 2c + half of the row), so nothing depends on the unspecified fragment layout.
//
// Structure (128 threads = 4 warps per block, each warp owns 16 rows; HDMAX in {64, 128}, tiles
// zero-padded to HDMAX; bf16 tiles have a row stride of HDMAX + 8 elements and score tiles 64 + 8,
// so the 16-byte row shift spreads a quarter-warp's float4 reads over all 32 banks and keeps the
// 32-byte alignment load_matrix_sync needs). out is written as f32, or rounded to bf16 (Dims::o16).
// The dtype flags are uniform over the grid and tested once per staged tile or written row, so
// the kernels are not instantiated per dtype combination (and the kernel lab, which passes f32
// pointers and leaves the flags 0, runs them unchanged):
//  * forward, per (64-query block, head, batch row): Q (64 x HDMAX) staged once; per 64-key tile:
//    K, V staged, S = Q K^T (16 x 64 per warp), masked online softmax, O += P V with O in
//    registers (lane owns HDMAX / 2 of its row's dims), rescaled by exp(m_old - m_new).
//  * dq, per (64-query block, head, batch row): Q, dO staged; per 64-key tile S = Q K^T,
//    dP = dO V^T, dS = P (dP - D) with P = exp(scale S - lse); dQ += dS K in accumulator
//    fragments (no rescaling needed), scaled at the end.
//  * dk / dv, per (64-key block, kv head, batch row), over the G query heads of the kv head and
//    their 64-query tiles: S^T = K Q^T, dP^T = V dO^T, dV += P^T dO, dK += dS^T Q in accumulator
//    fragments. No atomics anywhere: every output element is written by one thread, once, and
//    the summation order is fixed, so results are bit-reproducible run to run.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cmath>
#include <cstdint>

// bf16 WMMA needs sm_80+. A build for an older architecture (CMake's default when none is given)
// compiles the kernels as traps; cuda::available() refuses such devices anyway.
#if defined(TUNER_CUDA_EMU) || !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define TUNER_TC_ARCH_OK 1
#else
#define TUNER_TC_ARCH_OK 0
#endif

#if defined(TUNER_CUDA_EMU)
#define TUNER_TC_SMEM(name) unsigned char* name = static_cast<unsigned char*>(::tuner::emu::dynamic_shared())
#else
#define TUNER_TC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#endif

namespace tuner::cuda::attn_tc {

namespace wmma = nvcuda::wmma;
using bf16 = __nv_bfloat16;

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int BQ = 16 * kWarps;  // queries per block (forward, dq); keys per block (dk / dv)
constexpr int BK = 64;           // keys per tile (forward, dq); queries per tile (dk / dv)
constexpr int LDS = BK + 8;      // row stride (elements) of the per-warp score tiles, f32 and bf16

struct Dims {
    int B, T, NH, NKV, HD, G;
    float scale;
    // HD % 4 == 0 and q, k, v, dout, out, dq, dk, dv aligned for 4-element access (16 bytes f32,
    // 8 bytes bf16): float4 / 4 x bf16 global access
    int vec4;
    int q16 = 0, k16 = 0, v16 = 0, o16 = 0;  // q, k, v, out stored as bf16 (else f32)
};

// Supported head dims: the bucket HDMAX for HD (0: use the f32 kernels).
__host__ __device__ constexpr int bucket(int HD) { return HD <= 64 ? 64 : HD <= 128 ? 128 : 0; }

template <int HDMAX>
__host__ __device__ constexpr int ldh() {
    return HDMAX + 8;
}
__host__ __device__ constexpr size_t round128(size_t b) { return (b + 127) / 128 * 128; }

// Dynamic shared memory per block (bytes; a multiple of 128 so every region stays 32-byte aligned).
template <int HDMAX>
__host__ __device__ constexpr size_t forward_smem_bytes() {
    // sQ, sK, sV (bf16, 64 x LDH); per warp: f32 scratch 16 x LDH (S, then P V), bf16 P 16 x LDS; 4 ints
    return round128(3 * size_t(BQ) * ldh<HDMAX>() * 2 + kWarps * (16 * size_t(ldh<HDMAX>()) * 4 + 16 * LDS * 2) + 16);
}
template <int HDMAX>
__host__ __device__ constexpr size_t dq_smem_bytes() {
    // sQ, sdO, sK, sV (bf16, 64 x LDH); per warp: f32 scratch 16 x LDS (S, then dP), bf16 dS 16 x LDS; 4 ints
    return round128(4 * size_t(BQ) * ldh<HDMAX>() * 2 + kWarps * (16 * LDS * 4 + 16 * LDS * 2) + 16);
}
template <int HDMAX>
__host__ __device__ constexpr size_t dkv_smem_bytes() {
    // sK, sV, sQ, sdO (bf16, 64 x LDH); per warp: f32 16 x LDS, bf16 P^T and dS^T 16 x LDS; lse, D, seg of 64 queries
    return round128(4 * size_t(BQ) * ldh<HDMAX>() * 2 + kWarps * (16 * LDS * 4 + 2 * 16 * LDS * 2) + 3 * BK * 4);
}

// Stages rows [r0, r0 + nrows) of one head of x (f32, rows `ld` floats apart, the head at `off`) as
// bf16 into tile (nrows x LDH), zero beyond T and HD. Consecutive threads read consecutive float4s
// of a row (coalesced).
template <int HDMAX>
__device__ __forceinline__ void stage_f32(bf16* tile, const float* x, int64_t row_base, int64_t ld, int64_t off,
                                          int r0, int nrows, const Dims& g) {
    constexpr int C4 = HDMAX / 4;
    for (int i = threadIdx.x; i < nrows * C4; i += kThreads) {
        const int r = i / C4, d = (i % C4) * 4, t = r0 + r;
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (t < g.T && d < g.HD) {
            const float* src = x + (row_base + t) * ld + off + d;
            if (g.vec4) {
                v = *reinterpret_cast<const float4*>(src);
            } else {
                v.x = src[0];
                v.y = d + 1 < g.HD ? src[1] : 0.0f;
                v.z = d + 2 < g.HD ? src[2] : 0.0f;
                v.w = d + 3 < g.HD ? src[3] : 0.0f;
            }
        }
        __nv_bfloat162* dst = reinterpret_cast<__nv_bfloat162*>(tile + r * ldh<HDMAX>() + d);
        dst[0] = __floats2bfloat162_rn(v.x, v.y);
        dst[1] = __floats2bfloat162_rn(v.z, v.w);
    }
}

// Four bf16 elements moved as one 8-byte access (an aggregate of bf16: no aliasing games).
struct alignas(8) Bf16x4 {
    bf16 e[4];
};

// stage_f32 for x stored as bf16: copied as it is, 4 elements (8 bytes) at a time.
template <int HDMAX>
__device__ __forceinline__ void stage_bf16_src(bf16* tile, const bf16* x, int64_t row_base, int64_t ld, int64_t off,
                                               int r0, int nrows, const Dims& g) {
    constexpr int C4 = HDMAX / 4;
    const bf16 zero = __float2bfloat16_rn(0.0f);
    for (int i = threadIdx.x; i < nrows * C4; i += kThreads) {
        const int r = i / C4, d = (i % C4) * 4, t = r0 + r;
        Bf16x4 v = {{zero, zero, zero, zero}};
        if (t < g.T && d < g.HD) {
            const bf16* src = x + (row_base + t) * ld + off + d;
            if (g.vec4) {
                v = *reinterpret_cast<const Bf16x4*>(src);
            } else {
                for (int j = 0; j < 4; j++)
                    if (d + j < g.HD) v.e[j] = src[j];
            }
        }
        // Tile rows are LDH * 2 bytes apart (a multiple of 16) and d is a multiple of 4: 8-byte aligned.
        *reinterpret_cast<Bf16x4*>(tile + r * ldh<HDMAX>() + d) = v;
    }
}

// x stored as bf16 (is_bf16) or f32.
template <int HDMAX>
__device__ __forceinline__ void stage_bf16(bf16* tile, const void* x, int is_bf16, int64_t row_base, int64_t ld,
                                           int64_t off, int r0, int nrows, const Dims& g) {
    if (is_bf16) stage_bf16_src<HDMAX>(tile, static_cast<const bf16*>(x), row_base, ld, off, r0, nrows, g);
    else stage_f32<HDMAX>(tile, static_cast<const float*>(x), row_base, ld, off, r0, nrows, g);
}

#if TUNER_TC_ARCH_OK
// dst (16 x 64, f32, row stride LDS) = A (16 x HDMAX, row-major bf16 at a, stride lda) times the
// transpose of Bt (64 x HDMAX, row-major bf16 at bt, stride ldb). Warp-collective.
template <int HDMAX>
__device__ __forceinline__ void mm_abt(float* dst, const bf16* a, const bf16* bt) {
    constexpr int L = ldh<HDMAX>();
#pragma unroll
    for (int j = 0; j < BK / 16; j++) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
        wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (int kk = 0; kk < HDMAX / 16; kk++) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> fb;
            wmma::load_matrix_sync(fa, a + kk * 16, L);
            wmma::load_matrix_sync(fb, bt + j * 16 * L + kk * 16, L);
            wmma::mma_sync(acc, fa, fb, acc);
        }
        wmma::store_matrix_sync(dst + j * 16, acc, LDS, wmma::mem_row_major);
    }
}

// acc[j] (+)= A (16 x 64, bf16 at a, stride LDS) times B (64 x HDMAX, row-major bf16 at b, stride
// LDH), column block j of 16. Warp-collective.
template <int HDMAX>
__device__ __forceinline__ void mm_ab(wmma::fragment<wmma::accumulator, 16, 16, 16, float> (&acc)[HDMAX / 16],
                                      const bf16* a, const bf16* b) {
    constexpr int L = ldh<HDMAX>();
#pragma unroll
    for (int kk = 0; kk < BK / 16; kk++) {  // k outer: one A fragment live next to the accumulators
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
        wmma::load_matrix_sync(fa, a + kk * 16, LDS);
#pragma unroll
        for (int j = 0; j < HDMAX / 16; j++) {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> fb;
            wmma::load_matrix_sync(fb, b + kk * 16 * L + j * 16, L);
            wmma::mma_sync(acc[j], fa, fb, acc[j]);
        }
    }
}

// dst (16 x HDMAX, f32, stride LDH) = A (16 x 64, bf16 at a, stride LDS) times B (64 x HDMAX,
// row-major bf16 at b, stride LDH): one accumulator live at a time. Warp-collective.
template <int HDMAX>
__device__ __forceinline__ void mm_ab_store(float* dst, const bf16* a, const bf16* b) {
    constexpr int L = ldh<HDMAX>();
    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa[BK / 16];
#pragma unroll
    for (int kk = 0; kk < BK / 16; kk++) wmma::load_matrix_sync(fa[kk], a + kk * 16, LDS);
#pragma unroll
    for (int j = 0; j < HDMAX / 16; j++) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
        wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> fb;
            wmma::load_matrix_sync(fb, b + kk * 16 * L + j * 16, L);
            wmma::mma_sync(acc, fa[kk], fb, acc);
        }
        wmma::store_matrix_sync(dst + j * 16, acc, L, wmma::mem_row_major);
    }
}

#endif  // TUNER_TC_ARCH_OK

__device__ __forceinline__ int warp_min_int(int v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Writes row `row` of a per-warp f32 tile (stride LDH) times `mul` to dst (HD floats); the lane
// owns float4 chunks 2c + half.
template <int HDMAX>
__device__ __forceinline__ void write_row(float* dst, const float* src, float mul, int half, const Dims& g) {
#pragma unroll
    for (int c = 0; c < HDMAX / 8; c++) {
        const int d = 4 * (2 * c + half);
        if (d >= g.HD) continue;
        const float4 x = *reinterpret_cast<const float4*>(src + d);
        if (g.vec4) {
            *reinterpret_cast<float4*>(dst + d) = make_float4(x.x * mul, x.y * mul, x.z * mul, x.w * mul);
        } else {
            const float xs[4] = {x.x, x.y, x.z, x.w};
            for (int e = 0; e < 4 && d + e < g.HD; e++) dst[d + e] = xs[e] * mul;
        }
    }
}

// ---- forward ---------------------------------------------------------------------------------------

// out, q (B, T, NH, HD); k, v (B, T, NKV, HD); lse (B, NH, T). Grid (ceil(T / 64), NH, B), 128 threads,
// forward_smem_bytes<HDMAX>() of dynamic shared memory.
template <int HDMAX>
__global__ void __launch_bounds__(kThreads) attention_forward_tc_kernel(void* out, float* lse, const void* q,
                                                                        const void* k, const void* v,
                                                                        const int32_t* seg_start, Dims g) {
#if TUNER_TC_ARCH_OK
    constexpr int L = ldh<HDMAX>(), NC = HDMAX / 8;
    TUNER_TC_SMEM(smem);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, r = lane >> 1, half = lane & 1;
    bf16* sQ = reinterpret_cast<bf16*>(smem);  // (64, L)
    bf16* sK = sQ + BQ * L;                     // (64, L)
    bf16* sV = sK + BK * L;                     // (64, L)
    float* sWall = reinterpret_cast<float*>(sV + BK * L);
    float* sW = sWall + warp * 16 * L;  // this warp's (16, L) f32: S, then P V
    bf16* sPall = reinterpret_cast<bf16*>(sWall + kWarps * 16 * L);
    bf16* sP = sPall + warp * 16 * LDS;  // (16, LDS)
    int* sMin = reinterpret_cast<int*>(sPall + kWarps * 16 * LDS);

    const int qb = int(gridDim.x) - 1 - int(blockIdx.x);  // last (longest) query blocks first
    const int h = blockIdx.y, b = blockIdx.z, kvh = h / g.G;
    const int q0 = qb * BQ, t = q0 + warp * 16 + r;
    const int64_t ldq = int64_t(g.NH) * g.HD, ldkv = int64_t(g.NKV) * g.HD, row_base = int64_t(b) * g.T;
    const bool valid = t < g.T;
    const int lo = valid ? (seg_start ? seg_start[row_base + t] : 0) : g.T;  // no key for a row past T
    const int wmin = warp_min_int(lo), wlast = min(g.T - 1, q0 + warp * 16 + 15);

    stage_bf16<HDMAX>(sQ, q, g.q16, row_base, ldq, int64_t(h) * g.HD, q0, BQ, g);
    if (lane == 0) sMin[warp] = wmin;
    __syncthreads();
    int kmin = sMin[0];
#pragma unroll
    for (int w = 1; w < kWarps; w++) kmin = min(kmin, sMin[w]);
    const int kmax = min(g.T - 1, q0 + BQ - 1);

    float m = -INFINITY, l = 0.0f, o[NC][4];
#pragma unroll
    for (int c = 0; c < NC; c++) o[c][0] = o[c][1] = o[c][2] = o[c][3] = 0.0f;

    for (int s0 = kmin / BK * BK; s0 <= kmax; s0 += BK) {
        __syncthreads();  // the previous tile's K and V are no longer read
        stage_bf16<HDMAX>(sK, k, g.k16, row_base, ldkv, int64_t(kvh) * g.HD, s0, BK, g);
        stage_bf16<HDMAX>(sV, v, g.v16, row_base, ldkv, int64_t(kvh) * g.HD, s0, BK, g);
        __syncthreads();
        if (s0 > wlast || s0 + BK - 1 < wmin) continue;  // no row of this warp sees this tile

        mm_abt<HDMAX>(sW, sQ + warp * 16 * L, sK);  // S (16 x 64) = Q K^T
        __syncwarp();
        // Mask and online softmax on the lane's 32 scores of row r (keys 4 (2c + half) + e).
        float x[BK / 8][4], mx = -INFINITY;
#pragma unroll
        for (int c = 0; c < BK / 8; c++) {
            const int k0 = 4 * (2 * c + half);
            const float4 sv = *reinterpret_cast<const float4*>(sW + r * LDS + k0);
            const float sc[4] = {sv.x, sv.y, sv.z, sv.w};
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int s = s0 + k0 + e;
                x[c][e] = (s <= t && s >= lo) ? sc[e] * g.scale : -INFINITY;
                mx = fmaxf(mx, x[c][e]);
            }
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        const float m_new = fmaxf(m, mx);
        // m_new = -inf: no visible key yet for this row (p = 0 everywhere, nothing to rescale).
        const float alpha = m_new == -INFINITY ? 1.0f : expf(m - m_new);
        float psum = 0.0f;
        __syncwarp();  // every lane has read its scores: sW is free for P V
#pragma unroll
        for (int c = 0; c < BK / 8; c++) {
            float p[4];
#pragma unroll
            for (int e = 0; e < 4; e++) {
                p[e] = x[c][e] == -INFINITY ? 0.0f : expf(x[c][e] - m_new);
                psum += p[e];
            }
            __nv_bfloat162* dst = reinterpret_cast<__nv_bfloat162*>(sP + r * LDS + 4 * (2 * c + half));
            dst[0] = __floats2bfloat162_rn(p[0], p[1]);
            dst[1] = __floats2bfloat162_rn(p[2], p[3]);
        }
        psum += __shfl_xor_sync(0xffffffffu, psum, 1);
        l = l * alpha + psum;
        m = m_new;
        __syncwarp();  // P complete

        // P V (16 x HDMAX) into sW, then o = o * alpha + P V.
        mm_ab_store<HDMAX>(sW, sP, sV);
        __syncwarp();
#pragma unroll
        for (int c = 0; c < NC; c++) {
            const float4 pv = *reinterpret_cast<const float4*>(sW + r * L + 4 * (2 * c + half));
            o[c][0] = o[c][0] * alpha + pv.x;
            o[c][1] = o[c][1] * alpha + pv.y;
            o[c][2] = o[c][2] * alpha + pv.z;
            o[c][3] = o[c][3] * alpha + pv.w;
        }
        __syncwarp();  // sW is rewritten by the next tile's S
    }

    if (!valid) return;
    const float inv = 1.0f / l;  // l >= exp(0) from the row's own key (seg_start <= t)
    const int64_t row_off = (row_base + t) * ldq + int64_t(h) * g.HD;
    if (g.o16) {
        bf16* dst = static_cast<bf16*>(out) + row_off;
#pragma unroll
        for (int c = 0; c < NC; c++) {
            const int d = 4 * (2 * c + half);
            if (d >= g.HD) continue;
            if (g.vec4) {
                __nv_bfloat162* d2 = reinterpret_cast<__nv_bfloat162*>(dst + d);
                d2[0] = __floats2bfloat162_rn(o[c][0] * inv, o[c][1] * inv);
                d2[1] = __floats2bfloat162_rn(o[c][2] * inv, o[c][3] * inv);
            } else {
                for (int e = 0; e < 4 && d + e < g.HD; e++) dst[d + e] = __float2bfloat16_rn(o[c][e] * inv);
            }
        }
    } else {
        float* dst = static_cast<float*>(out) + row_off;
#pragma unroll
        for (int c = 0; c < NC; c++) {
            const int d = 4 * (2 * c + half);
            if (d >= g.HD) continue;
            if (g.vec4) {
                *reinterpret_cast<float4*>(dst + d) =
                    make_float4(o[c][0] * inv, o[c][1] * inv, o[c][2] * inv, o[c][3] * inv);
            } else {
                for (int e = 0; e < 4 && d + e < g.HD; e++) dst[d + e] = o[c][e] * inv;
            }
        }
    }
    if (half == 0) lse[(int64_t(b) * g.NH + h) * g.T + t] = m + logf(l);
#else
    __trap();
#endif
}

// ---- backward: dq, per (64-query block, head, batch row) --------------------------------------------

// dq, dout, q (B, T, NH, HD); k, v (B, T, NKV, HD); lse, D (B, NH, T). Grid (ceil(T / 64), NH, B).
template <int HDMAX>
__global__ void __launch_bounds__(kThreads) attention_dq_tc_kernel(float* dq, const float* dout, const void* q,
                                                                   const void* k, const void* v, const float* lse,
                                                                   const float* D, const int32_t* seg_start, Dims g) {
#if TUNER_TC_ARCH_OK
    constexpr int L = ldh<HDMAX>(), NF = HDMAX / 16;
    TUNER_TC_SMEM(smem);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, r = lane >> 1, half = lane & 1;
    bf16* sQ = reinterpret_cast<bf16*>(smem);  // (64, L)
    bf16* sdO = sQ + BQ * L;                    // (64, L)
    bf16* sK = sdO + BQ * L;                    // (64, L)
    bf16* sV = sK + BK * L;                     // (64, L); sK and sV hold dq (64 x L, f32) at the end
    float* sWall = reinterpret_cast<float*>(sV + BK * L);
    float* sW = sWall + warp * 16 * LDS;  // (16, LDS) f32: S, then dP
    bf16* sdSall = reinterpret_cast<bf16*>(sWall + kWarps * 16 * LDS);
    bf16* sdS = sdSall + warp * 16 * LDS;  // (16, LDS)
    int* sMin = reinterpret_cast<int*>(sdSall + kWarps * 16 * LDS);

    const int qb = int(gridDim.x) - 1 - int(blockIdx.x);
    const int h = blockIdx.y, b = blockIdx.z, kvh = h / g.G;
    const int q0 = qb * BQ, t = q0 + warp * 16 + r;
    const int64_t ldq = int64_t(g.NH) * g.HD, ldkv = int64_t(g.NKV) * g.HD, row_base = int64_t(b) * g.T;
    const bool valid = t < g.T;
    const int lo = valid ? (seg_start ? seg_start[row_base + t] : 0) : g.T;
    const float Lt = valid ? lse[(int64_t(b) * g.NH + h) * g.T + t] : 0.0f;
    const float Dt = valid ? D[(int64_t(b) * g.NH + h) * g.T + t] : 0.0f;
    const int wmin = warp_min_int(lo), wlast = min(g.T - 1, q0 + warp * 16 + 15);

    stage_bf16<HDMAX>(sQ, q, g.q16, row_base, ldq, int64_t(h) * g.HD, q0, BQ, g);
    stage_f32<HDMAX>(sdO, dout, row_base, ldq, int64_t(h) * g.HD, q0, BQ, g);
    if (lane == 0) sMin[warp] = wmin;
    __syncthreads();
    int kmin = sMin[0];
#pragma unroll
    for (int w = 1; w < kWarps; w++) kmin = min(kmin, sMin[w]);
    const int kmax = min(g.T - 1, q0 + BQ - 1);

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[NF];
#pragma unroll
    for (int j = 0; j < NF; j++) wmma::fill_fragment(acc[j], 0.0f);

    for (int s0 = kmin / BK * BK; s0 <= kmax; s0 += BK) {
        __syncthreads();
        stage_bf16<HDMAX>(sK, k, g.k16, row_base, ldkv, int64_t(kvh) * g.HD, s0, BK, g);
        stage_bf16<HDMAX>(sV, v, g.v16, row_base, ldkv, int64_t(kvh) * g.HD, s0, BK, g);
        __syncthreads();
        if (s0 > wlast || s0 + BK - 1 < wmin) continue;

        mm_abt<HDMAX>(sW, sQ + warp * 16 * L, sK);  // S = Q K^T
        __syncwarp();
        float sc[BK / 8][4];
#pragma unroll
        for (int c = 0; c < BK / 8; c++) {
            const float4 sv = *reinterpret_cast<const float4*>(sW + r * LDS + 4 * (2 * c + half));
            sc[c][0] = sv.x, sc[c][1] = sv.y, sc[c][2] = sv.z, sc[c][3] = sv.w;
        }
        __syncwarp();
        mm_abt<HDMAX>(sW, sdO + warp * 16 * L, sV);  // dP = dO V^T
        __syncwarp();
#pragma unroll
        for (int c = 0; c < BK / 8; c++) {
            const int k0 = 4 * (2 * c + half);
            const float4 dv4 = *reinterpret_cast<const float4*>(sW + r * LDS + k0);
            const float dp[4] = {dv4.x, dv4.y, dv4.z, dv4.w};
            float ds[4];
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int s = s0 + k0 + e;
                const float p = (s <= t && s >= lo) ? expf(sc[c][e] * g.scale - Lt) : 0.0f;
                ds[e] = p * (dp[e] - Dt);
            }
            __nv_bfloat162* dst = reinterpret_cast<__nv_bfloat162*>(sdS + r * LDS + k0);
            dst[0] = __floats2bfloat162_rn(ds[0], ds[1]);
            dst[1] = __floats2bfloat162_rn(ds[2], ds[3]);
        }
        __syncwarp();
        mm_ab<HDMAX>(acc, sdS, sK);  // dQ += dS K
    }

    __syncthreads();  // every warp is done with sK and sV
    float* sOut = reinterpret_cast<float*>(sK) + warp * 16 * L;  // (16, L) f32 per warp
#pragma unroll
    for (int j = 0; j < NF; j++) wmma::store_matrix_sync(sOut + j * 16, acc[j], L, wmma::mem_row_major);
    __syncwarp();
    if (valid) write_row<HDMAX>(dq + (row_base + t) * ldq + int64_t(h) * g.HD, sOut + r * L, g.scale, half, g);
#else
    __trap();
#endif
}

// ---- backward: dk, dv, per (64-key block, kv head, batch row) -------------------------------------------

// dk, dv, k, v (B, T, NKV, HD); dout, q (B, T, NH, HD); lse, D (B, NH, T). Grid (ceil(T / 64), NKV, B).
template <int HDMAX>
__global__ void __launch_bounds__(kThreads) attention_dkv_tc_kernel(float* dk, float* dv, const float* dout,
                                                                    const void* q, const void* k, const void* v,
                                                                    const float* lse, const float* D,
                                                                    const int32_t* seg_start, Dims g) {
#if TUNER_TC_ARCH_OK
    constexpr int L = ldh<HDMAX>(), NF = HDMAX / 16;
    TUNER_TC_SMEM(smem);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, r = lane >> 1, half = lane & 1;
    bf16* sK = reinterpret_cast<bf16*>(smem);  // (64, L)
    bf16* sV = sK + BQ * L;                     // (64, L)
    bf16* sQ = sV + BQ * L;                     // (64, L)
    bf16* sdO = sQ + BK * L;                    // (64, L); sQ and sdO hold dv, dk (64 x L, f32) at the end
    float* sWall = reinterpret_cast<float*>(sdO + BK * L);
    float* sW = sWall + warp * 16 * LDS;  // (16, LDS) f32: S^T, then dP^T
    bf16* sPall = reinterpret_cast<bf16*>(sWall + kWarps * 16 * LDS);
    bf16* sPt = sPall + warp * 16 * LDS;                    // (16, LDS)
    bf16* sdSt = sPall + (kWarps + warp) * 16 * LDS;        // (16, LDS)
    float* sL = reinterpret_cast<float*>(sPall + 2 * kWarps * 16 * LDS);  // (64) lse of the tile's queries
    float* sD = sL + BK;                                                   // (64)
    int* sLo = reinterpret_cast<int*>(sD + BK);                            // (64)

    const int kb = int(blockIdx.x), kvh = blockIdx.y, b = blockIdx.z;
    const int s0 = kb * BQ, sw = s0 + warp * 16, s = sw + r;  // the block's, the warp's first key; the lane's key
    const int s_last = min(g.T - 1, s0 + BQ - 1);
    const int64_t ldq = int64_t(g.NH) * g.HD, ldkv = int64_t(g.NKV) * g.HD, row_base = int64_t(b) * g.T;

    stage_bf16<HDMAX>(sK, k, g.k16, row_base, ldkv, int64_t(kvh) * g.HD, s0, BQ, g);
    stage_bf16<HDMAX>(sV, v, g.v16, row_base, ldkv, int64_t(kvh) * g.HD, s0, BQ, g);

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> dka[NF], dva[NF];
#pragma unroll
    for (int j = 0; j < NF; j++) wmma::fill_fragment(dka[j], 0.0f), wmma::fill_fragment(dva[j], 0.0f);

    for (int hg = 0; hg < g.G; hg++) {
        const int h = kvh * g.G + hg;
        const float* Lh = lse + (int64_t(b) * g.NH + h) * g.T;
        const float* Dh = D + (int64_t(b) * g.NH + h) * g.T;
        for (int t0 = s0; t0 < g.T; t0 += BK) {  // queries before s0 see none of these keys
            __syncthreads();                     // the previous tile is no longer read
            const int tq = t0 + int(threadIdx.x);
            bool any = false;
            if (threadIdx.x < BK) {
                const bool ok = tq < g.T;
                const int lo = ok ? (seg_start ? seg_start[row_base + tq] : 0) : g.T;
                sL[threadIdx.x] = ok ? Lh[tq] : 0.0f;
                sD[threadIdx.x] = ok ? Dh[tq] : 0.0f;
                sLo[threadIdx.x] = lo;
                any = ok && lo <= s_last;  // tq >= s0 holds: t0 >= s0
            }
            // Skip a query tile none of whose queries sees a key of this block (other packed segments).
            if (!__syncthreads_or(any)) continue;
            stage_bf16<HDMAX>(sQ, q, g.q16, row_base, ldq, int64_t(h) * g.HD, t0, BK, g);
            stage_f32<HDMAX>(sdO, dout, row_base, ldq, int64_t(h) * g.HD, t0, BK, g);
            __syncthreads();
            if (sw >= g.T) continue;  // this warp's keys are all past T

            mm_abt<HDMAX>(sW, sK + warp * 16 * L, sQ);  // S^T (16 keys x 64 queries) = K Q^T
            __syncwarp();
            float sc[BK / 8][4];
#pragma unroll
            for (int c = 0; c < BK / 8; c++) {
                const float4 sv = *reinterpret_cast<const float4*>(sW + r * LDS + 4 * (2 * c + half));
                sc[c][0] = sv.x, sc[c][1] = sv.y, sc[c][2] = sv.z, sc[c][3] = sv.w;
            }
            __syncwarp();
            mm_abt<HDMAX>(sW, sV + warp * 16 * L, sdO);  // dP^T = V dO^T
            __syncwarp();
#pragma unroll
            for (int c = 0; c < BK / 8; c++) {
                const int j0 = 4 * (2 * c + half);
                const float4 dv4 = *reinterpret_cast<const float4*>(sW + r * LDS + j0);
                const float dp[4] = {dv4.x, dv4.y, dv4.z, dv4.w};
                float p[4], ds[4];
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int j = j0 + e, tj = t0 + j;
                    const bool vis = tj < g.T && s <= tj && s >= sLo[j];
                    p[e] = vis ? expf(sc[c][e] * g.scale - sL[j]) : 0.0f;
                    ds[e] = p[e] * (dp[e] - sD[j]);
                }
                __nv_bfloat162* pd = reinterpret_cast<__nv_bfloat162*>(sPt + r * LDS + j0);
                __nv_bfloat162* dd = reinterpret_cast<__nv_bfloat162*>(sdSt + r * LDS + j0);
                pd[0] = __floats2bfloat162_rn(p[0], p[1]);
                pd[1] = __floats2bfloat162_rn(p[2], p[3]);
                dd[0] = __floats2bfloat162_rn(ds[0], ds[1]);
                dd[1] = __floats2bfloat162_rn(ds[2], ds[3]);
            }
            __syncwarp();
            mm_ab<HDMAX>(dva, sPt, sdO);  // dV += P^T dO
            mm_ab<HDMAX>(dka, sdSt, sQ);  // dK += dS^T Q
        }
    }

    __syncthreads();  // every warp is done with sQ and sdO
    float* sOut = reinterpret_cast<float*>(sQ) + warp * 16 * L;  // (16, L) f32 per warp
    const bool valid = s < g.T;
#pragma unroll
    for (int j = 0; j < NF; j++) wmma::store_matrix_sync(sOut + j * 16, dva[j], L, wmma::mem_row_major);
    __syncwarp();
    if (valid) write_row<HDMAX>(dv + (row_base + s) * ldkv + int64_t(kvh) * g.HD, sOut + r * L, 1.0f, half, g);
    __syncwarp();
#pragma unroll
    for (int j = 0; j < NF; j++) wmma::store_matrix_sync(sOut + j * 16, dka[j], L, wmma::mem_row_major);
    __syncwarp();
    if (valid) write_row<HDMAX>(dk + (row_base + s) * ldkv + int64_t(kvh) * g.HD, sOut + r * L, g.scale, half, g);
#else
    __trap();
#endif
}

}  // namespace tuner::cuda::attn_tc
