// Block-quantised frozen weights (quant/): NF4 (bitsandbytes) and the GGUF block types.
//
//  * Known values: hand-written blocks whose values are computed here from the format's
//    formula (not by calling the dequantiser), with numbers chosen so every product is exact.
//  * Quantise -> dequantise error within each format's bound (stated in the headers).
//  * The AVX-512 decoders equal the scalar ones bit for bit, on random bytes.
//  * Kernels (matmul forward / backward input, embedding, lm_head + cross-entropy) with a
//    quantised weight equal the f32 kernels on the dequantised weight. Both sides run f32 GEMMs
//    over the same values, differing only in how the GEMM is tiled, so the difference is
//    summation-order rounding: tolerance 1e-5 of the largest |output|.
//
// Speed (not part of the normal run):
//   ./test_quant --gtest_also_run_disabled_tests --gtest_filter='QuantPerf.*'   (bench/bench_quant.sh)

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "backend/kernels.h"
#include "core/dtype.h"
#include "core/threads.h"
#include "quant/ggml_blocks.h"
#include "quant/nf4.h"
#include "quant/quant.h"
#include "testing.h"

using namespace tuner;

namespace {

// Weight-like data: normal with a scale that changes every 64 values (so blocks differ), a few
// outliers, an all-zero stretch, and stretches of one sign (exercise the K-type mins).
std::vector<float> weights(size_t n, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_real_distribution<float> uni(0.0f, 1.0f);
    std::vector<float> v(n);
    float scale = 0.02f;
    for (size_t i = 0; i < n; i++) {
        if (i % 64 == 0) scale = 0.002f + 0.1f * uni(rng);
        v[i] = normal(rng) * scale;
        if (uni(rng) < 0.002f) v[i] *= 20.0f;  // outlier
    }
    if (n >= 1024) {
        std::fill(v.begin() + 256, v.begin() + 512, 0.0f);                   // a zero super-block
        for (size_t i = 512; i < 544; i++) v[i] = std::fabs(v[i]) + 0.01f;   // positive sub-block
        for (size_t i = 544; i < 576; i++) v[i] = -std::fabs(v[i]) - 0.01f;  // negative sub-block
    }
    return v;
}

std::vector<uint8_t> quantize(DType t, const std::vector<float>& w, int64_t rows, int64_t cols, bool dq = false) {
    const QuantOptions opt{dq};
    std::vector<uint8_t> buf(dtype_nbytes(t, rows * cols, opt));
    quantize_rows(buf.data(), t, w.data(), rows, cols, opt);
    return buf;
}

std::vector<float> dequantize_all(const WeightView& w) {
    std::vector<float> out(size_t(w.rows * w.cols));
    weight_rows_to_f32(out.data(), w, 0, w.rows);
    return out;
}

float max_abs(const std::vector<float>& v) {
    float m = 0.0f;
    for (float x : v) m = std::max(m, std::fabs(x));
    return m;
}

void expect_bits_equal(const std::vector<float>& a, const std::vector<float>& b, const char* what) {
    ASSERT_EQ(a.size(), b.size()) << what;
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < a.size(); i++)
        if (std::memcmp(&a[i], &b[i], 4) != 0 && bad++ == 0) first = i;
    EXPECT_EQ(bad, 0u) << what << ": first difference at " << first << ": " << a[first] << " vs " << b[first];
}

// |got - want| <= tol for all elements; reports the worst.
void expect_near_all(const std::vector<float>& got, const std::vector<float>& want, double tol, const char* what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    size_t bad = 0, worst = 0;
    double worst_err = -1.0;
    for (size_t i = 0; i < got.size(); i++) {
        const double err = std::fabs(double(got[i]) - double(want[i]));
        if (!(err <= tol)) bad++;
        if (!(err <= worst_err)) worst_err = err, worst = i;
    }
    EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << got.size() << " out of tolerance " << tol << "; worst ["
                       << worst << "] " << got[worst] << " vs " << want[worst];
}

const DType kGgufTypes[] = {DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q5_K, DType::Q6_K};

// bitsandbytes' NF4 code book, written out again here so the tests do not read it from the code.
const double kCode[16] = {-1.0,
                          -0.6961928009986877,
                          -0.5250730514526367,
                          -0.39491748809814453,
                          -0.28444138169288635,
                          -0.18477343022823334,
                          -0.09105003625154495,
                          0.0,
                          0.07958029955625534,
                          0.16093020141124725,
                          0.24611230194568634,
                          0.33791524171829224,
                          0.44070982933044434,
                          0.5626170039176941,
                          0.7229568362236023,
                          1.0};

// Half the largest gap between neighbouring NF4 codes (between -1 and -0.6961928; the code
// book is asymmetric, with 7 negative and 8 positive values): every value of a block is within
// this many absmax of its code.
const double kNF4HalfGap = (-0.6961928009986877 - -1.0) / 2;

// =============================================================================================
// NF4
// =============================================================================================

TEST(NF4, CodeBooks) {
    for (int i = 0; i < 16; i++) EXPECT_EQ(kNF4Code[i], float(kCode[i])) << i;
    for (int i = 1; i < 16; i++) EXPECT_LE((kCode[i] - kCode[i - 1]) / 2, kNF4HalfGap) << i;
    // bitsandbytes create_dynamic_map(): ascending, -0.99297 .. 1, zero in the middle, the
    // smallest magnitude 0.55e-6 (the midpoint of linspace(0.1, 1, 2) times 1e-6).
    EXPECT_EQ(kNF4DynamicCode[0], -0.992968738f);
    EXPECT_EQ(kNF4DynamicCode[126], -5.50000038e-07f);
    EXPECT_EQ(kNF4DynamicCode[127], 0.0f);
    EXPECT_EQ(kNF4DynamicCode[128], 5.50000038e-07f);
    EXPECT_EQ(kNF4DynamicCode[254], 0.992968738f);
    EXPECT_EQ(kNF4DynamicCode[255], 1.0f);
    for (int i = 1; i < 256; i++) EXPECT_LT(kNF4DynamicCode[i - 1], kNF4DynamicCode[i]) << i;
    for (int i = 0; i < 127; i++) EXPECT_EQ(kNF4DynamicCode[i], -kNF4DynamicCode[254 - i]) << i;
}

