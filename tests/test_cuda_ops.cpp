// CUDA kernel tests: every op of the kernel table on the device against the CPU backend (the
// reference, itself checked against float64 and finite differences in test_ops.cpp), on random
// inputs: copy to the device, run, copy back, compare.
//
// Without a device every test skips with "no CUDA device: <reason>" (CI builds and registers
// them). With TUNER_REQUIRE_CUDA=1 in the environment (scripts/gpu-check.sh) a missing device
// is a failure instead, so a GPU run cannot pass by skipping. A build without CUDA compiles
// this file unchanged: backend/cuda/cuda_backend.h is plain C++ and no_cuda/ stubs link it.
//
// Tolerances (max |gpu - cpu| over a tensor, relative to max |cpu| of that tensor: a norm-wise
// check, as entries that are sums of cancelling terms cannot be held to a relative bound):
//  * 0 (bit-exact): embedding rows of every dtype (the device decoders round like the CPU's).
//  * 1e-5: f32 elementwise and row ops (swiglu, rope, rmsnorm: different exp / sincos / sqrt
//    implementations and summation trees, each a few ulp), attention forward (online softmax
//    over different tile orders), f32 GEMMs (matmul and cross-entropy in MatmulCompute::F32:
//    the same products summed in another order; K <= 1000 here gives ~1e-6).
//  * 1e-4: attention gradients (dS = P (dP - D) subtracts nearly equal numbers).
//  * 5e-3: TF32 GEMMs (inputs rounded to 10-bit mantissas, relative 2^-11 each).
//  * 2e-2: BF16 GEMMs (inputs rounded to 8-bit mantissas, relative 2^-9 each; a dot product of
//    K random terms keeps ~2^-8 of its magnitude as error, well under 2e-2 of the tensor max).
//  * AdamW: bit-exact against the step computed on the host with every operation rounded
//    separately (what the kernel specifies); 4e-7 (norm-wise) against the CPU's AdamW, whose
//    compiler fuses multiply-adds the kernel rounds twice.
//  * bf16 activations (ActIn / ActOut): see "bf16 activations" below.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/device_ops.h"
#include "backend/kernels.h"
#include "core/dtype.h"
#include "nn/lora.h"
#include "nn/param.h"
#include "quant/quant.h"
#include "cuda_testing.h"
#include "testing.h"
#include "train/adamw.h"

using namespace tuner;
using namespace tuner::testing;

namespace {


// Sets the cuda config for one scope and reserves a generous workspace.
struct ComputeScope {
    cuda::Config saved = cuda::config();
    explicit ComputeScope(cuda::MatmulCompute c, int64_t tile_elems = 0, int64_t ce_elems = 0) {
        cuda::Config cfg = saved;
        cfg.compute = c;
        if (tile_elems) cfg.weight_tile_elems = tile_elems;
        if (ce_elems) cfg.ce_logit_elems = ce_elems;
        cuda::set_config(cfg);
        cuda::reserve_workspace(size_t(256) << 20);
    }
    ~ComputeScope() { cuda::set_config(saved); }
};

// Runs fn once per bf16 tensor-core attention implementation (cuda::Config::attention): the
// mma.sync kernels (the default; a call they do not take falls back to WMMA) and the WMMA ones.
template <typename Fn>
void for_each_attention_kernels(Fn fn) {
    for (cuda::AttentionKernels a : {cuda::AttentionKernels::MMA, cuda::AttentionKernels::WMMA}) {
        SCOPED_TRACE(a == cuda::AttentionKernels::MMA ? "attention kernels: mma.sync" : "attention kernels: wmma");
        const cuda::Config saved = cuda::config();
        cuda::Config cfg = saved;
        cfg.attention = a;
        cuda::set_config(cfg);
        fn();
        cuda::set_config(saved);
    }
}

const char* compute_name(cuda::MatmulCompute c) {
    return c == cuda::MatmulCompute::F32 ? "f32" : c == cuda::MatmulCompute::TF32 ? "tf32" : "bf16";
}

double gemm_tol(cuda::MatmulCompute c) {
    return c == cuda::MatmulCompute::F32 ? 1e-5 : c == cuda::MatmulCompute::TF32 ? 5e-3 : 2e-2;
}


// A weight stored in `dtype` (host bytes), as the loaders keep it, and its device copy.
struct HostWeight {
    std::vector<uint8_t> bytes;
    WeightView view;  // data: host
};
HostWeight make_weight(const std::vector<float>& w, int64_t rows, int64_t cols, DType dtype, bool nf4_dq = true) {
    HostWeight h;
    const int64_t n = rows * cols;
    if (dtype == DType::F32) {
        h.bytes.resize(size_t(n) * 4);
        std::memcpy(h.bytes.data(), w.data(), h.bytes.size());
    } else if (dtype == DType::BF16 || dtype == DType::F16) {
        h.bytes.resize(size_t(n) * 2);
        convert_from_f32(h.bytes.data(), dtype, w.data(), size_t(n));
    } else {
        const QuantOptions opt{.nf4_double_quant = nf4_dq};
        h.bytes.resize(dtype_nbytes(dtype, n, opt));
        quantize_rows(h.bytes.data(), dtype, w.data(), rows, cols, opt);
    }
    h.view = WeightView{h.bytes.data(), dtype, rows, cols};
    return h;
}
WeightView to_device(Dev& dev, const HostWeight& h) {
    WeightView v = h.view;
    v.data = dev.up(h.bytes);
    return v;
}

struct WeightCase {
    DType dtype;
    bool nf4_dq;
    const char* name;
};
const std::vector<WeightCase>& weight_cases() {
    static const std::vector<WeightCase> cases = {
        {DType::F32, false, "F32"},   {DType::BF16, false, "BF16"}, {DType::F16, false, "F16"},
        {DType::NF4, false, "NF4"},   {DType::NF4, true, "NF4-dq"}, {DType::Q8_0, false, "Q8_0"},
        {DType::Q4_0, false, "Q4_0"}, {DType::Q4_K, false, "Q4_K"}, {DType::Q5_K, false, "Q5_K"},
        {DType::Q6_K, false, "Q6_K"},
    };
    return cases;
}

// =============================================================================================
// device, arena, workspace
// =============================================================================================

TEST(CudaDevice, AvailableAndSummary) {
    TUNER_REQUIRE_CUDA();
    const std::string s = cuda::device_summary();
    std::printf("device: %s\n", s.c_str());
    EXPECT_FALSE(s.empty());
}

TEST(CudaDevice, ArenaViewsAndPlanningErrors) {
    TUNER_REQUIRE_CUDA();
    cuda::DeviceArena a("acts", 4096);
    void* x = a.alloc(1000, "x");
    void* y = a.alloc(10, "y");
    EXPECT_EQ(a.find("x"), x);
    EXPECT_EQ(a.find("y"), y);
    EXPECT_EQ(a.find("z"), nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(y) % cuda::kDeviceAlign, 0u);
    const std::string msg = tuner::testing::error_of([&] { a.alloc(8192, "too_big"); });
    EXPECT_CONTAINS(msg, "acts");
    EXPECT_CONTAINS(msg, "too_big");

    // An op whose workspace is too small says how much it needs.
    cuda::Config cfg = cuda::config();
    cfg.compute = cuda::MatmulCompute::BF16;
    const cuda::Config saved = cuda::config();
    cuda::set_config(cfg);
    cuda::set_workspace(nullptr, 0);
    Dev dev;
    const int64_t N = 64, in = 128, out = 64;
    float* xd = dev.zeros<float>(size_t(N * in));
    float* yd = dev.zeros<float>(size_t(N * out));
    float* wd = dev.zeros<float>(size_t(out * in));
    const std::string ws_msg = tuner::testing::error_of(
        [&] { cuda::matmul_forward(yd, xd, WeightView{wd, DType::F32, out, in}, nullptr, N, false); });
    EXPECT_CONTAINS(ws_msg, "matmul_forward");
    EXPECT_CONTAINS(ws_msg, "workspace");
    cuda::set_config(saved);
}

// =============================================================================================
// elementwise and row ops
// =============================================================================================

TEST(CudaOps, AddForwardInplaceAliasing) {
    TUNER_REQUIRE_CUDA();
    Dev dev;
    const int64_t n = 100003;
    const auto a = random_floats(size_t(n), 1), b = random_floats(size_t(n), 2);
    float* ad = dev.up(a);
    float* bd = dev.up(b);
    float* od = dev.zeros<float>(static_cast<size_t>(n));
    std::vector<float> want(static_cast<size_t>(n));
    cpu::add_forward(want.data(), a.data(), b.data(), n);
    cuda::add_forward(od, ad, bd, n);
    expect_near(Dev::down(od, size_t(n)), want, 0.0, "add_forward");
    cuda::add_inplace(ad, bd, n);  // a += b
    expect_near(Dev::down(ad, size_t(n)), want, 0.0, "add_inplace");
    cuda::add_forward(bd, ad, bd, n);  // out aliases b
    std::vector<float> want2(static_cast<size_t>(n));
    cpu::add_forward(want2.data(), want.data(), b.data(), n);
    expect_near(Dev::down(bd, size_t(n)), want2, 0.0, "add_forward aliasing b");
}

TEST(CudaOps, SwiGLUForwardBackward) {
    TUNER_REQUIRE_CUDA();
    Dev dev;
    const int64_t n = 3 * 1536 + 7;
    const auto gate = random_floats(size_t(n), 3, 6.0f), up = random_floats(size_t(n), 4);
    const auto dh = random_floats(size_t(n), 5);
    std::vector<float> h(static_cast<size_t>(n)), dgate(static_cast<size_t>(n)), dup(static_cast<size_t>(n));
    cpu::swiglu_forward(h.data(), gate.data(), up.data(), n);
    cpu::swiglu_backward(dgate.data(), dup.data(), dh.data(), gate.data(), up.data(), n);
    float *gd = dev.up(gate), *ud = dev.up(up), *dhd = dev.up(dh);
    float *hd = dev.zeros<float>(static_cast<size_t>(n)), *dgd = dev.zeros<float>(static_cast<size_t>(n)), *dud = dev.zeros<float>(static_cast<size_t>(n));
    cuda::swiglu_forward(hd, gd, ud, n);
    cuda::swiglu_backward(dgd, dud, dhd, gd, ud, n);
    expect_near(Dev::down(hd, size_t(n)), h, 1e-5, "swiglu h");
    expect_near(Dev::down(dgd, size_t(n)), dgate, 1e-5, "swiglu dgate");
    expect_near(Dev::down(dud, size_t(n)), dup, 1e-5, "swiglu dup");
}

std::vector<float> inv_freq_for(int HD, double theta) {
    std::vector<float> f(size_t(HD / 2));
    for (int i = 0; i < HD / 2; i++) f[size_t(i)] = float(1.0 / std::pow(theta, double(2 * i) / HD));
    return f;
}

TEST(CudaOps, RopeForwardBackward) {
    TUNER_REQUIRE_CUDA();
    for (int HD : {8, 64, 128}) {
        SCOPED_TRACE(HD);
        Dev dev;
        const int64_t N = 300;
        const int H = 5;
        std::vector<int32_t> pos(static_cast<size_t>(N));
        Rng rng(7);
        for (auto& p : pos) p = rng.below(8192);  // large angles: range reduction matters
        const auto inv_freq = inv_freq_for(HD, 500000.0);
        const auto x = random_floats(size_t(N * H * HD), 8);
        std::vector<float> y = x, dx = x;
        cpu::rope_forward(y.data(), pos.data(), inv_freq.data(), N, H, HD);
        cpu::rope_backward(dx.data(), pos.data(), inv_freq.data(), N, H, HD);
        int32_t* pd = dev.up(pos);
        float* fd = dev.up(inv_freq);
        float* yd = dev.up(x);
        float* dxd = dev.up(x);
        cuda::rope_forward(yd, pd, fd, N, H, HD);
        cuda::rope_backward(dxd, pd, fd, N, H, HD);
        expect_near(Dev::down(yd, x.size()), y, 1e-5, "rope forward");
        expect_near(Dev::down(dxd, x.size()), dx, 1e-5, "rope backward");
    }
}

TEST(CudaOps, RMSNormForwardBackward) {
    TUNER_REQUIRE_CUDA();
    for (int64_t C : {37, 576, 4096}) {
        SCOPED_TRACE(C);
        Dev dev;
        const int64_t N = 133;
        const auto x = random_floats(size_t(N * C), 9, 3.0f), w = random_floats(size_t(C), 10);
        const auto dout = random_floats(size_t(N * C), 11), dw0 = random_floats(size_t(C), 12);
        std::vector<float> out(size_t(N * C)), rstd(static_cast<size_t>(N)), dx(size_t(N * C)), dw = dw0;
        cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-6f);
        cpu::rmsnorm_backward(dx.data(), dw.data(), dout.data(), x.data(), w.data(), rstd.data(), N, C, false);
        float *xd = dev.up(x), *wd = dev.up(w), *doutd = dev.up(dout), *dwd = dev.up(dw0);
        float *od = dev.zeros<float>(size_t(N * C)), *rd = dev.zeros<float>(static_cast<size_t>(N)),
              *dxd = dev.zeros<float>(size_t(N * C));
        cuda::rmsnorm_forward(od, rd, xd, wd, N, C, 1e-6f);
        expect_near(Dev::down(od, out.size()), out, 1e-5, "rmsnorm out");
        expect_near(Dev::down(rd, rstd.size()), rstd, 1e-5, "rmsnorm rstd");
        cuda::rmsnorm_backward(dxd, dwd, doutd, xd, wd, rd, N, C, false);  // dweight accumulates onto dw0
        expect_near(Dev::down(dxd, dx.size()), dx, 1e-5, "rmsnorm dx");
        expect_near(Dev::down(dwd, dw.size()), dw, 1e-5, "rmsnorm dweight (+=)");
        cuda::rmsnorm_backward(dxd, nullptr, doutd, xd, wd, rd, N, C, false);  // frozen norm
        expect_near(Dev::down(dxd, dx.size()), dx, 1e-5, "rmsnorm dx (frozen weight)");
        // accumulate_dx: dx += the norm's input gradient (dxd holds dx now: 2 dx).
        cuda::rmsnorm_backward(dxd, nullptr, doutd, xd, wd, rd, N, C, true);
        std::vector<float> twice = dx;
        for (auto& v : twice) v *= 2.0f;
        expect_near(Dev::down(dxd, dx.size()), twice, 1e-5, "rmsnorm dx accumulate");
        // The residual add fused with the norm against the CPU's (x_sum aliasing a).
        const auto b = random_floats(size_t(N * C), 13);
        std::vector<float> sum(size_t(N * C)), out2(size_t(N * C)), rstd2(static_cast<size_t>(N));
        cpu::add_rmsnorm_forward(sum.data(), out2.data(), rstd2.data(), x.data(), b.data(), w.data(), N, C, 1e-6f);
        float* ad = dev.up(x);
        float* bd = dev.up(b);
        cuda::add_rmsnorm_forward(ad, od, rd, ad, bd, wd, N, C, 1e-6f);
        EXPECT_EQ(Dev::down(ad, sum.size()), sum);  // one f32 add per element: exact
        expect_near(Dev::down(od, out2.size()), out2, 1e-5, "add_rmsnorm out");
        expect_near(Dev::down(rd, rstd2.size()), rstd2, 1e-5, "add_rmsnorm rstd");
    }
}

