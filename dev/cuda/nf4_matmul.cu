// Kernel lab: y = x W^T with W stored NF4 (QLoRA's frozen base), llm.c dev/cuda style.
//   make nf4_matmul && ./nf4_matmul [version]     (version 0 = all)
//
// x (N, in) f32, W (out, in) NF4: bitsandbytes' layout without double quantisation (the tensor
// flattened, blocks of 64 values, one f32 absmax per block, two 4-bit code indices per byte with
// the first value in the high nibble; value = code[index] * absmax). y (N, out) f32.
// The CPU reference dequantises W and computes sampled outputs in double.
//
// version 1: the path in src/backend/cuda/matmul.cu: dequantise W to a bf16 tile in global
//            memory, then a cuBLASLt bf16 x bf16 -> f32 GEMM (x converted to bf16 first).
//            Costs an extra write + read of W in bf16 (4x the NF4 bytes) per call.
// version 2: fused and naive: a 64 x 64 output tile per block, W tiles dequantised straight into
//            shared memory (a 64-wide K step is exactly one NF4 block per W row), f32 FMAs.
//            No tensor cores: the starting point for an mma.sync version that dequantises
//            into registers (the Marlin / bitsandbytes-gemv direction).
#include <cublasLt.h>
#include <cuda_bf16.h>

#include "common.h"

constexpr int N = 1024, IN = 4096, OUT = 4096;

const float kCode[16] = {-1.0f,
                         -0.6961928009986877f,
                         -0.5250730514526367f,
                         -0.39491748809814453f,
                         -0.28444138169288635f,
                         -0.18477343022823334f,
                         -0.09105003625154495f,
                         0.0f,
                         0.07958029955625534f,
                         0.16093020141124725f,
                         0.24611230194568634f,
                         0.33791524171829224f,
                         0.44070982933044434f,
                         0.5626170039176941f,
                         0.7229568362236023f,
                         1.0f};
__constant__ float c_code[16];

// ---- NF4 on the CPU ------------------------------------------------------------------------------
void nf4_quantize(std::vector<uint8_t>& codes, std::vector<float>& absmax, const std::vector<float>& w) {
    const size_t n = w.size();
    codes.assign(n / 2, 0), absmax.assign(n / 64, 0.0f);
    for (size_t b = 0; b < n / 64; b++) {
        float am = 0.0f;
        for (int i = 0; i < 64; i++) am = std::fmax(am, std::fabs(w[b * 64 + i]));
        absmax[b] = am;
        for (int i = 0; i < 64; i++) {
            const float x = am > 0 ? w[b * 64 + i] / am : 0.0f;
            int best = 0;
            for (int c = 1; c < 16; c++)
                if (std::fabs(kCode[c] - x) < std::fabs(kCode[best] - x)) best = c;
            const size_t e = b * 64 + i;
            codes[e / 2] |= uint8_t(e % 2 == 0 ? best << 4 : best);
        }
    }
}
float nf4_value(const std::vector<uint8_t>& codes, const std::vector<float>& absmax, size_t e) {
    const int idx = e % 2 == 0 ? codes[e / 2] >> 4 : codes[e / 2] & 15;
    return kCode[idx] * absmax[e / 64];
}

