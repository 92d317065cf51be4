// RMSNorm (Llama): out = weight * (x / sqrt(mean(x^2) + eps)), computed in f32 like Hugging
// Face's LlamaRMSNorm (variance = x.pow(2).mean(-1) in f32, x * rsqrt(variance + eps), then the
// weight multiply).

#include <algorithm>
#include <cmath>

#include "backend/cpu/act_f32.h"
#include "backend/kernels.h"

namespace tuner::cpu {

// One row: yr = weight * (xr * r), r = 1 / sqrt(mean(xr^2) + eps) returned.
static inline float rmsnorm_row(float* yr, const float* xr, const float* weight, int64_t C, float eps) {
    // Sum of squares in f32; the simd reduction keeps 16 partial sums (closer to torch's tree
    // reduction than one serial sum).
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int64_t c = 0; c < C; c++) ss += xr[c] * xr[c];
    const float r = 1.0f / std::sqrt(ss / float(C) + eps);
#pragma omp simd
    for (int64_t c = 0; c < C; c++) yr[c] = weight[c] * (xr[c] * r);
    return r;
}

// x, out (N, C); weight (C); rstd (N) = 1 / sqrt(mean(x^2) + eps).
void rmsnorm_forward(ActOut out_act, float* rstd, const float* x, const float* weight, int64_t N, int64_t C,
                     float eps) {
    F32Out out_f32(out_act, N * C);
    float* out = out_f32.get();
#pragma omp parallel for schedule(static) if (N * C > 32768)
    for (int64_t n = 0; n < N; n++) rstd[n] = rmsnorm_row(out + n * C, x + n * C, weight, C, eps);
}

// x_sum = a + b, then rmsnorm(x_sum): row by row, so the sum is still in cache for the norm.
void add_rmsnorm_forward(float* x_sum, ActOut out_act, float* rstd, const float* a, const float* b,
                         const float* weight, int64_t N, int64_t C, float eps) {
    F32Out out_f32(out_act, N * C);
    float* out = out_f32.get();
#pragma omp parallel for schedule(static) if (N * C > 32768)
    for (int64_t n = 0; n < N; n++) {
        float* sr = x_sum + n * C;
        const float* ar = a + n * C;
        const float* br = b + n * C;
#pragma omp simd
        for (int64_t c = 0; c < C; c++) sr[c] = ar[c] + br[c];
        rstd[n] = rmsnorm_row(out + n * C, sr, weight, C, eps);
    }
}

// With x_hat = x * rstd and g = weight * dout:
//   dx = rstd * (g - x_hat * mean(g * x_hat))        (dx overwritten, or added to)
//   dweight += sum over rows of dout * x_hat         (skipped when dweight is null)
void rmsnorm_backward(float* dx, float* dweight, const float* dout, const float* x, const float* weight,
                      const float* rstd, int64_t N, int64_t C, bool accumulate_dx) {
#pragma omp parallel for schedule(static) if (N * C > 32768)
    for (int64_t n = 0; n < N; n++) {
        const float* xr = x + n * C;
        const float* dr = dout + n * C;
        const float r = rstd[n];
        float dot = 0.0f;  // sum of g * x_hat
#pragma omp simd reduction(+ : dot)
        for (int64_t c = 0; c < C; c++) dot += weight[c] * dr[c] * (xr[c] * r);
        const float m = dot / float(C);
        float* o = dx + n * C;
        if (accumulate_dx) {
#pragma omp simd
            for (int64_t c = 0; c < C; c++) {
                const float v = r * (weight[c] * dr[c] - (xr[c] * r) * m);
                o[c] += v;
            }
        } else {
#pragma omp simd
            for (int64_t c = 0; c < C; c++) o[c] = r * (weight[c] * dr[c] - (xr[c] * r) * m);
        }
    }
    if (!dweight) return;
    // Column sums: threads own column blocks and walk the rows, so there is no race and the sum
    // order does not depend on the thread count.
    constexpr int64_t kCols = 128;
    const int64_t nblocks = (C + kCols - 1) / kCols;
#pragma omp parallel for schedule(static) if (N * C > 32768)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        const int64_t c0 = blk * kCols, nc = std::min(kCols, C - c0);
        alignas(64) float acc[kCols] = {};
        for (int64_t n = 0; n < N; n++) {
            const float* xr = x + n * C + c0;
            const float* dr = dout + n * C + c0;
            const float r = rstd[n];
#pragma omp simd
            for (int64_t c = 0; c < nc; c++) acc[c] += dr[c] * (xr[c] * r);
        }
        for (int64_t c = 0; c < nc; c++) dweight[c0 + c] += acc[c];
    }
}

}  // namespace tuner::cpu
