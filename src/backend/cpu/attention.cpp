// Causal self-attention with grouped-query heads and packed segments, flash-style on the CPU
// (FlashAttention-2: Dao, 2023). Scores live only as one (BQ x BK) block per thread; softmax is
// computed online over key blocks (running max m and sum l), and the backward recomputes the
// probabilities from the saved log-sum-exp instead of storing them.
//
// Shapes: q, out, dq (B, T, NH, HD); k, v, dk, dv (B, T, NKV, HD); lse (B, NH, T).
// Query head h reads kv head h / (NH / NKV). Query t of row b sees keys
// s in [seg_start[b*T + t], t] (seg_start null: [0, t]). Scores are scaled by 1/sqrt(HD).
//
// Layout tricks:
//  * K (and V in the backward) are transposed once per call into (HD, Tp) panels per (b, kv head),
//    Tp = T rounded up to BK with zero columns, so a score block S = Q K^T is a sequence of
//    rank-1 updates whose key dimension is contiguous: 16 keys per vector, no horizontal sums.
//  * Products with HD as the output width (P V, dS K, P^T dO, dS^T Q) vectorise over HD with a
//    lane mask for head dims that are not multiples of 16.
//  * Backward: each (b, head, query block) task owns its dq rows; dk and dv receive
//    contributions from every query block, so each thread accumulates them in its own buffer
//    (T x NKV x HD, one batch row at a time) and the buffers are summed at the end: no races,
//    no atomics. Tasks are dealt out statically, so results are reproducible run to run.
//
// Speed (2 Zen threads, B=1 T=512 NH=9 NKV=3 HD=64, causal): forward 0.92 ms, backward 1.95 ms,
// i.e. 330 / 390 GFLOP/s counting only the useful (lower-triangle) products. The two inner
// kernels (scores_tile, acc_tile) run near the FMA limit (~245 GFLOP/s per core, measured with
// perf); the rest is masking/softmax, the diagonal blocks' masked half, and transposes.

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "backend/cpu/simd.h"
#include "backend/cpu/act_f32.h"
#include "backend/kernels.h"
#include "core/error.h"
#include "core/scratch.h"

