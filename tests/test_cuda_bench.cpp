// CUDA benchmarks (not tests: every case is DISABLED_, so ctest and CI never run them).
// scripts/gpu-check.sh runs them on a GPU machine with
//   test_cuda_bench --gtest_also_run_disabled_tests --gtest_filter='CudaBench.*'
// and prints the "BENCH|name|value|unit|note" lines as its closing table.
//
// Shapes: attention at B=1, T=2048, NH=32, NKV=8, HD=128, causal (Llama-3-8B's attention); matmul
// 4096 x 4096 x 4096 (tokens x in x out) with f32, bf16 and NF4 weights; lm_head + cross-entropy
// at 4096 tokens, C=4096, V=128256; AdamW over 100M parameters. Each number is the median of
// `reps` timed runs after a warm-up run, wall-clock around cuda::synchronize().
// FLOP counts: attention forward 4 * B * NH * HD * T(T+1)/2 (the causal half of QK^T and PV),
// backward 2.5x that (dV, dP, dQ, dK and the recomputed S: FlashAttention's convention; our
// backward recomputes S and dP twice, so it does more work than it is credited for). Attention
// is timed three times: bf16 q/k/v/out under BF16 compute on the mma.sync kernels (the default)
// and on the WMMA kernels, and f32 on the f32 CUDA-core kernels; the bf16 numbers are what to hold
// against FlashAttention-2/3.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/kernels.h"
#include "core/dtype.h"
#include "quant/quant.h"
#include "testing.h"

using namespace tuner;
using tuner::testing::random_floats;

