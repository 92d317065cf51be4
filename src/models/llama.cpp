// Llama-family model: loading, memory plan, forward and backward. See llama.h for the math.
#include "models/llama.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include <omp.h>

#include "backend/cuda/device_ops.h"
#include "core/random.h"
#include "io/atomic_file.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "models/llama_tensors.h"
#include "nn/device_copy.h"
#include "nn/linear.h"
#include "nn/rope.h"
#include "quant/quant.h"

namespace tuner {

namespace fs = std::filesystem;

// Picks the backend implementation of an op from the model's device.
#define OP(name) (options.device == Device::CUDA ? cuda::name : cpu::name)

// ---- activations -------------------------------------------------------------------------
// Saved for backward, per layer (N = B*T rows):
// The residual stream (x_in, x_mid), rstd and lse are f32; the ActOut buffers are stored in
// ModelOptions::activation_dtype (f32, or bf16 on CUDA with bf16 matmuls).
struct LlamaModel::LayerActs {
    float* x_in;   // (N, C)  residual stream entering the layer (points at the previous output)
    ActOut h1;     // (N, C)  rmsnorm(x_in)
    float* rstd1;  // (N)
    ActOut q;      // (N, NH*HD)  after RoPE
    ActOut k;      // (N, NKV*HD) after RoPE
    ActOut v;      // (N, NKV*HD)
    ActOut att;    // (N, NH*HD)  attention output before o_proj
    float* lse;    // (B, NH, T)
    float* x_mid;  // (N, C)  residual after the attention block
    ActOut h2;     // (N, C)  rmsnorm(x_mid)
    float* rstd2;  // (N)
    ActOut gate;   // (N, F)
    ActOut up;     // (N, F)
    ActOut m;      // (N, F)  silu(gate) * up
    std::array<float*, kLoraModules> xa{};  // (N, r) per active adapter: scale * dropout(x) A^T
};

struct LlamaModel::Acts {
    std::vector<LayerActs> layers;  // L entries when training; 1 shared entry for inference and
                                    // for checkpointed training (backward recomputes into it)
    float* x_embed;                 // (N, C) embedding output = layer 0's input
    std::vector<float*> x_out;      // residual leaving each layer; inference alternates two buffers
    float* hf;                      // (N, C) final rmsnorm output
    float* rstdf;                   // (N)
    float* tmp;                     // (N, C) projection output before a residual add
    float* losses;                  // (N)
    // Backward scratch, shared by all layers (activation gradients overwrite):
    float *dres, *dh;               // (N, C)
    float *dq, *datt;               // (N, NH*HD)
    float *dk, *dv;                 // (N, NKV*HD)
    float *dgate, *dup, *dm;        // (N, F)
    uint16_t* dy_bf16 = nullptr;    // (N, max out) with bf16 activations: Linear::dy_bf16
    // LoRA (null without adapters):
    float* dxa = nullptr;    // (N, r) backward scratch
    float* xdrop = nullptr;  // (N, max in) dropout(x) scratch, only when training with dropout
};

DType default_activation_dtype(Device device) {
    return device == Device::CUDA && cuda::config().compute == cuda::MatmulCompute::BF16 ? DType::BF16 : DType::F32;
}

LlamaModel::LlamaModel() = default;
LlamaModel::~LlamaModel() = default;

// ---- parameters --------------------------------------------------------------------------
static Param* param_for_spec(LlamaModel& m, const TensorSpec& s) {
    if (s.kind == TensorKind::Embedding) return &m.embed_tokens;
    if (s.kind == TensorKind::Head) return &m.lm_head;
    if (s.layer < 0) return &m.final_norm;
    LlamaLayer& L = m.layers[size_t(s.layer)];
    const std::string& n = s.name;
    auto ends = [&](const char* suffix) {
        size_t k = std::strlen(suffix);
        return n.size() >= k && n.compare(n.size() - k, k, suffix) == 0;
    };
    if (ends("input_layernorm.weight")) return &L.attn_norm;
    if (ends("q_proj.weight")) return &L.q_proj;
    if (ends("k_proj.weight")) return &L.k_proj;
    if (ends("v_proj.weight")) return &L.v_proj;
    if (ends("o_proj.weight")) return &L.o_proj;
    if (ends("q_proj.bias")) return &L.q_bias;
    if (ends("k_proj.bias")) return &L.k_bias;
    if (ends("v_proj.bias")) return &L.v_bias;
    if (ends("post_attention_layernorm.weight")) return &L.mlp_norm;
    if (ends("gate_proj.weight")) return &L.gate_proj;
    if (ends("up_proj.weight")) return &L.up_proj;
    if (ends("down_proj.weight")) return &L.down_proj;
    TUNER_ASSERT_MSG(false, "tensor spec without a parameter");
    return nullptr;
}

static DType storage_dtype(const TensorSpec& s, bool trainable, DType frozen_dtype) {
    return frozen_storage_dtype(s.kind, trainable, frozen_dtype);
}

// Bytes of n elements stored as t: quant/quant.h's dtype_nbytes, so a quantised frozen base is
// planned as it is stored (NF4, the qlora base: n/2 bytes of 4-bit codes + one f32 absmax per
// block of 64 values; the llama.cpp block types by their block layouts).
static size_t stored_bytes(DType t, size_t n, const QuantOptions& quant) { return dtype_nbytes(t, int64_t(n), quant); }

void LlamaModel::plan_params(MemoryPlan& plan, const ModelConfig& config, bool trainable, DType frozen_dtype,
                             const QuantOptions& quant) {
    for (const auto& s : llama_tensor_specs(config)) {
        const size_t n = spec_numel(s);
        plan.add("weights", s.name, stored_bytes(storage_dtype(s, trainable, frozen_dtype), n, quant));
        if (trainable) plan.add("grads", s.name, n * sizeof(float));
    }
}

void LlamaModel::allocate_params(bool trainable, DType frozen_dtype) {
    const auto specs = llama_tensor_specs(config);
    layers.assign(size_t(config.num_layers), LlamaLayer{});
    plan_params(plan_, config, trainable, frozen_dtype, options.quant);
    weights_ = Arena("weights", plan_.role_bytes("weights"));  // on the host first (see finish_load)
    if (trainable) grads_ = make_arena("grads", plan_.role_bytes("grads"), dev_grads_);
    for (const auto& s : specs) {
        Param* p = param_for_spec(*this, s);
        p->name = s.name;
        const DType t = storage_dtype(s, trainable, frozen_dtype);
        p->value = Tensor::view(weights_.alloc(stored_bytes(t, spec_numel(s), options.quant)), t, s.shape);
        if (trainable) p->grad = grads_.alloc_tensor(DType::F32, s.shape);
    }
    if (config.tie_word_embeddings) {
        // The head is the embedding matrix; its gradient adds into the embedding's.
        lm_head.name = "lm_head.weight";
        lm_head.value = embed_tokens.value;
        lm_head.grad = embed_tokens.grad;
    }
}

Arena LlamaModel::make_arena(const char* role, size_t bytes, cuda::DeviceArena& backing) {
    if (!on_cuda()) return Arena(role, bytes);
    if (bytes == 0) return Arena();
    backing = cuda::DeviceArena(role, bytes);
    void* base = backing.alloc(bytes, role);
    cuda::memset_device(base, 0, bytes);  // host arenas start zeroed too
    return Arena::over(role, base, bytes, Device::CUDA);
}

void LlamaModel::move_arena_to_device(Arena& arena, cuda::DeviceArena& backing, const std::vector<Tensor*>& tensors) {
    if (arena.device() == Device::CUDA || arena.capacity() == 0) return;
    backing = cuda::DeviceArena(arena.name(), arena.capacity());
    uint8_t* dev = static_cast<uint8_t*>(backing.alloc(arena.capacity(), arena.name()));
    cuda::copy_to_device(dev, arena.base(), arena.used());
    const uint8_t* lo = arena.base();
    const uint8_t* hi = lo + arena.capacity();
    for (Tensor* t : tensors) {
        const uint8_t* p = static_cast<const uint8_t*>(t->data);
        if (p < lo || p >= hi) continue;
        t->data = dev + (p - lo);
        t->device = Device::CUDA;
    }
    const size_t used = arena.used(), capacity = arena.capacity();
    arena = Arena::over(arena.name(), dev, capacity, Device::CUDA);
    arena.alloc(used);  // the moved tensors occupy the same bytes
}

void LlamaModel::finish_load() {
    if (!on_cuda()) return;
    std::vector<Tensor*> values;
    for (Param* p : params()) values.push_back(&p->value);
    values.push_back(&lm_head.value);  // aliases the embedding when tied: moved to the same place
    move_arena_to_device(weights_, dev_weights_, values);
    dev_rope_ = cuda::DeviceArena("rope", inv_freq_.size() * sizeof(float));
    inv_freq_dev_ = dev_rope_.alloc_f32(inv_freq_.size(), "inv_freq");
    cuda::copy_to_device(inv_freq_dev_, inv_freq_.data(), inv_freq_.size() * sizeof(float));
}

std::vector<Param*> LlamaModel::params() {
    std::vector<Param*> out;
    for (const auto& s : llama_tensor_specs(config)) out.push_back(param_for_spec(*this, s));
    return out;
}

int64_t LlamaModel::num_params() const { return config.num_params(); }

std::vector<Param*> LlamaModel::trainable_params() {
    if (lora_) return adapter_params();
    if (options.trainable) return params();
    return {};
}

int64_t LlamaModel::num_trainable_params() {
    int64_t n = 0;
    for (Param* p : trainable_params()) n += p->value.numel();
    return n;
}

// ---- LoRA -------------------------------------------------------------------------------------
// (out, in) of a module's base weight.
static std::pair<int64_t, int64_t> module_shape(const ModelConfig& c, int module) {
    const int64_t C = c.hidden_size, F = c.intermediate_size;
    const int64_t QD = c.num_heads * c.head_dim, KVD = c.num_kv_heads * c.head_dim;
    switch (LoraModule(module)) {
        case LoraModule::q_proj: return {QD, C};
        case LoraModule::k_proj: return {KVD, C};
        case LoraModule::v_proj: return {KVD, C};
        case LoraModule::o_proj: return {C, QD};
        case LoraModule::gate_proj: return {F, C};
        case LoraModule::up_proj: return {F, C};
        case LoraModule::down_proj: return {C, F};
    }
    return {0, 0};
}

void LlamaModel::plan_adapters(MemoryPlan& plan, const ModelConfig& config, const LoraConfig& cfg) {
    const std::array<bool, kLoraModules> on = cfg.targets("lora");
    const size_t r = size_t(cfg.r), f = sizeof(float);
    for (int il = 0; il < int(config.num_layers); il++)
        for (int m = 0; m < kLoraModules; m++) {
            if (!on[size_t(m)]) continue;
            auto [out, in] = module_shape(config, m);
            for (const char* role : {"adapters", "adapter grads"}) {
                plan.add(role, lora_tensor_name(il, m, 'A'), r * size_t(in) * f);
                plan.add(role, lora_tensor_name(il, m, 'B'), size_t(out) * r * f);
            }
        }
}

void LlamaModel::enable_lora(const LoraConfig& cfg) {
    cfg.validate("enable_lora");
    if (lora_) fail("[lora] enable_lora: this model already has adapters");
    if (options.trainable)
        fail("[lora] enable_lora: the base model was loaded with trainable weights; LoRA trains adapters over a "
             "frozen base (load it with ModelOptions.trainable = false, or set ModelOptions.lora)");
    const std::array<bool, kLoraModules> on = cfg.targets("enable_lora");
    const int64_t r = cfg.r;
    plan_adapters(plan_, config, cfg);
    adapters_ = Arena("adapters", plan_.role_bytes("adapters"));  // initialised on the host, then moved
    adapter_grads_ = make_arena("adapter grads", plan_.role_bytes("adapter grads"), dev_adapter_grads_);
    for (int il = 0; il < int(config.num_layers); il++)
        for (int m = 0; m < kLoraModules; m++) {
            if (!on[size_t(m)]) continue;
            auto [out, in] = module_shape(config, m);
            LoraAdapter& ad = layers[size_t(il)].lora[size_t(m)];
            ad.A.name = lora_tensor_name(il, m, 'A');
            ad.B.name = lora_tensor_name(il, m, 'B');
            ad.A.value = adapters_.alloc_tensor(DType::F32, {r, in});
            ad.B.value = adapters_.alloc_tensor(DType::F32, {out, r});
            ad.A.grad = adapter_grads_.alloc_tensor(DType::F32, {r, in});
            ad.B.grad = adapter_grads_.alloc_tensor(DType::F32, {out, r});
            ad.scale = cfg.scale();
            ad.dropout = float(cfg.lora_dropout);
            ad.layer = il;
            ad.module = m;
            lora_init(ad, cfg.seed);
        }
    if (on_cuda()) {
        std::vector<Tensor*> values;
        for (auto& layer : layers)
            for (auto& ad : layer.lora)
                if (ad.active()) values.push_back(&ad.A.value), values.push_back(&ad.B.value);
        move_arena_to_device(adapters_, dev_adapters_, values);
    }
    lora_ = cfg;
    a_.reset();  // the next prepare plans the adapter activations
}

const LoraConfig& LlamaModel::lora_config() const {
    TUNER_ASSERT_MSG(lora_.has_value(), "lora_config() on a model without adapters");
    return *lora_;
}

std::vector<LoraAdapter*> LlamaModel::adapters() {
    std::vector<LoraAdapter*> out;
    for (auto& layer : layers)
        for (auto& ad : layer.lora)
            if (ad.active()) out.push_back(&ad);
    return out;
}

std::vector<Param*> LlamaModel::adapter_params() {
    std::vector<Param*> out;
    for (LoraAdapter* ad : adapters()) {
        out.push_back(&ad->A);
        out.push_back(&ad->B);
    }
    return out;
}

Linear LlamaModel::make_linear(int il, LoraModule m, const Param& weight, const Param* bias) const {
    Linear lin;
    lin.weight = &weight;
    lin.bias = bias;
    lin.dy_bf16 = a_ ? a_->dy_bf16 : nullptr;  // (backward only; decoding may run without prepare)
    const LoraAdapter& ad = layers[size_t(il)].lora[size_t(m)];
    if (!adapters_enabled_ || !ad.active()) return lin;
    lin.lora = &ad;
    const LayerActs& la = a_->layers[acts_index(il)];
    lin.lora_call.xa = la.xa[size_t(m)];
    lin.lora_call.dxa = a_->dxa;
    lin.lora_call.xdrop = a_->xdrop;
    if (dropout_now_ && ad.dropout > 0.0f) {
        TUNER_ASSERT_MSG(a_->xdrop, "LoRA dropout needs a model prepared for training");
        lin.lora_call.dropout = true;
        lin.lora_call.dropout_key = lora_dropout_key(lora_->seed, dropout_counter_, il, int(m));
    }
    return lin;
}

static void check_model_config(const ModelConfig& c, const std::string& where) {
    if (c.head_dim % 2 != 0) fail("[model] {}: head_dim {} must be even for RoPE", where, c.head_dim);
    if (c.num_heads % c.num_kv_heads != 0)
        fail("[model] {}: num_attention_heads {} is not a multiple of num_key_value_heads {}", where, c.num_heads,
             c.num_kv_heads);
}

std::unique_ptr<LlamaModel> LlamaModel::load(const std::string& dir, const ModelOptions& options) {
    if (is_gguf_path(dir)) return load_gguf(dir, options);  // models/gguf_model.cpp
    auto m = std::make_unique<LlamaModel>();
    m->options = options;
    if (options.lora) m->options.trainable = false;  // LoRA: the base is frozen
    m->config = load_config((fs::path(dir) / "config.json").string());
    check_model_config(m->config, dir);
    m->source_ = std::make_unique<SafetensorsModel>(dir);
    m->allocate_params(m->options.trainable, options.weight_dtype);
    for (const auto& s : llama_tensor_specs(m->config)) {
        const SafetensorsTensor& t = m->source_->get(s.name);
        if (t.shape != s.shape) {
            Tensor expect = Tensor::view(nullptr, t.dtype, s.shape), got = Tensor::view(nullptr, t.dtype, t.shape);
            fail("[model] {}: tensor '{}' has shape {} but config.json implies {}", dir, s.name, got.shape_str(),
                 expect.shape_str());
        }
        if (t.dtype != DType::F32 && t.dtype != DType::BF16 && t.dtype != DType::F16)
            fail("[model] {}: tensor '{}' has dtype {}; weights must be F32, BF16 or F16", dir, s.name,
                 dtype_name(t.dtype));
        Param* p = param_for_spec(*m, s);
        // Copy, convert or quantise (NF4) a few rows at a time straight from the mapping, then drop
        // the mapping's pages: loading peaks near the stored size plus one tensor's pages, not the
        // size of the model files (a 7B bf16 model is 13.5 GB on disk, 3.9 GB as QLoRA's base).
        const int64_t cols = s.shape.size() > 1 ? s.shape.back() : 1;
        convert_weight(p->value.data, p->value.dtype, WeightView{t.data, t.dtype, p->value.numel() / cols, cols},
                       m->options.quant);
        m->source_->release(t);
    }
    m->source_.reset();  // everything is copied: unmap the files
    m->inv_freq_ = rope_inv_freq(m->config);
    m->finish_load();
    if (options.lora) m->enable_lora(*options.lora);
    return m;
}

std::unique_ptr<LlamaModel> LlamaModel::random(const ModelConfig& config, const ModelOptions& options, uint64_t seed) {
    auto m = std::make_unique<LlamaModel>();
    m->options = options;
    if (options.lora) m->options.trainable = false;  // LoRA: the base is frozen
    m->config = config;
    check_model_config(config, "random model");
    m->allocate_params(m->options.trainable, options.weight_dtype);
    for (const auto& s : llama_tensor_specs(config)) {
        Param* p = param_for_spec(*m, s);
        size_t n = size_t(p->value.numel());
        std::vector<float> buf(n);
        llama_init_values(s, buf.data(), seed);
        const int64_t cols = s.shape.size() > 1 ? s.shape.back() : 1;
        convert_weight(p->value.data, p->value.dtype, WeightView{buf.data(), DType::F32, int64_t(n) / cols, cols},
                       m->options.quant);
    }
    m->inv_freq_ = rope_inv_freq(config);
    m->finish_load();
    if (options.lora) m->enable_lora(*options.lora);
    return m;
}

// ---- memory plan for activations -----------------------------------------------------------
// Layer activations are per layer when training without checkpointing, else one shared set
// (inference; checkpointed training, where backward recomputes each layer into it).
void LlamaModel::plan_activations(MemoryPlan& plan, const ModelConfig& c, int B, int T,
                                  const ActivationPlanOptions& o) {
    TUNER_ASSERT(B > 0 && T > 0);
    const bool training = o.training;
    const size_t N = size_t(B) * size_t(T), C = size_t(c.hidden_size), F = size_t(c.intermediate_size);
    const size_t QD = size_t(c.num_heads * c.head_dim), KVD = size_t(c.num_kv_heads * c.head_dim);
    const size_t L = size_t(c.num_layers);
    const size_t sets = training && !o.checkpointing ? L : 1;
    const size_t f = sizeof(float);
    TUNER_ASSERT(o.activation_dtype == DType::F32 || o.activation_dtype == DType::BF16);
    const size_t a = dtype_size(o.activation_dtype);  // the layer buffers below that may be bf16
    const std::string in = o.activation_dtype == DType::BF16 ? " (bf16)" : "";
    plan.add("activations", "layer h1, h2" + in, N * C * a, 2 * sets);
    plan.add("activations", "layer x_mid", N * C * f, sets);
    plan.add("activations", "layer rstd1, rstd2", N * f, 2 * sets);
    plan.add("activations", "layer q, att" + in, N * QD * a, 2 * sets);
    plan.add("activations", "layer k, v" + in, N * KVD * a, 2 * sets);
    plan.add("activations", "layer lse", size_t(B) * size_t(c.num_heads) * size_t(T) * f, sets);
    plan.add("activations", "layer gate, up, m" + in, N * F * a, 3 * sets);
    // Training keeps every layer's output (= the next layer's input: the checkpoints when
    // checkpointing); inference alternates two buffers.
    plan.add("activations", "embedding out, residual out", N * C * f, 1 + (training ? L : 2));
    plan.add("activations", "final norm, tmp", N * C * f, 2);
    plan.add("activations", "final rstd, losses", N * f, 2);
    if (o.lora) {
        // Per active adapter only xa (N, r) is saved; dropout(x) is regenerated in backward.
        const std::array<bool, kLoraModules> on = o.lora->targets("lora");
        const size_t R = size_t(o.lora->r);
        size_t per_layer = 0, max_in = 0;
        for (int m = 0; m < kLoraModules; m++)
            if (on[size_t(m)]) {
                per_layer++;
                max_in = std::max(max_in, size_t(module_shape(c, m).second));
            }
        // Inference: one xa buffer serves every adapter (nothing is kept for a backward).
        plan.add("adapter activations", "lora xa = scale * dropout(x) A^T", N * R * f,
                 training ? per_layer * sets : 1);
        if (training && o.lora->lora_dropout > 0.0)
            plan.add("adapter activations", "lora dropout(x) scratch (regenerated)", N * max_in * f);
        if (training) plan.add("activation grads", "lora dxa", N * R * f);
    }
    if (o.device_batch) plan.add("activations", "batch tokens, targets, positions, segments (device)", N * 4, 4);
    if (training) {
        plan.add("activation grads", "dres, dh", N * C * f, 2);
        plan.add("activation grads", "dq, datt", N * QD * f, 2);
        plan.add("activation grads", "dk, dv", N * KVD * f, 2);
        plan.add("activation grads", "dgate, dup, dm", N * F * f, 3);
        // bf16 activations: each linear's dy rounded to bf16 once for its backward GEMMs (Linear::dy_bf16).
        if (o.activation_dtype == DType::BF16)
            plan.add("activation grads", "dy bf16 copy", N * std::max({QD, C, F}) * 2);
    }
}

LlamaModel::ArenaBytes LlamaModel::arena_bytes() const {
    return {weights_.capacity(), grads_.capacity(), adapters_.capacity(), adapter_grads_.capacity(),
            acts_.capacity()};
}

void LlamaModel::prepare(int B, int T, bool training) {
    const bool checkpointing = training && options.gradient_checkpointing;
    if (a_ && B <= max_B_ && T <= max_T_ && training == training_ && checkpointing == checkpointing_ &&
        options.activation_dtype == prepared_activation_dtype_)
        return;
    TUNER_ASSERT(B > 0 && T > 0);
    if (training && !options.trainable && !lora_)
        fail("[model] prepare: training needs trainable weights (full fine-tuning) or LoRA adapters");
    const ModelConfig& c = config;
    const size_t N = size_t(B) * size_t(T), C = size_t(c.hidden_size), F = size_t(c.intermediate_size);
    const size_t QD = size_t(c.num_heads * c.head_dim), KVD = size_t(c.num_kv_heads * c.head_dim);
    const size_t L = size_t(c.num_layers);
    const bool per_layer = training && !checkpointing;
    const size_t sets = per_layer ? L : 1;

    // Re-plan the activation roles from scratch (weights/grads/adapters entries stay).
    MemoryPlan plan;
    for (const char* role : {"weights", "grads", "adapters", "adapter grads"}) {
        auto it = plan_.roles().find(role);
        if (it != plan_.roles().end())
            for (const auto& e : it->second) plan.add(role, e.name, e.bytes);
    }
    ActivationPlanOptions po;
    po.training = training;
    po.checkpointing = checkpointing;
    po.lora = lora_ ? &*lora_ : nullptr;
    po.device_batch = on_cuda();
    po.activation_dtype = options.activation_dtype;
    plan_activations(plan, c, B, T, po);
    plan_ = std::move(plan);
    a_.reset();
    acts_ = Arena();  // free the old activations before allocating the new ones
    dev_acts_ = cuda::DeviceArena();
    acts_ = make_arena("activations",
                       plan_.role_bytes("activations") + plan_.role_bytes("activation grads") +
                           plan_.role_bytes("adapter activations"),
                       dev_acts_);

    // The allocations below follow plan_activations entry by entry (checked at the end).
    const size_t R = lora_ ? size_t(lora_->r) : 0;
    size_t max_in = 0;
    if (lora_)
        for (auto& layer : layers)
            for (auto& ad : layer.lora)
                if (ad.active()) max_in = std::max(max_in, size_t(ad.A.value.shape[1]));
    const bool lora_dropout = lora_ && lora_->lora_dropout > 0.0 && training;
    a_ = std::make_unique<Acts>();
    a_->layers.resize(sets);
    const DType adt = options.activation_dtype;
    auto alloc_act = [&](size_t n) { return ActOut{acts_.alloc(n * dtype_size(adt)), adt}; };
    for (auto& la : a_->layers) {
        la.h1 = alloc_act(N * C);
        la.x_mid = acts_.alloc_f32(N * C);
        la.h2 = alloc_act(N * C);
        la.rstd1 = acts_.alloc_f32(N);
        la.rstd2 = acts_.alloc_f32(N);
        la.q = alloc_act(N * QD);
        la.att = alloc_act(N * QD);
        la.k = alloc_act(N * KVD);
        la.v = alloc_act(N * KVD);
        la.lse = acts_.alloc_f32(size_t(B) * size_t(c.num_heads) * size_t(T));
        la.gate = alloc_act(N * F);
        la.up = alloc_act(N * F);
        la.m = alloc_act(N * F);
    }
    if (lora_) {
        float* shared_xa = training ? nullptr : acts_.alloc_f32(N * R);
        for (size_t k = 0; k < sets; k++) {
            LayerActs& la = a_->layers[k];
            // Layer k's adapters (every layer has the same targeted modules).
            for (int m = 0; m < kLoraModules; m++) {
                if (!layers[k].lora[size_t(m)].active()) continue;
                la.xa[size_t(m)] = training ? acts_.alloc_f32(N * R) : shared_xa;
            }
        }
        if (lora_dropout) a_->xdrop = acts_.alloc_f32(N * max_in);
        if (training) a_->dxa = acts_.alloc_f32(N * R);
    }

    a_->x_embed = acts_.alloc_f32(N * C);
    a_->x_out.resize(training ? L : 2);
    for (auto& x : a_->x_out) x = acts_.alloc_f32(N * C);
    a_->hf = acts_.alloc_f32(N * C);
    a_->tmp = acts_.alloc_f32(N * C);
    a_->rstdf = acts_.alloc_f32(N);
    a_->losses = acts_.alloc_f32(N);
    if (training) {
        a_->dres = acts_.alloc_f32(N * C);
        a_->dh = acts_.alloc_f32(N * C);
        a_->dq = acts_.alloc_f32(N * QD);
        a_->datt = acts_.alloc_f32(N * QD);
        a_->dk = acts_.alloc_f32(N * KVD);
        a_->dv = acts_.alloc_f32(N * KVD);
        a_->dgate = acts_.alloc_f32(N * F);
        a_->dup = acts_.alloc_f32(N * F);
        a_->dm = acts_.alloc_f32(N * F);
        if (adt == DType::BF16) a_->dy_bf16 = static_cast<uint16_t*>(acts_.alloc(N * std::max({QD, C, F}) * 2));
    }
    if (po.device_batch) {
        d_tokens_ = static_cast<int32_t*>(acts_.alloc(N * 4));
        d_targets_ = static_cast<int32_t*>(acts_.alloc(N * 4));
        d_pos_ = static_cast<int32_t*>(acts_.alloc(N * 4));
        d_seg_ = static_cast<int32_t*>(acts_.alloc(N * 4));
    }
    TUNER_ASSERT_MSG(acts_.used() == acts_.capacity(), "prepare allocated other buffers than plan_activations planned");
    if (on_cuda()) {
        // Every op's device scratch, reserved once here: nothing is allocated in the step loop.
        cuda::reserve_workspace(cuda_workspace_bytes(B, T));
        host_losses_.resize(N);
    }
    default_pos_.resize(N);
    default_pos_T_ = 0;  // filled by run_forward for the batch's T
    max_B_ = B;
    max_T_ = T;
    training_ = training;
    checkpointing_ = checkpointing;
    per_layer_acts_ = per_layer;
    prepared_activation_dtype_ = options.activation_dtype;
}

// ---- forward --------------------------------------------------------------------------------
void LlamaModel::run_forward(const Batch& batch) {
    const ModelConfig& c = config;
    const int64_t N = int64_t(batch.B) * batch.T, C = c.hidden_size;
    const float eps = float(c.rms_norm_eps);
    float* x = a_->x_embed;
    OP(embedding_forward)(x, batch.tokens, embed_tokens.weight_view(), N);
    for (int il = 0; il < int(c.num_layers); il++) {
        float* out = training_ ? a_->x_out[size_t(il)] : a_->x_out[size_t(il) % 2];
        forward_layer(il, batch, x, out);
        x = out;
    }
    OP(rmsnorm_forward)(a_->hf, a_->rstdf, x, final_norm.value.f32_on_device(), N, C, eps);
}

Batch LlamaModel::device_batch(const Batch& batch) {
    TUNER_ASSERT_MSG(a_ && batch.B <= max_B_ && batch.T <= max_T_, "call prepare(B, T) with a large enough shape");
    if (!batch.positions && default_pos_T_ != batch.T) {
        // default positions 0..T-1 in every row, laid out for this batch's T
        for (size_t i = 0; i < default_pos_.size(); i++) default_pos_[i] = int32_t(i % size_t(batch.T));
        default_pos_T_ = batch.T;
    }
    if (!on_cuda()) return batch;
    const size_t bytes = size_t(batch.B) * size_t(batch.T) * sizeof(int32_t);
    Batch d = batch;
    cuda::copy_to_device(d_tokens_, batch.tokens, bytes);
    d.tokens = d_tokens_;
    if (batch.targets) {
        cuda::copy_to_device(d_targets_, batch.targets, bytes);
        d.targets = d_targets_;
    }
    cuda::copy_to_device(d_pos_, batch.positions ? batch.positions : default_pos_.data(), bytes);
    d.positions = d_pos_;
    if (batch.seg_start) {
        cuda::copy_to_device(d_seg_, batch.seg_start, bytes);
        d.seg_start = d_seg_;
    }
    return d;
}

double LlamaModel::sum_losses(int64_t n) {
    const float* losses = a_->losses;
    if (on_cuda()) {
        cuda::copy_to_host(host_losses_.data(), a_->losses, size_t(n) * sizeof(float));
        losses = host_losses_.data();
    }
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += losses[i];
    return sum;
}

size_t LlamaModel::cuda_matmul_workspace_bytes(int64_t N) {
    size_t ws = 0;
    for (Param* p : params())
        if (p->value.ndim == 2) ws = std::max(ws, cuda::matmul_workspace_bytes(N, p->weight_view()));
    for (Param* p : adapter_params()) ws = std::max(ws, cuda::matmul_workspace_bytes(N, p->weight_view()));
    return ws;
}

size_t LlamaModel::cuda_workspace_bytes(int B, int T) {
    const int64_t N = int64_t(B) * T;
    size_t ws = cuda_matmul_workspace_bytes(N);
    const ModelConfig& c = config;
    ws = std::max(ws, cuda::attention_workspace_bytes(AttnShape{B, T, int(c.num_heads), int(c.num_kv_heads),
                                                                int(c.head_dim)}));
    ws = std::max(ws, cuda::cross_entropy_workspace_bytes(N, lm_head.weight_view()));
    return ws;
}

void LlamaModel::forward_layer(int il, const Batch& batch, const float* x_in, float* out) {
    const ModelConfig& c = config;
    const int64_t N = int64_t(batch.B) * batch.T, C = c.hidden_size, F = c.intermediate_size;
    const int NH = int(c.num_heads), NKV = int(c.num_kv_heads), HD = int(c.head_dim);
    const float eps = float(c.rms_norm_eps);
    const int32_t* pos = batch.positions ? batch.positions : default_pos_.data();
    const AttnShape shape{batch.B, batch.T, NH, NKV, HD};
    const Device dev = options.device;
    const LlamaLayer& W = layers[size_t(il)];
    LayerActs& la = a_->layers[acts_index(il)];
    la.x_in = const_cast<float*>(x_in);  // the previous layer's output (kept until backward when training)
    // attention block
    OP(rmsnorm_forward)(la.h1, la.rstd1, la.x_in, W.attn_norm.value.f32_on_device(), N, C, eps);
    const bool bias = c.attention_bias;
    linear_forward(dev, la.q, la.h1, make_linear(il, LoraModule::q_proj, W.q_proj, bias ? &W.q_bias : nullptr), N);
    linear_forward(dev, la.k, la.h1, make_linear(il, LoraModule::k_proj, W.k_proj, bias ? &W.k_bias : nullptr), N);
    linear_forward(dev, la.v, la.h1, make_linear(il, LoraModule::v_proj, W.v_proj, bias ? &W.v_bias : nullptr), N);
    OP(rope_forward)(la.q, pos, inv_freq(), N, NH, HD);
    OP(rope_forward)(la.k, pos, inv_freq(), N, NKV, HD);
    OP(attention_forward)(la.att, la.lse, la.q, la.k, la.v, batch.seg_start, shape);
    linear_forward(dev, a_->tmp, la.att, make_linear(il, LoraModule::o_proj, W.o_proj, nullptr), N);
    // MLP block: x_mid = x_in + attention, h2 = rmsnorm(x_mid), in one pass
    OP(add_rmsnorm_forward)(la.x_mid, la.h2, la.rstd2, la.x_in, a_->tmp, W.mlp_norm.value.f32_on_device(), N, C, eps);
    linear_forward(dev, la.gate, la.h2, make_linear(il, LoraModule::gate_proj, W.gate_proj, nullptr), N);
    linear_forward(dev, la.up, la.h2, make_linear(il, LoraModule::up_proj, W.up_proj, nullptr), N);
    OP(swiglu_forward)(la.m, la.gate, la.up, N * F);
    // down_proj also runs when recomputing: with LoRA it saves this layer's down_proj xa.
    linear_forward(dev, a_->tmp, la.m, make_linear(il, LoraModule::down_proj, W.down_proj, nullptr), N);
    if (out) OP(add_forward)(out, la.x_mid, a_->tmp, N * C);
}

double LlamaModel::forward_loss(const Batch& host_batch, int64_t* count, bool lora_dropout) {
    TUNER_ASSERT(host_batch.targets);
    if (lora_dropout && lora_ && lora_->lora_dropout > 0.0 && !(a_ && a_->xdrop))
        fail("[model] forward_loss with LoRA dropout needs a model prepared for training");
    const Batch batch = device_batch(host_batch);
    dropout_now_ = lora_dropout;
    run_forward(batch);
    dropout_now_ = false;
    const int64_t N = int64_t(batch.B) * batch.T;
    int64_t n = OP(lm_head_cross_entropy)(a_->losses, nullptr, nullptr, nullptr, a_->hf, lm_head.weight_view(),
                                          batch.targets, N, 0.0f);
    if (count) *count = n;
    return sum_losses(N);
}

// out (rows, V) on the host = x (rows, C) @ head^T, x in the model's device memory. On CUDA the
// logits go through a device buffer of at most 64 MiB at a time (inference and tests only).
static void head_logits_to_host(const LlamaModel& m, float* out, const float* x, int64_t rows) {
    const WeightView head = m.lm_head.weight_view();
    if (!m.on_cuda()) return cpu::matmul_forward(out, x, head, nullptr, rows, false);
    const int64_t V = head.rows, C = head.cols;
    const int64_t chunk = std::clamp<int64_t>((int64_t(16) << 20) / std::max<int64_t>(V, 1), 1, rows);
    cuda::DeviceArena buf("logits", size_t(chunk * V) * sizeof(float));
    float* d = buf.alloc_f32(size_t(chunk * V), "logits");
    cuda::reserve_workspace(std::max(cuda::workspace_bytes(), cuda::matmul_workspace_bytes(chunk, head)));
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        const int64_t n = std::min(chunk, rows - r0);
        cuda::matmul_forward(d, x + r0 * C, head, nullptr, n, false);
        cuda::copy_to_host(out + r0 * V, d, size_t(n * V) * sizeof(float));
    }
}

