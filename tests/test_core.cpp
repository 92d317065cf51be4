// Core: dtype conversions (round to nearest even, checked against the CPU's own F16C/AVX512-BF16
// conversion instructions where present), tensors, arenas and the memory plan.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "core/arena.h"
#include "core/dtype.h"
#include "core/random.h"
#include "core/tensor.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

using namespace tuner;

static float bits_to_float(uint32_t b) {
    float f;
    std::memcpy(&f, &b, 4);
    return f;
}

TEST(DType, Bf16RoundsToNearestEven) {
    EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
    // 1 + 2^-8 is exactly half-way between bf16 1.0 (even) and 1.0078125 (odd): ties to even.
    EXPECT_EQ(f32_to_bf16(bits_to_float(0x3f808000u)), 0x3f80);
    // 1.0078125 + 2^-8 is half-way between two bf16 values, the upper one even: rounds up.
    EXPECT_EQ(f32_to_bf16(bits_to_float(0x3f818000u)), 0x3f82);
    EXPECT_EQ(f32_to_bf16(bits_to_float(0x3f808001u)), 0x3f81);  // just above half: up
    EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::infinity()), 0x7f80);
    EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
    // Largest finite float rounds to inf in bf16 (as torch does).
    EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7f80);
}

TEST(DType, F16RoundTripsEveryValue) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = f16_to_f32(uint16_t(h));
        if (std::isnan(f)) {
            EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
            continue;
        }
        ASSERT_EQ(f32_to_f16(f), h) << "f16 bits " << h << " -> " << f;
    }
}

TEST(DType, F16MatchesHardwareConversion) {
#if defined(__F16C__)
    std::mt19937 rng(1);
    for (int i = 0; i < 2000000; i++) {
        // random bit patterns concentrated around f16's range (exponents 100..150), plus any bits
        uint32_t bits = rng();
        if (i % 2) bits = (bits & 0x807fffffu) | (uint32_t(100 + rng() % 50) << 23);
        float f = bits_to_float(bits);
        if (std::isnan(f)) continue;
        uint16_t hw = uint16_t(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
        ASSERT_EQ(f32_to_f16(f), hw) << "value " << f << " bits " << std::hex << bits;
        float back = _cvtsh_ss(hw);
        float ours = f16_to_f32(hw);
        ASSERT_EQ(std::memcmp(&back, &ours, 4), 0) << "f16 " << hw;
    }
#else
    GTEST_SKIP() << "built without F16C";
#endif
}

TEST(DType, BulkConversionsMatchScalar) {
    std::vector<float> src(1037);
    std::mt19937 rng(2);
    std::normal_distribution<float> d(0, 3);
    for (auto& x : src) x = d(rng);
    for (DType t : {DType::BF16, DType::F16}) {
        std::vector<uint16_t> low(src.size());
        convert_from_f32(low.data(), t, src.data(), src.size());
        std::vector<float> back(src.size());
        convert_to_f32(back.data(), low.data(), t, src.size());
        for (size_t i = 0; i < src.size(); i++) {
            uint16_t s = t == DType::BF16 ? f32_to_bf16(src[i]) : f32_to_f16(src[i]);
            ASSERT_EQ(low[i], s);
            ASSERT_EQ(back[i], t == DType::BF16 ? bf16_to_f32(s) : f16_to_f32(s));
        }
    }
}

TEST(DType, Names) {
    DType t;
    EXPECT_TRUE(dtype_from_name("BF16", &t));
    EXPECT_EQ(t, DType::BF16);
    EXPECT_FALSE(dtype_from_name("bf16", &t));  // safetensors names are upper case
    EXPECT_TRUE(dtype_from_user_name("bfloat16", &t));
    EXPECT_EQ(t, DType::BF16);
    EXPECT_FALSE(dtype_from_user_name("int4", &t));
}

TEST(Tensor, ViewStridesAndShape) {
    float buf[24];
    Tensor t = Tensor::view(buf, DType::F32, {2, 3, 4});
    EXPECT_EQ(t.numel(), 24);
    EXPECT_EQ(t.stride[0], 12);
    EXPECT_EQ(t.stride[2], 1);
    EXPECT_TRUE(t.is_contiguous());
    EXPECT_EQ(t.shape_str(), "(2, 3, 4)");
    EXPECT_EQ(t.nbytes(), 96u);
}

TEST(Arena, PlanMatchesAllocations) {
    MemoryPlan plan;
    plan.add("weights", "a", 100);
    plan.add("weights", "b", 64, 3);
    plan.add("activations", "x", 1);
    EXPECT_EQ(plan.role_bytes("weights"), 128u + 3 * 64u);
    EXPECT_EQ(plan.role_bytes("activations"), 64u);
    Arena arena("weights", plan.role_bytes("weights"));
    void* a = arena.alloc(100);
    void* b = arena.alloc(64 * 3);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % kArenaAlign, 0u);
    EXPECT_EQ(static_cast<uint8_t*>(b) - static_cast<uint8_t*>(a), 128);
    EXPECT_EQ(arena.used(), arena.capacity());
    EXPECT_DEATH(arena.alloc(1), "memory plan");
}

TEST(Random, DeterministicAndNormal) {
    std::vector<float> a(100001), b(100001);
    fill_normal(a.data(), a.size(), 7, stream_id("x"), 0.0f, 2.0f);
    fill_normal(b.data(), b.size(), 7, stream_id("x"), 0.0f, 2.0f);
    EXPECT_EQ(a, b);
    double mean = 0, var = 0;
    for (float x : a) mean += x;
    mean /= double(a.size());
    for (float x : a) var += (x - mean) * (x - mean);
    var /= double(a.size());
    EXPECT_NEAR(mean, 0.0, 0.03);
    EXPECT_NEAR(std::sqrt(var), 2.0, 0.03);
    fill_normal(b.data(), b.size(), 8, stream_id("x"), 0.0f, 2.0f);
    EXPECT_NE(a, b);
}
