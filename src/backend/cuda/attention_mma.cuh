// FlashAttention-2 style bf16 attention on mma.sync tensor cores: P stays in registers between
// S = Q K^T and O += P V, K / V (and Q / dO in the backward) tiles arrive by cp.async into double
// buffers. Forward, and a deterministic two-kernel backward (dq; dk / dv), for head dims up to 128
// (buckets 64 and 128), causal, GQA and packed segments. Host entry points: attention_mma.h
// (attention_mma.cu). Self-contained (CUDA headers and mma_ptx.cuh only) so the kernel lab
// (dev/cuda/attention_forward.cu versions 4-5, attention_backward.cu version 4) compiles and times
// exactly these.
//
// Shapes and conventions are attention.cu's: q, out, dq (B, T, NH, HD); k, v, dk, dv (B, T, NKV,
// HD); lse, D (B, NH, T); query head h reads kv head h / G (G = NH / NKV); query t sees keys
// [seg_start[b*T + t], t]; scores scaled by 1/sqrt(HD); lse = log-sum-exp of the scaled scores
// (natural log); D = rowsum(dout * out). dq, dk, dv, lse, D are f32; q, k, v are f32 or bf16
// (one type TI for the three), out f32 or bf16 (TO).
//
// Numerics: q, k, v, dout are rounded to bf16 when staged (bf16 inputs are copied as they are);
// every product runs on m16n8k16 bf16 tensor-core instructions with f32 accumulation; masking, the
// online softmax (in base 2: exp2(s * scale * log2(e) - m), m the running max in those units),
// lse, dS = P (dP - D) and the final scalings are f32. P and dS are rounded to bf16 as the A
// operand of P V, dS K, P^T dO and dS^T Q. Tile rows past T and columns past HD are zero.
//
// Register fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"; g =
// lane >> 2, tg = lane % 4; see mma_ptx.cuh): an m16n8 accumulator holds (row g, cols 2tg, 2tg+1)
// in c[0..1] and (row g+8, same cols) in c[2..3]. The A operand of the next product wants, for a
// 16-wide k step kk, registers (g, 2tg..+1), (g+8, 2tg..+1), (g, 2tg+8..+9), (g+8, 2tg+8..+9):
// exactly the accumulators of n-blocks 2kk (c[0..1], c[2..3]) and 2kk+1 (c[0..1], c[2..3]) packed
// to bf16 pairs. So S -> P -> A operand needs no data movement between lanes. Operands in shared
// memory come in by ldmatrix.x4: row-major A (Q, K, V, dO as the left factor) and "col" B operands
// whose n index is a tile row (K in Q K^T, V in dO V^T, Q in K Q^T, dO in V dO^T) without .trans;
// B operands whose k index is a tile row (V in P V, K in dS K, dO in P^T dO, Q in dS^T Q) with .trans.
//
// Shared-memory tiles are bf16 with a row stride of HDMAX + 8 elements (272 bytes at HDMAX 128,
// 144 at 64): the 8 row addresses of an ldmatrix 8x8 matrix then fall 16 bytes apart modulo 128
// and hit all 32 banks once (no conflicts); cp.async's 16-byte chunks stay aligned.
//
// Kernels (128 threads = 4 warps, 16-row m-tiles):
//  * forward, per (128-query block, head, batch row): each warp owns 32 query rows (two m-tiles,
//    so every K / V fragment read from shared memory feeds two mma), 64-key tiles double-buffered;
//    per tile: S (32 x 64) = Q K^T in registers, mask (only on tiles that cross the diagonal or a
//    segment start), online softmax, O (32 x HDMAX, registers) = O alpha + P V. HDMAX 64 keeps the
//    Q fragments in registers, HDMAX 128 re-reads them from shared memory (registers: O alone is
//    128 per lane there).
//  * backward preprocessing: D = rowsum(dout * out) and dout rounded to bf16 into the workspace
//    (so dO tiles come in by cp.async like the rest).
//  * dq, per (64-query block, head, batch row): warps own 16 rows; per 64-key tile S = Q K^T,
//    dP = dO V^T, P = exp2(S scale log2e - lse log2e), dS = P (dP - D), dQ += dS K in registers.
//  * dk / dv, per (64-key block, kv head, batch row): warps own 16 keys; over the G query heads of
//    the kv head (or G / S of them, S blocks per key block, partial sums added by a small kernel
//    in a fixed order: for load balance when there are few key blocks) and the 64-query tiles
//    that can see the block: S^T = K Q^T, dP^T = V dO^T, dV += P^T dO, dK += dS^T Q in
//    registers. No atomics: every output element is written once by one thread, summation
//    orders are fixed, results are bit-reproducible run to run.
//
// Resources (ptxas, nvcc 13.0, sm_90, bf16 inputs; HDMAX 128 / 64), per 128-thread block:
//   forward  255 registers (16 bytes spilled) / 235, 104,448 / 55,296 B shared: 2 blocks per SM
//   dq       237 / 168 registers, 104,448 / 55,296 B: 2 / 3 blocks per SM
//   dk / dv  255 / 168 registers, 105,984 / 56,832 B: 2 / 3 blocks per SM
// Per warp and tile at HDMAX 128 the forward issues 256 mma and 80 ldmatrix.x4 (40 KB of shared
// memory, ~160 B per mma), the dq kernel 192 / 112 (~290 B per mma), the dk/dv kernel 256 / 144
// (~290 B per mma). The backward does 7 tile products per (query, key) tile pair against
// FlashAttention-2's 5 (S and dP are recomputed in both kernels: the price of determinism
// without atomics). Nothing here has been timed on a GPU.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "mma_ptx.cuh"

#if defined(TUNER_CUDA_EMU)
#define TUNER_MMA_SMEM(name) unsigned char* name = static_cast<unsigned char*>(::tuner::emu::dynamic_shared())
#else
#define TUNER_MMA_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#endif