TEST(NF4, Sizes) {
    EXPECT_EQ(nf4_nbytes(128, false), 16u + 64 + 2 * 4);
    EXPECT_EQ(nf4_nbytes(128, true), 16u + 64 + 4 + 4 + 2);
    // 300 blocks -> two absmax2 values.
    EXPECT_EQ(nf4_nbytes(64 * 300, true), 16u + 32 * 300 + 4 + 2 * 4 + 300);
    EXPECT_EQ(dtype_nbytes(DType::NF4, 64 * 300, {.nf4_double_quant = true}), nf4_nbytes(64 * 300, true));
    EXPECT_EQ(dtype_block_elems(DType::NF4), 64);
}

TEST(NF4, KnownBlockAndPacking) {
    // Hand-built buffer: 2 blocks, absmax 2.5 and 0.75; byte i of a block holds elements 2i
    // (high nibble) and 2i+1 (low nibble).
    const int64_t n = 128;
    std::vector<uint8_t> buf(nf4_nbytes(n, false));
    const uint32_t header[4] = {0x0034464Eu, 0u, uint32_t(n), 0u};  // magic, flags, n (i64)
    std::memcpy(buf.data(), header, 16);
    for (int i = 0; i < 64; i++) buf[16 + i] = uint8_t((i * 37 + 11) & 0xff);
    const float absmax[2] = {2.5f, 0.75f};
    std::memcpy(buf.data() + 16 + 64, absmax, 8);
    std::vector<float> want(static_cast<size_t>(n));
    for (int e = 0; e < n; e++) {
        const uint8_t byte = uint8_t(((e / 2) * 37 + 11) & 0xff);
        const int q = e % 2 == 0 ? byte >> 4 : byte & 15;
        want[size_t(e)] = float(kCode[q]) * absmax[e / 64];
    }
    std::vector<float> got(static_cast<size_t>(n)), got_scalar(static_cast<size_t>(n));
    nf4_dequantize(got.data(), buf.data(), 0, n);
    nf4_dequantize_scalar(got_scalar.data(), buf.data(), 0, n);
    expect_bits_equal(got, want, "nf4 known block");
    expect_bits_equal(got_scalar, want, "nf4 known block (scalar)");

    // Quantising: absmax 1, x = [1, -1, 0, 0.5626170039176941, ...]: codes 15, 0 -> byte 0xF0;
    // 7, 13 -> 0x7D.
    std::vector<float> x(64, 0.0f);
    x[0] = 1.0f, x[1] = -1.0f, x[2] = 0.0f, x[3] = float(kCode[13]);
    std::vector<uint8_t> q(nf4_nbytes(64, false));
    nf4_quantize(q.data(), x.data(), 64, false);
    EXPECT_EQ(q[16], 0xF0);
    EXPECT_EQ(q[17], 0x7D);
    EXPECT_EQ(q[18], 0x77);  // zeros are code 7 (exactly 0)
    float a;
    std::memcpy(&a, q.data() + 16 + 32, 4);
    EXPECT_EQ(a, 1.0f);
}

TEST(NF4, DecisionThresholdsAreBitsandbytes) {
    // bitsandbytes dQuantizeNF4: code i+1 when x > threshold_i, else code i (ties go down).
    const float bnb[15] = {-0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f,
                           -0.33967943489551544f, -0.23460740596055984f, -0.13791173323988914f,
                           -0.045525018125772476f, 0.03979014977812767f, 0.1202552504837513f,
                           0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
                           0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f};
    std::vector<float> x(64, 0.0f);
    x[0] = 1.0f;  // absmax 1: x * (1 / absmax) == x
    for (int i = 0; i < 15; i++) {
        x[2 + 2 * i] = bnb[i];                             // exactly on the threshold: lower code
        x[3 + 2 * i] = std::nextafter(bnb[i], 2.0f);       // just above: upper code
    }
    std::vector<uint8_t> q(nf4_nbytes(64, false));
    nf4_quantize(q.data(), x.data(), 64, false);
    for (int i = 0; i < 15; i++) {
        const uint8_t byte = q[16 + 1 + i];  // elements 2 + 2i (high) and 3 + 2i (low)
        EXPECT_EQ(byte >> 4, i) << "threshold " << i;
        EXPECT_EQ(byte & 15, i + 1) << "threshold " << i;
    }
}

TEST(NF4, RoundTripNearestCode) {
    const int64_t n = 64 * 1000;
    const std::vector<float> x = weights(size_t(n), 1);
    std::vector<uint8_t> buf(nf4_nbytes(n, false));
    nf4_quantize(buf.data(), x.data(), n, false);
    std::vector<float> y(static_cast<size_t>(n));
    nf4_dequantize(y.data(), buf.data(), 0, n);
    size_t bad = 0;
    for (int64_t b = 0; b < n / 64; b++) {
        double amax = 0;
        for (int i = 0; i < 64; i++) amax = std::max(amax, std::fabs(double(x[size_t(b * 64 + i)])));
        float stored;
        std::memcpy(&stored, buf.data() + 16 + n / 2 + 4 * b, 4);
        EXPECT_EQ(double(stored), amax) << "block " << b;
        for (int i = 0; i < 64; i++) {
            const size_t e = size_t(b * 64 + i);
            const double err = std::fabs(double(y[e]) - x[e]);
            // The code book's bound (plus the f32 rounding of x / absmax and of code * absmax).
            if (!(err <= kNF4HalfGap * amax + 1e-6 * amax) && bad++ < 5)
                ADD_FAILURE() << "element " << e << ": " << x[e] << " -> " << y[e] << " absmax " << amax << " stored " << stored;
            // And it is the nearest code (to f32 rounding).
            const uint8_t byte = buf[16 + e / 2];
            const int q = e % 2 == 0 ? byte >> 4 : byte & 15;
            if (amax > 0)
                for (int k = 0; k < 16; k++)
                    if (std::fabs(x[e] / amax - kCode[q]) > std::fabs(x[e] / amax - kCode[k]) + 1e-6 && bad++ < 5)
                        ADD_FAILURE() << "element " << e << ": code " << q << " chosen, " << k << " is nearer";
        }
    }
    EXPECT_EQ(bad, 0u);
}