namespace tuner::cpu {

namespace {

using namespace simd;

constexpr int BQ = 64;  // queries per block (rows of a score block)
constexpr int BK = 64;  // keys per block (columns of a score block; 4 vectors)
constexpr int kMaxThreads = 1024;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// ---- block products -------------------------------------------------------------------------

// S (R, BK) = A (R rows of length HD, row stride lda) @ BT (HD, BK panel, row stride ldbt).
template <int R>
inline void scores_tile(float* S, const float* A, int64_t lda, const float* BT, int64_t ldbt, int HD) {
    Vec acc[R][4];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) acc[r][c] = zero();
    for (int d = 0; d < HD; d++) {
        const float* b = BT + d * ldbt;
        const Vec b0 = load(b), b1 = load(b + 16), b2 = load(b + 32), b3 = load(b + 48);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const Vec a = set1(A[r * lda + d]);
            acc[r][0] = fmadd(a, b0, acc[r][0]);
            acc[r][1] = fmadd(a, b1, acc[r][1]);
            acc[r][2] = fmadd(a, b2, acc[r][2]);
            acc[r][3] = fmadd(a, b3, acc[r][3]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) store(S + r * BK + 16 * c, acc[r][c]);
}

// S (M, BK) = A (M, HD) @ BT (HD, BK): one score block (or dP = dO V^T).
void scores_block(float* S, const float* A, int64_t lda, int M, const float* BT, int64_t ldbt, int HD) {
    int i = 0;
    for (; i + 6 <= M; i += 6) scores_tile<6>(S + i * BK, A + i * lda, lda, BT, ldbt, HD);
    for (; i + 4 <= M; i += 4) scores_tile<4>(S + i * BK, A + i * lda, lda, BT, ldbt, HD);
    for (; i + 2 <= M; i += 2) scores_tile<2>(S + i * BK, A + i * lda, lda, BT, ldbt, HD);
    for (; i < M; i++) scores_tile<1>(S + i * BK, A + i * lda, lda, BT, ldbt, HD);
}

// C (R, width) += sum_k A(r, k) * B (k, :) for k < K, with A(r, k) = A[r * ar + k * ac] (so A
// may be read transposed) and width = 16 * (NV - 1) + popcount(last) <= 64.
template <int R, int NV>
inline void acc_tile(float* C, int64_t ldc, const float* A, int64_t ar, int64_t ac, int K, const float* B, int64_t ldb,
                     Mask last) {
    // Fully unrolled so that the R x NV accumulators stay in registers (GCC keeps a Vec array in
    // memory across the k loop when the small loops are left rolled).
    Vec acc[R][NV];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[r][v] = zero();
    for (int k = 0; k < K; k++) {
        const float* b = B + k * ldb;
        Vec bv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV - 1; v++) bv[v] = load(b + 16 * v);
        bv[NV - 1] = load(b + 16 * (NV - 1), last);
        const float* a = A + k * ac;
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const Vec av = set1(a[r * ar]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[r][v] = fmadd(av, bv[v], acc[r][v]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        float* c = C + r * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < NV - 1; v++) store(c + 16 * v, add(load(c + 16 * v), acc[r][v]));
        store(c + 16 * (NV - 1), add(load(c + 16 * (NV - 1), last), acc[r][NV - 1]), last);
    }
}

template <int NV>
void acc_rows_nv(float* C, int64_t ldc, const float* A, int64_t ar, int64_t ac, int M, int K, const float* B,
                 int64_t ldb, Mask last) {
    // 6 x NV accumulators for 3-4 vectors, 8 x NV for 1-2 (measured: 4 rows left the FMA units
    // half idle, 6 rows gave +30%; 8 x 4 would spill).
    constexpr int R = NV >= 3 ? 6 : 8;
    int i = 0;
    for (; i + R <= M; i += R) acc_tile<R, NV>(C + i * ldc, ldc, A + i * ar, ar, ac, K, B, ldb, last);
    for (; i + 4 <= M; i += 4) acc_tile<4, NV>(C + i * ldc, ldc, A + i * ar, ar, ac, K, B, ldb, last);
    for (; i + 2 <= M; i += 2) acc_tile<2, NV>(C + i * ldc, ldc, A + i * ar, ar, ac, K, B, ldb, last);
    for (; i < M; i++) acc_tile<1, NV>(C + i * ldc, ldc, A + i * ar, ar, ac, K, B, ldb, last);
}

// C (M, width) += A (M, K) @ B (K, width); A(i, k) = A[i * ar + k * ac]; rows of B and C are
// contiguous over `width` (the head dim), with strides ldb and ldc.
void acc_rows(float* C, int64_t ldc, const float* A, int64_t ar, int64_t ac, int M, int K, const float* B, int64_t ldb,
              int width) {
    if (M <= 0 || K <= 0) return;
    for (int d0 = 0; d0 < width; d0 += 64) {
        const int w = std::min(64, width - d0);
        const int nv = (w + 15) / 16;
        const Mask last = mask_first(w - 16 * (nv - 1));
        switch (nv) {
            case 1:
                acc_rows_nv<1>(C + d0, ldc, A, ar, ac, M, K, B + d0, ldb, last);
                break;
            case 2:
                acc_rows_nv<2>(C + d0, ldc, A, ar, ac, M, K, B + d0, ldb, last);
                break;
            case 3:
                acc_rows_nv<3>(C + d0, ldc, A, ar, ac, M, K, B + d0, ldb, last);
                break;
            default:
                acc_rows_nv<4>(C + d0, ldc, A, ar, ac, M, K, B + d0, ldb, last);
                break;
        }
    }
}

// Dot product of two length-n vectors (n = HD).
inline float dot(const float* a, const float* b, int n) {
    Vec acc = zero();
    for (int d = 0; d < n; d += W) {
        const Mask m = mask_first(n - d);
        acc = fmadd(load(a + d, m), load(b + d, m), acc);
    }
    return reduce_add(acc);
}

// ---- shared setup ---------------------------------------------------------------------------

struct Geometry {
    int B, T, NH, NKV, HD, G;  // G = query heads per kv head
    int64_t Tp;                // T rounded up to BK: columns of a transposed K/V panel
    int nqb;                   // query blocks per (b, head)
    int64_t ldq, ldkv;         // row strides of q/out and k/v
    float scale;
};

Geometry geometry(const AttnShape& s) {
    TUNER_ASSERT(s.NH > 0 && s.NKV > 0 && s.HD > 0 && s.NH % s.NKV == 0);
    Geometry g;
    g.B = s.B, g.T = s.T, g.NH = s.NH, g.NKV = s.NKV, g.HD = s.HD, g.G = s.NH / s.NKV;
    g.Tp = (int64_t(s.T) + BK - 1) / BK * BK;
    g.nqb = (s.T + BQ - 1) / BQ;
    g.ldq = int64_t(s.NH) * s.HD;
    g.ldkv = int64_t(s.NKV) * s.HD;
    g.scale = 1.0f / std::sqrt(float(s.HD));
    return g;
}

// panel (B, NKV, HD, Tp) = transpose of x (B, T, NKV, HD) per (b, kv head), zero past T.
void transpose_kv(float* panel, const float* x, const Geometry& g) {
    const int64_t nblocks = int64_t(g.B) * g.NKV * (g.Tp / BK);
#pragma omp parallel for schedule(static)
    for (int64_t idx = 0; idx < nblocks; idx++) {
        const int64_t sb = idx % (g.Tp / BK), bk = idx / (g.Tp / BK);  // bk = b * NKV + kvh
        const int64_t b = bk / g.NKV, kvh = bk % g.NKV;
        float* dst = panel + bk * g.HD * g.Tp + sb * BK;
        const int64_t s0 = sb * BK, ns = std::min<int64_t>(BK, g.T - s0);
        for (int d = 0; d < g.HD; d++) {
            float* drow = dst + d * g.Tp;
            for (int64_t j = 0; j < ns; j++) drow[j] = x[((b * g.T + s0 + j) * g.NKV + kvh) * g.HD + d];
            for (int64_t j = ns; j < BK; j++) drow[j] = 0.0f;
        }
    }
}

// Key range of query t: [lo, t]. Returns lo and checks the caller's invariant lo <= t.
inline int key_lo(const int32_t* seg_start, int64_t row, int t) {
    if (!seg_start) return 0;
    const int lo = seg_start[row];
    TUNER_ASSERT_MSG(lo >= 0 && lo <= t, "seg_start must satisfy 0 <= seg_start[t] <= t");
    return lo;
}

}  // namespace

// ---- forward --------------------------------------------------------------------------------

void attention_forward(ActOut out_act, float* lse, ActIn q_act, ActIn k_act, ActIn v_act, const int32_t* seg_start,
                       const AttnShape& s) {
    if (s.B <= 0 || s.T <= 0) return;
    const int64_t nq_elems = int64_t(s.B) * s.T * s.NH * s.HD, nkv_elems = int64_t(s.B) * s.T * s.NKV * s.HD;
    const F32In q_f32(q_act, nq_elems), k_f32(k_act, nkv_elems), v_f32(v_act, nkv_elems);
    F32Out out_f32(out_act, nq_elems);
    float* out = out_f32.get();
    const float *q = q_f32.get(), *k = k_f32.get(), *v = v_f32.get();
    const Geometry g = geometry(s);
    const int HD = g.HD;
    float* kt = scratch_f32(ScratchSlot::kWeightTile, size_t(g.B) * g.NKV * HD * g.Tp);
    transpose_kv(kt, k, g);

    const int64_t ntasks = int64_t(g.B) * g.NH * g.nqb;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t task = 0; task < ntasks; task++) {
        // Last query blocks first: they see the most keys, so the dynamic schedule balances.
        const int qb = g.nqb - 1 - int(task / (int64_t(g.B) * g.NH));
        const int64_t bh = task % (int64_t(g.B) * g.NH);
        const int b = int(bh / g.NH), h = int(bh % g.NH), kvh = h / g.G;
        const int q0 = qb * BQ, nq = std::min(BQ, g.T - q0);

        float* S = scratch_f32(ScratchSlot::kAttention, size_t(BQ) * BK + size_t(BQ) * HD + 3 * BQ);
        float* O = S + BQ * BK;  // (BQ, HD) unnormalised output
        float* m = O + BQ * HD;  // running max of scaled scores
        float* l = m + BQ;       // running sum of exp(score - m)
        int* lo = reinterpret_cast<int*>(l + BQ);
        std::fill(O, O + size_t(nq) * HD, 0.0f);
        int kmin = q0;
        for (int i = 0; i < nq; i++) {
            m[i] = kNegInf, l[i] = 0.0f;
            lo[i] = key_lo(seg_start, int64_t(b) * g.T + q0 + i, q0 + i);
            kmin = std::min(kmin, lo[i]);
        }
        const float* Q = q + ((int64_t(b) * g.T + q0) * g.NH + h) * HD;
        const float* KT = kt + (int64_t(b) * g.NKV + kvh) * HD * g.Tp;
        const float* V = v + (int64_t(b) * g.T * g.NKV + kvh) * HD;

        for (int s0 = kmin / BK * BK; s0 <= q0 + nq - 1; s0 += BK) {
            const int nk = std::min(BK, g.T - s0);
            scores_block(S, Q, g.ldq, nq, KT + s0, g.Tp, HD);
            for (int i = 0; i < nq; i++) {
                float* srow = S + i * BK;
                const int jlo = std::max(lo[i] - s0, 0), jhi = std::min(q0 + i - s0 + 1, nk);
                if (jlo >= jhi) {  // no visible key in this block for this query
                    for (int c = 0; c < BK; c += W) store(srow + c, zero());
                    continue;
                }
                Vec vmax = set1(kNegInf);
                for (int c = 0; c < BK; c += W) {
                    const Vec x = mul(load(srow + c), set1(g.scale));
                    store(srow + c, x);
                    vmax = max(vmax, select(mask_range(jlo - c, jhi - c), x, set1(kNegInf)));
                }
                const float m_new = std::max(m[i], reduce_max(vmax));
                Vec vsum = zero();
                for (int c = 0; c < BK; c += W) {
                    const Vec p = select(mask_range(jlo - c, jhi - c), exp(sub(load(srow + c), set1(m_new))), zero());
                    store(srow + c, p);
                    vsum = add(vsum, p);
                }
                const float alpha = std::exp(m[i] - m_new);  // 0 on the first visible block
                l[i] = l[i] * alpha + reduce_add(vsum);
                m[i] = m_new;
                if (alpha != 1.0f) {
                    float* orow = O + i * HD;
                    for (int d = 0; d < HD; d++) orow[d] *= alpha;
                }
            }
            acc_rows(O, HD, S, BK, 1, nq, nk, V + int64_t(s0) * g.ldkv, g.ldkv, HD);
        }
        float* L = lse + (int64_t(b) * g.NH + h) * g.T + q0;
        for (int i = 0; i < nq; i++) {
            const float inv = 1.0f / l[i];
            float* dst = out + ((int64_t(b) * g.T + q0 + i) * g.NH + h) * HD;
            for (int d = 0; d < HD; d++) dst[d] = O[i * HD + d] * inv;
            L[i] = m[i] + std::log(l[i]);
        }
    }
}

