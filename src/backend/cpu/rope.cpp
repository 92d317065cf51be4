// RoPE in the Hugging Face rotate-half layout: dimension i pairs with i + HD/2.

#include <cmath>

#include "backend/cpu/act_f32.h"
#include "backend/kernels.h"
#include "core/scratch.h"

namespace tuner::cpu {

namespace {

// Rotates every head of every row by +angle (sign = 1) or -angle (sign = -1, the transpose,
// which is the backward). cos/sin are computed once per (row, pair) and reused by the H heads;
// the angle is float(pos) * inv_freq in f32, as HF computes it, then cosf/sinf.
void rope_rotate(float* x, const int32_t* pos, const float* inv_freq, int64_t N, int H, int HD, float sign) {
    const int half = HD / 2;
#pragma omp parallel for schedule(static) if (N * H * HD > 32768)
    for (int64_t n = 0; n < N; n++) {
        float* cs = scratch_f32(ScratchSlot::kMisc, size_t(2 * half));  // [cos | sin]
        float* sn = cs + half;
        const float p = float(pos[n]);
        for (int i = 0; i < half; i++) {
            const float angle = p * inv_freq[i];
            cs[i] = std::cos(angle);
            sn[i] = sign * std::sin(angle);
        }
        for (int h = 0; h < H; h++) {
            float* a = x + (n * H + h) * HD;
            float* b = a + half;
#pragma omp simd
            for (int i = 0; i < half; i++) {
                const float x1 = a[i], x2 = b[i];
                a[i] = x1 * cs[i] - x2 * sn[i];
                b[i] = x2 * cs[i] + x1 * sn[i];
            }
        }
    }
}

}  // namespace

// x (N, H, HD) in place: x[i]' = x[i] cos - x[i+HD/2] sin, x[i+HD/2]' = x[i+HD/2] cos + x[i] sin.
void rope_forward(ActOut x, const int32_t* pos, const float* inv_freq, int64_t N, int H, int HD) {
    F32Out x_f32(x, N * H * HD, /*read_old=*/true);
    rope_rotate(x_f32.get(), pos, inv_freq, N, H, HD, 1.0f);
}

// dx (N, H, HD) in place: the rotation is orthogonal, so its transpose is the rotation by -angle.
void rope_backward(float* dx, const int32_t* pos, const float* inv_freq, int64_t N, int H, int HD) {
    rope_rotate(dx, pos, inv_freq, N, H, HD, -1.0f);
}

}  // namespace tuner::cpu