TEST(CudaOps, EmbeddingAllDtypesBitExactAndBackwardRepeatedIds) {
    TUNER_REQUIRE_CUDA();
    const int64_t V = 97, C = 256, N = 300;
    std::vector<int32_t> ids(static_cast<size_t>(N));
    Rng rng(13);
    for (auto& id : ids) id = rng.below(int(V));
    ids[3] = ids[7] = ids[11] = 5;  // repeated ids add up in the backward
    ids[0] = 0, ids[1] = int32_t(V - 1);
    const auto table = random_floats(size_t(V * C), 14);
    for (const WeightCase& wc : weight_cases()) {
        SCOPED_TRACE(wc.name);
        Dev dev;
        const HostWeight hw = make_weight(table, V, C, wc.dtype, wc.nf4_dq);
        std::vector<float> want(size_t(N * C));
        cpu::embedding_forward(want.data(), ids.data(), hw.view, N);
        int32_t* idd = dev.up(ids);
        float* od = dev.zeros<float>(want.size());
        cuda::embedding_forward(od, idd, to_device(dev, hw), N);
        expect_near(Dev::down(od, want.size()), want, 0.0, std::string("embedding forward ") + wc.name);
    }
    Dev dev;
    const auto dout = random_floats(size_t(N * C), 15), dt0 = random_floats(size_t(V * C), 16);
    std::vector<float> dt = dt0;
    cpu::embedding_backward(dt.data(), dout.data(), ids.data(), N, C);
    float* dtd = dev.up(dt0);
    cuda::embedding_backward(dtd, dev.up(dout), dev.up(ids), N, C);
    // atomicAdd order of repeated ids: a last-bit difference at most.
    expect_near(Dev::down(dtd, dt.size()), dt, 1e-6, "embedding backward (+=)");
}

// =============================================================================================
// matmul
// =============================================================================================