// ---- backward -------------------------------------------------------------------------------
// With P = exp(scale * Q K^T - lse) (masked entries 0), D_i = dout_i . out_i:
//   dV = P^T dout,  dP = dout V^T,  dS = P * (dP - D),  dQ = scale dS K,  dK = scale dS^T Q.

void attention_backward(float* dq, float* dk, float* dv, const float* dout, ActIn q_act, ActIn k_act, ActIn v_act,
                        ActIn out_act, const float* lse, const int32_t* seg_start, const AttnShape& s) {
    if (s.B <= 0 || s.T <= 0) return;
    const int64_t nq_elems = int64_t(s.B) * s.T * s.NH * s.HD, nkv_elems = int64_t(s.B) * s.T * s.NKV * s.HD;
    const F32In q_f32(q_act, nq_elems), k_f32(k_act, nkv_elems), v_f32(v_act, nkv_elems), out_f32(out_act, nq_elems);
    const float *q = q_f32.get(), *k = k_f32.get(), *v = v_f32.get(), *out = out_f32.get();
    const Geometry g = geometry(s);
    const int HD = g.HD;
    const size_t panel = size_t(g.NKV) * HD * g.Tp;  // one batch row of transposed K or V
    float* kt = scratch_f32(ScratchSlot::kWeightTile, 2 * size_t(g.B) * panel);
    float* vt = kt + size_t(g.B) * panel;
    transpose_kv(kt, k, g);
    transpose_kv(vt, v, g);

    const size_t kv_row = size_t(g.T) * g.ldkv;  // floats of dk (or dv) for one batch row
    float* thread_acc[kMaxThreads];

    // One batch row at a time keeps the per-thread dk/dv buffers at T x NKV x HD.
    for (int b = 0; b < g.B; b++) {
        const float* KT = kt + size_t(b) * panel;
        const float* VT = vt + size_t(b) * panel;
#pragma omp parallel
        {
            const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
            TUNER_ASSERT(nth <= kMaxThreads);
            float* acc = scratch_f32(ScratchSlot::kMisc, 2 * kv_row);  // [dk | dv] of this thread
            std::fill(acc, acc + 2 * kv_row, 0.0f);
            thread_acc[tid] = acc;

            const int64_t ntasks = int64_t(g.NH) * g.nqb;
#pragma omp for schedule(static, 1)
            for (int64_t task = 0; task < ntasks; task++) {
                const int qb = g.nqb - 1 - int(task / g.NH);
                const int h = int(task % g.NH), kvh = h / g.G;
                const int q0 = qb * BQ, nq = std::min(BQ, g.T - q0);

                float* S = scratch_f32(ScratchSlot::kAttention, 2 * size_t(BQ) * BK + size_t(BQ) * HD + 3 * BQ);
                float* dP = S + BQ * BK;
                float* dQ = dP + BQ * BK;  // (BQ, HD) accumulator
                float* Di = dQ + BQ * HD;
                float* Li = Di + BQ;
                int* lo = reinterpret_cast<int*>(Li + BQ);

                const int64_t qoff = ((int64_t(b) * g.T + q0) * g.NH + h) * HD;
                const float* Q = q + qoff;
                const float* dO = dout + qoff;
                const float* Kr = k + (int64_t(b) * g.T * g.NKV + kvh) * HD;
                float* dK = acc + size_t(kvh) * HD;  // rows s at dK + s * ldkv
                float* dV = acc + kv_row + size_t(kvh) * HD;
                const float* KTh = KT + size_t(kvh) * HD * g.Tp;
                const float* VTh = VT + size_t(kvh) * HD * g.Tp;

                std::fill(dQ, dQ + size_t(nq) * HD, 0.0f);
                int kmin = q0;
                for (int i = 0; i < nq; i++) {
                    Di[i] = dot(dO + i * g.ldq, out + qoff + i * g.ldq, HD);
                    Li[i] = lse[(int64_t(b) * g.NH + h) * g.T + q0 + i];
                    lo[i] = key_lo(seg_start, int64_t(b) * g.T + q0 + i, q0 + i);
                    kmin = std::min(kmin, lo[i]);
                }

                for (int s0 = kmin / BK * BK; s0 <= q0 + nq - 1; s0 += BK) {
                    const int nk = std::min(BK, g.T - s0);
                    scores_block(S, Q, g.ldq, nq, KTh + s0, g.Tp, HD);
                    scores_block(dP, dO, g.ldq, nq, VTh + s0, g.Tp, HD);
                    // S <- P, dP <- scale * dS (masked entries 0).
                    for (int i = 0; i < nq; i++) {
                        float* srow = S + i * BK;
                        float* prow = dP + i * BK;
                        const int jlo = std::max(lo[i] - s0, 0), jhi = std::min(q0 + i - s0 + 1, nk);
                        const Vec vl = set1(Li[i]), vd = set1(Di[i]), vs = set1(g.scale);
                        for (int c = 0; c < BK; c += W) {
                            const Mask mk = mask_range(jlo - c, jhi - c);
                            const Vec p = select(mk, exp(sub(mul(load(srow + c), vs), vl)), zero());
                            store(srow + c, p);
                            store(prow + c, mul(mul(p, sub(load(prow + c), vd)), vs));
                        }
                    }
                    float* dVs = dV + int64_t(s0) * g.ldkv;
                    float* dKs = dK + int64_t(s0) * g.ldkv;
                    acc_rows(dVs, g.ldkv, S, 1, BK, nk, nq, dO, g.ldq, HD);                      // dV += P^T dO
                    acc_rows(dKs, g.ldkv, dP, 1, BK, nk, nq, Q, g.ldq, HD);                      // dK += dS^T Q
                    acc_rows(dQ, HD, dP, BK, 1, nq, nk, Kr + int64_t(s0) * g.ldkv, g.ldkv, HD);  // dQ += dS K
                }
                for (int i = 0; i < nq; i++) std::copy(dQ + i * HD, dQ + (i + 1) * HD, dq + qoff + i * g.ldq);
            }
            // (implicit barrier) Sum the per-thread buffers into dk, dv for this batch row.
            float* dk_b = dk + size_t(b) * kv_row;
            float* dv_b = dv + size_t(b) * kv_row;
#pragma omp for schedule(static)
            for (int64_t e0 = 0; e0 < int64_t(kv_row); e0 += 1024) {
                const int64_t ne = std::min<int64_t>(int64_t(kv_row) - e0, 1024);
                float* ok = dk_b + e0;
                float* ov = dv_b + e0;
                std::copy(thread_acc[0] + e0, thread_acc[0] + e0 + ne, ok);
                std::copy(thread_acc[0] + kv_row + e0, thread_acc[0] + kv_row + e0 + ne, ov);
                for (int t = 1; t < nth; t++) {
                    const float* ak = thread_acc[t] + e0;
                    const float* av = thread_acc[t] + kv_row + e0;
#pragma omp simd
                    for (int64_t e = 0; e < ne; e++) {
                        ok[e] += ak[e];
                        ov[e] += av[e];
                    }
                }
            }
        }
    }
}

}  // namespace tuner::cpu
