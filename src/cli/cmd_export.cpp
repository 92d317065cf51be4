// tuner export: models and adapters to llama.cpp's GGUF, and GGUF models back to Hugging Face.
//   tuner export MODEL_DIR [--adapter DIR] --format gguf --type f32|f16|bf16|q8_0|q4_0|q4_k|q6_k OUT.gguf
//   tuner export ADAPTER_DIR --format gguf-lora [--base MODEL_DIR] OUT.gguf
//   tuner export MODEL.gguf --format hf [--type f32|bf16|f16] OUT_DIR
// See models/gguf_export.h for what is written and docs/gguf.md ("Export").
#include <chrono>
#include <memory>
#include <optional>

#include "cli/commands.h"
#include "core/arena.h"
#include "core/error.h"
#include "core/threads.h"
#include "models/gguf_export.h"

namespace tuner::cli {

Command add_export(CLI::App& app) {
    struct Opts {
        std::string input, out, format, type, adapter, base, name;
        int threads = 0;
    };
    auto o = std::make_shared<Opts>();
    auto* sub = app.add_subcommand("export", "export a model or LoRA adapter to llama.cpp's GGUF, or a GGUF model to "
                                             "a Hugging Face folder");
    sub->add_option("input", o->input,
                    "gguf: Hugging Face model folder; gguf-lora: PEFT adapter folder; hf: a .gguf file")
        ->required();
    sub->add_option("out", o->out, "output: a .gguf file (gguf, gguf-lora) or a new folder (hf)")->required();
    sub->add_option("--format", o->format, "gguf, gguf-lora or hf")->required();
    sub->add_option("--type", o->type,
                    "gguf: f32, f16 (default), bf16, q8_0, q4_0, q4_k, q6_k; hf: f32, bf16 or f16 (default: the "
                    "GGUF's own precision)");
    sub->add_option("--adapter", o->adapter, "gguf: a PEFT adapter merged into the model (in f32) before export");
    sub->add_option("--base", o->base,
                    "gguf-lora: the base model folder (default: the adapter's base_model_name_or_path)");
    sub->add_option("--name", o->name, "gguf: general.name (default: the model folder's name)");
    add_threads_option(sub, &o->threads);
    return {sub, [o]() {
                set_num_threads(o->threads);
                const auto t0 = std::chrono::steady_clock::now();
                auto seconds = [&] {
                    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
                };
                if (o->format == "gguf") {
                    GgufExportOptions opts;
                    if (!o->type.empty() && !gguf_export_type_from_name(o->type, &opts.type))
                        fail("[export] --type {}: expected f32, f16, bf16, q8_0, q4_0, q4_k or q6_k", o->type);
                    opts.adapter_dir = o->adapter;
                    opts.name = o->name;
                    if (!o->base.empty()) fail("[export] --base is for --format gguf-lora");
                    GgufExportReport r = export_gguf(o->input, o->out, opts);
                    std::string types;
                    for (const auto& [t, n] : r.types)
                        types += fmt::format("{}{} x{}", types.empty() ? "" : ", ", t, n);
                    for (const std::string& n : r.notes) std::fprintf(stderr, "note: %s\n", n.c_str());
                    std::printf("exported %s%s -> %s: %s, %lld tensors (%s), %s, tokenizer %s, %.1f s, peak RSS %s\n",
                                o->input.c_str(), o->adapter.empty() ? "" : (" + " + o->adapter).c_str(),
                                o->out.c_str(), r.arch.c_str(), (long long)r.tensors, types.c_str(),
                                format_bytes(r.file_bytes).c_str(), r.tokenizer.c_str(), seconds(),
                                format_bytes(peak_rss_bytes()).c_str());
                    return 0;
                }
                if (o->format == "gguf-lora") {
                    if (!o->type.empty() && o->type != "f32")
                        fail("[export] --type {}: LoRA adapters are exported in f32", o->type);
                    if (!o->adapter.empty()) fail("[export] --adapter is for --format gguf (the input is the adapter)");
                    GgufLoraExportReport r = export_gguf_lora(o->input, o->base, o->out);
                    std::printf("exported LoRA adapter %s -> %s: %s, r %lld, alpha %g, %lld adapted linears, %s\n",
                                o->input.c_str(), o->out.c_str(), r.arch.c_str(), (long long)r.r, double(r.alpha),
                                (long long)r.pairs, format_bytes(r.file_bytes).c_str());
                    return 0;
                }
                if (o->format == "hf") {
                    if (!o->adapter.empty() || !o->base.empty())
                        fail("[export] --adapter and --base are not used with --format hf");
                    std::optional<DType> dtype;  // none: the GGUF's own precision
                    if (!o->type.empty()) {
                        DType t;
                        if (!dtype_from_user_name(o->type, &t))
                            fail("[export] --type {}: expected f32, bf16 or f16", o->type);
                        dtype = t;
                    }
                    HfExportReport r = export_hf_from_gguf(o->input, o->out, dtype);
                    if (!r.tokenizer_written)
                        std::fprintf(stderr, "note: no tokenizer written: %s\n", r.tokenizer.c_str());
                    std::printf("exported %s -> %s (%s): config.json, model.safetensors%s%s, %.1f s\n",
                                o->input.c_str(), o->out.c_str(), dtype_name(r.dtype),
                                r.tokenizer_written ? ", tokenizer.json: " : "",
                                r.tokenizer_written ? r.tokenizer.c_str() : "", seconds());
                    return 0;
                }
                fail("[export] --format {}: expected gguf, gguf-lora or hf", o->format);
            }};
}

}  // namespace tuner::cli
