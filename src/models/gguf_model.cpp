// GGUF model config and tensor mapping. Key names and tensor names follow llama.cpp's
// gguf-py/gguf/constants.py (LLM_KV_*, MODEL_TENSOR names) and the Q/K permutation of
// convert_hf_to_gguf.py (LlamaModel.permute).
#include "models/gguf_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "io/mapped_pages.h"
#include "models/llama.h"
#include "models/llama_tensors.h"
#include "nn/rope.h"
#include "quant/quant.h"

namespace tuner {

namespace {

// GGUF suffix of a layer tensor <-> HF suffix after "model.layers.N.".
struct NamePair {
    const char* gguf;
    const char* hf;
};
const NamePair kLayerNames[] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_q.bias", "self_attn.q_proj.bias"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_k.bias", "self_attn.k_proj.bias"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_v.bias", "self_attn.v_proj.bias"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
};
const NamePair kGlobalNames[] = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
};

// "prefixNNN.rest" -> (NNN, rest); false when s does not have that form.
bool split_layer(const std::string& s, const std::string& prefix, int64_t* layer, std::string* rest) {
    if (s.compare(0, prefix.size(), prefix) != 0) return false;
    size_t p = prefix.size(), q = p;
    while (q < s.size() && q - p < 9 && s[q] >= '0' && s[q] <= '9') q++;
    if (q == p || q >= s.size() || s[q] != '.') return false;
    if (s[p] == '0' && q - p > 1) return false;  // no leading zeros: one spelling per layer
    *layer = std::stoll(s.substr(p, q - p));
    *rest = s.substr(q + 1);
    return true;
}

template <typename... Args>
[[noreturn]] void bad(const Gguf& g, fmt::format_string<Args...> format, Args&&... args) {
    fail("[gguf] {}: {}", g.path(), fmt::format(format, std::forward<Args>(args)...));
}

// Llama 3.1+ GGUF files carry their llama3 rope scaling as per-frequency divisors
// (rope_freqs.weight, one per rotary pair) instead of metadata. Finds the llama3 parameters
// that produce exactly these divisors, trying the values Meta's models use.
RopeScaling llama3_scaling_from_freqs(const Gguf& g, const ModelConfig& c, const GgufTensor& t) {
    if (t.ggml_type != 0 || t.numel != c.head_dim / 2)
        bad(g, "tensor 'rope_freqs.weight' should be F32 with head_dim / 2 = {} values, got {} {}", c.head_dim / 2,
            t.type_name(), t.numel);
    std::vector<float> divisors(size_t(t.numel));
    std::memcpy(divisors.data(), t.data, t.nbytes);
    ModelConfig plain = c;
    plain.rope_scaling = RopeScaling{};
    const std::vector<float> base = rope_inv_freq(plain);
    bool all_one = true;
    for (float d : divisors) all_one = all_one && d == 1.0f;
    if (all_one) return RopeScaling{};
    for (double factor : {8.0, 32.0, 16.0, 4.0, 2.0, 64.0})
        for (int64_t original : {8192, 4096, 16384, 32768, 65536, 131072, 2048})
            for (double low : {1.0, 2.0})
                for (double high : {4.0, 8.0, 2.0}) {
                    if (high <= low) continue;
                    ModelConfig k = c;
                    k.rope_scaling = RopeScaling{RopeScalingType::Llama3, factor, low, high, original};
                    const std::vector<float> scaled = rope_inv_freq(k);
                    bool match = true;
                    for (size_t i = 0; i < divisors.size() && match; i++) {
                        double want = double(base[i]) / double(scaled[i]);
                        match = std::fabs(want - double(divisors[i])) <= 1e-4 * std::fabs(want);
                    }
                    if (match) return k.rope_scaling;
                }
    bad(g, "tensor 'rope_freqs.weight' holds RoPE frequency factors that match no llama3 rope_scaling tuner "
           "recognises (factor 2..64, low_freq_factor 1 or 2, high_freq_factor 2..8); this RoPE variant is not "
           "supported");
}

}  // namespace