namespace tuner::cuda::attn_mma {

using bf16 = __nv_bfloat16;

// Uniform over the grid.
struct Params {
    int B, T, NH, NKV, HD, G;
    float scale;       // 1 / sqrt(HD)
    float scale_log2;  // scale * log2(e): softmax runs on exp2
    int S = 1;         // dk / dv kernel: blocks per (key block, kv head), each over G / S query heads
};

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Head-dim bucket (tiles are zero-padded to it): 0 when HD is not supported (HD % 8 != 0 or > 128).
__host__ __device__ constexpr int bucket(int HD) {
    return HD <= 0 || HD % 8 != 0 ? 0 : HD <= 64 ? 64 : HD <= 128 ? 128 : 0;
}

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;

template <int HDMAX>
struct Fwd {
    static constexpr int MT = 2;                  // 16-row m-tiles per warp
    static constexpr int BR = kWarps * 16 * MT;   // queries per block (128)
    static constexpr int BC = 64;                 // keys per tile
    static constexpr int LD = HDMAX + 8;          // shared-memory row stride (bf16 elements)
    static constexpr bool kQRegs = HDMAX <= 64;   // Q fragments kept in registers
    // sQ (BR x LD), sK and sV (2 buffers of BC x LD each)
    static constexpr size_t smem_bytes = size_t(BR + 4 * BC) * LD * sizeof(bf16);
};

template <int HDMAX>
struct Bwd {
    static constexpr int BR = 16 * kWarps;  // queries per dq block; per dk/dv query tile (64)
    static constexpr int BC = 16 * kWarps;  // keys per dq tile; per dk/dv block (64)
    static constexpr int LD = HDMAX + 8;
    static constexpr bool kRegs = HDMAX <= 64;  // dq kernel: Q and dO fragments in registers
    // __launch_bounds__ minimum blocks per SM of the dk/dv kernel: shared memory allows 3 at HDMAX 64
    // (~57 KB each), 2 at 128 (~106 KB); registers are then held to 170 / 255 (ptxas 13.0 spills
    // nothing; without the bound it spilled 12 bytes at 128). The forward and dq kernels state no
    // minimum: ptxas (13.0) allocates them worse with one (forward HDMAX 128: 68 bytes spilled with
    // a minimum of 2 instead of 16; dq HDMAX 64: 216 registers with a minimum of 1, 12 bytes
    // spilled with 3, 168 with none).
    static constexpr int kMinBlocks = HDMAX <= 64 ? 3 : 2;
    // dq: sQ, sdO (BR x LD), sK, sV (2 buffers of BC x LD each)
    static constexpr size_t dq_smem_bytes = size_t(2 * BR + 4 * BC) * LD * sizeof(bf16);
    // dk/dv: sK, sV (BC x LD), sQ, sdO (2 buffers of BR x LD each), then lse, D, seg start of the
    // query tile (2 buffers of BR each, f32 / int)
    static constexpr size_t dkv_smem_bytes = size_t(2 * BC + 4 * BR) * LD * sizeof(bf16) + 2 * 3 * BR * sizeof(float);
};

// ---- small helpers ------------------------------------------------------------------------------------

__device__ __forceinline__ int warp_min_i(int v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ int warp_max_i(int v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ float warp_sum_f(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
// Over the 4 lanes of a quad (tg = 0..3), which share the rows of an accumulator fragment.
__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

__device__ __forceinline__ void store2(float* p, float a, float b) {
    *reinterpret_cast<float2*>(p) = make_float2(a, b);
}
__device__ __forceinline__ void store2(bf16* p, float a, float b) {
    *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(a, b);
}

#if TUNER_MMA_ARCH_OK

// Rows [r0, r0 + NROWS) of one head of x into a bf16 tile (NROWS x (HDMAX + 8)): row t of batch row
// b is x + (row_base + t) * ld + off; zero for t >= T and for columns >= HD. 16-byte chunks of 8
// elements, consecutive threads on consecutive chunks of a row (coalesced).
//  * bf16 x: cp.async (the caller commits and waits); the loop is not unrolled (unrolled, ptxas
//    hoists the chunks' addresses out of the tile loop and runs out of registers).
//  * f32 x: synchronous (visible to other threads after the next __syncthreads): batches of up to
//    4 chunks per thread, every load of a batch issued before the first is used (one memory round
//    trip per batch: 2 for a 64 x 128 tile, 1 for 64 x 64), then rounded to bf16 and stored 16
//    bytes at a time. (Batches of 8 made ptxas spill 32-80 bytes in the dq and forward kernels.)
//    No overlap with compute: f32 inputs are the slow path (training stores q, k, v in bf16).
template <int HDMAX, int NROWS>
__device__ __forceinline__ void stage_rows(bf16* tile, const bf16* x, int64_t row_base, int64_t ld, int64_t off, int r0,
                                           int T, int HD) {
    constexpr int CPR = HDMAX / 8, LD = HDMAX + 8;
#pragma unroll 1
    for (int i = threadIdx.x; i < NROWS * CPR; i += kThreads) {
        const int r = i / CPR, c = (i % CPR) * 8, t = r0 + r;
        const bool ok = t < T && c < HD;
        ptx::cp_async_16(tile + r * LD + c, ok ? x + (row_base + t) * ld + off + c : x, ok);
    }
}
template <int HDMAX, int NROWS>
__device__ __forceinline__ void stage_rows(bf16* tile, const float* x, int64_t row_base, int64_t ld, int64_t off,
                                           int r0, int T, int HD) {
    constexpr int CPR = HDMAX / 8, LD = HDMAX + 8, PER = NROWS * CPR / kThreads, NB = PER < 4 ? PER : 4;
    static_assert(NROWS * CPR % kThreads == 0 && PER % NB == 0, "whole batches of chunks per thread");
#pragma unroll 1
    for (int b0 = 0; b0 < PER; b0 += NB) {
        float4 a[NB][2];
#pragma unroll
        for (int n = 0; n < NB; n++) {
            const int i = int(threadIdx.x) + (b0 + n) * kThreads, r = i / CPR, c = (i % CPR) * 8, t = r0 + r;
            a[n][0] = a[n][1] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (t < T && c < HD) {
                const float4* src = reinterpret_cast<const float4*>(x + (row_base + t) * ld + off + c);
                a[n][0] = src[0], a[n][1] = src[1];
            }
        }
#pragma unroll
        for (int n = 0; n < NB; n++) {
            const int i = int(threadIdx.x) + (b0 + n) * kThreads, r = i / CPR, c = (i % CPR) * 8;
            *reinterpret_cast<uint4*>(tile + r * LD + c) =
                make_uint4(ptx::pack_bf16x2(a[n][0].x, a[n][0].y), ptx::pack_bf16x2(a[n][0].z, a[n][0].w),
                           ptx::pack_bf16x2(a[n][1].x, a[n][1].y), ptx::pack_bf16x2(a[n][1].z, a[n][1].w));
        }
    }
}

// ldmatrix.x4 addresses (see the top of this file). Tiles are row-major bf16 with row stride LD.
//  A operand, rows [r0, r0+16) x k [k0, k0+16): registers (rows 0-7, k 0-7), (8-15, 0-7),
//  (0-7, 8-15), (8-15, 8-15).
template <int LD>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const bf16* tile, int r0, int k0, int lane) {
    ptx::ldmatrix_x4(a, tile + (r0 + (lane & 15)) * LD + k0 + 8 * (lane >> 4));
}
//  B operand with n = tile rows [n0, n0+16) and k = tile columns [k0, k0+16): b[0..1] for n-block
//  n0 (k 0-7, 8-15), b[2..3] for n-block n0 + 8.
template <int LD>
__device__ __forceinline__ void load_b_rows_n(uint32_t (&b)[4], const bf16* tile, int n0, int k0, int lane) {
    ptx::ldmatrix_x4(b, tile + (n0 + (lane & 7) + 8 * (lane >> 4)) * LD + k0 + 8 * ((lane >> 3) & 1));
}
//  B operand with k = tile rows [k0, k0+16) and n = tile columns [n0, n0+16) (.trans): b[0..1] for
//  n-block n0, b[2..3] for n-block n0 + 8.
template <int LD>
__device__ __forceinline__ void load_b_rows_k(uint32_t (&b)[4], const bf16* tile, int k0, int n0, int lane) {
    ptx::ldmatrix_x4_trans(b, tile + (k0 + (lane & 15)) * LD + n0 + 8 * (lane >> 4));
}

// The A operand of k step kk from accumulators c (n-blocks 2kk, 2kk+1), rounded to bf16.
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
    a[0] = ptx::pack_bf16x2(c0[0], c0[1]);
    a[1] = ptx::pack_bf16x2(c0[2], c0[3]);
    a[2] = ptx::pack_bf16x2(c1[0], c1[1]);
    a[3] = ptx::pack_bf16x2(c1[2], c1[3]);
}

#endif  // TUNER_MMA_ARCH_OK

// ---- forward ---------------------------------------------------------------------------------------------

// out, q (B, T, NH, HD); k, v (B, T, NKV, HD); lse (B, NH, T). Grid (NH, ceil(T / 128), B), 128
// threads, Fwd<HDMAX>::smem_bytes of dynamic shared memory. Pointers 16-byte aligned, HD % 8 == 0.
// Blocks are dispatched in blockIdx order (x fastest): the heads of the last, longest (causal)
// query block first, so the short blocks fill in at the end (longest-processing-time first), and
// consecutive blocks share K / V rows in L2 (the G query heads of a kv head are adjacent).
template <int HDMAX, typename TI, typename TO>
__global__ void __launch_bounds__(kThreads)
    attention_mma_forward_kernel(TO* out, float* lse, const TI* q, const TI* k, const TI* v, const int32_t* seg_start,
                                 Params p) {
#if TUNER_MMA_ARCH_OK
    using C = Fwd<HDMAX>;
    constexpr int MT = C::MT, BR = C::BR, BC = C::BC, LD = C::LD;
    constexpr int NKS = HDMAX / 16;  // k steps of Q K^T
    constexpr int NSB = BC / 8;      // 8-key n-blocks of S
    constexpr int NOB = HDMAX / 8;   // 8-dim n-blocks of O
    TUNER_MMA_SMEM(smem_raw);
    bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // (BR, LD)
    bf16* sK = sQ + BR * LD;                        // 2 x (BC, LD)
    bf16* sV = sK + 2 * BC * LD;                    // 2 x (BC, LD)

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tg = lane & 3;
    const int qb = int(gridDim.y) - 1 - int(blockIdx.y);  // longest (last) query blocks first
    const int h = blockIdx.x, b = blockIdx.z, kvh = h / p.G;
    const int q0 = qb * BR, w0 = q0 + warp * 16 * MT;  // the block's, this warp's first query
    const int64_t ldq = int64_t(p.NH) * p.HD, ldkv = int64_t(p.NKV) * p.HD, row_base = int64_t(b) * p.T;
    const int32_t* seg = seg_start ? seg_start + row_base : nullptr;

    // Keys the block needs: [kmin, kmax] (kmin: the earliest segment start among its queries).
    int kmin = q0;
    if (seg)
        for (int i = lane; i < BR; i += 32)
            if (q0 + i < p.T) kmin = min(kmin, seg[q0 + i]);
    kmin = seg ? warp_min_i(kmin) : 0;
    const int kmax = min(p.T - 1, q0 + BR - 1);
    const int first = kmin / BC, ntiles = kmax / BC - first + 1;
    // This warp's 32 rows: the last valid one and the range of their segment starts.
    const bool warp_valid = w0 < p.T;
    const int wlast = min(p.T - 1, w0 + 16 * MT - 1);
    int wlo_min = w0, wlo_max = 0;
    if (seg && w0 + lane < p.T) wlo_min = wlo_max = seg[w0 + lane];  // 32 lanes = 16 MT rows
    wlo_min = seg ? warp_min_i(wlo_min) : 0;
    wlo_max = seg ? warp_max_i(wlo_max) : 0;

    stage_rows<HDMAX, BR>(sQ, q, row_base, ldq, int64_t(h) * p.HD, q0, p.T, p.HD);
    stage_rows<HDMAX, BC>(sK, k, row_base, ldkv, int64_t(kvh) * p.HD, first * BC, p.T, p.HD);
    stage_rows<HDMAX, BC>(sV, v, row_base, ldkv, int64_t(kvh) * p.HD, first * BC, p.T, p.HD);
    ptx::cp_async_commit();

    float o[MT][NOB][4], m[MT][2], l[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
        for (int n = 0; n < NOB; n++) o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.0f;
        m[mt][0] = m[mt][1] = -INFINITY;
        l[mt][0] = l[mt][1] = 0.0f;
    }
    uint32_t qa[C::kQRegs ? MT : 1][C::kQRegs ? NKS : 1][4];  // Q fragments (HDMAX 64)

    for (int it = 0; it < ntiles; it++) {
        const int s0 = (first + it) * BC, buf = it & 1;
        if (it + 1 < ntiles) {  // the next tile into the other buffer (its readers passed the last barrier)
            stage_rows<HDMAX, BC>(sK + (buf ^ 1) * BC * LD, k, row_base, ldkv, int64_t(kvh) * p.HD, s0 + BC, p.T, p.HD);
            stage_rows<HDMAX, BC>(sV + (buf ^ 1) * BC * LD, v, row_base, ldkv, int64_t(kvh) * p.HD, s0 + BC, p.T, p.HD);
            ptx::cp_async_commit();
            ptx::cp_async_wait<1>();  // everything but the tile just issued
        } else {
            ptx::cp_async_wait<0>();
        }
        __syncthreads();
        if constexpr (C::kQRegs) {
            if (it == 0) {
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
#pragma unroll
                    for (int kk = 0; kk < NKS; kk++)
                        load_a<LD>(qa[mt][kk], sQ, warp * 16 * MT + 16 * mt, kk * 16, lane);
            }
        }
        // Skip a tile none of this warp's rows sees (past its last row, or before every segment start).
        if (warp_valid && s0 <= wlast && s0 + BC - 1 >= wlo_min) {
            const bf16* kt = sK + buf * BC * LD;
            const bf16* vt = sV + buf * BC * LD;

            // S (32 x 64) = Q K^T.
            float s[MT][NSB][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int j = 0; j < NSB; j++) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.0f;
#pragma unroll(C::kQRegs ? NKS : 1)
            for (int kk = 0; kk < NKS; kk++) {
                uint32_t a[MT][4];
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    if constexpr (C::kQRegs) {
#pragma unroll
                        for (int i = 0; i < 4; i++) a[mt][i] = qa[mt][kk][i];
                    } else {
                        load_a<LD>(a[mt], sQ, warp * 16 * MT + 16 * mt, kk * 16, lane);
                    }
                }
#pragma unroll
                for (int np = 0; np < BC / 16; np++) {
                    uint32_t kb[4];
                    load_b_rows_n<LD>(kb, kt, np * 16, kk * 16, lane);
#pragma unroll
                    for (int mt = 0; mt < MT; mt++) {
                        ptx::mma_bf16_16816(s[mt][2 * np], a[mt], kb[0], kb[1]);
                        ptx::mma_bf16_16816(s[mt][2 * np + 1], a[mt], kb[2], kb[3]);
                    }
                }
            }

            // Mask only tiles crossing the diagonal (a key past the warp's first row) or a segment start.
            if (s0 + BC - 1 > w0 || s0 < wlo_max) {
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
#pragma unroll
                    for (int hf = 0; hf < 2; hf++) {
                        // The lane's row t and its segment start (read here: registers are scarce).
                        const int t = w0 + 16 * mt + 8 * hf + g;
                        const int lo = seg && t < p.T ? seg[t] : 0;
#pragma unroll
                        for (int j = 0; j < NSB; j++)
#pragma unroll
                            for (int e = 2 * hf; e < 2 * hf + 2; e++) {
                                const int key = s0 + 8 * j + 2 * tg + (e & 1);
                                if (key > t || key < lo) s[mt][j][e] = -INFINITY;
                            }
                    }
            }

            // Online softmax on each of the lane's 4 rows (a quad of lanes shares a row). P goes
            // straight from the S accumulators into A-operand registers of P V, rounded to bf16
            // (pa[mt][kk] = n-blocks 2kk, 2kk+1: register (j & 1) * 2 + hf holds block j's
            // elements of row hf), so the 64 f32 of S die before P V.
            uint32_t pa[MT][BC / 16][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int hf = 0; hf < 2; hf++) {
                    float mx = -INFINITY;
#pragma unroll
                    for (int j = 0; j < NSB; j++) mx = fmaxf(mx, fmaxf(s[mt][j][2 * hf], s[mt][j][2 * hf + 1]));
                    mx = quad_max(mx);
                    const float m_new = fmaxf(m[mt][hf], mx * p.scale_log2);
                    // m_new = -inf: nothing visible yet in this row (p = 0, nothing to rescale).
                    const float m_use = m_new == -INFINITY ? 0.0f : m_new;
                    const float alpha = ptx::fast_exp2(m[mt][hf] - m_use);
                    m[mt][hf] = m_new;
                    // O *= alpha (64 multiplies per lane at HDMAX 128), skipped when no row of the
                    // warp's 8 moved its max (alpha = 1 exactly: common once the maxima settle).
                    if (__any_sync(0xffffffffu, alpha != 1.0f)) {
#pragma unroll
                        for (int n = 0; n < NOB; n++) o[mt][n][2 * hf] *= alpha, o[mt][n][2 * hf + 1] *= alpha;
                    }
                    float rs = 0.0f;
#pragma unroll
                    for (int j = 0; j < NSB; j++) {
                        const float p0 = ptx::fast_exp2(s[mt][j][2 * hf] * p.scale_log2 - m_use);
                        const float p1 = ptx::fast_exp2(s[mt][j][2 * hf + 1] * p.scale_log2 - m_use);
                        rs += p0 + p1;
                        pa[mt][j >> 1][(j & 1) * 2 + hf] = ptx::pack_bf16x2(p0, p1);
                    }
                    l[mt][hf] = l[mt][hf] * alpha + rs;  // this lane's part of the row sum (summed at the end)
                }

            // O (32 x HDMAX) += P V.
#pragma unroll
            for (int kk = 0; kk < BC / 16; kk++) {
#pragma unroll
                for (int np = 0; np < HDMAX / 16; np++) {
                    uint32_t vb[4];
                    load_b_rows_k<LD>(vb, vt, kk * 16, np * 16, lane);
#pragma unroll
                    for (int mt = 0; mt < MT; mt++) {
                        ptx::mma_bf16_16816(o[mt][2 * np], pa[mt][kk], vb[0], vb[1]);
                        ptx::mma_bf16_16816(o[mt][2 * np + 1], pa[mt][kk], vb[2], vb[3]);
                    }
                }
            }
        }
        __syncthreads();  // the buffer just read is refilled next iteration
    }

#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            const float lt = quad_sum(l[mt][hf]);
            const int t = w0 + 16 * mt + 8 * hf + g;
            if (t >= p.T) continue;
            const float inv = 1.0f / lt;  // lt >= 1: the row's own key (seg_start <= t) is visible
            TO* dst = out + (row_base + t) * ldq + int64_t(h) * p.HD;
#pragma unroll
            for (int n = 0; n < NOB; n++) {
                const int d = 8 * n + 2 * tg;
                if (d < p.HD) store2(dst + d, o[mt][n][2 * hf] * inv, o[mt][n][2 * hf + 1] * inv);
            }
            if (tg == 0) lse[(int64_t(b) * p.NH + h) * p.T + t] = (m[mt][hf] + log2f(lt)) * kLn2;
        }
#else
    __trap();
#endif
}

