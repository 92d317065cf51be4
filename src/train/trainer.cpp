#include "train/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/device_ops.h"
#include "core/arena.h"
#include "core/scratch.h"
#include "core/threads.h"
#include "data/dataset.h"
#include "infer/generate.h"
#include "infer/prompt.h"
#include "infer/sampling.h"
#include "io/gguf.h"
#include "io/peft.h"
#include "io/safetensors.h"
#include "io/tokenizer_files.h"
#include "models/gguf_export.h"
#include "models/gguf_model.h"
#include "models/llama.h"
#include "models/llama_tensors.h"
#include "tokenizer/tokenizer.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/memory_plan.h"
#include "train/metrics.h"
#include "train/signals.h"

namespace tuner {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string format_duration(double s) {
    if (!std::isfinite(s) || s < 0) return "--:--";
    int64_t t = int64_t(s + 0.5);
    if (t >= 3600) return fmt::format("{}:{:02}:{:02}", t / 3600, (t / 60) % 60, t % 60);
    return fmt::format("{:02}:{:02}", t / 60, t % 60);
}

// Mean loss over every trained token of a dataset, adapters on, dropout off.
double evaluate(LlamaModel& model, const Dataset& ds, int64_t batch_size) {
    if (ds.empty()) return -1;
    std::vector<int64_t> rows(size_t(ds.num_rows()));
    for (size_t i = 0; i < rows.size(); i++) rows[i] = int64_t(i);
    BatchData b;
    double sum = 0;
    int64_t count = 0;
    for (size_t i = 0; i < rows.size(); i += size_t(batch_size)) {
        int64_t n = std::min<int64_t>(batch_size, int64_t(rows.size() - i));
        ds.make_batch(rows.data() + i, n, &b);
        int64_t c = 0;
        sum += model.forward_loss(b.batch(), &c);
        count += c;
    }
    return count > 0 ? sum / double(count) : -1;
}

// Generations for eval.prompts: rendered as training rendered them, greedy, up to max_new tokens,
// with `cache` (made before the step loop, max_T = T + max_new as the memory plan counts it). A
// prompt longer than T gets a cache of its own for that call (outside the plan).
std::string sample_generations(LlamaModel& model, NextTokenLogits& cache, const Tokenizer& tok, const Datasets& data,
                               const std::vector<std::string>& prompts, int64_t max_new, int64_t step) {
    std::string md = fmt::format("## step {}\n\n", step);
    SamplingParams greedy;
    greedy.temperature = 0;
    const ChatTemplate* tmpl = data.chat_template.tmpl;
    for (const auto& prompt : prompts) {
        auto ids = render_prompt(tok, tmpl, data.encode, "", prompt);
        const std::vector<std::string> stops = tmpl ? tmpl->stop_words : std::vector<std::string>{};
        const bool fits = int64_t(ids.size()) + max_new <= cache.max_T();
        std::string out = fits ? generate_text(cache, tok, ids, greedy, int(max_new), stops)
                               : generate_text(model, tok, ids, greedy, int(max_new), stops);
        md += fmt::format("**prompt:** {}\n\n**output:** {}\n\n", prompt, out);
    }
    return md;
}

void append_text(const fs::path& path, const std::string& text) {
    std::ofstream f(path, std::ios::app | std::ios::binary);
    f << text;
}

// The latest checkpoint in output_dir, or "".
std::string latest_checkpoint(const std::string& output_dir) {
    auto all = list_checkpoints(output_dir);
    return all.empty() ? "" : all.back();
}

// Bytes of the files a loader maps: every file with extension ext in dir (a model folder's
// safetensors shards, or a checkpoint's trainable and optimizer files).
size_t file_bytes(const std::string& dir, const std::string& ext) {
    size_t n = 0;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec))
        if (e.is_regular_file(ec) && e.path().extension() == ext) n += size_t(e.file_size(ec));
    return n;
}