TEST(NF4, DoubleQuantisation) {
    const int64_t nb = 700;  // three second-level blocks of 256, the last one partial
    const int64_t n = 64 * nb;
    const std::vector<float> x = weights(size_t(n), 2);
    std::vector<uint8_t> plain(nf4_nbytes(n, false)), dq(nf4_nbytes(n, true));
    nf4_quantize(plain.data(), x.data(), n, false);
    nf4_quantize(dq.data(), x.data(), n, true);
    EXPECT_TRUE(nf4_double_quant(dq.data()));
    EXPECT_FALSE(nf4_double_quant(plain.data()));
    EXPECT_EQ(nf4_numel(dq.data()), n);
    // The codes do not depend on double quantisation (bitsandbytes compresses the absmax after).
    EXPECT_EQ(0, std::memcmp(plain.data() + 16, dq.data() + 16, size_t(n / 2)));

    std::vector<float> a(static_cast<size_t>(nb)), a2(static_cast<size_t>(nb));
    nf4_block_absmax(a.data(), plain.data(), 0, nb);
    nf4_block_absmax(a2.data(), dq.data(), 0, nb);
    double mean = 0;
    for (float v : a) mean += v;
    mean /= double(nb);
    float offset;
    std::memcpy(&offset, dq.data() + 16 + n / 2, 4);
    EXPECT_NEAR(offset, mean, 1e-6 * mean);
    // Bound: (a - offset) is coded to the nearest of the 256 dynamic codes times absmax2, the
    // largest |a - offset| of its 256-block: error <= half the largest code gap (also counting
    // the gap from -1 to the lowest code) times absmax2, plus f32 rounding.
    double half_gap = (kNF4DynamicCode[0] - -1.0);  // x = -1 can only go to code[0]
    for (int i = 1; i < 256; i++) half_gap = std::max(half_gap, (kNF4DynamicCode[i] - double(kNF4DynamicCode[i - 1])) / 2);
    EXPECT_NEAR(half_gap, 0.00703125, 1e-7);  // the top decade: 64 codes over [0.1, 1], and 1 - 0.99297
    for (int64_t b2 = 0; b2 * 256 < nb; b2++) {
        double amax2 = 0;
        for (int64_t b = b2 * 256; b < std::min(nb, b2 * 256 + 256); b++)
            amax2 = std::max(amax2, std::fabs(double(a[size_t(b)] - offset)));
        for (int64_t b = b2 * 256; b < std::min(nb, b2 * 256 + 256); b++)
            EXPECT_LE(std::fabs(double(a2[size_t(b)]) - a[size_t(b)]), half_gap * amax2 + 4e-7 * a[size_t(b)])
                << "block " << b;
    }
    // Elements: code choice with the true absmax, decoded with the double-quantised one.
    std::vector<float> y(static_cast<size_t>(n));
    nf4_dequantize(y.data(), dq.data(), 0, n);
    size_t bad = 0;
    for (int64_t e = 0; e < n; e++) {
        const double ab = a[size_t(e / 64)], ab2 = a2[size_t(e / 64)];
        if (!(std::fabs(double(y[size_t(e)]) - x[size_t(e)]) <= kNF4HalfGap * ab + std::fabs(ab2 - ab) + 1e-6 * ab))
            bad++;
    }
    EXPECT_EQ(bad, 0u);

    // The 8-bit coder on its own: code values times absmax2 come back exactly.
    std::vector<float> v = {0.5f * kNF4DynamicCode[3], 0.5f * kNF4DynamicCode[200], 0.5f, -0.5f * 0.992968738f, 0.0f};
    std::vector<uint8_t> q(v.size());
    float amax2;
    nf4_quantize_dynamic8(q.data(), &amax2, v.data(), int64_t(v.size()));
    EXPECT_EQ(amax2, 0.5f);
    EXPECT_EQ(q[0], 3);
    EXPECT_EQ(q[1], 200);
    EXPECT_EQ(q[2], 255);
    EXPECT_EQ(q[3], 0);
    EXPECT_EQ(q[4], 127);
}

TEST(NF4, RangesAndPiecewiseQuantisation) {
    const int64_t n = 64 * 40;
    const std::vector<float> x = weights(size_t(n), 3);
    for (bool dq : {false, true}) {
        std::vector<uint8_t> whole(nf4_nbytes(n, dq)), pieces(nf4_nbytes(n, dq), 0xAB);
        nf4_quantize(whole.data(), x.data(), n, dq);
        nf4_init(pieces.data(), n, dq);
        std::vector<float> absmax(size_t(n / 64));
        for (int64_t e0 = 0; e0 < n; e0 += 64 * 7) {
            const int64_t count = std::min<int64_t>(64 * 7, n - e0);
            nf4_quantize_range(pieces.data(), x.data() + e0, e0, count, absmax.data() + e0 / 64);
        }
        nf4_store_absmax(pieces.data(), absmax.data());
        EXPECT_EQ(whole, pieces) << "dq=" << dq;
        std::vector<float> all(static_cast<size_t>(n)), part(64 * 5);
        nf4_dequantize(all.data(), whole.data(), 0, n);
        nf4_dequantize(part.data(), whole.data(), 64 * 13, 64 * 5);
        EXPECT_EQ(0, std::memcmp(part.data(), all.data() + 64 * 13, part.size() * 4));
    }
}

