// The memory of a training run, predicted before any weight is loaded. `tuner train` prints it as
// a table, `tuner train --dry-run` stops after it, a plan whose peak exceeds the machine's memory
// (or train.memory_limit) is refused before loading, and the end of training prints the measured
// peak RSS beside the plan's peak. docs/memory.md explains every row.
//
// Where the numbers come from:
//   weights, grads, adapters, activations  LlamaModel::plan_params / plan_adapters /
//       plan_activations: the very functions load, enable_lora and prepare allocate with, so these
//       rows equal the model's arenas byte for byte (tests/test_memory_plan.cpp checks it).
//   optimizer        AdamW's arena: two f32 moments (m, v) per trained tensor, each 64-byte aligned.
//   kernel scratch   the per-thread scratch the CPU kernels ask for (core/scratch.h) at this B, T.
//   batches, eval    the micro-batches' token arrays and the eval-prompt KV cache.
//   base             this process's RSS when the plan is made (program, libraries, tokenizer and
//                    dataset: measured), or kProgramBytes when planning from elsewhere.
//   runtime          a measured allowance for what libraries allocate on first use (OpenMP
//                    threads, oneDNN primitives and their scratchpads, malloc arenas).
// RSS peaks in one of three phases:
//   load   = base + weights + grads + model files (the safetensors are mmap'ed and every page is
//            touched while the weights are copied out; unmapped after)
//   train  = base + weights + grads + adapters + activations + optimizer + scratch + batches
//            + eval + runtime
//   resume = base + weights + grads + adapters + activations + optimizer + checkpoint files
//            (mapped while the state is copied in, before the first step; resumed runs only)
//   peak   = max(load, train, resume, the peak RSS already reached when planning)
// On CUDA (request.device) the model's arenas live in GPU memory instead: the host keeps the
// weights only while loading (they are converted there, then copied over), and a second table,
// the GPU plan, adds weights + grads + adapters + optimizer + activations (+ device copies of
// the batch) + the ops' workspace (the max over every op of a step, from the CUDA backend's
// *_workspace_bytes planners) + cuBLASLt's workspace + the eval KV cache, checked against the
// device's free memory before loading.
//
//   MemoryPlanRequest req;  req.model = load_config(dir + "/config.json");  req.method = "lora";
//   req.lora = LoraConfig{};  req.B = 4;  req.T = 512;
//   TrainMemoryPlan plan = plan_training_memory(req);
//   plan.print(stdout);
//   check_memory_fits(plan, memory_available_bytes(), "MemAvailable");   // throws when too big
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/dtype.h"
#include "io/hf_config.h"
#include "nn/lora.h"
#include "quant/quant.h"