// ---- backward: D and dout in bf16 ---------------------------------------------------------------------

// Four consecutive elements (16 bytes of f32, 8 of bf16, aligned) as f32.
__device__ __forceinline__ float4 load4(const float* x) { return *reinterpret_cast<const float4*>(x); }
__device__ __forceinline__ float4 load4(const bf16* x) {
    const uint2 u = *reinterpret_cast<const uint2*>(x);
    __nv_bfloat162 lo, hi;
    memcpy(&lo, &u.x, 4);
    memcpy(&hi, &u.y, 4);
    return make_float4(__bfloat162float(lo.x), __bfloat162float(lo.y), __bfloat162float(hi.x), __bfloat162float(hi.y));
}

// D (B, NH, T) = rowsum(dout * out) (f32); dout16 (B, T, NH, HD) = dout rounded to bf16. One warp per
// (b, t, h) row, lanes on 4 consecutive dims (HD % 4 == 0, HD <= 128); 16-byte aligned rows.
template <typename TO>
__global__ void attention_mma_delta_kernel(float* D, bf16* dout16, const float* dout, const TO* out, Params p) {
    const int64_t rows = int64_t(p.B) * p.T * p.NH;
    const int lane = threadIdx.x & 31;
    for (int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; row < rows;
         row += (int64_t(gridDim.x) * blockDim.x) >> 5) {
        const int d = 4 * lane;
        float s = 0.0f;
        if (d < p.HD) {
            const float4 a = *reinterpret_cast<const float4*>(dout + row * p.HD + d);
            const float4 o = load4(out + row * p.HD + d);
            s = a.x * o.x + a.y * o.y + a.z * o.z + a.w * o.w;
            *reinterpret_cast<uint2*>(dout16 + row * p.HD + d) =
                make_uint2(ptx::pack_bf16x2(a.x, a.y), ptx::pack_bf16x2(a.z, a.w));
        }
        s = warp_sum_f(s);
        // row = (b * T + t) * NH + h  ->  D (B, NH, T)
        const int64_t h = row % p.NH, bt = row / p.NH, b = bt / p.T, t = bt % p.T;
        if (lane == 0) D[(b * p.NH + h) * p.T + t] = s;
    }
}

