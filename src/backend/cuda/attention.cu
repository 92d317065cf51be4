// Causal self-attention with grouped-query heads and packed segments: our own flash attention
// in f32 (FlashAttention-2, Dao 2023), forward and backward. No (T x T) matrix ever exists: a
// block holds one (queries x 32 keys) tile of scores at a time, softmax runs online over key
// tiles (running max m and sum l), and the backward recomputes probabilities from the saved
// log-sum-exp.
//
// Shapes: q, out, dq (B, T, NH, HD); k, v, dk, dv (B, T, NKV, HD); lse (B, NH, T). Query head h
// reads kv head h / (NH / NKV). Query t of row b sees keys s in [seg_start[b*T + t], t]
// (seg_start null: [0, t]); the caller guarantees 0 <= seg_start[t] <= t. Scale 1/sqrt(HD).
//
// Structure (one template per head-dim bucket HDMAX in {32, 64, 128, 256}; HD <= HDMAX, tiles are
// zero-padded to HDMAX so the inner loops have compile-time bounds):
//  * 128 threads = 4 warps per block. In the forward and the dq kernel a warp owns RW query rows
//    (16; 8 for HDMAX 256, to bound registers) and lane j owns key j of the current 32-key tile:
//    scores are lane-parallel dot products against K rows in shared memory (row stride HDMAX+1,
//    so 32 lanes reading 32 rows hit 32 banks), row max / sum are warp shuffles, and the output
//    accumulator (RW rows x HDMAX) lives in registers with lane owning dims lane + 32 i.
//  * Backward = three kernels, no atomics, deterministic:
//      D = rowsum(dout * out)                                  (attention_delta_kernel)
//      dq = scale * sum_s dS K, over key tiles per query block (attention_dq_kernel)
//      dk = scale * sum_t dS^T Q, dv = sum_t P^T dout, per key block, looping over the query
//           tiles and the NH / NKV query heads of its kv head   (attention_dkv_kernel)
//    with P = exp(scale q.k - lse) and dS = P * (dout.v - D). S and dP are computed twice (once in
//    each of the last two kernels): FlashAttention-2 instead adds dq with atomics from the dkv
//    kernel, which is faster but makes dq's last bits depend on scheduling.
// These are the f32 kernels (CUDA cores), used when cuda::config().compute is F32 or TF32, and for
// head dims over 128. With BF16 compute (the default) the mma.sync kernels of attention_mma.h
// take every call they support (cuda::Config::attention == MMA, the default), and otherwise, for
// HD <= 128, the WMMA tensor-core kernels of attention_tc.cuh run: same shapes, masks, lse and D
// conventions, same three-kernel deterministic backward, with bf16 operands and f32 accumulation
// (numerics there).
//
// Activation dtypes (kernels.h ActIn / ActOut): q, k, v, out (and out read back by the backward)
// may each be f32 or bf16 storage, in both kernel families. The kernels take them as const void*
// with a bf16 flag per tensor in Dims; the flag is uniform over the grid and tested once per tile
// load (outside the element loop), so there is one kernel per head-dim bucket, not one per dtype
// combination. A bf16 element is widened exactly when staged (f32 kernels) or staged as it is
// (tensor-core kernels, whose tiles are bf16 anyway: an f32 input is rounded there, a bf16 one
// already is); out is rounded to nearest even on store when bf16. dout, the gradients, lse and
// D are always f32. With f32 tensors every kernel computes exactly what it did before.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>

#include "backend/cuda/attention_mma.h"
#include "backend/cuda/attention_tc.cuh"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_common.h"
#include "backend/kernels.h"

