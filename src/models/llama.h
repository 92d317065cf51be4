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
// Every projection (q/k/v/o, gate/up/down) goes through nn/linear, where LoRA adapters attach
// (see nn/lora.h): with LoRA the base is frozen (no gradients, no gradient memory, any stored
// dtype) and only the adapters' A and B are trained.
//
//   // full fine-tuning
//   LlamaModel m = LlamaModel::load("models/smol", {});
//   m.prepare(B, T, /*training=*/true);        // plans + allocates activations and grads
//   float loss = m.forward_backward(batch);    // grads accumulate into m.trainable_params()[i]->grad
//
//   // LoRA over a frozen bf16 base
//   ModelOptions o;  o.weight_dtype = DType::BF16;  o.lora = LoraConfig{};   // r 64, all-linear
//   o.gradient_checkpointing = true;             // keep layer inputs only; recompute in backward
//   auto m = LlamaModel::load("models/smol", o);  // or load with trainable = false + enable_lora(cfg)
//   m->prepare(B, T, true);
//   m->set_lora_dropout_counter(step * grad_accum + micro);   // dropout masks of this micro-batch
//   m->forward_backward(batch, 1.0f / n_tokens, &count);       // grads of A and B only
//   AdamW opt(m->trainable_params(), ...);
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/kernels.h"
#include "core/arena.h"
#include "core/tensor.h"
#include "io/hf_config.h"
#include "nn/lora.h"
#include "nn/param.h"
#include "quant/quant.h"

namespace tuner {

class SafetensorsModel;
struct Linear;
class LlamaModel;

// Keys and values of every layer for incremental decoding (inference only). Per layer K and V
// are (max_T, NKV, HD) f32, already rotated by RoPE; rows [0, len) are filled. Memory is
// planned once from max_T (one arena, on the model's device), plus scratch for blocks of up to
// max_chunk new tokens (a longer prompt is run in chunks, so scratch does not grow with it).
//
//   KVCache cache(model, /*max_T=*/512);
//   model.decode_step(prompt.data(), int(prompt.size()), cache, logits);  // prompt at once
//   model.decode_step(&next, 1, cache, logits);                           // then one per step
class KVCache {
  public:
    KVCache(const LlamaModel& model, int max_T, int max_chunk = 64);
    int len() const { return len_; }      // tokens already in the cache (= next position)
    int max_T() const { return max_T_; }
    void clear() { len_ = 0; }            // forget every token (memory is kept)
    const MemoryPlan& memory_plan() const { return plan_; }

