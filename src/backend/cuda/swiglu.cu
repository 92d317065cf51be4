// SwiGLU: h = silu(gate) * up, silu(g) = g * sigmoid(g); gate, up, h are (N, F) flattened to n.
// Elementwise, memory-bound. expf is the accurate one (no --use_fast_math), so the result is
// within a few ulp of the CPU backend's vectorised exp.
#include "backend/cuda/cuda_common.h"
#include "backend/kernels.h"

namespace tuner::cuda {

namespace {

__device__ __forceinline__ float sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

__global__ void swiglu_forward_kernel(float* h, const float* gate, const float* up, int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const float g = gate[i];
        h[i] = g * sigmoid(g) * up[i];
    }
}

// With s = sigmoid(g): d silu/dg = s * (1 + g * (1 - s)).
//   dgate = dh * up * s * (1 + g (1 - s)),  dup = dh * g * s      (both overwritten)
__global__ void swiglu_backward_kernel(float* dgate, float* dup, const float* dh, const float* gate, const float* up,
                                       int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const float g = gate[i], u = up[i], d = dh[i];
        const float s = sigmoid(g);
        dgate[i] = d * u * (s * (1.0f + g * (1.0f - s)));
        dup[i] = d * (g * s);
    }
}

}  // namespace

void swiglu_forward(float* h, const float* gate, const float* up, int64_t n) {
    if (n <= 0) return;
    launch(swiglu_forward_kernel, grid_for(n, 256), 256, 0, context("swiglu_forward").stream, h, gate, up, n);
    CUDA_LAUNCH_CHECK("swiglu_forward_kernel");
}

void swiglu_backward(float* dgate, float* dup, const float* dh, const float* gate, const float* up, int64_t n) {
    if (n <= 0) return;
    cudaStream_t stream = context("swiglu_backward").stream;
    launch(swiglu_backward_kernel, grid_for(n, 256), 256, 0, stream, dgate, dup, dh, gate, up, n);
    CUDA_LAUNCH_CHECK("swiglu_backward_kernel");
}

}  // namespace tuner::cuda
