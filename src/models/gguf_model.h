// A llama.cpp GGUF model as a Llama-family model: the ModelConfig from its metadata and its
// tensors under Hugging Face names, in Hugging Face's layout.
//
// Architectures (general.architecture): `llama` (Llama 1/2/3, Mistral, and others converted as
// llama) and `qwen2` (q/k/v biases). Config keys, with {arch} the architecture:
//   {arch}.embedding_length -> hidden_size        {arch}.feed_forward_length -> intermediate_size
//   {arch}.block_count -> num_hidden_layers       {arch}.attention.head_count -> num_attention_heads
//   {arch}.attention.head_count_kv -> num_key_value_heads (default: head_count)
//   {arch}.attention.key_length -> head_dim (default: embedding_length / head_count)
//   {arch}.attention.layer_norm_rms_epsilon -> rms_norm_eps
//   {arch}.rope.freq_base -> rope_theta (default 10000)   {arch}.context_length -> max_position_embeddings
//   {arch}.rope.dimension_count must equal head_dim (partial rotary is not supported)
//   {arch}.rope.scaling.type / .factor (linear; yarn and longrope are errors), the older
//   {arch}.rope.scale_linear, and Llama 3.1's rope_freqs.weight tensor (recognised as the llama3
//   rope_scaling it was made from)
//   vocab_size: rows of token_embd.weight (else the token list, else {arch}.vocab_size)
//   tie_word_embeddings: output.weight is absent       attention_bias: blk.0.attn_q.bias exists
//   bos/eos: tokenizer.ggml.bos_token_id / eos_token_id
// Tensor names (ggml order ne {cols, rows} becomes HF (rows, cols)):
//   token_embd -> model.embed_tokens     output_norm -> model.norm     output -> lm_head
//   blk.N.attn_norm -> model.layers.N.input_layernorm   blk.N.ffn_norm -> ...post_attention_layernorm
//   blk.N.attn_{q,k,v,output} -> ...self_attn.{q,k,v,o}_proj (.weight and .bias)
//   blk.N.ffn_{gate,up,down} -> ...mlp.{gate,up,down}_proj
// llama.cpp's converter permutes the rows of Q and K (and their biases) of `llama` models so that
// its interleaved-pair RoPE equals HF's rotate-half RoPE; get() undoes that permutation, so the
// weights work with our (HF) RoPE. Rows move whole, so block-quantised rows (cols / block_elems
// whole blocks each) are un-permuted without dequantising. `qwen2` is converted unpermuted.
//
//   GgufModel g("models/qwen2.5-0.5b-q8_0.gguf");
//   const ModelConfig& c = g.config();
//   GgufWeight w = g.get("model.layers.0.self_attn.q_proj.weight");   // dtype Q8_0, shape (QD, C)
#pragma once

#include "quant/quant.h"

#include "core/arena.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "io/gguf.h"
#include "io/hf_config.h"

namespace tuner {

// The config of a GGUF model's metadata and tensors. Errors name the file and the key.
ModelConfig gguf_model_config(const Gguf& g);

// GGUF tensor name <-> Hugging Face name ("blk.3.attn_q.weight" <-> "model.layers.3.self_attn.q_proj.weight");
// "" for names outside the table.
std::string gguf_to_hf_name(const std::string& gguf_name);
std::string hf_to_gguf_name(const std::string& hf_name);

// One tensor of the model in HF layout: raw bytes in `dtype` (block-quantised types as their
// GGUF blocks), row-major `shape`. data points into the file, or into `owned` for un-permuted Q/K.
struct GgufWeight {
    std::string gguf_name;
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    const uint8_t* data = nullptr;
    size_t nbytes = 0;
    std::vector<uint8_t> owned;
    const uint8_t* bytes() const { return owned.empty() ? data : owned.data(); }
};

class GgufModel {
  public:
    explicit GgufModel(const std::string& path);
    const GgufFile& file() const { return *file_; }
    const ModelConfig& config() const { return config_; }
    const std::string& path() const { return file_->path(); }

    // The tensor stored for an HF name; a missing tensor or an unsupported type is a tuner::Error.
    GgufWeight get(const std::string& hf_name) const;
    // Its dtype only (no copy): what a frozen model keeps when the type is block-quantised.
    DType dtype(const std::string& hf_name) const;

  private:
    const GgufTensor& tensor(const std::string& hf_name) const;
    std::unique_ptr<GgufFile> file_;
    ModelConfig config_;
    bool permuted_qk_ = false;  // `llama`: Q and K rows are in llama.cpp's interleaved order
};

// How a model loaded from this file stores each tensor of llama_tensor_specs(g.config()) (in spec
// order): F32 when trained and for norms and biases; a frozen block-quantised matrix keeps its
// GGUF type; other frozen matrices get frozen_dtype, except that an NF4 base (qlora) keeps
// embeddings and lm_head in BF16. Adds each tensor's bytes to plan's "weights" (and "grads" when
// trainable), as LlamaModel::plan_params does for HF folders; load_gguf allocates with it.
std::vector<DType> plan_gguf_params(MemoryPlan& plan, const GgufModel& g, bool trainable, DType frozen_dtype,
                                    const QuantOptions& quant = {});

// Un-permutes the rows of a Q or K projection (or bias) from llama.cpp's interleaved RoPE order
// to HF's rotate-half order: HF row h*HD + i*HD/2 + j is stored as row h*HD + 2j + i, with HD =
// rows / n_head. row_bytes is the size of one row in its storage type.
void gguf_unpermute_rows(const uint8_t* src, uint8_t* dst, int64_t rows, size_t row_bytes, int64_t n_head);

}  // namespace tuner
