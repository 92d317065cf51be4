// Kernel lab: the softmax / loss / gradient part of the fused lm_head + cross-entropy, llm.c
// dev/cuda style.  make cross_entropy && ./cross_entropy [version]     (version 0 = all)
//
// logits (R, V) f32 for one chunk of rows (the GEMM before it is cuBLASLt), targets (R):
//   loss_r = logsumexp(logits_r) - logits_r[target_r]
//   dlogits_r = grad_scale * (softmax(logits_r) - onehot(target_r))   written over the logits
// Memory-bound: the figure of merit is GB/s against the minimum traffic (read V, write V).
//
// version 1: the kernel in src/backend/cuda/cross_entropy.cu: one 1024-thread block per row,
//            three passes over the row (max, sum of exp, gradient): 3 reads + 1 write.
// version 2: online softmax (Milakov & Gimelshein 2018): each thread keeps a running (max, sum)
//            over its elements, the block merges the pairs; then the gradient pass: 2 reads +
//            1 write, with float4 loads.
#include <cfloat>

#include "common.h"

constexpr int R = 256, V = 128256;  // one chunk at Llama 3's vocabulary
constexpr float kGradScale = 1.0f / 4096;

// ---- CPU reference --------------------------------------------------------------------------------
void cross_entropy_cpu(std::vector<float>& losses, std::vector<float>& dlogits, const std::vector<float>& logits,
                       const std::vector<int>& targets) {
    for (int r = 0; r < R; r++) {
        const float* row = &logits[size_t(r) * V];
        double mx = -1e300, sum = 0;
        for (int j = 0; j < V; j++) mx = std::fmax(mx, row[j]);
        for (int j = 0; j < V; j++) sum += std::exp(row[j] - mx);
        losses[size_t(r)] = float(mx + std::log(sum) - row[targets[size_t(r)]]);
        for (int j = 0; j < V; j++)
            dlogits[size_t(r) * V + j] = float(kGradScale * (std::exp(row[j] - mx) / sum - (j == targets[size_t(r)])));
    }
}

__device__ float block_reduce_sum(float v, float* sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    return warp_sum(lane < int(blockDim.x >> 5) ? sh[lane] : 0.0f);
}
__device__ float block_reduce_max(float v, float* sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    return warp_max(lane < int(blockDim.x >> 5) ? sh[lane] : -FLT_MAX);
}

// ---- version 1: three passes ------------------------------------------------------------------------
__global__ void cross_entropy_kernel1(float* logits, float* losses, const int* targets) {
    __shared__ float sh[32];
    float* row = logits + size_t(blockIdx.x) * V;
    const int t = targets[blockIdx.x];
    const float target_logit = row[t];
    float mx = -FLT_MAX;
    for (int j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, row[j]);
    mx = block_reduce_max(mx, sh);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) sum += expf(row[j] - mx);
    sum = block_reduce_sum(sum, sh);
    if (threadIdx.x == 0) losses[blockIdx.x] = mx + logf(sum) - target_logit;
    const float f = kGradScale / sum;
    for (int j = threadIdx.x; j < V; j += blockDim.x) row[j] = expf(row[j] - mx) * f - (j == t ? kGradScale : 0.0f);
}

void cross_entropy1(float* logits, float* losses, const int* targets) {
    cross_entropy_kernel1<<<R, 1024>>>(logits, losses, targets);
}

// ---- version 2: online (max, sum), then one gradient pass, float4 ------------------------------------
__global__ void cross_entropy_kernel2(float* logits, float* losses, const int* targets) {
    __shared__ float sh_m[32], sh_s[32];
    float* row = logits + size_t(blockIdx.x) * V;
    const int t = targets[blockIdx.x];
    const float target_logit = row[t];
    const float4* row4 = reinterpret_cast<const float4*>(row);  // V % 4 == 0 and rows 16-byte aligned
    float m = -FLT_MAX, s = 0.0f;
    for (int j = threadIdx.x; j < V / 4; j += blockDim.x) {
        const float4 x = row4[j];
        const float mx = fmaxf(fmaxf(x.x, x.y), fmaxf(x.z, x.w));
        if (mx > m) s *= expf(m - mx), m = mx;
        s += expf(x.x - m) + expf(x.y - m) + expf(x.z - m) + expf(x.w - m);
    }
    // Merge (m, s) pairs: warp shuffles, then across warps.
    for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        const float mn = fmaxf(m, m2);
        s = s * expf(m - mn) + s2 * expf(m2 - mn);
        m = mn;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (lane == 0) sh_m[warp] = m, sh_s[warp] = s;
    __syncthreads();
    m = lane < nw ? sh_m[lane] : -FLT_MAX;
    s = lane < nw ? sh_s[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        const float mn = fmaxf(m, m2);
        s = s * expf(m - mn) + s2 * expf(m2 - mn);
        m = mn;
    }
    if (threadIdx.x == 0) losses[blockIdx.x] = m + logf(s) - target_logit;
    const float f = kGradScale / s;
    float4* out4 = reinterpret_cast<float4*>(row);
    for (int j = threadIdx.x; j < V / 4; j += blockDim.x) {
        float4 x = out4[j];
        x.x = expf(x.x - m) * f, x.y = expf(x.y - m) * f, x.z = expf(x.z - m) * f, x.w = expf(x.w - m) * f;
        if (t / 4 == j) (&x.x)[t % 4] -= kGradScale;
        out4[j] = x;
    }
}

void cross_entropy2(float* logits, float* losses, const int* targets) {
    cross_entropy_kernel2<<<R, 1024>>>(logits, losses, targets);
}

// ---- driver -----------------------------------------------------------------------------------------
int main(int argc, char** argv) {
    static_assert(V % 4 == 0, "version 2 reads float4");
    const int version = argc > 1 ? std::atoi(argv[1]) : 0;
    const auto logits = random_floats(size_t(R) * V, 1, 8.0f);
    std::vector<int> targets(R);
    for (int r = 0; r < R; r++) targets[size_t(r)] = int((size_t(r) * 7919) % V);
    std::vector<float> losses(R), dlogits(size_t(R) * V);
    cross_entropy_cpu(losses, dlogits, logits, targets);

    float* d_logits;
    cudaCheck(cudaMalloc(&d_logits, logits.size() * 4));
    float* d_losses;
    cudaCheck(cudaMalloc(&d_losses, size_t(R) * 4));
    int* d_targets = to_device(targets);

    using Fn = void (*)(float*, float*, const int*);
    const Fn versions[] = {cross_entropy1, cross_entropy2};
    for (int ver = 1; ver <= 2; ver++) {
        if (version && version != ver) continue;
        std::printf("version %d\n", ver);
        cudaCheck(cudaMemcpy(d_logits, logits.data(), logits.size() * 4, cudaMemcpyHostToDevice));
        versions[ver - 1](d_logits, d_losses, d_targets);
        cudaCheck(cudaDeviceSynchronize());
        validate_result(d_losses, losses, "losses", 1e-5f);
        validate_result(d_logits, dlogits, "dlogits", 1e-5f);
        // The kernel overwrites its input: time it on a fresh copy each run would add the copy;
        // running it on its own output (gradients) is the same work on other numbers.
        const float ms = benchmark_kernel(20, versions[ver - 1], d_logits, d_losses, d_targets);
        std::printf("  %.3f ms, %.1f GB/s (read + write of the logits)\n", ms,
                    2.0 * R * double(V) * 4 / (ms * 1e-3) * 1e-9);
    }
    return 0;
}