void LlamaModel::logits(const Batch& batch, float* out) {
    run_forward(device_batch(batch));
    head_logits_to_host(*this, out, a_->hf, int64_t(batch.B) * batch.T);
}

void LlamaModel::last_logits(const Batch& batch, float* out) {
    run_forward(device_batch(batch));
    const float* row = a_->hf + size_t(batch.T - 1) * size_t(config.hidden_size);
    head_logits_to_host(*this, out, row, 1);
}

// ---- incremental decoding with a KV cache ---------------------------------------------------
KVCache::KVCache(const LlamaModel& model, int max_T, int max_chunk) {
    const ModelConfig& c = model.config;
    TUNER_ASSERT(max_T > 0 && max_chunk > 0);
    max_T_ = max_T;
    max_chunk_ = std::min(max_chunk, max_T);
    const size_t T = size_t(max_T), n = size_t(max_chunk_), f = sizeof(float);
    const size_t C = size_t(c.hidden_size), F = size_t(c.intermediate_size);
    const size_t QD = size_t(c.num_heads * c.head_dim), KVD = size_t(c.num_kv_heads * c.head_dim);
    const size_t L = size_t(c.num_layers);
    const size_t R = model.lora_enabled() ? size_t(model.lora_config().r) : 0;
    const bool cuda = model.on_cuda();
    const size_t threads = cuda ? 0 : size_t(omp_get_max_threads());  // CPU attention's score rows
    plan_.add("kv cache", "layer k, v", T * KVD * f, 2 * L);
    plan_.add("kv cache", "chunk x, h, tmp", n * C * f, 3);
    plan_.add("kv cache", "chunk rstd", n * f);
    plan_.add("kv cache", "chunk q, att", n * QD * f, 2);
    plan_.add("kv cache", "chunk gate, up, m", n * F * f, 3);
    if (R) plan_.add("kv cache", "chunk lora xa", n * R * f);
    plan_.add("kv cache", "attention scores per thread", T * f, threads);
    plan_.add("kv cache", "chunk positions", n * sizeof(int32_t));
    if (cuda) {
        plan_.add("kv cache", "chunk tokens (device)", n * sizeof(int32_t));
        plan_.add("kv cache", "last logits (device)", size_t(c.vocab_size) * f);
    }
    const size_t bytes = plan_.role_bytes("kv cache");
    if (cuda) {
        device_memory_ = cuda::DeviceArena("kv cache", bytes);
        arena_ = Arena::over("kv cache", device_memory_.alloc(bytes, "kv cache"), bytes, Device::CUDA);
    } else {
        arena_ = Arena("kv cache", bytes);
    }
    for (size_t il = 0; il < L; il++) {
        k_.push_back(arena_.alloc_f32(T * KVD));
        v_.push_back(arena_.alloc_f32(T * KVD));
    }
    x = arena_.alloc_f32(n * C);
    h = arena_.alloc_f32(n * C);
    tmp = arena_.alloc_f32(n * C);
    rstd = arena_.alloc_f32(n);
    q = arena_.alloc_f32(n * QD);
    att = arena_.alloc_f32(n * QD);
    gate = arena_.alloc_f32(n * F);
    up = arena_.alloc_f32(n * F);
    m = arena_.alloc_f32(n * F);
    xa = R ? arena_.alloc_f32(n * R) : nullptr;
    scores = arena_.alloc_f32(T * threads);
    pos = static_cast<int32_t*>(arena_.alloc(n * sizeof(int32_t)));
    if (cuda) {
        tokens = static_cast<int32_t*>(arena_.alloc(n * sizeof(int32_t)));
        logits = arena_.alloc_f32(size_t(c.vocab_size));
        host_pos_.resize(n);
        // The matmuls' scratch for chunks of up to max_chunk tokens (reserve only grows it).
        const size_t ws = const_cast<LlamaModel&>(model).cuda_matmul_workspace_bytes(int64_t(n));
        cuda::reserve_workspace(std::max(ws, cuda::workspace_bytes()));
    }
}

