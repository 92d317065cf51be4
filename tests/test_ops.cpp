// CPU kernel tests: every op of the kernel table against a naive float64 reference written here
// (plain loops, independent of the kernels), and every backward against central finite
// differences of that reference.
//
// Gradient checks use loss = sum(out * G) for a random G, so dL/d(out) = G is what the kernel's
// backward receives. Finite differences: h = 1e-6 in double, error ~ 1e-16 |L| / h + h^2 |L'''|,
// about 1e-9 for these sizes: far below the f32 tolerances, so a failure means a wrong kernel.
//
// Tolerances: an f32 dot product of length K has error <= K * 2^-24 * sum|a_k b_k| in the worst
// case and ~sqrt(K) * 2^-24 * ... typically. Forward checks use a bound relative to sum|terms|
// where a reference can provide it; gradients use `rtol * max|reference gradient|` of the tensor
// (a norm-wise check: small gradient entries that are sums of cancelling terms cannot be
// held to a relative bound in f32).

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <vector>

#include "backend/kernels.h"
#include "core/dtype.h"
#include "core/threads.h"
#include "testing.h"

using namespace tuner;
using tuner::testing::random_floats;
using tuner::testing::Rng;

namespace {

constexpr double kH = 1e-6;  // finite-difference step

std::vector<double> to_double(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }


// Indices to check: all of [0, n) when n <= k, else k random ones.
std::vector<size_t> sample(size_t n, size_t k, uint64_t seed) {
    std::vector<size_t> idx;
    if (n <= k) {
        for (size_t i = 0; i < n; i++) idx.push_back(i);
        return idx;
    }
    Rng rng(seed);
    for (size_t i = 0; i < k; i++) idx.push_back(size_t(rng.next() % n));
    return idx;
}

// |got - ref| <= atol + rtol * |ref| for every element; reports the worst element on failure.
void expect_close(const float* got, const double* ref, size_t n, double atol, double rtol, const char* what) {
    size_t bad = 0, worst = 0;
    double worst_excess = -1;
    for (size_t i = 0; i < n; i++) {
        const double err = std::fabs(double(got[i]) - ref[i]);
        const double tol = atol + rtol * std::fabs(ref[i]);
        if (!(err <= tol)) bad++;
        if (!(err - tol <= worst_excess)) worst_excess = err - tol, worst = i;
    }
    EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << n << " elements out of tolerance; worst [" << worst
                       << "] got " << got[worst] << " want " << ref[worst] << " (atol " << atol << ", rtol " << rtol
                       << ")";
}
void expect_close(const std::vector<float>& got, const std::vector<double>& ref, double atol, double rtol,
                  const char* what) {
    ASSERT_EQ(got.size(), ref.size()) << what;
    expect_close(got.data(), ref.data(), got.size(), atol, rtol, what);
}

// Compares the analytic gradient `grad` (f32, from a kernel) with central differences of `loss`
// with respect to x, at up to `checks` elements. Tolerance rtol * max|fd| (see the file comment).
void check_grad(const char* what, std::vector<double>& x, const std::vector<float>& grad,
                const std::function<double()>& loss, size_t checks, double rtol, uint64_t seed) {
    ASSERT_EQ(x.size(), grad.size()) << what;
    const std::vector<size_t> idx = sample(x.size(), checks, seed);
    std::vector<double> fd(idx.size());
    double scale = 0.0;
    for (size_t j = 0; j < idx.size(); j++) {
        const size_t i = idx[j];
        const double old = x[i];
        x[i] = old + kH;
        const double lp = loss();
        x[i] = old - kH;
        const double lm = loss();
        x[i] = old;
        fd[j] = (lp - lm) / (2 * kH);
        scale = std::max(scale, std::fabs(fd[j]));
    }
    for (float g : grad) scale = std::max(scale, double(std::fabs(g)));
    const double tol = rtol * scale + 1e-7;
    int bad = 0;
    for (size_t j = 0; j < idx.size(); j++) {
        const double err = std::fabs(double(grad[idx[j]]) - fd[j]);
        if (!(err <= tol) && bad++ < 5)
            ADD_FAILURE() << what << "[" << idx[j] << "]: analytic " << grad[idx[j]] << " vs finite difference "
                          << fd[j] << " (tol " << tol << ")";
    }
    EXPECT_EQ(bad, 0) << what << ": gradient mismatches";
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); i++) s += a[i] * b[i];
    return s;
}

// Weight storage of a given dtype, and the f32 values it really holds (after rounding).
struct StoredWeight {
    std::vector<float> f32;      // used when dtype is F32
    std::vector<uint16_t> half;  // BF16 / F16 bits
    std::vector<double> values;  // what the kernel sees, for references
    WeightView view;
};
StoredWeight make_weight(const std::vector<float>& w, int64_t rows, int64_t cols, DType dtype) {
    StoredWeight s;
    s.values.resize(w.size());
    if (dtype == DType::F32) {
        s.f32 = w;
        for (size_t i = 0; i < w.size(); i++) s.values[i] = w[i];
        s.view = {s.f32.data(), dtype, rows, cols};
    } else {
        s.half.resize(w.size());
        for (size_t i = 0; i < w.size(); i++) {
            s.half[i] = dtype == DType::BF16 ? f32_to_bf16(w[i]) : f32_to_f16(w[i]);
            s.values[i] = dtype == DType::BF16 ? bf16_to_f32(s.half[i]) : f16_to_f32(s.half[i]);
        }
        s.view = {s.half.data(), dtype, rows, cols};
    }
    return s;
}

// =============================================================================================
// matmul
// =============================================================================================

// y (N, out) = x (N, in) @ W^T + bias; also returns sum |x_k w_k| per element for tolerances.
void matmul_ref(std::vector<double>& y, std::vector<double>* yabs, const std::vector<double>& x,
                const std::vector<double>& w, const std::vector<double>* bias, int64_t N, int64_t in, int64_t out) {
    y.assign(size_t(N * out), 0.0);
    if (yabs) yabs->assign(size_t(N * out), 0.0);
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < out; o++) {
            double s = bias ? (*bias)[o] : 0.0, a = bias ? std::fabs((*bias)[o]) : 0.0;
            for (int64_t i = 0; i < in; i++) {
                s += x[n * in + i] * w[o * in + i];
                a += std::fabs(x[n * in + i] * w[o * in + i]);
            }
            y[n * out + o] = s;
            if (yabs) (*yabs)[n * out + o] = a;
        }
}

