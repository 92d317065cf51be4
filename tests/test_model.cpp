// Whole-model checks on tiny random Llama models: the analytic gradient of every parameter
// kind against central finite differences, packed samples equal separate runs, accumulation
// of micro-batches, and save -> load round trips.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "models/llama.h"
#include "testing.h"

using namespace tuner;

static ModelConfig tiny_config(bool tied, bool bias, int NH, int NKV) {
    ModelConfig c;
    c.architecture = bias ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
    c.model_type = bias ? "qwen2" : "llama";
    c.vocab_size = 48, c.hidden_size = 16, c.intermediate_size = 40, c.num_layers = 2;
    c.num_heads = NH, c.num_kv_heads = NKV, c.head_dim = 16 / NH * 2;  // head_dim need not be C/NH
    c.rms_norm_eps = 1e-5, c.rope_theta = 10000.0, c.tie_word_embeddings = tied, c.attention_bias = bias;
    c.max_position_embeddings = 64;
    return c;
}

// Perturb weights away from the N(0, 0.02) init so every path carries signal (norms != 1).
static void randomise(LlamaModel& m, uint64_t seed) {
    std::mt19937 rng{uint32_t(seed)};
    std::normal_distribution<float> d(0.0f, 0.3f);
    for (Param* p : m.params()) {
        float* v = p->value.f32();
        bool norm = p->name.find("norm") != std::string::npos;
        for (int64_t i = 0; i < p->value.numel(); i++) v[i] = norm ? 1.0f + d(rng) : d(rng);
    }
}

struct TestBatch {
    int B, T;
    std::vector<int32_t> tokens, targets;
    Batch view() const {
        Batch b;
        b.B = B, b.T = T, b.tokens = tokens.data(), b.targets = targets.data();
        return b;
    }
};

static TestBatch make_batch(int B, int T, int V, uint64_t seed) {
    std::mt19937 rng{uint32_t(seed)};
    TestBatch b{B, T, std::vector<int32_t>(size_t(B * T)), std::vector<int32_t>(size_t(B * T))};
    for (auto& t : b.tokens) t = int32_t(rng() % uint32_t(V));
    for (size_t i = 0; i < b.targets.size(); i++) b.targets[i] = (rng() % 5 == 0) ? -100 : int32_t(rng() % uint32_t(V));
    return b;
}

class ModelGradient : public ::testing::TestWithParam<std::tuple<bool, bool, int, int>> {};

TEST_P(ModelGradient, MatchesFiniteDifferences) {
    auto [tied, bias, NH, NKV] = GetParam();
    ModelOptions opts;
    auto m = LlamaModel::random(tiny_config(tied, bias, NH, NKV), opts, 1);
    randomise(*m, 2);
    TestBatch tb = make_batch(2, 7, 48, 3);
    Batch b = tb.view();
    m->prepare(2, 7, true);
    m->zero_grad();
    int64_t count = 0;
    m->forward_backward(b, 1.0f, &count);
    ASSERT_GT(count, 0);

    // f32 forward, so the step h trades truncation error O(h^2) against rounding error
    // O(eps_f32 * |L| / h); h = 1e-2 on O(1) weights keeps both near 1e-4 of the gradient scale.
    const float h = 1e-2f;
    std::mt19937 rng(5);
    double worst = 0;
    for (Param* p : m->params()) {
        float* v = p->value.f32();
        const float* g = p->grad.f32();
        double gmax = 0;
        for (int64_t i = 0; i < p->grad.numel(); i++) gmax = std::max(gmax, double(std::fabs(g[i])));
        for (int k = 0; k < 4; k++) {
            int64_t i = int64_t(rng() % uint64_t(p->value.numel()));
            float saved = v[i];
            v[i] = saved + h;
            double lp = m->forward_loss(b, nullptr);
            v[i] = saved - h;
            double lm = m->forward_loss(b, nullptr);
            v[i] = saved;
            double fd = (lp - lm) / (2.0 * h);
            double err = std::fabs(fd - g[i]) / (gmax + 1e-3);
            worst = std::max(worst, err);
            EXPECT_LT(err, 2e-2) << p->name << "[" << i << "]: analytic " << g[i] << " vs finite difference " << fd
                                 << " (max |grad| " << gmax << ")";
        }
    }
    std::printf("worst relative gradient error: %.2e\n", worst);
}

INSTANTIATE_TEST_SUITE_P(Variants, ModelGradient,
                         ::testing::Values(std::make_tuple(true, false, 4, 2), std::make_tuple(false, false, 2, 2),
                                           std::make_tuple(true, true, 4, 1)));