TEST(NF4, Avx512MatchesScalar) {
    // Random code bytes and absmax values, plain and double-quantised.
    const int64_t n = 64 * 600;
    std::mt19937_64 rng(4);
    for (bool dq : {false, true}) {
        std::vector<uint8_t> buf(nf4_nbytes(n, dq));
        nf4_quantize(buf.data(), weights(size_t(n), 5).data(), n, dq);
        for (size_t i = 16; i < 16 + size_t(n / 2); i++) buf[i] = uint8_t(rng());
        if (dq)
            for (size_t i = buf.size() - size_t(n / 64); i < buf.size(); i++) buf[i] = uint8_t(rng());
        std::vector<float> v(static_cast<size_t>(n)), s(static_cast<size_t>(n));
        nf4_dequantize(v.data(), buf.data(), 0, n);
        nf4_dequantize_scalar(s.data(), buf.data(), 0, n);
        expect_bits_equal(v, s, dq ? "nf4 dq avx512 vs scalar" : "nf4 avx512 vs scalar");
    }
}

// =============================================================================================
// GGUF blocks: hand-written blocks, values from the format's formula
// =============================================================================================

TEST(Gguf, SizesAndScalePacking) {
    EXPECT_EQ(dtype_nbytes(DType::Q8_0, 64), 68u);
    EXPECT_EQ(dtype_nbytes(DType::Q4_0, 64), 36u);
    EXPECT_EQ(dtype_nbytes(DType::Q4_K, 512), 288u);
    EXPECT_EQ(dtype_nbytes(DType::Q5_K, 512), 352u);
    EXPECT_EQ(dtype_nbytes(DType::Q6_K, 512), 420u);
    EXPECT_EQ(dtype_nbytes(DType::BF16, 10), 20u);
    EXPECT_EQ(dtype_row_bytes(DType::Q4_K, 1536), 6u * 144);
    EXPECT_EQ(dtype_block_elems(DType::Q6_K), 256);
    EXPECT_EQ(dtype_block_elems(DType::F32), 1);

    // The 12 bytes of 6-bit scales/mins, packed by hand (see the Q4_K test below).
    const uint8_t sc[8] = {1, 2, 3, 4, 17, 33, 50, 63}, m[8] = {0, 1, 5, 9, 20, 40, 63, 7};
    const uint8_t want[12] = {0x41, 0x82, 0xC3, 0xC4, 0x40, 0x81, 0xC5, 0x09, 0x41, 0x81, 0xF2, 0x7F};
    uint8_t packed[12];
    q4k_pack_scale_min(packed, sc, m);
    EXPECT_EQ(0, std::memcmp(packed, want, 12));
    for (int j = 0; j < 8; j++) {
        uint8_t s, mm;
        q4k_scale_min(j, want, &s, &mm);
        EXPECT_EQ(s, sc[j]) << j;
        EXPECT_EQ(mm, m[j]) << j;
    }
}

// Decodes `bytes` as one row of type t with both decoders and compares with `want` exactly.
void check_known(DType t, const std::vector<uint8_t>& bytes, const std::vector<float>& want) {
    ASSERT_EQ(bytes.size(), dtype_nbytes(t, int64_t(want.size())));
    const WeightView w{bytes.data(), t, 1, int64_t(want.size())};
    expect_bits_equal(dequantize_all(w), want, dtype_name(t));
    std::vector<float> s(want.size());
    ggml_dequantize_scalar(t, s.data(), bytes.data(), int64_t(want.size()) / ggml_block_elems(t));
    expect_bits_equal(s, want, "scalar");
}

TEST(Gguf, KnownQ8_0) {
    // d = f16 0x3800 = 0.5 (little-endian bytes 00 38), qs[e] = e - 16.
    std::vector<uint8_t> b = {0x00, 0x38};
    std::vector<float> want;
    for (int e = 0; e < 32; e++) {
        b.push_back(uint8_t(int8_t(e - 16)));
        want.push_back(float(e - 16) * 0.5f);
    }
    check_known(DType::Q8_0, b, want);
}

TEST(Gguf, KnownQ4_0) {
    // d = f16 0xC000 = -2; qs[j] = j | (15 - j) << 4: element j (< 16) = (j - 8) * -2,
    // element 16 + j = (15 - j - 8) * -2.
    std::vector<uint8_t> b = {0x00, 0xC0};
    for (int j = 0; j < 16; j++) b.push_back(uint8_t(j | ((15 - j) << 4)));
    std::vector<float> want(32);
    for (int j = 0; j < 16; j++) {
        want[size_t(j)] = float(j - 8) * -2.0f;  // (q - 8) * d in f32: 0 * -2 is -0
        want[size_t(16 + j)] = float(15 - j - 8) * -2.0f;
    }
    check_known(DType::Q4_0, b, want);
}

// Q4_K / Q5_K test block: d = 1 (f16 0x3C00), dmin = 0.5 (0x3800), the scales/mins of the
// packing test, qs[i] = (7 i + 3) mod 256; Q5_K adds qh[l] = (13 l + 5) mod 256.
// value = 1 * sc[j] * q - 0.5 * m[j] with j = e / 32: small integers and halves, exact in f32.
std::vector<float> known_k_values(bool five_bit) {
    const int sc[8] = {1, 2, 3, 4, 17, 33, 50, 63}, m[8] = {0, 1, 5, 9, 20, 40, 63, 7};
    std::vector<float> want(256);
    for (int e = 0; e < 256; e++) {
        const int c = e / 64, r = e % 64;
        const int byte = (7 * (32 * c + r % 32) + 3) % 256;
        int q = r < 32 ? byte & 15 : byte >> 4;
        if (five_bit) q += 16 * (((13 * (e % 32) + 5) % 256 >> (e / 32)) & 1);
        want[size_t(e)] = float(1.0 * sc[e / 32] * q - 0.5 * m[e / 32]);
    }
    return want;
}