// ---- backward: dq, per (64-query block, head, batch row) --------------------------------------------------

// dq, q (B, T, NH, HD); dout16 (B, T, NH, HD) bf16; k, v (B, T, NKV, HD); lse, D (B, NH, T). Grid
// (NH, ceil(T / 64), B) (longest query blocks first, as the forward), 128 threads,
// Bwd<HDMAX>::dq_smem_bytes.
template <int HDMAX, typename TI>
__global__ void __launch_bounds__(kThreads)
    attention_mma_dq_kernel(float* dq, const bf16* dout16, const TI* q, const TI* k, const TI* v, const float* lse,
                            const float* D, const int32_t* seg_start, Params p) {
#if TUNER_MMA_ARCH_OK
    using C = Bwd<HDMAX>;
    constexpr int BR = C::BR, BC = C::BC, LD = C::LD, NKS = HDMAX / 16, NSB = BC / 8, NOB = HDMAX / 8;
    TUNER_MMA_SMEM(smem_raw);
    bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // (BR, LD)
    bf16* sdO = sQ + BR * LD;                       // (BR, LD)
    bf16* sK = sdO + BR * LD;                       // 2 x (BC, LD)
    bf16* sV = sK + 2 * BC * LD;                    // 2 x (BC, LD)

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tg = lane & 3;
    const int qb = int(gridDim.y) - 1 - int(blockIdx.y);
    const int h = blockIdx.x, b = blockIdx.z, kvh = h / p.G;
    const int q0 = qb * BR, w0 = q0 + warp * 16;
    const int64_t ldq = int64_t(p.NH) * p.HD, ldkv = int64_t(p.NKV) * p.HD, row_base = int64_t(b) * p.T;
    const int32_t* seg = seg_start ? seg_start + row_base : nullptr;
    const float* Lh = lse + (int64_t(b) * p.NH + h) * p.T;
    const float* Dh = D + (int64_t(b) * p.NH + h) * p.T;

    int kmin = q0;
    if (seg)
        for (int i = lane; i < BR; i += 32)
            if (q0 + i < p.T) kmin = min(kmin, seg[q0 + i]);
    kmin = seg ? warp_min_i(kmin) : 0;
    const int kmax = min(p.T - 1, q0 + BR - 1);
    const int first = kmin / BC, ntiles = kmax / BC - first + 1;
    const bool warp_valid = w0 < p.T;
    const int wlast = min(p.T - 1, w0 + 15);
    int wlo_min = w0, wlo_max = 0;
    if (seg && lane < 16 && w0 + lane < p.T) wlo_min = wlo_max = seg[w0 + lane];
    wlo_min = seg ? warp_min_i(wlo_min) : 0;
    wlo_max = seg ? warp_max_i(wlo_max) : 0;
    // The lane's rows w0 + 8 hf + g: segment start, lse (in base-2 units) and D.
    int lo[2];
    float L2[2], Dt[2];
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int t = w0 + 8 * hf + g;
        const bool ok = t < p.T;
        lo[hf] = seg && ok ? seg[t] : 0;
        L2[hf] = ok ? Lh[t] * kLog2e : 0.0f;
        Dt[hf] = ok ? Dh[t] : 0.0f;
    }

    stage_rows<HDMAX, BR>(sQ, q, row_base, ldq, int64_t(h) * p.HD, q0, p.T, p.HD);
    stage_rows<HDMAX, BR>(sdO, dout16, row_base, ldq, int64_t(h) * p.HD, q0, p.T, p.HD);
    stage_rows<HDMAX, BC>(sK, k, row_base, ldkv, int64_t(kvh) * p.HD, first * BC, p.T, p.HD);
    stage_rows<HDMAX, BC>(sV, v, row_base, ldkv, int64_t(kvh) * p.HD, first * BC, p.T, p.HD);
    ptx::cp_async_commit();

    float acc[NOB][4];
