// PEFT LoRA adapter folders (what peft's `save_pretrained` writes and `PeftModel.from_pretrained`,
// vLLM and llama.cpp's convert_lora_to_gguf.py read), and merging an adapter into its base.
//
// A folder holds:
//   adapter_config.json         {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 64,
//                                "lora_alpha": 16, "lora_dropout": 0.1, "target_modules": [...],
//                                "use_rslora": false, "bias": "none", "fan_in_fan_out": false, ...}
//   adapter_model.safetensors   base_model.model.<HF module>.lora_A.weight (r, in) and
//                               .lora_B.weight (out, r), e.g.
//                               base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
// PEFT strips the adapter name when saving; names with it (".lora_A.default.weight", as in a
// live PEFT state dict) and without the "base_model.model." prefix are accepted on reading.
// Unsupported variants (DoRA, rank/alpha patterns, trained biases, modules_to_save, adapters on
// embeddings or lm_head) are errors that say so, never silently ignored.
//
//   save_peft_adapter(model, "runs/x/adapter", "models/Qwen2.5-0.5B");
//   auto m = LlamaModel::load(base, {.trainable = false});
//   load_peft_adapter(*m, "runs/x/adapter");                 // enable_lora + values
//   merge_peft_adapter(base, "runs/x/adapter", "runs/x/merged", std::nullopt);
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "core/dtype.h"
#include "nn/lora.h"

namespace tuner {

class LlamaModel;
class SafetensorsFile;
struct SafetensorsTensor;
struct ModelOptions;

// Parses DIR/adapter_config.json. target_modules is taken as written when it lists module names
// (a trailing path like "self_attn.q_proj" counts as q_proj); a pattern string or unknown names
// leave it as {"all-linear"} here and load_peft_adapter derives the modules from the tensors.
LoraConfig read_peft_adapter_config(const std::string& dir);

// Writes DIR/adapter_config.json and DIR/adapter_model.safetensors (F32) from the model's
// adapters, each file through a temporary name and a rename (DIR is created if needed).
// base_model_name_or_path goes into the config as PEFT records it.
void save_peft_adapter(LlamaModel& model, const std::string& dir, const std::string& base_model_name_or_path);

// Copies the tensors of DIR/adapter_model.safetensors (F32, BF16 or F16) into the model's
// adapters. The model must have LoRA enabled with exactly the adapter's modules and rank; every
// shape is checked against the model (errors name the file and the tensor).
void load_peft_adapter_weights(LlamaModel& model, const std::string& dir);

// read_peft_adapter_config + model.enable_lora (target modules from the tensors present) +
// load_peft_adapter_weights. Returns the configuration that was enabled. To continue training
// from an adapter (train's lora.init_adapter): lora_dropout replaces the file's dropout when set,
// and seed keys the dropout masks (the file does not record one).
LoraConfig load_peft_adapter(LlamaModel& model, const std::string& dir,
                             std::optional<double> lora_dropout = std::nullopt, uint64_t seed = 0);

// Writes OUT_DIR as a Hugging Face folder with W' = W + scale * B A (computed in f32) for every
// adapted weight and every other tensor copied: model.safetensors, config.json (torch_dtype
// updated when `dtype` is given), and the tokenizer and generation files that exist in
// MODEL_DIR. dtype: output dtype of every float tensor (F32/BF16/F16); nullopt keeps each
// tensor's stored dtype. Everything is written into a temporary sibling folder that is renamed
// to OUT_DIR at the end; a merged value that is not finite (a NaN/inf in the adapter, or an
// overflow) is an error and leaves nothing behind. OUT_DIR must not exist (or be empty).
//
// base_quant: how the base was stored while the adapter was trained (qlora: NF4). The merge then
// uses the weights the adapter saw: every projection (q/k/v/o, gate/up/down) is quantised to NF4
// and dequantised to f32 before W + scale * B A is added there, and embeddings and lm_head are
// rounded to bf16 (QLoRA keeps them in bf16). nullopt reads ADAPTER_DIR/tuner_base.json (written
// by `tuner train` with method: qlora); no such file means an unquantised base.
struct AdapterBaseQuant {
    std::string type;           // "" (none) or "nf4"
    bool double_quant = true;   // NF4 only
};
void merge_peft_adapter(const std::string& model_dir, const std::string& adapter_dir, const std::string& out_dir,
                        std::optional<DType> dtype, std::optional<AdapterBaseQuant> base_quant = std::nullopt);

// ADAPTER_DIR/tuner_base.json, beside PEFT's files (PEFT ignores it): {"base_quantization":
// "nf4", "double_quant": true}. read returns type "" when the file is absent.
void write_adapter_base_quantization(const std::string& adapter_dir, const std::string& type, bool double_quant);
AdapterBaseQuant read_adapter_base_quantization(const std::string& adapter_dir);
// Sets the frozen base's storage in `options` to what the adapter was trained against (NF4 for
// a QLoRA adapter), so generation and evaluation with it see the same base as training did.
void use_adapter_base_storage(ModelOptions& options, const std::string& adapter_dir);

// A frozen model for inference (generate, chat, eval, perplexity) with the adapter in
// ADAPTER_DIR applied ("" = none): the base stored as the adapter was trained against it
// (use_adapter_base_storage), then load_peft_adapter; on `device` (CUDA: see ModelOptions::device).
std::unique_ptr<LlamaModel> load_model_with_adapter(const std::string& model_dir, const std::string& adapter_dir,
                                                    Device device = Device::CPU);

// Splits a LoRA tensor name into (layer, module, 'A' | 'B'); false if it is not one.
bool parse_lora_tensor_name(const std::string& name, int* layer, int* module, char* which);

// The LoRA tensors of an adapter file as (lora_A, lora_B) by (layer, module). Every tensor must be
// the A or B of a Llama linear, F32, BF16 or F16, and a matrix, and every module needs both;
// otherwise a "[peft] FILE: ..." error names the tensor. Empty when the file holds no tensors.
// Used by loading and merging here and by the GGUF export (which merges inside its tensor loop).
using LoraTensorPairs = std::map<std::pair<int, int>, std::pair<const SafetensorsTensor*, const SafetensorsTensor*>>;
LoraTensorPairs index_peft_adapter(const SafetensorsFile& f);

}  // namespace tuner
