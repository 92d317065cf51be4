// The model's and trainer's device helpers (device_ops.h): LoRA scale and dropout, sums of
// squares for gradient clipping, memory figures, and KV-cache decoding attention.
#include <cmath>
#include <vector>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/device_ops.h"

namespace tuner::cuda {

namespace {

// core/random.h's splitmix64, on the device (the dropout masks must be the CPU's bit for bit).
__device__ __forceinline__ uint64_t splitmix64_dev(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

__device__ __forceinline__ bool dropout_keep(uint64_t key, int64_t i, uint32_t threshold) {
    return uint32_t(splitmix64_dev(key + uint64_t(i)) >> 32) >= threshold;
}

__global__ void scale_kernel(float* x, int64_t n, float s) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        x[i] = __fmul_rn(x[i], s);
}

// out and x: float or __nv_bfloat16 each (the product in f32, rounded on store).
template <typename TOut, typename TIn>
__global__ void dropout_forward_kernel(TOut* out, const TIn* x, int64_t n, uint64_t key, uint32_t threshold,
                                       float keep_scale) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        store_f32(out + i, dropout_keep(key, i, threshold) ? __fmul_rn(load_f32(x + i), keep_scale) : 0.0f);
}

__global__ void dropout_backward_add_kernel(float* dx, const float* g, int64_t n, uint64_t key, uint32_t threshold,
                                            float keep_scale) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        dx[i] = __fadd_rn(dx[i], dropout_keep(key, i, threshold) ? __fmul_rn(g[i], keep_scale) : 0.0f);
}

constexpr int kSumBlocks = 256, kSumThreads = 256;