// out (n, NH, HD): query i (at position p0 + i) of head h attends keys [0, p0 + i] of kv head
// h / (NH / NKV) in K, V (max_T, NKV, HD). Scale 1/sqrt(HD), softmax in f32 with the max
// subtracted. A plain loop: during decoding n is 1 and the work is one pass over the cache.
static void decode_attention(float* out, const float* q, const float* K, const float* V, int n, int p0, int NH,
                             int NKV, int HD, float* scores, int max_T) {
    const float scale = 1.0f / std::sqrt(float(HD));
    const int group = NH / NKV;
#pragma omp parallel for schedule(static) if (int64_t(n) * NH * (p0 + n) * HD > 65536)
    for (int task = 0; task < n * NH; task++) {
        const int i = task / NH, hh = task % NH, g = hh / group;
        const int S = p0 + i + 1;  // keys 0 .. p0 + i
        float* s = scores + size_t(omp_get_thread_num()) * size_t(max_T);
        const float* qi = q + (size_t(i) * NH + hh) * HD;
        float mx = -INFINITY;
        for (int j = 0; j < S; j++) {
            const float* kj = K + (size_t(j) * NKV + g) * HD;
            float d = 0;
            for (int e = 0; e < HD; e++) d += qi[e] * kj[e];
            s[j] = d * scale;
            mx = std::max(mx, s[j]);
        }
        float sum = 0;
        for (int j = 0; j < S; j++) sum += s[j] = std::exp(s[j] - mx);
        const float inv = 1.0f / sum;
        float* o = out + (size_t(i) * NH + hh) * HD;
        for (int e = 0; e < HD; e++) o[e] = 0;
        for (int j = 0; j < S; j++) {
            const float* vj = V + (size_t(j) * NKV + g) * HD;
            const float w = s[j] * inv;
            for (int e = 0; e < HD; e++) o[e] += w * vj[e];
        }
    }
}