// Forward (= and +=, with and without bias), backward input (= and +=), and for F32 weights
// backward weight with dbias (+=), against the CPU backend.
void check_matmul(int64_t N, int64_t in, int64_t out, const WeightCase& wc, cuda::MatmulCompute compute) {
    SCOPED_TRACE(::testing::Message() << "N=" << N << " in=" << in << " out=" << out << " weight=" << wc.name
                                      << " compute=" << compute_name(compute));
    const double tol = gemm_tol(compute);
    Dev dev;
    const auto x = random_floats(size_t(N * in), 21), bias = random_floats(size_t(out), 22);
    const auto dy = random_floats(size_t(N * out), 23), y0 = random_floats(size_t(N * out), 24);
    const auto dx0 = random_floats(size_t(N * in), 25);
    const HostWeight hw = make_weight(random_floats(size_t(out * in), 26, 0.5f), out, in, wc.dtype, wc.nf4_dq);
    const WeightView wd = to_device(dev, hw);
    float *xd = dev.up(x), *bd = dev.up(bias), *dyd = dev.up(dy);

    std::vector<float> y(size_t(N * out)), yacc = y0;
    cpu::matmul_forward(y.data(), x.data(), hw.view, bias.data(), N, false);
    cpu::matmul_forward(yacc.data(), x.data(), hw.view, nullptr, N, true);
    float* yd = dev.zeros<float>(y.size());
    cuda::matmul_forward(yd, xd, wd, bd, N, false);
    expect_near(Dev::down(yd, y.size()), y, tol, "matmul_forward (bias)");
    float* yaccd = dev.up(y0);
    cuda::matmul_forward(yaccd, xd, wd, nullptr, N, true);
    expect_near(Dev::down(yaccd, y.size()), yacc, tol, "matmul_forward (+=)");

    std::vector<float> dx(size_t(N * in)), dxacc = dx0;
    cpu::matmul_backward_input(dx.data(), dy.data(), hw.view, N, false);
    cpu::matmul_backward_input(dxacc.data(), dy.data(), hw.view, N, true);
    float* dxd = dev.zeros<float>(dx.size());
    float* dxaccd = dev.up(dx0);
    cuda::matmul_backward_input(dxd, dyd, wd, N, false);
    cuda::matmul_backward_input(dxaccd, dyd, wd, N, true);
    expect_near(Dev::down(dxd, dx.size()), dx, tol, "matmul_backward_input");
    expect_near(Dev::down(dxaccd, dx.size()), dxacc, tol, "matmul_backward_input (+=)");

    if (wc.dtype != DType::F32) return;
    const auto dw0 = random_floats(size_t(out * in), 27), db0 = random_floats(size_t(out), 28);
    std::vector<float> dw = dw0, db = db0;
    cpu::matmul_backward_weight(dw.data(), db.data(), dy.data(), x.data(), N, out, in);
    float *dwd = dev.up(dw0), *dbd = dev.up(db0);
    cuda::matmul_backward_weight(dwd, dbd, dyd, xd, N, out, in);
    expect_near(Dev::down(dwd, dw.size()), dw, tol, "matmul_backward_weight dW (+=)");
    expect_near(Dev::down(dbd, db.size()), db, 1e-5, "matmul_backward_weight dbias (+=)");  // f32 sums always
}

TEST(CudaMatmul, F32ComputeEveryWeightDtype) {
    TUNER_REQUIRE_CUDA();
    ComputeScope scope(cuda::MatmulCompute::F32);
    check_matmul(37, 40, 24, weight_cases()[0], cuda::MatmulCompute::F32);  // odd sizes
    for (const WeightCase& wc : weight_cases()) check_matmul(67, 512, 200, wc, cuda::MatmulCompute::F32);
}

TEST(CudaMatmul, BF16ComputeEveryWeightDtype) {
    TUNER_REQUIRE_CUDA();
    ComputeScope scope(cuda::MatmulCompute::BF16);
    check_matmul(37, 40, 24, weight_cases()[0], cuda::MatmulCompute::BF16);
    for (const WeightCase& wc : weight_cases()) check_matmul(67, 512, 200, wc, cuda::MatmulCompute::BF16);
}

TEST(CudaMatmul, NF4RowsInsideBlocks) {
    TUNER_REQUIRE_CUDA();
    // bitsandbytes quantises the flattened tensor: 172-wide rows start inside 64-value blocks.
    for (cuda::MatmulCompute c : {cuda::MatmulCompute::F32, cuda::MatmulCompute::BF16}) {
        ComputeScope scope(c, 64 * 172);
        check_matmul(19, 172, 192, weight_cases()[3], c);
        check_matmul(19, 172, 192, weight_cases()[4], c);
    }
}

TEST(CudaMatmul, TF32Compute) {
    TUNER_REQUIRE_CUDA();
    ComputeScope scope(cuda::MatmulCompute::TF32);
    check_matmul(130, 200, 150, weight_cases()[0], cuda::MatmulCompute::TF32);
    check_matmul(67, 512, 200, weight_cases()[3], cuda::MatmulCompute::TF32);  // NF4 tiles in f32
}

TEST(CudaMatmul, SeveralWeightTiles) {
    TUNER_REQUIRE_CUDA();
    // 64 * 512 elements per tile: 64-row tiles, so out = 200 is tiles of 64, 64, 64 and 8 rows.
    for (cuda::MatmulCompute c : {cuda::MatmulCompute::F32, cuda::MatmulCompute::BF16}) {
        ComputeScope scope(c, 64 * 512);
        for (const WeightCase& wc : weight_cases())
            if (wc.dtype != DType::F32) check_matmul(67, 512, 200, wc, c);
    }
}

// =============================================================================================
// attention
// =============================================================================================


// Attention on the device in `compute` (F32: the f32 kernels; BF16: the tensor-core kernels for
// HD <= 128) against the CPU backend (f32).
//
// BF16 tolerances (norm-wise, relative to max |cpu| of the tensor, as everywhere in this file):
// q, k, v, dout are rounded to bf16 (relative error u = 2^-9 each) and P, dS to bf16 before their
// products; accumulation is f32. The output is a convex combination of v rows, so its error is
// ~2u |v| from rounding v and p, plus the effect of rounding the score inputs: a score error of
// ~2u |q||k| / sqrt(HD) (~4e-3 for these unit-uniform inputs) shifts p relatively by as much.
// Gradients are sums of dS = P (dP - D) terms whose dP (bf16 operands) carries ~2u of |dout||v|
// and subtracts D (f32, from out): the difference keeps that error unreduced. Measured on the
// emulator over the shapes below (worst element / max |cpu|): out <= 3.3e-3, lse <= 1.1e-3,
// dq, dk <= 6.6e-3, dv <= 2.5e-3. Held to 1e-2 (out), 5e-3 (lse), 2e-2 (gradients): 3-4x margin,
// while a wrong mask, key or tile gives errors of order 1. Where the exact gradient is 0 (T = 1:
// P = 1, dS = dP - D = 0 exactly only in exact arithmetic) dq and dk are that dP - D rounding
// noise times k or q (~4e-4 absolute here), so the gradients' scale is at least 0.1 in bf16
// (1e-3 in f32; the other shapes' gradients are ~0.1 to 10).
struct AttnTol {
    double out, lse, grad, grad_min_scale;
};
AttnTol attention_tol(cuda::MatmulCompute c, int HD) {
    if (c == cuda::MatmulCompute::BF16 && HD <= 128) return {1e-2, 5e-3, 2e-2, 0.1};
    return {1e-5, 1e-5, 1e-4, 1e-3};  // the f32 kernels (F32, TF32, and HD > 128 in BF16)
}

void check_attention(const AttnShape& s, bool segments, uint64_t seed,
                     cuda::MatmulCompute compute = cuda::MatmulCompute::F32) {
    SCOPED_TRACE(::testing::Message() << "B=" << s.B << " T=" << s.T << " NH=" << s.NH << " NKV=" << s.NKV
                                      << " HD=" << s.HD << " segments=" << segments << " compute="
                                      << compute_name(compute));
    ComputeScope scope(compute);
    const AttnTol tol = attention_tol(compute, s.HD);
    Dev dev;
    cuda::reserve_workspace(std::max<size_t>(cuda::attention_workspace_bytes(s), 1));
    const size_t nq = size_t(s.B) * s.T * s.NH * s.HD, nkv = size_t(s.B) * s.T * s.NKV * s.HD;
    const size_t nl = size_t(s.B) * s.NH * s.T;
    const auto q = random_floats(nq, seed), k = random_floats(nkv, seed + 1), v = random_floats(nkv, seed + 2);
    const auto dout = random_floats(nq, seed + 3);
    const std::vector<int32_t> seg = segments ? random_segments(s.B, s.T, seed + 4, 40) : std::vector<int32_t>();
    const int32_t* seg_h = segments ? seg.data() : nullptr;

    std::vector<float> out(nq), lse(nl), dq(nq), dk(nkv), dv(nkv);
    cpu::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), seg_h, s);
    cpu::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), out.data(),
                            lse.data(), seg_h, s);

    float *qd = dev.up(q), *kd = dev.up(k), *vd = dev.up(v), *doutd = dev.up(dout);
    const int32_t* segd = segments ? dev.up(seg) : nullptr;
    float *od = dev.zeros<float>(nq), *ld = dev.zeros<float>(nl);
    float *dqd = dev.zeros<float>(nq), *dkd = dev.zeros<float>(nkv), *dvd = dev.zeros<float>(nkv);
    cuda::attention_forward(od, ld, qd, kd, vd, segd, s);
    expect_near(Dev::down(od, nq), out, tol.out, "attention out");
    expect_near(Dev::down(ld, nl), lse, tol.lse, "attention lse");
    // The backward gets the CPU's out and lse, so it is checked on its own.
    cuda::copy_to_device(od, out.data(), nq * 4);
    cuda::copy_to_device(ld, lse.data(), nl * 4);
    cuda::attention_backward(dqd, dkd, dvd, doutd, qd, kd, vd, od, ld, segd, s);
    // Where every query sees one key only (T = 1) dq and dk are exactly 0 (P = 1, dS = 0): the
    // CPU's values are rounding noise (~1e-8) and no scale for the tolerance. So the scale is at
    // least 1e-3 in f32 (0.1 in bf16, see attention_tol): far below the gradients of the other
    // shapes (~0.1 to 10), far above the noise.
    expect_near(Dev::down(dqd, nq), dq, tol.grad, "attention dq", tol.grad_min_scale);
    expect_near(Dev::down(dkd, nkv), dk, tol.grad, "attention dk", tol.grad_min_scale);
    expect_near(Dev::down(dvd, nkv), dv, tol.grad, "attention dv", tol.grad_min_scale);
}