  private:
    friend class LlamaModel;
    MemoryPlan plan_;
    Arena arena_;
    cuda::DeviceArena device_memory_;  // backs arena_ for a model on CUDA
    std::vector<float*> k_, v_;  // per layer (max_T, NKV, HD)
    int max_T_ = 0, max_chunk_ = 0, len_ = 0;
    // Scratch for one chunk of n <= max_chunk tokens.
    float *x, *h, *rstd, *q, *att, *tmp, *gate, *up, *m, *xa, *scores;
    int32_t* pos;
    int32_t* tokens = nullptr;  // (max_chunk) device copy of a chunk's tokens (CUDA only)
    float* logits = nullptr;    // (V) the last position's logits before the copy out (CUDA only)
    std::vector<int32_t> host_pos_;
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
    // NF4 (qlora): the projections (q/k/v/o, gate/up/down) are quantised on load, tensor by
    // tensor, and dequantised tile by tile inside the matmul; embeddings and lm_head stay BF16
    // and norms F32, as bitsandbytes/PEFT QLoRA keeps them.
    DType weight_dtype = DType::F32;
    QuantOptions quant;  // NF4: double quantisation of the block absmax values (qlora default on)
    bool trainable = true;  // full fine-tuning: every parameter gets a gradient
    // CUDA: weights are loaded (converted, quantised) on the host exactly as for the CPU, then
    // copied to the GPU arena by arena; gradients, adapters, activations and the KV cache live
    // in device memory; batches are copied in per call and the per-token losses copied out.
    Device device = Device::CPU;
    // LoRA: adapters on the targeted linears (load/random call enable_lora). The base is then
    // frozen whatever `trainable` says.
    std::optional<LoraConfig> lora;
    // Activation checkpointing (train.gradient_checkpointing): forward keeps only each layer's
    // input (N, C); backward recomputes a layer's forward from it into one shared set of layer
    // buffers and then runs that layer's backward. Activations shrink from L layers' worth to
    // L x (N, C) + one layer's worth, for one more forward per layer. Gradients are bit-identical
    // (the recomputation runs the same deterministic kernels on the same inputs, and LoRA dropout
    // masks are regenerated from the same keys). Read by prepare (changing it re-plans).
    bool gradient_checkpointing = false;
    // Storage of the activations a step saves for backward: norm outputs, q/k/v, the attention
    // output, gate/up and the SwiGLU output (kernels.h ActOut). F32, or BF16: half their memory,
    // and bf16 GEMMs read them as stored (the CUDA default with bf16 matmuls; train_config's
    // apply_device_defaults). The residual stream, rstd, lse, losses and every gradient stay
    // f32. On the CPU, BF16 runs through act_f32.h's widening copies (for tests: slower, and
    // it allocates per op). Read by prepare (changing it re-plans).
    DType activation_dtype = DType::F32;
};

// The activation storage a model on `device` gets unless told otherwise: BF16 on CUDA when the
// matmuls compute in bf16 (cuda::config(), the default there), F32 otherwise. Used by bench and
// the inference commands; `tuner train` has the same rule in apply_device_defaults.
DType default_activation_dtype(Device device);

// What prepare() plans, besides the batch shape: see LlamaModel::plan_activations.
struct ActivationPlanOptions {
    bool training = true;
    bool device_batch = false;         // CUDA: device copies of the batch's token arrays
    bool checkpointing = false;        // ModelOptions::gradient_checkpointing (training only)
    const LoraConfig* lora = nullptr;  // adapters (r, target_modules, lora_dropout), or null
    DType activation_dtype = DType::F32;  // ModelOptions::activation_dtype
};

struct LlamaLayer {
    Param attn_norm, q_proj, k_proj, v_proj, o_proj;
    Param q_bias, k_bias, v_bias;  // only with config.attention_bias
    Param mlp_norm, gate_proj, up_proj, down_proj;
    std::array<LoraAdapter, kLoraModules> lora;  // by LoraModule; inactive unless targeted
};

class LlamaModel {
  public:
    ModelConfig config;
    ModelOptions options;
    Param embed_tokens;  // (V, C)
    std::vector<LlamaLayer> layers;
    Param final_norm;  // (C)
    Param lm_head;     // (V, C); when tied, value aliases embed_tokens and grad is unused

    bool on_cuda() const { return options.device == Device::CUDA; }

    // Loads config.json and the safetensors weights of an HF folder, or a llama.cpp .gguf file
    // (load_gguf, for a path ending in .gguf).
    static std::unique_ptr<LlamaModel> load(const std::string& dir, const ModelOptions& options);
    // A GGUF file (models/gguf_model.h): config from its metadata, tensors renamed and put in HF
    // layout. F32/F16/BF16 tensors load as safetensors ones do; block-quantised ones (Q8_0, Q4_0,
    // Q4_K, Q5_K, Q6_K) stay as their GGUF blocks in a frozen model and are dequantised to F32
    // for full fine-tuning.
    static std::unique_ptr<LlamaModel> load_gguf(const std::string& path, const ModelOptions& options);
    // A model with the given config and random weights (init as HF does: normal(0, 0.02), norms 1).
    static std::unique_ptr<LlamaModel> random(const ModelConfig& config, const ModelOptions& options, uint64_t seed);

    // Every base parameter, in Hugging Face order (tied lm_head excluded). Adapters are not
    // included (see adapter_params).
    std::vector<Param*> params();
    int64_t num_params() const;
    // Exactly what the optimizer updates, each with F32 value and grad: every base parameter
    // for full fine-tuning; the adapters' A and B (layer by layer, modules in LoraModule order,
    // A before B) with LoRA; empty for a frozen model without adapters.
    std::vector<Param*> trainable_params();
    int64_t num_trainable_params();

