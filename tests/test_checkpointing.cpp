// Activation checkpointing (ModelOptions::gradient_checkpointing): gradients and losses are
// bit-identical to the run that keeps every layer's activations, for full fine-tuning and for
// LoRA with dropout, on packed rows (positions restart, attention cut at sample boundaries) with
// B > 1; and the activation arena shrinks to L x (N, C) + one layer's worth.
// Also bf16 activation storage (at the end): bit-identical checkpointing, close to f32, half the
// bytes for the saved layer buffers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "models/llama.h"
#include "testing.h"

using namespace tuner;

namespace {

ModelConfig config(int L, int C = 32) {
    ModelConfig c;
    c.architecture = "Qwen2ForCausalLM", c.model_type = "qwen2";
    c.vocab_size = 64, c.hidden_size = C, c.intermediate_size = C * 9 / 4, c.num_layers = L;
    c.num_heads = C / 8, c.num_kv_heads = C / 16, c.head_dim = 8;
    c.rms_norm_eps = 1e-5, c.rope_theta = 10000.0, c.tie_word_embeddings = false, c.attention_bias = true;
    c.max_position_embeddings = 128;
    return c;
}

// Weights away from the init so every path carries signal; LoRA B non-zero so dA is non-zero.
void randomise(const std::vector<Param*>& ps, uint64_t seed, float std = 0.2f) {
    std::mt19937 rng{uint32_t(seed)};
    std::normal_distribution<float> d(0.0f, std);
    for (Param* p : ps) {
        float* v = p->value.f32();
        const bool norm = p->name.find("norm") != std::string::npos;
        for (int64_t i = 0; i < p->value.numel(); i++) v[i] = norm ? 1.0f + d(rng) : d(rng);
    }
}

// B rows of T tokens, each row packed with samples of random lengths: positions restart and
// seg_start marks each sample's first index; some targets are -100.
struct Packed {
    int B, T;
    std::vector<int32_t> tokens, targets, positions, seg_start;
    Batch view() const {
        Batch b;
        b.B = B, b.T = T, b.tokens = tokens.data(), b.targets = targets.data();
        b.positions = positions.data(), b.seg_start = seg_start.data();
        return b;
    }
};

Packed packed_batch(int B, int T, int V, uint64_t seed) {
    std::mt19937 rng{uint32_t(seed)};
    Packed p{B, T, {}, {}, {}, {}};
    for (int b = 0; b < B; b++) {
        int start = 0;
        while (start < T) {
            const int len = std::min(T - start, 3 + int(rng() % 9));
            for (int i = 0; i < len; i++) {
                p.tokens.push_back(int32_t(rng() % uint32_t(V)));
                p.targets.push_back(rng() % 4 == 0 ? -100 : int32_t(rng() % uint32_t(V)));
                p.positions.push_back(i);
                p.seg_start.push_back(start);  // row-relative first index of the sample
            }
            start += len;
        }
    }
    return p;
}

std::vector<std::vector<float>> grads_of(const std::vector<Param*>& ps) {
    std::vector<std::vector<float>> out;
    for (Param* p : ps) out.emplace_back(p->grad.f32(), p->grad.f32() + p->grad.numel());
    return out;
}

size_t activation_bytes(const MemoryPlan& p) {
    return p.role_bytes("activations") + p.role_bytes("activation grads") + p.role_bytes("adapter activations");
}

// Two micro-batches (counter 5 and 6, as the trainer numbers them) with and without
// checkpointing on the same model; every gradient must be equal bit for bit.
void expect_bit_identical(LlamaModel& m, const std::vector<Param*>& trained, int B, int T) {
    Packed b1 = packed_batch(B, T, int(m.config.vocab_size), 11), b2 = packed_batch(B, T, int(m.config.vocab_size), 12);
    double loss[2][2];
    std::vector<std::vector<float>> g[2];
    size_t acts[2];
    for (int ck = 0; ck < 2; ck++) {
        m.options.gradient_checkpointing = ck == 1;
        m.prepare(B, T, true);  // re-plans when the setting changes
        acts[ck] = activation_bytes(m.memory_plan());
        m.zero_grad();
        m.set_lora_dropout_counter(5);
        loss[ck][0] = m.forward_backward(b1.view(), 0.01f, nullptr);
        loss[ck][1] = m.forward_backward(b2.view(), 0.01f, nullptr);  // counter 6
        g[ck] = grads_of(trained);
    }
    EXPECT_EQ(loss[0][0], loss[1][0]);
    EXPECT_EQ(loss[0][1], loss[1][1]);
    ASSERT_EQ(g[0].size(), g[1].size());
    double gmax = 0;
    for (size_t k = 0; k < g[0].size(); k++) {
        ASSERT_EQ(0, std::memcmp(g[0][k].data(), g[1][k].data(), g[0][k].size() * sizeof(float)))
            << trained[k]->name << " differs with checkpointing";
        for (float v : g[0][k]) gmax = std::max(gmax, double(std::fabs(v)));
    }
    EXPECT_GT(gmax, 0.0);  // not a vacuous comparison of zeros
    // Checkpointing keeps one layer set instead of L (L >= 3 here): clearly smaller.
    EXPECT_LT(acts[1], acts[0] * 3 / 4) << acts[1] << " vs " << acts[0];
}

}  // namespace

