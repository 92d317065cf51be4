// lm_head + cross-entropy, fused: the (N, V) logits are never stored whole.
//
// x (N, C) final hidden states, head (V, C), targets (N) with -100 = ignored.
//   loss_n = logsumexp(logits_n) - logits_n[target_n],  logits_n = head @ x_n
//   dlogits_n = grad_scale * (softmax(logits_n) - onehot(target_n))
//   dx_n = dlogits_n @ head        dhead += sum_n dlogits_n^T x_n
//
// The work goes through chunks of R non-ignored rows. A chunk keeps its full (R, V) logits in
// scratch: the softmax needs the row's log-sum-exp before any gradient can be formed, and
// keeping the row (instead of a second GEMM pass over the vocabulary) costs memory but no
// recomputation. R is chosen so the tile stays near 32 MiB (R = 160 for V = 49152). Chunks run
// one after another and every GEMM uses all threads, so dhead (+=) has a single writer.
// Measured for N=512, C=576, V=49152 on 2 Zen threads (R=160): logits GEMM ~75 ms (380
// GFLOP/s), softmax 8 ms, dx and dhead GEMMs ~65 ms each (~450 GFLOP/s, via the sgemm path in
// matmul.cpp); 200 ms in all for 87 GFLOP, i.e. ~435 GFLOP/s. Smaller chunks cost speed (R=64:
// 275 ms), larger ones memory (R=256: 205 ms for 48 MiB).
//
// Ignored rows are gathered out before the GEMMs: they cost nothing, get loss 0, dx 0 and
// lse 0 (their log-sum-exp is not computed).

#include <algorithm>
#include <cmath>
#include <limits>

#include "backend/cpu/gemm.h"
#include "backend/cpu/simd.h"
#include "backend/kernels.h"
#include "core/error.h"
#include "core/scratch.h"

