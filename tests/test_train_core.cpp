// Optimizer pieces against PyTorch: AdamW steps equal torch.optim.AdamW (tests/ref/adamw_ref.py
// generates inputs and torch's results), clip_grad_norm_ equals torch's, and the schedules.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "models/llama.h"
#include "testing.h"
#include "train/adamw.h"
#include "train/schedule.h"

using namespace tuner;
using nlohmann::json;

static json load_reference() {
    static json ref;
    if (ref.is_null()) {
        std::string dir = tuner::testing::make_temp_dir("adamw");
        std::string out;
        int rc = tuner::testing::run_command(
            "/usr/bin/python3 " TUNER_SOURCE_DIR "/tests/ref/adamw_ref.py " + dir, &out);
        if (rc != 0) return json();
        ref = json::parse(std::ifstream(dir + "/adamw.json"));
    }
    return ref;
}

#define REQUIRE_TORCH(ref)                                                                        \
    json ref = load_reference();                                                                  \
    if (ref.is_null()) GTEST_SKIP() << "/usr/bin/python3 with torch is missing (apt-get install python3-torch)"

struct OwnedParams {
    std::vector<std::vector<float>> values, grads;
    std::vector<Param> params;
    std::vector<Param*> ptrs;
    explicit OwnedParams(const json& shapes) {
        for (const auto& s : shapes) {
            std::vector<int64_t> dims = s.get<std::vector<int64_t>>();
            int64_t n = 1;
            for (int64_t d : dims) n *= d;
            values.emplace_back(size_t(n));
            grads.emplace_back(size_t(n));
        }
        params.resize(values.size());
        for (size_t i = 0; i < values.size(); i++) {
            params[i].name = "p" + std::to_string(i);
            params[i].value = Tensor::view(values[i].data(), DType::F32, shapes[i].get<std::vector<int64_t>>());
            params[i].grad = Tensor::view(grads[i].data(), DType::F32, shapes[i].get<std::vector<int64_t>>());
            ptrs.push_back(&params[i]);
        }
    }
    // Copies values in place: the tensors point into these vectors, so never reassign them.
    static void set(std::vector<float>& dst, const json& src) {
        auto v = src.get<std::vector<float>>();
        ASSERT_EQ(v.size(), dst.size());
        std::copy(v.begin(), v.end(), dst.begin());
    }
};

// torch and we both compute in f32 with the same operation order; torch may contract (ATen's
// vectorised add uses fmadd; adamw.cpp is compiled without contraction), so allow a few ulp of each value,
// plus a few ulp of the tensor's largest value for elements where b1*m and (1-b1)*g cancel.
static void expect_close(const std::vector<float>& got, const json& want, const std::string& what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    float max_abs = 0;
    for (const auto& w : want) max_abs = std::max(max_abs, std::fabs(w.get<float>()));
    for (size_t i = 0; i < got.size(); i++) {
        float w = want[i].get<float>();
        ASSERT_LE(std::fabs(got[i] - w), 4e-7f * std::fabs(w) + 2.5e-7f * max_abs) << what << "[" << i << "]";
    }
}

TEST(AdamW, MatchesTorch) {
    REQUIRE_TORCH(ref);
    for (const auto& c : ref["adamw"]) {
        OwnedParams ps(c["shapes"]);
        for (size_t i = 0; i < ps.values.size(); i++) ps.set(ps.values[i], c["init"][i]);
        AdamWConfig cfg;
        cfg.beta1 = c["betas"][0].get<double>(), cfg.beta2 = c["betas"][1].get<double>();
        cfg.eps = c["eps"].get<double>(), cfg.weight_decay = c["weight_decay"].get<double>();
        AdamW opt(ps.ptrs, cfg);
        int step = 0;
        for (const auto& s : c["steps"]) {
            for (size_t i = 0; i < ps.grads.size(); i++) ps.set(ps.grads[i], s["grads"][i]);
            opt.step(s["lr"].get<double>());
            step++;
            std::string where = c["name"].get<std::string>() + " step " + std::to_string(step);
            for (size_t i = 0; i < ps.values.size(); i++) {
                expect_close(ps.values[i], s["params"][i], where + " param " + std::to_string(i));
                size_t n = ps.values[i].size();
                expect_close(std::vector<float>(opt.exp_avg(i), opt.exp_avg(i) + n), s["exp_avg"][i], where + " exp_avg");
                expect_close(std::vector<float>(opt.exp_avg_sq(i), opt.exp_avg_sq(i) + n), s["exp_avg_sq"][i],
                             where + " exp_avg_sq");
            }
        }
        EXPECT_EQ(opt.steps_taken(), int64_t(c["steps"].size()));
    }
}

// One f32 operation rounded once, whatever the compiler's contraction settings: not inlined,
// so a multiply and the add of its product cannot fuse into one FMA.
[[gnu::noinline]] static float mul_rn(float a, float b) { return a * b; }
[[gnu::noinline]] static float add_rn(float a, float b) { return a + b; }
[[gnu::noinline]] static float div_rn(float a, float b) { return a / b; }
[[gnu::noinline]] static float sqrt_rn(float a) { return std::sqrt(a); }