TEST(Gguf, KnownQ4_K) {
    std::vector<uint8_t> b = {0x00, 0x3C, 0x00, 0x38, 0x41, 0x82, 0xC3, 0xC4, 0x40, 0x81, 0xC5, 0x09, 0x41, 0x81, 0xF2, 0x7F};
    for (int i = 0; i < 128; i++) b.push_back(uint8_t((7 * i + 3) % 256));
    check_known(DType::Q4_K, b, known_k_values(false));
}

TEST(Gguf, KnownQ5_K) {
    std::vector<uint8_t> b = {0x00, 0x3C, 0x00, 0x38, 0x41, 0x82, 0xC3, 0xC4, 0x40, 0x81, 0xC5, 0x09, 0x41, 0x81, 0xF2, 0x7F};
    for (int l = 0; l < 32; l++) b.push_back(uint8_t((13 * l + 5) % 256));  // qh
    for (int i = 0; i < 128; i++) b.push_back(uint8_t((7 * i + 3) % 256));  // qs
    check_known(DType::Q5_K, b, known_k_values(true));
}

TEST(Gguf, KnownQ6_K) {
    // ql[i] = (5 i + 1) mod 256, qh[i] = (11 i + 7) mod 256, scales[j] = j - 8 (int8, some
    // negative), d = 0.25 (f16 0x3400, the last two bytes). value = 0.25 * scales[e / 16] * (q - 32).
    std::vector<uint8_t> b;
    for (int i = 0; i < 128; i++) b.push_back(uint8_t((5 * i + 1) % 256));
    for (int i = 0; i < 64; i++) b.push_back(uint8_t((11 * i + 7) % 256));
    for (int j = 0; j < 16; j++) b.push_back(uint8_t(int8_t(j - 8)));
    b.push_back(0x00);
    b.push_back(0x34);
    std::vector<float> want(256);
    for (int e = 0; e < 256; e++) {
        const int h = e / 128, i = e % 128, p = i / 32, l = i % 32;
        const int ql = (5 * (64 * h + 32 * (p & 1) + l) + 1) % 256;
        const int qh = (11 * (32 * h + l) + 7) % 256;
        const int q = (p < 2 ? ql & 15 : ql >> 4) | (((qh >> (2 * p)) & 3) << 4);
        want[size_t(e)] = float(0.25 * (e / 16 - 8) * (q - 32));
    }
    check_known(DType::Q6_K, b, want);
}

// =============================================================================================
// GGUF blocks: quantise -> dequantise bounds, and AVX-512 == scalar
// =============================================================================================

TEST(Gguf, RoundTripBounds) {
    const int64_t rows = 6, cols = 1024;
    const std::vector<float> x = weights(size_t(rows * cols), 6);
    for (DType t : kGgufTypes) {
        SCOPED_TRACE(dtype_name(t));
        const std::vector<uint8_t> buf = quantize(t, x, rows, cols);
        const std::vector<float> y = dequantize_all({buf.data(), t, rows, cols});
        const int64_t be = ggml_block_elems(t);
        const size_t bb = ggml_block_bytes(t);
        double se = 0, sx = 0;
        size_t bad = 0;
        for (int64_t b = 0; b < rows * cols / be; b++) {
            const uint8_t* blk = buf.data() + size_t(b) * bb;
            const float* xb = x.data() + b * be;
            const float* yb = y.data() + b * be;
            double amax = 0;
            for (int64_t i = 0; i < be; i++) amax = std::max(amax, std::fabs(double(xb[i])));
            const double slop = 1e-6 * amax;
            auto f16 = [&](size_t off) {
                uint16_t h;
                std::memcpy(&h, blk + off, 2);
                return double(f16_to_f32(h));
            };
            for (int64_t i = 0; i < be; i++) {
                const double err = std::fabs(double(yb[i]) - xb[i]);
                se += err * err, sx += double(xb[i]) * xb[i];
                double bound = 0;
                if (t == DType::Q8_0) {
                    bound = 0.5 * f16(0);
                } else if (t == DType::Q4_0) {
                    bound = std::fabs(f16(0));  // 0.5 |d| except values of the other sign beyond 7.5 |d|
                    if (xb[i] * f16(0) <= 0 || std::fabs(xb[i]) <= 7.5 * std::fabs(f16(0))) bound *= 0.5;
                } else if (t == DType::Q4_K || t == DType::Q5_K) {
                    const int j = int(i / 32);
                    uint8_t sc, m;
                    q4k_scale_min(j, blk + 4, &sc, &m);
                    const double d1 = f16(0) * sc, levels = t == DType::Q4_K ? 15 : 31;
                    bound = 0.5 * d1;
                    double lo = 0, hi = -1e30;
                    for (int l = 0; l < 32; l++) lo = std::min(lo, double(xb[32 * j + l])), hi = std::max(hi, double(xb[32 * j + l]));
                    EXPECT_LE(d1, (hi - lo + f16(2)) / levels + f16(0) + slop) << "block " << b << " sub-block " << j;
                    EXPECT_GE(f16(2) * m, -lo - slop) << "block " << b << " sub-block " << j;
                } else {  // Q6_K
                    const int j = int(i / 16);
                    const double ds = f16(208) * int8_t(blk[192 + j]);
                    bound = 0.5 * ds;
                    double am = 0;
                    for (int l = 0; l < 16; l++) am = std::max(am, std::fabs(double(xb[16 * j + l])));
                    EXPECT_LE(ds, am / 31 + f16(208) + slop) << "block " << b << " sub-block " << j;
                }
                if (!(err <= bound + slop) && bad++ < 5)
                    ADD_FAILURE() << "block " << b << " element " << i << ": " << xb[i] << " -> " << yb[i] << " (bound "
                                  << bound << ")";
            }
        }
        EXPECT_EQ(bad, 0u);
        std::printf("  %s: relative RMS error %.4f\n", dtype_name(t), std::sqrt(se / sx));
    }
}