void LlamaModel::decode_step(const int32_t* tokens, int n, KVCache& kv, float* logits_last) {
    if (n <= 0) return;
    TUNER_ASSERT_MSG(kv.arena_.device() == options.device, "KV cache made for a model on another device");
    if (kv.len_ + n > kv.max_T_)
        fail("[model] KV cache full: {} cached + {} new tokens > max_T {}", kv.len_, n, kv.max_T_);
    const ModelConfig& c = config;
    const int64_t C = c.hidden_size, F = c.intermediate_size;
    const int NH = int(c.num_heads), NKV = int(c.num_kv_heads), HD = int(c.head_dim);
    const int64_t KVD = int64_t(NKV) * HD;
    const float eps = float(c.rms_norm_eps);
    const bool bias = c.attention_bias;
    auto lin = [&](int il, LoraModule m, const Param& w, const Param* b) {
        Linear l;
        l.weight = &w;
        l.bias = b;
        const LoraAdapter& ad = layers[size_t(il)].lora[size_t(m)];
        if (adapters_enabled_ && ad.active()) {
            l.lora = &ad;
            l.lora_call.xa = kv.xa;  // inference: no dropout, nothing kept for a backward
        }
        return l;
    };
    const Device dev = options.device;
    for (int start = 0; start < n; start += kv.max_chunk_) {
        const int nc = std::min(kv.max_chunk_, n - start);
        const int p0 = kv.len_;
        const int32_t* chunk_tokens = tokens + start;
        if (on_cuda()) {
            for (int i = 0; i < nc; i++) kv.host_pos_[size_t(i)] = p0 + i;
            cuda::copy_to_device(kv.pos, kv.host_pos_.data(), size_t(nc) * sizeof(int32_t));
            cuda::copy_to_device(kv.tokens, chunk_tokens, size_t(nc) * sizeof(int32_t));
            chunk_tokens = kv.tokens;
        } else {
            for (int i = 0; i < nc; i++) kv.pos[i] = p0 + i;
        }
        float* x = kv.x;
        OP(embedding_forward)(x, chunk_tokens, embed_tokens.weight_view(), nc);
        for (int il = 0; il < int(c.num_layers); il++) {
            const LlamaLayer& W = layers[size_t(il)];
            float* K = kv.k_[size_t(il)];
            float* V = kv.v_[size_t(il)];
            float* k_new = K + size_t(p0) * size_t(KVD);  // new rows are written in place
            float* v_new = V + size_t(p0) * size_t(KVD);
            OP(rmsnorm_forward)(kv.h, kv.rstd, x, W.attn_norm.value.f32_on_device(), nc, C, eps);
            linear_forward(dev, kv.q, kv.h, lin(il, LoraModule::q_proj, W.q_proj, bias ? &W.q_bias : nullptr), nc);
            linear_forward(dev, k_new, kv.h, lin(il, LoraModule::k_proj, W.k_proj, bias ? &W.k_bias : nullptr), nc);
            linear_forward(dev, v_new, kv.h, lin(il, LoraModule::v_proj, W.v_proj, bias ? &W.v_bias : nullptr), nc);
            OP(rope_forward)(kv.q, kv.pos, inv_freq(), nc, NH, HD);
            OP(rope_forward)(k_new, kv.pos, inv_freq(), nc, NKV, HD);
            if (on_cuda()) cuda::decode_attention(kv.att, kv.q, K, V, nc, p0, NH, NKV, HD);
            else decode_attention(kv.att, kv.q, K, V, nc, p0, NH, NKV, HD, kv.scores, kv.max_T_);
            linear_forward(dev, kv.tmp, kv.att, lin(il, LoraModule::o_proj, W.o_proj, nullptr), nc);
            OP(add_rmsnorm_forward)(x, kv.h, kv.rstd, x, kv.tmp, W.mlp_norm.value.f32_on_device(), nc, C, eps);
            linear_forward(dev, kv.gate, kv.h, lin(il, LoraModule::gate_proj, W.gate_proj, nullptr), nc);
            linear_forward(dev, kv.up, kv.h, lin(il, LoraModule::up_proj, W.up_proj, nullptr), nc);
            OP(swiglu_forward)(kv.m, kv.gate, kv.up, nc * F);
            linear_forward(dev, kv.tmp, kv.m, lin(il, LoraModule::down_proj, W.down_proj, nullptr), nc);
            OP(add_forward)(x, x, kv.tmp, nc * C);
        }
        kv.len_ += nc;
        if (logits_last && start + nc == n) {
            // Only the last position's logits are needed: final norm and head on one row.
            OP(rmsnorm_forward)(kv.h, kv.rstd, x + size_t(nc - 1) * size_t(C), final_norm.value.f32_on_device(), 1, C,
                                eps);
            if (on_cuda()) {
                cuda::matmul_forward(kv.logits, kv.h, lm_head.weight_view(), nullptr, 1, false);
                cuda::copy_to_host(logits_last, kv.logits, size_t(c.vocab_size) * sizeof(float));
            } else {
                cpu::matmul_forward(logits_last, kv.h, lm_head.weight_view(), nullptr, 1, false);
            }
        }
    }
}

