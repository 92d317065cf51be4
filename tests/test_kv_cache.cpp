// Incremental decoding with a KV cache (LlamaModel::decode_step) against the full forward:
// logits at every length (prompt at once, then token by token, and with a chunked prompt) on
// tiny random models with GQA, q/k/v bias and a LoRA adapter; greedy decoding of the real
// stories260K model token for token equal to the uncached loop.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "infer/generate.h"
#include "models/llama.h"
#include "testing.h"

using namespace tuner;

static ModelConfig tiny_config(bool bias, int NH, int NKV) {
    ModelConfig c;
    c.architecture = bias ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
    c.model_type = bias ? "qwen2" : "llama";
    c.vocab_size = 48, c.hidden_size = 16, c.intermediate_size = 40, c.num_layers = 2;
    c.num_heads = NH, c.num_kv_heads = NKV, c.head_dim = 8;
    c.rms_norm_eps = 1e-5, c.rope_theta = 10000.0, c.tie_word_embeddings = false, c.attention_bias = bias;
    c.max_position_embeddings = 64;
    return c;
}

// Weights away from the N(0, 0.02) init so every path carries signal.
static void randomise(LlamaModel& m, uint64_t seed) {
    std::mt19937 rng{uint32_t(seed)};
    std::normal_distribution<float> d(0.0f, 0.3f);
    for (Param* p : m.params()) {
        float* v = p->value.f32();
        bool norm = p->name.find("norm") != std::string::npos;
        for (int64_t i = 0; i < p->value.numel(); i++) v[i] = norm ? 1.0f + d(rng) : d(rng);
    }
    for (LoraAdapter* ad : m.adapters()) {
        float* b = ad->B.value.f32();  // nonzero B: the adapter changes the output
        for (int64_t i = 0; i < ad->B.value.numel(); i++) b[i] = d(rng);
    }
}

// max |a - b| / max |b|: logits are compared relative to their scale (f32 sums in a different
// order: the cached path runs the projections on fewer rows and a plain attention loop).
static double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); i++) {
        num = std::max(num, double(std::fabs(a[i] - b[i])));
        den = std::max(den, double(std::fabs(b[i])));
    }
    return num / std::max(den, 1e-30);
}

static void expect_cached_equals_full(LlamaModel& m, int prompt_len, int total, int max_chunk) {
    const int V = int(m.config.vocab_size);
    std::mt19937 rng{7};
    std::vector<int32_t> ids(static_cast<size_t>(total));
    for (auto& t : ids) t = int32_t(rng() % uint32_t(V));
    m.prepare(1, total, false);
    KVCache cache(m, total, max_chunk);
    std::vector<float> want(static_cast<size_t>(V)), got(static_cast<size_t>(V));
    m.decode_step(ids.data(), prompt_len, cache, got.data());
    for (int T = prompt_len; T <= total; T++) {
        if (T > prompt_len) m.decode_step(&ids[size_t(T - 1)], 1, cache, got.data());
        ASSERT_EQ(cache.len(), T);
        Batch b;
        b.B = 1, b.T = T, b.tokens = ids.data();
        m.last_logits(b, want.data());
        EXPECT_LT(rel_diff(got, want), 1e-4) << "length " << T;
    }
}

class KVCacheLogits : public ::testing::TestWithParam<std::tuple<bool, int, int>> {};

TEST_P(KVCacheLogits, MatchFullForward) {
    auto [bias, NH, NKV] = GetParam();
    ModelOptions o;
    o.trainable = false;
    auto m = LlamaModel::random(tiny_config(bias, NH, NKV), o, 3);
    randomise(*m, 4);
    expect_cached_equals_full(*m, 5, 24, 64);
    expect_cached_equals_full(*m, 13, 20, 4);  // prompt in chunks of 4
}

INSTANTIATE_TEST_SUITE_P(Shapes, KVCacheLogits,
                         ::testing::Values(std::make_tuple(false, 2, 2), std::make_tuple(false, 4, 2),
                                           std::make_tuple(true, 4, 1), std::make_tuple(true, 2, 2)));

TEST(KVCache, LoraAdapterApplies) {
    ModelOptions o;
    o.trainable = false;
    auto m = LlamaModel::random(tiny_config(true, 4, 2), o, 5);
    LoraConfig lc;
    lc.r = 4, lc.lora_alpha = 8, lc.lora_dropout = 0.0, lc.target_modules = {"all-linear"}, lc.seed = 11;
    m->enable_lora(lc);
    randomise(*m, 6);
    expect_cached_equals_full(*m, 6, 20, 64);
    // Disabled adapters: the cached path gives the base output too.
    m->set_adapters_enabled(false);
    expect_cached_equals_full(*m, 6, 12, 64);
}

TEST(KVCache, FullCacheIsAnError) {
    ModelOptions o;
    o.trainable = false;
    auto m = LlamaModel::random(tiny_config(false, 2, 2), o, 5);
    KVCache cache(*m, 4);
    std::vector<int32_t> ids{1, 2, 3};
    m->decode_step(ids.data(), 3, cache, nullptr);
    std::string msg = ::tuner::testing::error_of([&] { m->decode_step(ids.data(), 2, cache, nullptr); });
    EXPECT_CONTAINS(msg, "KV cache full");
    cache.clear();
    EXPECT_EQ(cache.len(), 0);
}

// The uncached reference: the whole forward per step, as greedy_generate did before the cache.
static std::vector<int32_t> greedy_full(LlamaModel& model, std::vector<int32_t> tokens, int max_new) {
    model.prepare(1, int(tokens.size()) + max_new, false);
    std::vector<float> logits(size_t(model.config.vocab_size));
    std::vector<int32_t> out;
    for (int step = 0; step < max_new; step++) {
        Batch b;
        b.B = 1, b.T = int(tokens.size()), b.tokens = tokens.data();
        model.last_logits(b, logits.data());
        int32_t best = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
        tokens.push_back(best);
        out.push_back(best);
    }
    return out;
}

TEST(KVCache, GreedyStories260KEqualsUncached) {
    TUNER_REQUIRE_SHARED_DATA(data);
    ModelOptions opts;
    opts.trainable = false;
    auto model = LlamaModel::load(data + "/stories260K/hf", opts);
    for (const std::vector<int32_t>& prompt : {std::vector<int32_t>{1}, std::vector<int32_t>{1, 403, 407, 261, 378}}) {
        std::vector<int32_t> want = greedy_full(*model, prompt, 150);
        std::vector<int32_t> got = greedy_generate(*model, prompt, 150, -1);
        EXPECT_EQ(got, want);
    }
}
