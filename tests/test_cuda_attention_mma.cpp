// The mma.sync flash attention (backend/cuda/attention_mma.h: bf16 m16n8k16 tensor cores, P in
// registers, cp.async double buffering) against the CPU backend's attention (itself checked
// against float64 and finite differences in test_ops.cpp), forward and backward, on random inputs:
// head dims 64 and 128 (and others inside those buckets), GQA, causal, packed segments, T not a
// multiple of any tile, B > 1, f32 and bf16 q / k / v and out.
//
// Built twice (tests/CMakeLists.txt TUNER_EMU_TESTS): test_cuda_attention_mma runs on a GPU (skips
// without one; TUNER_REQUIRE_CUDA=1 makes that a failure), test_cuda_attention_mma_emu runs the
// same kernels on the CPU emulator of the CUDA execution model, whose mma.sync / ldmatrix
// implement the PTX ISA's register layouts exactly and whose cp.async lands only at
// cp.async.wait_group (tests/test_cuda_emu.cpp pins both).
//
// Tolerances: those of the existing bf16 tensor-core attention (tests/test_cuda_ops.cpp, which
// derives them): max |gpu - cpu| over a tensor <= tol * max |cpu| of that tensor, out 1e-2, lse
// 5e-3, dq / dk / dv 2e-2 (with a scale of at least 0.1 for the gradients, which are exactly 0 at
// T = 1). lse's error is an absolute error of the scores (bf16 q and k: ~2^-8 |q| |k| / sqrt(HD),
// ~1e-3 here) whatever lse's size, and at T = 1 lse is one score, which can be near 0: its scale is
// at least 1 (the scores' own scale for these unit-uniform inputs). Each check prints its measured
// worst error relative to the tensor's max (or that floor).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cuda/attention_mma.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/kernels.h"
#include "core/dtype.h"
#include "cuda_testing.h"
#include "testing.h"

using namespace tuner;
using namespace tuner::testing;