// ---- backward -------------------------------------------------------------------------------
double LlamaModel::forward_backward(const Batch& host_batch, float grad_scale, int64_t* count) {
    TUNER_ASSERT(host_batch.targets);
    TUNER_ASSERT_MSG(training_, "call prepare(B, T, /*training=*/true) before forward_backward");
    const Batch batch = device_batch(host_batch);
    dropout_now_ = true;  // training pass: adapter dropout on, masks keyed by dropout_counter_
    run_forward(batch);
    const int64_t N = int64_t(batch.B) * batch.T;
    // The loss is the last op: its gradient w.r.t. the final norm output (into dh) and the head
    // come out of the same chunked pass, so no (N x V) logits are ever kept.
    float* dhead = lm_head.trainable() ? static_cast<float*>(lm_head.grad.data) : nullptr;
    int64_t n = OP(lm_head_cross_entropy)(a_->losses, nullptr, a_->dh, dhead, a_->hf, lm_head.weight_view(),
                                          batch.targets, N, grad_scale);
    const double sum = sum_losses(N);
    if (count) *count = n;
    run_backward(batch);
    dropout_now_ = false;
    dropout_counter_++;
    return sum;
}

void LlamaModel::run_backward(const Batch& batch) {
    const ModelConfig& c = config;
    const int64_t N = int64_t(batch.B) * batch.T, C = c.hidden_size, F = c.intermediate_size;
    const int NH = int(c.num_heads), NKV = int(c.num_kv_heads), HD = int(c.head_dim);
    const int32_t* pos = batch.positions ? batch.positions : default_pos_.data();
    const AttnShape shape{batch.B, batch.T, NH, NKV, HD};
    const Device dev = options.device;
    Acts& a = *a_;

    // final norm: dres = d(residual stream leaving the last layer)
    OP(rmsnorm_backward)(a.dres, static_cast<float*>(final_norm.grad.data), a.dh, a.x_out.back(),
                         final_norm.value.f32_on_device(), a.rstdf, N, C, /*accumulate_dx=*/false);
    for (int il = int(c.num_layers) - 1; il >= 0; il--) {
        const LlamaLayer& W = layers[size_t(il)];
        // Checkpointing: the shared set still holds the last layer from the forward; every other
        // layer is recomputed from its saved input, with the same dropout keys (the counter
        // advances only after this backward), so its activations are bit-identical.
        if (checkpointing_ && il != int(c.num_layers) - 1)
            forward_layer(il, batch, il == 0 ? a.x_embed : a.x_out[size_t(il) - 1], nullptr);
        LayerActs& la = a.layers[acts_index(il)];
        // MLP block: x_out = x_mid + down(m); dres flows to x_mid unchanged, plus the norm path.
        linear_backward(dev, a.dm, false, a.dres, la.m, make_linear(il, LoraModule::down_proj, W.down_proj, nullptr), N);
        OP(swiglu_backward)(a.dgate, a.dup, a.dm, la.gate, la.up, N * F);
        linear_backward(dev, a.dh, false, a.dgate, la.h2, make_linear(il, LoraModule::gate_proj, W.gate_proj, nullptr), N);
        linear_backward(dev, a.dh, true, a.dup, la.h2, make_linear(il, LoraModule::up_proj, W.up_proj, nullptr), N);
        // dres += the norm's input gradient (the residual's two paths meet in one pass)
        OP(rmsnorm_backward)(a.dres, static_cast<float*>(W.mlp_norm.grad.data), a.dh, la.x_mid,
                             W.mlp_norm.value.f32_on_device(), la.rstd2, N, C, /*accumulate_dx=*/true);
        // attention block: x_mid = x_in + o_proj(att)
        linear_backward(dev, a.datt, false, a.dres, la.att, make_linear(il, LoraModule::o_proj, W.o_proj, nullptr), N);
        OP(attention_backward)(a.dq, a.dk, a.dv, a.datt, la.q, la.k, la.v, la.att, la.lse, batch.seg_start, shape);
        OP(rope_backward)(a.dq, pos, inv_freq(), N, NH, HD);
        OP(rope_backward)(a.dk, pos, inv_freq(), N, NKV, HD);
        const bool bias = c.attention_bias;
        // Below layer 0's attention input only the embedding (and this norm) could want a
        // gradient; a frozen embedding (LoRA) skips the input gradients there.
        const bool need_dx = il > 0 || embed_tokens.trainable() || W.attn_norm.trainable();
        float* dh = need_dx ? a.dh : nullptr;
        linear_backward(dev, dh, false, a.dq, la.h1, make_linear(il, LoraModule::q_proj, W.q_proj, bias ? &W.q_bias : nullptr), N);
        linear_backward(dev, dh, true, a.dk, la.h1, make_linear(il, LoraModule::k_proj, W.k_proj, bias ? &W.k_bias : nullptr), N);
        linear_backward(dev, dh, true, a.dv, la.h1, make_linear(il, LoraModule::v_proj, W.v_proj, bias ? &W.v_bias : nullptr), N);
        if (!need_dx) break;
        OP(rmsnorm_backward)(a.dres, static_cast<float*>(W.attn_norm.grad.data), a.dh, la.x_in,
                             W.attn_norm.value.f32_on_device(), la.rstd1, N, C, /*accumulate_dx=*/true);
    }
    if (embed_tokens.trainable())
        OP(embedding_backward)(static_cast<float*>(embed_tokens.grad.data), a.dres, batch.tokens, N, C);
}

