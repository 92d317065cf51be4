// RMSNorm (Llama): out = weight * (x / sqrt(mean(x^2) + eps)), f32 throughout like Hugging
// Face's LlamaRMSNorm. x, out (N, C); weight (C); rstd (N). out may be bf16 storage (kernels.h
// ActOut): the same f32 value, rounded to nearest even on store.
//
// Forward and the dx part of the backward: one block of 256 threads per row (C is 576..8192
// for the models we train: a warp per row would leave most of the GPU idle at small N and
// take 256 iterations per lane at C = 8192); f32 partial sums per thread, then a warp-shuffle
// tree. dweight (column sums over rows): blocks own 32 columns and their 16 warps split the
// rows, then add their partial sums in a fixed order: deterministic, no atomics.
#include "backend/cuda/cuda_common.h"
#include "backend/kernels.h"

namespace tuner::cuda {

namespace {

constexpr int kRowThreads = 256;
constexpr int kColWarps = 16;

// With b (the fused residual add): x = a + b is written first, each thread writing the elements
// it then reads back (the same c loop), so no barrier is needed and x may alias a.
template <typename TOut>
__global__ void rmsnorm_forward_kernel(TOut* out, float* rstd, float* x_sum, const float* x, const float* b,
                                       const float* weight, int64_t N, int64_t C, float eps) {
    __shared__ float shared[32];
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        const float* xr = x + n * C;
        if (b) {
            float* sr = x_sum + n * C;
            const float* br = b + n * C;
            for (int64_t c = threadIdx.x; c < C; c += blockDim.x) sr[c] = __fadd_rn(xr[c], br[c]);
            xr = sr;
        }
        float ss = 0.0f;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += xr[c] * xr[c];
        ss = block_sum(ss, shared);
        const float r = 1.0f / sqrtf(ss / float(C) + eps);
        if (threadIdx.x == 0) rstd[n] = r;
        TOut* yr = out + n * C;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) store_f32(yr + c, weight[c] * (xr[c] * r));
    }
}

// With x_hat = x * rstd and g = weight * dout: dx = rstd * (g - x_hat * mean(g * x_hat)).
__global__ void rmsnorm_backward_dx_kernel(float* dx, const float* dout, const float* x, const float* weight,
                                           const float* rstd, int64_t N, int64_t C, bool accumulate) {
    __shared__ float shared[32];
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        const float* xr = x + n * C;
        const float* dr = dout + n * C;
        const float r = rstd[n];
        float dot = 0.0f;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dot += weight[c] * dr[c] * (xr[c] * r);
        const float m = block_sum(dot, shared) / float(C);
        float* o = dx + n * C;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            const float v = r * (weight[c] * dr[c] - (xr[c] * r) * m);
            o[c] = accumulate ? __fadd_rn(o[c], v) : v;
        }
    }
}

// dweight (C) += sum over rows of dout * x * rstd. Block: 32 columns (lanes) x kColWarps warps
// (rows warp, warp + kColWarps, ...).
__global__ void rmsnorm_backward_dweight_kernel(float* dweight, const float* dout, const float* x, const float* rstd,
                                                int64_t N, int64_t C) {
    __shared__ float partial[kColWarps][33];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t c = int64_t(blockIdx.x) * 32 + lane;
    float acc = 0.0f;
    if (c < C)
        for (int64_t n = warp; n < N; n += kColWarps) acc += dout[n * C + c] * (x[n * C + c] * rstd[n]);
    partial[warp][lane] = acc;
    __syncthreads();
    if (warp == 0 && c < C) {
        float s = 0.0f;
        for (int w = 0; w < kColWarps; w++) s += partial[w][lane];
        dweight[c] += s;
    }
}

unsigned row_blocks(int64_t N) { return unsigned(N < 65535 ? N : 65535); }

}  // namespace

// x, out (N, C); weight (C); rstd (N) = 1 / sqrt(mean(x^2) + eps).
void rmsnorm_forward(ActOut out, float* rstd, const float* x, const float* weight, int64_t N, int64_t C, float eps) {
    if (N <= 0 || C <= 0) return;
    cudaStream_t stream = context("rmsnorm_forward").stream;
    with_out(out, "rmsnorm_forward", [&](auto* o) {
        launch(rmsnorm_forward_kernel<elem_t<decltype(o)>>, row_blocks(N), kRowThreads, 0, stream, o, rstd,
               static_cast<float*>(nullptr), x, static_cast<const float*>(nullptr), weight, N, C, eps);
        CUDA_LAUNCH_CHECK("rmsnorm_forward_kernel");
    });
}

// x_sum = a + b, then the norm of x_sum (x_sum may alias a).
void add_rmsnorm_forward(float* x_sum, ActOut out, float* rstd, const float* a, const float* b, const float* weight,
                         int64_t N, int64_t C, float eps) {
    if (N <= 0 || C <= 0) return;
    cudaStream_t stream = context("add_rmsnorm_forward").stream;
    with_out(out, "add_rmsnorm_forward", [&](auto* o) {
        launch(rmsnorm_forward_kernel<elem_t<decltype(o)>>, row_blocks(N), kRowThreads, 0, stream, o, rstd, x_sum, a,
               b, weight, N, C, eps);
        CUDA_LAUNCH_CHECK("rmsnorm_forward_kernel");
    });
}

// dx (N, C) overwritten or added to; dweight (C) += (skipped when null, a frozen norm).
void rmsnorm_backward(float* dx, float* dweight, const float* dout, const float* x, const float* weight,
                      const float* rstd, int64_t N, int64_t C, bool accumulate_dx) {
    if (N <= 0 || C <= 0) return;
    cudaStream_t stream = context("rmsnorm_backward").stream;
    launch(rmsnorm_backward_dx_kernel, row_blocks(N), kRowThreads, 0, stream, dx, dout, x, weight, rstd, N, C,
           accumulate_dx);
    CUDA_LAUNCH_CHECK("rmsnorm_backward_dx_kernel");
    if (!dweight) return;
    const unsigned col_blocks = unsigned((C + 31) / 32);
    launch(rmsnorm_backward_dweight_kernel, col_blocks, 32 * kColWarps, 0, stream, dweight, dout, x, rstd, N, C);
    CUDA_LAUNCH_CHECK("rmsnorm_backward_dweight_kernel");
}

}  // namespace tuner::cuda