// train/adamw.cpp is compiled without FMA contraction, so every element equals torch's order of
// separately rounded f32 operations bit for bit (the CUDA kernel's explicitly rounded intrinsics
// give the same bits; test_cuda_ops compares the two). Many elements where b1*m and (1-b1)*g
// nearly cancel, where one FMA would move the result by many ulps.
TEST(AdamW, EveryOperationRoundedSeparately) {
    for (double wd : {0.0, 0.1}) {
        const int64_t n = 100003;
        const size_t un = static_cast<size_t>(n);
        std::vector<float> p(un), g(un), pr, mr(un, 0.0f), vr(un, 0.0f);
        uint64_t state = 12345;
        auto next = [&] {  // uniform in [-1, 1)
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            return float(int64_t(state >> 40) - (int64_t(1) << 23)) / float(int64_t(1) << 23);
        };
        for (float& x : p) x = next();
        pr = p;
        Param param;
        param.name = "w";
        param.value = Tensor::view(p.data(), DType::F32, {n});
        param.grad = Tensor::view(g.data(), DType::F32, {n});
        AdamWConfig cfg;
        cfg.lr = 1e-3, cfg.beta1 = 0.9, cfg.beta2 = 0.95, cfg.eps = 1e-8, cfg.weight_decay = wd;
        AdamW opt({&param}, cfg);
        for (int t = 1; t <= 3; t++) {
            // Step 2 repeats step 1's gradient negated in half the elements: m nearly cancels there.
            for (int64_t i = 0; i < n; i++) g[size_t(i)] = t == 2 && i % 2 ? -g[size_t(i)] * 0.11f : next() * float(t);
            const double lr = cfg.lr * t;
            opt.step(lr);
            const float decay = float(1.0 - lr * wd), b1 = 0.9f, omb1 = float(1.0 - 0.9), b2 = 0.95f,
                        omb2 = float(1.0 - 0.95);
            const float nss = float(-(lr / (1.0 - std::pow(0.9, t))));
            const float bc2 = float(std::sqrt(1.0 - std::pow(0.95, t))), eps = 1e-8f;
            for (size_t i = 0; i < size_t(n); i++) {
                const float pi = wd != 0.0 ? mul_rn(pr[i], decay) : pr[i];
                mr[i] = add_rn(mul_rn(mr[i], b1), mul_rn(g[i], omb1));
                vr[i] = add_rn(mul_rn(vr[i], b2), mul_rn(mul_rn(g[i], g[i]), omb2));
                const float denom = add_rn(div_rn(sqrt_rn(vr[i]), bc2), eps);
                pr[i] = add_rn(pi, div_rn(mul_rn(nss, mr[i]), denom));
            }
        }
        EXPECT_EQ(0, std::memcmp(p.data(), pr.data(), p.size() * 4)) << "params, weight decay " << wd;
        EXPECT_EQ(0, std::memcmp(opt.exp_avg(0), mr.data(), mr.size() * 4)) << "exp_avg, weight decay " << wd;
        EXPECT_EQ(0, std::memcmp(opt.exp_avg_sq(0), vr.data(), vr.size() * 4)) << "exp_avg_sq, weight decay " << wd;
    }
}

TEST(ClipGradNorm, MatchesTorch) {
    REQUIRE_TORCH(ref);
    for (const auto& c : ref["clip"]) {
        OwnedParams ps(c["shapes"]);
        for (size_t i = 0; i < ps.grads.size(); i++) ps.set(ps.grads[i], c["grads"][i]);
        double norm = clip_grad_norm(ps.ptrs, c["max_norm"].get<double>());
        EXPECT_NEAR(norm, c["norm"].get<double>(), 1e-6 * c["norm"].get<double>());
        for (size_t i = 0; i < ps.grads.size(); i++) expect_close(ps.grads[i], c["clipped"][i], "clipped grad");
    }
}

TEST(Schedule, WarmupThenCosineLinearConstant) {
    Schedule s;
    s.lr = 1e-3, s.total_steps = 100, s.warmup_steps = 10;
    s.type = ScheduleType::Cosine;
    EXPECT_DOUBLE_EQ(s.lr_at(0), 1e-3 * 1e-5);                          // warm-up starts at 1e-5 * lr
    EXPECT_NEAR(s.lr_at(5), 1e-3 * (1e-5 + (1 - 1e-5) * 0.5), 1e-15);   // linear in between
    EXPECT_DOUBLE_EQ(s.lr_at(10), 1e-3);                                // peak right after warm-up
    EXPECT_NEAR(s.lr_at(55), 0.5e-3, 1e-12);                            // half-way through the cosine
    EXPECT_GT(s.lr_at(99), 0.0);
    EXPECT_LT(s.lr_at(99), 1e-5);
    s.type = ScheduleType::Linear;
    EXPECT_NEAR(s.lr_at(55), 0.5e-3, 1e-12);
    EXPECT_NEAR(s.lr_at(99), 1e-3 / 90, 1e-12);
    s.type = ScheduleType::Constant;
    EXPECT_DOUBLE_EQ(s.lr_at(99), 1e-3);
    s.warmup_steps = 0;
    EXPECT_DOUBLE_EQ(s.lr_at(0), 1e-3);
    EXPECT_THROW(schedule_type_from_name("cosin"), Error);
}
