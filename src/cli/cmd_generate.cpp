// tuner generate MODEL_DIR --prompt-ids "1 2 3" [--max-new-tokens N]
// Greedy decoding on token ids (text prompts arrive with the tokenizer). Each step re-runs the
// forward over the whole sequence; a KV cache comes with src/infer/.
#include <memory>
#include <sstream>

#include "cli/commands.h"
#include "core/threads.h"
#include "models/llama.h"

namespace tuner::cli {

// Greedy continuation of `prompt` by up to max_new tokens (stops after eos when eos >= 0).
std::vector<int32_t> greedy_generate(LlamaModel& model, std::vector<int32_t> tokens, int max_new, int64_t eos) {
    int max_T = int(std::min<int64_t>(int64_t(tokens.size()) + max_new, model.config.max_position_embeddings));
    model.prepare(1, max_T, false);
    std::vector<float> logits(size_t(model.config.vocab_size));
    std::vector<int32_t> out;
    for (int step = 0; step < max_new && int(tokens.size()) < max_T; step++) {
        Batch b;
        b.B = 1, b.T = int(tokens.size()), b.tokens = tokens.data();
        model.last_logits(b, logits.data());
        int32_t best = 0;
        for (size_t v = 1; v < logits.size(); v++)
            if (logits[v] > logits[size_t(best)]) best = int32_t(v);
        tokens.push_back(best);
        out.push_back(best);
        if (best == eos) break;
    }
    return out;
}

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