    // ---- LoRA ----
    // Adds an adapter (A Kaiming-uniform, B zero; see nn/lora.h) to every targeted linear of
    // every layer. The base must be frozen (loaded with trainable = false, or options.lora set).
    // Call before prepare (a later prepare re-plans). Errors are tuner::Error.
    void enable_lora(const LoraConfig& config);
    bool lora_enabled() const { return lora_.has_value(); }
    const LoraConfig& lora_config() const;  // asserts lora_enabled()
    // Every adapter parameter (A and B, same order as trainable_params); empty without LoRA.
    std::vector<Param*> adapter_params();
    // Active adapters, layer by layer in LoraModule order.
    std::vector<LoraAdapter*> adapters();
    // Off: every linear computes the base only (forward and backward): the base model's output
    // exactly, e.g. the reference model of DPO. On by default.
    void set_adapters_enabled(bool enabled) { adapters_enabled_ = enabled; }
    bool adapters_enabled() const { return adapters_enabled_; }
    // Dropout masks are a function of (config.seed, counter, layer, module). forward_backward
    // uses the current counter and then increments it; set it to a value derived from the
    // optimizer step and micro-batch index (or save and restore it) for an exact resume.
    void set_lora_dropout_counter(uint64_t counter) { dropout_counter_ = counter; }
    uint64_t lora_dropout_counter() const { return dropout_counter_; }

    // Plans and allocates activations (and, when training, gradients) for batches of up to
    // B x T tokens. Must be called before forward; calling it again with a larger shape (or
    // another training / gradient_checkpointing setting) re-plans.
    void prepare(int B, int T, bool training);
    const MemoryPlan& memory_plan() const { return plan_; }
    // CUDA: device scratch every op of a B x T step needs (the max over the ops, see
    // backend/cuda/cuda_backend.h); prepare reserves it.
    size_t cuda_workspace_bytes(int B, int T);
    // The largest of it that the matmuls of N rows (base weights and adapters) need; decoding
    // with a KV cache runs nothing else that takes workspace.
    size_t cuda_matmul_workspace_bytes(int64_t N);
    // Capacities of the arenas actually allocated (for checking memory plans against reality;
    // on CUDA they are device memory).
    struct ArenaBytes {
        size_t weights = 0, grads = 0, adapters = 0, adapter_grads = 0, activations = 0;
    };
    ArenaBytes arena_bytes() const;

    // ---- memory plan without a model ----
    // The entries load/random, enable_lora and prepare add to memory_plan(), computed from the
    // config alone (nothing is allocated): these ARE the functions those calls plan with, so a
    // prediction (train/memory_plan.h) cannot drift from what the model allocates.
    //   roles "weights" (+ "grads" when trainable): every base parameter; frozen matrices in
    //   frozen_dtype, norms and biases F32; a tied lm_head counts once.
    static void plan_params(MemoryPlan& plan, const ModelConfig& config, bool trainable, DType frozen_dtype,
                            const QuantOptions& quant = {});
    //   roles "adapters", "adapter grads": A and B of every targeted linear (F32).
    static void plan_adapters(MemoryPlan& plan, const ModelConfig& config, const LoraConfig& lora);
    //   roles "activations", "adapter activations", "activation grads" of prepare(B, T, ...).
    static void plan_activations(MemoryPlan& plan, const ModelConfig& config, int B, int T,
                                 const ActivationPlanOptions& options);

    // Forward only: returns the sum of per-token losses over rows with targets != -100 and sets
    // *count to the number of such rows. batch.targets must be set. lora_dropout: apply the
    // adapters' dropout with the current counter (not advanced), as forward_backward would (for
    // gradient checks; needs a model prepared for training). Evaluation leaves it off.
    double forward_loss(const Batch& batch, int64_t* count, bool lora_dropout = false);
    // Forward + backward. Gradients of (grad_scale * sum of token losses) accumulate into the
    // params' grads. Returns the sum of token losses; *count as above.
    double forward_backward(const Batch& batch, float grad_scale, int64_t* count);
    // Logits (B*T, V) of every position (small models and tests; generation uses last_logits).
    void logits(const Batch& batch, float* out);
    // Logits (V) of the last position of row 0 only.
    void last_logits(const Batch& batch, float* out);
    // Incremental decoding with a KV cache (either device; does not use prepare's activations): runs
    // tokens (n) at positions cache.len() .. cache.len()+n-1 through every layer, appends their
    // keys and values to the cache, and, when logits_last is not null, writes the logits (V) of
    // the last of them. Queries attend every cached key before them (causal inside the block).
    // Projections go through linear_forward, so LoRA adapters apply as in forward.
    void decode_step(const int32_t* tokens, int n, KVCache& cache, float* logits_last);