// The memory plan of this run from the config files alone (config.json, adapter_config.json).
TrainMemoryPlan plan_run_memory(const TrainConfig& cfg, int B, int T, const std::string& resume) {
    const TrainSettings& s = cfg.train;
    MemoryPlanRequest r;
    if (is_gguf_path(cfg.model)) {
        r.gguf_path = cfg.model;
        r.model = GgufModel(cfg.model).config();
    } else {
        r.model = load_config((fs::path(cfg.model) / "config.json").string());
    }
    r.method = cfg.method;
    r.base_dtype = cfg.base_dtype == "bf16" ? DType::BF16 : cfg.base_dtype == "nf4" ? DType::NF4 : DType::F32;
    r.quant.nf4_double_quant = cfg.double_quant;
    if (cfg.method != "full") {
        r.lora = cfg.lora;
        if (!cfg.lora_init_adapter.empty()) {
            LoraConfig lc = read_peft_adapter_config(cfg.lora_init_adapter);
            lc.lora_dropout = cfg.lora.lora_dropout;
            r.lora = lc;
        }
    }
    r.B = B, r.T = T;
    r.gradient_checkpointing = s.gradient_checkpointing;
    r.grad_accum = s.grad_accum;
    r.threads = num_threads();
    r.eval_max_new_tokens = cfg.eval_prompts.empty() ? 0 : cfg.eval_max_new_tokens;
    r.model_file_bytes = resident_model_file_bytes(cfg.model, r.model);
    if (!resume.empty()) r.resume_file_bytes = file_bytes(resume, ".safetensors");
    r.base_rss = current_rss_bytes();
    r.peak_rss_so_far = peak_rss_bytes();
    r.device = cfg.device == "cuda" ? Device::CUDA : Device::CPU;
    r.activation_dtype = cfg.activation_dtype == "bf16" ? DType::BF16 : DType::F32;
    return plan_training_memory(r);
}

// The plan's model rows come from the functions the model allocates with; say so if a loader
// (an adapter whose modules differ from its config, a future format) allocated otherwise.
void check_plan_against_model(const TrainMemoryPlan& mem, const LlamaModel& model, const AdamW& optimizer) {
    const MemoryPlan& got = model.memory_plan();
    const size_t acts = got.role_bytes("activations") + got.role_bytes("activation grads") +
                        got.role_bytes("adapter activations");
    const size_t grads = got.role_bytes("grads") + got.role_bytes("adapter grads");
    if (got.role_bytes("weights") != mem.weights || got.role_bytes("adapters") != mem.adapters ||
        grads != mem.grads || acts != mem.activations || optimizer.state_bytes() != mem.optimizer)
        std::printf("note: the model allocated weights %s, adapters %s, gradients %s, activations %s, optimizer %s "
                    "(the plan above differs)\n",
                    format_bytes(got.role_bytes("weights")).c_str(), format_bytes(got.role_bytes("adapters")).c_str(),
                    format_bytes(grads).c_str(), format_bytes(acts).c_str(),
                    format_bytes(optimizer.state_bytes()).c_str());
}

// Measured against planned, at the end of a run.
// The progress line's memory: this process's RSS, and on CUDA the device memory in use (all of the
// GPU's, as cudaMemGetInfo sees it: the CUDA context and other processes included).
std::string memory_now(bool on_cuda) {
    if (!on_cuda) return format_bytes(current_rss_bytes());
    size_t free = 0, total = 0;
    cuda::memory_info(&free, &total);
    return fmt::format("{} (GPU {})", format_bytes(current_rss_bytes()), format_bytes(total - free));
}

void report_memory(const TrainMemoryPlan& mem) {
    const size_t peak = peak_rss_bytes();
    auto mib = [](size_t b) { return double(b) / double(1 << 20); };
    if (mem.request.device == Device::CUDA) {
        size_t free = 0, total = 0;
        cuda::memory_info(&free, &total);
        std::printf("GPU memory: %.1f MiB in use on the device now (all processes, CUDA context included), plan %.1f MiB "
                    "of arenas; host peak RSS %.1f MiB\n",
                    mib(total - free), mib(mem.gpu_peak), mib(peak));
        return;
    }
    std::printf("memory: peak RSS %.1f MiB, plan %.1f MiB (%s; measured / planned = %.3f); kernel scratch %.1f MiB, "
                "plan %.1f MiB\n",
                mib(peak), mib(mem.peak), mem.peak_phase.c_str(), mem.peak ? double(peak) / double(mem.peak) : 0.0,
                mib(scratch_high_water()), mib(mem.scratch));
}

}  // namespace