TEST(Gguf, Avx512MatchesScalar) {
    // Random bytes everywhere, with the f16 scale fields replaced by finite values.
    std::mt19937_64 rng(7);
    std::uniform_real_distribution<float> uni(-0.05f, 0.05f);
    for (DType t : kGgufTypes) {
        const int64_t nb = 97;
        const size_t bb = ggml_block_bytes(t);
        std::vector<uint8_t> buf(size_t(nb) * bb);
        for (auto& c : buf) c = uint8_t(rng());
        for (int64_t b = 0; b < nb; b++) {
            uint8_t* blk = buf.data() + size_t(b) * bb;
            std::vector<size_t> fields = t == DType::Q6_K ? std::vector<size_t>{208}
                                         : (t == DType::Q4_K || t == DType::Q5_K) ? std::vector<size_t>{0, 2}
                                                                                   : std::vector<size_t>{0};
            for (size_t off : fields) {
                const uint16_t h = f32_to_f16(uni(rng));
                std::memcpy(blk + off, &h, 2);
            }
        }
        std::vector<float> v(size_t(nb * ggml_block_elems(t))), s(v.size());
        ggml_dequantize(t, v.data(), buf.data(), nb);
        ggml_dequantize_scalar(t, s.data(), buf.data(), nb);
        expect_bits_equal(v, s, dtype_name(t));
    }
}

TEST(Quant, RowsAreIndependentBlocks) {
    // Row r of a GGUF weight is its own run of blocks; weight_rows_to_f32 of any row range equals
    // the same rows of the whole; F32/BF16/F16 go through the same entry point.
    const int64_t rows = 5, cols = 512;
    const std::vector<float> x = weights(size_t(rows * cols), 8);
    for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::NF4, DType::F32,
                    DType::BF16, DType::F16}) {
        SCOPED_TRACE(dtype_name(t));
        const std::vector<uint8_t> buf = quantize(t, x, rows, cols);
        const WeightView w{buf.data(), t, rows, cols};
        const std::vector<float> all = dequantize_all(w);
        std::vector<float> part(size_t(2 * cols));
        weight_rows_to_f32(part.data(), w, 2, 2);
        EXPECT_EQ(0, std::memcmp(part.data(), all.data() + 2 * cols, part.size() * 4));
        if (t != DType::NF4 && dtype_is_quantized(t)) {
            std::vector<uint8_t> one(dtype_row_bytes(t, cols));
            quantize_rows(one.data(), t, x.data() + 3 * cols, 1, cols);
            EXPECT_EQ(0, std::memcmp(one.data(), buf.data() + 3 * one.size(), one.size()));
        }
        if (!dtype_is_quantized(t)) {
            std::vector<float> conv(x.size());
            convert_to_f32(conv.data(), buf.data(), t, x.size());
            EXPECT_EQ(conv, all);
        }
    }
}

// =============================================================================================
// Kernels with quantised weights == f32 kernels on the dequantised weight
// =============================================================================================

struct QCase {
    DType t;
    bool dq;  // NF4 double quantisation
};
const QCase kAllTypes[] = {{DType::NF4, false}, {DType::NF4, true}, {DType::Q8_0, false}, {DType::Q4_0, false},
                           {DType::Q4_K, false}, {DType::Q5_K, false}, {DType::Q6_K, false}};

void check_matmul(const QCase& qc, int64_t N, int64_t in, int64_t out) {
    SCOPED_TRACE(::testing::Message() << dtype_name(qc.t) << (qc.dq ? "+dq" : "") << " N=" << N << " in=" << in
                                      << " out=" << out);
    const std::vector<float> wf = weights(size_t(out * in), 10);
    const std::vector<uint8_t> buf = quantize(qc.t, wf, out, in, qc.dq);
    const WeightView wq{buf.data(), qc.t, out, in};
    const std::vector<float> wd = dequantize_all(wq);
    const WeightView wref{wd.data(), DType::F32, out, in};
    const std::vector<float> x = tuner::testing::random_floats(size_t(N * in), 11);
    const std::vector<float> bias = tuner::testing::random_floats(size_t(out), 12);
    const std::vector<float> y0 = tuner::testing::random_floats(size_t(N * out), 13);

    for (bool acc : {false, true}) {
        std::vector<float> y = y0, yr = y0;
        cpu::matmul_forward(y.data(), x.data(), wq, bias.data(), N, acc);
        cpu::matmul_forward(yr.data(), x.data(), wref, bias.data(), N, acc);
        expect_near_all(y, yr, 1e-5 * max_abs(yr), acc ? "forward (accumulate)" : "forward");
    }
    const std::vector<float> dy = tuner::testing::random_floats(size_t(N * out), 14);
    const std::vector<float> dx0 = tuner::testing::random_floats(size_t(N * in), 15);
    for (bool acc : {false, true}) {
        std::vector<float> dx = dx0, dxr = dx0;
        cpu::matmul_backward_input(dx.data(), dy.data(), wq, N, acc);
        cpu::matmul_backward_input(dxr.data(), dy.data(), wref, N, acc);
        expect_near_all(dx, dxr, 1e-5 * max_abs(dxr), acc ? "backward_input (accumulate)" : "backward_input");
    }
}