TEST(Checkpointing, FullFineTuningGradientsAreBitIdentical) {
    ModelOptions o;
    auto m = LlamaModel::random(config(4), o, 1);
    randomise(m->params(), 2);
    expect_bit_identical(*m, m->trainable_params(), 3, 29);
}

TEST(Checkpointing, LoraWithDropoutGradientsAreBitIdentical) {
    ModelOptions o;
    LoraConfig lc;
    lc.r = 4, lc.lora_alpha = 8, lc.lora_dropout = 0.3, lc.seed = 9;
    o.lora = lc;
    auto m = LlamaModel::random(config(4), o, 3);
    randomise(m->params(), 4);
    randomise(m->adapter_params(), 5);
    expect_bit_identical(*m, m->trainable_params(), 2, 37);

    // The dropout masks really act (so the test above compares masked runs): without them the
    // gradients differ.
    m->options.gradient_checkpointing = true;
    Packed b = packed_batch(2, 37, 64, 11);
    m->zero_grad();
    m->set_lora_dropout_counter(5);
    m->forward_backward(b.view(), 0.01f, nullptr);
    auto with = grads_of(m->trainable_params());
    m->adapters()[0]->dropout = 0.0f;  // one adapter without dropout changes its gradient
    m->zero_grad();
    m->set_lora_dropout_counter(5);
    m->forward_backward(b.view(), 0.01f, nullptr);
    auto without = grads_of(m->trainable_params());
    EXPECT_NE(0, std::memcmp(with[0].data(), without[0].data(), with[0].size() * sizeof(float)));
}

TEST(Checkpointing, LargerShapesUseEveryThreadedPath) {
    // Several 64-query attention blocks per row, GEMMs and LoRA dropout above the kernels'
    // thresholds for running on all threads: still bit-identical.
    ModelOptions o;
    LoraConfig lc;
    lc.r = 16, lc.lora_dropout = 0.2, lc.seed = 3;
    o.lora = lc;
    auto m = LlamaModel::random(config(3, 128), o, 10);
    randomise(m->params(), 11);
    randomise(m->adapter_params(), 12);
    expect_bit_identical(*m, m->trainable_params(), 2, 150);
    ModelOptions full;
    auto f = LlamaModel::random(config(3, 128), full, 13);
    randomise(f->params(), 14);
    expect_bit_identical(*f, f->trainable_params(), 2, 150);
}

TEST(Checkpointing, LoraOnBf16BaseWithSubsetOfModules) {
    ModelOptions o;
    o.weight_dtype = DType::BF16;
    LoraConfig lc;
    lc.r = 8, lc.lora_dropout = 0.1, lc.target_modules = {"q_proj", "v_proj", "down_proj"};
    o.lora = lc;
    auto m = LlamaModel::random(config(4), o, 6);
    randomise(m->adapter_params(), 7);
    expect_bit_identical(*m, m->trainable_params(), 2, 33);
}

TEST(Checkpointing, EvaluationAndLogitsAfterACheckpointedStep) {
    // forward_loss and logits run the plain forward on the shared set; they match the
    // non-checkpointed model.
    ModelOptions o;
    auto a = LlamaModel::random(config(3), o, 8);
    o.gradient_checkpointing = true;
    auto b = LlamaModel::random(config(3), o, 8);
    Packed p = packed_batch(2, 20, 64, 13);
    a->prepare(2, 20, true);
    b->prepare(2, 20, true);
    a->forward_backward(p.view(), 1.0f, nullptr);
    b->forward_backward(p.view(), 1.0f, nullptr);
    int64_t ca = 0, cb = 0;
    EXPECT_EQ(a->forward_loss(p.view(), &ca), b->forward_loss(p.view(), &cb));
    EXPECT_EQ(ca, cb);
}

TEST(Checkpointing, ActivationPlanIsLInputsPlusOneLayer) {
    // The difference between the two plans is exactly (L - 1) layers' worth of layer buffers.
    const ModelConfig c = config(6);
    const int B = 2, T = 50;
    MemoryPlan off, on, one_layer;
    ActivationPlanOptions o;
    LlamaModel::plan_activations(off, c, B, T, o);
    o.checkpointing = true;
    LlamaModel::plan_activations(on, c, B, T, o);
    // One layer set: the "layer ..." entries of the checkpointed plan.
    size_t per_layer = 0;
    for (const auto& e : on.roles().at("activations"))
        if (e.name.rfind("layer ", 0) == 0) per_layer += e.bytes;
    EXPECT_EQ(activation_bytes(off) - activation_bytes(on), 5 * per_layer);
    // The layer inputs: embedding output + one output per layer, (N, C) each.
    for (const auto& e : on.roles().at("activations")) {
        if (e.name == "embedding out, residual out") EXPECT_EQ(e.bytes, size_t(1 + 6) * B * T * 32 * 4);
    }
}

