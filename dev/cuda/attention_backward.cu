// Kernel lab: causal attention backward with GQA and packed segments (f32), llm.c dev/cuda style.
//   make attention_backward && ./attention_backward [version]     (version 0 = all)
//
// Given q, k, v, out, lse (from the forward) and dout: with P = exp(scale q.k - lse) (0 where
// masked), D_t = dout_t . out_t, dS = P (dout.v - D):
//   dq = scale dS K,   dk = scale dS^T Q,   dv = P^T dout.
// The CPU reference runs the forward and backward in double.
//
// version 1: one thread per query for dq (and D), one thread per key for dk / dv (looping over
//            the query heads of its kv head): no shared memory, no atomics.
// version 2: the kernels in src/backend/cuda/attention.cu: tiles in shared memory, dq per query
//            block over key tiles, dk/dv per key block over query tiles, lane-parallel scores.
// version 3: bf16 tensor cores (WMMA m16n16k16, f32 accumulation): the dq and dk/dv kernels of
//            src/backend/cuda/attention_tc.cuh, included as is (what cuda::attention_backward runs
//            with BF16 compute), after version 2's D kernel. Same three-kernel deterministic
//            structure as version 2 with 64 x 64 tiles; S, dP, dS K, P^T dO, dS^T Q on tensor cores.
//            Validated with bf16 tolerances (2e-2 of each gradient's max |ref|).
// version 4: mma.sync.m16n8k16 (src/backend/cuda/attention_mma.cuh, what
//            cuda::attention_mma_backward runs, included as is): D and a bf16 copy of dout in one
//            pass, then a dq kernel (64 queries, 16 per warp; S, dP, dS in registers, dS as the A
//            operand of dS K) and a dk / dv kernel (64 keys, 16 per warp; P^T and dS^T from the
//            accumulators as A operands of P^T dO and dS^T Q), operand tiles by cp.async into
//            double buffers and ldmatrix; with GQA and few key blocks the dk / dv blocks split the
//            query heads and a small kernel adds the partial sums in a fixed order. bf16 q, k, v
//            (copies made once, outside the timing). Deterministic, no atomics.
// Next: FlashAttention-2's single pass (dq by atomics, or a deterministic dq reduction), then
// wgmma (FlashAttention-3). Other shapes: -DLAB_B=1 -DLAB_T=2048 -DLAB_NH=32 -DLAB_NKV=8
// -DLAB_HD=128 in NVCC_FLAGS (see attention_forward.cu).
#include "common.h"

#ifndef LAB_B
#define LAB_B 1
#endif
#ifndef LAB_T
#define LAB_T 512
#endif
#ifndef LAB_NH
#define LAB_NH 8
#endif
#ifndef LAB_NKV
#define LAB_NKV 2
#endif
#ifndef LAB_HD
#define LAB_HD 64
#endif
constexpr int B = LAB_B, T = LAB_T, NH = LAB_NH, NKV = LAB_NKV, HD = LAB_HD, G = NH / NKV;

__host__ __device__ size_t qi(int b, int t, int h) { return ((size_t(b) * T + t) * NH + h) * HD; }
__host__ __device__ size_t ki(int b, int t, int h) { return ((size_t(b) * T + t) * NKV + h) * HD; }