namespace tuner {

// RSS of `tuner` right after start (program + shared libraries; `tuner templates` peaks at
// 12 MiB): the base when the caller has no measurement of its own.
constexpr size_t kProgramBytes = size_t(16) << 20;
// What libraries allocate on first use after the plan is made (OpenMP worker threads and their
// malloc arenas, oneDNN's JIT kernels, one 256 KiB mapping per generated kernel, and GEMM
// buffers), fitted to the residual between measured peak RSS and the other rows on stories260K
// and smol-135m runs (docs/memory.md): 8 MiB + 1 KiB per token of a micro-batch + 256 KiB per
// thread. Full fine-tuning of wide models measured up to ~25 MiB more (weight-gradient GEMMs),
// under 1% of their peak.
constexpr size_t kRuntimeBytes = size_t(8) << 20;
constexpr size_t kRuntimeBytesPerToken = size_t(1) << 10;
constexpr size_t kRuntimeBytesPerThread = size_t(256) << 10;

struct MemoryPlanRequest {
    ModelConfig model;
    std::string gguf_path;           // a .gguf model: weights planned per tensor from its types
                                     // (plan_gguf_params) instead of from the config alone
    std::string method = "lora";    // full | lora | qlora
    // Storage of the frozen base (lora: F32 or BF16; qlora: NF4, whose bytes the model plans as
    // n/2 + one f32 absmax per 64). Ignored for full fine-tuning (trained weights are F32).
    DType base_dtype = DType::F32;
    QuantOptions quant;              // NF4: double quantisation (qlora's default)
    std::optional<LoraConfig> lora;  // lora and qlora
    int B = 1, T = 512;
    bool gradient_checkpointing = false;
    int64_t grad_accum = 1;
    int threads = 1;                 // kernel scratch is per thread
    int64_t eval_max_new_tokens = 0; // > 0: eval prompts are generated (a small KV cache)
    size_t model_file_bytes = 0;     // model file pages resident at once while loading (the loader
                                     // drops each tensor's pages after copying it: the largest
                                     // tensor + conversion chunk, see trainer.cpp)
    size_t resume_file_bytes = 0;    // checkpoint files (mapped while resuming; 0 = no resume)
    size_t base_rss = 0;             // measured RSS now (0: kProgramBytes)
    Device device = Device::CPU;     // CUDA: the model's arenas in GPU memory (gpu_* below)
    DType activation_dtype = DType::F32;  // ModelOptions::activation_dtype
    size_t peak_rss_so_far = 0;      // VmHWM now (data preparation may have peaked higher)
};

struct TrainMemoryPlan {
    MemoryPlanRequest request;
    MemoryPlan model;  // the model's roles, from LlamaModel::plan_*
    size_t base = 0, weights = 0, grads = 0, adapters = 0, optimizer = 0, activations = 0;
    size_t activations_other = 0;  // activations with the other gradient_checkpointing setting
    size_t scratch = 0, batches = 0, eval = 0, runtime = 0, model_files = 0, resume_files = 0;
    size_t load_peak = 0, train_peak = 0, resume_peak = 0, peak = 0;
    std::string peak_phase;  // "load", "train", "resume" or "data preparation"
    // CUDA only: device memory (weights ... activations above are then device bytes).
    size_t gpu_workspace = 0, gpu_cublas = 0, gpu_eval = 0, gpu_peak = 0;

    // The table `tuner train` prints.
    void print(FILE* out) const;
    // "weights 0.50 GiB + grads 0.50 GiB + ... = peak 2.10 GiB (train)"
    std::string sum_text() const;
};

// Throws tuner::Error for an unknown method or a base dtype without a planned size.
TrainMemoryPlan plan_training_memory(const MemoryPlanRequest& request);

// Bytes the CPU kernels' per-thread scratch (core/scratch.h) grows to in a training step of
// B x T tokens: attention's K/V panels and score blocks, the fused lm_head + cross-entropy
// chunk, weight tiles converted from a low-precision frozen base, RoPE tables. An upper bound
// when fewer tokens are trained than B x T (cross-entropy chunks shrink).
size_t kernel_scratch_bytes(const ModelConfig& config, int B, int T, DType frozen_dtype, bool base_frozen,
                            int threads);

// Memory this process may still grow into, in bytes: MemAvailable from /proc/meminfo plus this
// process's RSS, capped by the cgroup's memory.max (minus the rest of the cgroup's usage) when
// there is one. 0 when unknown. *source names where it came from.
size_t memory_available_bytes(std::string* source = nullptr);

// CUDA: throws "[memory] the GPU plan ... > free F GiB of device memory (GPU name)" when
// plan.gpu_peak > free_bytes (free 0 = unknown: no check).
void check_gpu_memory_fits(const TrainMemoryPlan& plan, size_t free_bytes, const std::string& device_name);

// Throws tuner::Error "[memory] weights X GiB + ... = peak Y GiB > available Z GiB (source) ..."
// with suggestions (lora, base_dtype bf16, qlora, gradient_checkpointing, smaller batch or
// max_length) when plan.peak > limit. limit 0 = unknown: no check.
void check_memory_fits(const TrainMemoryPlan& plan, size_t limit, const std::string& source);

// "8GiB", "512 MiB", "2G", "1.5GB", "1000000": binary units for K/M/G/T, KiB/MiB/GiB/TiB,
// decimal for KB/MB/GB/TB, plain bytes without a unit. Returns false on anything else.
bool parse_byte_size(const std::string& text, size_t* bytes);

// Model file pages resident at once while an HF folder loads (MemoryPlanRequest::model_file_bytes):
// the largest tensor + the conversion chunk, from the safetensors headers (no tensor data read).
// A .gguf path: its largest tensor + the conversion chunk.
size_t resident_model_file_bytes(const std::string& dir, const ModelConfig& config);

}  // namespace tuner