TEST(Model, PackedRowEqualsSeparateSamples) {
    ModelOptions opts;
    auto m = LlamaModel::random(tiny_config(false, false, 4, 2), opts, 7);
    randomise(*m, 8);
    const int V = 48;
    // Row: sample A (5 tokens) then sample B (6 tokens); positions restart, attention is cut.
    TestBatch a = make_batch(1, 5, V, 11), bb = make_batch(1, 6, V, 12);
    std::vector<int32_t> tokens = a.tokens, targets = a.targets, pos, seg;
    tokens.insert(tokens.end(), bb.tokens.begin(), bb.tokens.end());
    targets.insert(targets.end(), bb.targets.begin(), bb.targets.end());
    for (int i = 0; i < 5; i++) pos.push_back(i), seg.push_back(0);
    for (int i = 0; i < 6; i++) pos.push_back(i), seg.push_back(5);
    m->prepare(1, 11, false);
    std::vector<float> packed(11 * V), sa(5 * V), sb(6 * V);
    Batch p;
    p.B = 1, p.T = 11, p.tokens = tokens.data(), p.targets = targets.data(), p.positions = pos.data(),
    p.seg_start = seg.data();
    m->logits(p, packed.data());
    m->logits(a.view(), sa.data());
    m->logits(bb.view(), sb.data());
    for (int i = 0; i < 5 * V; i++) ASSERT_NEAR(packed[size_t(i)], sa[size_t(i)], 1e-5f) << i;
    for (int i = 0; i < 6 * V; i++) ASSERT_NEAR(packed[size_t(5 * V + i)], sb[size_t(i)], 1e-5f) << i;
}

TEST(Model, AccumulatedMicroBatchesEqualOneBatch) {
    ModelOptions opts;
    auto m = LlamaModel::random(tiny_config(true, false, 4, 2), opts, 3);
    randomise(*m, 4);
    TestBatch full = make_batch(2, 6, 48, 9);
    int64_t total = 0;
    for (int32_t t : full.targets) total += t != -100;
    m->prepare(2, 6, true);
    m->zero_grad();
    m->forward_backward(full.view(), 1.0f / float(total), nullptr);
    std::vector<std::vector<float>> g1;
    for (Param* p : m->params()) g1.emplace_back(p->grad.f32(), p->grad.f32() + p->grad.numel());
    m->zero_grad();
    for (int r = 0; r < 2; r++) {
        TestBatch half{1, 6, {full.tokens.begin() + r * 6, full.tokens.begin() + r * 6 + 6},
                       {full.targets.begin() + r * 6, full.targets.begin() + r * 6 + 6}};
        m->forward_backward(half.view(), 1.0f / float(total), nullptr);
    }
    size_t k = 0;
    for (Param* p : m->params()) {
        for (int64_t i = 0; i < p->grad.numel(); i++)
            ASSERT_NEAR(p->grad.f32()[i], g1[k][size_t(i)], 1e-5f + 1e-4f * std::fabs(g1[k][size_t(i)])) << p->name;
        k++;
    }
}

TEST(Model, SaveLoadRoundTrip) {
    ModelOptions opts;
    auto m = LlamaModel::random(tiny_config(false, true, 4, 2), opts, 21);
    std::string dir = tuner::testing::make_temp_dir("roundtrip");
    m->save(dir, DType::F32);
    auto m2 = LlamaModel::load(dir, opts);
    EXPECT_EQ(m2->config.attention_bias, true);
    EXPECT_EQ(m2->config.tie_word_embeddings, false);
    auto p1 = m->params(), p2 = m2->params();
    ASSERT_EQ(p1.size(), p2.size());
    for (size_t i = 0; i < p1.size(); i++) {
        ASSERT_EQ(p1[i]->name, p2[i]->name);
        ASSERT_EQ(0, std::memcmp(p1[i]->value.data, p2[i]->value.data, p1[i]->value.nbytes())) << p1[i]->name;
    }
    // bf16 save: values round to bf16 and a bf16-stored frozen model gives nearly the same logits
    m->save(dir + "/bf16", DType::BF16);
    ModelOptions frozen;
    frozen.trainable = false;
    frozen.weight_dtype = DType::BF16;
    auto mb = LlamaModel::load(dir + "/bf16", frozen);
    EXPECT_EQ(mb->embed_tokens.value.dtype, DType::BF16);
    TestBatch tb = make_batch(1, 8, 48, 1);
    m->prepare(1, 8, false);
    mb->prepare(1, 8, false);
    std::vector<float> l1(8 * 48), l2(8 * 48);
    m->logits(tb.view(), l1.data());
    mb->logits(tb.view(), l2.data());
    for (size_t i = 0; i < l1.size(); i++) ASSERT_NEAR(l1[i], l2[i], 2e-2f);  // bf16 weights: ~3 significant digits
}
