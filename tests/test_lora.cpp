// LoRA: adapters in nn/linear, their integration in the Llama model, PEFT adapter folders and
// `tuner merge`.
//
// Behaviour tests in the style of PEFT's testing_common.py: a fresh adapter (B = 0) changes no
// output; merged equals unmerged; a disabled adapter gives the base output; save/load
// round-trips bit-exactly; a merge that produces NaN/inf is refused and writes nothing. Then
// gradients: A and B against central finite differences through the whole model (dropout 0
// and > 0, f32 and frozen bf16 bases), and logits / loss / every adapter gradient against the
// independent PyTorch reference tests/ref/lora_ref.py (all linear layers, rsLoRA on Qwen2,
// q_proj + v_proj only; f32 and bf16 bases).
//
// The reference needs /usr/bin/python3 with torch and numpy (TUNER_PYTHON overrides it); without
// them the golden tests are skipped with a message. Its output is cached in
// BUILD/lora-ref/<hash of lora_ref.py and llama_ref.py>/.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/peft.h"
#include "io/safetensors.h"
#include "models/llama.h"
#include "testing.h"

namespace {

using namespace tuner;
using tuner::testing::read_file;
namespace fs = std::filesystem;

// ---- tiny models --------------------------------------------------------------------------
ModelConfig tiny_config(bool tied = false, bool bias = false) {
    ModelConfig c;
    c.architecture = bias ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
    c.model_type = bias ? "qwen2" : "llama";
    c.vocab_size = 48, c.hidden_size = 16, c.intermediate_size = 40, c.num_layers = 2;
    c.num_heads = 4, c.num_kv_heads = 2, c.head_dim = 8;
    c.rms_norm_eps = 1e-5, c.rope_theta = 10000.0, c.tie_word_embeddings = tied, c.attention_bias = bias;
    c.max_position_embeddings = 64;
    return c;
}

// Weights with O(1) activations (norms != 1) so every path carries signal. Frozen params may
// be BF16: values are written through f32.
void randomise_base(LlamaModel& m, uint64_t seed) {
    std::mt19937 rng{uint32_t(seed)};
    std::normal_distribution<float> d(0.0f, 0.3f);
    for (Param* p : m.params()) {
        std::vector<float> v(size_t(p->value.numel()));
        bool norm = p->name.find("norm") != std::string::npos;
        for (float& x : v) x = norm ? 1.0f + d(rng) : d(rng);
        convert_from_f32(p->value.data, p->value.dtype, v.data(), v.size());
    }
}

// B random instead of zero (so the adapter changes the output and A gets gradients).
void randomise_b(LlamaModel& m, uint64_t seed, float std = 0.3f) {
    std::mt19937 rng{uint32_t(seed)};
    std::normal_distribution<float> d(0.0f, std);
    for (LoraAdapter* ad : m.adapters()) {
        float* b = ad->B.value.f32();
        for (int64_t i = 0; i < ad->B.value.numel(); i++) b[i] = d(rng);
    }
}

LoraConfig tiny_lora(double dropout = 0.0, std::vector<std::string> targets = {"all-linear"}) {
    LoraConfig c;
    c.r = 4;
    c.lora_alpha = 8;
    c.lora_dropout = dropout;
    c.target_modules = std::move(targets);
    c.seed = 11;
    return c;
}

std::unique_ptr<LlamaModel> frozen_model(const ModelConfig& c, uint64_t seed, DType dtype = DType::F32) {
    ModelOptions o;
    o.trainable = false;
    o.weight_dtype = dtype;
    auto m = LlamaModel::random(c, o, seed);
    randomise_base(*m, seed + 1);
    return m;
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

TestBatch make_batch(int B, int T, int V, uint64_t seed) {
    std::mt19937 rng{uint32_t(seed)};
    TestBatch b{B, T, std::vector<int32_t>(size_t(B * T)), std::vector<int32_t>(size_t(B * T))};
    for (auto& t : b.tokens) t = int32_t(rng() % uint32_t(V));
    for (size_t i = 0; i < b.targets.size(); i++) b.targets[i] = (rng() % 5 == 0) ? -100 : int32_t(rng() % uint32_t(V));
    return b;
}

std::vector<float> logits_of(LlamaModel& m, const TestBatch& tb) {
    m.prepare(tb.B, tb.T, false);
    std::vector<float> out(size_t(tb.B) * size_t(tb.T) * size_t(m.config.vocab_size));
    m.logits(tb.view(), out.data());
    return out;
}

double max_abs(const std::vector<float>& v) {
    double m = 0;
    for (float x : v) m = std::max(m, double(std::fabs(x)));
    return m;
}

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
    double m = 0;
    for (size_t i = 0; i < a.size(); i++) m = std::max(m, double(std::fabs(a[i] - b[i])));
    return m;
}

// Expects a tuner::Error whose message contains every one of `parts`.
template <typename F>
void expect_error(F&& f, std::vector<std::string> parts) {
    try {
        f();
        ADD_FAILURE() << "expected a tuner::Error containing '" << parts[0] << "'";
    } catch (const Error& e) {
        std::string msg = e.what();
        for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "message: " << msg << "\nmissing: " << p;
    }
}

// ---- configuration and init ------------------------------------------------------------------
TEST(LoraConfig, ScaleAndTargets) {
    LoraConfig c;
    c.r = 16, c.lora_alpha = 32;
    EXPECT_FLOAT_EQ(c.scale(), 2.0f);
    c.use_rslora = true;
    EXPECT_FLOAT_EQ(c.scale(), 8.0f);  // 32 / sqrt(16)
    EXPECT_EQ(c.target_names().size(), 7u);  // all-linear
    c.target_modules = {"v_proj", "q_proj"};
    EXPECT_EQ(c.target_names(), (std::vector<std::string>{"q_proj", "v_proj"}));
    c.target_modules = {"lm_head"};
    expect_error([&] { c.validate("cfg"); }, {"lm_head"});
    c.target_modules = {"qproj"};
    expect_error([&] { c.validate("cfg"); }, {"unknown module 'qproj'", "q_proj"});
    c.target_modules = {"q_proj"};
    c.lora_dropout = 1.0;
    expect_error([&] { c.validate("cfg"); }, {"lora_dropout"});
    c.lora_dropout = 0.1;
    c.r = 0;
    expect_error([&] { c.validate("cfg"); }, {"r must be"});
}

// PEFT init_lora_weights=True: A ~ kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), B = 0.
TEST(Lora, InitAsPeft) {
    LoraConfig cfg = tiny_lora();
    cfg.r = 64;
    ModelConfig c = tiny_config();
    c.hidden_size = 64, c.intermediate_size = 256, c.head_dim = 16;
    auto m = frozen_model(c, 1);
    m->enable_lora(cfg);
    ASSERT_EQ(m->adapters().size(), size_t(7 * c.num_layers));
    for (LoraAdapter* ad : m->adapters()) {
        const int64_t in = ad->A.value.shape[1];
        const double bound = 1.0 / std::sqrt(double(in));
        double mean = 0, sq = 0, mx = 0;
        const int64_t n = ad->A.value.numel();
        for (int64_t i = 0; i < n; i++) {
            double v = ad->A.value.f32()[i];
            mean += v, sq += v * v, mx = std::max(mx, std::fabs(v));
        }
        mean /= double(n), sq /= double(n);
        EXPECT_LE(mx, bound) << ad->A.name;
        EXPECT_GT(mx, 0.95 * bound) << ad->A.name;
        EXPECT_NEAR(sq, bound * bound / 3.0, 0.1 * bound * bound / 3.0) << ad->A.name;  // var of U(-b, b)
        EXPECT_NEAR(mean, 0.0, 0.05 * bound) << ad->A.name;
        for (int64_t i = 0; i < ad->B.value.numel(); i++) ASSERT_EQ(ad->B.value.f32()[i], 0.0f) << ad->B.name;
        EXPECT_FLOAT_EQ(ad->scale, float(cfg.lora_alpha / double(cfg.r)));
    }
    // Deterministic per (seed, name): a second model gives the same A.
    auto m2 = frozen_model(c, 1);
    m2->enable_lora(cfg);
    for (size_t i = 0; i < m->adapters().size(); i++)
        ASSERT_EQ(0, std::memcmp(m->adapters()[i]->A.value.data, m2->adapters()[i]->A.value.data,
                                 m->adapters()[i]->A.value.nbytes()));
    EXPECT_EQ(m->adapters()[0]->A.name, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
    EXPECT_EQ(m->adapters()[6]->B.name, "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight");
}

// The base is frozen: no base gradient, no gradient memory; the optimizer sees only A and B.
TEST(Lora, TrainableParamsAndMemoryPlan) {
    auto m = frozen_model(tiny_config(), 3);
    EXPECT_TRUE(m->trainable_params().empty());
    expect_error([&] { m->prepare(1, 4, true); }, {"training needs"});
    m->enable_lora(tiny_lora(0.1));
    m->prepare(2, 8, true);
    std::vector<Param*> tp = m->trainable_params();
    EXPECT_EQ(tp.size(), size_t(2 * 7 * 2));
    EXPECT_EQ(tp, m->adapter_params());
    for (Param* p : tp) {
        EXPECT_EQ(p->value.dtype, DType::F32);
        EXPECT_EQ(p->grad.dtype, DType::F32);
        EXPECT_TRUE(p->trainable());
    }
    for (Param* p : m->params()) EXPECT_FALSE(p->trainable()) << p->name;
    const auto& roles = m->memory_plan().roles();
    EXPECT_EQ(roles.count("grads"), 0u);
    EXPECT_EQ(roles.count("adapters"), 1u);
    EXPECT_EQ(roles.count("adapter grads"), 1u);
    EXPECT_EQ(roles.count("adapter activations"), 1u);
    int64_t n = 0;
    for (Param* p : tp) n += p->value.numel();
    EXPECT_EQ(m->num_trainable_params(), n);
    EXPECT_EQ(m->memory_plan().role_bytes("adapters"), m->memory_plan().role_bytes("adapter grads"));

    // Full fine-tuning is unchanged: every parameter is trained, and LoRA cannot be added.
    ModelOptions full;
    auto f = LlamaModel::random(tiny_config(), full, 3);
    EXPECT_EQ(f->trainable_params(), f->params());
    expect_error([&] { f->enable_lora(tiny_lora()); }, {"frozen base"});

    // ModelOptions.lora freezes the base and enables the adapters in one go.
    ModelOptions lo;
    lo.lora = tiny_lora(0.0, {"q_proj", "v_proj"});
    auto g = LlamaModel::random(tiny_config(), lo, 3);
    EXPECT_FALSE(g->options.trainable);
    EXPECT_EQ(g->trainable_params().size(), size_t(2 * 2 * 2));
}

// ---- PEFT behaviour tests ----------------------------------------------------------------------
TEST(Lora, FreshAdapterChangesNothing) {
    auto base = frozen_model(tiny_config(), 5);
    TestBatch tb = make_batch(2, 9, 48, 6);
    std::vector<float> want = logits_of(*base, tb);
    auto m = frozen_model(tiny_config(), 5);
    m->enable_lora(tiny_lora());
    std::vector<float> got = logits_of(*m, tb);
    ASSERT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float))) << "B = 0 must add exactly 0";
    // Loss too, and in training: B = 0 means dA = 0 but dB != 0 (as in PEFT).
    m->prepare(2, 9, true);
    m->zero_grad();
    int64_t c1 = 0, c2 = 0;
    double l1 = m->forward_backward(tb.view(), 1.0f, &c1);
    double l2 = base->forward_loss(tb.view(), &c2);
    EXPECT_EQ(l1, l2);
    for (LoraAdapter* ad : m->adapters()) {
        double a = 0, b = 0;
        for (int64_t i = 0; i < ad->A.grad.numel(); i++) a = std::max(a, double(std::fabs(ad->A.grad.f32()[i])));
        for (int64_t i = 0; i < ad->B.grad.numel(); i++) b = std::max(b, double(std::fabs(ad->B.grad.f32()[i])));
        EXPECT_EQ(a, 0.0) << ad->A.name;
        EXPECT_GT(b, 0.0) << ad->B.name;
    }
}