void check_matmul(int64_t N, int64_t in, int64_t out, DType dtype, bool with_bias, size_t fd_checks) {
    SCOPED_TRACE(::testing::Message() << "N=" << N << " in=" << in << " out=" << out << " dtype=" << dtype_name(dtype)
                                      << " bias=" << with_bias);
    const std::vector<float> x = random_floats(size_t(N * in), 1);
    const StoredWeight w = make_weight(random_floats(size_t(out * in), 2, 0.5f), out, in, dtype);
    const std::vector<float> bias = random_floats(size_t(out), 3);
    const std::vector<float> G = random_floats(size_t(N * out), 4);
    std::vector<double> xd = to_double(x), wd = w.values, bd = to_double(bias), Gd = to_double(G);

    // Forward. Tolerance: 2^-24 * in * sum|x_k w_k| is the worst-case f32 dot-product error.
    std::vector<double> yref, yabs;
    matmul_ref(yref, &yabs, xd, wd, with_bias ? &bd : nullptr, N, in, out);
    std::vector<float> y(size_t(N * out), 7.0f);  // garbage: overwritten
    cpu::matmul_forward(y.data(), x.data(), w.view, with_bias ? bias.data() : nullptr, N, false);
    size_t bad = 0;
    for (size_t i = 0; i < y.size(); i++)
        if (!(std::fabs(y[i] - yref[i]) <= 6e-8 * double(in) * yabs[i] + 1e-30)) bad++;
    EXPECT_EQ(bad, 0u) << "matmul_forward out of tolerance";

    // accumulate = true adds onto y0 (one extra f32 rounding of the sum).
    const std::vector<float> y0 = random_floats(y.size(), 5);
    std::vector<float> yacc = y0;
    cpu::matmul_forward(yacc.data(), x.data(), w.view, with_bias ? bias.data() : nullptr, N, true);
    std::vector<double> want(y.size());
    for (size_t i = 0; i < y.size(); i++) want[i] = double(y0[i]) + yref[i];
    for (size_t i = 0; i < y.size(); i++) yabs[i] += std::fabs(y0[i]);
    bad = 0;
    for (size_t i = 0; i < y.size(); i++)
        if (!(std::fabs(yacc[i] - want[i]) <= 6e-8 * double(in + 1) * yabs[i] + 1e-30)) bad++;
    EXPECT_EQ(bad, 0u) << "matmul_forward accumulate out of tolerance";

    auto loss = [&] {
        std::vector<double> yy;
        matmul_ref(yy, nullptr, xd, wd, with_bias ? &bd : nullptr, N, in, out);
        return dot(yy, Gd);
    };

    // dx = G W (overwrite, then accumulate).
    std::vector<float> dx(size_t(N * in), 3.0f);
    cpu::matmul_backward_input(dx.data(), G.data(), w.view, N, false);
    check_grad("matmul dx", xd, dx, loss, fd_checks, 1e-5, 11);
    const std::vector<float> dx0 = random_floats(dx.size(), 12);
    std::vector<float> dxacc = dx0;
    cpu::matmul_backward_input(dxacc.data(), G.data(), w.view, N, true);
    std::vector<double> dxwant(dx.size());
    for (size_t i = 0; i < dx.size(); i++) dxwant[i] = double(dx0[i]) + double(dx[i]);
    expect_close(dxacc, dxwant, 1e-5 * std::sqrt(double(out)), 1e-5, "matmul dx accumulate");

    // dW and dbias (only F32 weights are trained): accumulate onto existing values.
    if (dtype == DType::F32) {
        std::vector<float> dw(size_t(out * in), 0.0f), db(size_t(out), 0.0f);
        cpu::matmul_backward_weight(dw.data(), with_bias ? db.data() : nullptr, G.data(), x.data(), N, out, in);
        check_grad("matmul dW", wd, dw, loss, fd_checks, 1e-5, 13);
        if (with_bias) check_grad("matmul dbias", bd, db, loss, fd_checks, 1e-5, 14);
        const std::vector<float> dw0 = random_floats(dw.size(), 15), db0 = random_floats(db.size(), 16);
        std::vector<float> dwacc = dw0, dbacc = db0;
        cpu::matmul_backward_weight(dwacc.data(), with_bias ? dbacc.data() : nullptr, G.data(), x.data(), N, out, in);
        std::vector<double> dwwant(dw.size()), dbwant(db.size());
        for (size_t i = 0; i < dw.size(); i++) dwwant[i] = double(dw0[i]) + dw[i];
        for (size_t i = 0; i < db.size(); i++) dbwant[i] = double(db0[i]) + (with_bias ? db[i] : 0.0f);
        expect_close(dwacc, dwwant, 1e-5 * std::sqrt(double(N)), 1e-5, "matmul dW accumulate");
        expect_close(dbacc, dbwant, 1e-5 * std::sqrt(double(N)), 1e-5, "matmul dbias accumulate");
    }
}

TEST(Matmul, F32SmallOddSizes) {
    check_matmul(37, 40, 24, DType::F32, true, 200);
    check_matmul(5, 3, 7, DType::F32, false, 200);
    check_matmul(1, 17, 1, DType::F32, true, 200);
}
TEST(Matmul, F32Larger) { check_matmul(130, 200, 150, DType::F32, true, 60); }
TEST(Matmul, BF16Weights) {
    check_matmul(37, 40, 24, DType::BF16, true, 200);
    // in = 4100 -> 240-row tiles: three tiles (240, 240, 20), the last one partial.
    check_matmul(7, 4100, 500, DType::BF16, true, 50);
}
TEST(Matmul, F16Weights) {
    check_matmul(37, 40, 24, DType::F16, false, 200);
    check_matmul(7, 4100, 500, DType::F16, false, 50);
}

// =============================================================================================
// embedding
// =============================================================================================

