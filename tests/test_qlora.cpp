// QLoRA: LoRA over an NF4 base (ModelOptions::weight_dtype = NF4).
//  * The model stores exactly what the plan says: projections NF4, embeddings and lm_head BF16,
//    norms F32.
//  * Its losses and adapter gradients equal those of a plain LoRA model whose f32 base holds the
//    dequantised NF4 projections and the bf16-rounded embeddings and head (the model QLoRA
//    computes with), with and without activation checkpointing.
//  * Loading an HF folder with weight_dtype NF4 quantises each tensor as quantize_rows would.
//  * `tuner merge` of a QLoRA adapter gives a model whose logits equal the NF4 model with the
//    adapter (merged == unmerged), and differs from a merge into the unquantised base.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "io/peft.h"
#include "models/llama.h"
#include "quant/quant.h"
#include "testing.h"

using namespace tuner;
namespace fs = std::filesystem;

namespace {

// Widths that make some NF4 rows end inside a block (intermediate 72: down_proj rows are 72
// values, 64-value blocks straddle rows).
ModelConfig config() {
    ModelConfig c;
    c.architecture = "LlamaForCausalLM", c.model_type = "llama";
    c.vocab_size = 96, c.hidden_size = 64, c.intermediate_size = 72, c.num_layers = 2;
    c.num_heads = 4, c.num_kv_heads = 2, c.head_dim = 16;
    c.rms_norm_eps = 1e-5, c.rope_theta = 10000.0, c.tie_word_embeddings = false;
    c.max_position_embeddings = 64;
    return c;
}

LoraConfig lora_config() {
    LoraConfig l;
    l.r = 4, l.lora_alpha = 8, l.lora_dropout = 0.0;
    return l;
}

// Random tokens and targets (some ignored), B rows of T.
struct Tokens {
    std::vector<int32_t> tokens, targets;
    Batch batch(int B, int T) const {
        Batch b;
        b.B = B, b.T = T, b.tokens = tokens.data(), b.targets = targets.data();
        return b;
    }
};
Tokens random_tokens(int n, int V, uint32_t seed) {
    std::mt19937 rng{seed};
    Tokens t;
    for (int i = 0; i < n; i++) {
        t.tokens.push_back(int32_t(rng() % uint32_t(V)));
        t.targets.push_back(rng() % 5 == 0 ? -100 : int32_t(rng() % uint32_t(V)));
    }
    return t;
}

std::vector<float> to_f32(const Param& p) {
    std::vector<float> out(size_t(p.value.numel()));
    const int64_t cols = p.value.ndim > 1 ? p.value.shape[1] : 1;
    weight_rows_to_f32(out.data(), WeightView{p.value.data, p.value.dtype, p.value.numel() / cols, cols}, 0,
                       p.value.numel() / cols);
    return out;
}

bool is_projection(const std::string& name) {
    for (const char* m : {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
        if (name.find(m) != std::string::npos) return true;
    return false;
}

// A QLoRA model and its plain-LoRA twin on the dequantised base, same adapters (B non-zero).
struct Twins {
    std::unique_ptr<LlamaModel> q, ref;
};
Twins make_twins(bool double_quant, bool checkpointing) {
    ModelOptions qo;
    qo.weight_dtype = DType::NF4;
    qo.quant.nf4_double_quant = double_quant;
    qo.lora = lora_config();
    qo.gradient_checkpointing = checkpointing;
    Twins t;
    t.q = LlamaModel::random(config(), qo, 11);
    ModelOptions ro;
    ro.weight_dtype = DType::F32;
    ro.lora = lora_config();
    ro.gradient_checkpointing = checkpointing;
    t.ref = LlamaModel::random(config(), ro, 11);
    auto qp = t.q->params(), rp = t.ref->params();
    for (size_t i = 0; i < qp.size(); i++) {
        std::vector<float> v = to_f32(*qp[i]);
        std::memcpy(rp[i]->value.data, v.data(), v.size() * sizeof(float));
    }
    auto qa = t.q->adapter_params(), ra = t.ref->adapter_params();
    std::vector<float> r = tuner::testing::random_floats(1 << 16, 5, 0.05f);
    for (size_t i = 0; i < qa.size(); i++) {
        float* v = qa[i]->value.f32();
        for (int64_t k = 0; k < qa[i]->value.numel(); k++) v[k] = r[size_t((k * 7 + int64_t(i) * 131) % (1 << 16))];
        std::memcpy(ra[i]->value.data, v, size_t(qa[i]->value.numel()) * sizeof(float));
    }
    return t;
}

}  // namespace

TEST(QLoRA, StorageIsNF4ForProjectionsBF16ForEmbeddingsF32ForNorms) {
    Twins t = make_twins(true, false);
    for (Param* p : t.q->params()) {
        const DType want = is_projection(p->name) ? DType::NF4
                           : p->name.find("norm") != std::string::npos ? DType::F32
                                                                         : DType::BF16;
        EXPECT_EQ(p->value.dtype, want) << p->name;
        EXPECT_FALSE(p->trainable()) << p->name;
    }
    // The arena holds exactly the planned bytes: NF4 with double quantisation is n/2 codes +
    // 1 byte per block + the second-level scales and header.
    MemoryPlan plan;
    QuantOptions qo;
    qo.nf4_double_quant = true;
    LlamaModel::plan_params(plan, config(), false, DType::NF4, qo);
    size_t expect = 0;
    for (Param* p : t.q->params())
        expect += p->value.dtype == DType::NF4 ? dtype_nbytes(DType::NF4, p->value.numel(), qo)
                                               : size_t(p->value.numel()) * dtype_size(p->value.dtype);
    EXPECT_GE(plan.role_bytes("weights"), expect);             // arena entries are aligned
    EXPECT_LE(plan.role_bytes("weights"), expect + 64 * 32);  // ... by at most 64 bytes each
}

TEST(QLoRA, GradientsEqualLoraOnTheDequantisedBase) {
    for (bool dq : {false, true})
        for (bool ckpt : {false, true}) {
            SCOPED_TRACE(::testing::Message() << "double_quant " << dq << " checkpointing " << ckpt);
            Twins t = make_twins(dq, ckpt);
            const int B = 2, T = 24;
            Tokens tok = random_tokens(B * T, 96, 3);
            t.q->prepare(B, T, true);
            t.ref->prepare(B, T, true);
            t.q->zero_grad();
            t.ref->zero_grad();
            int64_t nq = 0, nr = 0;
            const double lq = t.q->forward_backward(tok.batch(B, T), 1.0f / 40.0f, &nq);
            const double lr = t.ref->forward_backward(tok.batch(B, T), 1.0f / 40.0f, &nr);
            EXPECT_EQ(nq, nr);
            EXPECT_NEAR(lq, lr, 1e-5 * std::fabs(lr));
            auto qa = t.q->adapter_params(), ra = t.ref->adapter_params();
            ASSERT_EQ(qa.size(), ra.size());
            double gmax = 0;
            for (Param* p : ra)
                for (int64_t k = 0; k < p->grad.numel(); k++) gmax = std::max(gmax, double(std::fabs(p->grad.f32()[k])));
            ASSERT_GT(gmax, 0.0);
            // Same math on the same f32 values; only the GEMM's tiling of the weight differs (the
            // NF4 path multiplies dequantised row tiles): rounding-level differences.
            for (size_t i = 0; i < qa.size(); i++)
                for (int64_t k = 0; k < qa[i]->grad.numel(); k++)
                    ASSERT_NEAR(qa[i]->grad.f32()[k], ra[i]->grad.f32()[k], 1e-5 * gmax) << qa[i]->name << "[" << k << "]";
        }
}

TEST(QLoRA, LoadQuantisesEachTensorAsQuantizeRows) {
    std::string dir = tuner::testing::make_temp_dir("qlora-load");
    ModelOptions fo;
    fo.trainable = false;
    auto f32 = LlamaModel::random(config(), fo, 3);
    f32->save(dir + "/base", DType::BF16);
    ModelOptions qo;
    qo.trainable = false;
    qo.weight_dtype = DType::NF4;
    qo.quant.nf4_double_quant = true;
    auto q = LlamaModel::load(dir + "/base", qo);
    fo.weight_dtype = DType::BF16;
    auto b = LlamaModel::load(dir + "/base", fo);  // the bf16 values the file holds
    auto qp = q->params(), bp = b->params();
    for (size_t i = 0; i < qp.size(); i++) {
        if (qp[i]->value.dtype != DType::NF4) continue;
        std::vector<float> src = to_f32(*bp[i]);
        const int64_t rows = qp[i]->value.shape[0], cols = qp[i]->value.shape[1];
        std::vector<uint8_t> expect(dtype_nbytes(DType::NF4, rows * cols, qo.quant));
        quantize_rows(expect.data(), DType::NF4, src.data(), rows, cols, qo.quant);
        EXPECT_EQ(0, std::memcmp(expect.data(), qp[i]->value.data, expect.size())) << qp[i]->name;
    }
}

TEST(QLoRA, MergedEqualsUnmergedOnTheNF4Base) {
    std::string dir = tuner::testing::make_temp_dir("qlora-merge");
    ModelOptions fo;
    fo.trainable = false;
    LlamaModel::random(config(), fo, 4)->save(dir + "/base", DType::F32);
    // A QLoRA model with trained-looking adapters, saved as a PEFT adapter + tuner_base.json.
    ModelOptions qo;
    qo.weight_dtype = DType::NF4;
    qo.quant.nf4_double_quant = true;
    qo.lora = lora_config();
    auto q = LlamaModel::load(dir + "/base", qo);
    std::vector<float> r = tuner::testing::random_floats(1 << 16, 9, 0.05f);
    for (Param* p : q->adapter_params())
        for (int64_t k = 0; k < p->value.numel(); k++) p->value.f32()[k] = r[size_t(k % (1 << 16))];
    save_peft_adapter(*q, dir + "/adapter", dir + "/base");
    write_adapter_base_quantization(dir + "/adapter", "nf4", true);

    merge_peft_adapter(dir + "/base", dir + "/adapter", dir + "/merged", DType::F32);                    // auto: nf4
    merge_peft_adapter(dir + "/base", dir + "/adapter", dir + "/merged-plain", DType::F32, AdapterBaseQuant{});

    const int T = 20;
    Tokens tok = random_tokens(T, 96, 8);
    const int64_t V = config().vocab_size;
    std::vector<float> unmerged(size_t(T * V)), merged(size_t(T * V)), plain(size_t(T * V));
    q->prepare(1, T, false);
    q->logits(tok.batch(1, T), unmerged.data());
    ModelOptions mo;
    mo.trainable = false;
    auto m = LlamaModel::load(dir + "/merged", mo);
    m->prepare(1, T, false);
    m->logits(tok.batch(1, T), merged.data());
    auto mp = LlamaModel::load(dir + "/merged-plain", mo);
    mp->prepare(1, T, false);
    mp->logits(tok.batch(1, T), plain.data());
    double scale = 0, err = 0, diff_plain = 0;
    for (size_t i = 0; i < merged.size(); i++) {
        scale = std::max(scale, double(std::fabs(unmerged[i])));
        err = std::max(err, double(std::fabs(merged[i] - unmerged[i])));
        diff_plain = std::max(diff_plain, double(std::fabs(plain[i] - unmerged[i])));
    }
    EXPECT_LT(err, 1e-4 * scale) << "merged into the dequantised base vs NF4 base + adapter";
    // Merging into the unquantised base gives another model (4-bit error is far above rounding).
    EXPECT_GT(diff_plain, 100 * err);
    // use_adapter_base_storage picks the NF4 base for inference with this adapter.
    ModelOptions io;
    use_adapter_base_storage(io, dir + "/adapter");
    EXPECT_EQ(io.weight_dtype, DType::NF4);
    EXPECT_TRUE(io.quant.nf4_double_quant);
}