#pragma unroll
    for (int n = 0; n < NOB; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    uint32_t qa[C::kRegs ? NKS : 1][4], da[C::kRegs ? NKS : 1][4];  // Q, dO fragments (HDMAX 64)

    for (int it = 0; it < ntiles; it++) {
        const int s0 = (first + it) * BC, buf = it & 1;
        if (it + 1 < ntiles) {
            stage_rows<HDMAX, BC>(sK + (buf ^ 1) * BC * LD, k, row_base, ldkv, int64_t(kvh) * p.HD, s0 + BC, p.T, p.HD);
            stage_rows<HDMAX, BC>(sV + (buf ^ 1) * BC * LD, v, row_base, ldkv, int64_t(kvh) * p.HD, s0 + BC, p.T, p.HD);
            ptx::cp_async_commit();
            ptx::cp_async_wait<1>();
        } else {
            ptx::cp_async_wait<0>();
        }
        __syncthreads();
        if constexpr (C::kRegs) {
            if (it == 0) {
#pragma unroll
                for (int kk = 0; kk < NKS; kk++) {
                    load_a<LD>(qa[kk], sQ, warp * 16, kk * 16, lane);
                    load_a<LD>(da[kk], sdO, warp * 16, kk * 16, lane);
                }
            }
        }
        if (warp_valid && s0 <= wlast && s0 + BC - 1 >= wlo_min) {
            const bf16* kt = sK + buf * BC * LD;
            const bf16* vt = sV + buf * BC * LD;
            // S = Q K^T and dP = dO V^T (16 x 64 each).
            float sc[NSB][4], dp[NSB][4];
#pragma unroll
            for (int j = 0; j < NSB; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) sc[j][e] = dp[j][e] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < NKS; kk++) {
                uint32_t a[4], d[4];
                if constexpr (C::kRegs) {
#pragma unroll
                    for (int i = 0; i < 4; i++) a[i] = qa[kk][i], d[i] = da[kk][i];
                } else {
                    load_a<LD>(a, sQ, warp * 16, kk * 16, lane);
                    load_a<LD>(d, sdO, warp * 16, kk * 16, lane);
                }
#pragma unroll
                for (int np = 0; np < BC / 16; np++) {
                    uint32_t kb[4], vb[4];
                    load_b_rows_n<LD>(kb, kt, np * 16, kk * 16, lane);
                    ptx::mma_bf16_16816(sc[2 * np], a, kb[0], kb[1]);
                    ptx::mma_bf16_16816(sc[2 * np + 1], a, kb[2], kb[3]);
                    load_b_rows_n<LD>(vb, vt, np * 16, kk * 16, lane);
                    ptx::mma_bf16_16816(dp[2 * np], d, vb[0], vb[1]);
                    ptx::mma_bf16_16816(dp[2 * np + 1], d, vb[2], vb[3]);
                }
            }
            // dS = P (dP - D), P = exp2(S scale log2e - lse log2e) where visible, packed to bf16 A
            // operands of dS K as computed (sa[kk]: n-blocks 2kk, 2kk+1, as acc_to_a).
            const bool mask = s0 + BC - 1 > w0 || s0 < wlo_max;
            uint32_t sa[BC / 16][4];
#pragma unroll
            for (int j = 0; j < NSB; j++)
#pragma unroll
                for (int hf = 0; hf < 2; hf++) {
                    const int t = w0 + 8 * hf + g;
                    float ds[2];
#pragma unroll
                    for (int c = 0; c < 2; c++) {
                        const int key = s0 + 8 * j + 2 * tg + c;
                        const bool vis = !mask || (key <= t && key >= lo[hf]);
                        const float pr = vis ? ptx::fast_exp2(sc[j][2 * hf + c] * p.scale_log2 - L2[hf]) : 0.0f;
                        ds[c] = pr * (dp[j][2 * hf + c] - Dt[hf]);
                    }
                    sa[j >> 1][(j & 1) * 2 + hf] = ptx::pack_bf16x2(ds[0], ds[1]);
                }
            // dQ (16 x HDMAX) += dS K.
#pragma unroll
            for (int kk = 0; kk < BC / 16; kk++) {
#pragma unroll
                for (int np = 0; np < HDMAX / 16; np++) {
                    uint32_t kb[4];
                    load_b_rows_k<LD>(kb, kt, kk * 16, np * 16, lane);
                    ptx::mma_bf16_16816(acc[2 * np], sa[kk], kb[0], kb[1]);
                    ptx::mma_bf16_16816(acc[2 * np + 1], sa[kk], kb[2], kb[3]);
                }
            }
        }
        __syncthreads();
    }