// ---- CPU reference (double) ----------------------------------------------------------------------
struct Ref {
    std::vector<float> out, lse, dq, dk, dv;
};
Ref attention_cpu(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                  const std::vector<float>& dout, const std::vector<int>& seg) {
    Ref r;
    const size_t nq = size_t(B) * T * NH * HD, nkv = size_t(B) * T * NKV * HD;
    r.out.assign(nq, 0), r.lse.assign(size_t(B) * NH * T, 0), r.dq.assign(nq, 0), r.dk.assign(nkv, 0),
        r.dv.assign(nkv, 0);
    std::vector<double> dk(nkv, 0.0), dv(nkv, 0.0), p(T);
    const double scale = 1.0 / std::sqrt(double(HD));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const int lo = seg[size_t(b) * T + t], kh = h / G;
                double mx = -1e300;
                for (int s = lo; s <= t; s++) {
                    double d = 0;
                    for (int i = 0; i < HD; i++) d += double(q[qi(b, t, h) + i]) * k[ki(b, s, kh) + i];
                    p[s] = d * scale;
                    mx = std::fmax(mx, p[s]);
                }
                double sum = 0;
                for (int s = lo; s <= t; s++) sum += (p[s] = std::exp(p[s] - mx));
                std::vector<double> o(HD, 0.0);
                for (int s = lo; s <= t; s++) {
                    p[s] /= sum;
                    for (int i = 0; i < HD; i++) o[i] += p[s] * v[ki(b, s, kh) + i];
                }
                for (int i = 0; i < HD; i++) r.out[qi(b, t, h) + i] = float(o[i]);
                r.lse[(size_t(b) * NH + h) * T + t] = float(mx + std::log(sum));
                double D = 0;
                for (int i = 0; i < HD; i++) D += double(dout[qi(b, t, h) + i]) * o[i];
                std::vector<double> dqt(HD, 0.0);
                for (int s = lo; s <= t; s++) {
                    double dp = 0;
                    for (int i = 0; i < HD; i++) dp += double(dout[qi(b, t, h) + i]) * v[ki(b, s, kh) + i];
                    const double ds = p[s] * (dp - D);
                    for (int i = 0; i < HD; i++) {
                        dqt[i] += scale * ds * k[ki(b, s, kh) + i];
                        dk[ki(b, s, kh) + i] += scale * ds * q[qi(b, t, h) + i];
                        dv[ki(b, s, kh) + i] += p[s] * dout[qi(b, t, h) + i];
                    }
                }
                for (int i = 0; i < HD; i++) r.dq[qi(b, t, h) + i] = float(dqt[i]);
            }
    for (size_t i = 0; i < nkv; i++) r.dk[i] = float(dk[i]), r.dv[i] = float(dv[i]);
    return r;
}

struct Args {
    float *dq, *dk, *dv, *D;
    const float *dout, *q, *k, *v, *out, *lse;
    const int* seg;
};

// ---- version 1: a thread per query, then a thread per key -------------------------------------------
__global__ void dq_kernel1(Args a) {
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;  // (b, t, h)
    if (idx >= B * T * NH) return;
    const int h = idx % NH, t = (idx / NH) % T, b = idx / (NH * T), kh = h / G;
    const float scale = rsqrtf(float(HD));
    const float* qr = a.q + size_t(idx) * HD;
    const float* dor = a.dout + size_t(idx) * HD;
    float D = 0.0f;
    for (int i = 0; i < HD; i++) D += dor[i] * a.out[size_t(idx) * HD + i];
    a.D[(size_t(b) * NH + h) * T + t] = D;
    const float L = a.lse[(size_t(b) * NH + h) * T + t];
    float acc[HD];
    for (int i = 0; i < HD; i++) acc[i] = 0.0f;
    for (int s = a.seg[b * T + t]; s <= t; s++) {
        const float* kr = a.k + ki(b, s, kh);
        const float* vr = a.v + ki(b, s, kh);
        float sc = 0.0f, dp = 0.0f;
        for (int i = 0; i < HD; i++) sc += qr[i] * kr[i], dp += dor[i] * vr[i];
        const float ds = expf(sc * scale - L) * (dp - D);
        for (int i = 0; i < HD; i++) acc[i] += ds * kr[i];
    }
    for (int i = 0; i < HD; i++) a.dq[size_t(idx) * HD + i] = acc[i] * scale;
}

__global__ void dkv_kernel1(Args a) {
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;  // (b, s, kv head)
    if (idx >= B * T * NKV) return;
    const int kh = idx % NKV, s = (idx / NKV) % T, b = idx / (NKV * T);
    const float scale = rsqrtf(float(HD));
    const float* kr = a.k + size_t(idx) * HD;
    const float* vr = a.v + size_t(idx) * HD;
    float dk[HD], dv[HD];
    for (int i = 0; i < HD; i++) dk[i] = dv[i] = 0.0f;
    for (int h = kh * G; h < (kh + 1) * G; h++)
        for (int t = s; t < T; t++) {
            if (a.seg[b * T + t] > s) continue;
            const float* qr = a.q + qi(b, t, h);
            const float* dor = a.dout + qi(b, t, h);
            float sc = 0.0f, dp = 0.0f;
            for (int i = 0; i < HD; i++) sc += qr[i] * kr[i], dp += dor[i] * vr[i];
            const float p = expf(sc * scale - a.lse[(size_t(b) * NH + h) * T + t]);
            const float ds = p * (dp - a.D[(size_t(b) * NH + h) * T + t]);
            for (int i = 0; i < HD; i++) dk[i] += ds * qr[i], dv[i] += p * dor[i];
        }
    for (int i = 0; i < HD; i++) a.dk[size_t(idx) * HD + i] = dk[i] * scale, a.dv[size_t(idx) * HD + i] = dv[i];
}