TEST(Lora, DisabledAdapterGivesBaseOutput) {
    auto base = frozen_model(tiny_config(true, true), 7);
    TestBatch tb = make_batch(2, 8, 48, 8);
    std::vector<float> want = logits_of(*base, tb);
    auto m = frozen_model(tiny_config(true, true), 7);
    m->enable_lora(tiny_lora(0.2));
    randomise_b(*m, 9);
    std::vector<float> on = logits_of(*m, tb);
    EXPECT_GT(max_diff(on, want), 1e-2 * max_abs(want)) << "the adapter should change the output";
    m->set_adapters_enabled(false);
    std::vector<float> off = logits_of(*m, tb);
    ASSERT_EQ(0, std::memcmp(off.data(), want.data(), off.size() * sizeof(float)));
    // And in training: no adapter gradients while disabled.
    m->prepare(2, 8, true);
    m->zero_grad();
    int64_t c1 = 0, c2 = 0;
    EXPECT_EQ(m->forward_backward(tb.view(), 1.0f, &c1), base->forward_loss(tb.view(), &c2));
    for (Param* p : m->adapter_params())
        for (int64_t i = 0; i < p->grad.numel(); i++) ASSERT_EQ(p->grad.f32()[i], 0.0f) << p->name;
    m->set_adapters_enabled(true);
    std::vector<float> again = logits_of(*m, tb);
    ASSERT_EQ(0, std::memcmp(again.data(), on.data(), on.size() * sizeof(float)));
}