TEST(Embedding, ForwardAllDtypesAndBackwardRepeatedIds) {
    const int64_t V = 50, C = 37, N = 20;
    std::vector<int32_t> ids(N);
    Rng rng(21);
    for (auto& id : ids) id = rng.below(int(V));
    ids[3] = ids[7] = ids[11] = 5;  // repeated ids must add up in the backward
    ids[0] = 0, ids[1] = int32_t(V - 1);
    const std::vector<float> table = random_floats(size_t(V * C), 22);
    for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
        const StoredWeight w = make_weight(table, V, C, dt);
        std::vector<float> out(size_t(N * C), 9.0f);
        cpu::embedding_forward(out.data(), ids.data(), w.view, N);
        // Exact: a copy of the (converted) row.
        for (int64_t n = 0; n < N; n++)
            for (int64_t c = 0; c < C; c++)
                ASSERT_EQ(double(out[n * C + c]), w.values[ids[n] * C + c]) << dtype_name(dt) << " n=" << n;
    }
    // Backward: loss = sum(table[ids] * G); dtable += scatter(G). Exact sums of few terms, but
    // keep the standard gradient check.
    const std::vector<float> G = random_floats(size_t(N * C), 23);
    std::vector<double> td = to_double(table), Gd = to_double(G);
    auto loss = [&] {
        double s = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t c = 0; c < C; c++) s += td[ids[n] * C + c] * Gd[n * C + c];
        return s;
    };
    std::vector<float> dt(size_t(V * C), 0.0f);
    cpu::embedding_backward(dt.data(), G.data(), ids.data(), N, C);
    check_grad("embedding dtable", td, dt, loss, 400, 1e-6, 24);
    for (int64_t c = 0; c < C; c++)  // all rows of id 5 (and only those) landed in row 5
        EXPECT_FLOAT_EQ(dt[5 * C + c], [&] {
            float s = 0;
            for (int64_t n = 0; n < N; n++)
                if (ids[n] == 5) s += G[n * C + c];
            return s;
        }());
    std::vector<float> dacc = random_floats(dt.size(), 25), d0 = dacc;
    cpu::embedding_backward(dacc.data(), G.data(), ids.data(), N, C);
    std::vector<double> want(dt.size());
    for (size_t i = 0; i < dt.size(); i++) want[i] = double(d0[i]) + dt[i];
    expect_close(dacc, want, 1e-6, 1e-6, "embedding dtable accumulate");
}

// =============================================================================================
// rmsnorm
// =============================================================================================

void rmsnorm_ref(std::vector<double>& y, std::vector<double>& rstd, const std::vector<double>& x,
                 const std::vector<double>& w, int64_t N, int64_t C, double eps) {
    y.resize(size_t(N * C));
    rstd.resize(size_t(N));
    for (int64_t n = 0; n < N; n++) {
        double ss = 0;
        for (int64_t c = 0; c < C; c++) ss += x[n * C + c] * x[n * C + c];
        const double r = 1.0 / std::sqrt(ss / double(C) + eps);
        rstd[n] = r;
        for (int64_t c = 0; c < C; c++) y[n * C + c] = w[c] * x[n * C + c] * r;
    }
}

TEST(RMSNorm, ForwardBackward) {
    const int64_t N = 7, C = 45;
    const float eps = 1e-5f;
    std::vector<float> x = random_floats(size_t(N * C), 31, 2.0f);
    for (int64_t c = 0; c < C; c++) x[3 * C + c] *= 1e-3f;  // a small-norm row: eps matters
    std::vector<float> w = random_floats(size_t(C), 32, 0.5f);
    for (auto& v : w) v += 1.0f;
    const std::vector<float> G = random_floats(size_t(N * C), 33);
    std::vector<double> xd = to_double(x), wd = to_double(w), Gd = to_double(G);

    std::vector<double> yref, rref;
    rmsnorm_ref(yref, rref, xd, wd, N, C, double(eps));
    std::vector<float> y(size_t(N * C)), rstd(static_cast<size_t>(N));
    cpu::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, C, eps);
    // A sum of C squares, a sqrt and two products: a few ulp, 2e-6 relative is generous.
    expect_close(y, yref, 1e-7, 2e-6, "rmsnorm out");
    expect_close(rstd, rref, 0, 2e-6, "rmsnorm rstd");

    auto loss = [&] {
        std::vector<double> yy, rr;
        rmsnorm_ref(yy, rr, xd, wd, N, C, double(eps));
        return dot(yy, Gd);
    };
    std::vector<float> dx(size_t(N * C), 5.0f), dw(size_t(C), 0.0f);
    cpu::rmsnorm_backward(dx.data(), dw.data(), G.data(), x.data(), w.data(), rstd.data(), N, C, false);
    // dx involves a length-C reduction and a cancellation (g - x_hat * mean): 1e-5 of max|dx|.
    check_grad("rmsnorm dx", xd, dx, loss, 1000, 1e-5, 34);
    check_grad("rmsnorm dweight", wd, dw, loss, 1000, 1e-5, 35);

    // dweight accumulates; a null dweight (frozen norm) still gives dx.
    std::vector<float> dw0 = random_floats(size_t(C), 36), dwacc = dw0;
    std::vector<float> dx2(size_t(N * C));
    cpu::rmsnorm_backward(dx2.data(), dwacc.data(), G.data(), x.data(), w.data(), rstd.data(), N, C, false);
    std::vector<double> want(static_cast<size_t>(C));
    for (int64_t c = 0; c < C; c++) want[c] = double(dw0[c]) + dw[c];
    expect_close(dwacc, want, 1e-6, 1e-6, "rmsnorm dweight accumulate");
    std::vector<float> dx3(size_t(N * C));
    cpu::rmsnorm_backward(dx3.data(), nullptr, G.data(), x.data(), w.data(), rstd.data(), N, C, false);
    EXPECT_EQ(dx3, dx);

    // accumulate_dx: dx4 = base + (the norm's input gradient), within a rounding of the sum.
    const std::vector<float> base = random_floats(size_t(N * C), 37);
    std::vector<float> dx4 = base;
    cpu::rmsnorm_backward(dx4.data(), nullptr, G.data(), x.data(), w.data(), rstd.data(), N, C, true);
    std::vector<double> sum(size_t(N * C));
    for (size_t i = 0; i < sum.size(); i++) sum[i] = double(base[i]) + double(dx[i]);
    expect_close(dx4, sum, 1e-6, 1e-6, "rmsnorm dx accumulate");

    // The residual add fused with the norm: the same sum and the same norm, bit for bit.
    const std::vector<float> a = random_floats(size_t(N * C), 38), b = random_floats(size_t(N * C), 39);
    std::vector<float> s1(size_t(N * C)), y1(size_t(N * C)), r1(static_cast<size_t>(N));
    std::vector<float> s2(size_t(N * C)), y2(size_t(N * C)), r2(static_cast<size_t>(N));
    cpu::add_forward(s1.data(), a.data(), b.data(), N * C);
    cpu::rmsnorm_forward(y1.data(), r1.data(), s1.data(), w.data(), N, C, eps);
    cpu::add_rmsnorm_forward(s2.data(), y2.data(), r2.data(), a.data(), b.data(), w.data(), N, C, eps);
    EXPECT_EQ(s2, s1);
    EXPECT_EQ(y2, y1);
    EXPECT_EQ(r2, r1);
    std::vector<float> alias = a;  // x_sum may alias a
    cpu::add_rmsnorm_forward(alias.data(), y2.data(), r2.data(), alias.data(), b.data(), w.data(), N, C, eps);
    EXPECT_EQ(alias, s1);
    EXPECT_EQ(y2, y1);
}

