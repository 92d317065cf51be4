// Subcommands of the `tuner` program. Each registers its options on the CLI11 app and returns
// the subcommand with the function that runs it (exit code; tuner::Error is caught once in main).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

namespace tuner {
enum class Device : uint8_t;  // core/tensor.h
class LlamaModel;
class Tokenizer;
struct ChatTemplate;
struct SamplingParams;
}  // namespace tuner

namespace tuner::cli {

using Command = std::pair<CLI::App*, std::function<int()>>;

Command add_init_model(CLI::App& app);
Command add_perplexity(CLI::App& app);
Command add_bench(CLI::App& app);
Command add_generate(CLI::App& app);
Command add_info(CLI::App& app);
Command add_tokenize(CLI::App& app);   // cmd_tokenize.cpp
Command add_data(CLI::App& app);       // cmd_data.cpp
Command add_templates(CLI::App& app);  // cmd_data.cpp
Command add_merge(CLI::App& app);      // cmd_merge.cpp
Command add_train(CLI::App& app);      // cmd_train.cpp
Command add_chat(CLI::App& app);       // cmd_chat.cpp
Command add_eval(CLI::App& app);       // cmd_eval.cpp
Command add_export(CLI::App& app);     // cmd_export.cpp
Command add_logits(CLI::App& app);     // cmd_logits.cpp

// Adds --threads N to a subcommand (default 0: all cores).
void add_threads_option(CLI::App* sub, int* threads);
// Adds --temperature, --top-k, --top-p, --repetition-penalty, --seed (cmd_generate.cpp).
void add_sampling_options(CLI::App* sub, SamplingParams* params);

// A model for chat and generation: MODEL_DIR loaded frozen (+ the PEFT adapter when adapter is
// not ""), its tokenizer, and the chat template `tmpl` names ("auto", a name, or "none": null),
// checked against the tokenizer (cmd_chat.cpp). The model runs on `device`.
struct ChatSetup {
    std::unique_ptr<LlamaModel> model;
    std::unique_ptr<Tokenizer> tok;
    const ChatTemplate* tmpl = nullptr;
    std::string template_reason;
};
ChatSetup load_chat_model(const std::string& model_dir, const std::string& adapter, const std::string& tmpl,
                          Device device);

// Loss over token ids in windows of up to ctx tokens whose starts are stride apart (1 <= stride
// <= ctx), Hugging Face's sliding-window perplexity: each token is scored at most once, with the
// tokens before it in its window as context (cmd_eval.cpp; `tuner eval` and `tuner perplexity`).
struct WindowLoss {
    double sum = 0;       // summed token losses (nats)
    int64_t tokens = 0;   // tokens scored
    int64_t windows = 0;  // forward passes
    int ctx = 0;          // window length used (ctx, or fewer when the text is shorter)
};
WindowLoss window_loss(LlamaModel& model, const std::vector<int32_t>& ids, int ctx, int stride);
// "loss L  perplexity P  (...)" or one JSON object {loss, ppl, tokens, windows, ctx, stride}.
void print_window_loss(const WindowLoss& r, int stride, bool json);
// A text file's tokens as `tuner eval --text` scores them: BOS when the tokenizer adds one, then
// the text (cmd_eval.cpp).
std::vector<int32_t> read_text_ids(const std::string& path, const Tokenizer& tok);
// A file of whitespace-separated token ids, each checked against vocab_size (cmd_perplexity.cpp).
std::vector<int32_t> read_token_ids(const std::string& path, int64_t vocab_size);

}  // namespace tuner::cli