TEST(CudaAttention, GqaCausal) {
    TUNER_REQUIRE_CUDA();
    check_attention({.B = 2, .T = 100, .NH = 4, .NKV = 2, .HD = 64}, false, 31);
    check_attention({.B = 1, .T = 1, .NH = 2, .NKV = 1, .HD = 64}, false, 32);  // one token
    check_attention({.B = 1, .T = 200, .NH = 8, .NKV = 1, .HD = 128}, false, 33);
}

TEST(CudaAttention, PackedSegments) {
    TUNER_REQUIRE_CUDA();
    check_attention({.B = 2, .T = 150, .NH = 6, .NKV = 2, .HD = 64}, true, 41);
    check_attention({.B = 1, .T = 333, .NH = 4, .NKV = 4, .HD = 128}, true, 42);
}

TEST(CudaAttention, HeadDims) {
    TUNER_REQUIRE_CUDA();
    for (int HD : {8, 16, 32, 48, 80, 96, 256})
        check_attention({.B = 1, .T = 77, .NH = 4, .NKV = 2, .HD = HD}, true, uint64_t(50 + HD));
}

TEST(CudaAttention, LongSequence) {
    TUNER_REQUIRE_CUDA();
    check_attention({.B = 1, .T = 1024, .NH = 8, .NKV = 2, .HD = 128}, true, 61);
}

// TF32 compute keeps the f32 kernels (f32 tolerances).
TEST(CudaAttention, Tf32UsesF32Kernels) {
    TUNER_REQUIRE_CUDA();
    check_attention({.B = 1, .T = 70, .NH = 4, .NKV = 2, .HD = 64}, true, 71, cuda::MatmulCompute::TF32);
}

// The tensor-core kernels (BF16 compute, the default), each test once per implementation
// (mma.sync: 128-query / 64-key tiles; WMMA: 64 / 64), so T = 100, 150, 333 end inside a tile,
// T = 1 is one partial tile, and T = 200 has causal diagonal tiles that are neither full nor
// empty. tests/test_cuda_attention_mma.cpp tests the mma.sync kernels in more detail.
TEST(CudaAttentionBf16, GqaCausal) {
    TUNER_REQUIRE_CUDA();
    const auto bf16 = cuda::MatmulCompute::BF16;
    for_each_attention_kernels([&] {
        check_attention({.B = 2, .T = 100, .NH = 4, .NKV = 2, .HD = 64}, false, 131, bf16);
        check_attention({.B = 1, .T = 1, .NH = 2, .NKV = 1, .HD = 64}, false, 132, bf16);  // one token
        check_attention({.B = 1, .T = 200, .NH = 8, .NKV = 1, .HD = 128}, false, 133, bf16);
    });
}

TEST(CudaAttentionBf16, PackedSegments) {
    TUNER_REQUIRE_CUDA();
    const auto bf16 = cuda::MatmulCompute::BF16;
    for_each_attention_kernels([&] {
        check_attention({.B = 2, .T = 150, .NH = 6, .NKV = 2, .HD = 64}, true, 141, bf16);
        check_attention({.B = 1, .T = 333, .NH = 4, .NKV = 4, .HD = 128}, true, 142, bf16);
    });
}

// Head dims inside the 64 and 128 buckets (zero-padded; 8 is stories260K's), one not a multiple
// of 4 (scalar global access; not a multiple of 8 either, so the mma.sync kernels leave it to
// WMMA), and 256 (beyond the tensor-core kernels: the f32 ones run, f32 tolerances).
TEST(CudaAttentionBf16, HeadDims) {
    TUNER_REQUIRE_CUDA();
    for_each_attention_kernels([&] {
        for (int HD : {8, 16, 30, 48, 80, 96, 256})
            check_attention({.B = 1, .T = 77, .NH = 4, .NKV = 2, .HD = HD}, true, uint64_t(150 + HD),
                            cuda::MatmulCompute::BF16);
    });
}

TEST(CudaAttentionBf16, LongSequence) {
    TUNER_REQUIRE_CUDA();
    for_each_attention_kernels([&] {
        check_attention({.B = 1, .T = 1000, .NH = 8, .NKV = 2, .HD = 128}, true, 161, cuda::MatmulCompute::BF16);
    });
}

// =============================================================================================
// lm_head + cross-entropy
// =============================================================================================

void check_cross_entropy(int64_t N, int64_t C, int64_t V, const WeightCase& wc, bool train, double ignored_frac,
                         cuda::MatmulCompute compute, uint64_t seed) {
    SCOPED_TRACE(::testing::Message() << "N=" << N << " C=" << C << " V=" << V << " head=" << wc.name
                                      << " train=" << train << " compute=" << compute_name(compute));
    const double tol = gemm_tol(compute);
    Dev dev;
    const auto x = random_floats(size_t(N * C), seed);
    const HostWeight hw = make_weight(random_floats(size_t(V * C), seed + 1, 0.5f), V, C, wc.dtype, wc.nf4_dq);
    std::vector<int32_t> targets(static_cast<size_t>(N));
    Rng rng(seed + 2);
    for (auto& t : targets) t = (rng.next() % 1000) < uint64_t(ignored_frac * 1000) ? -100 : rng.below(int(V));
    const bool dhead_on = train && wc.dtype == DType::F32;
    const auto dhead0 = random_floats(size_t(V * C), seed + 3);
    const float grad_scale = 1.0f / float(N);

    std::vector<float> losses(size_t(N), 9.0f), lse(size_t(N), 9.0f), dx(size_t(N * C), 9.0f), dhead = dhead0;
    const int64_t count = cpu::lm_head_cross_entropy(losses.data(), lse.data(), train ? dx.data() : nullptr,
                                                     dhead_on ? dhead.data() : nullptr, x.data(), hw.view,
                                                     targets.data(), N, grad_scale);

    const WeightView hd = to_device(dev, hw);
    float *xd = dev.up(x), *lossd = dev.up(std::vector<float>(size_t(N), 7.0f));
    float* lsed = dev.up(std::vector<float>(size_t(N), 7.0f));
    float* dxd = dev.up(std::vector<float>(size_t(N * C), 7.0f));  // garbage: overwritten
    float* dheadd = dev.up(dhead0);
    int32_t* td = dev.up(targets);
    cuda::reserve_workspace(cuda::cross_entropy_workspace_bytes(N, hw.view));
    const int64_t got = cuda::lm_head_cross_entropy(lossd, lsed, train ? dxd : nullptr, dhead_on ? dheadd : nullptr,
                                                    xd, hd, td, N, grad_scale);
    EXPECT_EQ(got, count);
    expect_near(Dev::down(lossd, size_t(N)), losses, tol, "losses");
    expect_near(Dev::down(lsed, size_t(N)), lse, tol, "lse");
    if (train) expect_near(Dev::down(dxd, dx.size()), dx, tol, "dx");
    if (dhead_on) expect_near(Dev::down(dheadd, dhead.size()), dhead, tol, "dhead (+=)");
}

TEST(CudaCrossEntropy, IgnoredTargetsManyChunksF32) {
    TUNER_REQUIRE_CUDA();
    // 16 x 1000 logits per chunk: 16-row chunks, so ~70 active rows take 5 chunks.
    ComputeScope scope(cuda::MatmulCompute::F32, 0, 16 * 1000);
    check_cross_entropy(100, 64, 1000, weight_cases()[0], true, 0.3, cuda::MatmulCompute::F32, 71);
    check_cross_entropy(100, 64, 1000, weight_cases()[0], false, 0.3, cuda::MatmulCompute::F32, 72);  // evaluation
}

TEST(CudaCrossEntropy, FrozenHeadsAndBF16) {
    TUNER_REQUIRE_CUDA();
    for (cuda::MatmulCompute c : {cuda::MatmulCompute::F32, cuda::MatmulCompute::BF16}) {
        ComputeScope scope(c);
        for (const WeightCase& wc : weight_cases())
            if (wc.dtype != DType::Q4_K && wc.dtype != DType::Q5_K && wc.dtype != DType::Q6_K)  // C = 64: no K types
                check_cross_entropy(90, 64, 3001, wc, true, 0.2, c, 81);
    }
}

TEST(CudaCrossEntropy, AllIgnored) {
    TUNER_REQUIRE_CUDA();
    ComputeScope scope(cuda::MatmulCompute::F32);
    check_cross_entropy(20, 32, 50, weight_cases()[0], true, 1.0, cuda::MatmulCompute::F32, 91);
}

TEST(CudaCrossEntropy, TargetOutsideVocabularyIsAnError) {
    TUNER_REQUIRE_CUDA();
    ComputeScope scope(cuda::MatmulCompute::F32);
    Dev dev;
    const int64_t N = 4, C = 32, V = 50;
    const auto x = random_floats(size_t(N * C), 1), head = random_floats(size_t(V * C), 2);
    float *xd = dev.up(x), *hd = dev.up(head), *lossd = dev.zeros<float>(static_cast<size_t>(N));
    int32_t* td = dev.up(std::vector<int32_t>{1, 2, 50, -100});
    const std::string msg = tuner::testing::error_of([&] {
        cuda::lm_head_cross_entropy(lossd, nullptr, nullptr, nullptr, xd, WeightView{hd, DType::F32, V, C}, td, N,
                                    1.0f);
    });
    EXPECT_CONTAINS(msg, "outside the vocabulary");
}