// =============================================================================================
// rope
// =============================================================================================

std::vector<float> inv_freq_for(int HD, double theta) {
    std::vector<float> f(size_t(HD / 2));
    for (int i = 0; i < HD / 2; i++) f[i] = float(1.0 / std::pow(theta, double(2 * i) / double(HD)));
    return f;
}

// The angle is float(pos) * inv_freq rounded to f32 (part of the spec: HF computes it in f32);
// cos/sin and the rotation in double.
void rope_ref(std::vector<double>& x, const std::vector<int32_t>& pos, const std::vector<float>& inv_freq, int64_t N,
              int H, int HD) {
    const int half = HD / 2;
    for (int64_t n = 0; n < N; n++)
        for (int h = 0; h < H; h++) {
            double* a = &x[size_t((n * H + h) * HD)];
            for (int i = 0; i < half; i++) {
                const double ang = double(float(pos[n]) * inv_freq[i]);
                const double c = std::cos(ang), s = std::sin(ang);
                const double x1 = a[i], x2 = a[i + half];
                a[i] = x1 * c - x2 * s;
                a[i + half] = x2 * c + x1 * s;
            }
        }
}

TEST(Rope, ForwardBackward) {
    for (int HD : {8, 64}) {
        SCOPED_TRACE(HD);
        const int64_t N = 5;
        const int H = 3;
        const std::vector<int32_t> pos = {7, 8, 9, 2047, 3};  // not starting at 0; one large angle
        const std::vector<float> inv_freq = inv_freq_for(HD, 10000.0);
        const std::vector<float> x = random_floats(size_t(N * H * HD), 41);
        const std::vector<float> G = random_floats(x.size(), 42);
        std::vector<double> xd = to_double(x), Gd = to_double(G);

        std::vector<double> ref = xd;
        rope_ref(ref, pos, inv_freq, N, H, HD);
        std::vector<float> y = x;
        cpu::rope_forward(y.data(), pos.data(), inv_freq.data(), N, H, HD);
        // cosf/sinf are within an ulp or two of the true values (range reduction included).
        expect_close(y, ref, 5e-7, 1e-6, "rope forward");

        auto loss = [&] {
            std::vector<double> r = xd;
            rope_ref(r, pos, inv_freq, N, H, HD);
            return dot(r, Gd);
        };
        std::vector<float> dx = G;
        cpu::rope_backward(dx.data(), pos.data(), inv_freq.data(), N, H, HD);
        check_grad("rope dx", xd, dx, loss, 1000, 2e-6, 43);
    }
}

// =============================================================================================
// attention
// =============================================================================================

struct AttnData {
    AttnShape s;
    std::vector<double> q, k, v;
    std::vector<int32_t> seg;  // empty: no segments
};

// Naive causal GQA attention with segments, all in double. out (B,T,NH,HD), lse (B,NH,T).
void attention_ref(std::vector<double>& out, std::vector<double>* lse, const AttnData& a) {
    const auto& s = a.s;
    const int G = s.NH / s.NKV;
    const double scale = 1.0 / std::sqrt(double(s.HD));
    out.assign(size_t(s.B) * s.T * s.NH * s.HD, 0.0);
    if (lse) lse->assign(size_t(s.B) * s.NH * s.T, 0.0);
    std::vector<double> sc(size_t(s.T));
    for (int b = 0; b < s.B; b++)
        for (int h = 0; h < s.NH; h++)
            for (int t = 0; t < s.T; t++) {
                const int lo = a.seg.empty() ? 0 : a.seg[size_t(b) * s.T + t];
                const double* qr = &a.q[((size_t(b) * s.T + t) * s.NH + h) * s.HD];
                double mx = -1e300;
                for (int j = lo; j <= t; j++) {
                    const double* kr = &a.k[((size_t(b) * s.T + j) * s.NKV + h / G) * s.HD];
                    double d = 0;
                    for (int e = 0; e < s.HD; e++) d += qr[e] * kr[e];
                    sc[j] = d * scale;
                    mx = std::max(mx, sc[j]);
                }
                double sum = 0;
                for (int j = lo; j <= t; j++) sum += std::exp(sc[j] - mx);
                double* o = &out[((size_t(b) * s.T + t) * s.NH + h) * s.HD];
                for (int j = lo; j <= t; j++) {
                    const double p = std::exp(sc[j] - mx) / sum;
                    const double* vr = &a.v[((size_t(b) * s.T + j) * s.NKV + h / G) * s.HD];
                    for (int e = 0; e < s.HD; e++) o[e] += p * vr[e];
                }
                if (lse) (*lse)[(size_t(b) * s.NH + h) * s.T + t] = mx + std::log(sum);
            }
}

// Segments: row b gets boundaries at the given token positions (each segment starts there).
std::vector<int32_t> make_segments(int B, int T, const std::vector<std::vector<int>>& starts) {
    std::vector<int32_t> seg(size_t(B) * T);
    for (int b = 0; b < B; b++) {
        int cur = 0;
        for (int t = 0; t < T; t++) {
            for (int st : starts[size_t(b)])
                if (st == t) cur = t;
            seg[size_t(b) * T + t] = cur;
        }
    }
    return seg;
}

struct AttnResult {
    std::vector<float> out, lse;
};

AttnResult run_attention_forward(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                                 const std::vector<int32_t>& seg, const AttnShape& s) {
    AttnResult r;
    r.out.assign(q.size(), 99.0f);
    r.lse.assign(size_t(s.B) * s.NH * s.T, 99.0f);
    cpu::attention_forward(r.out.data(), r.lse.data(), q.data(), k.data(), v.data(), seg.empty() ? nullptr : seg.data(),
                           s);
    return r;
}