namespace {



// A tensor on the device as f32 or bf16: its buffer and the ActIn / ActOut naming it.
struct DevAct {
    void* data = nullptr;
    DType dtype = DType::F32;
    size_t n = 0;
    ActIn in() const { return ActIn(data, dtype); }
    ActOut out() const { return ActOut(data, dtype); }
    std::vector<float> down() const {
        if (dtype == DType::BF16) return from_bf16(Dev::down(static_cast<const uint16_t*>(data), n));
        return Dev::down(static_cast<const float*>(data), n);
    }
};
DevAct up_act(Dev& dev, const std::vector<float>& x, DType dtype) {
    if (dtype == DType::BF16) return {dev.up(to_bf16(x)), dtype, x.size()};
    return {dev.up(x), dtype, x.size()};
}
DevAct zeros_act(Dev& dev, size_t n, DType dtype) {
    if (dtype == DType::BF16) return {dev.zeros<uint16_t>(n), dtype, n};
    return {dev.zeros<float>(n), dtype, n};
}



// expect_near (cuda_testing.h), printing the measured worst error.
void expect_near_printed(const std::vector<float>& got, const std::vector<float>& want, double tol,
                         const std::string& what, double min_scale = 0.0) {
    const double worst = expect_near(got, want, tol, what, min_scale);
    std::printf("[mma] %-4s worst |err| / max|cpu| = %.3g (tol %.3g)\n", what.c_str(), worst, tol);
}

struct Opts {
    int seg_len = 0;              // 0: no segments (plain causal)
    DType in = DType::F32;        // q, k, v
    DType out = DType::F32;       // the forward's out and the out the backward reads
    bool check_repeat = false;    // the backward twice: bit-identical results
    int split = 0;                // dk / dv blocks per (key block, kv head) (0: automatic)
};

// Sets attention_mma_force_dkv_split for one scope.
struct SplitScope {
    explicit SplitScope(int S) { cuda::attention_mma_force_dkv_split(S); }
    ~SplitScope() { cuda::attention_mma_force_dkv_split(0); }
};

void check(const AttnShape& s, uint64_t seed, const Opts& o = {}) {
    SCOPED_TRACE(::testing::Message() << "B=" << s.B << " T=" << s.T << " NH=" << s.NH << " NKV=" << s.NKV
                                      << " HD=" << s.HD << " seg_len=" << o.seg_len << " in=" << dtype_name(o.in)
                                      << " out=" << dtype_name(o.out) << " split=" << o.split);
    std::printf("[mma] B=%d T=%d NH=%d NKV=%d HD=%d seg_len=%d in=%s out=%s split=%d\n", s.B, s.T, s.NH, s.NKV, s.HD,
                o.seg_len, dtype_name(o.in), dtype_name(o.out), o.split);
    const SplitScope split(o.split);
    Dev dev;
    cuda::reserve_workspace(std::max<size_t>(cuda::attention_mma_workspace_bytes(s), 1));
    const size_t nq = size_t(s.B) * s.T * s.NH * s.HD, nkv = size_t(s.B) * s.T * s.NKV * s.HD;
    const size_t nl = size_t(s.B) * s.NH * s.T;
    std::vector<float> q = random_floats(nq, seed), k = random_floats(nkv, seed + 1), v = random_floats(nkv, seed + 2);
    const std::vector<float> dout = random_floats(nq, seed + 3);
    if (o.in == DType::BF16) {  // the reference sees the values the kernels read
        q = from_bf16(to_bf16(q)), k = from_bf16(to_bf16(k)), v = from_bf16(to_bf16(v));
    }
    const std::vector<int32_t> seg =
        o.seg_len ? random_segments(s.B, s.T, seed + 4, o.seg_len) : std::vector<int32_t>();
    const int32_t* seg_h = o.seg_len ? seg.data() : nullptr;

    std::vector<float> out(nq), lse(nl), dq(nq), dk(nkv), dv(nkv);
    cpu::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), seg_h, s);

    const DevAct qd = up_act(dev, q, o.in), kd = up_act(dev, k, o.in), vd = up_act(dev, v, o.in);
    const int32_t* segd = o.seg_len ? dev.up(seg) : nullptr;
    const DevAct od = zeros_act(dev, nq, o.out);
    float* ld = dev.zeros<float>(nl);
    ASSERT_TRUE(cuda::attention_mma_supports(s, qd.in(), kd.in(), vd.in(), od.in()));
    cuda::attention_mma_forward(od.out(), ld, qd.in(), kd.in(), vd.in(), segd, s);
    expect_near_printed(od.down(), out, 1e-2, "out");
    expect_near_printed(Dev::down(ld, nl), lse, 5e-3, "lse", 1.0);

    // The backward reads the CPU's out (rounded to the out dtype, as the CPU reference then sees it)
    // and lse, so it is checked on its own.
    const std::vector<float> out_ref = o.out == DType::BF16 ? from_bf16(to_bf16(out)) : out;
    cpu::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), out_ref.data(),
                            lse.data(), seg_h, s);
    const DevAct outd = up_act(dev, out_ref, o.out);
    float* lsed = dev.up(lse);
    float* doutd = dev.up(dout);
    float *dqd = dev.zeros<float>(nq), *dkd = dev.zeros<float>(nkv), *dvd = dev.zeros<float>(nkv);
    cuda::attention_mma_backward(dqd, dkd, dvd, doutd, qd.in(), kd.in(), vd.in(), outd.in(), lsed, segd, s);
    const auto dq_got = Dev::down(dqd, nq), dk_got = Dev::down(dkd, nkv), dv_got = Dev::down(dvd, nkv);
    expect_near_printed(dq_got, dq, 2e-2, "dq", 0.1);
    expect_near_printed(dk_got, dk, 2e-2, "dk", 0.1);
    expect_near_printed(dv_got, dv, 2e-2, "dv", 0.1);
    if (o.check_repeat) {
        // Overwritten, not accumulated, and deterministic: a second call (over garbage) is bit-identical.
        cuda::memset_device(dqd, 0x7f, nq * 4);
        cuda::memset_device(dkd, 0x7f, nkv * 4);
        cuda::memset_device(dvd, 0x7f, nkv * 4);
        cuda::attention_mma_backward(dqd, dkd, dvd, doutd, qd.in(), kd.in(), vd.in(), outd.in(), lsed, segd, s);
        EXPECT_EQ(std::memcmp(Dev::down(dqd, nq).data(), dq_got.data(), nq * 4), 0) << "dq not reproducible";
        EXPECT_EQ(std::memcmp(Dev::down(dkd, nkv).data(), dk_got.data(), nkv * 4), 0) << "dk not reproducible";
        EXPECT_EQ(std::memcmp(Dev::down(dvd, nkv).data(), dv_got.data(), nkv * 4), 0) << "dv not reproducible";
    }
}

// Tiles: the forward takes 128-query blocks of 64-key tiles, the backward 64 x 64: T = 100, 150,
// 200, 333 end inside tiles, T = 1 is one partial tile, and every T above 64 has causal diagonal
// tiles that are neither full nor empty and more than one key tile (double buffering).
TEST(CudaAttentionMma, Hd64GqaCausal) {
    TUNER_REQUIRE_CUDA();
    check({.B = 2, .T = 100, .NH = 4, .NKV = 2, .HD = 64}, 11, {.check_repeat = true});
    check({.B = 1, .T = 1, .NH = 2, .NKV = 1, .HD = 64}, 12);  // one token
}

TEST(CudaAttentionMma, Hd128GqaCausal) {
    TUNER_REQUIRE_CUDA();
    check({.B = 1, .T = 200, .NH = 4, .NKV = 1, .HD = 128}, 21, {.check_repeat = true});
    check({.B = 2, .T = 70, .NH = 2, .NKV = 2, .HD = 128}, 22);
}

