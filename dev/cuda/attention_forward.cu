// Kernel lab: causal attention forward with GQA and packed segments (f32), llm.c dev/cuda style.
//   make attention_forward && ./attention_forward [version]     (version 0 = all)
//
// q, out (B, T, NH, HD); k, v (B, T, NKV, HD); lse (B, NH, T). Query t sees keys
// [seg_start[b*T+t], t]; scale 1/sqrt(HD). The CPU reference is a plain double-precision loop.
//
// version 1: one thread per (b, t, h) query, one pass over its keys with an online softmax
//            (running max / sum), K and V read straight from global memory. The baseline.
// version 2: the kernel in src/backend/cuda/attention.cu: 4 warps x 16 query rows per block, a
//            32-key tile of K and V in shared memory per step (lane j owns key j), warp-shuffle
//            row max / sum, output accumulators in registers.
// version 3: bf16 tensor cores (WMMA m16n16k16, f32 accumulation): the kernel in
//            src/backend/cuda/attention_tc.cuh, included as is (what cuda::attention_forward runs
//            with BF16 compute). 64-query blocks of 4 warps, 64-key tiles staged as bf16, S and P V
//            on tensor cores through per-warp f32 tiles in shared memory, online softmax in f32.
//            Validated with bf16 tolerances (1e-2 of max |out|, 5e-3 of max |lse|).
// version 4: FlashAttention-2 style on mma.sync.m16n8k16 (src/backend/cuda/attention_mma.cuh, the
//            kernel of cuda::attention_mma_forward, included as is): 128-query blocks of 4 warps x
//            32 rows, 64-key tiles; P goes from the S accumulators into A-operand registers of P V
//            (no shared-memory round trip), operands by ldmatrix, K / V tiles double-buffered.
//            Here with f32 q, k, v (rounded to bf16 while staged: synchronous loads).
// version 5: version 4 with bf16 q, k, v (copies made once, outside the timing): K / V arrive by
//            cp.async while the previous tile computes. What training with bf16 activations runs.
// Next: wgmma + TMA (FlashAttention-3). Other shapes: make attention_forward NVCC_FLAGS="-O3
// -std=c++17 -arch=sm_90 -DLAB_T=2048 -DLAB_NH=32 -DLAB_NKV=8 -DLAB_HD=128" (gpu-check's shape;
// with -DLAB_B=1).
#include <cfloat>

#include "common.h"

#ifndef LAB_B
#define LAB_B 2
#endif
#ifndef LAB_T
#define LAB_T 1024
#endif
#ifndef LAB_NH
#define LAB_NH 16
#endif
#ifndef LAB_NKV
#define LAB_NKV 4
#endif
#ifndef LAB_HD
#define LAB_HD 64
#endif
constexpr int B = LAB_B, T = LAB_T, NH = LAB_NH, NKV = LAB_NKV, HD = LAB_HD;

// ---- CPU reference -----------------------------------------------------------------------------
void attention_forward_cpu(std::vector<float>& out, std::vector<float>& lse, const std::vector<float>& q,
                           const std::vector<float>& k, const std::vector<float>& v, const std::vector<int>& seg) {
    const int G = NH / NKV;
    const double scale = 1.0 / std::sqrt(double(HD));
    std::vector<double> s(T), acc(HD);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const float* qr = &q[((size_t(b) * T + t) * NH + h) * HD];
                const int lo = seg[size_t(b) * T + t];
                double mx = -1e300;
                for (int j = lo; j <= t; j++) {
                    const float* kr = &k[((size_t(b) * T + j) * NKV + h / G) * HD];
                    double d = 0;
                    for (int i = 0; i < HD; i++) d += double(qr[i]) * kr[i];
                    s[j] = d * scale;
                    mx = std::fmax(mx, s[j]);
                }
                double sum = 0;
                std::fill(acc.begin(), acc.end(), 0.0);
                for (int j = lo; j <= t; j++) {
                    const double p = std::exp(s[j] - mx);
                    sum += p;
                    const float* vr = &v[((size_t(b) * T + j) * NKV + h / G) * HD];
                    for (int i = 0; i < HD; i++) acc[i] += p * vr[i];
                }
                float* o = &out[((size_t(b) * T + t) * NH + h) * HD];
                for (int i = 0; i < HD; i++) o[i] = float(acc[i] / sum);
                lse[(size_t(b) * NH + h) * T + t] = float(mx + std::log(sum));
            }
}