void check_attention(const AttnShape& s, const std::vector<int32_t>& seg, bool backward, size_t fd_checks) {
    SCOPED_TRACE(::testing::Message() << "B=" << s.B << " T=" << s.T << " NH=" << s.NH << " NKV=" << s.NKV
                                      << " HD=" << s.HD << " segments=" << !seg.empty());
    const size_t nq = size_t(s.B) * s.T * s.NH * s.HD, nkv = size_t(s.B) * s.T * s.NKV * s.HD;
    // Scale 1.5: scores of a few units, so the softmax is neither uniform nor one-hot.
    const std::vector<float> q = random_floats(nq, 51, 1.5f), k = random_floats(nkv, 52, 1.5f),
                             v = random_floats(nkv, 53);
    const std::vector<float> G = random_floats(nq, 54);
    AttnData a{s, to_double(q), to_double(k), to_double(v), seg};

    std::vector<double> oref, lref;
    attention_ref(oref, &lref, a);
    const AttnResult r = run_attention_forward(q, k, v, seg, s);
    // out is a convex combination of v rows (|v| <= 1): errors come from the f32 scores
    // (HD-term dots), exp (~1 ulp) and sums over <= T keys: 2e-6 absolute is several ulp.
    expect_close(r.out, oref, 2e-6, 2e-6, "attention out");
    expect_close(r.lse, lref, 2e-6, 1e-6, "attention lse");
    if (!backward) return;

    std::vector<double> Gd = to_double(G);
    auto loss = [&] {
        std::vector<double> o;
        attention_ref(o, nullptr, a);
        return dot(o, Gd);
    };
    std::vector<float> dq(nq, 7.0f), dk(nkv, 7.0f), dv(nkv, 7.0f);  // garbage: overwritten
    cpu::attention_backward(dq.data(), dk.data(), dv.data(), G.data(), q.data(), k.data(), v.data(), r.out.data(),
                            r.lse.data(), seg.empty() ? nullptr : seg.data(), s);
    // Sums over up to T keys/queries of products of f32 values with cancellation (dS = P(dP-D)):
    // 2e-5 of the largest gradient entry.
    check_grad("attention dq", a.q, dq, loss, fd_checks, 2e-5, 55);
    check_grad("attention dk", a.k, dk, loss, fd_checks, 2e-5, 56);
    check_grad("attention dv", a.v, dv, loss, fd_checks, 2e-5, 57);
}

TEST(Attention, GqaShortT) {
    check_attention({2, 37, 4, 2, 16}, {}, true, 60);  // GQA, groups of 2
    check_attention({2, 37, 2, 2, 16}, {}, true, 60);  // MHA
    check_attention({2, 37, 3, 1, 16}, {}, true, 60);  // MQA
    check_attention({1, 37, 2, 1, 8}, {}, true, 60);   // HD below one vector
}

TEST(Attention, Segments) {
    const auto seg = make_segments(2, 37, {{0, 10, 25}, {0, 1, 30}});  // incl. a 1-token segment
    check_attention({2, 37, 4, 2, 16}, seg, true, 60);
    check_attention({2, 37, 2, 2, 16}, seg, true, 60);
}

TEST(Attention, SeveralBlocks) {
    // T = 150 > two 64-blocks: online softmax across key blocks, partial last blocks.
    check_attention({1, 150, 2, 1, 16}, {}, true, 50);
    check_attention({1, 150, 2, 1, 40}, make_segments(1, 150, {{0, 50, 70, 130}}), true, 50);  // HD = 2.5 vectors
    check_attention({1, 70, 2, 1, 128}, {}, true, 20);  // HD in two 64-lane chunks
}

TEST(Attention, LongForward) {
    check_attention({1, 300, 4, 2, 64}, {}, false, 0);
    check_attention({2, 300, 4, 2, 64}, make_segments(2, 300, {{0, 100, 257}, {0, 64, 65, 200}}), false, 0);
    check_attention({1, 130, 2, 1, 80}, {}, false, 0);   // 64 + 16 lanes
    check_attention({1, 130, 2, 2, 128}, {}, false, 0);  // two 64-lane chunks
}

// Tokens of one packed sample must not influence another sample's outputs or gradients.
TEST(Attention, SegmentIsolation) {
    const AttnShape s{2, 37, 4, 2, 16};
    const auto seg = make_segments(2, 37, {{0, 10, 25}, {0, 20}});
    const size_t nq = size_t(s.B) * s.T * s.NH * s.HD, nkv = size_t(s.B) * s.T * s.NKV * s.HD;
    std::vector<float> q = random_floats(nq, 61), k = random_floats(nkv, 62), v = random_floats(nkv, 63);
    const std::vector<float> G = random_floats(nq, 64);
    auto run = [&](std::vector<float>& dq, std::vector<float>& dk, std::vector<float>& dv) {
        AttnResult r = run_attention_forward(q, k, v, seg, s);
        dq.assign(nq, 0.0f), dk.assign(nkv, 0.0f), dv.assign(nkv, 0.0f);
        cpu::attention_backward(dq.data(), dk.data(), dv.data(), G.data(), q.data(), k.data(), v.data(), r.out.data(),
                                r.lse.data(), seg.data(), s);
        return r;
    };
    std::vector<float> dq1, dk1, dv1, dq2, dk2, dv2;
    const AttnResult r1 = run(dq1, dk1, dv1);
    // Change q, k, v of tokens 10..24 of row 0 (its middle segment).
    const std::vector<float> noise = random_floats(nq, 65, 3.0f);
    for (int t = 10; t < 25; t++) {
        for (int e = 0; e < s.NH * s.HD; e++) q[size_t(t) * s.NH * s.HD + e] = noise[size_t(t) * s.NH * s.HD + e];
        for (int e = 0; e < s.NKV * s.HD; e++) {
            k[size_t(t) * s.NKV * s.HD + e] = noise[nq - 1 - size_t(t) * s.NKV * s.HD - e];
            v[size_t(t) * s.NKV * s.HD + e] += 1.0f;
        }
    }
    const AttnResult r2 = run(dq2, dk2, dv2);
    auto in_changed = [&](int b, int t) { return b == 0 && t >= 10 && t < 25; };
    int changed_inside = 0;
    for (int b = 0; b < s.B; b++)
        for (int t = 0; t < s.T; t++) {
            const size_t o = (size_t(b) * s.T + t) * s.NH * s.HD, ok = (size_t(b) * s.T + t) * s.NKV * s.HD;
            bool same_out = true;
            for (int e = 0; e < s.NH * s.HD; e++) same_out &= r1.out[o + e] == r2.out[o + e];
            if (in_changed(b, t)) {
                changed_inside += !same_out;
                continue;
            }
            // Forward: masked keys contribute exact zeros, so other segments are bitwise equal.
            EXPECT_TRUE(same_out) << "out changed at b=" << b << " t=" << t;
            for (int h = 0; h < s.NH; h++)
                EXPECT_EQ(r1.lse[(size_t(b) * s.NH + h) * s.T + t], r2.lse[(size_t(b) * s.NH + h) * s.T + t]);
            for (int e = 0; e < s.NH * s.HD; e++) EXPECT_EQ(dq1[o + e], dq2[o + e]) << "dq b=" << b << " t=" << t;
            // Masked entries enter dk/dv as exact zeros (and the task schedule is static), so
            // gradients outside the changed segment are bitwise equal too.
            for (int e = 0; e < s.NKV * s.HD; e++) {
                EXPECT_EQ(dk1[ok + e], dk2[ok + e]) << "dk b=" << b << " t=" << t;
                EXPECT_EQ(dv1[ok + e], dv2[ok + e]) << "dv b=" << b << " t=" << t;
            }
        }
    EXPECT_GT(changed_inside, 10);  // the test really changed something
}

