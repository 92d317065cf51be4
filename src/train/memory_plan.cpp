#include "train/memory_plan.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <fstream>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/device_ops.h"
#include "core/error.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "models/gguf_model.h"
#include "models/llama.h"
#include "models/llama_tensors.h"

namespace tuner {

namespace {

size_t activation_bytes(const MemoryPlan& p) {
    return p.role_bytes("activations") + p.role_bytes("activation grads") + p.role_bytes("adapter activations");
}

size_t f32_slot(size_t floats) { return align_up(floats * sizeof(float)); }  // as scratch_f32 rounds

// backend/cpu/matmul.cpp weight_tile_rows: a 4 MiB tile of converted weight rows.
int64_t weight_tile_rows(int64_t cols) {
    const int64_t rows = (int64_t(1) << 20) / std::max<int64_t>(cols, 1) / 16 * 16;
    return std::max<int64_t>(rows, 16);
}

std::string mib(size_t b) { return format_bytes(b); }

}  // namespace

size_t kernel_scratch_bytes(const ModelConfig& c, int B, int T, DType frozen_dtype, bool base_frozen, int threads) {
    // Each thread's slot grows to the largest request it ever made (core/scratch.cpp), so the
    // total is a sum over threads and slots of per-slot maxima. Shapes below follow the kernels.
    const int64_t N = int64_t(B) * T, C = c.hidden_size, F = c.intermediate_size, V = c.vocab_size;
    const int64_t NH = c.num_heads, NKV = c.num_kv_heads, HD = c.head_dim;
    constexpr int64_t BQ = 64, BK = 64;                // backend/cpu/attention.cpp blocks
    const int64_t Tp = (int64_t(T) + BK - 1) / BK * BK;  // T padded to whole key blocks
    const int64_t kv_row = int64_t(T) * NKV * HD;
    // cross_entropy.cpp: chunks of R rows with an (R, V) logit block of ~8M floats.
    const int64_t R = std::min<int64_t>(N, std::max<int64_t>(16, (int64_t(8) << 20) / V / 16 * 16));

    // Weight tile (main thread): attention's transposed K and V panels; the converted rows of a
    // low-precision frozen weight (every linear, and the head when it is frozen too).
    int64_t tile = 2 * int64_t(B) * NKV * HD * Tp;
    const bool low_precision = base_frozen && frozen_dtype != DType::F32;
    if (low_precision) {
        const int64_t QD = NH * HD, KVD = NKV * HD;
        const int64_t shapes[][2] = {{QD, C}, {KVD, C}, {C, QD}, {F, C}, {C, F}, {V, C}};  // (out, in)
        for (const auto& s : shapes) tile = std::max(tile, std::min(weight_tile_rows(s[1]), s[0]) * s[1]);
    }
    const int64_t attn_block = 2 * BQ * BK + BQ * HD + 3 * BQ;  // backward's (forward's is smaller)
    size_t main_thread = f32_slot(size_t(tile)) + f32_slot(size_t(std::max(attn_block, 2 * R))) +
                         f32_slot(size_t(R * V)) + f32_slot(size_t(std::max({HD, 2 * R * C, 2 * kv_row})));
    // Worker threads: attention score blocks and per-thread dK/dV accumulators (and RoPE tables).
    size_t worker = f32_slot(size_t(attn_block)) + f32_slot(size_t(std::max(HD, 2 * kv_row)));
    return main_thread + size_t(std::max(threads, 1) - 1) * worker;
}

// The CUDA ops' workspace for a training step (LlamaModel::cuda_workspace_bytes on a loaded
// model): the max over every matmul (base weights in their storage dtype, adapters), attention
// and the lm_head + cross-entropy, under the current cuda::config().
static size_t gpu_workspace_bytes(const MemoryPlanRequest& r, bool full, DType frozen) {
    const ModelConfig& c = r.model;
    const int64_t N = int64_t(r.B) * r.T;
    size_t ws = 0;
    WeightView head;
    for (const TensorSpec& s : llama_tensor_specs(c)) {
        if (s.shape.size() != 2) continue;
        const WeightView w{nullptr, frozen_storage_dtype(s.kind, full, frozen), s.shape[0], s.shape[1]};
        ws = std::max(ws, cuda::matmul_workspace_bytes(N, w));
        if (s.kind == TensorKind::Head || (s.kind == TensorKind::Embedding && c.tie_word_embeddings)) head = w;
    }
    if (!full) {
        const int64_t R = r.lora->r;
        for (int64_t in : {c.hidden_size, c.intermediate_size, c.num_heads * c.head_dim}) {
            ws = std::max(ws, cuda::matmul_workspace_bytes(N, WeightView{nullptr, DType::F32, R, in}));
            ws = std::max(ws, cuda::matmul_workspace_bytes(N, WeightView{nullptr, DType::F32, in, R}));
        }
    }
    ws = std::max(ws, cuda::attention_workspace_bytes(
                          AttnShape{r.B, r.T, int(c.num_heads), int(c.num_kv_heads), int(c.head_dim)}));
    ws = std::max(ws, cuda::cross_entropy_workspace_bytes(N, head));
    return ws;
}

TrainMemoryPlan plan_training_memory(const MemoryPlanRequest& r) {
    TrainMemoryPlan p;
    p.request = r;
    const bool full = r.method == "full";
    if (!full && r.method != "lora" && r.method != "qlora")
        fail("[memory] unknown method '{}' (full, lora or qlora)", r.method);
    if (!full && !r.lora) fail("[memory] method {} needs a LoRA config", r.method);
    if (r.B <= 0 || r.T <= 0) fail("[memory] batch {} x {} tokens: both must be positive", r.B, r.T);
    const DType frozen = full ? DType::F32 : r.base_dtype;
    const LoraConfig* lora = full ? nullptr : &*r.lora;

    // The model's own plan: exactly what load + enable_lora + prepare(B, T, true) allocate.
    if (!r.gguf_path.empty())
        plan_gguf_params(p.model, GgufModel(r.gguf_path), full, frozen, r.quant);
    else
        LlamaModel::plan_params(p.model, r.model, full, frozen, r.quant);
    if (lora) LlamaModel::plan_adapters(p.model, r.model, *lora);
    ActivationPlanOptions ao;
    ao.training = true;
    ao.checkpointing = r.gradient_checkpointing;
    ao.lora = lora;
    ao.device_batch = r.device == Device::CUDA;
    ao.activation_dtype = r.activation_dtype;
    LlamaModel::plan_activations(p.model, r.model, r.B, r.T, ao);
    MemoryPlan other;
    ao.checkpointing = !r.gradient_checkpointing;
    LlamaModel::plan_activations(other, r.model, r.B, r.T, ao);

    p.weights = p.model.role_bytes("weights");
    p.grads = p.model.role_bytes("grads") + p.model.role_bytes("adapter grads");
    p.adapters = p.model.role_bytes("adapters");
    p.activations = activation_bytes(p.model);
    p.activations_other = activation_bytes(other);
    // AdamW (train/adamw.cpp): m and v per trained tensor, each align_up(numel * 4) bytes; the
    // gradient entries are exactly those aligned f32 sizes of the trained tensors.
    p.optimizer = 2 * p.grads;
    p.scratch = kernel_scratch_bytes(r.model, r.B, r.T, frozen, !full, r.threads);

    // Micro-batches (data/dataset.h BatchData: tokens, targets, positions, seg_start), one more
    // for evaluation, and the model's default positions.
    const size_t N = size_t(r.B) * size_t(r.T);
    p.batches = (size_t(std::max<int64_t>(r.grad_accum, 1)) + 1) * 4 * N * sizeof(int32_t) + N * sizeof(int32_t);
    if (r.eval_max_new_tokens > 0) {
        // Eval prompts decode with a KV cache (models/llama.h KVCache) of at most T + max_new
        // positions: K and V of every layer plus one 64-token chunk of layer buffers.
        const size_t maxT = size_t(std::min<int64_t>(int64_t(r.T) + r.eval_max_new_tokens,
                                                     std::max<int64_t>(r.model.max_position_embeddings, 1)));
        const size_t KVD = size_t(r.model.num_kv_heads * r.model.head_dim);
        const size_t QD = size_t(r.model.num_heads * r.model.head_dim);
        const size_t C = size_t(r.model.hidden_size), F = size_t(r.model.intermediate_size);
        p.eval = 2 * size_t(r.model.num_layers) * maxT * KVD * 4 + 64 * (3 * C + 2 * QD + 3 * F + 1) * 4 +
                 size_t(std::max(r.threads, 1)) * maxT * 4 + size_t(r.model.vocab_size) * 4;
    }
    p.base = r.base_rss ? r.base_rss : kProgramBytes;
    p.runtime = kRuntimeBytes + N * kRuntimeBytesPerToken + size_t(std::max(r.threads, 1)) * kRuntimeBytesPerThread;
    p.model_files = r.model_file_bytes;
    p.resume_files = r.resume_file_bytes;

    // load: the weights (and, for full fine-tuning, the gradients, allocated with them) while
    // the mapped files are read; adapters come after the files are unmapped.
    p.load_peak = p.base + p.weights + p.model.role_bytes("grads") + p.model_files;
    p.train_peak = p.base + p.weights + p.grads + p.adapters + p.activations + p.optimizer + p.scratch + p.batches +
                   p.eval + p.runtime;
    if (p.resume_files)
        p.resume_peak = p.base + p.weights + p.grads + p.adapters + p.activations + p.optimizer + p.resume_files;
    p.peak = p.train_peak, p.peak_phase = "train";
    if (p.load_peak > p.peak) p.peak = p.load_peak, p.peak_phase = "load";
    if (p.resume_peak > p.peak) p.peak = p.resume_peak, p.peak_phase = "resume";
    if (r.peak_rss_so_far > p.peak) p.peak = r.peak_rss_so_far, p.peak_phase = "data preparation";
    if (r.device == Device::CUDA) {
        // The arenas are device memory; the host holds the weights only while loading (and
        // gradients of full fine-tuning go straight to the device).
        p.gpu_workspace = gpu_workspace_bytes(r, full, frozen);
        p.gpu_cublas = cuda::available() ? cuda::cublaslt_workspace_bytes() : size_t(32) << 20;
        p.gpu_eval = p.eval;
        p.gpu_peak = p.weights + p.grads + p.adapters + p.optimizer + p.activations + p.gpu_workspace + p.gpu_cublas +
                     p.gpu_eval;
        p.scratch = 0;
        p.load_peak = p.base + p.weights + p.model_files;
        p.train_peak = p.base + p.batches + p.runtime;
        p.resume_peak = p.resume_files ? p.base + p.resume_files : 0;
        p.peak = p.train_peak, p.peak_phase = "train";
        if (p.load_peak > p.peak) p.peak = p.load_peak, p.peak_phase = "load";
        if (p.resume_peak > p.peak) p.peak = p.resume_peak, p.peak_phase = "resume";
        if (r.peak_rss_so_far > p.peak) p.peak = r.peak_rss_so_far, p.peak_phase = "data preparation";
    }
    return p;
}

void TrainMemoryPlan::print(FILE* out) const {
    const MemoryPlanRequest& r = request;
    if (r.device == Device::CUDA) {
        std::fprintf(out, "GPU memory plan: %s, %d x %d tokens, gradient checkpointing %s (%s)\n", r.method.c_str(),
                     r.B, r.T, r.gradient_checkpointing ? "on" : "off",
                     cuda::available() ? cuda::device_summary().c_str() : "no CUDA device here");
        auto row = [&](const char* name, size_t bytes, const std::string& note) {
            std::fprintf(out, "  %-16s %12s  %s\n", name, mib(bytes).c_str(), note.c_str());
        };
        const bool full = r.method == "full";
        row("weights", weights, full ? "f32 (trained)" : fmt::format("{} (frozen; norms f32)",
                                                                      dtype_name(r.base_dtype)));
        if (!full) row("adapters", adapters, fmt::format("LoRA r={}, f32", r.lora->r));
        row("gradients", grads, full ? "f32, one per parameter" : "f32, adapters only");
        row("optimizer", optimizer, "AdamW m and v, f32 per trained parameter");
        row("activations", activations,
            fmt::format("{} layers x {} tokens, + device copies of the batch; checkpointing {} would need {}",
                        r.model.num_layers, int64_t(r.B) * r.T, r.gradient_checkpointing ? "off" : "on",
                        mib(activations_other)));
        // The ops' workspace planners live in the CUDA backend: a build without CUDA cannot size it.
        row("op workspace", gpu_workspace,
            gpu_workspace == 0 && !cuda::available()
                ? "largest op scratch: not known in a build without CUDA (the sizes come from the CUDA "
                  "backend; measured with it: 40-90 MiB for llama-1b/7b at T=2048 with a byte vocabulary, "
                  "517 MiB for llama-7b with a 128k one: the cross-entropy chunks)"
                : "largest op scratch: bf16 operand copies, weight tiles, CE chunk");
        row("cuBLASLt", gpu_cublas, "cuBLASLt's own workspace");
        if (gpu_eval) row("eval KV cache", gpu_eval, "eval-prompt generation");
        std::fprintf(out, "  %-16s %12s  (plus the CUDA context, outside cudaMalloc)\n", "GPU peak",
                     mib(gpu_peak).c_str());
        std::fprintf(out, "host memory: load %s (weights converted on the host, then copied), train %s\n",
                     mib(load_peak).c_str(), mib(train_peak).c_str());
        return;
    }
    const bool full = r.method == "full";
    const DType frozen = full ? DType::F32 : r.base_dtype;
    const int64_t n_params = r.model.num_params();
    std::fprintf(out, "memory plan: %s, %d x %d tokens, gradient checkpointing %s, %d thread%s\n", r.method.c_str(),
                 r.B, r.T, r.gradient_checkpointing ? "on" : "off", r.threads, r.threads == 1 ? "" : "s");
    auto row = [&](const char* name, size_t bytes, const std::string& note) {
        std::fprintf(out, "  %-16s %12s  %s\n", name, mib(bytes).c_str(), note.c_str());
    };
    row("weights", weights,
        fmt::format("{:.1f}M parameters, {}{}", double(n_params) / 1e6, full ? "f32 (trained)" : dtype_name(frozen),
                    full ? "" : " (frozen; norms f32)"));
    if (!full) {
        const auto it = model.roles().find("adapters");
        const size_t tensors = it == model.roles().end() ? 0 : it->second.size();
        row("adapters", adapters,
            fmt::format("LoRA r={}: {} tensors A and B, f32 (~{:.2f}M parameters)", r.lora->r, tensors,
                        double(adapters) / 4e6));
    }
    row("gradients", grads, full ? "f32, one per parameter" : "f32, adapters only");
    row("optimizer", optimizer, "AdamW m and v, f32 per trained parameter");
    row("activations", activations,
        fmt::format("{} layers x {} tokens; checkpointing {} would need {}", r.model.num_layers, int64_t(r.B) * r.T,
                    r.gradient_checkpointing ? "off" : "on", mib(activations_other)));
    row("kernel scratch", scratch, "per-thread tiles, attention blocks, cross-entropy chunk");
    row("batches, eval", batches + eval, eval ? "micro-batches, eval-prompt KV cache" : "micro-batches");
    row("program + data", base, request.base_rss ? "measured RSS before loading: program, libraries, tokenizer, data"
                                                 : "program and libraries (allowance)");
    row("runtime", runtime, "first-use allocations of OpenMP, oneDNN, malloc (allowance)");
    std::fprintf(out, "  %-16s %12s\n", "train", mib(train_peak).c_str());
    row("load", load_peak, fmt::format("weights{} + {} of model file pages (largest tensor + conversion chunk)", full ? " + gradients" : "",
                                       mib(model_files)));
    if (resume_peak) row("resume", resume_peak, fmt::format("+ {} of mapped checkpoint files", mib(resume_files)));
    std::fprintf(out, "  %-16s %12s  (%s)\n", "expected peak", mib(peak).c_str(), peak_phase.c_str());
}

std::string TrainMemoryPlan::sum_text() const {
    std::string s;
    auto add = [&](const char* name, size_t b) {
        if (!b) return;
        s += fmt::format("{}{} {}", s.empty() ? "" : " + ", name, mib(b));
    };
    if (peak_phase == "load") {
        add("program and data", base);
        add("weights", weights);
        // On CUDA the gradients are device memory (allocated there directly).
        if (request.device != Device::CUDA) add("gradients", model.role_bytes("grads"));
        add("mapped model files", model_files);
    } else if (peak_phase == "resume") {
        add("program and data", base);
        add("weights", weights);
        add("adapters", adapters);
        add("gradients", grads);
        add("optimizer", optimizer);
        add("activations", activations);
        add("mapped checkpoint", resume_files);
    } else if (peak_phase == "train") {
        add("program and data", base);
        add("weights", weights);
        add("adapters", adapters);
        add("gradients", grads);
        add("optimizer", optimizer);
        add("activations", activations);
        add("kernel scratch", scratch);
        add("batches and eval", batches + eval);
        add("runtime", runtime);
    } else {
        add("peak RSS during data preparation", peak);
    }
    return fmt::format("{} = peak {} ({})", s, mib(peak), peak_phase);
}

// ---- available memory ---------------------------------------------------------------------------
static bool read_first_number(const char* path, size_t* out) {
    std::ifstream f(path);
    std::string word;
    if (!(f >> word) || word.empty() || !std::isdigit(static_cast<unsigned char>(word[0]))) return false;
    *out = size_t(std::strtoull(word.c_str(), nullptr, 10));
    return true;
}

size_t memory_available_bytes(std::string* source) {
    size_t avail = 0;
    {
        std::ifstream f("/proc/meminfo");
        std::string key;
        size_t kb;
        std::string unit;
        while (f >> key >> kb) {
            std::getline(f, unit);
            if (key == "MemAvailable:") {
                avail = kb * 1024;
                break;
            }
        }
    }
    const size_t own = current_rss_bytes();
    std::string src = "MemAvailable";
    size_t result = avail ? avail + own : 0;
    // cgroup v2 limit (containers): what the group may still grow by, plus what we already hold.
    size_t max = 0, cur = 0;
    if (read_first_number("/sys/fs/cgroup/memory.max", &max) && read_first_number("/sys/fs/cgroup/memory.current", &cur)) {
        const size_t cg = (max > cur ? max - cur : 0) + own;
        if (!result || cg < result) result = cg, src = "cgroup memory.max";
    }
    if (source) *source = result ? src : "unknown";
    return result;
}

void check_memory_fits(const TrainMemoryPlan& plan, size_t limit, const std::string& source) {
    if (limit == 0 || plan.peak <= limit) return;
    const MemoryPlanRequest& r = plan.request;
    std::vector<std::string> tips;
    if (r.method == "full")
        tips.push_back(fmt::format("method: lora (gradients and optimizer state for the adapters only, instead of {})",
                                   mib(plan.grads + plan.optimizer)));
    if (r.method != "full" && r.base_dtype == DType::F32)
        tips.push_back(fmt::format("base_dtype: bf16 (halves the frozen weights, {})", mib(plan.weights)));
    if (r.method != "qlora") tips.push_back("method: qlora (a 4-bit base) once it is available");
    if (!r.gradient_checkpointing && plan.activations_other < plan.activations)
        tips.push_back(fmt::format("train.gradient_checkpointing: true (activations {} -> {})", mib(plan.activations),
                                   mib(plan.activations_other)));
    if (r.B > 1) tips.push_back(fmt::format("a smaller train.batch_size (now {}; raise grad_accum instead)", r.B));
    tips.push_back(fmt::format("a smaller data.max_length (rows of {} tokens now)", r.T));
    std::string t;
    for (const auto& s : tips) t += "\n  - " + s;
    fail("[memory] this run needs more memory than there is: {} > available {} ({}). Try:{}\n(train.memory_limit "
         "sets the limit yourself; tuner train --dry-run prints the whole plan)",
         plan.sum_text(), mib(limit), source, t);
}

void check_gpu_memory_fits(const TrainMemoryPlan& plan, size_t free_bytes, const std::string& device_name) {
    if (free_bytes == 0 || plan.gpu_peak <= free_bytes) return;
    fail("[memory] this run needs more GPU memory than {} has free: weights {} + adapters {} + gradients {} + "
         "optimizer {} + activations {} + workspace {} = {} > free {}. Try method: qlora, "
         "train.gradient_checkpointing: true, or a smaller batch_size / max_length (tuner train --dry-run prints "
         "the plan)",
         device_name, mib(plan.weights), mib(plan.adapters), mib(plan.grads), mib(plan.optimizer),
         mib(plan.activations), mib(plan.gpu_workspace + plan.gpu_cublas + plan.gpu_eval), mib(plan.gpu_peak),
         mib(free_bytes));
}

bool parse_byte_size(const std::string& text, size_t* bytes) {
    std::string s;
    for (char ch : text)
        if (!std::isspace(static_cast<unsigned char>(ch))) s += ch;
    if (s.empty()) return false;
    size_t i = 0;
    while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.' || s[i] == 'e' ||
                            s[i] == 'E' || ((s[i] == '+' || s[i] == '-') && i > 0 && (s[i - 1] == 'e' || s[i - 1] == 'E'))))
        i++;
    // "e" may also start no unit we know, so only digits, '.', and exponents are taken above.
    char* end = nullptr;
    const std::string num = s.substr(0, i);
    const double v = std::strtod(num.c_str(), &end);
    if (num.empty() || end != num.c_str() + num.size() || !std::isfinite(v) || v < 0) return false;
    std::string unit = s.substr(i);
    for (char& ch : unit) ch = char(std::tolower(static_cast<unsigned char>(ch)));
    double mult = 0;
    if (unit.empty() || unit == "b") mult = 1;
    else if (unit == "k" || unit == "kib") mult = 1024.0;
    else if (unit == "m" || unit == "mib") mult = 1024.0 * 1024;
    else if (unit == "g" || unit == "gib") mult = 1024.0 * 1024 * 1024;
    else if (unit == "t" || unit == "tib") mult = 1024.0 * 1024 * 1024 * 1024;
    else if (unit == "kb") mult = 1e3;
    else if (unit == "mb") mult = 1e6;
    else if (unit == "gb") mult = 1e9;
    else if (unit == "tb") mult = 1e12;
    else return false;
    *bytes = size_t(std::llround(v * mult));
    return true;
}

// The model files' pages resident at once while loading: the loader copies (or converts, or
// quantises) one tensor at a time straight from the mapping and then drops that tensor's pages
// (SafetensorsModel::release), so this is the largest tensor plus the f32 conversion chunk
// (quant/convert_weight, 4 MiB at most) and its NF4 absmax list, not the size of the files.
// Without readable weight files (a dry run on a folder that only has config.json) the largest
// tensor of the config is assumed stored in f32.
size_t resident_model_file_bytes(const std::string& dir, const ModelConfig& config) {
    size_t largest = 0;
    if (is_gguf_path(dir)) {
        GgufFile g(dir);  // header and tensor infos only
        for (const GgufTensor& t : g.tensors()) largest = std::max(largest, t.nbytes);
        return largest + (size_t(4) << 20) + largest / 64;
    }
    try {
        SafetensorsModel files(dir);  // headers only: no tensor page is touched
        for (const std::string& n : files.names()) largest = std::max(largest, files.get(n).nbytes);
    } catch (const Error&) {
        for (const auto& s : llama_tensor_specs(config)) largest = std::max(largest, spec_numel(s) * sizeof(float));
    }
    return largest + (size_t(4) << 20) + largest / 64;
}

}  // namespace tuner