std::string gguf_to_hf_name(const std::string& name) {
    for (const NamePair& p : kGlobalNames)
        if (name == p.gguf) return p.hf;
    int64_t il;
    std::string rest;
    if (!split_layer(name, "blk.", &il, &rest)) return "";
    for (const NamePair& p : kLayerNames)
        if (rest == p.gguf) return "model.layers." + std::to_string(il) + "." + p.hf;
    return "";
}

std::string hf_to_gguf_name(const std::string& name) {
    for (const NamePair& p : kGlobalNames)
        if (name == p.hf) return p.gguf;
    int64_t il;
    std::string rest;
    if (!split_layer(name, "model.layers.", &il, &rest)) return "";
    for (const NamePair& p : kLayerNames)
        if (rest == p.hf) return "blk." + std::to_string(il) + "." + p.gguf;
    return "";
}

ModelConfig gguf_model_config(const Gguf& g) {
    const std::string arch = g.get_string("general.architecture");
    if (arch != "llama" && arch != "qwen2")
        bad(g, "general.architecture is '{}'; supported: llama, qwen2", arch);
    auto key = [&](const char* k) { return arch + "." + k; };
    // A positive integer key (per-layer arrays, as some architectures write, are type errors).
    auto positive = [&](const std::string& k, int64_t v) {
        if (v <= 0 || v > (int64_t(1) << 40)) bad(g, "key '{}' is {}; expected a positive count", k, v);
        return v;
    };
    auto count = [&](const char* k) { return positive(key(k), g.get_i64(key(k))); };

    ModelConfig c;
    c.model_type = arch;
    c.architecture = arch == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
    if (g.get_i64(key("expert_count"), 0) > 0)
        bad(g, "key '{}' is {}: mixture-of-experts models are not supported", key("expert_count"),
            g.get_i64(key("expert_count")));
    c.hidden_size = count("embedding_length");
    c.intermediate_size = count("feed_forward_length");
    c.num_layers = count("block_count");
    c.num_heads = count("attention.head_count");
    c.num_kv_heads = g.has(key("attention.head_count_kv")) ? count("attention.head_count_kv") : c.num_heads;
    if (g.has(key("attention.key_length"))) {
        c.head_dim = count("attention.key_length");
        if (g.has(key("attention.value_length")) && count("attention.value_length") != c.head_dim)
            bad(g, "attention.key_length {} differs from attention.value_length {}; not supported", c.head_dim,
                count("attention.value_length"));
    } else {
        if (c.hidden_size % c.num_heads != 0)
            bad(g, "embedding_length {} is not a multiple of attention.head_count {}", c.hidden_size, c.num_heads);
        c.head_dim = c.hidden_size / c.num_heads;
    }
    if (g.has(key("rope.dimension_count")) && count("rope.dimension_count") != c.head_dim)
        bad(g, "key '{}' is {} but the head dimension is {}: partial rotary embeddings are not supported",
            key("rope.dimension_count"), count("rope.dimension_count"), c.head_dim);
    c.max_position_embeddings = g.has(key("context_length")) ? count("context_length") : 2048;
    c.rms_norm_eps = g.get_f32(key("attention.layer_norm_rms_epsilon"));
    if (!(c.rms_norm_eps > 0) || !std::isfinite(c.rms_norm_eps))
        bad(g, "key '{}' is {}; expected a positive number", key("attention.layer_norm_rms_epsilon"), c.rms_norm_eps);
    c.rope_theta = g.get_f32(key("rope.freq_base"), 10000.0f);
    if (!(c.rope_theta > 0) || !std::isfinite(c.rope_theta))
        bad(g, "key '{}' is {}; expected a positive number", key("rope.freq_base"), c.rope_theta);

    // RoPE scaling.
    const std::string scaling = g.get_string(key("rope.scaling.type"), "none");
    if (scaling == "linear") {
        c.rope_scaling.type = RopeScalingType::Linear;
        c.rope_scaling.factor = g.get_f32(key("rope.scaling.factor"));
    } else if (scaling == "none") {
        float f = g.get_f32(key("rope.scale_linear"), 1.0f);
        if (f != 1.0f) {
            c.rope_scaling.type = RopeScalingType::Linear;
            c.rope_scaling.factor = f;
        }
    } else {
        bad(g, "key '{}' is '{}'; supported: none, linear (and llama3 through rope_freqs.weight)",
            key("rope.scaling.type"), scaling);
    }
    if (c.rope_scaling.type == RopeScalingType::Linear && !(c.rope_scaling.factor > 0 && std::isfinite(c.rope_scaling.factor)))
        bad(g, "rope scaling factor {} must be positive", c.rope_scaling.factor);
    if (const GgufTensor* rf = g.find_tensor("rope_freqs.weight")) {
        if (c.rope_scaling.type != RopeScalingType::None)
            bad(g, "both a rope.scaling key and a rope_freqs.weight tensor: ambiguous RoPE scaling");
        c.rope_scaling = llama3_scaling_from_freqs(g, c, *rf);
    }

    // Vocabulary: the embedding's rows are what the weights need; a vocabulary-only file gives
    // the token list.
    if (const GgufTensor* e = g.find_tensor("token_embd.weight")) {
        if (e->ne.size() != 2) bad(g, "tensor 'token_embd.weight' has {} dimensions, expected 2", e->ne.size());
        c.vocab_size = positive("token_embd.weight rows", e->ne[1]);
    } else if (g.has("tokenizer.ggml.tokens")) {
        c.vocab_size = positive("tokenizer.ggml.tokens", int64_t(g.array_size("tokenizer.ggml.tokens")));
    } else {
        c.vocab_size = count("vocab_size");
    }
    c.tie_word_embeddings = g.find_tensor("output.weight") == nullptr;
    c.attention_bias = arch == "qwen2" || g.find_tensor("blk.0.attn_q.bias") != nullptr;
    c.bos_token_id = g.has("tokenizer.ggml.bos_token_id") ? int64_t(g.get_u32("tokenizer.ggml.bos_token_id")) : -1;
    c.eos_token_id = g.has("tokenizer.ggml.eos_token_id") ? int64_t(g.get_u32("tokenizer.ggml.eos_token_id")) : -1;
    if (c.bos_token_id >= c.vocab_size) c.bos_token_id = -1;  // llama.cpp ignores out-of-range ids too
    if (c.eos_token_id >= c.vocab_size) c.eos_token_id = -1;
    // general.file_type (llama_ftype): 0 all F32, 1 mostly F16, 32 mostly BF16; quantised files
    // came from F16 or BF16 checkpoints, which the metadata does not say.
    switch (g.get_u32("general.file_type", 1)) {
        case 0: c.torch_dtype = "float32"; break;
        case 32: c.torch_dtype = "bfloat16"; break;
        default: c.torch_dtype = "float16"; break;
    }
    if (c.num_heads % c.num_kv_heads != 0)
        bad(g, "attention.head_count {} is not a multiple of attention.head_count_kv {}", c.num_heads, c.num_kv_heads);
    if (c.head_dim % 2 != 0) bad(g, "the head dimension {} must be even for RoPE", c.head_dim);
    return c;
}