// Same inputs, same thread count: bitwise the same gradients (fixed-seed runs must repeat).
TEST(Attention, BackwardIsReproducible) {
    const AttnShape s{2, 150, 4, 2, 32};
    const size_t nq = size_t(s.B) * s.T * s.NH * s.HD, nkv = size_t(s.B) * s.T * s.NKV * s.HD;
    const std::vector<float> q = random_floats(nq, 66), k = random_floats(nkv, 67), v = random_floats(nkv, 68),
                             G = random_floats(nq, 69);
    const AttnResult r = run_attention_forward(q, k, v, {}, s);
    std::vector<float> grads[2][3];
    for (auto& g : grads) {
        g[0].assign(nq, 0.0f), g[1].assign(nkv, 0.0f), g[2].assign(nkv, 0.0f);
        cpu::attention_backward(g[0].data(), g[1].data(), g[2].data(), G.data(), q.data(), k.data(), v.data(),
                                r.out.data(), r.lse.data(), nullptr, s);
    }
    for (int i = 0; i < 3; i++) EXPECT_EQ(grads[0][i], grads[1][i]) << "gradient " << i;
}

// =============================================================================================
// swiglu, add
// =============================================================================================

TEST(SwiGLU, ForwardBackward) {
    const int64_t n = 1000 + 7;
    std::vector<float> gate = random_floats(size_t(n), 71, 6.0f), up = random_floats(size_t(n), 72, 2.0f);
    gate[0] = 30.0f, gate[1] = -30.0f, gate[2] = 100.0f, gate[3] = -100.0f, gate[4] = 0.0f;  // saturation
    const std::vector<float> G = random_floats(size_t(n), 73);
    std::vector<double> gd = to_double(gate), ud = to_double(up), Gd = to_double(G);
    auto silu = [](double g) { return g / (1.0 + std::exp(-g)); };
    std::vector<double> ref(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; i++) ref[i] = silu(gd[i]) * ud[i];
    std::vector<float> h(static_cast<size_t>(n));
    cpu::swiglu_forward(h.data(), gate.data(), up.data(), n);
    // exp within ~2 ulp, then a division and two products: 1e-6 relative.
    expect_close(h, ref, 1e-30, 1e-6, "swiglu h");

    auto loss = [&] {
        double s = 0;
        for (int64_t i = 0; i < n; i++) s += silu(gd[i]) * ud[i] * Gd[i];
        return s;
    };
    std::vector<float> dg(size_t(n), 9.0f), du(size_t(n), 9.0f);
    cpu::swiglu_backward(dg.data(), du.data(), G.data(), gate.data(), up.data(), n);
    check_grad("swiglu dgate", gd, dg, loss, 2000, 1e-6, 74);
    check_grad("swiglu dup", ud, du, loss, 2000, 1e-6, 75);

    // Large n takes the threaded path; compare with the small-call results block by block.
    const int64_t big = 100003;
    const std::vector<float> g2 = random_floats(size_t(big), 76, 8.0f), u2 = random_floats(size_t(big), 77);
    std::vector<float> h2(static_cast<size_t>(big));
    cpu::swiglu_forward(h2.data(), g2.data(), u2.data(), big);
    std::vector<double> ref2(static_cast<size_t>(big));
    for (int64_t i = 0; i < big; i++) ref2[i] = silu(g2[i]) * double(u2[i]);
    expect_close(h2, ref2, 1e-30, 1e-6, "swiglu h (large n)");
}

TEST(Add, ForwardInplaceAliasing) {
    for (int64_t n : {int64_t(1), int64_t(33), int64_t(200001)}) {
        const std::vector<float> a = random_floats(size_t(n), 81), b = random_floats(size_t(n), 82, 3.0f);
        // f32 addition is correctly rounded: results must equal the rounded double sums exactly.
        std::vector<float> out(static_cast<size_t>(n));
        cpu::add_forward(out.data(), a.data(), b.data(), n);
        for (int64_t i = 0; i < n; i++) ASSERT_EQ(out[i], float(double(a[i]) + double(b[i]))) << i;
        std::vector<float> alias = a;
        cpu::add_forward(alias.data(), alias.data(), b.data(), n);
        EXPECT_EQ(alias, out);
        std::vector<float> acc = a;
        cpu::add_inplace(acc.data(), b.data(), n);
        EXPECT_EQ(acc, out);
    }
}

// =============================================================================================
// lm_head + cross-entropy
// =============================================================================================

// losses (N) and lse (N) in double; ignored rows get 0.
void ce_ref(std::vector<double>& losses, std::vector<double>& lse, const std::vector<double>& x,
            const std::vector<double>& head, const std::vector<int32_t>& targets, int64_t N, int64_t V, int64_t C) {
    losses.assign(size_t(N), 0.0);
    lse.assign(size_t(N), 0.0);
    std::vector<double> z(static_cast<size_t>(V));
    for (int64_t n = 0; n < N; n++) {
        if (targets[n] == -100) continue;
        double mx = -1e300;
        for (int64_t v = 0; v < V; v++) {
            double s = 0;
            for (int64_t c = 0; c < C; c++) s += head[v * C + c] * x[n * C + c];
            z[v] = s;
            mx = std::max(mx, s);
        }
        double sum = 0;
        for (int64_t v = 0; v < V; v++) sum += std::exp(z[v] - mx);
        lse[n] = mx + std::log(sum);
        losses[n] = lse[n] - z[targets[n]];
    }
}