namespace tuner::cuda {

namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int BK = 32;  // keys per tile in the forward and dq kernels: one per lane
constexpr int BT = 32;  // queries per tile in the dkv kernel: one per lane

struct Dims {
    int B, T, NH, NKV, HD, G;
    float scale;
    bool q16 = false, k16 = false, v16 = false, o16 = false;  // bf16 storage of q, k, v, out
};

// Rows per warp for a head-dim bucket: registers hold RW x HDMAX / 32 accumulators per lane.
template <int HDMAX>
__host__ __device__ constexpr int rows_per_warp() {
    return HDMAX <= 128 ? 16 : 8;
}

// Copies rows [r0, r0 + nrows) of one head of x (rows of `ld` elements, head at offset `off`) into
// a shared f32 tile (nrows x stride), zero beyond T and beyond HD.
template <int HDMAX, typename E>
__device__ __forceinline__ void load_tile_e(float* tile, int stride, const E* x, int64_t row_base, int64_t ld,
                                            int64_t off, int r0, int nrows, int T, int HD) {
    for (int i = threadIdx.x; i < nrows * HDMAX; i += kThreads) {
        const int r = i / HDMAX, d = i % HDMAX, t = r0 + r;
        tile[r * stride + d] = (t < T && d < HD) ? load_f32(x + (row_base + t) * ld + off + d) : 0.0f;
    }
}
// x is bf16 (widened exactly) or f32 storage.
template <int HDMAX>
__device__ __forceinline__ void load_tile(float* tile, int stride, const void* x, bool bf16, int64_t row_base,
                                          int64_t ld, int64_t off, int r0, int nrows, int T, int HD) {
    if (bf16)
        load_tile_e<HDMAX>(tile, stride, static_cast<const __nv_bfloat16*>(x), row_base, ld, off, r0, nrows, T, HD);
    else load_tile_e<HDMAX>(tile, stride, static_cast<const float*>(x), row_base, ld, off, r0, nrows, T, HD);
}

// ---- forward ------------------------------------------------------------------------------------

template <int HDMAX>
constexpr size_t forward_smem_floats() {
    constexpr int RW = rows_per_warp<HDMAX>(), BQ = kWarps * RW;
    return size_t(BQ) * HDMAX + size_t(BK) * (HDMAX + 1) + size_t(BK) * HDMAX + size_t(kWarps) * RW * BK;
}

template <int HDMAX>
__global__ void __launch_bounds__(kThreads) attention_forward_kernel(void* out, float* lse, const void* q,
                                                                     const void* k, const void* v,
                                                                     const int32_t* seg_start, Dims g) {
    constexpr int RW = rows_per_warp<HDMAX>(), BQ = kWarps * RW, DPL = HDMAX / 32, KS = HDMAX + 1;
    DYNAMIC_SHARED(float4, smem4);
    float* sQ = reinterpret_cast<float*>(smem4);  // (BQ, HDMAX)
    float* sK = sQ + BQ * HDMAX;                  // (BK, HDMAX + 1)
    float* sV = sK + BK * KS;                     // (BK, HDMAX)
    float* sP = sV + BK * HDMAX;                  // (kWarps, RW, BK)
    __shared__ int s_kmin;

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int qb = int(gridDim.x) - 1 - int(blockIdx.x);  // last (longest) query blocks first
    const int h = blockIdx.y, b = blockIdx.z, kvh = h / g.G;
    const int q0 = qb * BQ, rbase = warp * RW;
    const int64_t ldq = int64_t(g.NH) * g.HD, ldkv = int64_t(g.NKV) * g.HD;
    const int64_t row_base = int64_t(b) * g.T;

    load_tile<HDMAX>(sQ, HDMAX, q, g.q16, row_base, ldq, int64_t(h) * g.HD, q0, BQ, g.T, g.HD);

    float m[RW], l[RW], o[RW][DPL];
    int lo[RW];
    int my_kmin = q0;
#pragma unroll
    for (int r = 0; r < RW; r++) {
        const int t = q0 + rbase + r;
        lo[r] = t < g.T ? (seg_start ? seg_start[row_base + t] : 0) : q0;
        my_kmin = min(my_kmin, lo[r]);
        m[r] = -INFINITY, l[r] = 0.0f;
#pragma unroll
        for (int i = 0; i < DPL; i++) o[r][i] = 0.0f;
    }
    if (threadIdx.x == 0) s_kmin = q0;
    __syncthreads();
    if (lane == 0) atomicMin(&s_kmin, my_kmin);
    __syncthreads();
    const int kmax = min(g.T - 1, q0 + BQ - 1);

    for (int s0 = s_kmin / BK * BK; s0 <= kmax; s0 += BK) {
        __syncthreads();  // the previous tile's K, V and P are no longer read
        load_tile<HDMAX>(sK, KS, k, g.k16, row_base, ldkv, int64_t(kvh) * g.HD, s0, BK, g.T, g.HD);
        load_tile<HDMAX>(sV, HDMAX, v, g.v16, row_base, ldkv, int64_t(kvh) * g.HD, s0, BK, g.T, g.HD);
        __syncthreads();

        // Scores of this warp's rows against key s0 + lane.
        float sc[RW];
#pragma unroll
        for (int r = 0; r < RW; r++) sc[r] = 0.0f;
        const float* krow = sK + lane * KS;
        for (int d = 0; d < HDMAX; d += 4) {
            const float k0 = krow[d], k1 = krow[d + 1], k2 = krow[d + 2], k3 = krow[d + 3];
#pragma unroll
            for (int r = 0; r < RW; r++) {
                const float4 qv = *reinterpret_cast<const float4*>(sQ + (rbase + r) * HDMAX + d);  // broadcast
                sc[r] += qv.x * k0 + qv.y * k1 + qv.z * k2 + qv.w * k3;
            }
        }
        // Mask, online softmax, and P into shared memory for the P V product.
        const int s = s0 + lane;
        float* prow = sP + (warp * RW) * BK;
#pragma unroll
        for (int r = 0; r < RW; r++) {
            const int t = q0 + rbase + r;
            const bool vis = t < g.T && s <= t && s >= lo[r];
            const float x = vis ? sc[r] * g.scale : -INFINITY;
            const float m_new = fmaxf(m[r], warp_max(x));
            const float p = vis ? expf(x - m_new) : 0.0f;
            // m_new = -inf: no visible key yet for this row (p = 0 everywhere, nothing to rescale).
            const float alpha = m_new == -INFINITY ? 1.0f : expf(m[r] - m_new);
            l[r] = l[r] * alpha + warp_sum(p);
            m[r] = m_new;
#pragma unroll
            for (int i = 0; i < DPL; i++) o[r][i] *= alpha;
            prow[r * BK + lane] = p;
        }
        __syncwarp();
        // o (RW, HDMAX) += P (RW, BK) @ V (BK, HDMAX); lane owns dims lane + 32 i.
        for (int j = 0; j < BK; j += 4) {
            float vv[4][DPL];
#pragma unroll
            for (int jj = 0; jj < 4; jj++)
#pragma unroll
                for (int i = 0; i < DPL; i++) vv[jj][i] = sV[(j + jj) * HDMAX + lane + 32 * i];
#pragma unroll
            for (int r = 0; r < RW; r++) {
                const float4 p4 = *reinterpret_cast<const float4*>(prow + r * BK + j);  // broadcast
#pragma unroll
                for (int i = 0; i < DPL; i++)
                    o[r][i] += p4.x * vv[0][i] + p4.y * vv[1][i] + p4.z * vv[2][i] + p4.w * vv[3][i];
            }
        }
    }

#pragma unroll
    for (int r = 0; r < RW; r++) {
        const int t = q0 + rbase + r;
        if (t >= g.T) continue;
        const float inv = 1.0f / l[r];
        const int64_t dst_off = (row_base + t) * ldq + int64_t(h) * g.HD;
#pragma unroll
        for (int i = 0; i < DPL; i++) {
            const int d = lane + 32 * i;
            if (d >= g.HD) continue;
            if (g.o16) store_f32(static_cast<__nv_bfloat16*>(out) + dst_off + d, o[r][i] * inv);
            else static_cast<float*>(out)[dst_off + d] = o[r][i] * inv;
        }
        if (lane == 0) lse[(int64_t(b) * g.NH + h) * g.T + t] = m[r] + logf(l[r]);
    }
}

// ---- backward: D = rowsum(dout * out), one warp per (b, t, h) ---------------------------------------

// This lane's part of dout . out over one row (out f32 or bf16).
template <typename E>
__device__ __forceinline__ float delta_part(const float* a, const E* c, int lane, int HD) {
    float s = 0.0f;
    for (int d = lane; d < HD; d += 32) s += a[d] * load_f32(c + d);
    return s;
}

__global__ void attention_delta_kernel(float* D, const float* dout, const void* out, Dims g) {
    const int64_t rows = int64_t(g.B) * g.T * g.NH;
    const int lane = threadIdx.x & 31;
    for (int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; row < rows;
         row += (int64_t(gridDim.x) * blockDim.x) >> 5) {
        const float* a = dout + row * g.HD;
        float s = g.o16 ? delta_part(a, static_cast<const __nv_bfloat16*>(out) + row * g.HD, lane, g.HD)
                        : delta_part(a, static_cast<const float*>(out) + row * g.HD, lane, g.HD);
        s = warp_sum(s);
        // row = (b * T + t) * NH + h  ->  D (B, NH, T)
        const int64_t h = row % g.NH, bt = row / g.NH, b = bt / g.T, t = bt % g.T;
        if (lane == 0) D[(b * g.NH + h) * g.T + t] = s;
    }
}

// ---- backward: dq, per (query block, head, batch row) --------------------------------------------------

template <int HDMAX>
constexpr size_t dq_smem_floats() {
    constexpr int RW = rows_per_warp<HDMAX>(), BQ = kWarps * RW;
    return 2 * size_t(BQ) * HDMAX + 2 * size_t(BK) * (HDMAX + 1) + size_t(kWarps) * RW * BK;
}

template <int HDMAX>
__global__ void __launch_bounds__(kThreads) attention_dq_kernel(float* dq, const float* dout, const void* q,
                                                                const void* k, const void* v, const float* lse,
                                                                const float* D, const int32_t* seg_start, Dims g) {
    constexpr int RW = rows_per_warp<HDMAX>(), BQ = kWarps * RW, DPL = HDMAX / 32, KS = HDMAX + 1;
    DYNAMIC_SHARED(float4, smem4);
    float* sQ = reinterpret_cast<float*>(smem4);  // (BQ, HDMAX)
    float* sdO = sQ + BQ * HDMAX;                 // (BQ, HDMAX)
    float* sK = sdO + BQ * HDMAX;                 // (BK, HDMAX + 1)
    float* sV = sK + BK * KS;                     // (BK, HDMAX + 1)
    float* sdS = sV + BK * KS;                    // (kWarps, RW, BK)
    __shared__ int s_kmin;

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int qb = int(gridDim.x) - 1 - int(blockIdx.x);
    const int h = blockIdx.y, b = blockIdx.z, kvh = h / g.G;
    const int q0 = qb * BQ, rbase = warp * RW;
    const int64_t ldq = int64_t(g.NH) * g.HD, ldkv = int64_t(g.NKV) * g.HD;
    const int64_t row_base = int64_t(b) * g.T;
    const float* L = lse + (int64_t(b) * g.NH + h) * g.T;
    const float* Dh = D + (int64_t(b) * g.NH + h) * g.T;

    load_tile<HDMAX>(sQ, HDMAX, q, g.q16, row_base, ldq, int64_t(h) * g.HD, q0, BQ, g.T, g.HD);
    load_tile_e<HDMAX>(sdO, HDMAX, dout, row_base, ldq, int64_t(h) * g.HD, q0, BQ, g.T, g.HD);

    float acc[RW][DPL], Lr[RW], Dr[RW];
    int lo[RW];
    int my_kmin = q0;
#pragma unroll
    for (int r = 0; r < RW; r++) {
        const int t = q0 + rbase + r;
        const bool valid = t < g.T;
        lo[r] = valid ? (seg_start ? seg_start[row_base + t] : 0) : q0;
        Lr[r] = valid ? L[t] : 0.0f;
        Dr[r] = valid ? Dh[t] : 0.0f;
        my_kmin = min(my_kmin, lo[r]);
#pragma unroll
        for (int i = 0; i < DPL; i++) acc[r][i] = 0.0f;
    }
    if (threadIdx.x == 0) s_kmin = q0;
    __syncthreads();
    if (lane == 0) atomicMin(&s_kmin, my_kmin);
    __syncthreads();
    const int kmax = min(g.T - 1, q0 + BQ - 1);
    float* dsrow = sdS + (warp * RW) * BK;

    for (int s0 = s_kmin / BK * BK; s0 <= kmax; s0 += BK) {
        __syncthreads();
        load_tile<HDMAX>(sK, KS, k, g.k16, row_base, ldkv, int64_t(kvh) * g.HD, s0, BK, g.T, g.HD);
        load_tile<HDMAX>(sV, KS, v, g.v16, row_base, ldkv, int64_t(kvh) * g.HD, s0, BK, g.T, g.HD);
        __syncthreads();

        float sc[RW], dp[RW];
#pragma unroll
        for (int r = 0; r < RW; r++) sc[r] = 0.0f, dp[r] = 0.0f;
        const float* krow = sK + lane * KS;
        const float* vrow = sV + lane * KS;
        for (int d = 0; d < HDMAX; d += 4) {
            const float k0 = krow[d], k1 = krow[d + 1], k2 = krow[d + 2], k3 = krow[d + 3];
            const float v0 = vrow[d], v1 = vrow[d + 1], v2 = vrow[d + 2], v3 = vrow[d + 3];
#pragma unroll
            for (int r = 0; r < RW; r++) {
                const float4 qv = *reinterpret_cast<const float4*>(sQ + (rbase + r) * HDMAX + d);
                const float4 ov = *reinterpret_cast<const float4*>(sdO + (rbase + r) * HDMAX + d);
                sc[r] += qv.x * k0 + qv.y * k1 + qv.z * k2 + qv.w * k3;
                dp[r] += ov.x * v0 + ov.y * v1 + ov.z * v2 + ov.w * v3;
            }
        }
        const int s = s0 + lane;
#pragma unroll
        for (int r = 0; r < RW; r++) {
            const int t = q0 + rbase + r;
            const bool vis = t < g.T && s <= t && s >= lo[r];
            const float p = vis ? expf(sc[r] * g.scale - Lr[r]) : 0.0f;
            dsrow[r * BK + lane] = p * (dp[r] - Dr[r]);
        }
        __syncwarp();
        // acc (RW, HDMAX) += dS (RW, BK) @ K (BK, HDMAX)
        for (int j = 0; j < BK; j += 4) {
            float kk[4][DPL];
#pragma unroll
            for (int jj = 0; jj < 4; jj++)
#pragma unroll
                for (int i = 0; i < DPL; i++) kk[jj][i] = sK[(j + jj) * KS + lane + 32 * i];
#pragma unroll
            for (int r = 0; r < RW; r++) {
                const float4 d4 = *reinterpret_cast<const float4*>(dsrow + r * BK + j);
#pragma unroll
                for (int i = 0; i < DPL; i++)
                    acc[r][i] += d4.x * kk[0][i] + d4.y * kk[1][i] + d4.z * kk[2][i] + d4.w * kk[3][i];
            }
        }
        __syncwarp();
    }

#pragma unroll
    for (int r = 0; r < RW; r++) {
        const int t = q0 + rbase + r;
        if (t >= g.T) continue;
        float* dst = dq + (row_base + t) * ldq + int64_t(h) * g.HD;
#pragma unroll
        for (int i = 0; i < DPL; i++) {
            const int d = lane + 32 * i;
            if (d < g.HD) dst[d] = acc[r][i] * g.scale;
        }
    }
}

// ---- backward: dk, dv, per (key block, kv head, batch row) ------------------------------------------

template <int HDMAX>
__host__ __device__ constexpr int keys_per_warp() {
    return HDMAX <= 128 ? 16 : 8;
}

template <int HDMAX>
constexpr size_t dkv_smem_floats() {
    constexpr int KW = keys_per_warp<HDMAX>(), BKV = kWarps * KW;
    return 2 * size_t(BKV) * HDMAX + 2 * size_t(BT) * (HDMAX + 1) + 2 * size_t(kWarps) * KW * BT + 3 * BT;
}

template <int HDMAX>
__global__ void __launch_bounds__(kThreads) attention_dkv_kernel(float* dk, float* dv, const float* dout,
                                                                 const void* q, const void* k, const void* v,
                                                                 const float* lse, const float* D,
                                                                 const int32_t* seg_start, Dims g) {
    constexpr int KW = keys_per_warp<HDMAX>(), BKV = kWarps * KW, DPL = HDMAX / 32, QS = HDMAX + 1;
    DYNAMIC_SHARED(float4, smem4);
    float* sK = reinterpret_cast<float*>(smem4);  // (BKV, HDMAX)
    float* sV = sK + BKV * HDMAX;                 // (BKV, HDMAX)
    float* sQ = sV + BKV * HDMAX;                 // (BT, HDMAX + 1)
    float* sdO = sQ + BT * QS;                    // (BT, HDMAX + 1)
    float* sP = sdO + BT * QS;                    // (kWarps, KW, BT)
    float* sdS = sP + kWarps * KW * BT;           // (kWarps, KW, BT)
    float* sL = sdS + kWarps * KW * BT;           // (BT) lse of the tile's queries
    float* sD = sL + BT;                          // (BT)
    int* sLo = reinterpret_cast<int*>(sD + BT);   // (BT)

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int kb = int(blockIdx.x), kvh = blockIdx.y, b = blockIdx.z;
    const int s0 = kb * BKV, sbase = s0 + warp * KW;
    const int s_last = min(g.T - 1, s0 + BKV - 1);
    const int64_t ldq = int64_t(g.NH) * g.HD, ldkv = int64_t(g.NKV) * g.HD;
    const int64_t row_base = int64_t(b) * g.T;

    load_tile<HDMAX>(sK, HDMAX, k, g.k16, row_base, ldkv, int64_t(kvh) * g.HD, s0, BKV, g.T, g.HD);
    load_tile<HDMAX>(sV, HDMAX, v, g.v16, row_base, ldkv, int64_t(kvh) * g.HD, s0, BKV, g.T, g.HD);

    float dka[KW][DPL], dva[KW][DPL];
#pragma unroll
    for (int r = 0; r < KW; r++)
#pragma unroll
        for (int i = 0; i < DPL; i++) dka[r][i] = 0.0f, dva[r][i] = 0.0f;
    float* prow = sP + (warp * KW) * BT;
    float* dsrow = sdS + (warp * KW) * BT;

    for (int hg = 0; hg < g.G; hg++) {
        const int h = kvh * g.G + hg;
        const float* L = lse + (int64_t(b) * g.NH + h) * g.T;
        const float* Dh = D + (int64_t(b) * g.NH + h) * g.T;
        for (int t0 = s0 / BT * BT; t0 < g.T; t0 += BT) {  // queries before s0 see none of these keys
            __syncthreads();  // the previous tile is no longer read
            if (threadIdx.x < BT) {
                const int t = t0 + threadIdx.x;
                const bool valid = t < g.T;
                sL[threadIdx.x] = valid ? L[t] : 0.0f;
                sD[threadIdx.x] = valid ? Dh[t] : 0.0f;
                sLo[threadIdx.x] = valid ? (seg_start ? seg_start[row_base + t] : 0) : g.T;
            }
            __syncthreads();
            // Skip a query tile none of whose queries sees any key of this block (other packed
            // segments): visible needs lo[t] <= s_last and t >= s0.
            const int tq = t0 + lane;
            const bool any = threadIdx.x < BT && tq < g.T && tq >= s0 && sLo[lane] <= s_last;
            if (!__syncthreads_or(any)) continue;
            load_tile<HDMAX>(sQ, QS, q, g.q16, row_base, ldq, int64_t(h) * g.HD, t0, BT, g.T, g.HD);
            load_tile_e<HDMAX>(sdO, QS, dout, row_base, ldq, int64_t(h) * g.HD, t0, BT, g.T, g.HD);
            __syncthreads();

            // Lane i = query t0 + i; rows r = keys sbase + r of this warp.
            float sc[KW], dp[KW];
#pragma unroll
            for (int r = 0; r < KW; r++) sc[r] = 0.0f, dp[r] = 0.0f;
            const float* qrow = sQ + lane * QS;
            const float* orow = sdO + lane * QS;
            for (int d = 0; d < HDMAX; d += 4) {
                const float q0v = qrow[d], q1v = qrow[d + 1], q2v = qrow[d + 2], q3v = qrow[d + 3];
                const float o0 = orow[d], o1 = orow[d + 1], o2 = orow[d + 2], o3 = orow[d + 3];
#pragma unroll
                for (int r = 0; r < KW; r++) {
                    const float4 kv4 = *reinterpret_cast<const float4*>(sK + (warp * KW + r) * HDMAX + d);
                    const float4 vv4 = *reinterpret_cast<const float4*>(sV + (warp * KW + r) * HDMAX + d);
                    sc[r] += kv4.x * q0v + kv4.y * q1v + kv4.z * q2v + kv4.w * q3v;
                    dp[r] += vv4.x * o0 + vv4.y * o1 + vv4.z * o2 + vv4.w * o3;
                }
            }
            const int t = t0 + lane;
            const int lo = sLo[lane];
            const float Lt = sL[lane], Dt = sD[lane];
#pragma unroll
            for (int r = 0; r < KW; r++) {
                const int s = sbase + r;
                const bool vis = t < g.T && s <= t && s >= lo;
                const float p = vis ? expf(sc[r] * g.scale - Lt) : 0.0f;
                prow[r * BT + lane] = p;
                dsrow[r * BT + lane] = p * (dp[r] - Dt);
            }
            __syncwarp();
            // dv (KW, HDMAX) += P (KW, BT) @ dO (BT, HDMAX);  dk += dS (KW, BT) @ Q (BT, HDMAX)
            for (int j = 0; j < BT; j += 4) {
                float oo[4][DPL], qq[4][DPL];
#pragma unroll
                for (int jj = 0; jj < 4; jj++)
#pragma unroll
                    for (int i = 0; i < DPL; i++) {
                        oo[jj][i] = sdO[(j + jj) * QS + lane + 32 * i];
                        qq[jj][i] = sQ[(j + jj) * QS + lane + 32 * i];
                    }
#pragma unroll
                for (int r = 0; r < KW; r++) {
                    const float4 p4 = *reinterpret_cast<const float4*>(prow + r * BT + j);
                    const float4 d4 = *reinterpret_cast<const float4*>(dsrow + r * BT + j);
#pragma unroll
                    for (int i = 0; i < DPL; i++) {
                        dva[r][i] += p4.x * oo[0][i] + p4.y * oo[1][i] + p4.z * oo[2][i] + p4.w * oo[3][i];
                        dka[r][i] += d4.x * qq[0][i] + d4.y * qq[1][i] + d4.z * qq[2][i] + d4.w * qq[3][i];
                    }
                }
            }
            __syncwarp();
        }
    }

#pragma unroll
    for (int r = 0; r < KW; r++) {
        const int s = sbase + r;
        if (s >= g.T) continue;
        float* dkr = dk + (row_base + s) * ldkv + int64_t(kvh) * g.HD;
        float* dvr = dv + (row_base + s) * ldkv + int64_t(kvh) * g.HD;
#pragma unroll
        for (int i = 0; i < DPL; i++) {
            const int d = lane + 32 * i;
            if (d < g.HD) dkr[d] = dka[r][i] * g.scale, dvr[d] = dva[r][i];
        }
    }
}

// ---- launchers -------------------------------------------------------------------------------------

Dims dims(const AttnShape& s) {
    if (s.NH <= 0 || s.NKV <= 0 || s.HD <= 0 || s.NH % s.NKV != 0)
        fail("[cuda] attention: bad shape NH={} NKV={} HD={} (NH must be a multiple of NKV)", s.NH, s.NKV, s.HD);
    if (s.HD > 256) fail("[cuda] attention: head dim {} is not supported (at most 256)", s.HD);
    return Dims{s.B, s.T, s.NH, s.NKV, s.HD, s.NH / s.NKV, 1.0f / std::sqrt(float(s.HD))};
}


template <int HDMAX>
void forward_launch(void* out, float* lse, const void* q, const void* k, const void* v, const int32_t* seg,
                    const Dims& g) {
    constexpr int BQ = kWarps * rows_per_warp<HDMAX>();
    const size_t smem = forward_smem_floats<HDMAX>() * sizeof(float);
    static const bool ready = (opt_in_smem(attention_forward_kernel<HDMAX>, smem, "attention_forward"), true);
    (void)ready;
    const dim3 grid(unsigned((g.T + BQ - 1) / BQ), unsigned(g.NH), unsigned(g.B));
    launch(attention_forward_kernel<HDMAX>, grid, kThreads, smem, context().stream, out, lse, q, k, v, seg, g);
    CUDA_LAUNCH_CHECK("attention_forward_kernel");
}

template <int HDMAX>
void backward_launch(float* dq, float* dk, float* dv, const float* dout, const void* q, const void* k, const void* v,
                     const float* lse, const float* D, const int32_t* seg, const Dims& g) {
    constexpr int BQ = kWarps * rows_per_warp<HDMAX>(), BKV = kWarps * keys_per_warp<HDMAX>();
    cudaStream_t stream = context().stream;
    const size_t smem_dq = dq_smem_floats<HDMAX>() * sizeof(float);
    const size_t smem_dkv = dkv_smem_floats<HDMAX>() * sizeof(float);
    static const bool ready = (opt_in_smem(attention_dq_kernel<HDMAX>, smem_dq, "attention_backward (dq)"),
                               opt_in_smem(attention_dkv_kernel<HDMAX>, smem_dkv, "attention_backward (dk, dv)"), true);
    (void)ready;
    const dim3 grid_q(unsigned((g.T + BQ - 1) / BQ), unsigned(g.NH), unsigned(g.B));
    launch(attention_dq_kernel<HDMAX>, grid_q, kThreads, smem_dq, stream, dq, dout, q, k, v, lse, D, seg, g);
    CUDA_LAUNCH_CHECK("attention_dq_kernel");
    const dim3 grid_kv(unsigned((g.T + BKV - 1) / BKV), unsigned(g.NKV), unsigned(g.B));
    launch(attention_dkv_kernel<HDMAX>, grid_kv, kThreads, smem_dkv, stream, dk, dv, dout, q, k, v, lse, D, seg, g);
    CUDA_LAUNCH_CHECK("attention_dkv_kernel");
}

// ---- tensor-core (bf16) launchers -------------------------------------------------------------------

// The tensor-core kernels run for BF16 compute and HD <= 128 (TF32 keeps the f32 kernels).
bool use_tc(const Dims& g) { return config().compute == MatmulCompute::BF16 && attn_tc::bucket(g.HD) != 0; }

// A tensor the tensor-core kernels access 4 elements at a time: its pointer and whether it is bf16.
struct Vec4Arg {
    const void* p;
    bool bf16;
};
// 4 elements: 16 bytes of f32, 8 of bf16.
bool aligned_vec4(const Vec4Arg& a) { return reinterpret_cast<uintptr_t>(a.p) % (a.bf16 ? 8 : 16) == 0; }

attn_tc::Dims tc_dims(const Dims& g, std::initializer_list<Vec4Arg> ptrs) {
    bool vec4 = g.HD % 4 == 0;
    for (const Vec4Arg& a : ptrs) vec4 = vec4 && aligned_vec4(a);
    attn_tc::Dims t{g.B, g.T, g.NH, g.NKV, g.HD, g.G, g.scale, vec4 ? 1 : 0};
    t.q16 = g.q16, t.k16 = g.k16, t.v16 = g.v16, t.o16 = g.o16;
    return t;
}

template <int HDMAX>
void forward_tc_launch(void* out, float* lse, const void* q, const void* k, const void* v, const int32_t* seg,
                       const attn_tc::Dims& g) {
    const size_t smem = attn_tc::forward_smem_bytes<HDMAX>();
    static const bool ready =
        (opt_in_smem(attn_tc::attention_forward_tc_kernel<HDMAX>, smem, "attention_forward (bf16 tensor cores)"), true);
    (void)ready;
    const dim3 grid(unsigned((g.T + attn_tc::BQ - 1) / attn_tc::BQ), unsigned(g.NH), unsigned(g.B));
    launch(attn_tc::attention_forward_tc_kernel<HDMAX>, grid, attn_tc::kThreads, smem, context().stream, out, lse, q,
           k, v, seg, g);
    CUDA_LAUNCH_CHECK("attention_forward_tc_kernel");
}

template <int HDMAX>
void backward_tc_launch(float* dq, float* dk, float* dv, const float* dout, const void* q, const void* k, const void* v,
                        const float* lse, const float* D, const int32_t* seg, const attn_tc::Dims& g) {
    cudaStream_t stream = context().stream;
    const size_t smem_dq = attn_tc::dq_smem_bytes<HDMAX>(), smem_dkv = attn_tc::dkv_smem_bytes<HDMAX>();
    static const bool ready =
        (opt_in_smem(attn_tc::attention_dq_tc_kernel<HDMAX>, smem_dq, "attention_backward (dq, bf16 tensor cores)"),
         opt_in_smem(attn_tc::attention_dkv_tc_kernel<HDMAX>, smem_dkv,
                     "attention_backward (dk, dv, bf16 tensor cores)"),
         true);
    (void)ready;
    const dim3 grid(unsigned((g.T + attn_tc::BQ - 1) / attn_tc::BQ), unsigned(g.NH), unsigned(g.B));
    launch(attn_tc::attention_dq_tc_kernel<HDMAX>, grid, attn_tc::kThreads, smem_dq, stream, dq, dout, q, k, v, lse, D,
           seg, g);
    CUDA_LAUNCH_CHECK("attention_dq_tc_kernel");
    const dim3 grid_kv(unsigned((g.T + attn_tc::BQ - 1) / attn_tc::BQ), unsigned(g.NKV), unsigned(g.B));
    launch(attn_tc::attention_dkv_tc_kernel<HDMAX>, grid_kv, attn_tc::kThreads, smem_dkv, stream, dk, dv, dout, q, k,
           v, lse, D, seg, g);
    CUDA_LAUNCH_CHECK("attention_dkv_tc_kernel");
}

}  // namespace