void gguf_unpermute_rows(const uint8_t* src, uint8_t* dst, int64_t rows, size_t row_bytes, int64_t n_head) {
    TUNER_ASSERT(n_head > 0 && rows % n_head == 0 && (rows / n_head) % 2 == 0);
    const int64_t HD = rows / n_head, half = HD / 2;
    for (int64_t h = 0; h < n_head; h++)
        for (int64_t i = 0; i < 2; i++)
            for (int64_t j = 0; j < half; j++) {
                const int64_t to = h * HD + i * half + j, from = h * HD + 2 * j + i;
                std::memcpy(dst + size_t(to) * row_bytes, src + size_t(from) * row_bytes, row_bytes);
            }
}

GgufModel::GgufModel(const std::string& path) : file_(std::make_unique<GgufFile>(path)) {
    config_ = gguf_model_config(*file_);
    permuted_qk_ = config_.model_type == "llama";
    // Every tensor must have a place: an unknown one means an architecture we would run wrongly
    // (experts, extra norms, ...).
    for (const GgufTensor& t : file_->tensors()) {
        if (t.name == "rope_freqs.weight") continue;
        std::string hf = gguf_to_hf_name(t.name);
        int64_t il = -1;
        std::string rest;
        bool layer_ok = !split_layer(hf, "model.layers.", &il, &rest) || il < config_.num_layers;
        if (hf.empty() || !layer_ok)
            bad(*file_, "tensor '{}' has no place in a {} model with {} layers (tensor info at byte {})", t.name,
                config_.model_type, config_.num_layers, t.info_offset);
        if (!config_.attention_bias && rest.size() > 5 && rest.compare(rest.size() - 5, 5, ".bias") == 0)
            bad(*file_, "tensor '{}' is a bias but blk.0.attn_q.bias is absent", t.name);
    }
}