// ---- version 1: dequantise to bf16, then cuBLASLt -------------------------------------------------
__global__ void nf4_to_bf16_kernel(__nv_bfloat16* dst, const uint8_t* codes, const float* absmax, size_t n) {
    for (size_t e2 = blockIdx.x * size_t(blockDim.x) + threadIdx.x; e2 < n / 2; e2 += size_t(gridDim.x) * blockDim.x) {
        const uint8_t byte = codes[e2];
        const float a = absmax[(2 * e2) / 64];
        dst[2 * e2] = __float2bfloat16_rn(c_code[byte >> 4] * a);
        dst[2 * e2 + 1] = __float2bfloat16_rn(c_code[byte & 15] * a);
    }
}
__global__ void f32_to_bf16_kernel(__nv_bfloat16* dst, const float* src, size_t n) {
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

struct Lt {
    cublasLtHandle_t handle;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
    void* ws;
    size_t ws_bytes = size_t(32) << 20;
    __nv_bfloat16 *wb, *xb;
};
Lt g_lt;

#define cublasCheck(call)                                                                      \
    do {                                                                                       \
        cublasStatus_t st_ = (call);                                                           \
        if (st_ != CUBLAS_STATUS_SUCCESS) {                                                    \
            std::fprintf(stderr, "[cublas] %s:%d: %s: %d\n", __FILE__, __LINE__, #call, int(st_)); \
            std::exit(EXIT_FAILURE);                                                           \
        }                                                                                      \
    } while (0)

void setup_lt() {
    Lt& l = g_lt;
    cublasCheck(cublasLtCreate(&l.handle));
    cudaCheck(cudaMalloc(&l.ws, l.ws_bytes));
    cudaCheck(cudaMalloc(&l.wb, size_t(OUT) * IN * 2));
    cudaCheck(cudaMalloc(&l.xb, size_t(N) * IN * 2));
    // Column-major: y^T (OUT, N) = W (stored (in, out) col-major, op T) x^T (in, N).
    cublasCheck(cublasLtMatmulDescCreate(&l.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t t = CUBLAS_OP_T, nn = CUBLAS_OP_N;
    cublasCheck(cublasLtMatmulDescSetAttribute(l.op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof(t)));
    cublasCheck(cublasLtMatmulDescSetAttribute(l.op, CUBLASLT_MATMUL_DESC_TRANSB, &nn, sizeof(nn)));
    cublasCheck(cublasLtMatrixLayoutCreate(&l.a, CUDA_R_16BF, IN, OUT, IN));
    cublasCheck(cublasLtMatrixLayoutCreate(&l.b, CUDA_R_16BF, IN, N, IN));
    cublasCheck(cublasLtMatrixLayoutCreate(&l.c, CUDA_R_32F, OUT, N, OUT));
    cublasLtMatmulPreference_t pref;
    cublasCheck(cublasLtMatmulPreferenceCreate(&pref));
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &l.ws_bytes,
                                                     sizeof(l.ws_bytes)));
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
    cublasCheck(cublasLtMatmulAlgoGetHeuristic(l.handle, l.op, l.a, l.b, l.c, l.c, pref, 1, &heur, &found));
    if (!found) {
        std::fprintf(stderr, "no cuBLASLt algorithm\n");
        std::exit(EXIT_FAILURE);
    }
    l.algo = heur.algo;
    cublasLtMatmulPreferenceDestroy(pref);
}

void nf4_matmul1(float* y, const float* x, const uint8_t* codes, const float* absmax) {
    Lt& l = g_lt;
    nf4_to_bf16_kernel<<<4096, 256>>>(l.wb, codes, absmax, size_t(OUT) * IN);
    f32_to_bf16_kernel<<<4096, 256>>>(l.xb, x, size_t(N) * IN);
    const float alpha = 1.0f, beta = 0.0f;
    cublasCheck(cublasLtMatmul(l.handle, l.op, &alpha, l.wb, l.a, l.xb, l.b, &beta, y, l.c, y, l.c, &l.algo, l.ws,
                               l.ws_bytes, 0));
}

// ---- version 2: fused dequantise-in-shared-memory, f32 tiles --------------------------------------------
constexpr int BM = 64, BN = 64, BK = 64, TM = 4, TN = 4;  // 16 x 16 threads, each 4 x 4 outputs

__global__ void __launch_bounds__(256) nf4_matmul_kernel2(float* y, const float* x, const uint8_t* codes,
                                                          const float* absmax) {
    __shared__ float As[BK][BM + 4];  // x tile, transposed: As[k][m]
    __shared__ float Bs[BK][BN + 4];  // W tile dequantised, transposed: Bs[k][n]
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    float acc[TM][TN] = {};
    for (int k0 = 0; k0 < IN; k0 += BK) {
        for (int i = threadIdx.x; i < BM * BK; i += 256) {
            const int r = i / BK, c = i % BK;
            As[c][r] = x[size_t(m0 + r) * IN + k0 + c];
        }
        // W rows n0..n0+63, columns k0..k0+63: one NF4 block (32 bytes) per row.
        for (int i = threadIdx.x; i < BN * BK / 2; i += 256) {
            const int r = i / (BK / 2), c2 = i % (BK / 2);
            const size_t e = size_t(n0 + r) * IN + k0 + 2 * c2;
            const uint8_t byte = codes[e / 2];
            const float a = absmax[e / 64];
            Bs[2 * c2][r] = c_code[byte >> 4] * a;
            Bs[2 * c2 + 1][r] = c_code[byte & 15] * a;
        }
        __syncthreads();
#pragma unroll 8
        for (int kk = 0; kk < BK; kk++) {
            float a[TM], b[TN];
#pragma unroll
            for (int i = 0; i < TM; i++) a[i] = As[kk][ty * TM + i];
#pragma unroll
            for (int j = 0; j < TN; j++) b[j] = Bs[kk][tx * TN + j];
#pragma unroll
            for (int i = 0; i < TM; i++)
#pragma unroll
                for (int j = 0; j < TN; j++) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < TM; i++)
#pragma unroll
        for (int j = 0; j < TN; j++) y[size_t(m0 + ty * TM + i) * OUT + n0 + tx * TN + j] = acc[i][j];
}

void nf4_matmul2(float* y, const float* x, const uint8_t* codes, const float* absmax) {
    nf4_matmul_kernel2<<<dim3(OUT / BN, N / BM), 256>>>(y, x, codes, absmax);
}

// ---- driver -----------------------------------------------------------------------------------------
int main(int argc, char** argv) {
    static_assert(N % BM == 0 && OUT % BN == 0 && IN % BK == 0, "shapes must be whole tiles");
    const int version = argc > 1 ? std::atoi(argv[1]) : 0;
    const auto x = random_floats(size_t(N) * IN, 1);
    const auto w = random_floats(size_t(OUT) * IN, 2, 0.05f);
    std::vector<uint8_t> codes;
    std::vector<float> absmax;
    nf4_quantize(codes, absmax, w);

    // Sampled reference: 4096 random outputs in double over the dequantised W.
    std::mt19937 rng(3);
    std::vector<std::pair<int, int>> samples(4096);
    std::vector<double> ref(samples.size());
    for (size_t s = 0; s < samples.size(); s++) {
        const int m = int(rng() % N), n = int(rng() % OUT);
        samples[s] = {m, n};
        double acc = 0;
        for (int k = 0; k < IN; k++)
            acc += double(x[size_t(m) * IN + k]) * nf4_value(codes, absmax, size_t(n) * IN + k);
        ref[s] = acc;
    }
    double ref_max = 0;
    for (double r : ref) ref_max = std::fmax(ref_max, std::fabs(r));

    cudaCheck(cudaMemcpyToSymbol(c_code, kCode, sizeof(kCode)));
    setup_lt();
    float* dx = to_device(x);
    uint8_t* dcodes = to_device(codes);
    float* dabsmax = to_device(absmax);
    float* dy;
    cudaCheck(cudaMalloc(&dy, size_t(N) * OUT * 4));

    using Fn = void (*)(float*, const float*, const uint8_t*, const float*);
    const Fn versions[] = {nf4_matmul1, nf4_matmul2};
    const float tols[] = {2e-2f, 1e-4f};  // bf16 operands vs f32
    for (int ver = 1; ver <= 2; ver++) {
        if (version && version != ver) continue;
        std::printf("version %d\n", ver);
        cudaCheck(cudaMemset(dy, 0, size_t(N) * OUT * 4));
        versions[ver - 1](dy, dx, dcodes, dabsmax);
        cudaCheck(cudaDeviceSynchronize());
        const std::vector<float> y = to_host(dy, size_t(N) * OUT);
        double worst = 0;
        for (size_t s = 0; s < samples.size(); s++)
            worst = std::fmax(worst, std::fabs(y[size_t(samples[s].first) * OUT + samples[s].second] - ref[s]));
        std::printf("  y (sampled) max |err| %.3g (tol %.3g x %.3g)%s\n", worst, tols[ver - 1], ref_max,
                    worst <= tols[ver - 1] * ref_max ? "  ok" : "  MISMATCH");
        if (!(worst <= tols[ver - 1] * ref_max)) return EXIT_FAILURE;
        const float ms = benchmark_kernel(20, versions[ver - 1], dy, dx, dcodes, dabsmax);
        std::printf("  %.3f ms, %.2f TFLOP/s\n", ms, 2.0 * N * IN * OUT / (ms * 1e-3) * 1e-12);
    }
    return 0;
}