TrainResult run_training(const TrainConfig& cfg, const TrainOptions& opt) {
    TrainResult result;
    set_num_threads(cfg.threads);
    const bool on_cuda = cfg.device == "cuda";
    if (on_cuda) {
        // Before anything is read: a missing GPU (or a CPU-only build) is the first thing to say.
        std::string why;
        if (cuda::available(&why)) std::printf("device: %s\n", cuda::device_summary().c_str());
        else if (opt.dry_run) std::printf("device: cuda, but %s: planning only\n", why.c_str());
        else fail("[train] {}: device: cuda, but {}", cfg.file.file, why);
        cuda::Config cc = cuda::config();
        cc.compute = cuda::matmul_compute_from_name(cfg.cuda_matmul);
        cuda::set_config(cc);
        std::printf("cuda matmuls: %s\n", cfg.cuda_matmul.c_str());
    }
    if (opt.install_signals) install_stop_handlers();
    const auto t_start = Clock::now();
    const TrainSettings& s = cfg.train;

    // ---- data and tokenizer -------------------------------------------------------------------
    const bool gguf = is_gguf_path(cfg.model);
    if (gguf ? !fs::is_regular_file(cfg.model) : !fs::is_directory(cfg.model))
        fail("[train] {}: model {} not found ({}: model)", cfg.model, gguf ? "file" : "folder", cfg.file.file);
    DataConfig dc = data_config_from_yaml(ConfigView(cfg.file).child("data"));
    const std::string tok_path = tokenizer_path_for(dc, cfg.model);
    auto tok = Tokenizer::load(tok_path);
    DataBuildOptions dbo;
    dbo.model_dir = cfg.model;
    dbo.seed = s.seed;
    Datasets data = build_datasets(dc, *tok, dbo);
    if (data.train.empty()) fail("[train] {}: the training data has no rows", cfg.file.file);
    const DataStats& st = data.train.stats;
    std::printf("data: %lld samples, %lld tokens (%lld trained) per epoch in %lld rows of %lld%s; template %s\n",
                (long long)st.epoch_samples, (long long)st.epoch_tokens, (long long)st.epoch_trained_tokens,
                (long long)data.train.num_rows(), (long long)data.train.max_length,
                data.train.packed ? " (packed)" : "",
                data.chat_template.tmpl ? data.chat_template.tmpl->name.c_str() : "none (text)");
    if (st.epoch_trained_tokens == 0) fail("[train] {}: the training data has no trained tokens", cfg.file.file);
    const int B = int(s.batch_size), T = int(data.train.max_length);

    // ---- memory plan, before any weight is loaded --------------------------------------------
    std::string resume = !opt.resume.empty() ? opt.resume : cfg.resume;
    if (resume == "auto") resume = latest_checkpoint(cfg.output_dir);
    const TrainMemoryPlan mem = plan_run_memory(cfg, B, T, resume);
    mem.print(stdout);
    {
        std::string source = "train.memory_limit";
        size_t limit = s.memory_limit;
        if (!limit) limit = memory_available_bytes(&source);
        if (!s.memory_check) limit = 0, source = "train.memory_limit: off";
        if (opt.dry_run) {
            // A dry run reports whether the plan fits instead of failing.
            try {
                check_memory_fits(mem, limit, source);
                if (limit) std::printf("fits: peak %s <= available %s (%s)\n", format_bytes(mem.peak).c_str(),
                                       format_bytes(limit).c_str(), source.c_str());
            } catch (const Error& e) {
                std::printf("does not fit: %s\n", e.what());
            }
            if (on_cuda && cuda::available()) {
                size_t free = 0, total = 0;
                cuda::memory_info(&free, &total);
                try {
                    check_gpu_memory_fits(mem, free, cuda::device_summary());
                    std::printf("fits on the GPU: %s <= free %s\n", format_bytes(mem.gpu_peak).c_str(),
                                format_bytes(free).c_str());
                } catch (const Error& e) {
                    std::printf("does not fit: %s\n", e.what());
                }
            }
            std::printf("dry run: stopping before loading the weights\n");
            return result;
        }
        check_memory_fits(mem, limit, source);
        if (on_cuda) {
            size_t free = 0, total = 0;
            cuda::memory_info(&free, &total);
            check_gpu_memory_fits(mem, free, cuda::device_summary());
        }
    }

    // ---- model ----------------------------------------------------------------------------------
    ModelOptions mo;
    if (cfg.method == "full") {
        mo.trainable = true;
    } else {
        mo.trainable = false;
        mo.weight_dtype = cfg.base_dtype == "bf16" ? DType::BF16 : cfg.base_dtype == "nf4" ? DType::NF4 : DType::F32;
        mo.quant.nf4_double_quant = cfg.double_quant;
    }
    mo.gradient_checkpointing = s.gradient_checkpointing;
    mo.device = on_cuda ? Device::CUDA : Device::CPU;
    mo.activation_dtype = cfg.activation_dtype == "bf16" ? DType::BF16 : DType::F32;
    auto model = LlamaModel::load(cfg.model, mo);
    if (model->config.vocab_size < tok->vocab_size())
        fail("[train] {}: the tokenizer has {} tokens but the model's vocab_size is {}", cfg.model, tok->vocab_size(),
             model->config.vocab_size);
    if (cfg.uses_lora()) {
        if (!cfg.lora_init_adapter.empty()) {
            LoraConfig lc = load_peft_adapter(*model, cfg.lora_init_adapter, cfg.lora.lora_dropout, s.seed);
            std::printf("lora: starting from %s (r=%lld)\n", cfg.lora_init_adapter.c_str(), (long long)lc.r);
        } else {
            cfg.lora.validate(cfg.file.file);
            model->enable_lora(cfg.lora);
        }
    }
    model->prepare(B, T, true);
    std::vector<Param*> params = model->trainable_params();
    AdamWConfig ac;
    ac.lr = s.lr, ac.beta1 = s.beta1, ac.beta2 = s.beta2, ac.eps = s.eps, ac.weight_decay = s.weight_decay;
    AdamW optimizer(params, ac);

    DataLoader probe(data.train, B);
    const int64_t batches_per_epoch = probe.batches_per_epoch();
    const int64_t steps_per_epoch = (batches_per_epoch + s.grad_accum - 1) / s.grad_accum;
    const int64_t total_steps = s.max_steps > 0 ? s.max_steps : s.epochs * steps_per_epoch;
    Schedule sched;
    sched.type = s.schedule;
    sched.lr = s.lr;
    sched.total_steps = total_steps;
    sched.warmup_steps = s.warmup_steps >= 0 ? s.warmup_steps : int64_t(std::ceil(s.warmup_ratio * double(total_steps)));
    result.total_steps = total_steps;

    const int64_t n_trained = [&] {
        int64_t n = 0;
        for (const Param* p : params) n += p->value.numel();
        return n;
    }();
    std::printf("model: %s, %.2fM parameters, method %s, %.3fM trained (%.2f%%)\n", cfg.model.c_str(),
                double(model->config.num_params()) / 1e6, cfg.method.c_str(), double(n_trained) / 1e6,
                100.0 * double(n_trained) / double(model->config.num_params()));
    std::printf("steps: %lld (%lld per epoch; %d rows x %d tokens x %lld micro-batches per step), warm-up %lld\n",
                (long long)total_steps, (long long)steps_per_epoch, B, T, (long long)s.grad_accum,
                (long long)sched.warmup_steps);
    check_plan_against_model(mem, *model, optimizer);

    // ---- resume ---------------------------------------------------------------------------------
    fs::create_directories(cfg.output_dir);
    int64_t step = 0;
    DataPosition pos;
    if (!resume.empty()) {
        json state = load_checkpoint(resume, params, optimizer);
        step = state.value("step", int64_t(0));
        pos.epoch = state["data_position"].value("epoch", int64_t(0));
        pos.row = state["data_position"].value("row", int64_t(0));
        std::printf("resumed from %s at step %lld\n", resume.c_str(), (long long)step);
        // Drop metrics of steps after the checkpoint (written before an interruption).
        auto old = read_metrics((fs::path(cfg.output_dir) / "metrics.jsonl").string());
        MetricsLog rewrite((fs::path(cfg.output_dir) / "metrics.jsonl").string(), false);
        for (const auto& r : old)
            if (r.value("step", int64_t(0)) <= step) rewrite.write(r);
    }
    MetricsLog metrics((fs::path(cfg.output_dir) / "metrics.jsonl").string(), !resume.empty());
    {
        std::ofstream f(fs::path(cfg.output_dir) / "config.yaml");
        f << cfg.resolved_yaml();
    }
    const bool tty = isatty(STDOUT_FILENO);
    DataLoader loader(data.train, B, pos);
    std::vector<BatchData> micro(size_t(s.grad_accum));

    if (step == 0 && !data.eval.empty()) {
        result.eval_loss_before = evaluate(*model, data.eval, B);
        std::printf("validation loss before training: %.4f\n", result.eval_loss_before);
    }
    const fs::path samples_md = fs::path(cfg.output_dir) / "samples.md";
    // Everything the loop needs is allocated before it: the eval prompts' KV cache, and (one
    // gradient norm over zero gradients) the GPU's partial-sum buffer of the clipping norm.
    std::unique_ptr<NextTokenLogits> eval_cache;
    if (!cfg.eval_prompts.empty() && cfg.eval_max_new_tokens > 0)
        eval_cache = std::make_unique<NextTokenLogits>(
            *model, int(std::min<int64_t>(int64_t(T) + cfg.eval_max_new_tokens,
                                          std::max<int64_t>(model->config.max_position_embeddings, 1))));
    if (on_cuda) (void)grad_global_norm(params);
    auto t_train = Clock::now();
    int64_t tokens_run = 0;
    const int64_t first_step = step;
    for (; step < total_steps; step++) {
        auto t0 = Clock::now();
        int64_t trained = 0, real = 0;
        for (auto& m : micro) {
            loader.next(&m);
            trained += m.trained_tokens;
            real += m.real_tokens;
        }
        // The loss of a step is the mean over all its trained tokens, however they fall into
        // micro-batches: each micro-batch's sum is scaled by 1 / (trained tokens of the step).
        const float scale = trained > 0 ? 1.0f / float(trained) : 0.0f;
        model->zero_grad();
        double loss_sum = 0;
        for (size_t k = 0; k < micro.size(); k++) {
            model->set_lora_dropout_counter(uint64_t(step) * uint64_t(s.grad_accum) + k);
            int64_t c = 0;
            loss_sum += model->forward_backward(micro[k].batch(), scale, &c);
        }
        const double loss = trained > 0 ? loss_sum / double(trained) : 0.0;
        const double grad_norm = clip_grad_norm(params, s.max_grad_norm);
        const double lr = sched.lr_at(step);
        optimizer.step(lr);
        const double dt = seconds_since(t0);
        tokens_run += real;
        result.last_loss = loss;
        const int64_t done = step + 1;

        json rec = {{"step", done},          {"loss", loss},
                    {"lr", lr},              {"grad_norm", grad_norm},
                    {"tokens", real},        {"trained_tokens", trained},
                    {"tokens_per_s", double(real) / dt}, {"epoch", double(done) / double(steps_per_epoch)},
                    {"elapsed_s", seconds_since(t_start)}};
        const bool last = done == total_steps;
        if (!data.eval.empty() && ((cfg.eval_every > 0 && done % cfg.eval_every == 0) || last)) {
            double el = evaluate(*model, data.eval, B);
            rec["eval_loss"] = el;
            result.eval_loss_after = el;
        }
        metrics.write(rec);

        const double elapsed = seconds_since(t_train);
        const double rate = double(done - first_step) / elapsed;
        const double eta = double(total_steps - done) / rate;
        const std::string line = fmt::format(
            "step {}/{} | loss {:.4f}{} | lr {:.3g} | grad {:.3g} | {:.0f} tok/s | {} < {} | mem {}", done,
            total_steps, loss, rec.contains("eval_loss") ? fmt::format(" (val {:.4f})", rec["eval_loss"].get<double>()) : "",
            lr, grad_norm, double(tokens_run) / elapsed, format_duration(elapsed), format_duration(eta),
            memory_now(on_cuda));
        if (tty) std::printf("\r\033[K%s%s", line.c_str(), last || rec.contains("eval_loss") ? "\n" : "");
        else if (done % std::max<int64_t>(1, s.log_every) == 0 || last) std::printf("%s\n", line.c_str());
        std::fflush(stdout);

        if (eval_cache && ((cfg.eval_every > 0 && done % cfg.eval_every == 0) || last)) {
            append_text(samples_md,
                        sample_generations(*model, *eval_cache, *tok, data, cfg.eval_prompts, cfg.eval_max_new_tokens, done));
            model->prepare(B, T, true);  // generation planned inference buffers: back to training
        }

        const bool stop = stop_requested();
        if ((cfg.save_every > 0 && done % cfg.save_every == 0 && !last) || stop) {
            json state = {{"data_position", {{"epoch", loader.position().epoch}, {"row", loader.position().row}}},
                          {"total_steps", total_steps}, {"loss", loss}, {"seed", s.seed}};
            result.checkpoint = save_checkpoint(cfg.output_dir, done, params, optimizer, state, cfg.resolved_yaml());
            prune_checkpoints(cfg.output_dir, int(cfg.save_keep));
            if (tty) std::printf("\n");
            std::printf("saved %s\n", result.checkpoint.c_str());
        }
        if (stop) {
            result.steps_done = done;
            result.interrupted = true;
            std::printf("interrupted: resume with  tuner train %s --resume %s\n", cfg.file.file.c_str(),
                        result.checkpoint.c_str());
            report_memory(mem);
            return result;
        }
    }
    result.steps_done = step;

    // ---- results --------------------------------------------------------------------------------
    if (cfg.uses_lora()) {
        result.result_dir = (fs::path(cfg.output_dir) / "adapter").string();
        save_peft_adapter(*model, result.result_dir, fs::absolute(cfg.model).string());
        if (cfg.method == "qlora") write_adapter_base_quantization(result.result_dir, "nf4", cfg.double_quant);
    } else {
        result.result_dir = (fs::path(cfg.output_dir) / "model").string();
        model->save(result.result_dir, DType::F32);
        if (is_gguf_path(cfg.model)) {  // the vocabulary inside the GGUF, as tokenizer.json
            std::string note;
            write_hf_tokenizer_from_gguf(GgufFile(cfg.model), result.result_dir, &note);
            if (!note.empty()) std::printf("%s\n", note.c_str());
        } else {
            for (const auto& f : read_tokenizer_files_info(cfg.model).files)
                fs::copy_file(fs::path(cfg.model) / f, fs::path(result.result_dir) / f,
                              fs::copy_options::overwrite_existing);
        }
    }
    auto recs = read_metrics((fs::path(cfg.output_dir) / "metrics.jsonl").string());
    write_loss_svg((fs::path(cfg.output_dir) / "loss.svg").string(), recs,
                   fmt::format("{} ({}): loss", fs::path(cfg.output_dir).filename().string(), cfg.method));
    std::printf("wrote %s, %s/metrics.jsonl, %s/loss.svg (%s, peak RSS %s)\n", result.result_dir.c_str(),
                cfg.output_dir.c_str(), cfg.output_dir.c_str(), format_duration(seconds_since(t_start)).c_str(),
                format_bytes(peak_rss_bytes()).c_str());
    report_memory(mem);
    return result;
}

}  // namespace tuner