// =============================================================================================
// bf16 activations (kernels.h ActIn / ActOut)
// =============================================================================================
//
// Each op that takes an ActIn / ActOut runs on the device with bf16 storage and is compared with
// the CPU backend given the same bf16 inputs (backend/cpu/act_f32.h: widen on load, f32 math,
// round to nearest even on store: the reference). Inputs are random floats rounded to bf16, so
// both sides read exactly the same values. Tolerances:
//  * lora_dropout_forward: bit-exact (one rounded f32 multiply, then one rounding to bf16).
//  * swiglu h, rope, rmsnorm / add_rmsnorm out: at most 1 bf16 ulp per element (the f32 values
//    differ by a few f32 ulp, see the f32 tolerances above; rounding to bf16 makes them equal
//    except where they straddle a rounding boundary). x_sum of add_rmsnorm, rstd and the f32
//    outputs of mixed calls keep the f32 tolerances (exact / 1e-5).
//  * matmul: the BF16 GEMM tolerance (2e-2 of the tensor's max) wherever the CPU multiplies f32
//    weights the device rounds to bf16; with a BF16 weight both sides multiply the same numbers
//    and the outputs are held to 2 bf16 ulps of the tensor's max (the device sums in another
//    order and, with a bias, rounds the GEMM result to bf16 before adding the bias), f32 outputs
//    to 1e-5. bf16 activations under F32 compute are an error (matmul.cu).
//  * attention: out within 1 bf16 ulp of the tensor's max plus the f32 tolerance for the f32
//    kernels (F32 compute, head dim > 128), 1e-2 for the tensor-core kernels (as their f32
//    test); lse and the f32 gradients keep the tolerances of attention_tol.
// TUNER_PRINT_ERRORS=1 prints the worst error of every comparison.

bool print_errors() {
    const char* e = std::getenv("TUNER_PRINT_ERRORS");
    return e && *e && std::strcmp(e, "0") != 0;
}

// Random floats already representable in bf16 (so an f32 copy and a bf16 copy hold the same values).
std::vector<float> random_bf16_values(size_t n, uint64_t seed, float scale = 1.0f) {
    return from_bf16(to_bf16(random_floats(n, seed, scale)));
}

ActIn bf16_in(const uint16_t* p) { return ActIn{p, DType::BF16}; }
ActOut bf16_out(uint16_t* p) { return ActOut{p, DType::BF16}; }

// bf16 values ordered as integers (so adjacent bf16 values are 1 apart across zero too).
int32_t bf16_ordered(uint16_t b) { return (b & 0x8000u) ? -int32_t(b & 0x7fffu) : int32_t(b); }

// Every element within max_ulps bf16 ulps of the reference (0: bit-exact).
void expect_bf16_ulps(const Bf16& got, const Bf16& want, int max_ulps, const std::string& what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    size_t bad = 0, differ = 0, worst = 0;
    int32_t worst_d = -1;
    for (size_t i = 0; i < got.size(); i++) {
        const int32_t d = std::abs(bf16_ordered(got[i]) - bf16_ordered(want[i]));
        if (d > 0) differ++;
        if (d > max_ulps) bad++;
        if (d > worst_d) worst_d = d, worst = i;
    }
    if (print_errors())
        std::printf("[bf16] %s: worst %d bf16 ulp, %zu of %zu elements differ\n", what.c_str(), worst_d, differ,
                    got.size());
    EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << got.size() << " elements more than " << max_ulps
                       << " bf16 ulp from the cpu; worst [" << worst << "] gpu " << from_bf16({got[worst]})[0]
                       << " cpu " << from_bf16({want[worst]})[0] << " (" << worst_d << " ulp)";
}

// One bf16 ulp at the magnitude of m (the spacing of bf16 values in [2^e, 2^(e+1)) is 2^(e-7)).
double bf16_ulp_of(double m) {
    if (m <= 0.0) return 0.0;
    int e = 0;
    std::frexp(m, &e);  // m = f * 2^e, f in [0.5, 1): m in [2^(e-1), 2^e)
    return std::ldexp(1.0, e - 1 - 7);
}

// max |got - want| <= ulps * (bf16 ulp of max |want|) + rel * max |want|: for bf16 outputs of
// ops whose error is norm-wise (sums with cancelling terms).
void expect_bf16_near(const std::vector<float>& got, const std::vector<float>& want, double ulps, double rel,
                      const std::string& what) {
    double scale = 0.0;
    for (float w : want) scale = std::max(scale, double(std::fabs(w)));
    const double tol = ulps * bf16_ulp_of(scale) + rel * scale;
    // As a tolerance relative to max |want| (all-zero want: compared by value, tol 0).
    const double worst = expect_near(got, want, scale > 0 ? tol / scale : 1.0, what);
    if (print_errors())
        std::printf("[bf16] %s: worst |err| = %.3g of max|cpu| (%.3g bf16 ulp of max; tol %.3g)\n", what.c_str(),
                    worst, worst * scale / bf16_ulp_of(scale), tol);
}

// expect_near that also prints the worst relative error under TUNER_PRINT_ERRORS.
void expect_near_p(const std::vector<float>& got, const std::vector<float>& want, double tol, const std::string& what,
                   double min_scale = 0.0) {
    const double worst = expect_near(got, want, tol, what, min_scale);
    if (print_errors()) std::printf("[bf16] %s: worst |err| / max|cpu| %.3g (tol %.3g)\n", what.c_str(), worst, tol);
}

TEST(CudaBf16Acts, SwiGLU) {
    TUNER_REQUIRE_CUDA();
    Dev dev;
    const int64_t n = 3 * 1536 + 7;
    const auto gate = random_bf16_values(size_t(n), 303, 6.0f), up = random_bf16_values(size_t(n), 304);
    const auto dh = random_floats(size_t(n), 305);
    const Bf16 gb = to_bf16(gate), ub = to_bf16(up);
    uint16_t *gd = dev.up(gb), *ud = dev.up(ub);
    float *gfd = dev.up(gate), *dhd = dev.up(dh);

    // bf16 gate, up -> bf16 h.
    Bf16 h(static_cast<size_t>(n));
    cpu::swiglu_forward(bf16_out(h.data()), bf16_in(gb.data()), bf16_in(ub.data()), n);
    uint16_t* hd = dev.zeros<uint16_t>(size_t(n));
    cuda::swiglu_forward(bf16_out(hd), bf16_in(gd), bf16_in(ud), n);
    expect_bf16_ulps(Dev::down(hd, size_t(n)), h, 1, "swiglu h (bf16 in, bf16 out)");

    // Mixed: f32 gate, bf16 up -> f32 h (the same values as the f32 op: f32 tolerance).
    std::vector<float> hf(static_cast<size_t>(n));
    cpu::swiglu_forward(hf.data(), gate.data(), bf16_in(ub.data()), n);
    float* hfd = dev.zeros<float>(size_t(n));
    cuda::swiglu_forward(hfd, gfd, bf16_in(ud), n);
    expect_near_p(Dev::down(hfd, size_t(n)), hf, 1e-5, "swiglu h (f32 gate, bf16 up, f32 out)");

    // Backward from bf16 gate, up: f32 gradients, f32 tolerance.
    std::vector<float> dgate(static_cast<size_t>(n)), dup(static_cast<size_t>(n));
    cpu::swiglu_backward(dgate.data(), dup.data(), dh.data(), bf16_in(gb.data()), bf16_in(ub.data()), n);
    float *dgd = dev.zeros<float>(size_t(n)), *dud = dev.zeros<float>(size_t(n));
    cuda::swiglu_backward(dgd, dud, dhd, bf16_in(gd), bf16_in(ud), n);
    expect_near_p(Dev::down(dgd, size_t(n)), dgate, 1e-5, "swiglu dgate (bf16 gate, up)");
    expect_near_p(Dev::down(dud, size_t(n)), dup, 1e-5, "swiglu dup (bf16 gate, up)");
}

TEST(CudaBf16Acts, Rope) {
    TUNER_REQUIRE_CUDA();
    for (int HD : {8, 64, 128}) {
        SCOPED_TRACE(HD);
        Dev dev;
        const int64_t N = 300;
        const int H = 5;
        std::vector<int32_t> pos(static_cast<size_t>(N));
        Rng rng(307);
        for (auto& p : pos) p = rng.below(8192);
        const auto inv_freq = inv_freq_for(HD, 500000.0);
        const Bf16 x = to_bf16(random_floats(size_t(N * H * HD), 308));
        Bf16 y = x;
        cpu::rope_forward(bf16_out(y.data()), pos.data(), inv_freq.data(), N, H, HD);
        uint16_t* yd = dev.up(x);
        cuda::rope_forward(bf16_out(yd), dev.up(pos), dev.up(inv_freq), N, H, HD);
        expect_bf16_ulps(Dev::down(yd, x.size()), y, 1, "rope forward in place (bf16)");
    }
}

