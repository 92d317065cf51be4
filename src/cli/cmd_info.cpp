// tuner info MODEL_DIR [--seq T] [--batch B] : the model's shape and the memory plan of a
// training step (weights, gradients, activations), without running anything.
#include <memory>

#include "cli/commands.h"
#include "core/arena.h"
#include "models/llama.h"

namespace tuner::cli {

Command add_info(CLI::App& app) {
    struct Opts {
        std::string model;
        int seq = 512, batch = 1;
    };
    auto o = std::make_shared<Opts>();
    auto* sub = app.add_subcommand("info", "model shape and the memory plan of a full fine-tuning step");
    sub->add_option("model", o->model, "Hugging Face model folder")->required();
    sub->add_option("--seq", o->seq, "sequence length T for the activation plan");
    sub->add_option("--batch", o->batch, "rows per step B for the activation plan");
    return {sub, [o]() {
                ModelOptions mo;
                auto model = LlamaModel::load(o->model, mo);
                const ModelConfig& c = model->config;
                std::printf("%s (%s): %.2fM parameters\n", c.architecture.c_str(), c.model_type.c_str(),
                            double(c.num_params()) / 1e6);
                std::printf("  vocab %lld, hidden %lld, layers %lld, heads %lld (kv %lld, head_dim %lld), ffn %lld\n",
                            (long long)c.vocab_size, (long long)c.hidden_size, (long long)c.num_layers,
                            (long long)c.num_heads, (long long)c.num_kv_heads, (long long)c.head_dim,
                            (long long)c.intermediate_size);
                std::printf("  rope_theta %g, tied embeddings %s, q/k/v bias %s\n", c.rope_theta,
                            c.tie_word_embeddings ? "yes" : "no", c.attention_bias ? "yes" : "no");
                model->prepare(o->batch, o->seq, true);
                std::printf("full fine-tuning step, B=%d T=%d:\n", o->batch, o->seq);
                model->memory_plan().print(stdout, true);
                return 0;
            }};
}

}  // namespace tuner::cli
