// LoRA (Hu et al. 2021) as Hugging Face PEFT defines it, for every linear layer of a model:
//
//   y = x W^T (+ b)  +  scale * dropout(x) A^T B^T        A (r, in), B (out, r), both F32
//   scale = lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA (Kalajdzievski 2023)
//
// Initialisation is PEFT's `init_lora_weights=True`: B = 0 (a fresh adapter changes nothing)
// and A ~ kaiming_uniform_(a=sqrt(5)), i.e. gain = sqrt(2 / (1 + 5)) and bound =
// gain * sqrt(3 / fan_in) = 1 / sqrt(in): A ~ U(-1/sqrt(in), 1/sqrt(in)). Values come from
// core/random.h keyed by (seed, tensor name), so they do not depend on threads or order.
//
// Dropout is PEFT's nn.Dropout on the adapter input (inverted: kept values are scaled by
// 1/(1-p)), applied only while training. No (N, in) mask is stored: the keep decision of element
// i is a pure function of (key, i), and the key of a linear is derived from (seed, counter,
// layer, module), where the counter identifies the micro-batch. Backward regenerates the mask
// from the same key, and a resumed run that restores the counter draws the same masks.
//
// What is saved for backward per adapted linear is only xa = scale * dropout(x) A^T (N, r).
// The forward/backward math lives in nn/linear.cpp (see linear.h); this header holds the
// configuration, the adapter parameters and the dropout masks.
//
//   LoraConfig cfg;  cfg.r = 16;  cfg.lora_alpha = 32;  cfg.target_modules = {"q_proj", "v_proj"};
//   model.enable_lora(cfg);       // adds A/B to every targeted linear; the base stays frozen
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "backend/kernels.h"
#include "nn/param.h"

namespace tuner {

// The linear layers of a Llama-family block, in PEFT's (HF module) names and in this order.
enum class LoraModule : int { q_proj = 0, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj };
constexpr int kLoraModules = 7;
extern const std::array<const char*, kLoraModules> kLoraModuleNames;
// "self_attn" for q/k/v/o, "mlp" for gate/up/down: the HF parent module.
const char* lora_module_parent(int module);
// Index of a module name in kLoraModuleNames, or -1.
int lora_module_index(const std::string& name);

struct LoraConfig {
    // Defaults of the reference system (XTuner): r 64, alpha 16, dropout 0.1, every linear layer
    // except lm_head. (PEFT's own LoraConfig defaults are r 8, alpha 8, dropout 0.)
    int64_t r = 64;
    double lora_alpha = 16.0;
    double lora_dropout = 0.1;
    // Module names (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj), or
    // "all-linear" for all of them. lm_head is never adapted.
    std::vector<std::string> target_modules = {"all-linear"};
    bool use_rslora = false;
    uint64_t seed = 0;  // A's initial values and the dropout masks

    // alpha / r, or alpha / sqrt(r) with use_rslora.
    float scale() const;
    // Checks r > 0, 0 <= dropout < 1, a finite alpha and the module names; `where` starts the
    // error message ("[lora] where: ...").
    void validate(const std::string& where) const;
    // target_modules expanded and checked: which of the kLoraModules are adapted.
    std::array<bool, kLoraModules> targets(const std::string& where) const;
    // The expanded module names in kLoraModuleNames order (what adapter_config.json lists).
    std::vector<std::string> target_names() const;
};

// The adapter of one linear layer. Inactive (no data) for modules that are not targeted.
struct LoraAdapter {
    Param A;  // (r, in)  F32 with an F32 grad; name base_model.model.<module>.lora_A.weight
    Param B;  // (out, r)
    float scale = 0.0f;
    float dropout = 0.0f;  // p
    int layer = -1;
    int module = -1;  // LoraModule
    bool active() const { return A.value.data != nullptr; }
    int64_t r() const { return A.value.shape[0]; }
};

// PEFT tensor names: "base_model.model." + HF module path + ".lora_A.weight", e.g.
// base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
std::string lora_module_path(int layer, int module);  // "model.layers.0.self_attn.q_proj"
std::string lora_tensor_name(int layer, int module, char which);  // which: 'A' or 'B'

// Initial values (PEFT init_lora_weights=True): A (r, in) ~ U(-1/sqrt(in), 1/sqrt(in)) from
// (seed, A's name); B = 0.
void lora_init(LoraAdapter& adapter, uint64_t seed);

// ---- dropout masks ----------------------------------------------------------------------
// Key of the mask of one linear for one micro-batch.
uint64_t lora_dropout_key(uint64_t seed, uint64_t counter, int layer, int module);
// p * 2^32, saturated: the threshold below. The CUDA kernels take it precomputed so both
// devices drop the same elements.
uint32_t lora_dropout_threshold(float p);
// Whether element i survives: 32 random bits per element (the high half of splitmix64(key + i)),
// kept iff bits >= p * 2^32, so the keep probability is 1 - p to within 2^-32.
bool lora_dropout_keep(uint64_t key, int64_t i, float p);
// out (n) = x * keep / (1 - p). out may alias x. out and x may be bf16 storage (the product is
// formed in f32 and rounded on store, as the CUDA kernel does).
void lora_dropout_forward(ActOut out, ActIn x, int64_t n, uint64_t key, float p);
// dx (n) += g * keep / (1 - p): the input gradient through the same mask.
void lora_dropout_backward_add(float* dx, const float* g, int64_t n, uint64_t key, float p);

}  // namespace tuner