TEST(CudaBf16Acts, RMSNormAndAddRMSNorm) {
    TUNER_REQUIRE_CUDA();
    for (int64_t C : {37, 576, 4096}) {
        SCOPED_TRACE(C);
        Dev dev;
        const int64_t N = 133;
        const auto x = random_floats(size_t(N * C), 309, 3.0f), w = random_floats(size_t(C), 310);
        const auto b = random_floats(size_t(N * C), 311);
        Bf16 out(size_t(N * C)), out2(size_t(N * C));
        std::vector<float> rstd(static_cast<size_t>(N)), rstd2(static_cast<size_t>(N)), sum(size_t(N * C));
        cpu::rmsnorm_forward(bf16_out(out.data()), rstd.data(), x.data(), w.data(), N, C, 1e-6f);
        cpu::add_rmsnorm_forward(sum.data(), bf16_out(out2.data()), rstd2.data(), x.data(), b.data(), w.data(), N, C,
                                 1e-6f);
        float *xd = dev.up(x), *wd = dev.up(w), *rd = dev.zeros<float>(size_t(N));
        uint16_t* od = dev.zeros<uint16_t>(out.size());
        cuda::rmsnorm_forward(bf16_out(od), rd, xd, wd, N, C, 1e-6f);
        expect_bf16_ulps(Dev::down(od, out.size()), out, 1, "rmsnorm out (bf16)");
        expect_near_p(Dev::down(rd, rstd.size()), rstd, 1e-5, "rmsnorm rstd (bf16 out)");
        float *ad = dev.up(x), *bd = dev.up(b);
        cuda::add_rmsnorm_forward(ad, bf16_out(od), rd, ad, bd, wd, N, C, 1e-6f);  // x_sum aliasing a
        EXPECT_EQ(Dev::down(ad, sum.size()), sum);                                  // one f32 add: exact
        expect_bf16_ulps(Dev::down(od, out2.size()), out2, 1, "add_rmsnorm out (bf16)");
        expect_near_p(Dev::down(rd, rstd2.size()), rstd2, 1e-5, "add_rmsnorm rstd (bf16 out)");
    }
}

TEST(CudaBf16Acts, LoraDropoutEveryDtypePairBitExact) {
    TUNER_REQUIRE_CUDA();
    Dev dev;
    const int64_t n = 100003;
    const float p = 0.1f;
    const uint64_t key = 0x1234abcd5678ull;
    const auto x = random_floats(size_t(n), 312);
    const Bf16 xb = to_bf16(x);
    float* xfd = dev.up(x);
    uint16_t* xbd = dev.up(xb);
    const uint32_t thr = lora_dropout_threshold(p);
    const float keep = 1.0f / (1.0f - p);
    for (bool in16 : {false, true}) {
        for (bool out16 : {false, true}) {
            const std::string what = std::string("lora_dropout_forward ") + (in16 ? "bf16" : "f32") + " -> " +
                                     (out16 ? "bf16" : "f32");
            const ActIn xin = in16 ? bf16_in(xb.data()) : ActIn(x.data());
            const ActIn xdev = in16 ? bf16_in(xbd) : ActIn(xfd);
            if (out16) {
                Bf16 want(static_cast<size_t>(n));
                lora_dropout_forward(bf16_out(want.data()), xin, n, key, p);
                uint16_t* od = dev.zeros<uint16_t>(size_t(n));
                cuda::lora_dropout_forward(bf16_out(od), xdev, n, key, thr, keep);
                expect_bf16_ulps(Dev::down(od, size_t(n)), want, 0, what);
            } else {
                std::vector<float> want(static_cast<size_t>(n));
                lora_dropout_forward(want.data(), xin, n, key, p);
                float* od = dev.zeros<float>(size_t(n));
                cuda::lora_dropout_forward(od, xdev, n, key, thr, keep);
                expect_near(Dev::down(od, size_t(n)), want, 0.0, what);
            }
        }
    }
    // In place on bf16 (out aliases x, as nn/lora.h allows).
    Bf16 want = xb;
    lora_dropout_forward(bf16_out(want.data()), bf16_in(want.data()), n, key, p);
    uint16_t* inplace = dev.up(xb);
    cuda::lora_dropout_forward(bf16_out(inplace), bf16_in(inplace), n, key, thr, keep);
    expect_bf16_ulps(Dev::down(inplace, size_t(n)), want, 0, "lora_dropout_forward bf16 in place");
}

// matmul with bf16 x and / or y (BF16 compute) against the CPU given the same bf16 values.
void check_matmul_bf16_acts(int64_t N, int64_t in, int64_t out, const WeightCase& wc) {
    SCOPED_TRACE(::testing::Message() << "N=" << N << " in=" << in << " out=" << out << " weight=" << wc.name);
    const bool same_operands = wc.dtype == DType::BF16;  // both sides multiply exactly the same numbers
    const double gemm = gemm_tol(cuda::MatmulCompute::BF16);
    // bf16 outputs: 2 bf16 ulps of the max (same operands) or the GEMM tolerance; f32 outputs:
    // 1e-5 (same operands) or the GEMM tolerance.
    const double ulps16 = same_operands ? 2.0 : 0.0, rel16 = same_operands ? 0.0 : gemm;
    const double tol32 = same_operands ? 1e-5 : gemm;
    Dev dev;
    const auto x = random_bf16_values(size_t(N * in), 321), bias = random_floats(size_t(out), 322);
    const auto y0 = random_bf16_values(size_t(N * out), 323), dy = random_floats(size_t(N * out), 324);
    const HostWeight hw = make_weight(random_floats(size_t(out * in), 325, 0.5f), out, in, wc.dtype, wc.nf4_dq);
    const WeightView wd = to_device(dev, hw);
    const Bf16 xb = to_bf16(x), y0b = to_bf16(y0);
    uint16_t* xbd = dev.up(xb);
    float *xfd = dev.up(x), *bd = dev.up(bias), *dyd = dev.up(dy);
    const std::string w = std::string(" [") + wc.name + " weight]";

    // bf16 x -> bf16 y, with bias.
    Bf16 y(size_t(N * out));
    cpu::matmul_forward(bf16_out(y.data()), bf16_in(xb.data()), hw.view, bias.data(), N, false);
    uint16_t* yd = dev.zeros<uint16_t>(y.size());
    cuda::matmul_forward(bf16_out(yd), bf16_in(xbd), wd, bd, N, false);
    expect_bf16_near(from_bf16(Dev::down(yd, y.size())), from_bf16(y), ulps16, rel16,
                     "matmul_forward bf16 x -> bf16 y, bias" + w);

    // accumulate = true into a bf16 y (no bias): y = bf16(y + x W^T).
    Bf16 yacc = y0b;
    cpu::matmul_forward(bf16_out(yacc.data()), bf16_in(xb.data()), hw.view, nullptr, N, true);
    uint16_t* yaccd = dev.up(y0b);
    cuda::matmul_forward(bf16_out(yaccd), bf16_in(xbd), wd, nullptr, N, true);
    expect_bf16_near(from_bf16(Dev::down(yaccd, yacc.size())), from_bf16(yacc), ulps16, rel16,
                     "matmul_forward bf16 x -> bf16 y (+=)" + w);

    // Mixed: bf16 x -> f32 y (bias), f32 x -> bf16 y, f32 x += into bf16 y with bias.
    std::vector<float> yf(size_t(N * out));
    cpu::matmul_forward(yf.data(), bf16_in(xb.data()), hw.view, bias.data(), N, false);
    float* yfd = dev.zeros<float>(yf.size());
    cuda::matmul_forward(yfd, bf16_in(xbd), wd, bd, N, false);
    expect_near_p(Dev::down(yfd, yf.size()), yf, tol32, "matmul_forward bf16 x -> f32 y, bias" + w);

    Bf16 y2(size_t(N * out));
    cpu::matmul_forward(bf16_out(y2.data()), x.data(), hw.view, nullptr, N, false);
    uint16_t* y2d = dev.zeros<uint16_t>(y2.size());
    cuda::matmul_forward(bf16_out(y2d), xfd, wd, nullptr, N, false);
    expect_bf16_near(from_bf16(Dev::down(y2d, y2.size())), from_bf16(y2), ulps16, rel16,
                     "matmul_forward f32 x -> bf16 y" + w);

    Bf16 y3 = y0b;
    cpu::matmul_forward(bf16_out(y3.data()), x.data(), hw.view, bias.data(), N, true);
    uint16_t* y3d = dev.up(y0b);
    cuda::matmul_forward(bf16_out(y3d), xfd, wd, bd, N, true);
    expect_bf16_near(from_bf16(Dev::down(y3d, y3.size())), from_bf16(y3), ulps16, rel16,
                     "matmul_forward f32 x -> bf16 y (+=), bias" + w);

    // Weight gradient from a bf16 x (dy is f32 and rounded to bf16 on the device: GEMM tolerance).
    if (wc.dtype != DType::F32) return;
    const auto dw0 = random_floats(size_t(out * in), 326), db0 = random_floats(size_t(out), 327);
    std::vector<float> dw = dw0, db = db0;
    cpu::matmul_backward_weight(dw.data(), db.data(), dy.data(), bf16_in(xb.data()), N, out, in);
    float *dwd = dev.up(dw0), *dbd = dev.up(db0);
    cuda::matmul_backward_weight(dwd, dbd, dyd, bf16_in(xbd), N, out, in);
    expect_near_p(Dev::down(dwd, dw.size()), dw, gemm, "matmul_backward_weight dW (+=), bf16 x");
    expect_near_p(Dev::down(dbd, db.size()), db, 1e-5, "matmul_backward_weight dbias (+=), bf16 x");
}

