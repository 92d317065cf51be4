// tuner generate MODEL_DIR --prompt-ids "1 2 3" [--max-new-tokens N]
// Greedy decoding on token ids (text prompts arrive with the tokenizer).
#include <memory>
#include <sstream>

#include "cli/commands.h"
#include "core/threads.h"
#include "infer/generate.h"
#include "models/llama.h"

namespace tuner::cli {

Command add_generate(CLI::App& app) {
    struct Opts {
        std::string model, prompt_ids;
        int max_new = 64, threads = 0;
    };
    auto o = std::make_shared<Opts>();
    auto* sub = app.add_subcommand("generate", "greedy completion of a prompt given as token ids");
    sub->add_option("model", o->model, "Hugging Face model folder")->required();
    sub->add_option("--prompt-ids", o->prompt_ids, "prompt token ids, space-separated (default: the BOS id)");
    sub->add_option("--max-new-tokens", o->max_new, "tokens to generate");
    add_threads_option(sub, &o->threads);
    return {sub, [o]() {
                set_num_threads(o->threads);
                ModelOptions mo;
                mo.trainable = false;
                auto model = LlamaModel::load(o->model, mo);
                std::vector<int32_t> prompt;
                std::istringstream in(o->prompt_ids);
                long long v;
                while (in >> v) {
                    if (v < 0 || v >= model->config.vocab_size)
                        fail("[generate] prompt id {} is outside the vocabulary [0, {})", v, model->config.vocab_size);
                    prompt.push_back(int32_t(v));
                }
                if (prompt.empty()) {
                    if (model->config.bos_token_id < 0) fail("[generate] no --prompt-ids and the model has no bos_token_id");
                    prompt.push_back(int32_t(model->config.bos_token_id));
                }
                auto out = greedy_generate(*model, prompt, o->max_new, model->config.eos_token_id);
                for (size_t i = 0; i < out.size(); i++) std::printf(i ? " %d" : "%d", out[i]);
                std::printf("\n");
                return 0;
            }};
}

}  // namespace tuner::cli