namespace {

// Median seconds of fn over reps runs (after one warm-up run).
double time_median(const std::function<void()>& fn, int reps) {
    fn();
    cuda::synchronize();
    std::vector<double> t;
    for (int i = 0; i < reps; i++) {
        const auto t0 = std::chrono::steady_clock::now();
        fn();
        cuda::synchronize();
        t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

void report(const std::string& name, double value, const char* unit, const std::string& note) {
    std::printf("BENCH|%s|%.2f|%s|%s\n", name.c_str(), value, unit, note.c_str());
    std::fflush(stdout);
}

// Fills n floats of device memory with a repeating random pattern in [-scale, scale).
void fill_random(float* d, size_t n, uint64_t seed, float scale = 1.0f) {
    const size_t chunk = std::min<size_t>(n, size_t(1) << 22);
    const std::vector<float> h = random_floats(chunk, seed, scale);
    for (size_t off = 0; off < n; off += chunk)
        cuda::copy_to_device(d + off, h.data(), std::min(chunk, n - off) * sizeof(float));
}

struct ComputeScope {
    cuda::Config saved = cuda::config();
    explicit ComputeScope(cuda::MatmulCompute c) {
        cuda::Config cfg = saved;
        cfg.compute = c;
        cuda::set_config(cfg);
    }
    ~ComputeScope() { cuda::set_config(saved); }
};

// Fills n bf16 values of device memory (bf16 activations, as training stores q/k/v/out).
void fill_random_bf16(uint16_t* d, size_t n, uint64_t seed) {
    const size_t chunk = std::min<size_t>(n, size_t(1) << 22);
    const std::vector<float> h = random_floats(chunk, seed);
    std::vector<uint16_t> b(chunk);
    convert_from_f32(b.data(), DType::BF16, h.data(), chunk);
    for (size_t off = 0; off < n; off += chunk)
        cuda::copy_to_device(d + off, b.data(), std::min(chunk, n - off) * sizeof(uint16_t));
}

// Three cases side by side: bf16 q/k/v/out (what training stores under cuda_matmul: bf16) on the
// mma.sync kernels (the default) and on the WMMA kernels, and f32 on the f32 CUDA-core kernels.
TEST(CudaBench, DISABLED_Attention) {
    TUNER_REQUIRE_CUDA();
    const AttnShape s{.B = 1, .T = 2048, .NH = 32, .NKV = 8, .HD = 128};
    const size_t nq = size_t(s.B) * s.T * s.NH * s.HD, nkv = size_t(s.B) * s.T * s.NKV * s.HD;
    const size_t nl = size_t(s.B) * s.NH * s.T;
    cuda::DeviceArena a("bench", (4 * nq + 4 * nkv + nl) * 4 + (2 * nq + 2 * nkv) * 2 + (size_t(16) << 20));
    float *q = a.alloc_f32(nq, "q"), *k = a.alloc_f32(nkv, "k"), *v = a.alloc_f32(nkv, "v");
    float *out = a.alloc_f32(nq, "out"), *dout = a.alloc_f32(nq, "dout"), *dq = a.alloc_f32(nq, "dq");
    float *dk = a.alloc_f32(nkv, "dk"), *dv = a.alloc_f32(nkv, "dv");
    float* lse = a.alloc_f32(nl, "lse");
    auto bf16_buf = [&](size_t n, const char* name) { return static_cast<uint16_t*>(a.alloc(n * 2, name)); };
    uint16_t *q16 = bf16_buf(nq, "q16"), *k16 = bf16_buf(nkv, "k16"), *v16 = bf16_buf(nkv, "v16");
    uint16_t* out16 = bf16_buf(nq, "out16");
    fill_random(q, nq, 1), fill_random(k, nkv, 2), fill_random(v, nkv, 3), fill_random(dout, nq, 4);
    fill_random_bf16(q16, nq, 1), fill_random_bf16(k16, nkv, 2), fill_random_bf16(v16, nkv, 3);
    cuda::reserve_workspace(cuda::attention_workspace_bytes(s));  // the mma default: the largest
    const double fwd_flops = 4.0 * s.B * s.NH * s.HD * (double(s.T) * (s.T + 1) / 2);
    struct Case {
        const char* tag;
        cuda::MatmulCompute compute;
        cuda::AttentionKernels kernels;
        bool bf16;
        const char* what;
    };
    const Case cases[] = {
        {"bf16 mma", cuda::MatmulCompute::BF16, cuda::AttentionKernels::MMA, true, "bf16 q/k/v/out, mma.sync kernels"},
        {"bf16 wmma", cuda::MatmulCompute::BF16, cuda::AttentionKernels::WMMA, true, "bf16 q/k/v/out, WMMA kernels"},
        {"f32", cuda::MatmulCompute::F32, cuda::AttentionKernels::MMA, false, "f32 q/k/v/out, f32 CUDA cores"},
    };
    for (const Case& c : cases) {
        ComputeScope scope(c.compute);
        cuda::Config cfg = cuda::config();
        cfg.attention = c.kernels;
        cuda::set_config(cfg);
        const ActIn qi = c.bf16 ? ActIn(q16, DType::BF16) : ActIn(q), ki = c.bf16 ? ActIn(k16, DType::BF16) : ActIn(k),
                    vi = c.bf16 ? ActIn(v16, DType::BF16) : ActIn(v);
        const ActOut oo = c.bf16 ? ActOut(out16, DType::BF16) : ActOut(out);
        const double tf = time_median([&] { cuda::attention_forward(oo, lse, qi, ki, vi, nullptr, s); }, 10);
        const double tb =
            time_median([&] { cuda::attention_backward(dq, dk, dv, dout, qi, ki, vi, oo, lse, nullptr, s); }, 10);
        const std::string shape = std::string("B=1 T=2048 NH=32 NKV=8 HD=128 causal, ") + c.what;
        report(std::string("attention forward ") + c.tag, fwd_flops / tf * 1e-12, "TFLOP/s",
               shape + ", " + std::to_string(tf * 1e3) + " ms");
        report(std::string("attention backward ") + c.tag, 2.5 * fwd_flops / tb * 1e-12, "TFLOP/s",
               shape + ", " + std::to_string(tb * 1e3) + " ms");
    }
}

void bench_matmul(const char* name, DType dtype, cuda::MatmulCompute compute) {
    ComputeScope scope(compute);
    const int64_t N = 4096, in = 4096, out = 4096;
    std::vector<uint8_t> wbytes;
    {
        const std::vector<float> w = random_floats(size_t(out * in), 7, 0.05f);
        if (dtype == DType::F32) {
            wbytes.resize(w.size() * 4);
            std::memcpy(wbytes.data(), w.data(), wbytes.size());
        } else if (dtype == DType::BF16) {
            wbytes.resize(w.size() * 2);
            convert_from_f32(wbytes.data(), dtype, w.data(), w.size());
        } else {
            const QuantOptions opt{.nf4_double_quant = true};
            wbytes.resize(dtype_nbytes(dtype, out * in, opt));
            quantize_rows(wbytes.data(), dtype, w.data(), out, in, opt);
        }
    }
    const WeightView wh{wbytes.data(), dtype, out, in};
    cuda::DeviceArena a("bench", wbytes.size() + size_t(N * (in + out)) * 4 + (size_t(8) << 20));
    WeightView wd = wh;
    wd.data = a.alloc(wbytes.size(), "w");
    cuda::copy_to_device(const_cast<void*>(wd.data), wbytes.data(), wbytes.size());
    float *x = a.alloc_f32(size_t(N * in), "x"), *y = a.alloc_f32(size_t(N * out), "y");
    fill_random(x, size_t(N * in), 8);
    cuda::reserve_workspace(cuda::matmul_workspace_bytes(N, wd));
    const double t = time_median([&] { cuda::matmul_forward(y, x, wd, nullptr, N, false); }, 20);
    report(name, 2.0 * N * in * out / t * 1e-12, "TFLOP/s",
           std::string("4096x4096x4096 forward, ") + std::to_string(t * 1e3) + " ms");
}

TEST(CudaBench, DISABLED_Matmul) {
    TUNER_REQUIRE_CUDA();
    bench_matmul("matmul f32 weight, f32 compute", DType::F32, cuda::MatmulCompute::F32);
    bench_matmul("matmul f32 weight, tf32 compute", DType::F32, cuda::MatmulCompute::TF32);
    bench_matmul("matmul bf16 weight, bf16 compute", DType::BF16, cuda::MatmulCompute::BF16);
    bench_matmul("matmul NF4 weight, bf16 compute", DType::NF4, cuda::MatmulCompute::BF16);
    bench_matmul("matmul Q8_0 weight, bf16 compute", DType::Q8_0, cuda::MatmulCompute::BF16);
}

TEST(CudaBench, DISABLED_CrossEntropy) {
    TUNER_REQUIRE_CUDA();
    ComputeScope scope(cuda::MatmulCompute::BF16);
    const int64_t N = 4096, C = 4096, V = 128256;
    const size_t head_bytes = size_t(V * C) * 2;  // a frozen bf16 head (LoRA / QLoRA)
    cuda::DeviceArena a("bench", head_bytes + size_t(N * C) * 8 + size_t(N) * 12 + (size_t(8) << 20));
    void* head = a.alloc(head_bytes, "head");
    {
        const std::vector<float> w = random_floats(size_t(1) << 22, 9, 0.02f);
        std::vector<uint16_t> hb(w.size());
        convert_from_f32(hb.data(), DType::BF16, w.data(), w.size());
        for (size_t off = 0; off < size_t(V * C); off += hb.size())
            cuda::copy_to_device(static_cast<uint16_t*>(head) + off, hb.data(),
                                 std::min(hb.size(), size_t(V * C) - off) * 2);
    }
    float *x = a.alloc_f32(size_t(N * C), "x"), *dx = a.alloc_f32(size_t(N * C), "dx");
    float* losses = a.alloc_f32(size_t(N), "losses");
    int32_t* targets = a.alloc_i32(size_t(N), "targets");
    fill_random(x, size_t(N * C), 10);
    std::vector<int32_t> th(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; i++) th[size_t(i)] = int32_t((i * 7919) % V);
    cuda::copy_to_device(targets, th.data(), th.size() * 4);
    const WeightView hv{head, DType::BF16, V, C};
    cuda::reserve_workspace(cuda::cross_entropy_workspace_bytes(N, hv));
    const double t = time_median(
        [&] { cuda::lm_head_cross_entropy(losses, nullptr, dx, nullptr, x, hv, targets, N, 1.0f / N); }, 5);
    report("lm_head + cross-entropy (fwd+dx)", 4.0 * N * C * V / t * 1e-12, "TFLOP/s",
           "N=4096 C=4096 V=128256 bf16 head, " + std::to_string(t * 1e3) + " ms");
}

TEST(CudaBench, DISABLED_AdamW) {
    TUNER_REQUIRE_CUDA();
    const int64_t n = 100'000'000;
    cuda::DeviceArena a("bench", size_t(n) * 16 + (size_t(4) << 20));
    float *p = a.alloc_f32(size_t(n), "p"), *g = a.alloc_f32(size_t(n), "g");
    float *m = a.alloc_f32(size_t(n), "m"), *v = a.alloc_f32(size_t(n), "v");
    a.zero();
    const cuda::AdamWScalars s = cuda::adamw_scalars(1e-4, 0.9, 0.999, 1e-8, 0.01, 10);
    const double t = time_median([&] { cuda::adamw_step(p, g, m, v, n, s); }, 10);
    report("adamw step", 28.0 * n / t * 1e-9, "GB/s", "100M params, " + std::to_string(t * 1e3) + " ms");
}

TEST(CudaBench, DISABLED_RMSNorm) {
    TUNER_REQUIRE_CUDA();
    const int64_t N = 8192, C = 4096;
    cuda::DeviceArena a("bench", size_t(N * C) * 12 + size_t(C + N) * 8 + (size_t(4) << 20));
    float *x = a.alloc_f32(size_t(N * C), "x"), *out = a.alloc_f32(size_t(N * C), "out");
    float *w = a.alloc_f32(size_t(C), "w"), *rstd = a.alloc_f32(size_t(N), "rstd");
    fill_random(x, size_t(N * C), 11), fill_random(w, size_t(C), 12);
    const double t = time_median([&] { cuda::rmsnorm_forward(out, rstd, x, w, N, C, 1e-5f); }, 20);
    report("rmsnorm forward", 8.0 * N * C / t * 1e-9, "GB/s", "N=8192 C=4096, " + std::to_string(t * 1e3) + " ms");
}

}  // namespace
