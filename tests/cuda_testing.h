// Helpers shared by the CUDA op tests (test_cuda_ops.cpp, test_cuda_attention_mma.cpp): device
// buffers for one test, bf16 host copies, and packed-segment layouts. Header-only; plain C++ (the
// CUDA runtime API of backend/cuda/cuda_backend.h), so the files build against real CUDA and the
// emulator alike.
//
//   Dev dev;                                   // after TUNER_REQUIRE_CUDA()
//   float* xd = dev.up(x);  float* yd = dev.zeros<float>(n);
//   std::vector<float> y = Dev::down(yd, n);
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "core/dtype.h"
#include "testing.h"

namespace tuner::testing {

// One device arena per test (512 MiB: more than any op test uses), carved into named buffers.
struct Dev {
    cuda::DeviceArena arena{"test", size_t(512) << 20};
    int n = 0;
    template <typename T>
    T* up(const std::vector<T>& h) {
        T* d = static_cast<T*>(arena.alloc(h.size() * sizeof(T), "buf" + std::to_string(n++)));
        cuda::copy_to_device(d, h.data(), h.size() * sizeof(T));
        return d;
    }
    template <typename T>
    T* zeros(size_t count) {
        T* d = static_cast<T*>(arena.alloc(count * sizeof(T), "buf" + std::to_string(n++)));
        cuda::memset_device(d, 0, count * sizeof(T));
        return d;
    }
    template <typename T>
    static std::vector<T> down(const T* d, size_t count) {
        std::vector<T> h(count);
        cuda::copy_to_host(h.data(), d, count * sizeof(T));
        return h;
    }
};

using Bf16 = std::vector<uint16_t>;

inline Bf16 to_bf16(const std::vector<float>& x) {
    Bf16 b(x.size());
    convert_from_f32(b.data(), DType::BF16, x.data(), x.size());
    return b;
}
inline std::vector<float> from_bf16(const Bf16& b) {
    std::vector<float> x(b.size());
    convert_to_f32(x.data(), b.data(), DType::BF16, b.size());
    return x;
}

// max |got - want| <= tol * max(max |want|, min_scale) (tol = 0: bit-exact); a failure names the
// worst element. min_scale: the size of the terms a tensor sums, for tensors that can be exactly
// 0. Returns the worst |got - want| / scale (for tests that print it).
inline double expect_near(const std::vector<float>& got, const std::vector<float>& want, double tol,
                          const std::string& what, double min_scale = 0.0) {
    EXPECT_EQ(got.size(), want.size()) << what;
    if (got.size() != want.size() || got.empty()) return 0.0;
    double scale = min_scale;
    for (float w : want) scale = std::max(scale, double(std::fabs(w)));
    size_t worst = 0, bad = 0;
    double worst_err = -1.0;
    for (size_t i = 0; i < got.size(); i++) {
        const double err = std::fabs(double(got[i]) - double(want[i]));
        const bool ok = tol == 0.0 ? std::memcmp(&got[i], &want[i], 4) == 0 : err <= tol * scale;
        if (!ok) bad++;
        if (!(err <= worst_err)) worst_err = err, worst = i;
    }
    EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << got.size() << " elements out of tolerance; worst [" << worst
                       << "] gpu " << got[worst] << " cpu " << want[worst] << " (|err| " << worst_err << ", tol "
                       << tol << " x max|cpu| " << scale << ")";
    return scale > 0 ? worst_err / scale : worst_err;
}

// Segments of random lengths 1..max_len in each batch row: seg_start[b*T + t] = start of t's segment.
inline std::vector<int32_t> random_segments(int B, int T, uint64_t seed, int max_len) {
    std::vector<int32_t> seg(size_t(B) * T);
    Rng rng(seed);
    for (int b = 0; b < B; b++) {
        int start = 0;
        while (start < T) {
            const int len = 1 + rng.below(max_len);
            for (int t = start; t < std::min(T, start + len); t++) seg[size_t(b) * T + t] = start;
            start += len;
        }
    }
    return seg;
}

}  // namespace tuner::testing