// ---- version 1: a thread per query ---------------------------------------------------------------
__global__ void attention_forward_kernel1(float* out, float* lse, const float* q, const float* k, const float* v,
                                          const int* seg) {
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;  // (b, t, h)
    if (idx >= B * T * NH) return;
    const int h = idx % NH, t = (idx / NH) % T, b = idx / (NH * T);
    const int G = NH / NKV;
    const float scale = rsqrtf(float(HD));
    const float* qr = q + size_t(idx) * HD;
    float o[HD];
    for (int i = 0; i < HD; i++) o[i] = 0.0f;
    float m = -FLT_MAX, l = 0.0f;
    for (int j = seg[b * T + t]; j <= t; j++) {
        const float* kr = k + ((size_t(b) * T + j) * NKV + h / G) * HD;
        const float* vr = v + ((size_t(b) * T + j) * NKV + h / G) * HD;
        float s = 0.0f;
        for (int i = 0; i < HD; i++) s += qr[i] * kr[i];
        s *= scale;
        const float m_new = fmaxf(m, s), alpha = expf(m - m_new), p = expf(s - m_new);
        l = l * alpha + p;
        for (int i = 0; i < HD; i++) o[i] = o[i] * alpha + p * vr[i];
        m = m_new;
    }
    for (int i = 0; i < HD; i++) out[size_t(idx) * HD + i] = o[i] / l;
    lse[(size_t(b) * NH + h) * T + t] = m + logf(l);
}

void attention_forward1(float* out, float* lse, const float* q, const float* k, const float* v, const int* seg) {
    attention_forward_kernel1<<<ceil_div(B * T * NH, 128), 128>>>(out, lse, q, k, v, seg);
}

// ---- version 2: tiled, online softmax per warp (src/backend/cuda/attention.cu) ----------------------
constexpr int kWarps = 4, RW = 16, BQ = kWarps * RW, BK = 32, DPL = HD / 32, KS = HD + 1;
constexpr size_t kSmem2 = (size_t(BQ) * HD + size_t(BK) * KS + size_t(BK) * HD + size_t(kWarps) * RW * BK) * 4;

__device__ void load_tile(float* tile, int stride, const float* x, size_t row_base, size_t ld, size_t off, int r0,
                          int nrows) {
    for (int i = threadIdx.x; i < nrows * HD; i += blockDim.x) {
        const int r = i / HD, d = i % HD, t = r0 + r;
        tile[r * stride + d] = t < T ? x[(row_base + t) * ld + off + d] : 0.0f;
    }
}

