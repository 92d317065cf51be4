// Elementwise adds (residual connections) and the bf16 rounding of a gradient: memory-bound
// grid-stride loops, one element per thread per iteration. n floats each.
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/weights.h"
#include "backend/kernels.h"

namespace tuner::cuda {

namespace {

// out may alias a or b: each element is read before it is written by the same thread.
__global__ void add_kernel(float* out, const float* a, const float* b, int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        out[i] = a[i] + b[i];
}

void add_launch(const char* op, float* out, const float* a, const float* b, int64_t n) {
    if (n <= 0) return;
    launch(add_kernel, grid_for(n, 256), 256, 0, context(op).stream, out, a, b, n);
    CUDA_LAUNCH_CHECK("add_kernel");
}

}  // namespace

// out = a + b (out may alias a).
void add_forward(float* out, const float* a, const float* b, int64_t n) { add_launch("add_forward", out, a, b, n); }

// a += b.
void add_inplace(float* a, const float* b, int64_t n) { add_launch("add_inplace", a, a, b, n); }

// out = bf16(x): weights.h's converter (round to nearest even, as core/dtype.h).
void to_bf16(uint16_t* out, const float* x, int64_t n) {
    if (n <= 0) return;
    f32_to_bf16(reinterpret_cast<__nv_bfloat16*>(out), x, n, context("to_bf16").stream);
}

}  // namespace tuner::cuda
