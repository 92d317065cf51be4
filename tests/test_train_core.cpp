// Optimizer pieces against PyTorch: AdamW steps equal torch.optim.AdamW (tests/ref/adamw_ref.py
// generates inputs and torch's results), clip_grad_norm_ equals torch's, and the schedules.
#include <gtest/gtest.h>

#include <cmath>
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

// torch and we both compute in f32 with the same operation order; FMA contraction may differ
// (ATen's vectorised add uses fmadd, GCC contracts a*b+c too), so allow a few ulp of each value,
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