    void zero_grad();  // base grads and adapter grads
    // Writes config.json and model.safetensors (dtype: F32 or BF16/F16) into dir.
    void save(const std::string& dir, DType dtype) const;

    LlamaModel();
    ~LlamaModel();

  private:
    struct LayerActs;
    struct Acts;
    void allocate_params(bool trainable, DType frozen_dtype);
    // An arena of `bytes` for `role`: host memory, or on CUDA a zeroed device buffer (owned by
    // `backing`) that the returned arena carves up exactly as a host one would.
    Arena make_arena(const char* role, size_t bytes, cuda::DeviceArena& backing);
    // Copies a host arena's used bytes into a new device buffer (`backing`) and points every
    // tensor in `tensors` that lies inside it at the same offset there (then tagged CUDA); the
    // host memory is freed.
    void move_arena_to_device(Arena& arena, cuda::DeviceArena& backing, const std::vector<Tensor*>& tensors);
    // End of load/random: on CUDA, moves the weights and RoPE frequencies to the device.
    void finish_load();
    // The batch the kernels read: itself on the CPU; on CUDA its arrays copied into the
    // activations' device buffers (positions always filled, defaults included).
    Batch device_batch(const Batch& batch);
    // Sum of the first n per-token losses (copied to the host on CUDA), in double.
    double sum_losses(int64_t n);
    const float* inv_freq() const { return on_cuda() ? inv_freq_dev_ : inv_freq_.data(); }
    void run_forward(const Batch& batch);  // fills activations up to the final norm
    void run_backward(const Batch& batch); // from d(final norm output) down to the embedding
    // Layer il's forward from x_in into its activation set; out = x_in + attention + MLP (out
    // null: skip that last add, when recomputing a checkpointed layer whose output is kept).
    void forward_layer(int il, const Batch& batch, const float* x_in, float* out);
    // Index into Acts::layers of layer il's activation set: il when every layer keeps its own
    // (training without checkpointing), else 0 (one shared set).
    size_t acts_index(int il) const { return per_layer_acts_ ? size_t(il) : 0; }
    // The Linear of (layer il, module m) with its adapter and per-call buffers, when enabled.
    Linear make_linear(int il, LoraModule m, const Param& weight, const Param* bias) const;

    MemoryPlan plan_;
    Arena weights_, grads_, acts_;
    Arena adapters_, adapter_grads_;
    // CUDA: the device buffers behind the arenas above (unused on the CPU).
    cuda::DeviceArena dev_weights_, dev_grads_, dev_acts_, dev_adapters_, dev_adapter_grads_, dev_rope_;
    float* inv_freq_dev_ = nullptr;
    std::vector<float> host_losses_;  // CUDA: per-token losses copied back
    int32_t *d_tokens_ = nullptr, *d_targets_ = nullptr, *d_pos_ = nullptr, *d_seg_ = nullptr;  // CUDA batch
    std::optional<LoraConfig> lora_;
    bool adapters_enabled_ = true;
    bool dropout_now_ = false;  // apply adapter dropout in this pass (training passes)
    uint64_t dropout_counter_ = 0;
    std::unique_ptr<Acts> a_;
    std::vector<float> inv_freq_;
    std::vector<int32_t> default_pos_;
    int default_pos_T_ = 0;
    int max_B_ = 0, max_T_ = 0;
    bool training_ = false;
    bool checkpointing_ = false;   // prepared with gradient checkpointing (training only)
    bool per_layer_acts_ = false;  // training_ && !checkpointing_
    DType prepared_activation_dtype_ = DType::F32;  // options.activation_dtype at the last prepare
    std::unique_ptr<SafetensorsModel> source_;  // kept open: frozen weights may point into it
};

}  // namespace tuner
