// tuner bench MODEL_DIR|PRESET [--seq T] [--steps N] [--batch B] [--threads N] [--json]
//                       [--device cpu|cuda [--cuda-matmul bf16|tf32|f32]]
//                       [--lora-r R [--lora-targets all-linear|q_proj,v_proj,...] [--lora-alpha A]
//                        [--lora-dropout P] [--base-dtype f32|bf16|nf4 [--no-double-quant]]]
//                       [--optimizer] [--checkpointing]
// Times a training step on random tokens: forward + backward, and with --optimizer also gradient
// clipping (global norm 1.0) and an AdamW update of every trained parameter, as `tuner train`
// does. Full fine-tuning, or with --lora-r LoRA adapters over a frozen base. Reports tokens/s,
// achieved GFLOP/s, this machine's measured f32 GEMM peak and the MFU (the optimizer's few
// FLOPs per parameter are not counted: MFU counts matmul and attention work only).
//
// With --base-dtype nf4 (QLoRA) the projections are quantised while loading. The memory plan of
// the same run (train/memory_plan.h) is printed beside the measured peak RSS. --checkpointing
// recomputes each layer in backward (one more forward: 2*N_matmul FLOPs per token more work,
// which the MFU below does not count: it counts useful FLOPs only).
//
// MODEL may be a preset name (tuner init-model's: llama-1b, llama-7b, ...): random weights made
// in memory, nothing read from disk. With --device cuda the step runs on the GPU (timed after
// cuda::synchronize), and MFU is counted against the GPU's matmul peak measured in the same
// process through the same cuBLASLt path (an 8192^3 GEMM with bf16 operands under the default
// cuda-matmul bf16; f32/tf32 otherwise).
//
// FLOPs per trained token (stated in the output):
// full fine-tuning:
//   6 * N_matmul                (forward 2N, backward 4N over every matmul weight, head included)
// + 6 * L * T * NH * HD         (causal attention: QK^T and PV, 2*T*NH*HD each per token, halved
//                                by the causal mask, times 3 for forward + backward)
// LoRA (the frozen base gets no weight gradients):
//   4 * N_matmul                (forward 2N + input gradient 2N)
// + 6 * N_lora                  (N_lora = r * (in + out) summed over the adapters: forward 2,
//                                backward 4: dB, d(xa), dA, dx)
// + 6 * L * T * NH * HD
#include <time.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <random>
#include <sstream>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/device_ops.h"
#include "backend/kernels.h"
#include "cli/device_option.h"
#include "cli/commands.h"
#include "core/arena.h"
#include "core/scratch.h"
#include "core/threads.h"
#include "io/gguf.h"
#include "models/gguf_model.h"
#include "models/llama.h"
#include "models/presets.h"
#include "train/adamw.h"
#include "train/memory_plan.h"