__global__ void __launch_bounds__(128) attention_forward_kernel2(float* out, float* lse, const float* q,
                                                                 const float* k, const float* v, const int* seg) {
    extern __shared__ float4 smem4[];
    float* sQ = reinterpret_cast<float*>(smem4);
    float* sK = sQ + BQ * HD;
    float* sV = sK + BK * KS;
    float* sP = sV + BK * HD;
    __shared__ int s_kmin;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int qb = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z, kvh = h / (NH / NKV);
    const int q0 = qb * BQ, rbase = warp * RW;
    const size_t row_base = size_t(b) * T;
    const float scale = rsqrtf(float(HD));
    load_tile(sQ, HD, q, row_base, size_t(NH) * HD, size_t(h) * HD, q0, BQ);
    float m[RW], l[RW], o[RW][DPL];
    int lo[RW], my_kmin = q0;
#pragma unroll
    for (int r = 0; r < RW; r++) {
        const int t = q0 + rbase + r;
        lo[r] = t < T ? seg[row_base + t] : q0;
        my_kmin = min(my_kmin, lo[r]);
        m[r] = -INFINITY, l[r] = 0.0f;
#pragma unroll
        for (int i = 0; i < DPL; i++) o[r][i] = 0.0f;
    }
    if (threadIdx.x == 0) s_kmin = q0;
    __syncthreads();
    if (lane == 0) atomicMin(&s_kmin, my_kmin);
    __syncthreads();
    const int kmax = min(T - 1, q0 + BQ - 1);
    float* prow = sP + warp * RW * BK;
    for (int s0 = s_kmin / BK * BK; s0 <= kmax; s0 += BK) {
        __syncthreads();
        load_tile(sK, KS, k, row_base, size_t(NKV) * HD, size_t(kvh) * HD, s0, BK);
        load_tile(sV, HD, v, row_base, size_t(NKV) * HD, size_t(kvh) * HD, s0, BK);
        __syncthreads();
        float sc[RW];
#pragma unroll
        for (int r = 0; r < RW; r++) sc[r] = 0.0f;
        for (int d = 0; d < HD; d += 4) {
            const float* kr = sK + lane * KS + d;
            const float k0 = kr[0], k1 = kr[1], k2 = kr[2], k3 = kr[3];
#pragma unroll
            for (int r = 0; r < RW; r++) {
                const float4 qv = *reinterpret_cast<const float4*>(sQ + (rbase + r) * HD + d);
                sc[r] += qv.x * k0 + qv.y * k1 + qv.z * k2 + qv.w * k3;
            }
        }
        const int s = s0 + lane;
#pragma unroll
        for (int r = 0; r < RW; r++) {
            const int t = q0 + rbase + r;
            const bool vis = t < T && s <= t && s >= lo[r];
            const float x = vis ? sc[r] * scale : -INFINITY;
            const float m_new = fmaxf(m[r], warp_max(x));
            const float p = vis ? expf(x - m_new) : 0.0f;
            const float alpha = m_new == -INFINITY ? 1.0f : expf(m[r] - m_new);
            l[r] = l[r] * alpha + warp_sum(p);
            m[r] = m_new;
#pragma unroll
            for (int i = 0; i < DPL; i++) o[r][i] *= alpha;
            prow[r * BK + lane] = p;
        }
        __syncwarp();
        for (int j = 0; j < BK; j++) {
            float vv[DPL];
#pragma unroll
            for (int i = 0; i < DPL; i++) vv[i] = sV[j * HD + lane + 32 * i];
#pragma unroll
            for (int r = 0; r < RW; r++) {
                const float p = prow[r * BK + j];
#pragma unroll
                for (int i = 0; i < DPL; i++) o[r][i] += p * vv[i];
            }
        }
    }
#pragma unroll
    for (int r = 0; r < RW; r++) {
        const int t = q0 + rbase + r;
        if (t >= T) continue;
#pragma unroll
        for (int i = 0; i < DPL; i++) out[((row_base + t) * NH + h) * HD + lane + 32 * i] = o[r][i] / l[r];
        if (lane == 0) lse[(size_t(b) * NH + h) * T + t] = m[r] + logf(l[r]);
    }
}

void attention_forward2(float* out, float* lse, const float* q, const float* k, const float* v, const int* seg) {
    attention_forward_kernel2<<<dim3(ceil_div(T, BQ), NH, B), 128, kSmem2>>>(out, lse, q, k, v, seg);
}

// ---- version 3: bf16 tensor cores (src/backend/cuda/attention_tc.cuh) -----------------------------------
#include "../../src/backend/cuda/attention_tc.cuh"
namespace tc = tuner::cuda::attn_tc;
constexpr int HDM = tc::bucket(HD);
static_assert(HDM != 0, "the tensor-core kernels take HD <= 128");

void attention_forward3(float* out, float* lse, const float* q, const float* k, const float* v, const int* seg) {
    const tc::Dims g{B, T, NH, NKV, HD, NH / NKV, 1.0f / std::sqrt(float(HD)), HD % 4 == 0 ? 1 : 0};
    tc::attention_forward_tc_kernel<HDM>
        <<<dim3(ceil_div(T, tc::BQ), NH, B), tc::kThreads, tc::forward_smem_bytes<HDM>()>>>(out, lse, q, k, v, seg, g);
}

// ---- versions 4 and 5: mma.sync, P in registers, cp.async (src/backend/cuda/attention_mma.cuh) ----------
#include "../../src/backend/cuda/attention_mma.cuh"
namespace am = tuner::cuda::attn_mma;
constexpr int HDM4 = am::bucket(HD);
static_assert(HDM4 != 0, "the mma kernels take HD % 8 == 0, HD <= 128");

am::Params mma_params() {
    const float scale = 1.0f / std::sqrt(float(HD));
    return am::Params{B, T, NH, NKV, HD, NH / NKV, scale, scale * am::kLog2e};
}
const dim3 kMmaGrid(NH, ceil_div(T, am::Fwd<HDM4>::BR), B);

void attention_forward4(float* out, float* lse, const float* q, const float* k, const float* v, const int* seg) {
    am::attention_mma_forward_kernel<HDM4, float, float>
        <<<kMmaGrid, am::kThreads, am::Fwd<HDM4>::smem_bytes>>>(out, lse, q, k, v, seg, mma_params());
}

