// tuner bench MODEL_DIR [--seq T] [--steps N] [--batch B] [--threads N] [--json]
// Times forward + backward of a full fine-tuning step (no optimizer yet) on random tokens and
// reports tokens/s, achieved GFLOP/s, this machine's measured f32 GEMM peak and the MFU.
//
// FLOPs per trained token (stated in the output):
//   6 * N_matmul                (forward 2N, backward 4N over every matmul weight, head included)
// + 6 * L * T * NH * HD         (causal attention: QK^T and PV, 2*T*NH*HD each per token, halved
//                                by the causal mask, times 3 for forward + backward)
#include <chrono>
#include <memory>
#include <random>

#include "backend/kernels.h"
#include "cli/commands.h"
#include "core/arena.h"
#include "core/scratch.h"
#include "core/threads.h"
#include "models/llama.h"

namespace tuner::cli {

using Clock = std::chrono::steady_clock;
static double seconds_since(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
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

Command add_bench(CLI::App& app) {
    struct Opts {
        std::string model;
        int seq = 512, steps = 3, batch = 1, threads = 0;
        bool json = false, memory = false;
    };
    auto o = std::make_shared<Opts>();
    auto* sub = app.add_subcommand("bench", "time forward + backward of a full fine-tuning step; tokens/s and MFU");
    sub->add_option("model", o->model, "Hugging Face model folder")->required();
    sub->add_option("--seq", o->seq, "sequence length T");
    sub->add_option("--batch", o->batch, "rows per step B");
    sub->add_option("--steps", o->steps, "timed steps (after one warm-up step)");
    sub->add_flag("--json", o->json, "print one JSON object");
    sub->add_flag("--memory", o->memory, "print the memory plan");
    add_threads_option(sub, &o->threads);
    return {sub, [o]() {
                set_num_threads(o->threads);
                ModelOptions mo;
                mo.trainable = true;
                auto model = LlamaModel::load(o->model, mo);
                const ModelConfig& c = model->config;
                const int B = o->batch, T = o->seq;
                model->prepare(B, T, true);

                std::vector<int32_t> tokens(size_t(B) * size_t(T)), targets(tokens.size());
                std::mt19937 rng(0);
                std::uniform_int_distribution<int32_t> tok(0, int32_t(c.vocab_size - 1));
                for (auto& t : tokens) t = tok(rng);
                for (size_t i = 0; i < tokens.size(); i++)
                    targets[i] = (i + 1) % size_t(T) == 0 ? -100 : tokens[i + 1];
                Batch b;
                b.B = B, b.T = T, b.tokens = tokens.data(), b.targets = targets.data();

                int64_t count = 0;
                model->zero_grad();
                double loss = model->forward_backward(b, 1.0f, &count);  // warm-up
                double best = 1e30, total = 0;
                for (int s = 0; s < o->steps; s++) {
                    model->zero_grad();
                    auto t0 = Clock::now();
                    loss = model->forward_backward(b, 1.0f / float(count), &count);
                    double dt = seconds_since(t0);
                    best = std::min(best, dt);
                    total += dt;
                }
                const double mean = total / std::max(1, o->steps);
                const double QD = double(c.num_heads * c.head_dim), KVD = double(c.num_kv_heads * c.head_dim);
                const double C = double(c.hidden_size), F = double(c.intermediate_size), V = double(c.vocab_size);
                const double L = double(c.num_layers);
                const double n_matmul = L * (C * QD + 2 * C * KVD + QD * C + 3 * C * F) + V * C;
                const double flops_per_token = 6.0 * n_matmul + 6.0 * L * double(T) * QD;
                const double tokens_per_step = double(B) * double(T);
                const double tps = tokens_per_step / mean;
                const double gflops = flops_per_token * tps / 1e9;
                const double peak = measure_gemm_peak_gflops();
                const double rss_mb = double(peak_rss_bytes()) / (1024.0 * 1024.0);
                const double plan_mb = double(model->memory_plan().total_bytes()) / (1024.0 * 1024.0);
                const double scratch_mb = double(scratch_high_water()) / (1024.0 * 1024.0);
                if (o->memory) model->memory_plan().print(stderr, true);
                if (o->json) {
                    std::printf(
                        "{\"tokens_per_s\": %.2f, \"step_s\": %.4f, \"best_step_s\": %.4f, \"gflops\": %.2f, "
                        "\"peak_gflops\": %.2f, \"mfu\": %.4f, \"peak_rss_mb\": %.1f, \"plan_mb\": %.1f, "
                        "\"scratch_mb\": %.1f, \"threads\": %d, \"batch\": %d, \"seq\": %d, \"params\": %lld, "
                        "\"loss\": %.4f, \"flops_formula\": \"6*N_matmul + 6*L*T*NH*HD\"}\n",
                        tps, mean, best, gflops, peak, gflops / peak, rss_mb, plan_mb, scratch_mb, num_threads(), B, T,
                        (long long)c.num_params(), loss / double(count));
                } else {
                    std::printf("model %s: %.1fM parameters, B=%d T=%d, %d threads\n", o->model.c_str(),
                                double(c.num_params()) / 1e6, B, T, num_threads());
                    std::printf("step (forward + backward): mean %.3f s, best %.3f s over %d steps\n", mean, best,
                                o->steps);
                    std::printf("throughput: %.1f tokens/s, %.1f GFLOP/s\n", tps, gflops);
                    std::printf("FLOPs per token: 6*N_matmul + 6*L*T*NH*HD = %.3f GFLOP (N_matmul = %.1fM)\n",
                                flops_per_token / 1e9, n_matmul / 1e6);
                    std::printf("f32 GEMM peak (measured, 2048^3): %.1f GFLOP/s  ->  MFU %.1f%%\n", peak,
                                100.0 * gflops / peak);
                    std::printf("memory: plan %.1f MiB + kernel scratch %.1f MiB; peak RSS %.1f MiB\n", plan_mb,
                                scratch_mb, rss_mb);
                }
                return 0;
            }};
}

}  // namespace tuner::cli