#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int t = w0 + 8 * hf + g;
        if (t >= p.T) continue;
        float* dst = dq + (row_base + t) * ldq + int64_t(h) * p.HD;
#pragma unroll
        for (int n = 0; n < NOB; n++) {
            const int d = 8 * n + 2 * tg;
            if (d < p.HD) store2(dst + d, acc[n][2 * hf] * p.scale, acc[n][2 * hf + 1] * p.scale);
        }
    }
#else
    __trap();
#endif
}

// ---- backward: dk, dv, per (64-key block, kv head, batch row) ---------------------------------------------

// dk, dv, k, v (B, T, NKV, HD); q, dout16 (B, T, NH, HD); lse, D (B, NH, T). Grid (NKV S, ceil(T / 64),
// B), 128 threads, Bwd<HDMAX>::dkv_smem_bytes. Block (kvh S + sg, kb) sums over query heads
// kvh G + sg G/S + [0, G/S): with S > 1 (GQA shapes with few key blocks: the causal key block 0
// does T / 64 query tiles per head, so a block per (key block, kv head) leaves most SMs idle
// behind the longest ones) block sg = 0 writes dk, dv and block sg >= 1 writes its partial sums to
// part + (sg - 1) 2 nkv (dk, then dv; nkv = B T NKV HD), which attention_mma_dkv_reduce_kernel adds
// in sg order. Key block 0 (the longest) is dispatched first.
template <int HDMAX, typename TI>
__global__ void __launch_bounds__(kThreads, Bwd<HDMAX>::kMinBlocks)
    attention_mma_dkv_kernel(float* dk, float* dv, float* part, const bf16* dout16, const TI* q, const TI* k,
                             const TI* v, const float* lse, const float* D, const int32_t* seg_start, Params p) {
#if TUNER_MMA_ARCH_OK
    using C = Bwd<HDMAX>;
    constexpr int BR = C::BR, BC = C::BC, LD = C::LD, NKS = HDMAX / 16, NSB = BR / 8, NOB = HDMAX / 8;
    TUNER_MMA_SMEM(smem_raw);
    bf16* sK = reinterpret_cast<bf16*>(smem_raw);  // (BC, LD)
    bf16* sV = sK + BC * LD;                        // (BC, LD)
    bf16* sQ = sV + BC * LD;                        // 2 x (BR, LD)
    bf16* sdO = sQ + 2 * BR * LD;                   // 2 x (BR, LD)
    float* sL = reinterpret_cast<float*>(sdO + 2 * BR * LD);  // 2 x (BR): lse of the tile's queries
    float* sD = sL + 2 * BR;                                  // 2 x (BR): D
    int* sLo = reinterpret_cast<int*>(sD + 2 * BR);           // 2 x (BR): segment starts
    __shared__ int s_red[kWarps];

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tg = lane & 3;
    const int kvh = int(blockIdx.x) / p.S, sg = int(blockIdx.x) % p.S, GS = p.G / p.S, b = blockIdx.z;
    const int s0 = int(blockIdx.y) * BC, sw = s0 + warp * 16;  // the block's, this warp's first key
    const int s_last = min(p.T - 1, s0 + BC - 1);
    const int64_t ldq = int64_t(p.NH) * p.HD, ldkv = int64_t(p.NKV) * p.HD, row_base = int64_t(b) * p.T;
    const int32_t* seg = seg_start ? seg_start + row_base : nullptr;

    // The last query that sees a key of the block (queries before s0 see none of them; with packed
    // segments the queries of later segments see none either).
    int t_end = p.T - 1;
    if (seg) {
        int last = -1;
        for (int t = s0 + int(threadIdx.x); t < p.T; t += kThreads)
            if (seg[t] <= s_last) last = t;
        last = warp_max_i(last);
        if (lane == 0) s_red[warp] = last;
        __syncthreads();
        t_end = s_red[0];
#pragma unroll
        for (int w = 1; w < kWarps; w++) t_end = max(t_end, s_red[w]);
    }
    const int ntq = (t_end - s0) / BR + 1;  // query tiles t0 = s0 + i BR (t_end >= s_last >= s0)
    const int total = GS * ntq;

    // Tile i: query head kvh G + sg GS + i / ntq, queries s0 + (i % ntq) BR ...: Q, dO, lse, D, seg starts.
    auto stage_tile = [&](int i, int buf) {
        const int h = kvh * p.G + sg * GS + i / ntq, t0 = s0 + (i % ntq) * BR;
        stage_rows<HDMAX, BR>(sQ + buf * BR * LD, q, row_base, ldq, int64_t(h) * p.HD, t0, p.T, p.HD);
        stage_rows<HDMAX, BR>(sdO + buf * BR * LD, dout16, row_base, ldq, int64_t(h) * p.HD, t0, p.T, p.HD);
        const int j = int(threadIdx.x) & (BR - 1), t = t0 + j;
        const bool ok = t < p.T;
        const int64_t lrow = (int64_t(b) * p.NH + h) * p.T;
        if (threadIdx.x < BR) {
            ptx::cp_async_4(sL + buf * BR + j, ok ? lse + lrow + t : lse, ok);
        } else {
            ptx::cp_async_4(sD + buf * BR + j, ok ? D + lrow + t : D, ok);
            if (seg) ptx::cp_async_4(sLo + buf * BR + j, ok ? seg + t : seg, ok);
            else sLo[buf * BR + j] = 0;
        }
    };

    stage_rows<HDMAX, BC>(sK, k, row_base, ldkv, int64_t(kvh) * p.HD, s0, p.T, p.HD);
    stage_rows<HDMAX, BC>(sV, v, row_base, ldkv, int64_t(kvh) * p.HD, s0, p.T, p.HD);
    stage_tile(0, 0);
    ptx::cp_async_commit();

    float dka[NOB][4], dva[NOB][4];
#pragma unroll
    for (int n = 0; n < NOB; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) dka[n][e] = dva[n][e] = 0.0f;

    for (int it = 0; it < total; it++) {
        const int buf = it & 1, t0 = s0 + (it % ntq) * BR;
        if (it + 1 < total) {
            stage_tile(it + 1, buf ^ 1);
            ptx::cp_async_commit();
            ptx::cp_async_wait<1>();
        } else {
            ptx::cp_async_wait<0>();
        }
        __syncthreads();
        const float* cL = sL + buf * BR;
        const float* cD = sD + buf * BR;
        const int* cLo = sLo + buf * BR;
        // Segment starts of the tile's valid queries: skip the tile if every one is past this
        // warp's keys; mask if some query starts after the warp's first key.
        int qlo_min = p.T, qlo_max = 0;
#pragma unroll
        for (int r = 0; r < BR / 32; r++) {
            const int j = lane + 32 * r;
            if (t0 + j < p.T) qlo_min = min(qlo_min, cLo[j]), qlo_max = max(qlo_max, cLo[j]);
        }
        qlo_min = warp_min_i(qlo_min);
        qlo_max = warp_max_i(qlo_max);
        if (sw < p.T && qlo_min <= sw + 15) {
            const bf16* qt = sQ + buf * BR * LD;
            const bf16* ot = sdO + buf * BR * LD;
            // S^T = K Q^T and dP^T = V dO^T (16 keys x 64 queries each).
            float st[NSB][4], dpt[NSB][4];
#pragma unroll
            for (int j = 0; j < NSB; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) st[j][e] = dpt[j][e] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < NKS; kk++) {
                uint32_t ka[4], va[4];
                load_a<LD>(ka, sK, warp * 16, kk * 16, lane);
                load_a<LD>(va, sV, warp * 16, kk * 16, lane);
#pragma unroll
                for (int np = 0; np < BR / 16; np++) {
                    uint32_t qb[4], ob[4];
                    load_b_rows_n<LD>(qb, qt, np * 16, kk * 16, lane);
                    ptx::mma_bf16_16816(st[2 * np], ka, qb[0], qb[1]);
                    ptx::mma_bf16_16816(st[2 * np + 1], ka, qb[2], qb[3]);
                    load_b_rows_n<LD>(ob, ot, np * 16, kk * 16, lane);
                    ptx::mma_bf16_16816(dpt[2 * np], va, ob[0], ob[1]);
                    ptx::mma_bf16_16816(dpt[2 * np + 1], va, ob[2], ob[3]);
                }
            }
            // P^T and dS^T, packed to bf16 A operands as computed (pa[kk], sa[kk]: query n-blocks 2kk,
            // 2kk+1, as acc_to_a). Key sw + 8 hf + g (row), query t0 + jq (column).
            const bool mask = t0 < sw + 15 || qlo_max > sw || t0 + BR > p.T;
            uint32_t pa[BR / 16][4], sa[BR / 16][4];
#pragma unroll
            for (int j = 0; j < NSB; j++) {
                const int j0 = 8 * j + 2 * tg;  // the lane's two query columns j0, j0 + 1
                const float2 Lq = *reinterpret_cast<const float2*>(cL + j0);
                const float2 Dq = *reinterpret_cast<const float2*>(cD + j0);
                const float Lc[2] = {Lq.x * kLog2e, Lq.y * kLog2e}, Dc[2] = {Dq.x, Dq.y};
#pragma unroll
                for (int hf = 0; hf < 2; hf++) {
                    const int key = sw + 8 * hf + g;
                    float pr[2], ds[2];
#pragma unroll
                    for (int c = 0; c < 2; c++) {
                        const int t = t0 + j0 + c;
                        const bool vis = !mask || (t < p.T && key <= t && key >= cLo[j0 + c]);
                        pr[c] = vis ? ptx::fast_exp2(st[j][2 * hf + c] * p.scale_log2 - Lc[c]) : 0.0f;
                        ds[c] = pr[c] * (dpt[j][2 * hf + c] - Dc[c]);
                    }
                    pa[j >> 1][(j & 1) * 2 + hf] = ptx::pack_bf16x2(pr[0], pr[1]);
                    sa[j >> 1][(j & 1) * 2 + hf] = ptx::pack_bf16x2(ds[0], ds[1]);
                }
            }
            // dV += P^T dO, dK += dS^T Q (16 x HDMAX each).
#pragma unroll
            for (int kk = 0; kk < BR / 16; kk++) {
#pragma unroll
                for (int np = 0; np < HDMAX / 16; np++) {
                    uint32_t ob[4], qb[4];
                    load_b_rows_k<LD>(ob, ot, kk * 16, np * 16, lane);
                    ptx::mma_bf16_16816(dva[2 * np], pa[kk], ob[0], ob[1]);
                    ptx::mma_bf16_16816(dva[2 * np + 1], pa[kk], ob[2], ob[3]);
                    load_b_rows_k<LD>(qb, qt, kk * 16, np * 16, lane);
                    ptx::mma_bf16_16816(dka[2 * np], sa[kk], qb[0], qb[1]);
                    ptx::mma_bf16_16816(dka[2 * np + 1], sa[kk], qb[2], qb[3]);
                }
            }
        }
        __syncthreads();
    }

    const int64_t nkv = int64_t(p.B) * p.T * ldkv;
    float* dko = sg == 0 ? dk : part + int64_t(sg - 1) * 2 * nkv;
    float* dvo = sg == 0 ? dv : part + int64_t(sg - 1) * 2 * nkv + nkv;
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        const int s = sw + 8 * hf + g;
        if (s >= p.T) continue;
        float* dkr = dko + (row_base + s) * ldkv + int64_t(kvh) * p.HD;
        float* dvr = dvo + (row_base + s) * ldkv + int64_t(kvh) * p.HD;