void LlamaModel::zero_grad() {
    for (Arena* a : {&grads_, &adapter_grads_}) {
        if (a->device() == Device::CUDA) cuda::memset_device(a->base(), 0, a->used());
        else a->zero();
    }
}

// ---- save -------------------------------------------------------------------------------------
void LlamaModel::save(const std::string& dir, DType dtype) const {
    fs::create_directories(dir);
    auto* self = const_cast<LlamaModel*>(this);
    std::vector<Param*> ps = self->params();
    SafetensorsWriter w((fs::path(dir) / "model.safetensors").string());
    for (Param* p : ps) w.declare(p->name, dtype, p->value.dims());
    std::vector<float> f32;
    std::vector<uint8_t> out, scratch;
    for (Param* p : ps) {
        size_t n = size_t(p->value.numel());
        if (p->value.device == Device::CUDA && dtype_is_quantized(p->value.dtype))
            fail("[model] save: quantised weights on the GPU are not saved (train the adapter, merge on the CPU)");
        const void* host = tensor_to_host(p->value, scratch);
        if (p->value.dtype == dtype) {
            w.write(p->name, host);
            continue;
        }
        f32.resize(n);
        convert_to_f32(f32.data(), host, p->value.dtype, n);
        out.resize(n * dtype_size(dtype));
        convert_from_f32(out.data(), dtype, f32.data(), n);
        w.write(p->name, out.data());
    }
    w.finish();
    ModelConfig c = config;
    c.torch_dtype = dtype_torch_name(dtype);
    std::string json = config_to_json(c).dump(2) + "\n";
    write_text_atomic((fs::path(dir) / "config.json").string(), json, "model");
}

}  // namespace tuner