TEST(Lora, SaveLoadRoundTripsBitExactly) {
    auto m = frozen_model(tiny_config(), 12);
    LoraConfig cfg = tiny_lora(0.05, {"q_proj", "k_proj", "down_proj"});
    cfg.use_rslora = true;
    cfg.lora_alpha = 12;
    m->enable_lora(cfg);
    randomise_b(*m, 13);
    const std::string dir = tuner::testing::make_temp_dir("lora-save") + "/adapter";
    save_peft_adapter(*m, dir, "models/tiny");
    EXPECT_TRUE(fs::exists(dir + "/adapter_config.json"));
    EXPECT_TRUE(fs::exists(dir + "/adapter_model.safetensors"));
    EXPECT_FALSE(fs::exists(dir + "/adapter_config.json.tmp"));

    // adapter_config.json: PEFT's keys and values.
    nlohmann::json j = nlohmann::json::parse(read_file(dir + "/adapter_config.json"));
    EXPECT_EQ(j["peft_type"], "LORA");
    EXPECT_EQ(j["task_type"], "CAUSAL_LM");
    EXPECT_EQ(j["r"], 4);
    EXPECT_EQ(j["lora_alpha"], 12);
    EXPECT_TRUE(j["lora_alpha"].is_number_integer());
    EXPECT_DOUBLE_EQ(j["lora_dropout"].get<double>(), 0.05);
    EXPECT_EQ(j["use_rslora"], true);
    EXPECT_EQ(j["bias"], "none");
    EXPECT_EQ(j["fan_in_fan_out"], false);
    EXPECT_EQ(j["init_lora_weights"], true);
    EXPECT_EQ(j["inference_mode"], true);
    EXPECT_EQ(j["use_dora"], false);
    EXPECT_TRUE(j["modules_to_save"].is_null());
    EXPECT_EQ(j["base_model_name_or_path"], "models/tiny");
    EXPECT_EQ(j["target_modules"], nlohmann::json({"q_proj", "k_proj", "down_proj"}));
    // Tensor names and shapes as PEFT saves them.
    {
        SafetensorsFile f(dir + "/adapter_model.safetensors");
        EXPECT_EQ(f.tensors().size(), size_t(2 * 3 * 2));
        const SafetensorsTensor* a = f.find("base_model.model.model.layers.1.mlp.down_proj.lora_A.weight");
        ASSERT_TRUE(a);
        EXPECT_EQ(a->shape, (std::vector<int64_t>{4, 40}));
        const SafetensorsTensor* b = f.find("base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight");
        ASSERT_TRUE(b);
        EXPECT_EQ(b->shape, (std::vector<int64_t>{16, 4}));
        EXPECT_EQ(f.metadata().at("format"), "pt");
    }

    auto m2 = frozen_model(tiny_config(), 12);
    LoraConfig back = load_peft_adapter(*m2, dir);
    EXPECT_EQ(back.r, 4);
    EXPECT_EQ(back.lora_alpha, 12);
    EXPECT_EQ(back.lora_dropout, 0.05);
    EXPECT_TRUE(back.use_rslora);
    EXPECT_EQ(back.target_names(), (std::vector<std::string>{"q_proj", "k_proj", "down_proj"}));
    auto p1 = m->adapter_params(), p2 = m2->adapter_params();
    ASSERT_EQ(p1.size(), p2.size());
    for (size_t i = 0; i < p1.size(); i++) {
        ASSERT_EQ(p1[i]->name, p2[i]->name);
        ASSERT_EQ(0, std::memcmp(p1[i]->value.data, p2[i]->value.data, p1[i]->value.nbytes())) << p1[i]->name;
    }
    TestBatch tb = make_batch(1, 7, 48, 14);
    std::vector<float> l1 = logits_of(*m, tb), l2 = logits_of(*m2, tb);
    ASSERT_EQ(0, std::memcmp(l1.data(), l2.data(), l1.size() * sizeof(float)));

    // Saving again over the same folder replaces both files (through temporary names).
    save_peft_adapter(*m2, dir, "models/tiny");

    // Names as in a live PEFT state dict (".default." adapter name) and without the
    // "base_model.model." prefix load to the same values; BF16 files are converted.
    const std::string alt = tuner::testing::make_temp_dir("lora-alt");
    fs::copy_file(dir + "/adapter_config.json", alt + "/adapter_config.json");
    {
        SafetensorsWriter w(alt + "/adapter_model.safetensors");
        std::vector<std::string> names;
        for (size_t i = 0; i < p1.size(); i++) {
            std::string n = p1[i]->name;
            if (i % 2 == 0) n.insert(n.size() - std::strlen(".weight"), ".default");
            else n = n.substr(std::strlen("base_model.model."));
            names.push_back(n);
            w.declare(n, DType::F32, p1[i]->value.dims());
        }
        for (size_t i = 0; i < p1.size(); i++) w.write(names[i], p1[i]->value.data);
        w.finish();
    }
    auto m3 = frozen_model(tiny_config(), 12);
    LoraConfig c3 = load_peft_adapter(*m3, alt, /*lora_dropout=*/0.2, /*seed=*/9);
    EXPECT_EQ(c3.lora_dropout, 0.2);
    EXPECT_EQ(c3.seed, 9u);
    EXPECT_EQ(m3->lora_config().lora_dropout, 0.2);
    EXPECT_EQ(m3->adapters()[0]->dropout, 0.2f);
    for (size_t i = 0; i < p1.size(); i++)
        ASSERT_EQ(0, std::memcmp(p1[i]->value.data, m3->adapter_params()[i]->value.data, p1[i]->value.nbytes()));
}