// convert_weight streams a weight through a small f32 chunk; the result must equal converting the
// whole f32 weight at once (same bytes), for every target, from f32 and bf16 sources, with
// chunks that split the weight in several pieces (and NF4 blocks that straddle rows).
TEST(Quant, ConvertWeightInChunksEqualsWholeConversion) {
    const int64_t rows = 48, cols = 512;  // 48 x 512: K-type rows are 2 blocks
    std::vector<float> w = tuner::testing::random_floats(size_t(rows * cols), 7, 0.5f);
    std::vector<uint16_t> wb(w.size());
    convert_from_f32(wb.data(), DType::BF16, w.data(), w.size());
    std::vector<float> wb_f32(w.size());
    convert_to_f32(wb_f32.data(), wb.data(), DType::BF16, w.size());
    struct Case { DType t; bool dq; };
    for (Case c : {Case{DType::NF4, false}, Case{DType::NF4, true}, Case{DType::Q8_0, false}, Case{DType::Q4_0, false},
                   Case{DType::Q4_K, false}, Case{DType::Q5_K, false}, Case{DType::Q6_K, false},
                   Case{DType::BF16, false}, Case{DType::F16, false}, Case{DType::F32, false}}) {
        QuantOptions o;
        o.nf4_double_quant = c.dq;
        const size_t nb = dtype_nbytes(c.t, rows * cols, o);
        for (bool from_bf16 : {false, true}) {
            std::vector<uint8_t> whole(nb), chunked(nb, 0xAB);
            quantize_rows(whole.data(), c.t, from_bf16 ? wb_f32.data() : w.data(), rows, cols, o);
            WeightView src{from_bf16 ? static_cast<const void*>(wb.data()) : w.data(),
                           from_bf16 ? DType::BF16 : DType::F32, rows, cols};
            convert_weight(chunked.data(), c.t, src, o, /*chunk_bytes=*/5 * cols * sizeof(float) + 100);
            EXPECT_TRUE(whole == chunked) << dtype_name(c.t) << (c.dq ? " double-quant" : "")
                                          << (from_bf16 ? " from bf16" : " from f32");
        }
    }
    // And back: NF4 -> BF16 equals dequantising then rounding.
    QuantOptions o;
    o.nf4_double_quant = true;
    std::vector<uint8_t> q(dtype_nbytes(DType::NF4, rows * cols, o));
    quantize_rows(q.data(), DType::NF4, w.data(), rows, cols, o);
    std::vector<float> deq(w.size());
    weight_rows_to_f32(deq.data(), WeightView{q.data(), DType::NF4, rows, cols}, 0, rows);
    std::vector<uint16_t> expect(w.size()), got(w.size());
    convert_from_f32(expect.data(), DType::BF16, deq.data(), w.size());
    convert_weight(got.data(), DType::BF16, WeightView{q.data(), DType::NF4, rows, cols}, {}, 3 * cols * 4);
    EXPECT_TRUE(expect == got);
}

TEST(QuantKernels, Matmul) {
    for (const QCase& qc : kAllTypes) {
        check_matmul(qc, 1, 512, 40);   // N = 1 (decoding)
        check_matmul(qc, 9, 256, 33);
        // in = 4096 -> 256-row weight tiles: 600 rows are three tiles (256, 256, 88).
        check_matmul(qc, 7, 4096, 600);
    }
}

// NF4 quantises the flattened tensor, so rows need not be whole blocks (stories260K's down_proj
// is 64 x 172): row tiles then start and end inside a block.
TEST(QuantKernels, MatmulNF4RowsInsideBlocks) {
    for (bool dq : {false, true}) {
        const QCase qc{DType::NF4, dq};
        check_matmul(qc, 5, 172, 64);
        check_matmul(qc, 1, 100, 16);
        check_matmul(qc, 3, 4100, 496);  // 240-row tiles: 240, 240, 16, each ending mid-block
    }
    // One row at a time equals the same row of the whole dequantisation.
    const int64_t rows = 64, cols = 172;
    const std::vector<float> wf = weights(size_t(rows * cols), 3);
    const std::vector<uint8_t> buf = quantize(DType::NF4, wf, rows, cols, true);
    const WeightView wq{buf.data(), DType::NF4, rows, cols};
    const std::vector<float> all = dequantize_all(wq);
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; r++) {
        weight_rows_to_f32(row.data(), wq, r, 1);
        ASSERT_EQ(0, std::memcmp(row.data(), all.data() + r * cols, size_t(cols) * sizeof(float))) << "row " << r;
    }
}

TEST(QuantKernels, Embedding) {
    const int64_t V = 70, C = 512, N = 40;
    const std::vector<float> table = weights(size_t(V * C), 20);
    std::vector<int32_t> ids(static_cast<size_t>(N));
    for (int64_t n = 0; n < N; n++) ids[size_t(n)] = int32_t((n * 37 + 5) % V);
    ids[0] = 0, ids[1] = int32_t(V - 1), ids[2] = ids[3];
    for (const QCase& qc : kAllTypes) {
        SCOPED_TRACE(::testing::Message() << dtype_name(qc.t) << (qc.dq ? "+dq" : ""));
        const std::vector<uint8_t> buf = quantize(qc.t, table, V, C, qc.dq);
        const WeightView tq{buf.data(), qc.t, V, C};
        const std::vector<float> td = dequantize_all(tq);
        std::vector<float> out(size_t(N * C), 9.0f), ref(size_t(N * C), 7.0f);
        cpu::embedding_forward(out.data(), ids.data(), tq, N);
        cpu::embedding_forward(ref.data(), ids.data(), {td.data(), DType::F32, V, C}, N);
        expect_bits_equal(out, ref, "embedding");  // both are copies of the same decoded rows
    }
}