// bf16 copies of q, k, v for version 5 (made in main, once).
__nv_bfloat16 *g_q16, *g_k16, *g_v16;
__global__ void to_bf16_kernel(__nv_bfloat16* dst, const float* src, size_t n) {
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}
__nv_bfloat16* bf16_copy(const float* src, size_t n) {
    __nv_bfloat16* d = nullptr;
    cudaCheck(cudaMalloc(&d, n * sizeof(__nv_bfloat16)));
    to_bf16_kernel<<<256, 256>>>(d, src, n);
    cudaCheck(cudaGetLastError());
    return d;
}

void attention_forward5(float* out, float* lse, const float*, const float*, const float*, const int* seg) {
    am::attention_mma_forward_kernel<HDM4, __nv_bfloat16, float>
        <<<kMmaGrid, am::kThreads, am::Fwd<HDM4>::smem_bytes>>>(out, lse, g_q16, g_k16, g_v16, seg, mma_params());
}

// ---- driver -----------------------------------------------------------------------------------------
int main(int argc, char** argv) {
    const int version = argc > 1 ? std::atoi(argv[1]) : 0;
    const size_t nq = size_t(B) * T * NH * HD, nkv = size_t(B) * T * NKV * HD, nl = size_t(B) * NH * T;
    const auto q = random_floats(nq, 1), k = random_floats(nkv, 2), v = random_floats(nkv, 3);
    std::vector<int> seg(size_t(B) * T);  // packed samples: segments of 1..300 tokens
    std::mt19937 rng(4);
    for (int b = 0; b < B; b++)
        for (int start = 0; start < T;) {
            const int len = 1 + int(rng() % 300);
            for (int t = start; t < std::min(T, start + len); t++) seg[size_t(b) * T + t] = start;
            start += len;
        }
    std::vector<float> out(nq), lse(nl);
    attention_forward_cpu(out, lse, q, k, v, seg);

    cudaCheck(
        cudaFuncSetAttribute(attention_forward_kernel2, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kSmem2)));
    cudaCheck(cudaFuncSetAttribute(tc::attention_forward_tc_kernel<HDM>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   int(tc::forward_smem_bytes<HDM>())));
    cudaCheck(cudaFuncSetAttribute(am::attention_mma_forward_kernel<HDM4, float, float>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize, int(am::Fwd<HDM4>::smem_bytes)));
    cudaCheck(cudaFuncSetAttribute(am::attention_mma_forward_kernel<HDM4, __nv_bfloat16, float>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize, int(am::Fwd<HDM4>::smem_bytes)));
    float *dq = to_device(q), *dk = to_device(k), *dv = to_device(v), *dout, *dlse;
    g_q16 = bf16_copy(dq, nq), g_k16 = bf16_copy(dk, nkv), g_v16 = bf16_copy(dv, nkv);
    int* dseg = to_device(seg);
    cudaCheck(cudaMalloc(&dout, nq * 4));
    cudaCheck(cudaMalloc(&dlse, nl * 4));

    // Useful FLOPs: 4 * HD per visible (query, key) pair.
    double pairs = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) pairs += t - seg[size_t(b) * T + t] + 1;
    const double flops = 4.0 * HD * NH * pairs;

    using Fn = void (*)(float*, float*, const float*, const float*, const float*, const int*);
    const Fn versions[] = {attention_forward1, attention_forward2, attention_forward3, attention_forward4,
                           attention_forward5};
    // Tolerances (max |err| / max |ref|): f32 kernels 1e-5; bf16 operands (relative 2^-9 each, P
    // rounded to bf16) 1e-2 for out, 5e-3 for lse (tests/test_cuda_ops.cpp explains them).
    const float tol_out[] = {1e-5f, 1e-5f, 1e-2f, 1e-2f, 1e-2f}, tol_lse[] = {1e-5f, 1e-5f, 5e-3f, 5e-3f, 5e-3f};
    for (int ver = 1; ver <= 5; ver++) {
        if (version && version != ver) continue;
        std::printf("version %d\n", ver);
        cudaCheck(cudaMemset(dout, 0, nq * 4));
        versions[ver - 1](dout, dlse, dq, dk, dv, dseg);
        cudaCheck(cudaDeviceSynchronize());
        validate_result(dout, out, "out", tol_out[ver - 1]);
        validate_result(dlse, lse, "lse", tol_lse[ver - 1]);
        const float ms = benchmark_kernel(20, versions[ver - 1], dout, dlse, dq, dk, dv, dseg);
        std::printf("  %.3f ms, %.2f TFLOP/s (useful)\n", ms, flops / (ms * 1e-3) * 1e-12);
    }
    return 0;
}
