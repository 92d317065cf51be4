// tuner init-model PRESET OUT_DIR [--seed N] [--dtype f32|bf16] [--tokenizer DIR|bytes] [--config-only]
// --config-only writes config.json (and the tokenizer when --tokenizer is given) but no weights:
// what another framework needs to build the same shape itself (bench/bench_peft_gpu.py), without
// writing 27 GB for llama-7b.
#include <filesystem>
#include <memory>

#include "cli/commands.h"
#include "core/arena.h"
#include "core/threads.h"
#include "models/init_model.h"
#include "models/presets.h"

namespace tuner::cli {

Command add_init_model(CLI::App& app) {
    struct Opts {
        std::string preset, out_dir, dtype = "f32", tokenizer;
        uint64_t seed = 0;
        int threads = 0;
        bool config_only = false;
    };
    auto o = std::make_shared<Opts>();
    std::string presets;
    for (const auto& n : preset_names()) presets += (presets.empty() ? "" : ", ") + n;
    auto* sub = app.add_subcommand("init-model", "write a random-initialised Hugging Face model folder");
    sub->add_option("preset", o->preset, "model shape: " + presets)->required();
    sub->add_option("out_dir", o->out_dir, "output folder")->required();
    sub->add_option("--seed", o->seed, "random seed");
    sub->add_option("--dtype", o->dtype, "weight dtype: f32, bf16 or f16");
    sub->add_option("--tokenizer", o->tokenizer, "copy this folder's tokenizer and take vocab_size, bos, eos from it; 'bytes': a byte-level tokenizer made here");
    sub->add_flag("--config-only", o->config_only, "write config.json (and the tokenizer) but no weights");
    add_threads_option(sub, &o->threads);
    return {sub, [o]() {
                set_num_threads(o->threads);
                ModelConfig config = preset_config(o->preset);
                InitModelOptions opts;
                opts.seed = o->seed;
                opts.tokenizer_dir = o->tokenizer;
                if (!dtype_from_user_name(o->dtype, &opts.dtype)) fail("[init-model] unknown --dtype '{}'", o->dtype);
                opts.config_only = o->config_only;
                if (o->config_only) {
                    init_model(config, o->out_dir, opts);
                    ModelConfig written = load_config(o->out_dir + "/config.json");
                    std::printf("wrote %s/config.json: preset %s, %.1fM parameters, %s, vocab %lld (no weights: "
                                "--config-only)\n",
                                o->out_dir.c_str(), o->preset.c_str(), double(written.num_params()) / 1e6,
                                dtype_name(opts.dtype), (long long)written.vocab_size);
                    return 0;
                }
                init_model(config, o->out_dir, opts);
                ModelConfig written = load_config(o->out_dir + "/config.json");
                std::printf("wrote %s: preset %s, %.1fM parameters, %s, vocab %lld, peak RSS %s\n", o->out_dir.c_str(),
                            o->preset.c_str(), double(written.num_params()) / 1e6, dtype_name(opts.dtype),
                            (long long)written.vocab_size, format_bytes(peak_rss_bytes()).c_str());
                return 0;
            }};
}

}  // namespace tuner::cli