TEST(QuantKernels, LmHeadCrossEntropy) {
    const int64_t N = 24, C = 256;
    const std::vector<float> x = tuner::testing::random_floats(size_t(N * C), 30);
    for (int64_t V : {int64_t(300), int64_t(5000)}) {  // V = 5000: two head tiles (4096 + 904 rows)
        const std::vector<float> head = weights(size_t(V * C), 31);
        std::vector<int32_t> targets(static_cast<size_t>(N));
        for (int64_t n = 0; n < N; n++) targets[size_t(n)] = n % 5 == 0 ? -100 : int32_t((n * 7919) % V);
        for (const QCase& qc : kAllTypes) {
            if (V == 5000 && qc.t != DType::NF4 && qc.t != DType::Q4_K) continue;
            SCOPED_TRACE(::testing::Message() << dtype_name(qc.t) << (qc.dq ? "+dq" : "") << " V=" << V);
            const std::vector<uint8_t> buf = quantize(qc.t, head, V, C, qc.dq);
            const WeightView hq{buf.data(), qc.t, V, C};
            const std::vector<float> hd = dequantize_all(hq);
            const WeightView href{hd.data(), DType::F32, V, C};
            std::vector<float> loss(static_cast<size_t>(N)), lse(static_cast<size_t>(N)), dx(size_t(N * C));
            std::vector<float> lossr(static_cast<size_t>(N)), lser(static_cast<size_t>(N)), dxr(size_t(N * C));
            const int64_t cnt = cpu::lm_head_cross_entropy(loss.data(), lse.data(), dx.data(), nullptr, x.data(), hq,
                                                           targets.data(), N, 0.5f);
            const int64_t cntr = cpu::lm_head_cross_entropy(lossr.data(), lser.data(), dxr.data(), nullptr, x.data(),
                                                            href, targets.data(), N, 0.5f);
            EXPECT_EQ(cnt, cntr);
            expect_near_all(loss, lossr, 1e-5 * std::max(1.0f, max_abs(lossr)), "losses");
            expect_near_all(lse, lser, 1e-5 * std::max(1.0f, max_abs(lser)), "lse");
            expect_near_all(dx, dxr, 1e-5 * max_abs(dxr), "dx");
        }
    }
}

// =============================================================================================
// Speed (disabled by default; bench/bench_quant.sh)
// =============================================================================================

using tuner::testing::best_seconds;

TEST(QuantPerf, DISABLED_DequantAndMatmul) {
    std::printf("threads: %d\n", num_threads());
    // Dequantisation of a 576 x 1536 weight (smol-135m's MLP down_proj; 1536 columns are whole
    // blocks for every type): weight_rows_to_f32 over all rows on all threads, and the vector
    // (AVX-512 when built for it) and scalar decoders on one thread. The 3.5 MB of f32 output
    // stays in cache between repetitions, as a weight tile does inside a matmul.
    {
        const int64_t rows = 576, cols = 1536, n = rows * cols;
        const std::vector<float> w = weights(size_t(n), 40);
        std::vector<float> out(w.size());
        std::printf("dequant 576x1536, GB/s of f32 written (of quantised bytes read): all threads | 1 thread "
                    "vector | 1 thread scalar\n");
        for (const QCase& qc : kAllTypes) {
            const std::vector<uint8_t> buf = quantize(qc.t, w, rows, cols, qc.dq);
            const WeightView wv{buf.data(), qc.t, rows, cols};
            const double t = best_seconds([&] { weight_rows_to_f32(out.data(), wv, 0, rows); }, 20);
            double tv, ts;
            if (qc.t == DType::NF4) {
                tv = best_seconds([&] { nf4_dequantize(out.data(), buf.data(), 0, n); }, 20);
                ts = best_seconds([&] { nf4_dequantize_scalar(out.data(), buf.data(), 0, n); }, 10);
            } else {
                const int64_t nb = n / ggml_block_elems(qc.t);
                tv = best_seconds([&] { ggml_dequantize(qc.t, out.data(), buf.data(), nb); }, 20);
                ts = best_seconds([&] { ggml_dequantize_scalar(qc.t, out.data(), buf.data(), nb); }, 10);
            }
            const double f32_bytes = 4.0 * double(n);
            std::printf("  %-7s %6.1f (%5.1f) | %6.1f (%5.1f) | %6.1f (%5.1f)\n", qc.dq ? "NF4+dq" : dtype_name(qc.t),
                        f32_bytes / t / 1e9, double(buf.size()) / t / 1e9, f32_bytes / tv / 1e9,
                        double(buf.size()) / tv / 1e9, f32_bytes / ts / 1e9, double(buf.size()) / ts / 1e9);
        }
    }
    // matmul at N = 512 (smol-135m's MLP shapes).
    const int64_t N = 512;
    const std::vector<float> x = tuner::testing::random_floats(size_t(N * 1536), 41);
    std::vector<float> y(size_t(N * 1536));
    for (auto [in, out] : {std::pair<int64_t, int64_t>{576, 1536}, {1536, 576}}) {
        const std::vector<float> w = weights(size_t(in * out), 42);
        const double fl = 2.0 * double(N * in * out) / 1e9;
        std::printf("matmul N=%lld in=%lld out=%lld (GFLOP/s, forward / backward_input):\n", (long long)N,
                    (long long)in, (long long)out);
        std::vector<uint16_t> wb(w.size());
        for (size_t i = 0; i < w.size(); i++) wb[i] = f32_to_bf16(w[i]);
        struct Row {
            const char* name;
            WeightView view;
        };
        std::vector<std::vector<uint8_t>> bufs;
        std::vector<Row> rowsv = {{"f32", {w.data(), DType::F32, out, in}}, {"bf16", {wb.data(), DType::BF16, out, in}}};
        for (const QCase& qc : kAllTypes) {
            if (in % dtype_block_elems(qc.t) != 0) continue;  // K types need 256 | in
            bufs.push_back(quantize(qc.t, w, out, in, qc.dq));
            rowsv.push_back({qc.dq ? "NF4+dq" : dtype_name(qc.t), {bufs.back().data(), qc.t, out, in}});
        }
        for (const Row& r : rowsv) {
            const double tf = best_seconds([&] { cpu::matmul_forward(y.data(), x.data(), r.view, nullptr, N, false); }, 10);
            const double tb = best_seconds([&] { cpu::matmul_backward_input(y.data(), x.data(), r.view, N, false); }, 10);
            std::printf("  %-7s %6.0f / %6.0f   (%.2f / %.2f ms)\n", r.name, fl / tf, fl / tb, tf * 1e3, tb * 1e3);
        }
    }
}

}  // namespace