void attention_backward1(Args a) {
    dq_kernel1<<<ceil_div(B * T * NH, 128), 128>>>(a);  // also writes D, which dkv_kernel1 reads
    dkv_kernel1<<<ceil_div(B * T * NKV, 64), 64>>>(a);
}

// ---- version 2: tiled (src/backend/cuda/attention.cu) --------------------------------------------------
constexpr int kWarps = 4, RW = 16, BQ = kWarps * RW, BK = 32, KW = 16, BKV = kWarps * KW, BT = 32;
constexpr int DPL = HD / 32, PS = HD + 1;
constexpr size_t kSmemDq = (2 * size_t(BQ) * HD + 2 * size_t(BK) * PS + size_t(kWarps) * RW * BK) * 4;
constexpr size_t kSmemDkv = (2 * size_t(BKV) * HD + 2 * size_t(BT) * PS + 2 * size_t(kWarps) * KW * BT + 3 * BT) * 4;

__device__ void load_tile(float* tile, int stride, const float* x, int nheads, int b, int h, int r0, int nrows) {
    for (int i = threadIdx.x; i < nrows * HD; i += blockDim.x) {
        const int r = i / HD, d = i % HD, t = r0 + r;
        tile[r * stride + d] = t < T ? x[((size_t(b) * T + t) * nheads + h) * HD + d] : 0.0f;
    }
}

__global__ void delta_kernel2(Args a) {
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;  // (b, t, h)
    if (row >= B * T * NH) return;
    float s = 0.0f;
    for (int d = lane; d < HD; d += 32) s += a.dout[size_t(row) * HD + d] * a.out[size_t(row) * HD + d];
    s = warp_sum(s);
    const int h = row % NH, t = (row / NH) % T, b = row / (NH * T);
    if (lane == 0) a.D[(size_t(b) * NH + h) * T + t] = s;
}

__global__ void __launch_bounds__(128) dq_kernel2(Args a) {
    extern __shared__ float4 smem4[];
    float* sQ = reinterpret_cast<float*>(smem4);
    float* sdO = sQ + BQ * HD;
    float* sK = sdO + BQ * HD;
    float* sV = sK + BK * PS;
    float* sdS = sV + BK * PS;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int q0 = (gridDim.x - 1 - blockIdx.x) * BQ, h = blockIdx.y, b = blockIdx.z, kh = h / G, rbase = warp * RW;
    const float scale = rsqrtf(float(HD));
    load_tile(sQ, HD, a.q, NH, b, h, q0, BQ);
    load_tile(sdO, HD, a.dout, NH, b, h, q0, BQ);
    float acc[RW][DPL], L[RW], D[RW];
    int lo[RW], kmin = q0;
#pragma unroll
    for (int r = 0; r < RW; r++) {
        const int t = q0 + rbase + r;
        lo[r] = t < T ? a.seg[b * T + t] : q0;
        L[r] = t < T ? a.lse[(size_t(b) * NH + h) * T + t] : 0.0f;
        D[r] = t < T ? a.D[(size_t(b) * NH + h) * T + t] : 0.0f;
        kmin = min(kmin, lo[r]);
#pragma unroll
        for (int i = 0; i < DPL; i++) acc[r][i] = 0.0f;
    }
    __shared__ int s_kmin;
    if (threadIdx.x == 0) s_kmin = q0;
    __syncthreads();
    atomicMin(&s_kmin, kmin);
    __syncthreads();
    float* dsrow = sdS + warp * RW * BK;
    for (int s0 = s_kmin / BK * BK; s0 <= min(T - 1, q0 + BQ - 1); s0 += BK) {
        __syncthreads();
        load_tile(sK, PS, a.k, NKV, b, kh, s0, BK);
        load_tile(sV, PS, a.v, NKV, b, kh, s0, BK);
        __syncthreads();
        float sc[RW], dp[RW];
#pragma unroll
        for (int r = 0; r < RW; r++) sc[r] = dp[r] = 0.0f;
        for (int d = 0; d < HD; d++) {
            const float kd = sK[lane * PS + d], vd = sV[lane * PS + d];
#pragma unroll
            for (int r = 0; r < RW; r++)
                sc[r] += sQ[(rbase + r) * HD + d] * kd, dp[r] += sdO[(rbase + r) * HD + d] * vd;
        }
        const int s = s0 + lane;
#pragma unroll
        for (int r = 0; r < RW; r++) {
            const int t = q0 + rbase + r;
            const bool vis = t < T && s <= t && s >= lo[r];
            dsrow[r * BK + lane] = vis ? expf(sc[r] * scale - L[r]) * (dp[r] - D[r]) : 0.0f;
        }
        __syncwarp();
        for (int j = 0; j < BK; j++) {
            float kk[DPL];
#pragma unroll
            for (int i = 0; i < DPL; i++) kk[i] = sK[j * PS + lane + 32 * i];
#pragma unroll
            for (int r = 0; r < RW; r++)
#pragma unroll
                for (int i = 0; i < DPL; i++) acc[r][i] += dsrow[r * BK + j] * kk[i];
        }
        __syncwarp();
    }
#pragma unroll
    for (int r = 0; r < RW; r++) {
        const int t = q0 + rbase + r;
        if (t < T)
#pragma unroll
            for (int i = 0; i < DPL; i++) a.dq[qi(b, t, h) + lane + 32 * i] = acc[r][i] * scale;
    }
}