// partial[b] = sum of x[i]^2 over the elements block b visits (grid-stride), in double:
// per-thread double sums, then a fixed-order tree in shared memory.
__global__ void sum_squares_kernel(double* partial, const float* x, int64_t n) {
    __shared__ double s[kSumThreads];
    double acc = 0.0;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        acc += double(x[i]) * double(x[i]);
    s[threadIdx.x] = acc;
    __syncthreads();
    for (int w = kSumThreads / 2; w > 0; w >>= 1) {
        if (int(threadIdx.x) < w) s[threadIdx.x] += s[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
}

constexpr int kDecodeThreads = 128;  // 4 warps per (query, head)
constexpr int kDecodeKeys = 64;      // keys per chunk of scores in shared memory
constexpr int kDecodeMaxHD = 256;

// One block per (query i, head h). Pass over the keys in chunks of kDecodeKeys: each warp
// computes scores of its keys (lanes split the head dimension, warp_sum), then the block does
// an online softmax update of the output (threads own output dimensions).
__global__ void decode_attention_kernel(float* out, const float* q, const float* K, const float* V, int p0, int NH,
                                        int NKV, int HD) {
    __shared__ float qs[kDecodeMaxHD];
    __shared__ float scores[kDecodeKeys];
    __shared__ float stats[2];  // running max, running sum
    const int i = int(blockIdx.x) / NH, h = int(blockIdx.x) % NH, g = h / (NH / NKV);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const float scale = 1.0f / sqrtf(float(HD));
    const float* qi = q + (size_t(i) * NH + h) * HD;
    for (int e = threadIdx.x; e < HD; e += blockDim.x) qs[e] = qi[e];
    if (threadIdx.x == 0) stats[0] = -INFINITY, stats[1] = 0.0f;
    // Output dimensions owned by this thread (HD <= 2 * kDecodeThreads).
    float acc[kDecodeMaxHD / kDecodeThreads] = {0.0f, 0.0f};
    __syncthreads();
    const int S = p0 + i + 1;
    for (int j0 = 0; j0 < S; j0 += kDecodeKeys) {
        const int nk = min(kDecodeKeys, S - j0);
        for (int jj = warp; jj < nk; jj += nwarps) {
            const float* kj = K + (size_t(j0 + jj) * NKV + g) * HD;
            float d = 0.0f;
            for (int e = lane; e < HD; e += 32) d += qs[e] * kj[e];
            d = warp_sum(d);
            if (lane == 0) scores[jj] = d * scale;
        }
        __syncthreads();
        // Every thread computes the chunk max and the rescale factor itself (nk <= 64 values).
        float mx = stats[0];
        for (int jj = 0; jj < nk; jj++) mx = fmaxf(mx, scores[jj]);
        const float corr = expf(stats[0] - mx);  // exp(-inf) = 0 on the first chunk
        __syncthreads();                         // every thread has its max before scores change
        for (int jj = threadIdx.x; jj < nk; jj += blockDim.x) scores[jj] = expf(scores[jj] - mx);
        __syncthreads();
        float sum = stats[1] * corr;
        for (int jj = 0; jj < nk; jj++) sum += scores[jj];
        for (int k = 0; k < kDecodeMaxHD / kDecodeThreads; k++) {
            const int e = threadIdx.x + k * kDecodeThreads;
            if (e >= HD) break;
            float a = acc[k] * corr;
            for (int jj = 0; jj < nk; jj++) a += scores[jj] * V[(size_t(j0 + jj) * NKV + g) * HD + e];
            acc[k] = a;
        }
        __syncthreads();  // every thread has read stats and scores
        if (threadIdx.x == 0) stats[0] = mx, stats[1] = sum;
        __syncthreads();
    }
    const float inv = 1.0f / stats[1];
    float* o = out + (size_t(i) * NH + h) * HD;
    for (int k = 0; k < kDecodeMaxHD / kDecodeThreads; k++) {
        const int e = threadIdx.x + k * kDecodeThreads;
        if (e < HD) o[e] = acc[k] * inv;
    }
}

}  // namespace

void scale_inplace(float* x, int64_t n, float s) {
    if (n <= 0) return;
    launch(scale_kernel, grid_for(n, 256), 256, 0, context("scale_inplace").stream, x, n, s);
    CUDA_LAUNCH_CHECK("scale_kernel");
}

void lora_dropout_forward(ActOut out, ActIn x, int64_t n, uint64_t key, uint32_t threshold, float keep_scale) {
    if (n <= 0) return;
    const char* op = "lora_dropout_forward";
    cudaStream_t stream = context(op).stream;
    with_out(out, op, [&](auto* o) {
        with_in(x, op, [&](const auto* xp) {
            launch(dropout_forward_kernel<elem_t<decltype(o)>, elem_t<decltype(xp)>>, grid_for(n, 256), 256, 0, stream,
                   o, xp, n, key, threshold, keep_scale);
            CUDA_LAUNCH_CHECK("dropout_forward_kernel");
        });
    });
}

void lora_dropout_backward_add(float* dx, const float* g, int64_t n, uint64_t key, uint32_t threshold,
                               float keep_scale) {
    if (n <= 0) return;
    launch(dropout_backward_add_kernel, grid_for(n, 256), 256, 0, context("lora_dropout_backward_add").stream, dx, g,
           n, key, threshold, keep_scale);
    CUDA_LAUNCH_CHECK("dropout_backward_add_kernel");
}

double sum_squares(const std::vector<std::pair<const float*, int64_t>>& tensors) {
    if (tensors.empty()) return 0.0;
    // kSumBlocks slots per tensor. Allocated on the first call (before the first optimizer
    // step); later steps have as many tensors and reuse it.
    static DeviceArena partials;
    const size_t need = tensors.size() * kSumBlocks * sizeof(double);
    if (partials.capacity() < need) partials = DeviceArena("sum_squares partials", need);
    double* d_partial = static_cast<double*>(partials.base());
    std::vector<int> blocks(tensors.size(), 0);
    cudaStream_t stream = context("sum_squares").stream;
    for (size_t t = 0; t < tensors.size(); t++) {
        const int64_t n = tensors[t].second;
        if (n <= 0) continue;
        blocks[t] = int(std::min<int64_t>(kSumBlocks, (n + kSumThreads - 1) / kSumThreads));
        launch(sum_squares_kernel, unsigned(blocks[t]), kSumThreads, 0, stream, d_partial + t * kSumBlocks,
               tensors[t].first, n);
        CUDA_LAUNCH_CHECK("sum_squares_kernel");
    }
    std::vector<double> h(tensors.size() * kSumBlocks);
    copy_to_host(h.data(), d_partial, h.size() * sizeof(double));
    double s = 0.0;
    for (size_t t = 0; t < tensors.size(); t++)
        for (int b = 0; b < blocks[t]; b++) s += h[t * kSumBlocks + size_t(b)];
    return s;
}

void memory_info(size_t* free_bytes, size_t* total_bytes) {
    context("memory_info");
    size_t f = 0, t = 0;
    CUDA_CHECK(cudaMemGetInfo(&f, &t));
    if (free_bytes) *free_bytes = f;
    if (total_bytes) *total_bytes = t;
}

size_t cublaslt_workspace_bytes() { return context("cublaslt_workspace_bytes").lt_workspace_bytes; }

void decode_attention(float* out, const float* q, const float* K, const float* V, int n, int p0, int NH, int NKV,
                      int HD) {
    if (n <= 0) return;
    if (HD > kDecodeMaxHD) fail("[cuda] decode_attention: head_dim {} > {}", HD, kDecodeMaxHD);
    // One block per (query, head): grid n * NH, block index = query * NH + head.
    launch(decode_attention_kernel, unsigned(n * NH), kDecodeThreads, 0, context("decode_attention").stream, out, q, K,
           V, p0, NH, NKV, HD);
    CUDA_LAUNCH_CHECK("decode_attention_kernel");
}

}  // namespace tuner::cuda