const GgufTensor& GgufModel::tensor(const std::string& hf_name) const {
    std::string name = hf_to_gguf_name(hf_name);
    TUNER_ASSERT_MSG(!name.empty(), "GgufModel: not a Llama-family tensor name");
    const GgufTensor* t = file_->find_tensor(name);
    if (!t) bad(*file_, "no tensor '{}' (the model's {})", name, hf_name);
    return *t;
}

DType GgufModel::dtype(const std::string& hf_name) const { return tensor(hf_name).dtype(path()); }

GgufWeight GgufModel::get(const std::string& hf_name) const {
    const GgufTensor& t = tensor(hf_name);
    GgufWeight w;
    w.gguf_name = t.name;
    w.dtype = t.dtype(path());
    w.shape = t.shape();
    w.data = t.data;
    w.nbytes = t.nbytes;
    auto ends = [&](const char* s) {
        size_t k = std::strlen(s);
        return hf_name.size() >= k && hf_name.compare(hf_name.size() - k, k, s) == 0;
    };
    const bool q = ends("q_proj.weight") || ends("q_proj.bias"), k = ends("k_proj.weight") || ends("k_proj.bias");
    if (permuted_qk_ && (q || k) && !w.shape.empty()) {
        const int64_t n_head = q ? config_.num_heads : config_.num_kv_heads;
        const int64_t rows = w.shape[0];
        if (rows % n_head != 0 || (rows / n_head) % 2 != 0)
            bad(*file_, "tensor '{}' has {} rows, not {} heads of an even size", t.name, rows, n_head);
        if (rows > 0) {
            w.owned.resize(w.nbytes);
            gguf_unpermute_rows(t.data, w.owned.data(), rows, w.nbytes / size_t(rows), n_head);
        }
    }
    return w;
}

std::vector<DType> plan_gguf_params(MemoryPlan& plan, const GgufModel& g, bool trainable, DType frozen_dtype,
                                    const QuantOptions& quant) {
    const std::string& path = g.path();
    if (dtype_is_quantized(frozen_dtype) && frozen_dtype != DType::NF4)
        fail("[model] {}: weight dtype {} is not a storage type for converted weights (use f32, bf16, f16 or nf4; "
             "GGUF blocks are kept as they are in a frozen model)", path, dtype_name(frozen_dtype));
    const std::vector<TensorSpec> specs = llama_tensor_specs(g.config());
    std::vector<DType> stored(specs.size());
    for (size_t i = 0; i < specs.size(); i++) {
        const TensorSpec& s = specs[i];
        const DType src = g.dtype(s.name);
        if (src != DType::F32 && src != DType::F16 && src != DType::BF16 && !dtype_is_quantized(src))
            fail("[model] {}: tensor '{}' has dtype {}; weights must be F32, BF16, F16 or GGUF blocks", path, s.name,
                 dtype_name(src));
        // A frozen quantised matrix stays as its GGUF blocks; everything else as load() stores it.
        const bool frozen_matrix = !trainable && s.kind != TensorKind::Norm && s.kind != TensorKind::Bias;
        stored[i] = frozen_matrix && dtype_is_quantized(src) ? src : frozen_storage_dtype(s.kind, trainable, frozen_dtype);
        const int64_t n = int64_t(spec_numel(s));
        plan.add("weights", s.name, dtype_nbytes(stored[i], n, quant));
        if (trainable) plan.add("grads", s.name, size_t(n) * sizeof(float));
    }
    return stored;
}