__global__ void __launch_bounds__(128) dkv_kernel2(Args a) {
    extern __shared__ float4 smem4[];
    float* sK = reinterpret_cast<float*>(smem4);
    float* sV = sK + BKV * HD;
    float* sQ = sV + BKV * HD;
    float* sdO = sQ + BT * PS;
    float* sP = sdO + BT * PS;
    float* sdS = sP + kWarps * KW * BT;
    float* sL = sdS + kWarps * KW * BT;
    float* sD = sL + BT;
    int* sLo = reinterpret_cast<int*>(sD + BT);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int s0 = blockIdx.x * BKV, kh = blockIdx.y, b = blockIdx.z, sbase = s0 + warp * KW;
    const int s_last = min(T - 1, s0 + BKV - 1);
    const float scale = rsqrtf(float(HD));
    load_tile(sK, HD, a.k, NKV, b, kh, s0, BKV);
    load_tile(sV, HD, a.v, NKV, b, kh, s0, BKV);
    float dk[KW][DPL], dv[KW][DPL];
#pragma unroll
    for (int r = 0; r < KW; r++)
#pragma unroll
        for (int i = 0; i < DPL; i++) dk[r][i] = dv[r][i] = 0.0f;
    float* prow = sP + warp * KW * BT;
    float* dsrow = sdS + warp * KW * BT;
    for (int h = kh * G; h < (kh + 1) * G; h++)
        for (int t0 = s0 / BT * BT; t0 < T; t0 += BT) {
            __syncthreads();
            if (threadIdx.x < BT) {
                const int t = t0 + threadIdx.x;
                sL[threadIdx.x] = t < T ? a.lse[(size_t(b) * NH + h) * T + t] : 0.0f;
                sD[threadIdx.x] = t < T ? a.D[(size_t(b) * NH + h) * T + t] : 0.0f;
                sLo[threadIdx.x] = t < T ? a.seg[b * T + t] : T;
            }
            __syncthreads();
            const bool any = threadIdx.x < BT && t0 + lane < T && t0 + lane >= s0 && sLo[lane] <= s_last;
            if (!__syncthreads_or(any)) continue;
            load_tile(sQ, PS, a.q, NH, b, h, t0, BT);
            load_tile(sdO, PS, a.dout, NH, b, h, t0, BT);
            __syncthreads();
            float sc[KW], dp[KW];
#pragma unroll
            for (int r = 0; r < KW; r++) sc[r] = dp[r] = 0.0f;
            for (int d = 0; d < HD; d++) {
                const float qd = sQ[lane * PS + d], od = sdO[lane * PS + d];
#pragma unroll
                for (int r = 0; r < KW; r++)
                    sc[r] += sK[(warp * KW + r) * HD + d] * qd, dp[r] += sV[(warp * KW + r) * HD + d] * od;
            }
            const int t = t0 + lane;
#pragma unroll
            for (int r = 0; r < KW; r++) {
                const int s = sbase + r;
                const bool vis = t < T && s <= t && s >= sLo[lane];
                const float p = vis ? expf(sc[r] * scale - sL[lane]) : 0.0f;
                prow[r * BT + lane] = p;
                dsrow[r * BT + lane] = p * (dp[r] - sD[lane]);
            }
            __syncwarp();
            for (int j = 0; j < BT; j++) {
                float oo[DPL], qq[DPL];
#pragma unroll
                for (int i = 0; i < DPL; i++) oo[i] = sdO[j * PS + lane + 32 * i], qq[i] = sQ[j * PS + lane + 32 * i];
#pragma unroll
                for (int r = 0; r < KW; r++)
#pragma unroll
                    for (int i = 0; i < DPL; i++)
                        dv[r][i] += prow[r * BT + j] * oo[i], dk[r][i] += dsrow[r * BT + j] * qq[i];
            }
            __syncwarp();
        }
#pragma unroll
    for (int r = 0; r < KW; r++) {
        const int s = sbase + r;
        if (s < T)
#pragma unroll
            for (int i = 0; i < DPL; i++)
                a.dk[ki(b, s, kh) + lane + 32 * i] = dk[r][i] * scale, a.dv[ki(b, s, kh) + lane + 32 * i] = dv[r][i];
    }
}