namespace tuner::cli {

using Clock = std::chrono::steady_clock;
static double seconds_since(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

// CPU time of the whole process (all threads). On a machine shared with other jobs the wall
// time of a step swings with their load; the CPU time it needs (run with
// OMP_WAIT_POLICY=PASSIVE so idle threads sleep instead of spinning) stays comparable.
static double process_cpu_seconds() {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// Best of a few runs of a large square f32 GEMM through the same kernel the model uses.
double measure_gemm_peak_gflops() {
    const int64_t n = 2048;
    std::vector<float> a(size_t(n * n)), w(size_t(n * n)), y(size_t(n * n));
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> d(-1, 1);
    for (auto& x : a) x = d(rng);
    for (auto& x : w) x = d(rng);
    WeightView wv{w.data(), DType::F32, n, n};
    cpu::matmul_forward(y.data(), a.data(), wv, nullptr, n, false);  // warm-up (primitive creation)
    double best = 1e30;
    for (int r = 0; r < 4; r++) {
        auto t0 = Clock::now();
        cpu::matmul_forward(y.data(), a.data(), wv, nullptr, n, false);
        best = std::min(best, seconds_since(t0));
    }
    return 2.0 * double(n) * double(n) * double(n) / best / 1e9;
}

// The GPU's matmul peak through our own path (cuda::matmul_forward: cuBLASLt, operands in the
// configured compute precision), best of 5 runs of an n^3 GEMM (8192: large enough to fill an
// H100/H200), in GFLOP/s.
static double measure_cuda_gemm_peak_gflops(int64_t n) {
    const DType wt = cuda::config().compute == cuda::MatmulCompute::BF16 ? DType::BF16 : DType::F32;
    const size_t x_bytes = size_t(n * n) * 4, w_bytes = size_t(n * n) * dtype_size(wt);
    cuda::DeviceArena mem("gemm peak", x_bytes * 2 + w_bytes + 4096);
    float* x = mem.alloc_f32(size_t(n * n), "x");
    float* y = mem.alloc_f32(size_t(n * n), "y");
    void* w = mem.alloc(w_bytes, "w");
    cuda::memset_device(x, 0, x_bytes);  // zeros: the GEMM's speed does not depend on values
    cuda::memset_device(w, 0, w_bytes);
    const WeightView wv{w, wt, n, n};
    cuda::reserve_workspace(std::max(cuda::workspace_bytes(), cuda::matmul_workspace_bytes(n, wv)));
    cuda::matmul_forward(y, x, wv, nullptr, n, false);  // warm-up (heuristic, plan cache)
    cuda::synchronize();
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        auto t0 = Clock::now();
        cuda::matmul_forward(y, x, wv, nullptr, n, false);
        cuda::synchronize();
        best = std::min(best, seconds_since(t0));
    }
    return 2.0 * double(n) * double(n) * double(n) / best / 1e9;
}

static bool is_preset_name(const std::string& name) {
    for (const auto& p : preset_names())
        if (p == name) return true;
    return false;
}

Command add_bench(CLI::App& app) {
    struct Opts {
        std::string model;
        int seq = 512, steps = 3, batch = 1, threads = 0;
        bool json = false, memory = false, optimizer = false, checkpointing = false, no_double_quant = false;
        int64_t lora_r = 0;
        std::string lora_targets = "all-linear", base_dtype = "f32";
        std::string device = "cpu", cuda_matmul = "bf16";
        int64_t peak_size = 8192;
        double lora_alpha = 16.0, lora_dropout = 0.1;
    };
    auto o = std::make_shared<Opts>();
    auto* sub = app.add_subcommand("bench", "time forward + backward of a training step (full or LoRA); tokens/s and MFU");
    sub->add_option("model", o->model, "Hugging Face model folder, .gguf file, or a preset name (random weights)")
        ->required();
    sub->add_option("--seq", o->seq, "sequence length T");
    sub->add_option("--batch", o->batch, "rows per step B");
    sub->add_option("--steps", o->steps, "timed steps (after one warm-up step)");
    sub->add_flag("--json", o->json, "print one JSON object");
    sub->add_flag("--memory", o->memory, "print the memory plan");
    sub->add_flag("--optimizer", o->optimizer,
                  "time whole training steps: also clip the gradient norm and take an AdamW step");
    sub->add_option("--lora-r", o->lora_r, "LoRA rank: time LoRA over a frozen base instead of full fine-tuning");
    sub->add_option("--lora-targets", o->lora_targets, "LoRA target modules, comma-separated (default all-linear)");
    sub->add_option("--lora-alpha", o->lora_alpha, "LoRA alpha (default 16)");
    sub->add_option("--lora-dropout", o->lora_dropout, "LoRA dropout (default 0.1)");
    sub->add_option("--base-dtype", o->base_dtype,
                    "storage of the frozen base with LoRA: f32, bf16 or nf4 (QLoRA) (default f32)");
    sub->add_flag("--no-double-quant", o->no_double_quant, "nf4 without double quantisation of the block scales");
    sub->add_flag("--checkpointing", o->checkpointing, "activation checkpointing (recompute each layer in backward)");
    add_threads_option(sub, &o->threads);
    add_device_option(sub, &o->device);
    sub->add_option("--cuda-matmul", o->cuda_matmul, "CUDA matmul precision: bf16 (default), tf32, f32")
        ->check(CLI::IsMember({"bf16", "tf32", "f32"}));
    sub->add_option("--peak-size", o->peak_size, "n of the n^3 GEMM that measures the GPU's matmul peak (default 8192)");
    return {sub, [o]() {
                set_num_threads(o->threads);
                const Device device = resolve_device(o->device, "bench");
                const bool on_cuda = device == Device::CUDA;
                if (on_cuda) {
                    cuda::Config cc = cuda::config();
                    cc.compute = cuda::matmul_compute_from_name(o->cuda_matmul);
                    cuda::set_config(cc);
                }
                const bool preset = !std::filesystem::exists(o->model) && is_preset_name(o->model);
                ModelOptions mo;
                mo.device = device;
                mo.activation_dtype = default_activation_dtype(device);
                mo.trainable = true;
                const bool lora = o->lora_r > 0;
                if (lora) {
                    LoraConfig lc;
                    lc.r = o->lora_r;
                    lc.lora_alpha = o->lora_alpha;
                    lc.lora_dropout = o->lora_dropout;
                    lc.target_modules.clear();
                    std::stringstream ss(o->lora_targets);
                    for (std::string t; std::getline(ss, t, ',');)
                        if (!t.empty()) lc.target_modules.push_back(t);
                    lc.validate("bench");
                    mo.lora = lc;
                    mo.trainable = false;
                    if (o->base_dtype == "bf16") mo.weight_dtype = DType::BF16;
                    else if (o->base_dtype == "nf4") mo.weight_dtype = DType::NF4;
                    else if (o->base_dtype != "f32") fail("[bench] --base-dtype {}: expected f32, bf16 or nf4", o->base_dtype);
                    mo.quant.nf4_double_quant = !o->no_double_quant;
                } else if (o->base_dtype != "f32") {
                    fail("[bench] --base-dtype needs --lora-r (full fine-tuning trains f32 weights)");
                }
                mo.gradient_checkpointing = o->checkpointing;
                const int B = o->batch, T = o->seq;
                // The plan of this run, made before loading like `tuner train` does.
                MemoryPlanRequest req;
                if (preset) {
                    req.model = preset_config(o->model);
                } else if (is_gguf_path(o->model)) {  // a GGUF model: weights planned in their GGUF types
                    req.gguf_path = o->model;
                    req.model = GgufModel(o->model).config();
                } else {
                    req.model = load_config(o->model + "/config.json");
                }
                req.method = lora ? (mo.weight_dtype == DType::NF4 ? "qlora" : "lora") : "full";
                req.base_dtype = mo.weight_dtype;
                req.quant = mo.quant;
                req.lora = mo.lora;
                req.B = B, req.T = T;
                req.gradient_checkpointing = o->checkpointing;
                req.threads = num_threads();
                req.model_file_bytes = preset ? 0 : resident_model_file_bytes(o->model, req.model);
                req.device = device;
                req.activation_dtype = mo.activation_dtype;
                req.base_rss = current_rss_bytes();
                req.peak_rss_so_far = peak_rss_bytes();
                TrainMemoryPlan mem = plan_training_memory(req);
                if (!o->optimizer) {  // no optimizer state in a forward + backward benchmark
                    mem.train_peak -= mem.optimizer;
                    mem.peak = std::max({mem.load_peak, mem.train_peak, mem.request.peak_rss_so_far});
                }
                const auto load_t0 = Clock::now();
                auto model = preset ? LlamaModel::random(req.model, mo, /*seed=*/0) : LlamaModel::load(o->model, mo);
                const double load_s = seconds_since(load_t0);
                const ModelConfig& c = model->config;
                model->prepare(B, T, true);

                std::vector<int32_t> tokens(size_t(B) * size_t(T)), targets(tokens.size());
                std::mt19937 rng(0);
                std::uniform_int_distribution<int32_t> tok(0, int32_t(c.vocab_size - 1));
                for (auto& t : tokens) t = tok(rng);
                for (size_t i = 0; i < tokens.size(); i++)
                    targets[i] = (i + 1) % size_t(T) == 0 ? -100 : tokens[i + 1];
                Batch b;
                b.B = B, b.T = T, b.tokens = tokens.data(), b.targets = targets.data();

                std::unique_ptr<AdamW> opt;
                if (o->optimizer) {
                    AdamWConfig ac;
                    ac.weight_decay = 0.0;
                    opt = std::make_unique<AdamW>(model->trainable_params(), ac);
                }
                auto train_step = [&](float grad_scale, int64_t* count) {
                    double l = model->forward_backward(b, grad_scale, count);
                    if (opt) {
                        clip_grad_norm(opt->params(), 1.0);
                        opt->step(1e-5);
                    }
                    if (on_cuda) cuda::synchronize();  // the step's kernels are done before the clock stops
                    return l;
                };
                int64_t count = 0;
                model->zero_grad();
                double loss = train_step(1.0f, &count);  // warm-up
                double best = 1e30, total = 0, best_cpu = 1e30;
                for (int s = 0; s < o->steps; s++) {
                    model->zero_grad();
                    auto t0 = Clock::now();
                    const double c0 = process_cpu_seconds();
                    loss = train_step(1.0f / float(count), &count);
                    double dt = seconds_since(t0);
                    best_cpu = std::min(best_cpu, process_cpu_seconds() - c0);
                    best = std::min(best, dt);
                    total += dt;
                }
                const double mean = total / std::max(1, o->steps);
                const double QD = double(c.num_heads * c.head_dim), KVD = double(c.num_kv_heads * c.head_dim);
                const double C = double(c.hidden_size), F = double(c.intermediate_size), V = double(c.vocab_size);
                const double L = double(c.num_layers);
                const double n_matmul = L * (C * QD + 2 * C * KVD + QD * C + 3 * C * F) + V * C;
                double n_lora = 0;
                for (LoraAdapter* ad : model->adapters())
                    n_lora += double(ad->A.value.numel() + ad->B.value.numel());
                const double flops_per_token = (lora ? 4.0 * n_matmul + 6.0 * n_lora : 6.0 * n_matmul) +
                                               6.0 * L * double(T) * QD;
                const std::string formula =
                    lora ? "4*N_matmul + 6*N_lora + 6*L*T*NH*HD" : "6*N_matmul + 6*L*T*NH*HD";
                std::string method =
                    lora ? fmt::format("lora r={} ({}), {} base, dropout {}", o->lora_r, o->lora_targets, o->base_dtype,
                                       o->lora_dropout)
                         : std::string("full");
                method += o->optimizer ? ", step = fwd + bwd + clip + AdamW" : ", step = fwd + bwd";
                const double tokens_per_step = double(B) * double(T);
                const double tps = tokens_per_step / mean;
                const double gflops = flops_per_token * tps / 1e9;
                // Peak RSS of the run before the GEMM-peak measurement adds its three 16 MiB matrices.
                const size_t rss_bytes = peak_rss_bytes();
                const double rss_mb = double(rss_bytes) / (1024.0 * 1024.0);
                size_t gpu_free = 0, gpu_total = 0;
                if (on_cuda) cuda::memory_info(&gpu_free, &gpu_total);
                const double gpu_used_mb = double(gpu_total - gpu_free) / (1024.0 * 1024.0);
                const double peak = on_cuda ? measure_cuda_gemm_peak_gflops(o->peak_size) : measure_gemm_peak_gflops();
                const std::string peak_what =
                    on_cuda ? fmt::format("CUDA {} GEMM peak (measured, {}^3, cuBLASLt)", o->cuda_matmul, o->peak_size)
                            : std::string("f32 GEMM peak (measured, 2048^3)");
                const double plan_mb = double(model->memory_plan().total_bytes()) / (1024.0 * 1024.0);
                const double scratch_mb = double(scratch_high_water()) / (1024.0 * 1024.0);
                if (o->memory) model->memory_plan().print(stderr, true);
                // What the GPU step ran on: matmul compute, activation storage, attention kernels.
                const std::string gpu_kernels =
                    on_cuda ? fmt::format("matmul {}, activations {}, attention {}", o->cuda_matmul,
                                          mo.activation_dtype == DType::BF16 ? "bf16" : "f32",
                                          o->cuda_matmul != "bf16" ? "f32 kernels"
                                          : cuda::config().attention == cuda::AttentionKernels::MMA ? "mma.sync"
                                                                                                     : "wmma")
                            : std::string();
                if (o->json) {
                    std::printf(
                        "{\"tokens_per_s\": %.2f, \"step_s\": %.4f, \"best_step_s\": %.4f, \"gflops\": %.2f, "
                        "\"peak_gflops\": %.2f, \"mfu\": %.4f, \"peak_rss_mb\": %.1f, \"plan_mb\": %.1f, "
                        "\"scratch_mb\": %.1f, \"threads\": %d, \"batch\": %d, \"seq\": %d, \"params\": %lld, "
                        "\"loss\": %.4f, \"flops_formula\": \"%s\", \"method\": \"%s\", \"trainable_params\": %lld, "
                        "\"best_step_cpu_s\": %.4f, \"tokens_per_cpu_s\": %.2f, \"load_s\": %.2f, "
                        "\"plan_peak_mb\": %.1f, \"plan_peak_phase\": \"%s\", \"device\": \"%s\", "
                        "\"gpu_used_mb\": %.1f, \"gpu_plan_mb\": %.1f, \"gpu_kernels\": \"%s\"}\n",
                        tps, mean, best, gflops, peak, gflops / peak, rss_mb, plan_mb, scratch_mb, num_threads(), B, T,
                        (long long)c.num_params(), loss / double(count), formula.c_str(), method.c_str(),
                        (long long)model->num_trainable_params(), best_cpu, tokens_per_step / best_cpu, load_s,
                        double(mem.peak) / (1024.0 * 1024.0), mem.peak_phase.c_str(),
                        on_cuda ? cuda::device_summary().c_str() : "cpu", gpu_used_mb,
                        double(mem.gpu_peak) / (1024.0 * 1024.0), gpu_kernels.c_str());
                } else {
                    std::printf("model %s: %.1fM parameters, B=%d T=%d, %d threads\n", o->model.c_str(),
                                double(c.num_params()) / 1e6, B, T, num_threads());
                    std::printf("training: %s, %.2fM trainable parameters\n", method.c_str(),
                                double(model->num_trainable_params()) / 1e6);
                    std::printf("step: mean %.3f s, best %.3f s over %d steps\n", mean, best,
                                o->steps);
                    std::printf("throughput: %.1f tokens/s, %.1f GFLOP/s\n", tps, gflops);
                    std::printf("CPU time: best %.3f s per step (all threads) = %.1f tokens per CPU-second\n", best_cpu,
                                tokens_per_step / best_cpu);
                    std::printf("FLOPs per token: %s = %.3f GFLOP (N_matmul = %.1fM, N_lora = %.2fM)\n",
                                formula.c_str(), flops_per_token / 1e9, n_matmul / 1e6, n_lora / 1e6);
                    std::printf("%s: %.1f GFLOP/s  ->  MFU %.1f%%\n", peak_what.c_str(), peak,
                                100.0 * gflops / peak);
                    if (on_cuda) {
                        std::printf("GPU memory: %.1f MiB in use on the device (CUDA context included), plan %.1f MiB\n",
                                    gpu_used_mb, double(mem.gpu_peak) / (1024.0 * 1024.0));
                        std::printf("GPU kernels: %s\n", gpu_kernels.c_str());
                    }
                    std::printf("memory: model arenas %.1f MiB + kernel scratch %.1f MiB; peak RSS %.1f MiB; "
                                "planned peak %.1f MiB (%s), measured / planned = %.3f\n",
                                plan_mb, scratch_mb, rss_mb, double(mem.peak) / (1024.0 * 1024.0),
                                mem.peak_phase.c_str(), double(rss_bytes) / double(std::max<size_t>(mem.peak, 1)));
                    std::printf("load: %.1f s\n", load_s);
                }
                return 0;
            }};
}

}  // namespace tuner::cli