// ---- LlamaModel::load_gguf -------------------------------------------------------------------
// As LlamaModel::load for an HF folder (same memory plan roles, same conversions), except that
// each matrix of a frozen model is stored in its own GGUF type when that type is block-quantised.

std::unique_ptr<LlamaModel> LlamaModel::load_gguf(const std::string& path, const ModelOptions& options) {
    GgufModel g(path);
    auto m = std::make_unique<LlamaModel>();
    m->options = options;
    if (options.lora) m->options.trainable = false;  // LoRA: the base is frozen
    m->config = g.config();
    const bool trainable = m->options.trainable;
    const std::vector<TensorSpec> specs = llama_tensor_specs(m->config);
    m->layers.assign(size_t(m->config.num_layers), LlamaLayer{});
    const std::vector<DType> stored = plan_gguf_params(m->plan_, g, trainable, options.weight_dtype, options.quant);
    m->weights_ = Arena("weights", m->plan_.role_bytes("weights"));
    if (trainable) m->grads_ = m->make_arena("grads", m->plan_.role_bytes("grads"), m->dev_grads_);
    const std::vector<Param*> params = m->params();  // in spec order
    TUNER_ASSERT(params.size() == specs.size());
    for (size_t i = 0; i < specs.size(); i++) {
        const TensorSpec& s = specs[i];
        Param* p = params[i];
        p->name = s.name;
        p->value = Tensor::view(m->weights_.alloc(dtype_nbytes(stored[i], int64_t(spec_numel(s)), options.quant)),
                                stored[i], s.shape);
        if (trainable) p->grad = m->grads_.alloc_tensor(DType::F32, s.shape);
    }
    if (m->config.tie_word_embeddings) {
        // The head is the embedding matrix; its gradient adds into the embedding's.
        m->lm_head.name = "lm_head.weight";
        m->lm_head.value = m->embed_tokens.value;
        m->lm_head.grad = m->embed_tokens.grad;
    }

    // Copy (or convert) every tensor.
    for (size_t i = 0; i < specs.size(); i++) {
        const TensorSpec& s = specs[i];
        const GgufWeight w = g.get(s.name);
        if (w.shape != s.shape) {
            Tensor expect = Tensor::view(nullptr, DType::F32, s.shape), got = Tensor::view(nullptr, DType::F32, w.shape);
            fail("[model] {}: tensor '{}' ({}) has shape {} but the metadata implies {}", path, s.name, w.gguf_name,
                 got.shape_str(), expect.shape_str());
        }
        // Same dtype: a copy; else F16 <-> BF16, F32 -> low precision or GGUF blocks -> F32
        // through a small f32 chunk (quant/quant.h).
        const int64_t n = int64_t(spec_numel(s)), cols = s.shape.back(), rows = cols > 0 ? n / cols : 0;
        if (n > 0)
            convert_weight(params[i]->value.data, params[i]->value.dtype, WeightView{w.bytes(), w.dtype, rows, cols},
                           options.quant);
        release_mapped_pages(w.data, w.nbytes);  // RSS holds one tensor of the file at a time
    }
    m->inv_freq_ = rope_inv_freq(m->config);
    m->finish_load();  // CUDA: the weights (GGUF blocks as they are) to the device
    if (options.lora) m->enable_lora(*options.lora);
    return m;
}

}  // namespace tuner
