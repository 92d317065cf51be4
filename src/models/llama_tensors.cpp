#include "models/llama_tensors.h"

#include <algorithm>

#include "core/random.h"

namespace tuner {

std::vector<TensorSpec> llama_tensor_specs(const ModelConfig& c) {
    const int64_t C = c.hidden_size, F = c.intermediate_size, V = c.vocab_size;
    const int64_t QD = c.num_heads * c.head_dim, KVD = c.num_kv_heads * c.head_dim;
    std::vector<TensorSpec> specs;
    specs.push_back({"model.embed_tokens.weight", {V, C}, TensorKind::Embedding, -1});
    for (int il = 0; il < int(c.num_layers); il++) {
        std::string p = "model.layers." + std::to_string(il) + ".";
        specs.push_back({p + "input_layernorm.weight", {C}, TensorKind::Norm, il});
        specs.push_back({p + "self_attn.q_proj.weight", {QD, C}, TensorKind::Linear, il});
        if (c.attention_bias) specs.push_back({p + "self_attn.q_proj.bias", {QD}, TensorKind::Bias, il});
        specs.push_back({p + "self_attn.k_proj.weight", {KVD, C}, TensorKind::Linear, il});
        if (c.attention_bias) specs.push_back({p + "self_attn.k_proj.bias", {KVD}, TensorKind::Bias, il});
        specs.push_back({p + "self_attn.v_proj.weight", {KVD, C}, TensorKind::Linear, il});
        if (c.attention_bias) specs.push_back({p + "self_attn.v_proj.bias", {KVD}, TensorKind::Bias, il});
        specs.push_back({p + "self_attn.o_proj.weight", {C, QD}, TensorKind::Linear, il});
        specs.push_back({p + "post_attention_layernorm.weight", {C}, TensorKind::Norm, il});
        specs.push_back({p + "mlp.gate_proj.weight", {F, C}, TensorKind::Linear, il});
        specs.push_back({p + "mlp.up_proj.weight", {F, C}, TensorKind::Linear, il});
        specs.push_back({p + "mlp.down_proj.weight", {C, F}, TensorKind::Linear, il});
    }
    specs.push_back({"model.norm.weight", {C}, TensorKind::Norm, -1});
    if (!c.tie_word_embeddings) specs.push_back({"lm_head.weight", {V, C}, TensorKind::Head, -1});
    return specs;
}

DType frozen_storage_dtype(TensorKind kind, bool trainable, DType frozen_dtype) {
    if (trainable || kind == TensorKind::Norm || kind == TensorKind::Bias) return DType::F32;
    if (dtype_is_quantized(frozen_dtype) && (kind == TensorKind::Embedding || kind == TensorKind::Head))
        return DType::BF16;
    return frozen_dtype;
}

size_t spec_numel(const TensorSpec& spec) {
    size_t n = 1;
    for (int64_t d : spec.shape) n *= size_t(d);
    return n;
}

void llama_init_values(const TensorSpec& s, float* out, uint64_t seed) {
    size_t n = spec_numel(s);
    if (s.kind == TensorKind::Norm) std::fill(out, out + n, 1.0f);
    else if (s.kind == TensorKind::Bias) std::fill(out, out + n, 0.0f);
    else fill_normal(out, n, seed, stream_id(s.name.c_str()), 0.0f, 0.02f);
}

}  // namespace tuner
