// SwiGLU: h = silu(gate) * up, silu(g) = g * sigmoid(g); gate, up, h are (N, F) flattened to n.
// Elementwise, memory-bound. expf is the accurate one (no --use_fast_math), so the result is
// within a few ulp of the CPU backend's vectorised exp. gate, up and h may each be bf16 storage
// (kernels.h ActIn / ActOut): widened on load, f32 math, h rounded on store; the gradients are f32.
#include "backend/cuda/cuda_common.h"
#include "backend/kernels.h"

namespace tuner::cuda {

namespace {

__device__ __forceinline__ float sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

template <typename TH, typename TG, typename TU>
__global__ void swiglu_forward_kernel(TH* h, const TG* gate, const TU* up, int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const float g = load_f32(gate + i);
        store_f32(h + i, g * sigmoid(g) * load_f32(up + i));
    }
}

// With s = sigmoid(g): d silu/dg = s * (1 + g * (1 - s)).
//   dgate = dh * up * s * (1 + g (1 - s)),  dup = dh * g * s      (both overwritten)
template <typename TG, typename TU>
__global__ void swiglu_backward_kernel(float* dgate, float* dup, const float* dh, const TG* gate, const TU* up,
                                       int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const float g = load_f32(gate + i), u = load_f32(up + i), d = dh[i];
        const float s = sigmoid(g);
        dgate[i] = d * u * (s * (1.0f + g * (1.0f - s)));
        dup[i] = d * (g * s);
    }
}

}  // namespace

void swiglu_forward(ActOut h, ActIn gate, ActIn up, int64_t n) {
    if (n <= 0) return;
    const char* op = "swiglu_forward";
    cudaStream_t stream = context(op).stream;
    with_out(h, op, [&](auto* hp) {
        with_in(gate, op, [&](const auto* gp) {
            with_in(up, op, [&](const auto* up_) {
                launch(swiglu_forward_kernel<elem_t<decltype(hp)>, elem_t<decltype(gp)>, elem_t<decltype(up_)>>,
                       grid_for(n, 256), 256, 0, stream, hp, gp, up_, n);
                CUDA_LAUNCH_CHECK("swiglu_forward_kernel");
            });
        });
    });
}

void swiglu_backward(float* dgate, float* dup, const float* dh, ActIn gate, ActIn up, int64_t n) {
    if (n <= 0) return;
    const char* op = "swiglu_backward";
    cudaStream_t stream = context(op).stream;
    with_in(gate, op, [&](const auto* gp) {
        with_in(up, op, [&](const auto* up_) {
            launch(swiglu_backward_kernel<elem_t<decltype(gp)>, elem_t<decltype(up_)>>, grid_for(n, 256), 256, 0,
                   stream, dgate, dup, dh, gp, up_, n);
            CUDA_LAUNCH_CHECK("swiglu_backward_kernel");
        });
    });
}

}  // namespace tuner::cuda
