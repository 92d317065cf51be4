// The Llama family (Llama 1/2/3, Mistral, Qwen2): one file with the config mapping, the
// weights, the activations, an explicit forward and a backward that calls every layer's
// backward in exact reverse order (llm.c style). No autograd, nothing built at run time.
//
// Per layer (x is the residual stream, (N, C) with N = B*T):
//   h1 = rmsnorm(x) ; q,k,v = h1 @ Wq^T (+bq), ... ; rope(q), rope(k) ; a = attention(q,k,v)
//   x  = x + a @ Wo^T
//   h2 = rmsnorm(x) ; g = h2 @ Wg^T ; u = h2 @ Wu^T ; m = silu(g) * u
//   x  = x + m @ Wd^T
// then xf = rmsnorm(x) and loss = cross_entropy(xf @ Wlm^T, targets), fused and chunked.
//
//   LlamaModel m = LlamaModel::load("models/smol", {});
//   m.prepare(B, T, /*training=*/true);        // plans + allocates activations and grads
//   float loss = m.forward_backward(batch);    // grads accumulate into m.params()[i]->grad
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/kernels.h"
#include "core/arena.h"
#include "core/tensor.h"
#include "io/hf_config.h"

namespace tuner {

class SafetensorsModel;

// A named parameter: its value (any dtype for a frozen weight, F32 when trained) and, when
// trained, an F32 gradient of the same shape (grad.data == nullptr when frozen).
struct Param {
    std::string name;  // Hugging Face tensor name, e.g. "model.layers.0.self_attn.q_proj.weight"
    Tensor value;
    Tensor grad;
    bool trainable() const { return grad.data != nullptr; }
    WeightView weight_view() const;  // value as a 2-D (rows, cols) matrix
};

// One batch of token rows. All arrays are (B*T) int32.
struct Batch {
    int B = 1, T = 0;
    const int32_t* tokens = nullptr;
    const int32_t* targets = nullptr;    // next-token labels, -100 = not trained (null: forward only)
    const int32_t* positions = nullptr;  // position ids (null: 0..T-1 in every row)
    const int32_t* seg_start = nullptr;  // packed samples: first index of each token's sample (null: whole row)
};

struct ModelOptions {
    // Storage dtype of frozen weights: F32 converts on load; BF16/F16 keep (or convert to) that
    // dtype and let the kernels convert tile by tile. Trained weights are always F32.
    DType weight_dtype = DType::F32;
    bool trainable = true;  // full fine-tuning: every parameter gets a gradient
    Device device = Device::CPU;
};

struct LlamaLayer {
    Param attn_norm, q_proj, k_proj, v_proj, o_proj;
    Param q_bias, k_bias, v_bias;  // only with config.attention_bias
    Param mlp_norm, gate_proj, up_proj, down_proj;
};

class LlamaModel {
  public:
    ModelConfig config;
    ModelOptions options;
    Param embed_tokens;  // (V, C)
    std::vector<LlamaLayer> layers;
    Param final_norm;  // (C)
    Param lm_head;     // (V, C); when tied, value aliases embed_tokens and grad is unused

    // Loads config.json and the safetensors weights of an HF folder.
    static std::unique_ptr<LlamaModel> load(const std::string& dir, const ModelOptions& options);
    // A model with the given config and random weights (init as HF does: normal(0, 0.02), norms 1).
    static std::unique_ptr<LlamaModel> random(const ModelConfig& config, const ModelOptions& options, uint64_t seed);

    // Every parameter, in Hugging Face order (tied lm_head excluded).
    std::vector<Param*> params();
    int64_t num_params() const;

    // Plans and allocates activations (and, when training, gradients) for batches of up to
    // B x T tokens. Must be called before forward; calling it again with a larger shape re-plans.
    void prepare(int B, int T, bool training);
    const MemoryPlan& memory_plan() const { return plan_; }

    // Forward only: returns the sum of per-token losses over rows with targets != -100 and sets
    // *count to the number of such rows. batch.targets must be set.
    double forward_loss(const Batch& batch, int64_t* count);
    // Forward + backward. Gradients of (grad_scale * sum of token losses) accumulate into the
    // params' grads. Returns the sum of token losses; *count as above.
    double forward_backward(const Batch& batch, float grad_scale, int64_t* count);
    // Logits (B*T, V) of every position (small models and tests; generation uses last_logits).
    void logits(const Batch& batch, float* out);
    // Logits (V) of the last position of row 0 only.
    void last_logits(const Batch& batch, float* out);

    void zero_grad();
    // Writes config.json and model.safetensors (dtype: F32 or BF16/F16) into dir.
    void save(const std::string& dir, DType dtype) const;

    LlamaModel();
    ~LlamaModel();

  private:
    struct LayerActs;
    struct Acts;
    void allocate_params(bool trainable, DType frozen_dtype);
    void run_forward(const Batch& batch);  // fills activations up to the final norm
    void run_backward(const Batch& batch); // from d(final norm output) down to the embedding

    MemoryPlan plan_;
    Arena weights_, grads_, acts_;
    std::unique_ptr<Acts> a_;
    std::vector<float> inv_freq_;
    std::vector<int32_t> default_pos_;
    int default_pos_T_ = 0;
    int max_B_ = 0, max_T_ = 0;
    bool training_ = false;
    std::unique_ptr<SafetensorsModel> source_;  // kept open: frozen weights may point into it
};

}  // namespace tuner
