// tuner perplexity MODEL_DIR (--ids FILE | --text FILE) [--adapter DIR] [--ctx N] [--stride S] [--json]
// Loss and perplexity over a file of whitespace-separated token ids or a text file, in windows of
// N tokens whose starts are S apart (default S = N: each window is scored on its own, with a loss
// on every position after the first). The same computation as `tuner eval --text/--ids`
// (cmd_eval.cpp, window_loss).
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>

#include "cli/commands.h"
#include "cli/device_option.h"
#include "core/threads.h"
#include "io/peft.h"
#include "models/llama.h"
#include "tokenizer/tokenizer.h"

namespace tuner::cli {

std::vector<int32_t> read_token_ids(const std::string& path, int64_t vocab_size) {
    std::ifstream f(path);
    if (!f) fail("[ids] {}: cannot open ({})", path, std::strerror(errno));
    std::vector<int32_t> ids;
    std::string word;
    while (f >> word) {
        char* end = nullptr;
        errno = 0;
        long long v = std::strtoll(word.c_str(), &end, 10);
        if (*end != '\0' || errno != 0)
            fail("[ids] {}: token {} ('{}') is not an integer", path, ids.size() + 1, word);
        if (v < 0 || v >= vocab_size)
            fail("[ids] {}: token {} is id {}, outside the vocabulary [0, {})", path, ids.size() + 1, v,
                 vocab_size);
        ids.push_back(int32_t(v));
    }
    return ids;
}

Command add_perplexity(CLI::App& app) {
    struct Opts {
        std::string model, ids, text, adapter;
        int ctx = 512, stride = 0;
        bool json = false, memory = false;
        int threads = 0;
        std::string device = "cpu";
    };
    auto o = std::make_shared<Opts>();
    auto* sub = app.add_subcommand("perplexity", "loss and perplexity of a model over token ids or a text file");
    sub->add_option("model", o->model, "Hugging Face model folder")->required();
    auto* ids_opt = sub->add_option("--ids", o->ids, "file of whitespace-separated token ids");
    auto* text_opt = sub->add_option("--text", o->text, "text file (tokenized with BOS when the tokenizer adds one)");
    ids_opt->excludes(text_opt);
    sub->add_option("--adapter", o->adapter, "a PEFT LoRA adapter folder to apply");
    sub->add_option("--ctx", o->ctx, "window length in tokens");
    sub->add_option("--stride", o->stride, "tokens between window starts (default: --ctx, no overlap)");
    sub->add_flag("--json", o->json, "print one JSON object");
    sub->add_flag("--memory", o->memory, "print the memory plan");
    add_threads_option(sub, &o->threads);
    add_device_option(sub, &o->device);
    return {sub, [o]() {
                set_num_threads(o->threads);
                const Device device = resolve_device(o->device, "perplexity");
                if (o->ids.empty() == o->text.empty()) fail("[perplexity] give --ids FILE or --text FILE");
                if (o->ctx < 2) fail("[perplexity] --ctx must be at least 2");
                const int stride = o->stride > 0 ? o->stride : o->ctx;
                if (stride > o->ctx)
                    fail("[perplexity] --stride {} is longer than --ctx {} (tokens would be skipped)", stride, o->ctx);
                auto model = load_model_with_adapter(o->model, o->adapter, device);
                const std::string& file = o->ids.empty() ? o->text : o->ids;
                std::vector<int32_t> ids = o->ids.empty() ? read_text_ids(o->text, *Tokenizer::load(o->model))
                                                          : read_token_ids(o->ids, model->config.vocab_size);
                if (ids.size() < 2) fail("[perplexity] {}: needs at least 2 tokens, found {}", file, ids.size());
                WindowLoss r = window_loss(*model, ids, o->ctx, stride);
                if (o->memory) model->memory_plan().print(stderr, true);
                print_window_loss(r, stride, o->json);
                return 0;
            }};
}

}  // namespace tuner::cli