struct CeCase {
    int64_t N, V, C;
    DType dtype;
    float grad_scale;
    size_t fd_checks;  // 0: compare gradients with the analytic double formula instead of FD
};

void check_ce(const CeCase& cc) {
    const int64_t N = cc.N, V = cc.V, C = cc.C;
    SCOPED_TRACE(::testing::Message() << "N=" << N << " V=" << V << " C=" << C << " dtype=" << dtype_name(cc.dtype));
    const std::vector<float> x = random_floats(size_t(N * C), 91);
    const StoredWeight head = make_weight(random_floats(size_t(V * C), 92, 0.7f), V, C, cc.dtype);
    std::vector<int32_t> targets(static_cast<size_t>(N));
    Rng rng(93);
    int64_t want_count = 0;
    for (int64_t n = 0; n < N; n++) {
        targets[n] = rng.below(4) == 0 ? -100 : rng.below(int(V));
        want_count += targets[n] != -100;
    }
    targets[0] = -100, targets[N - 1] = int32_t(V - 1);
    want_count = 0;
    for (auto t : targets) want_count += t != -100;
    std::vector<double> xd = to_double(x), hd = head.values;

    std::vector<double> lref, lseref;
    ce_ref(lref, lseref, xd, hd, targets, N, V, C);
    std::vector<float> losses(size_t(N), 9.0f), lse(size_t(N), 9.0f), dx(size_t(N * C), 9.0f);
    std::vector<float> dhead;
    const bool train_head = cc.dtype == DType::F32;
    if (train_head) dhead.assign(size_t(V * C), 0.0f);
    const int64_t count =
        cpu::lm_head_cross_entropy(losses.data(), lse.data(), dx.data(), train_head ? dhead.data() : nullptr, x.data(),
                                   head.view, targets.data(), N, cc.grad_scale);
    EXPECT_EQ(count, want_count);
    // Logits are C-term f32 dots (|logit| of a few units); lse and loss inherit ~1e-6 absolute.
    expect_close(losses, lref, 1e-5, 1e-6, "ce losses");
    expect_close(lse, lseref, 1e-5, 1e-6, "ce lse");
    for (int64_t n = 0; n < N; n++) {
        if (targets[n] != -100) continue;
        for (int64_t c = 0; c < C; c++) ASSERT_EQ(dx[n * C + c], 0.0f) << "ignored row " << n << " has a gradient";
    }

    // Evaluation mode (no gradients, no lse) gives the same losses.
    std::vector<float> losses2(static_cast<size_t>(N));
    EXPECT_EQ(cpu::lm_head_cross_entropy(losses2.data(), nullptr, nullptr, nullptr, x.data(), head.view, targets.data(),
                                         N, cc.grad_scale),
              want_count);
    EXPECT_EQ(losses2, losses);

    const double gs = cc.grad_scale;
    if (cc.fd_checks > 0) {
        auto loss = [&] {
            std::vector<double> l, s;
            ce_ref(l, s, xd, hd, targets, N, V, C);
            double sum = 0;
            for (double v : l) sum += v;
            return gs * sum;
        };
        // dx sums V terms (p - onehot) * head; dhead sums N terms: 2e-5 of max|grad|.
        check_grad("ce dx", xd, dx, loss, cc.fd_checks, 2e-5, 94);
        if (train_head) check_grad("ce dhead", hd, dhead, loss, cc.fd_checks, 2e-5, 95);
    } else {
        // Too large for finite differences: the analytic gradient in double.
        std::vector<double> dxr(size_t(N * C), 0.0), dhr(size_t(V * C), 0.0), p(static_cast<size_t>(V));
        for (int64_t n = 0; n < N; n++) {
            if (targets[n] == -100) continue;
            for (int64_t v = 0; v < V; v++) {
                double z = 0;
                for (int64_t c = 0; c < C; c++) z += hd[v * C + c] * xd[n * C + c];
                p[v] = gs * (std::exp(z - lseref[n]) - (v == targets[n] ? 1.0 : 0.0));
            }
            for (int64_t v = 0; v < V; v++)
                for (int64_t c = 0; c < C; c++) {
                    dxr[n * C + c] += p[v] * hd[v * C + c];
                    dhr[v * C + c] += p[v] * xd[n * C + c];
                }
        }
        double mx = 0, mh = 0;
        for (double d : dxr) mx = std::max(mx, std::fabs(d));
        for (double d : dhr) mh = std::max(mh, std::fabs(d));
        expect_close(dx, dxr, 2e-5 * mx, 0, "ce dx (analytic)");
        if (train_head) expect_close(dhead, dhr, 2e-5 * mh, 0, "ce dhead (analytic)");
    }

    if (train_head) {  // dhead accumulates
        std::vector<float> dh0 = random_floats(dhead.size(), 96), dhacc = dh0;
        cpu::lm_head_cross_entropy(losses2.data(), nullptr, dx.data(), dhacc.data(), x.data(), head.view,
                                   targets.data(), N, cc.grad_scale);
        std::vector<double> want(dhead.size());
        for (size_t i = 0; i < want.size(); i++) want[i] = double(dh0[i]) + dhead[i];
        expect_close(dhacc, want, 1e-6, 1e-6, "ce dhead accumulate");
    }
}

TEST(CrossEntropy, SmallVocabFiniteDifferences) {
    check_ce({13, 1000, 24, DType::F32, 1.0f, 120});
    check_ce({13, 1000, 24, DType::F32, 0.25f, 120});  // grad_scale (e.g. 1 / trained tokens)
    check_ce({13, 1000, 24, DType::BF16, 0.5f, 120});  // frozen bf16 head: dx only
}

TEST(CrossEntropy, ManyRowChunks) {
    // V = 70000: a chunk holds 112 rows, so ~225 active rows take three chunks; the bf16 head is
    // converted in two tiles (65536 + 4464 rows).
    check_ce({300, 70000, 16, DType::F32, 0.01f, 0});
    check_ce({300, 70000, 16, DType::BF16, 0.01f, 0});
}