namespace tuner::cpu {

namespace {

using namespace simd;

constexpr int32_t kIgnore = -100;
constexpr int64_t kLogitBudget = int64_t(8) << 20;  // floats in one chunk's logits (32 MiB)

// logits (nr, V) = xs (nr, C) @ head^T, converting a low-precision head tile by tile.
void chunk_logits(float* logits, const float* xs, int64_t nr, const WeightView& head) {
    const int64_t V = head.rows, C = head.cols;
    if (head.dtype == DType::F32) {
        sgemm(false, true, nr, V, C, xs, C, static_cast<const float*>(head.data), C, logits, V, false);
        return;
    }
    const int64_t tile_rows = std::min(weight_tile_rows(C), V);
    float* tile = scratch_f32(ScratchSlot::kWeightTile, size_t(tile_rows * C));
    for (int64_t v0 = 0; v0 < V; v0 += tile_rows) {
        const int64_t rows = std::min(tile_rows, V - v0);
        weight_rows_to_f32(tile, head, v0, rows);
        sgemm(false, true, nr, rows, C, xs, C, tile, C, logits + v0, V, false);
    }
}

// dxs (nr, C) = dlogits (nr, V) @ head.
void chunk_dx(float* dxs, const float* dlogits, int64_t nr, const WeightView& head) {
    const int64_t V = head.rows, C = head.cols;
    if (head.dtype == DType::F32) {
        sgemm(false, false, nr, C, V, dlogits, V, static_cast<const float*>(head.data), C, dxs, C, false);
        return;
    }
    const int64_t tile_rows = std::min(weight_tile_rows(C), V);
    float* tile = scratch_f32(ScratchSlot::kWeightTile, size_t(tile_rows * C));
    for (int64_t v0 = 0; v0 < V; v0 += tile_rows) {
        const int64_t rows = std::min(tile_rows, V - v0);
        weight_rows_to_f32(tile, head, v0, rows);
        sgemm(false, false, nr, C, rows, dlogits + v0, V, tile, C, dxs, C, v0 > 0);
    }
}

// Row max, then p = exp(logit - max) in place; returns the sum of p (the row's log-sum-exp is
// max + log(sum)).
struct RowStats {
    float max, sum;
};
RowStats softmax_row(float* row, int64_t V) {
    Vec vmax = set1(-std::numeric_limits<float>::infinity());
    for (int64_t j = 0; j < V; j += W) {
        const Mask m = mask_first(int(std::min<int64_t>(W, V - j)));
        vmax = max(vmax, select(m, load(row + j, m), vmax));
    }
    const float mx = reduce_max(vmax);
    Vec vsum = zero();
    const Vec vm = set1(mx);
    for (int64_t j = 0; j < V; j += W) {
        const Mask m = mask_first(int(std::min<int64_t>(W, V - j)));
        const Vec p = select(m, exp(sub(load(row + j, m), vm)), zero());
        store(row + j, p, m);
        vsum = add(vsum, p);
    }
    return {mx, reduce_add(vsum)};
}

}  // namespace

int64_t lm_head_cross_entropy(float* losses, float* lse, float* dx, float* dhead, const float* x,
                              const WeightView& head, const int32_t* targets, int64_t N, float grad_scale) {
    const int64_t V = head.rows, C = head.cols;
    TUNER_ASSERT_MSG(!dhead || head.dtype == DType::F32, "a trained lm_head must be F32");
    TUNER_ASSERT_MSG(!dhead || dx, "dhead needs dx (both null for evaluation)");
    const bool grads = dx != nullptr;

    // Active (non-ignored) rows; ignored rows are finished here.
    int64_t count = 0;
    for (int64_t n = 0; n < N; n++) {
        if (targets[n] == kIgnore) {
            losses[n] = 0.0f;
            if (lse) lse[n] = 0.0f;
            if (dx) std::fill(dx + n * C, dx + (n + 1) * C, 0.0f);
        } else {
            TUNER_ASSERT_MSG(targets[n] >= 0 && targets[n] < V, "target id outside the vocabulary");
            count++;
        }
    }
    if (count == 0) return 0;

    const int64_t R = std::min(count, std::max<int64_t>(16, kLogitBudget / V / 16 * 16));
    float* logits = scratch_f32(ScratchSlot::kLogits, size_t(R * V));
    float* xs = scratch_f32(ScratchSlot::kMisc, size_t(2 * R * C));  // [xs | dxs]: gathered rows
    float* dxs = xs + R * C;
    int64_t* rows = reinterpret_cast<int64_t*>(scratch_f32(ScratchSlot::kAttention, size_t(2 * R)));

    int64_t next = 0;  // scan position in [0, N)
    while (next < N) {
        // Gather the next R active rows.
        int64_t nr = 0;
        for (; next < N && nr < R; next++)
            if (targets[next] != kIgnore) rows[nr++] = next;
        if (nr == 0) break;
#pragma omp parallel for schedule(static) if (nr * C > 65536)
        for (int64_t r = 0; r < nr; r++) std::copy(x + rows[r] * C, x + (rows[r] + 1) * C, xs + r * C);

        chunk_logits(logits, xs, nr, head);

        // Per row: loss and lse, and in training dlogits = grad_scale * (softmax - onehot) in
        // place of the logits (the row is still in L2 from the softmax pass).
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < nr; r++) {
            float* row = logits + r * V;
            const int64_t n = rows[r];
            const int32_t t = targets[n];
            const float target_logit = row[t];
            const RowStats st = softmax_row(row, V);  // row now holds exp(logit - max)
            const float row_lse = st.max + std::log(st.sum);
            losses[n] = row_lse - target_logit;
            if (lse) lse[n] = row_lse;
            if (!grads) continue;
            const Vec f = set1(grad_scale / st.sum);
            for (int64_t j = 0; j < V; j += W) {
                const Mask m = mask_first(int(std::min<int64_t>(W, V - j)));
                store(row + j, mul(load(row + j, m), f), m);
            }
            row[t] -= grad_scale;
        }
        if (grads) {
            chunk_dx(dxs, logits, nr, head);
#pragma omp parallel for schedule(static) if (nr * C > 65536)
            for (int64_t r = 0; r < nr; r++) std::copy(dxs + r * C, dxs + (r + 1) * C, dx + rows[r] * C);
            if (dhead) sgemm(true, false, V, C, nr, logits, V, xs, C, dhead, C, /*accumulate=*/true);
        }
    }
    return count;
}

}  // namespace tuner::cpu