// Bad adapter folders: each a tuner::Error naming the file and the tensor or key.
TEST(Lora, LoadErrorsNameFileAndTensor) {
    auto m = frozen_model(tiny_config(), 15);
    m->enable_lora(tiny_lora());
    const std::string dir = tuner::testing::make_temp_dir("lora-bad");
    save_peft_adapter(*m, dir, "x");

    // Another model: hidden size 24 instead of 16.
    ModelConfig other = tiny_config();
    other.hidden_size = 24, other.head_dim = 12;
    auto o = frozen_model(other, 15);
    expect_error([&] { load_peft_adapter(*o, dir); },
                 {"adapter_model.safetensors", "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                  "(4, 16)", "(4, 24)"});
    // Fewer layers in the model than in the adapter.
    ModelConfig one = tiny_config();
    one.num_layers = 1;
    auto m1 = frozen_model(one, 15);
    expect_error([&] { load_peft_adapter(*m1, dir); }, {"layer 1", "1 layers"});
    // No folder.
    auto m2 = frozen_model(tiny_config(), 15);
    expect_error([&] { load_peft_adapter(*m2, dir + "/nope"); }, {"nope", "adapter_config.json"});
    // DoRA, a trained bias, a non-LoRA tensor.
    nlohmann::json j = nlohmann::json::parse(read_file(dir + "/adapter_config.json"));
    auto write_cfg = [&](const nlohmann::json& x) { std::ofstream(dir + "/adapter_config.json") << x.dump(2); };
    nlohmann::json dora = j;
    dora["use_dora"] = true;
    write_cfg(dora);
    expect_error([&] { load_peft_adapter(*m2, dir); }, {"adapter_config.json", "DoRA"});
    nlohmann::json ia3 = j;
    ia3["peft_type"] = "IA3";
    write_cfg(ia3);
    expect_error([&] { load_peft_adapter(*m2, dir); }, {"adapter_config.json", "IA3"});
    write_cfg(j);
    {
        SafetensorsWriter w(dir + "/adapter_model.safetensors");
        std::vector<float> z(16 * 4, 0.0f);
        w.declare("base_model.model.lm_head.lora_A.weight", DType::F32, {4, 16});
        w.write("base_model.model.lm_head.lora_A.weight", z.data());
        w.finish();
    }
    expect_error([&] { load_peft_adapter(*m2, dir); }, {"adapter_model.safetensors", "base_model.model.lm_head.lora_A.weight"});
}

// Writes a random frozen base (with stand-in tokenizer files) and an adapter with random B.
struct MergeFixture {
    std::string root, base_dir, adapter_dir;
    std::unique_ptr<LlamaModel> unmerged;
};

MergeFixture make_merge_fixture(const std::string& name, DType base_dtype, float b_std = 0.3f) {
    MergeFixture f;
    f.root = tuner::testing::make_temp_dir(name);
    f.base_dir = f.root + "/base";
    f.adapter_dir = f.root + "/adapter";
    auto base = frozen_model(tiny_config(false, true), 21);
    base->save(f.base_dir, base_dtype);
    std::ofstream(f.base_dir + "/tokenizer.json") << "{\"stand-in\": true}\n";
    std::ofstream(f.base_dir + "/tokenizer_config.json") << "{}\n";
    std::ofstream(f.base_dir + "/generation_config.json") << "{\"do_sample\": false}\n";
    ModelOptions o;
    o.trainable = false;
    o.weight_dtype = base_dtype;
    f.unmerged = LlamaModel::load(f.base_dir, o);
    LoraConfig cfg = tiny_lora(0.1);
    cfg.use_rslora = true;
    f.unmerged->enable_lora(cfg);
    randomise_b(*f.unmerged, 22, b_std);
    save_peft_adapter(*f.unmerged, f.adapter_dir, f.base_dir);
    return f;
}

TEST(LoraMerge, MergedEqualsUnmerged) {
    MergeFixture f = make_merge_fixture("lora-merge", DType::F32);
    const std::string out = f.root + "/merged";
    merge_peft_adapter(f.base_dir, f.adapter_dir, out, std::nullopt);
    ModelOptions o;
    o.trainable = false;
    auto merged = LlamaModel::load(out, o);
    TestBatch tb = make_batch(2, 10, 48, 23);
    std::vector<float> want = logits_of(*f.unmerged, tb), got = logits_of(*merged, tb);
    // f32: W + s B A rounded once per weight vs x W^T + s (x A^T) B^T: a few ulps of the
    // weights, carried through two layers.
    EXPECT_LE(max_diff(got, want), 1e-5 * max_abs(want));
    f.unmerged->set_adapters_enabled(false);
    std::vector<float> base = logits_of(*f.unmerged, tb);
    EXPECT_GT(max_diff(base, want), 1e-2 * max_abs(want)) << "the adapter should matter";
    for (const char* file : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                             "generation_config.json"})
        EXPECT_TRUE(fs::exists(out + "/" + file)) << file;
    EXPECT_EQ(read_file(out + "/tokenizer.json"), read_file(f.base_dir + "/tokenizer.json"));
    // Untouched tensors are copied byte for byte.
    SafetensorsFile a(f.base_dir + "/model.safetensors"), b(out + "/model.safetensors");
    for (const char* n : {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.bias", "model.norm.weight"})
        EXPECT_EQ(0, std::memcmp(a.find(n)->data, b.find(n)->data, a.find(n)->nbytes)) << n;
    // The output folder exists: refused.
    expect_error([&] { merge_peft_adapter(f.base_dir, f.adapter_dir, out, std::nullopt); }, {"already exists"});
}

// The CLI, with a bf16 base and --dtype: bf16 output, config.json's torch_dtype follows.
TEST(LoraMerge, CommandLineBf16) {
    MergeFixture f = make_merge_fixture("lora-merge-cli", DType::BF16);
    const std::string out = f.root + "/merged-bf16";
    std::string log;
    int rc = tuner::testing::run_command(
        fmt::format("{} merge {} {} {} --dtype bf16", tuner::testing::tuner_exe(), f.base_dir, f.adapter_dir, out), &log);
    ASSERT_EQ(rc, 0) << log;
    nlohmann::json cfg = nlohmann::json::parse(read_file(out + "/config.json"));
    EXPECT_EQ(cfg["torch_dtype"], "bfloat16");
    SafetensorsFile st(out + "/model.safetensors");
    EXPECT_EQ(st.find("model.layers.1.mlp.up_proj.weight")->dtype, DType::BF16);
    ModelOptions o;
    o.trainable = false;
    o.weight_dtype = DType::BF16;
    auto merged = LlamaModel::load(out, o);
    TestBatch tb = make_batch(1, 9, 48, 24);
    std::vector<float> want = logits_of(*f.unmerged, tb), got = logits_of(*merged, tb);
    // The merged weights are rounded to bf16 (8 significant bits) once more.
    EXPECT_LE(max_diff(got, want), 3e-2 * max_abs(want));
    // Bad --dtype: a message, exit code != 0.
    rc = tuner::testing::run_command(
        fmt::format("{} merge {} {} {}/x --dtype int8", tuner::testing::tuner_exe(), f.base_dir, f.adapter_dir, f.root),
        &log);
    EXPECT_NE(rc, 0);
    EXPECT_NE(log.find("--dtype int8"), std::string::npos) << log;
}

// A merge whose result is not finite is refused and leaves nothing: no OUT_DIR, no temporary.
TEST(LoraMerge, NonFiniteMergeIsRefusedAndWritesNothing) {
    for (int kind = 0; kind < 2; kind++) {
        MergeFixture f = make_merge_fixture(kind ? "lora-merge-inf" : "lora-merge-nan", DType::F32);
        // kind 0: a NaN in one B; kind 1: finite but huge values whose product overflows f32.
        SafetensorsFile src(f.adapter_dir + "/adapter_model.safetensors");
        std::map<std::string, std::vector<float>> t;
        for (const SafetensorsTensor& x : src.tensors()) {
            std::vector<float> v(x.nbytes / 4);
            std::memcpy(v.data(), x.data, x.nbytes);
            t[x.name] = v;
        }
        const std::string victim = "base_model.model.model.layers.1.mlp.gate_proj.lora_";
        if (kind == 0) {
            t[victim + "B.weight"][5] = NAN;
        } else {
            for (float& v : t[victim + "A.weight"]) v = 3e19f;
            for (float& v : t[victim + "B.weight"]) v = 3e19f;
        }
        {
            SafetensorsWriter w(f.adapter_dir + "/adapter_model.safetensors");
            for (const SafetensorsTensor& x : src.tensors()) w.declare(x.name, DType::F32, x.shape);
            for (const SafetensorsTensor& x : src.tensors()) w.write(x.name, t[x.name].data());
            w.finish();
        }
        const std::string out = f.root + "/merged";
        expect_error([&] { merge_peft_adapter(f.base_dir, f.adapter_dir, out, std::nullopt); },
                     {"model.layers.1.mlp.gate_proj.weight", "non-finite", "Nothing was written"});
        EXPECT_FALSE(fs::exists(out));
        for (const auto& e : fs::directory_iterator(f.root))
            EXPECT_EQ(e.path().filename().string().find("merged"), std::string::npos) << "left behind: " << e.path();
        std::string log;
        int rc = tuner::testing::run_command(
            fmt::format("{} merge {} {} {}", tuner::testing::tuner_exe(), f.base_dir, f.adapter_dir, out), &log);
        EXPECT_NE(rc, 0);
        EXPECT_NE(log.find("non-finite"), std::string::npos) << log;
        EXPECT_FALSE(fs::exists(out));
    }
}

// ---- gradients against finite differences ------------------------------------------------------
// (dropout p, base dtype). With p > 0 the mask is a function of (seed, counter, layer, module):
// holding the counter fixed makes the loss a deterministic function of A and B.
class LoraGradient : public ::testing::TestWithParam<std::tuple<double, DType>> {};

TEST_P(LoraGradient, MatchesFiniteDifferences) {
    auto [p, dtype] = GetParam();
    auto m = frozen_model(tiny_config(true, true), 31, dtype);
    m->enable_lora(tiny_lora(p));
    randomise_b(*m, 32, 0.5f);
    TestBatch tb = make_batch(2, 7, 48, 33);
    Batch b = tb.view();
    m->prepare(2, 7, true);
    m->zero_grad();
    const uint64_t counter = 17;
    m->set_lora_dropout_counter(counter);
    int64_t count = 0;
    const double loss = m->forward_backward(b, 1.0f, &count);
    ASSERT_GT(count, 0);
    EXPECT_EQ(m->lora_dropout_counter(), counter + 1);
    m->set_lora_dropout_counter(counter);
    EXPECT_EQ(m->forward_loss(b, nullptr, /*lora_dropout=*/true), loss) << "same counter, same masks, same loss";
    if (p > 0) {
        EXPECT_NE(m->forward_loss(b, nullptr, false), loss) << "dropout should change the loss";
    }

    // f32 forward: h balances truncation O(h^2 L''') and rounding O(eps |L| / h). The adapted
    // loss is more curved in A and B than test_model's in W (inputs scaled by 1/(1-p), scale 2):
    // h = 1e-2 leaves ~2e-2 truncation error with dropout, h = 2e-3 ~1e-3 (rounding ~1e-4).
    const float h = 2e-3f;
    std::mt19937 rng(35);
    double worst = 0;
    for (Param* prm : m->adapter_params()) {
        float* v = prm->value.f32();
        const float* g = prm->grad.f32();
        double gmax = 0;
        for (int64_t i = 0; i < prm->grad.numel(); i++) gmax = std::max(gmax, double(std::fabs(g[i])));
        ASSERT_GT(gmax, 0.0) << prm->name;
        for (int k = 0; k < 3; k++) {
            int64_t i = int64_t(rng() % uint64_t(prm->value.numel()));
            float saved = v[i];
            v[i] = saved + h;
            double lp = m->forward_loss(b, nullptr, true);
            v[i] = saved - h;
            double lm = m->forward_loss(b, nullptr, true);
            v[i] = saved;
            double fd = (lp - lm) / (2.0 * h);
            double err = std::fabs(fd - g[i]) / (gmax + 1e-3);
            worst = std::max(worst, err);
            EXPECT_LT(err, 1e-2) << prm->name << "[" << i << "]: analytic " << g[i] << " vs finite difference " << fd
                                 << " (max |grad| " << gmax << ")";
        }
    }
    std::printf("dropout %.2f, %s base: worst relative gradient error %.2e\n", p, dtype_name(dtype), worst);
}

INSTANTIATE_TEST_SUITE_P(Variants, LoraGradient,
                         ::testing::Values(std::make_tuple(0.0, DType::F32), std::make_tuple(0.3, DType::F32),
                                           std::make_tuple(0.0, DType::BF16), std::make_tuple(0.3, DType::BF16)),
                         [](const auto& info) {
                             return fmt::format("p{}_{}", int(std::get<0>(info.param) * 10),
                                                dtype_name(std::get<1>(info.param)));
                         });

// ---- dropout --------------------------------------------------------------------------------
TEST(LoraDropout, MaskStatisticsAndInvertedScaling) {
    const int64_t n = 1 << 20;
    std::vector<float> x(static_cast<size_t>(n), 1.0f), y(static_cast<size_t>(n));
    for (float p : {0.1f, 0.5f}) {
        const uint64_t key = lora_dropout_key(3, 4, 1, 2);
        lora_dropout_forward(y.data(), x.data(), n, key, p);
        int64_t kept = 0;
        double sum = 0;
        for (int64_t i = 0; i < n; i++) {
            ASSERT_TRUE(y[size_t(i)] == 0.0f || y[size_t(i)] == 1.0f / (1.0f - p));
            ASSERT_EQ(y[size_t(i)] != 0.0f, lora_dropout_keep(key, i, p)) << i;
            kept += y[size_t(i)] != 0.0f;
            sum += y[size_t(i)];
        }
        // Binomial: 4 standard deviations.
        const double sd = std::sqrt(double(n) * p * (1 - p));
        EXPECT_NEAR(double(kept), double(n) * (1 - p), 4 * sd);
        EXPECT_NEAR(sum / double(n), 1.0, 4 * sd / double(n) / (1 - p));  // E[dropout(x)] = x
        // backward_add applies the same mask
        std::vector<float> dx(size_t(n), 0.0f);
        lora_dropout_backward_add(dx.data(), x.data(), n, key, p);
        ASSERT_EQ(0, std::memcmp(dx.data(), y.data(), size_t(n) * sizeof(float)));
    }
    // Different (counter, layer, module) give different masks.
    std::set<uint64_t> keys;
    for (uint64_t c = 0; c < 4; c++)
        for (int l = 0; l < 4; l++)
            for (int mo = 0; mo < 7; mo++) keys.insert(lora_dropout_key(1, c, l, mo));
    EXPECT_EQ(keys.size(), size_t(4 * 4 * 7));
}

// The counter advances per forward_backward; the masks (and so the loss) follow it, and
// evaluation passes never apply dropout.
TEST(LoraDropout, DeterministicPerCounter) {
    auto m = frozen_model(tiny_config(), 41);
    m->enable_lora(tiny_lora(0.5));
    randomise_b(*m, 42, 0.5f);
    TestBatch tb = make_batch(2, 8, 48, 43);
    m->prepare(2, 8, true);
    m->set_lora_dropout_counter(100);
    double l100 = m->forward_backward(tb.view(), 1.0f, nullptr);
    double l101 = m->forward_backward(tb.view(), 1.0f, nullptr);
    EXPECT_NE(l100, l101);
    m->set_lora_dropout_counter(100);
    EXPECT_EQ(m->forward_backward(tb.view(), 1.0f, nullptr), l100);
    double e1 = m->forward_loss(tb.view(), nullptr), e2 = m->forward_loss(tb.view(), nullptr);
    EXPECT_EQ(e1, e2);
    EXPECT_NE(e1, l100);
    // p = 0: no dropout at all, forward_backward's loss equals the evaluation loss.
    auto z = frozen_model(tiny_config(), 41);
    z->enable_lora(tiny_lora(0.0));
    randomise_b(*z, 42, 0.5f);
    z->prepare(2, 8, true);
    EXPECT_EQ(z->forward_backward(tb.view(), 1.0f, nullptr), z->forward_loss(tb.view(), nullptr));
}

// k accumulated micro-batches give the gradients of one batch k times larger.
TEST(Lora, AccumulatedMicroBatchesEqualOneBatch) {
    auto m = frozen_model(tiny_config(true, false), 51);
    m->enable_lora(tiny_lora(0.0));
    randomise_b(*m, 52);
    TestBatch full = make_batch(2, 6, 48, 53);
    int64_t total = 0;
    for (int32_t t : full.targets) total += t != -100;
    m->prepare(2, 6, true);
    m->zero_grad();
    m->forward_backward(full.view(), 1.0f / float(total), nullptr);
    std::vector<std::vector<float>> g1;
    for (Param* p : m->trainable_params()) g1.emplace_back(p->grad.f32(), p->grad.f32() + p->grad.numel());
    m->zero_grad();
    for (int r = 0; r < 2; r++) {
        TestBatch half{1, 6, {full.tokens.begin() + r * 6, full.tokens.begin() + r * 6 + 6},
                       {full.targets.begin() + r * 6, full.targets.begin() + r * 6 + 6}};
        m->forward_backward(half.view(), 1.0f / float(total), nullptr);
    }
    size_t k = 0;
    for (Param* p : m->trainable_params()) {
        for (int64_t i = 0; i < p->grad.numel(); i++)
            ASSERT_NEAR(p->grad.f32()[i], g1[k][size_t(i)], 1e-6f + 1e-4f * std::fabs(g1[k][size_t(i)])) << p->name;
        k++;
    }
}

// ---- golden tests against tests/ref/lora_ref.py -------------------------------------------------
// Generated once per build folder and script version (tuner::testing::run_ref_script).
const tuner::testing::RefOutput& ref_root() {
    static const tuner::testing::RefOutput root = tuner::testing::run_ref_script(
        TUNER_SOURCE_DIR "/tests/ref/lora_ref.py", {TUNER_SOURCE_DIR "/tests/ref/llama_ref.py"},
        TUNER_BINARY_DIR "/lora-ref", "the LoRA golden tests", "lora-ref");
    return root;
}

struct Golden {
    int B = 0, T = 0;
    int64_t V = 0, trained = 0;
    std::vector<int32_t> tokens, targets;
    std::map<std::string, std::vector<float>> f32;  // every F32 tensor by name
    std::map<std::string, std::vector<int64_t>> shapes;
    Batch batch() const {
        Batch b;
        b.B = B, b.T = T, b.tokens = tokens.data(), b.targets = targets.data();
        return b;
    }
};

Golden load_golden(const std::string& dir) {
    SafetensorsFile f(dir + "/golden.safetensors");
    Golden g;
    for (const SafetensorsTensor& t : f.tensors()) {
        if (t.dtype == DType::I32) {
            std::vector<int32_t> v(t.nbytes / 4);
            std::memcpy(v.data(), t.data, t.nbytes);
            if (t.name == "tokens") g.tokens = v, g.B = int(t.shape[0]), g.T = int(t.shape[1]);
            if (t.name == "targets") g.targets = v;
        } else {
            std::vector<float> v(t.nbytes / 4);
            std::memcpy(v.data(), t.data, t.nbytes);
            g.f32[t.name] = v;
            g.shapes[t.name] = t.shape;
        }
    }
    g.V = g.shapes.at("logits").at(1);
    for (int32_t t : g.targets) g.trained += t != -100;
    return g;
}

// Tolerance as test_golden.cpp: f32 vs the f64 reference; lora_ref.py prints what an exact f32
// implementation gets (1e-6 .. 3e-6 relative), 1e-4 leaves room for other summation orders.
constexpr double kRelTol = 1e-4, kAbsTol = 1e-7, kLossRelTol = 1e-5;

void expect_close(const std::string& what, const float* got, const std::vector<float>& want, double scale = 1.0) {
    double max_ref = 0, max_err = 0;
    size_t where = 0;
    for (size_t i = 0; i < want.size(); i++) {
        max_ref = std::max(max_ref, std::fabs(double(want[i]) * scale));
        double e = std::isfinite(got[i]) ? std::fabs(double(got[i]) - double(want[i]) * scale) : INFINITY;
        if (e > max_err || i == 0) max_err = e, where = i;
    }
    EXPECT_LE(max_err, kRelTol * max_ref + kAbsTol)
        << what << ": max|err| " << max_err << " at [" << where << "] got " << got[where] << " want "
        << want[where] * scale << " (max|want| " << max_ref << ")";
}

class LoraGolden : public ::testing::TestWithParam<std::tuple<const char*, bool>> {};

// Base (f32, or frozen bf16) + the Python-written PEFT adapter: logits, losses and every adapter
// gradient; then a second forward_backward must add the same gradients again.
TEST_P(LoraGolden, LogitsLossGrads) {
    const tuner::testing::RefOutput& root = ref_root();
    if (!root.skip.empty()) GTEST_SKIP() << root.skip;
    ASSERT_TRUE(root.error.empty()) << root.error;
    auto [name, bf16] = GetParam();
    const std::string dir = root.dir + "/" + name;
    Golden g = load_golden(dir);
    const std::string sfx = bf16 ? "_bf16_base" : "";
    ModelOptions o;
    o.trainable = false;
    o.weight_dtype = bf16 ? DType::BF16 : DType::F32;
    auto m = LlamaModel::load(dir, o);
    LoraConfig cfg = load_peft_adapter(*m, dir + "/adapter");
    EXPECT_EQ(cfg.lora_dropout, 0.0);
    m->prepare(g.B, g.T, true);
    Batch b = g.batch();

    std::vector<float> logits(size_t(g.B) * size_t(g.T) * size_t(g.V));
    m->logits(b, logits.data());
    expect_close("logits" + sfx, logits.data(), g.f32.at("logits" + sfx));
    const double want_loss = g.f32.at("loss" + sfx)[0];
    int64_t count = 0;
    double sum = m->forward_loss(b, &count);
    EXPECT_EQ(count, g.trained);
    EXPECT_NEAR(sum / double(count), want_loss, kLossRelTol * std::fabs(want_loss));

    m->zero_grad();
    sum = m->forward_backward(b, float(1.0 / double(g.trained)), &count);
    EXPECT_NEAR(sum / double(count), want_loss, kLossRelTol * std::fabs(want_loss));
    std::set<std::string> seen;
    for (int pass = 1; pass <= 2; pass++) {
        for (Param* p : m->trainable_params()) {
            auto it = g.f32.find("grad" + sfx + "." + p->name);
            ASSERT_NE(it, g.f32.end()) << "no golden gradient for " << p->name;
            ASSERT_EQ(p->grad.dims(), g.shapes.at(it->first));
            expect_close(it->first + (pass == 2 ? " (accumulated x2)" : ""), p->grad.f32(), it->second, double(pass));
            seen.insert(p->name);
        }
        if (pass == 1) m->forward_backward(b, float(1.0 / double(g.trained)), &count);
    }
    for (const auto& [n, v] : g.f32)
        if (n.rfind("grad" + sfx + ".", 0) == 0) {
            EXPECT_TRUE(seen.count(n.substr(sfx.size() + 5))) << "golden " << n << " has no model parameter";
        }
    for (Param* p : m->params()) EXPECT_FALSE(p->trainable()) << p->name;
}

// Activations (and the adapters' xa buffers) planned for a larger batch than the one run.
TEST_P(LoraGolden, PreparedForLargerBatch) {
    const tuner::testing::RefOutput& root = ref_root();
    if (!root.skip.empty()) GTEST_SKIP() << root.skip;
    ASSERT_TRUE(root.error.empty()) << root.error;
    auto [name, bf16] = GetParam();
    const std::string dir = root.dir + "/" + name;
    Golden g = load_golden(dir);
    const std::string sfx = bf16 ? "_bf16_base" : "";
    ModelOptions o;
    o.trainable = false;
    o.weight_dtype = bf16 ? DType::BF16 : DType::F32;
    auto m = LlamaModel::load(dir, o);
    load_peft_adapter(*m, dir + "/adapter");
    m->prepare(g.B + 1, g.T + 5, true);
    m->zero_grad();
    int64_t count = 0;
    double sum = m->forward_backward(g.batch(), float(1.0 / double(g.trained)), &count);
    const double want_loss = g.f32.at("loss" + sfx)[0];
    EXPECT_NEAR(sum / double(count), want_loss, kLossRelTol * std::fabs(want_loss));
    for (Param* p : m->trainable_params())
        expect_close("grad" + sfx + "." + p->name, p->grad.f32(), g.f32.at("grad" + sfx + "." + p->name));
}

INSTANTIATE_TEST_SUITE_P(Cases, LoraGolden,
                         ::testing::Combine(::testing::Values("lora_all", "rslora_qwen2", "lora_qv"),
                                            ::testing::Bool()),
                         [](const auto& info) {
                             return std::string(std::get<0>(info.param)) + (std::get<1>(info.param) ? "_bf16" : "_f32");
                         });

// The merge of the reference adapter equals the reference's logits too (the merged form is what
// the reference computed with).
TEST(LoraGoldenMerge, MergedReferenceAdapter) {
    const tuner::testing::RefOutput& root = ref_root();
    if (!root.skip.empty()) GTEST_SKIP() << root.skip;
    ASSERT_TRUE(root.error.empty()) << root.error;
    const std::string dir = root.dir + "/lora_all";
    Golden g = load_golden(dir);
    const std::string out = tuner::testing::make_temp_dir("lora-golden-merge") + "/merged";
    merge_peft_adapter(dir, dir + "/adapter", out, std::nullopt);
    ModelOptions o;
    o.trainable = false;
    auto m = LlamaModel::load(out, o);
    m->prepare(g.B, g.T, false);
    std::vector<float> logits(size_t(g.B) * size_t(g.T) * size_t(g.V));
    m->logits(g.batch(), logits.data());
    expect_close("merged logits", logits.data(), g.f32.at("logits"));
}

}  // namespace