#pragma unroll
        for (int n = 0; n < NOB; n++) {
            const int d = 8 * n + 2 * tg;
            if (d >= p.HD) continue;
            store2(dkr + d, dka[n][2 * hf] * p.scale, dka[n][2 * hf + 1] * p.scale);
            store2(dvr + d, dva[n][2 * hf], dva[n][2 * hf + 1]);
        }
    }
#else
    __trap();
#endif
}

// dk += part[0] + ... + part[S-2] (dk parts), dv likewise, in that order: the partial sums of the dk /
// dv blocks with sg >= 1 (see attention_mma_dkv_kernel). n4 = nkv / 4 (nkv % 4 == 0: HD % 8 == 0);
// 16-byte aligned.
__global__ void attention_mma_dkv_reduce_kernel(float* dk, float* dv, const float* part, int64_t n4, int S) {
    float4* k4 = reinterpret_cast<float4*>(dk);
    float4* v4 = reinterpret_cast<float4*>(dv);
    const float4* p4 = reinterpret_cast<const float4*>(part);
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n4; i += int64_t(gridDim.x) * blockDim.x) {
        float4 a = k4[i], c = v4[i];
        for (int sg = 1; sg < S; sg++) {
            const float4 x = p4[int64_t(sg - 1) * 2 * n4 + i], y = p4[int64_t(sg - 1) * 2 * n4 + n4 + i];
            a.x += x.x, a.y += x.y, a.z += x.z, a.w += x.w;
            c.x += y.x, c.y += y.y, c.z += y.z, c.w += y.w;
        }
        k4[i] = a, v4[i] = c;
    }
}

}  // namespace tuner::cuda::attn_mma