// GQA's dk / dv: every query head of a kv head in one block (S = 1), in G / S-head blocks whose
// partial sums are added by a second kernel (S = 2), one head per block (S = G = 4: what small
// shapes get automatically, as on the emulator's 132 "SMs").
TEST(CudaAttentionMma, GqaDkDvSplits) {
    TUNER_REQUIRE_CUDA();
    for (int S : {1, 2, 4}) {
        check({.B = 2, .T = 90, .NH = 8, .NKV = 2, .HD = 64}, 26, {.seg_len = 50, .in = DType::BF16, .split = S});
        check({.B = 1, .T = 130, .NH = 4, .NKV = 1, .HD = 128}, 27, {.check_repeat = S == 2, .split = S});
    }
}

// Packed segments: short ones (many per tile: masks inside tiles, tiles skipped per warp) and
// long ones (whole key tiles before a segment start skipped; query tiles after a key block's
// segment skipped by the dk / dv kernel).
TEST(CudaAttentionMma, PackedSegments) {
    TUNER_REQUIRE_CUDA();
    const DType bf = DType::BF16;
    check({.B = 2, .T = 150, .NH = 4, .NKV = 2, .HD = 64}, 31, {.seg_len = 40});
    check({.B = 1, .T = 333, .NH = 2, .NKV = 1, .HD = 128}, 32, {.seg_len = 150, .check_repeat = true});
    check({.B = 2, .T = 260, .NH = 2, .NKV = 2, .HD = 64}, 33, {.seg_len = 90, .in = bf, .out = bf});
    check({.B = 1, .T = 300, .NH = 4, .NKV = 2, .HD = 128}, 34, {.seg_len = 40, .in = bf, .out = bf});
}

// bf16 activations (kernels.h ActIn / ActOut): q, k, v as bf16 go in by cp.async as stored (f32
// ones are converted while staged, synchronously); out written (and read back by the backward) as
// bf16; and the mixed cases. (dO always goes in by cp.async, from its bf16 copy.)
TEST(CudaAttentionMma, Bf16Activations) {
    TUNER_REQUIRE_CUDA();
    const DType bf = DType::BF16, f32 = DType::F32;
    check({.B = 1, .T = 150, .NH = 4, .NKV = 2, .HD = 128}, 41, {.seg_len = 60, .in = bf, .out = bf});
    check({.B = 2, .T = 90, .NH = 2, .NKV = 1, .HD = 64}, 42, {.in = bf, .out = f32});
    check({.B = 1, .T = 90, .NH = 2, .NKV = 1, .HD = 64}, 43, {.seg_len = 30, .in = f32, .out = bf});
}

// Head dims inside the buckets (zero-padded to 64 or 128): 8 (stories260K's), 48, 80, 96.
TEST(CudaAttentionMma, OtherHeadDims) {
    TUNER_REQUIRE_CUDA();
    for (int HD : {8, 48, 80, 96}) {
        const DType in = HD % 16 == 0 ? DType::BF16 : DType::F32;
        check({.B = 1, .T = 77, .NH = 4, .NKV = 2, .HD = HD}, uint64_t(50 + HD), {.seg_len = 30, .in = in, .out = in});
    }
}

// What the kernels do not take, with the reason (a caller keeps the other kernels for these).
TEST(CudaAttentionMma, SupportsSaysWhy) {
    TUNER_REQUIRE_CUDA();
    Dev dev;
    float* f = dev.zeros<float>(1024);
    uint16_t* h = dev.zeros<uint16_t>(1024);
    const ActIn qf(f), qh(h, DType::BF16);
    std::string why;
    EXPECT_TRUE(cuda::attention_mma_supports({.B = 1, .T = 4, .NH = 2, .NKV = 1, .HD = 64}, qf, qf, qf, {}, &why));
    EXPECT_FALSE(cuda::attention_mma_supports({.B = 1, .T = 4, .NH = 2, .NKV = 1, .HD = 100}, qf, qf, qf, {}, &why));
    EXPECT_NE(why.find("head dim 100"), std::string::npos) << why;
    EXPECT_FALSE(cuda::attention_mma_supports({.B = 1, .T = 4, .NH = 2, .NKV = 1, .HD = 256}, qf, qf, qf, {}, &why));
    EXPECT_FALSE(cuda::attention_mma_supports({.B = 1, .T = 4, .NH = 2, .NKV = 1, .HD = 64}, qh, qf, qf, {}, &why));
    EXPECT_NE(why.find("share a dtype"), std::string::npos) << why;
    const ActIn q_misaligned(f + 1);
    EXPECT_FALSE(
        cuda::attention_mma_supports({.B = 1, .T = 4, .NH = 2, .NKV = 1, .HD = 64}, q_misaligned, qf, qf, {}, &why));
    EXPECT_NE(why.find("16-byte aligned"), std::string::npos) << why;
    EXPECT_FALSE(cuda::attention_mma_supports({.B = 1, .T = 4, .NH = 3, .NKV = 2, .HD = 64}, qf, qf, qf, {}, &why));
}

}  // namespace