TEST(CudaBf16Acts, MatmulBf16ActivationsAndMixedCalls) {
    TUNER_REQUIRE_CUDA();
    ComputeScope scope(cuda::MatmulCompute::BF16);
    check_matmul_bf16_acts(37, 40, 24, weight_cases()[0]);  // odd sizes
    for (int i : {0, 1, 3}) check_matmul_bf16_acts(67, 512, 200, weight_cases()[size_t(i)]);  // F32, BF16, NF4
}

TEST(CudaBf16Acts, MatmulBf16YSeveralWeightTiles) {
    TUNER_REQUIRE_CUDA();
    // 64-row tiles of W: columns [r0, r0 + rows) of a bf16 y written per tile (y.offset(r0)).
    ComputeScope scope(cuda::MatmulCompute::BF16, 64 * 512);
    for (int i : {0, 3, 5}) check_matmul_bf16_acts(67, 512, 200, weight_cases()[size_t(i)]);  // F32, NF4, Q8_0
}

// A gradient rounded to bf16 once (to_bf16, bit-exact against the CPU) and handed to the backward
// GEMMs as bf16 gives exactly what they compute from the f32 dy under BF16 compute (they round it
// to bf16 themselves then): the input gradient through tiled and untiled weights, the weight
// gradient and, for the bias, the column sums of the rounded values (against the CPU given them).
TEST(CudaBf16Acts, MatmulBackwardFromBf16GradientIsUnchanged) {
    TUNER_REQUIRE_CUDA();
    ComputeScope scope(cuda::MatmulCompute::BF16, 64 * 96);  // NF4: 64-row weight tiles
    Dev dev;
    const int64_t N = 53, in = 96, out = 200;
    const auto dy = random_floats(size_t(N * out), 331), x = random_bf16_values(size_t(N * in), 332);
    Bf16 dyb(dy.size());
    cpu::to_bf16(dyb.data(), dy.data(), N * out);
    float* dyd = dev.up(dy);
    uint16_t* dybd = dev.zeros<uint16_t>(dyb.size());
    cuda::to_bf16(dybd, dyd, N * out);
    expect_bf16_ulps(Dev::down(dybd, dyb.size()), dyb, 0, "to_bf16");
    for (int i : {0, 1, 3}) {  // F32, BF16, NF4 weights
        const WeightCase& wc = weight_cases()[size_t(i)];
        SCOPED_TRACE(wc.name);
        const HostWeight hw = make_weight(random_floats(size_t(out * in), 333, 0.5f), out, in, wc.dtype, wc.nf4_dq);
        const WeightView wd = to_device(dev, hw);
        float *dx32 = dev.zeros<float>(size_t(N * in)), *dx16 = dev.zeros<float>(size_t(N * in));
        cuda::matmul_backward_input(dx32, dyd, wd, N, false);
        cuda::matmul_backward_input(dx16, bf16_in(dybd), wd, N, false);
        expect_near(Dev::down(dx16, size_t(N * in)), Dev::down(dx32, size_t(N * in)), 0.0,
                    "matmul_backward_input, bf16 dy vs f32 dy");
    }
    const Bf16 xb = to_bf16(x);
    uint16_t* xbd = dev.up(xb);
    const auto dw0 = random_floats(size_t(out * in), 334), db0 = random_floats(size_t(out), 335);
    float *dw32 = dev.up(dw0), *dw16 = dev.up(dw0), *db16 = dev.up(db0);
    cuda::matmul_backward_weight(dw32, nullptr, dyd, bf16_in(xbd), N, out, in);
    cuda::matmul_backward_weight(dw16, db16, bf16_in(dybd), bf16_in(xbd), N, out, in);
    expect_near(Dev::down(dw16, dw0.size()), Dev::down(dw32, dw0.size()), 0.0,
                "matmul_backward_weight, bf16 dy vs f32 dy");
    std::vector<float> dw = dw0, db = db0;
    cpu::matmul_backward_weight(dw.data(), db.data(), bf16_in(dyb.data()), bf16_in(xb.data()), N, out, in);
    expect_near_p(Dev::down(db16, db.size()), db, 1e-5, "matmul_backward_weight dbias (+=) from bf16 dy");
    expect_near_p(Dev::down(dw16, dw.size()), dw, 1e-5, "matmul_backward_weight dW (+=) from bf16 dy and x");
    // Under F32 compute a bf16 dy is refused, as a bf16 x is.
    ComputeScope f32(cuda::MatmulCompute::F32);
    EXPECT_CONTAINS(tuner::testing::error_of([&] {
                        cuda::matmul_backward_input(dev.zeros<float>(size_t(N * in)), bf16_in(dybd),
                                                    WeightView{dw32, DType::F32, out, in}, N, false);
                    }),
                    "dy is a bf16 activation");
}

TEST(CudaBf16Acts, MatmulEmptyProductZeroesBf16Y) {
    TUNER_REQUIRE_CUDA();
    ComputeScope scope(cuda::MatmulCompute::BF16);
    Dev dev;
    const int64_t N = 5, out = 7;
    const Bf16 garbage = to_bf16(random_floats(size_t(N * out), 328));
    uint16_t* yd = dev.up(garbage);
    float* xd = dev.zeros<float>(1);
    float* wdata = dev.zeros<float>(1);
    cuda::matmul_forward(bf16_out(yd), bf16_in(reinterpret_cast<const uint16_t*>(xd)),
                         WeightView{wdata, DType::F32, out, 0}, nullptr, N, false);
    expect_bf16_ulps(Dev::down(yd, garbage.size()), Bf16(garbage.size(), 0), 0, "matmul_forward in = 0, bf16 y");
}

TEST(CudaBf16Acts, MatmulBf16ActivationNeedsBf16Compute) {
    TUNER_REQUIRE_CUDA();
    for (cuda::MatmulCompute c : {cuda::MatmulCompute::F32, cuda::MatmulCompute::TF32}) {
        ComputeScope scope(c);
        Dev dev;
        const int64_t N = 8, in = 16, out = 8;
        uint16_t* xd = dev.zeros<uint16_t>(size_t(N * in));
        float* yd = dev.zeros<float>(size_t(N * out));
        float* wdata = dev.zeros<float>(size_t(out * in));
        const WeightView w{wdata, DType::F32, out, in};
        const std::string m1 = tuner::testing::error_of([&] { cuda::matmul_forward(yd, bf16_in(xd), w, nullptr, N, false); });
        EXPECT_CONTAINS(m1, "matmul_forward");
        EXPECT_CONTAINS(m1, "bf16");
        const std::string m2 = tuner::testing::error_of(
            [&] { cuda::matmul_forward(bf16_out(xd), yd, WeightView{wdata, DType::F32, in, out}, nullptr, N, false); });
        EXPECT_CONTAINS(m2, "bf16");
        const std::string m3 =
            tuner::testing::error_of([&] { cuda::matmul_backward_weight(wdata, nullptr, yd, bf16_in(xd), N, out, in); });
        EXPECT_CONTAINS(m3, "matmul_backward_weight");
    }
}

