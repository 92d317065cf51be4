// RoPE in the Hugging Face rotate-half layout: dimension i pairs with i + HD/2. x is (N, H, HD),
// rotated in place. One thread per (row, head, pair); the angle is float(pos) * inv_freq[i] in
// f32 as HF (and the CPU backend) computes it, then the accurate sincosf (no fast math), so the
// rotation matches the CPU's to a few ulp even at large positions. rope_forward also rotates bf16
// storage in place (kernels.h ActOut): each pair widened, rotated in f32, rounded on store.
#include "backend/cuda/cuda_common.h"
#include "backend/kernels.h"

namespace tuner::cuda {

namespace {

// sign = 1: forward rotation by +angle; sign = -1: its transpose (the backward).
template <typename E>
__global__ void rope_kernel(E* x, const int32_t* pos, const float* inv_freq, int64_t N, int H, int HD, float sign) {
    const int half = HD / 2;
    const int64_t total = N * H * half;
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += int64_t(gridDim.x) * blockDim.x) {
        const int i = int(idx % half);
        const int64_t nh = idx / half;  // n * H + h
        const int64_t n = nh / H;
        const float angle = float(pos[n]) * inv_freq[i];
        float s, c;
        sincosf(angle, &s, &c);
        s *= sign;
        E* a = x + nh * HD;
        const float x1 = load_f32(a + i), x2 = load_f32(a + i + half);
        store_f32(a + i, x1 * c - x2 * s);
        store_f32(a + i + half, x2 * c + x1 * s);
    }
}

void rope_launch(const char* op, ActOut x, const int32_t* pos, const float* inv_freq, int64_t N, int H, int HD,
                 float sign) {
    const int64_t total = N * H * (HD / 2);
    if (total <= 0) return;
    cudaStream_t stream = context(op).stream;
    with_out(x, op, [&](auto* xp) {
        launch(rope_kernel<elem_t<decltype(xp)>>, grid_for(total, 256), 256, 0, stream, xp, pos, inv_freq, N, H, HD,
               sign);
        CUDA_LAUNCH_CHECK("rope_kernel");
    });
}

}  // namespace

// x (N, H, HD) in place: x[i]' = x[i] cos - x[i+HD/2] sin, x[i+HD/2]' = x[i+HD/2] cos + x[i] sin.
void rope_forward(ActOut x, const int32_t* pos, const float* inv_freq, int64_t N, int H, int HD) {
    rope_launch("rope_forward", x, pos, inv_freq, N, H, HD, 1.0f);
}

// dx (N, H, HD) in place: the rotation is orthogonal, so its transpose is the rotation by -angle.
void rope_backward(float* dx, const int32_t* pos, const float* inv_freq, int64_t N, int H, int HD) {
    rope_launch("rope_backward", dx, pos, inv_freq, N, H, HD, -1.0f);
}

}  // namespace tuner::cuda