// ---- bf16 activations (ModelOptions::activation_dtype) --------------------------------------
// The CPU runs them through act_f32.h (widen on load, round on store), which makes it the
// reference for the CUDA path: here, checkpointing stays bit-identical with bf16 buffers, the
// result stays within bf16 rounding of the f32 model, and the layer buffers take half the bytes.

TEST(Checkpointing, Bf16ActivationsLoraWithDropoutGradientsAreBitIdentical) {
    ModelOptions o;
    o.activation_dtype = DType::BF16;
    LoraConfig lc;
    lc.r = 4, lc.lora_alpha = 8, lc.lora_dropout = 0.3, lc.seed = 9;
    o.lora = lc;
    auto m = LlamaModel::random(config(4), o, 3);
    randomise(m->params(), 4);
    randomise(m->adapter_params(), 5);
    expect_bit_identical(*m, m->trainable_params(), 2, 37);
}

TEST(Bf16Activations, CloseToF32ActivationsForFullAndLora) {
    for (bool lora : {false, true}) {
        ModelOptions o;
        if (lora) {
            LoraConfig lc;
            lc.r = 4, lc.lora_alpha = 8, lc.lora_dropout = 0.1, lc.seed = 9;
            o.lora = lc;
        }
        auto m = LlamaModel::random(config(3), o, 21);
        // Weights at std 0.1 (the checkpointing tests' 0.2 make this tiny 3-layer model chaotic
        // enough to amplify bf16 rounding into 5-10% gradient differences; at 0.1 it is ~2%).
        randomise(m->params(), 22, 0.1f);
        if (lora) randomise(m->adapter_params(), 23, 0.1f);
        const Packed p = packed_batch(2, 31, 64, 24);
        double loss[2];
        std::vector<std::vector<float>> g[2];
        size_t bytes[2];
        for (int k = 0; k < 2; k++) {
            m->options.activation_dtype = k == 0 ? DType::F32 : DType::BF16;
            m->prepare(2, 31, true);  // re-plans when the dtype changes
            bytes[k] = activation_bytes(m->memory_plan());
            m->zero_grad();
            m->set_lora_dropout_counter(3);
            loss[k] = m->forward_backward(p.view(), 0.01f, nullptr);
            g[k] = grads_of(m->trainable_params());
        }
        const char* what = lora ? "lora" : "full";
        // bf16 keeps 8 bits of mantissa (relative rounding 2^-9 ~ 2e-3 per store); a few roundings
        // in a row through 3 layers stay inside 1% of the loss and 5% of each gradient's max
        // (measured worst: 1.3% full, 2.0% LoRA).
        EXPECT_NEAR(loss[1], loss[0], 1e-2 * std::fabs(loss[0])) << what;
        EXPECT_NE(loss[1], loss[0]) << what << ": bf16 storage changed nothing (was it used?)";
        for (size_t t = 0; t < g[0].size(); t++) {
            double scale = 0, worst = 0;
            for (size_t i = 0; i < g[0][t].size(); i++) {
                scale = std::max(scale, double(std::fabs(g[0][t][i])));
                worst = std::max(worst, double(std::fabs(g[1][t][i] - g[0][t][i])));
            }
            EXPECT_LE(worst, 5e-2 * scale) << what << ": " << m->trainable_params()[t]->name;
        }
        EXPECT_LT(bytes[1], bytes[0]) << what;
    }
}

TEST(Bf16Activations, PlanStoresTheSavedLayerBuffersInHalfTheBytes) {
    // Only the buffers a layer saves for backward change (h1, h2, q, k, v, att, gate, up, m):
    // the residual stream, rstd, lse, losses and gradients stay f32.
    const ModelConfig c = config(4);
    const int B = 2, T = 64;  // N*C*2 bytes stay multiples of the arena alignment
    MemoryPlan f32, bf16;
    ActivationPlanOptions o;
    LlamaModel::plan_activations(f32, c, B, T, o);
    o.activation_dtype = DType::BF16;
    LlamaModel::plan_activations(bf16, c, B, T, o);
    const size_t N = size_t(B) * T, C = size_t(c.hidden_size), F = size_t(c.intermediate_size);
    const size_t QD = size_t(c.num_heads * c.head_dim), KVD = size_t(c.num_kv_heads * c.head_dim);
    const size_t saved_elems_per_layer = N * (2 * C + 2 * QD + 2 * KVD + 3 * F);
    EXPECT_EQ(f32.role_bytes("activations") - bf16.role_bytes("activations"), 4 * saved_elems_per_layer * 2);
    // Gradients stay f32; one bf16 scratch is added: a linear's dy rounded once for its GEMMs.
    EXPECT_EQ(bf16.role_bytes("activation grads") - f32.role_bytes("activation grads"),
              N * std::max({QD, C, F}) * 2);
}