TEST(CrossEntropy, AllIgnored) {
    const int64_t N = 4, V = 10, C = 3;
    const std::vector<float> x = random_floats(size_t(N * C), 97), head = random_floats(size_t(V * C), 98);
    const std::vector<int32_t> targets(size_t(N), -100);
    std::vector<float> losses(size_t(N), 5.0f), dx(size_t(N * C), 5.0f), dhead(size_t(V * C), 1.0f);
    const WeightView hv{head.data(), DType::F32, V, C};
    EXPECT_EQ(cpu::lm_head_cross_entropy(losses.data(), nullptr, dx.data(), dhead.data(), x.data(), hv, targets.data(),
                                         N, 1.0f),
              0);
    for (float l : losses) EXPECT_EQ(l, 0.0f);
    for (float d : dx) EXPECT_EQ(d, 0.0f);
    for (float d : dhead) EXPECT_EQ(d, 1.0f);
}

// =============================================================================================
// Speed (not part of the normal run): ./test_ops --gtest_also_run_disabled_tests --gtest_filter='*Perf*'
// =============================================================================================

using tuner::testing::best_seconds;

TEST(OpsPerf, DISABLED_SmolLM135M) {
    const int64_t N = 512, C = 576, F = 1536, V = 49152;
    std::printf("threads: %d\n", num_threads());
    const std::vector<float> x = random_floats(size_t(N * F), 1), w = random_floats(size_t(F * F), 2);
    std::vector<float> y(size_t(N * V)), dw(size_t(F * C));
    for (auto [in, out] : {std::pair<int64_t, int64_t>{576, 1536}, {1536, 576}, {576, 576}, {576, 192}}) {
        const WeightView wv{w.data(), DType::F32, out, in};
        const double fl = 2.0 * N * in * out / 1e9;
        const double tf = best_seconds([&] { cpu::matmul_forward(y.data(), x.data(), wv, nullptr, N, false); }, 10);
        const double tb = best_seconds([&] { cpu::matmul_backward_input(y.data(), x.data(), wv, N, false); }, 10);
        const double tw =
            best_seconds([&] { cpu::matmul_backward_weight(dw.data(), nullptr, x.data(), x.data(), N, out, in); }, 10);
        std::printf("matmul in=%lld out=%lld: fwd %.0f, bwd_in %.0f, bwd_w %.0f GFLOP/s\n", (long long)in,
                    (long long)out, fl / tf, fl / tb, fl / tw);
        std::vector<uint16_t> wb(size_t(in * out));
        for (size_t i = 0; i < wb.size(); i++) wb[i] = f32_to_bf16(w[i]);
        const WeightView bv{wb.data(), DType::BF16, out, in};
        const double tfb = best_seconds([&] { cpu::matmul_forward(y.data(), x.data(), bv, nullptr, N, false); }, 10);
        const double tbb = best_seconds([&] { cpu::matmul_backward_input(y.data(), x.data(), bv, N, false); }, 10);
        std::printf("   bf16 weight: fwd %.0f, bwd_in %.0f GFLOP/s\n", fl / tfb, fl / tbb);
    }
    {
        const AttnShape s{1, 512, 9, 3, 64};
        const size_t nq = 512 * 9 * 64, nkv = 512 * 3 * 64;
        const std::vector<float> q = random_floats(nq, 3), k = random_floats(nkv, 4), v = random_floats(nkv, 5);
        std::vector<float> out(nq), lse(9 * 512), dq(nq), dk(nkv), dv(nkv);
        const double tf = best_seconds(
            [&] { cpu::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), nullptr, s); }, 10);
        const double tb = best_seconds(
            [&] {
                cpu::attention_backward(dq.data(), dk.data(), dv.data(), q.data(), q.data(), k.data(), v.data(),
                                        out.data(), lse.data(), nullptr, s);
            },
            10);
        // Causal: half of the T x T scores. Forward 2 GEMMs, backward 5 (S, dP, dV, dK, dQ).
        const double fl = 2.0 * 9 * 512.0 * 512.0 / 2 * 64 / 1e9;
        std::printf("attention B=1 T=512 NH=9 NKV=3 HD=64: fwd %.3f ms (%.0f GFLOP/s), bwd %.3f ms (%.0f GFLOP/s)\n",
                    tf * 1e3, 2 * fl / tf, tb * 1e3, 5 * fl / tb);
    }
    {
        const std::vector<float> h = random_floats(size_t(V * C), 6), xc = random_floats(size_t(N * C), 7);
        std::vector<int32_t> t(static_cast<size_t>(N));
        for (int64_t n = 0; n < N; n++) t[n] = int32_t((n * 7919) % V);
        std::vector<float> losses(static_cast<size_t>(N)), dx(size_t(N * C)), dh(size_t(V * C));
        const WeightView hv{h.data(), DType::F32, V, C};
        const double tt = best_seconds(
            [&] {
                cpu::lm_head_cross_entropy(losses.data(), nullptr, dx.data(), dh.data(), xc.data(), hv, t.data(), N,
                                           1.0f);
            },
            3);
        const double te = best_seconds(
            [&] {
                cpu::lm_head_cross_entropy(losses.data(), nullptr, nullptr, nullptr, xc.data(), hv, t.data(), N, 1.0f);
            },
            3);
        const double fl = 2.0 * N * V * C / 1e9;
        std::printf("lm_head+CE N=512 V=49152 C=576: train %.1f ms (%.0f GFLOP/s), eval %.1f ms (%.0f GFLOP/s)\n",
                    tt * 1e3, 3 * fl / tt, te * 1e3, fl / te);
    }
    {
        const int64_t n = N * F;
        const std::vector<float> g = random_floats(size_t(n), 8), u = random_floats(size_t(n), 9);
        std::vector<float> h(static_cast<size_t>(n)), dg(static_cast<size_t>(n)), du(static_cast<size_t>(n));
        const double tf = best_seconds([&] { cpu::swiglu_forward(h.data(), g.data(), u.data(), n); }, 10);
        const double tb =
            best_seconds([&] { cpu::swiglu_backward(dg.data(), du.data(), h.data(), g.data(), u.data(), n); }, 10);
        std::printf("swiglu n=%lld: fwd %.3f ms, bwd %.3f ms\n", (long long)n, tf * 1e3, tb * 1e3);
    }
}

}  // namespace