void attention_backward2(Args a) {
    delta_kernel2<<<ceil_div(B * T * NH * 32, 256), 256>>>(a);
    dq_kernel2<<<dim3(ceil_div(T, BQ), NH, B), 128, kSmemDq>>>(a);
    dkv_kernel2<<<dim3(ceil_div(T, BKV), NKV, B), 128, kSmemDkv>>>(a);
}

// ---- version 3: bf16 tensor cores (src/backend/cuda/attention_tc.cuh) -----------------------------------
#include "../../src/backend/cuda/attention_tc.cuh"
namespace tc = tuner::cuda::attn_tc;
constexpr int HDM = tc::bucket(HD);
static_assert(HDM != 0, "the tensor-core kernels take HD <= 128");

void attention_backward3(Args a) {
    const tc::Dims g{B, T, NH, NKV, HD, G, 1.0f / std::sqrt(float(HD)), HD % 4 == 0 ? 1 : 0};
    delta_kernel2<<<ceil_div(B * T * NH * 32, 256), 256>>>(a);
    tc::attention_dq_tc_kernel<HDM><<<dim3(ceil_div(T, tc::BQ), NH, B), tc::kThreads, tc::dq_smem_bytes<HDM>()>>>(
        a.dq, a.dout, a.q, a.k, a.v, a.lse, a.D, a.seg, g);
    tc::attention_dkv_tc_kernel<HDM><<<dim3(ceil_div(T, tc::BQ), NKV, B), tc::kThreads, tc::dkv_smem_bytes<HDM>()>>>(
        a.dk, a.dv, a.dout, a.q, a.k, a.v, a.lse, a.D, a.seg, g);
}

// ---- version 4: mma.sync, register-resident P / dS, cp.async (src/backend/cuda/attention_mma.cuh) ------
#include "../../src/backend/cuda/attention_mma.cuh"
namespace am = tuner::cuda::attn_mma;
constexpr int HDM4 = am::bucket(HD);
static_assert(HDM4 != 0, "the mma kernels take HD % 8 == 0, HD <= 128");

// bf16 copies of q, k, v; dout in bf16, the dk / dv partial sums (allocated in main).
__nv_bfloat16 *g_q16, *g_k16, *g_v16, *g_dout16;
float* g_part;
int g_split = 1;  // dk / dv blocks per (key block, kv head): the smallest divisor of G giving 4 blocks per SM

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

void attention_backward4(Args a) {
    const float scale = 1.0f / std::sqrt(float(HD));
    am::Params p{B, T, NH, NKV, HD, G, scale, scale * am::kLog2e};
    p.S = g_split;
    using C = am::Bwd<HDM4>;
    am::attention_mma_delta_kernel<float>
        <<<ceil_div(size_t(B) * T * NH * 32, 256), 256>>>(a.D, g_dout16, a.dout, a.out, p);
    am::attention_mma_dq_kernel<HDM4, __nv_bfloat16>
        <<<dim3(NH, ceil_div(T, C::BR), B), am::kThreads, C::dq_smem_bytes>>>(a.dq, g_dout16, g_q16, g_k16, g_v16,
                                                                             a.lse, a.D, a.seg, p);
    am::attention_mma_dkv_kernel<HDM4, __nv_bfloat16>
        <<<dim3(NKV * p.S, ceil_div(T, C::BC), B), am::kThreads, C::dkv_smem_bytes>>>(
            a.dk, a.dv, g_part, g_dout16, g_q16, g_k16, g_v16, a.lse, a.D, a.seg, p);
    if (p.S > 1) {
        const long long n4 = (long long)B * T * NKV * HD / 4;
        am::attention_mma_dkv_reduce_kernel<<<ceil_div(n4, 256), 256>>>(a.dk, a.dv, g_part, n4, p.S);
    }
}