// Attention with q, k, v and out in the given dtypes (bf16 storage where true), forward and
// backward, against the CPU given the same bf16 values.
void check_attention_bf16(const AttnShape& s, bool segments, uint64_t seed, cuda::MatmulCompute compute, bool qkv16,
                          bool out16) {
    SCOPED_TRACE(::testing::Message() << "B=" << s.B << " T=" << s.T << " NH=" << s.NH << " NKV=" << s.NKV
                                      << " HD=" << s.HD << " segments=" << segments << " compute="
                                      << compute_name(compute) << " qkv=" << (qkv16 ? "bf16" : "f32")
                                      << " out=" << (out16 ? "bf16" : "f32"));
    ComputeScope scope(compute);
    const AttnTol tol = attention_tol(compute, s.HD);
    const bool tc = compute == cuda::MatmulCompute::BF16 && s.HD <= 128;
    Dev dev;
    cuda::reserve_workspace(std::max<size_t>(cuda::attention_workspace_bytes(s), 1));
    const size_t nq = size_t(s.B) * s.T * s.NH * s.HD, nkv = size_t(s.B) * s.T * s.NKV * s.HD;
    const size_t nl = size_t(s.B) * s.NH * s.T;
    const auto q = random_bf16_values(nq, seed), k = random_bf16_values(nkv, seed + 1);
    const auto v = random_bf16_values(nkv, seed + 2), dout = random_floats(nq, seed + 3);
    const Bf16 qb = to_bf16(q), kb = to_bf16(k), vb = to_bf16(v);
    const std::vector<int32_t> seg = segments ? random_segments(s.B, s.T, seed + 4, 40) : std::vector<int32_t>();
    const int32_t* seg_h = segments ? seg.data() : nullptr;
    const ActIn qh = qkv16 ? bf16_in(qb.data()) : ActIn(q.data()), kh = qkv16 ? bf16_in(kb.data()) : ActIn(k.data()),
                vh = qkv16 ? bf16_in(vb.data()) : ActIn(v.data());
    const ActIn qd = qkv16 ? bf16_in(dev.up(qb)) : ActIn(dev.up(q)), kd = qkv16 ? bf16_in(dev.up(kb)) : ActIn(dev.up(k)),
                vd = qkv16 ? bf16_in(dev.up(vb)) : ActIn(dev.up(v));
    const int32_t* segd = segments ? dev.up(seg) : nullptr;
    float* doutd = dev.up(dout);

    // Forward: out in f32 or bf16; the reference's out (as stored) also feeds both backwards.
    std::vector<float> lse(nl), out_f(nq);
    Bf16 out_b(out16 ? nq : 0);
    const ActOut out_h = out16 ? bf16_out(out_b.data()) : ActOut(out_f.data());
    cpu::attention_forward(out_h, lse.data(), qh, kh, vh, seg_h, s);
    float* ld = dev.zeros<float>(nl);
    void* od = out16 ? static_cast<void*>(dev.zeros<uint16_t>(nq)) : static_cast<void*>(dev.zeros<float>(nq));
    const ActOut out_d{od, out16 ? DType::BF16 : DType::F32};
    cuda::attention_forward(out_d, ld, qd, kd, vd, segd, s);
    if (out16) {
        const std::vector<float> got = from_bf16(Dev::down(static_cast<uint16_t*>(od), nq)), want = from_bf16(out_b);
        if (tc) expect_bf16_near(got, want, 0.0, tol.out, "attention out (bf16)");
        else expect_bf16_near(got, want, 1.0, tol.out, "attention out (bf16)");
    } else {
        expect_near_p(Dev::down(static_cast<float*>(od), nq), out_f, tol.out, "attention out (f32)");
    }
    expect_near_p(Dev::down(ld, nl), lse, tol.lse, "attention lse");

    // Backward from the CPU's out and lse.
    std::vector<float> dq(nq), dk(nkv), dv(nkv);
    cpu::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), qh, kh, vh, ActIn(out_h), lse.data(), seg_h,
                            s);
    if (out16) cuda::copy_to_device(od, out_b.data(), nq * 2);
    else cuda::copy_to_device(od, out_f.data(), nq * 4);
    cuda::copy_to_device(ld, lse.data(), nl * 4);
    float *dqd = dev.zeros<float>(nq), *dkd = dev.zeros<float>(nkv), *dvd = dev.zeros<float>(nkv);
    cuda::attention_backward(dqd, dkd, dvd, doutd, qd, kd, vd, ActIn(out_d), ld, segd, s);
    expect_near_p(Dev::down(dqd, nq), dq, tol.grad, "attention dq", tol.grad_min_scale);
    expect_near_p(Dev::down(dkd, nkv), dk, tol.grad, "attention dk", tol.grad_min_scale);
    expect_near_p(Dev::down(dvd, nkv), dv, tol.grad, "attention dv", tol.grad_min_scale);
}

// The tensor-core kernels (BF16 compute, HD <= 128; both implementations): bf16 q, k, v staged
// as stored, out written as bf16; HD = 30 takes WMMA's scalar (not 4-wide) global accesses.
TEST(CudaBf16Acts, AttentionTensorCores) {
    TUNER_REQUIRE_CUDA();
    const auto bf16 = cuda::MatmulCompute::BF16;
    for_each_attention_kernels([&] {
        check_attention_bf16({.B = 2, .T = 100, .NH = 4, .NKV = 2, .HD = 64}, false, 401, bf16, true, true);
        check_attention_bf16({.B = 1, .T = 150, .NH = 4, .NKV = 2, .HD = 128}, true, 402, bf16, true, true);
        check_attention_bf16({.B = 1, .T = 77, .NH = 4, .NKV = 2, .HD = 30}, true, 403, bf16, true, true);
        check_attention_bf16({.B = 1, .T = 77, .NH = 4, .NKV = 2, .HD = 64}, true, 404, bf16, true, false);  // mixed
        check_attention_bf16({.B = 1, .T = 77, .NH = 4, .NKV = 2, .HD = 64}, true, 405, bf16, false, true);  // mixed
    });
}

// The f32 kernels with bf16 storage: F32 compute, and head dims over 128 under BF16 compute.
TEST(CudaBf16Acts, AttentionF32Kernels) {
    TUNER_REQUIRE_CUDA();
    const auto f32 = cuda::MatmulCompute::F32;
    check_attention_bf16({.B = 2, .T = 100, .NH = 4, .NKV = 2, .HD = 64}, true, 411, f32, true, true);
    check_attention_bf16({.B = 1, .T = 77, .NH = 4, .NKV = 2, .HD = 30}, true, 412, f32, true, true);
    check_attention_bf16({.B = 1, .T = 77, .NH = 4, .NKV = 2, .HD = 64}, false, 413, f32, true, false);  // mixed
    check_attention_bf16({.B = 1, .T = 77, .NH = 4, .NKV = 2, .HD = 64}, false, 414, f32, false, true);  // mixed
    check_attention_bf16({.B = 1, .T = 77, .NH = 4, .NKV = 2, .HD = 256}, true, 415, cuda::MatmulCompute::BF16, true,
                         true);
}

// =============================================================================================
// AdamW
// =============================================================================================

// One f32 operation rounded once, whatever the compiler's contraction settings: not inlined,
// so a multiply and the add of its product cannot fuse into one FMA (GNU C++ contracts across
// inlined calls, even through casts to double and back).
[[gnu::noinline]] float mul_rn(float a, float b) { return a * b; }
[[gnu::noinline]] float add_rn(float a, float b) { return a + b; }
[[gnu::noinline]] float div_rn(float a, float b) { return a / b; }
[[gnu::noinline]] float sqrt_rn(float a) { return std::sqrt(a); }

// cuda_backend.h's AdamW step, each operation rounded separately in torch's order.
void adamw_reference(float* p, const float* g, float* m, float* v, int64_t n, const cuda::AdamWScalars& s) {
    for (int64_t i = 0; i < n; i++) {
        const float pi = s.decays ? mul_rn(p[i], s.decay) : p[i];
        const float mi = add_rn(mul_rn(m[i], s.beta1), mul_rn(g[i], s.one_minus_beta1));
        const float vi = add_rn(mul_rn(v[i], s.beta2), mul_rn(mul_rn(g[i], g[i]), s.one_minus_beta2));
        const float denom = add_rn(div_rn(sqrt_rn(vi), s.bias_correction2_sqrt), s.eps);
        p[i] = add_rn(pi, div_rn(mul_rn(s.neg_step_size, mi), denom));
        m[i] = mi, v[i] = vi;
    }
}

// The kernel against (1) the step as specified, every operation rounded separately, and (2) the
// CPU's AdamW (train/adamw.cpp, compiled without FMA contraction, so the same operations):
// bit-exact against both.
TEST(CudaAdamW, MatchesCpuAdamW) {
    TUNER_REQUIRE_CUDA();
    for (double wd : {0.0, 0.1}) {
        SCOPED_TRACE(wd);
        Dev dev;
        const int64_t n = 100003;
        std::vector<float> p = random_floats(size_t(n), 101), g(static_cast<size_t>(n));
        const std::vector<float> p0 = p;
        std::vector<float> pr = p0, mr(size_t(n), 0.0f), vr(size_t(n), 0.0f);
        Param param;
        param.name = "w";
        param.value = Tensor::view(p.data(), DType::F32, {n});
        param.grad = Tensor::view(g.data(), DType::F32, {n});
        const AdamWConfig cfg{.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = wd};
        AdamW opt({&param}, cfg);
        float *pd = dev.up(p0), *gd = dev.zeros<float>(static_cast<size_t>(n));
        float *md = dev.zeros<float>(static_cast<size_t>(n)), *vd = dev.zeros<float>(static_cast<size_t>(n));
        for (int step = 1; step <= 3; step++) {
            const std::vector<float> gn = random_floats(size_t(n), uint64_t(200 + step), float(step));
            std::copy(gn.begin(), gn.end(), g.begin());  // in place: param.grad points at g's buffer
            const double lr = cfg.lr * step;  // a schedule: the lr changes per step
            opt.step(lr);
            const cuda::AdamWScalars sc = cuda::adamw_scalars(lr, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay, step);
            adamw_reference(pr.data(), gn.data(), mr.data(), vr.data(), n, sc);
            cuda::copy_to_device(gd, g.data(), size_t(n) * 4);
            cuda::adamw_step(pd, gd, md, vd, n, sc);
        }
        expect_near(Dev::down(pd, size_t(n)), pr, 0.0, "adamw p (separately rounded reference)");
        expect_near(Dev::down(md, size_t(n)), mr, 0.0, "adamw m (separately rounded reference)");
        expect_near(Dev::down(vd, size_t(n)), vr, 0.0, "adamw v (separately rounded reference)");
        expect_near(Dev::down(pd, size_t(n)), p, 0.0, "adamw p (cpu)");
        expect_near(Dev::down(md, size_t(n)), std::vector<float>(opt.exp_avg(0), opt.exp_avg(0) + n), 0.0,
                    "adamw m (cpu)");
        expect_near(Dev::down(vd, size_t(n)), std::vector<float>(opt.exp_avg_sq(0), opt.exp_avg_sq(0) + n), 0.0,
                    "adamw v (cpu)");
    }
}

}  // namespace
