// Shared by the kernel lab's standalone files (llm.c dev/cuda style): error checks, random
// inputs, a validator that compares against the CPU reference, and a timer.
// Nothing here depends on the rest of tuner.cpp: each lab file builds on its own with nvcc.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

// ---- checks -------------------------------------------------------------------------------------
inline void cuda_check(cudaError_t err, const char* call, const char* file, int line) {
    if (err != cudaSuccess) {
        std::fprintf(stderr, "[cuda] %s:%d: %s: %s\n", file, line, call, cudaGetErrorString(err));
        std::exit(EXIT_FAILURE);
    }
}
#define cudaCheck(call) cuda_check((call), #call, __FILE__, __LINE__)

inline int ceil_div(long long a, long long b) { return int((a + b - 1) / b); }

// ---- inputs -------------------------------------------------------------------------------------
inline std::vector<float> random_floats(size_t n, unsigned seed, float scale = 1.0f) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-scale, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(rng);
    return v;
}

template <typename T>
T* to_device(const std::vector<T>& h) {
    T* d = nullptr;
    cudaCheck(cudaMalloc(&d, h.size() * sizeof(T)));
    cudaCheck(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}

template <typename T>
std::vector<T> to_host(const T* d, size_t n) {
    std::vector<T> h(n);
    cudaCheck(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
}

// ---- validation -----------------------------------------------------------------------------------
// max |gpu - cpu| <= tol * max |cpu|; prints the first mismatches; exits on failure (like llm.c).
inline void validate_result(const float* d_result, const std::vector<float>& ref, const char* name, float tol) {
    const std::vector<float> got = to_host(d_result, ref.size());
    double scale = 0.0;
    for (float r : ref) scale = std::fmax(scale, std::fabs(r));
    int bad = 0;
    double worst = 0.0;
    for (size_t i = 0; i < ref.size(); i++) {
        const double err = std::fabs(double(got[i]) - double(ref[i]));
        worst = std::fmax(worst, err);
        if (!(err <= tol * scale)) {
            if (bad < 5) std::printf("  %s[%zu]: gpu %f cpu %f\n", name, i, got[i], ref[i]);
            bad++;
        }
    }
    std::printf("  %-8s max |err| %.3g (tol %.3g x %.3g)%s\n", name, worst, tol, scale, bad ? "  MISMATCH" : "  ok");
    if (bad) {
        std::printf("%s: %d of %zu elements out of tolerance\n", name, bad, ref.size());
        std::exit(EXIT_FAILURE);
    }
}

// ---- timing ---------------------------------------------------------------------------------------
// Mean milliseconds of `repeats` calls of fn(args...), timed with CUDA events after one warm-up.
template <class Kernel, class... Args>
float benchmark_kernel(int repeats, Kernel fn, Args&&... args) {
    cudaEvent_t start, stop;
    cudaCheck(cudaEventCreate(&start));
    cudaCheck(cudaEventCreate(&stop));
    fn(args...);
    cudaCheck(cudaGetLastError());
    cudaCheck(cudaEventRecord(start));
    for (int i = 0; i < repeats; i++) fn(args...);
    cudaCheck(cudaEventRecord(stop));
    cudaCheck(cudaEventSynchronize(stop));
    cudaCheck(cudaGetLastError());
    float ms = 0.0f;
    cudaCheck(cudaEventElapsedTime(&ms, start, stop));
    cudaCheck(cudaEventDestroy(start));
    cudaCheck(cudaEventDestroy(stop));
    return ms / float(repeats);
}

// ---- device helpers ---------------------------------------------------------------------------------
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
