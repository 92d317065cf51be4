// The tensors of a Llama-family checkpoint, by Hugging Face name, derived from the config alone.
// Used by the loader (what to look for and which shape to expect), by init-model (what to
// write), and by the memory plan.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "io/hf_config.h"

namespace tuner {

enum class TensorKind { Embedding, Linear, Norm, Bias, Head };

struct TensorSpec {
    std::string name;
    std::vector<int64_t> shape;
    TensorKind kind;
    int layer = -1;  // -1 for embedding, final norm and head
};

// In Hugging Face order: embed_tokens, then per layer input_layernorm, q/k/v/o (+biases),
// post_attention_layernorm, gate/up/down, then model.norm and (untied only) lm_head.
std::vector<TensorSpec> llama_tensor_specs(const ModelConfig& config);

size_t spec_numel(const TensorSpec& spec);

// How a model stores a tensor of this kind: F32 when trained and for norms and biases (tiny);
// frozen matrices in frozen_dtype, except that a quantised base (NF4, qlora) keeps embeddings
// and lm_head in BF16 as QLoRA does: they are read a row at a time (embedding) or are the one
// place where 4-bit error would hit every logit. One rule for the loader, the memory plan, GGUF
// loading and the merge of a QLoRA adapter.
DType frozen_storage_dtype(TensorKind kind, bool trainable, DType frozen_dtype);

// Initial values as HF's _init_weights: matrices ~ N(0, 0.02), norms 1, biases 0. The values of
// a tensor depend only on (seed, its name), not on which tensors come before it.
void llama_init_values(const TensorSpec& spec, float* out, uint64_t seed);

}  // namespace tuner