// ---- driver -----------------------------------------------------------------------------------------
int main(int argc, char** argv) {
    const int version = argc > 1 ? std::atoi(argv[1]) : 0;
    const size_t nq = size_t(B) * T * NH * HD, nkv = size_t(B) * T * NKV * HD, nl = size_t(B) * NH * T;
    const auto q = random_floats(nq, 1), k = random_floats(nkv, 2), v = random_floats(nkv, 3);
    const auto dout = random_floats(nq, 4);
    std::vector<int> seg(size_t(B) * T);
    std::mt19937 rng(5);
    for (int b = 0; b < B; b++)
        for (int start = 0; start < T;) {
            const int len = 1 + int(rng() % 200);
            for (int t = start; t < std::min(T, start + len); t++) seg[size_t(b) * T + t] = start;
            start += len;
        }
    const Ref ref = attention_cpu(q, k, v, dout, seg);

    cudaCheck(cudaFuncSetAttribute(dq_kernel2, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kSmemDq)));
    cudaCheck(cudaFuncSetAttribute(dkv_kernel2, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kSmemDkv)));
    cudaCheck(cudaFuncSetAttribute(tc::attention_dq_tc_kernel<HDM>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   int(tc::dq_smem_bytes<HDM>())));
    cudaCheck(cudaFuncSetAttribute(tc::attention_dkv_tc_kernel<HDM>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   int(tc::dkv_smem_bytes<HDM>())));
    cudaCheck(cudaFuncSetAttribute(am::attention_mma_dq_kernel<HDM4, __nv_bfloat16>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize, int(am::Bwd<HDM4>::dq_smem_bytes)));
    cudaCheck(cudaFuncSetAttribute(am::attention_mma_dkv_kernel<HDM4, __nv_bfloat16>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize, int(am::Bwd<HDM4>::dkv_smem_bytes)));
    Args a;
    a.q = to_device(q), a.k = to_device(k), a.v = to_device(v), a.dout = to_device(dout);
    g_q16 = bf16_copy(a.q, nq), g_k16 = bf16_copy(a.k, nkv), g_v16 = bf16_copy(a.v, nkv);
    cudaCheck(cudaMalloc(&g_dout16, nq * sizeof(__nv_bfloat16)));
    int sms = 0;
    cudaCheck(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    g_split = G;
    for (int d = G; d >= 1; d--)
        if (G % d == 0 && (long long)ceil_div(T, 64) * NKV * B * d >= 4LL * sms) g_split = d;
    cudaCheck(cudaMalloc(&g_part, std::max<size_t>(1, size_t(g_split - 1) * 2 * nkv * sizeof(float))));
    std::printf("version 4 splits dk / dv over %d head group(s)\n", g_split);
    a.out = to_device(ref.out), a.lse = to_device(ref.lse), a.seg = to_device(seg);
    cudaCheck(cudaMalloc(&a.dq, nq * 4));
    cudaCheck(cudaMalloc(&a.dk, nkv * 4));
    cudaCheck(cudaMalloc(&a.dv, nkv * 4));
    cudaCheck(cudaMalloc(&a.D, nl * 4));

    double pairs = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) pairs += t - seg[size_t(b) * T + t] + 1;
    const double flops = 2.5 * 4.0 * HD * NH * pairs;  // FlashAttention's convention: 2.5x the forward

    void (*versions[])(Args) = {attention_backward1, attention_backward2, attention_backward3, attention_backward4};
    // Tolerances (max |err| / max |ref|): f32 kernels 1e-4; bf16 operands 2e-2 (tests/test_cuda_ops.cpp).
    const float tols[] = {1e-4f, 1e-4f, 2e-2f, 2e-2f};
    for (int ver = 1; ver <= 4; ver++) {
        if (version && version != ver) continue;
        std::printf("version %d\n", ver);
        versions[ver - 1](a);
        cudaCheck(cudaDeviceSynchronize());
        validate_result(a.dq, ref.dq, "dq", tols[ver - 1]);
        validate_result(a.dk, ref.dk, "dk", tols[ver - 1]);
        validate_result(a.dv, ref.dv, "dv", tols[ver - 1]);
        const float ms = benchmark_kernel(10, versions[ver - 1], a);
        std::printf("  %.3f ms, %.2f TFLOP/s (useful)\n", ms, flops / (ms * 1e-3) * 1e-12);
    }
    return 0;
}
