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
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/kernels.h"
#include "core/dtype.h"
#include "nn/param.h"
#include "quant/quant.h"
#include "testing.h"
#include "train/adamw.h"

using namespace tuner;
using tuner::testing::random_floats;
using tuner::testing::Rng;

namespace {

// ---- device memory ----------------------------------------------------------------------------

// One arena per test: 512 MiB is more than any test here uses.
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

const char* compute_name(cuda::MatmulCompute c) {
    return c == cuda::MatmulCompute::F32 ? "f32" : c == cuda::MatmulCompute::TF32 ? "tf32" : "bf16";
}

double gemm_tol(cuda::MatmulCompute c) {
    return c == cuda::MatmulCompute::F32 ? 1e-5 : c == cuda::MatmulCompute::TF32 ? 5e-3 : 2e-2;
}

// max |got - want| <= tol * max(max |want|, min_scale) (tol = 0: bit-exact); reports the worst
// element. min_scale: the size of the terms a tensor sums, for tensors that can be exactly 0.
void expect_near(const std::vector<float>& got, const std::vector<float>& want, double tol, const std::string& what,
                 double min_scale = 0.0) {
    ASSERT_EQ(got.size(), want.size()) << what;
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

// Segments of random lengths in each batch row: seg_start[b*T + t] = start of t's segment.
std::vector<int32_t> random_segments(int B, int T, uint64_t seed, int max_len) {
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

// The tensor-core kernels (BF16 compute, the default): 64-query / 64-key tiles, so T = 100, 150,
// 333 end inside a tile, T = 1 is one partial tile, and T = 200 has causal diagonal tiles that
// are neither full nor empty.
TEST(CudaAttentionBf16, GqaCausal) {
    TUNER_REQUIRE_CUDA();
    const auto bf16 = cuda::MatmulCompute::BF16;
    check_attention({.B = 2, .T = 100, .NH = 4, .NKV = 2, .HD = 64}, false, 131, bf16);
    check_attention({.B = 1, .T = 1, .NH = 2, .NKV = 1, .HD = 64}, false, 132, bf16);  // one token
    check_attention({.B = 1, .T = 200, .NH = 8, .NKV = 1, .HD = 128}, false, 133, bf16);
}

TEST(CudaAttentionBf16, PackedSegments) {
    TUNER_REQUIRE_CUDA();
    const auto bf16 = cuda::MatmulCompute::BF16;
    check_attention({.B = 2, .T = 150, .NH = 6, .NKV = 2, .HD = 64}, true, 141, bf16);
    check_attention({.B = 1, .T = 333, .NH = 4, .NKV = 4, .HD = 128}, true, 142, bf16);
}

// Head dims inside the 64 and 128 buckets (zero-padded; 8 is stories260K's), one not a multiple
// of 4 (scalar global access), and 256 (beyond the tensor-core kernels: the f32 ones run, f32
// tolerances).
TEST(CudaAttentionBf16, HeadDims) {
    TUNER_REQUIRE_CUDA();
    for (int HD : {8, 16, 30, 48, 80, 96, 256})
        check_attention({.B = 1, .T = 77, .NH = 4, .NKV = 2, .HD = HD}, true, uint64_t(150 + HD),
                        cuda::MatmulCompute::BF16);
}

TEST(CudaAttentionBf16, LongSequence) {
    TUNER_REQUIRE_CUDA();
    check_attention({.B = 1, .T = 1000, .NH = 8, .NKV = 2, .HD = 128}, true, 161, cuda::MatmulCompute::BF16);
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

// The kernel against (1) the step as specified, every operation rounded separately: bit-exact;
// (2) the CPU's AdamW (train/adamw.cpp): 4e-7 of each tensor's max, norm-wise like the other
// ops. Not per element: the CPU's compiler contracts m * b1 + g * (1 - b1) into one FMA (GNU C++
// with -march=native), and where the two terms nearly cancel (or p nearly cancels its update)
// that one rounding moves the element by many of its own ulps.
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
        expect_near(Dev::down(pd, size_t(n)), p, 4e-7, "adamw p (cpu)");
        expect_near(Dev::down(md, size_t(n)), std::vector<float>(opt.exp_avg(0), opt.exp_avg(0) + n), 4e-7,
                    "adamw m (cpu)");
        expect_near(Dev::down(vd, size_t(n)), std::vector<float>(opt.exp_avg_sq(0), opt.exp_avg_sq(0) + n), 4e-7,
                    "adamw v (cpu)");
    }
}

}  // namespace