// The mma.sync kernels (attention_mma.h) take a call under BF16 compute when the config picks
// them and they support its shape, dtypes and pointers; otherwise the kernels of this file.
bool use_mma(const AttnShape& s, ActIn q, ActIn k, ActIn v, ActIn out) {
    return config().compute == MatmulCompute::BF16 && config().attention == AttentionKernels::MMA &&
           attention_mma_supports(s, q, k, v, out);
}

size_t attention_workspace_bytes(const AttnShape& s) {
    if (s.B <= 0 || s.T <= 0) return 0;
    const size_t d = ws_size(size_t(s.B) * s.NH * s.T * sizeof(float));  // D of the backward
    // Whether a call goes to the mma kernels depends on its pointers too, so plan for either.
    const bool mma = config().compute == MatmulCompute::BF16 && config().attention == AttentionKernels::MMA;
    return mma ? std::max(d, attention_mma_workspace_bytes(s)) : d;
}

// The activations' dtypes (f32 or bf16 each) into g.
void set_act_dtypes(Dims& g, const char* op, ActIn q, ActIn k, ActIn v, ActIn out) {
    for (const ActIn* a : {&q, &k, &v, &out}) check_act_dtype(a->dtype, op);
    g.q16 = q.bf16(), g.k16 = k.bf16(), g.v16 = v.bf16(), g.o16 = out.bf16();
}

