// The training config file (YAML; keys documented in docs/config.md). Every key can be
// overridden with `--set a.b=value`; unknown keys are errors naming the closest known key.
// Defaults follow the reference system (XTuner; ../shared/spec/reference-behaviour.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/yaml_config.h"
#include "nn/lora.h"
#include "train/schedule.h"

namespace tuner {

struct TrainSettings {
    double lr = -1;  // -1: 2e-4 for lora, 2e-5 for full (the reference's defaults)
    ScheduleType schedule = ScheduleType::Cosine;
    double warmup_ratio = 0.03;
    int64_t warmup_steps = -1;  // >= 0 overrides warmup_ratio
    double weight_decay = 0.0;
    double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
    double max_grad_norm = 1.0;  // 0 = off
    int64_t batch_size = 1;
    int64_t grad_accum = 16;
    int64_t epochs = 3;
    int64_t max_steps = 0;  // > 0 overrides epochs
    uint64_t seed = 0;
    int64_t log_every = 1;
    // Activation checkpointing (ModelOptions::gradient_checkpointing). Default: on for qlora
    // (where activations dominate), off for full and lora; see default_gradient_checkpointing.
    bool gradient_checkpointing = false;
    // Refuse to start when the memory plan's peak exceeds this many bytes; 0 = the machine's
    // available memory (train/memory_plan.h memory_available_bytes); memory_limit: off disables.
    size_t memory_limit = 0;
    bool memory_check = true;
};

// train.gradient_checkpointing when the config does not say: true for qlora, else false.
bool default_gradient_checkpointing(const std::string& method);

struct TrainConfig {
    ConfigFile file;         // the parsed YAML (the data section is read by the data pipeline)
    std::string model;       // a Hugging Face folder
    std::string method = "lora";  // full | lora | qlora (LoRA over an NF4 base)
    bool uses_lora() const { return method == "lora" || method == "qlora"; }
    std::string output_dir;
    std::string resume;      // "" | "auto" | a checkpoint folder
    std::string base_dtype = "f32";  // storage of the frozen base with lora: f32 | bf16 (qlora: nf4);
                                     // default bf16 with device: cuda (apply_device_defaults)
    bool base_dtype_given = false;   // the config said base_dtype
    bool double_quant = true;        // quant.double_quant (qlora): 8-bit double quantisation of the NF4 scales
    int threads = 0;
    // device: cpu | cuda (the model's arenas and every op on GPU 0). cuda_matmul: how the CUDA
    // matmuls compute (backend/cuda/cuda_backend.h MatmulCompute): bf16 (tensor cores, f32
    // accumulation; the default), tf32, or f32 (CUDA cores, the CPU's numbers up to order).
    std::string device = "cpu";
    std::string cuda_matmul = "bf16";
    // activation_dtype: f32 | bf16, the storage of the activations saved for backward
    // (ModelOptions::activation_dtype). bf16 needs device: cuda with cuda_matmul: bf16, and is
    // then the default (apply_device_defaults).
    std::string activation_dtype = "f32";
    bool activation_dtype_given = false;
    LoraConfig lora;               // lora.* keys (seed: train.seed)
    std::string lora_init_adapter;  // lora.init_adapter: a PEFT adapter folder to start from
    TrainSettings train;
    int64_t eval_every = 0;  // 0 = only at the end
    std::vector<std::string> eval_prompts;
    int64_t eval_max_new_tokens = 64;
    int64_t save_every = 500;
    int64_t save_keep = 2;

    // The resolved config as YAML (written into checkpoints and output_dir/config.yaml).
    std::string resolved_yaml() const;
};

// Loads PATH, applies `--set` overrides, checks every known section's keys and parses them.
// The `data` section is only checked to be a mapping here.
TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides);
TrainConfig parse_train_config(ConfigFile file);
// Defaults that depend on the device, applied by parse_train_config and again after a --device
// override: with device: cuda, cuda_matmul: bf16 and no base_dtype given, LoRA stores its frozen
// base in bf16 (what the matmuls read anyway); with no activation_dtype given, activations are
// bf16 there (models/llama.h default_activation_dtype) and f32 elsewhere.
void apply_device_defaults(TrainConfig& config);

}  // namespace tuner