void attention_forward(ActOut out, float* lse, ActIn q, ActIn k, ActIn v, const int32_t* seg_start,
                       const AttnShape& s) {
    if (s.B <= 0 || s.T <= 0) return;
    context("attention_forward");
    if (use_mma(s, q, k, v, out)) return attention_mma_forward(out, lse, q, k, v, seg_start, s);
    Dims g = dims(s);
    set_act_dtypes(g, "attention_forward", q, k, v, out);
    if (use_tc(g)) {
        const attn_tc::Dims tg =
            tc_dims(g, {{out.data, g.o16}, {q.data, g.q16}, {k.data, g.k16}, {v.data, g.v16}});
        if (g.HD <= 64) forward_tc_launch<64>(out.data, lse, q.data, k.data, v.data, seg_start, tg);
        else forward_tc_launch<128>(out.data, lse, q.data, k.data, v.data, seg_start, tg);
        return;
    }
    if (g.HD <= 32) forward_launch<32>(out.data, lse, q.data, k.data, v.data, seg_start, g);
    else if (g.HD <= 64) forward_launch<64>(out.data, lse, q.data, k.data, v.data, seg_start, g);
    else if (g.HD <= 128) forward_launch<128>(out.data, lse, q.data, k.data, v.data, seg_start, g);
    else forward_launch<256>(out.data, lse, q.data, k.data, v.data, seg_start, g);
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, ActIn q, ActIn k, ActIn v, ActIn out,
                        const float* lse, const int32_t* seg_start, const AttnShape& s) {
    if (s.B <= 0 || s.T <= 0) return;
    context("attention_backward");
    if (use_mma(s, q, k, v, out)) return attention_mma_backward(dq, dk, dv, dout, q, k, v, out, lse, seg_start, s);
    Dims g = dims(s);
    set_act_dtypes(g, "attention_backward", q, k, v, out);
    Workspace ws("attention_backward", attention_workspace_bytes(s));
    float* D = ws.take<float>(size_t(s.B) * s.NH * s.T);
    const int64_t rows = int64_t(s.B) * s.T * s.NH;
    launch(attention_delta_kernel, grid_for(rows * 32, 256), 256, 0, context().stream, D, dout, out.data, g);
    CUDA_LAUNCH_CHECK("attention_delta_kernel");
    if (use_tc(g)) {
        const attn_tc::Dims tg = tc_dims(g, {{dq, false},
                                             {dk, false},
                                             {dv, false},
                                             {dout, false},
                                             {q.data, g.q16},
                                             {k.data, g.k16},
                                             {v.data, g.v16}});
        if (g.HD <= 64) backward_tc_launch<64>(dq, dk, dv, dout, q.data, k.data, v.data, lse, D, seg_start, tg);
        else backward_tc_launch<128>(dq, dk, dv, dout, q.data, k.data, v.data, lse, D, seg_start, tg);
        return;
    }
    if (g.HD <= 32) backward_launch<32>(dq, dk, dv, dout, q.data, k.data, v.data, lse, D, seg_start, g);
    else if (g.HD <= 64) backward_launch<64>(dq, dk, dv, dout, q.data, k.data, v.data, lse, D, seg_start, g);
    else if (g.HD <= 128) backward_launch<128>(dq, dk, dv, dout, q.data, k.data, v.data, lse, D, seg_start, g);
    else backward_launch<256>(dq, dk, dv, dout, q.data, k.data, v.data, lse, D, seg_start, g);
}

}  // namespace tuner::cuda
