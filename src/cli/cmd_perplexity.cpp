// tuner perplexity MODEL_DIR --ids FILE [--ctx N] [--json]
// Scores a file of whitespace-separated token ids in windows of N tokens. Each window is scored
// on its own (no context carried over) with a loss on every position after the first.
#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>

#include "cli/commands.h"
#include "core/threads.h"
#include "models/llama.h"

namespace tuner::cli {

std::vector<int32_t> read_token_ids(const std::string& path, int64_t vocab_size) {
    std::ifstream f(path);
    if (!f) fail("[perplexity] {}: cannot open ({})", path, std::strerror(errno));
    std::vector<int32_t> ids;
    std::string word;
    while (f >> word) {
        char* end = nullptr;
        errno = 0;
        long long v = std::strtoll(word.c_str(), &end, 10);
        if (*end != '\0' || errno != 0)
            fail("[perplexity] {}: token {} ('{}') is not an integer", path, ids.size() + 1, word);
        if (v < 0 || v >= vocab_size)
            fail("[perplexity] {}: token {} is id {}, outside the vocabulary [0, {})", path, ids.size() + 1, v,
                 vocab_size);
        ids.push_back(int32_t(v));
    }
    return ids;
}

Command add_perplexity(CLI::App& app) {
    struct Opts {
        std::string model, ids;
        int ctx = 512;
        bool json = false, memory = false;
        int threads = 0;
    };
    auto o = std::make_shared<Opts>();
    auto* sub = app.add_subcommand("perplexity", "loss and perplexity of a model over a file of token ids");
    sub->add_option("model", o->model, "Hugging Face model folder")->required();
    sub->add_option("--ids", o->ids, "file of whitespace-separated token ids")->required();
    sub->add_option("--ctx", o->ctx, "window length in tokens");
    sub->add_flag("--json", o->json, "print one JSON object");
    sub->add_flag("--memory", o->memory, "print the memory plan");
    add_threads_option(sub, &o->threads);
    return {sub, [o]() {
                set_num_threads(o->threads);
                if (o->ctx < 2) fail("[perplexity] --ctx must be at least 2");
                ModelOptions mo;
                mo.trainable = false;
                auto model = LlamaModel::load(o->model, mo);
                std::vector<int32_t> ids = read_token_ids(o->ids, model->config.vocab_size);
                if (ids.size() < 2) fail("[perplexity] {}: needs at least 2 tokens, found {}", o->ids, ids.size());
                int T = int(std::min<size_t>(size_t(o->ctx), ids.size()));
                model->prepare(1, T, false);
                if (o->memory) model->memory_plan().print(stderr, true);
                double loss_sum = 0;
                int64_t count = 0, windows = 0;
                std::vector<int32_t> targets(static_cast<size_t>(T));
                for (size_t start = 0; start + 1 < ids.size(); start += size_t(T)) {
                    int n = int(std::min<size_t>(size_t(T), ids.size() - start));
                    if (n < 2) break;
                    for (int t = 0; t < n; t++) targets[size_t(t)] = t + 1 < n ? ids[start + size_t(t) + 1] : -100;
                    Batch b;
                    b.B = 1, b.T = n, b.tokens = ids.data() + start, b.targets = targets.data();
                    int64_t c = 0;
                    loss_sum += model->forward_loss(b, &c);
                    count += c;
                    windows++;
                }
                double loss = loss_sum / double(count);
                if (o->json)
                    std::printf("{\"loss\": %.6f, \"ppl\": %.6f, \"tokens\": %lld, \"windows\": %lld, \"ctx\": %d}\n", loss,
                                std::exp(loss), (long long)count, (long long)windows, T);
                else
                    std::printf("loss %.4f  perplexity %.3f  (%lld scored tokens in %lld windows of up to %d)\n", loss,
                                std::exp(loss), (long long)count, (long long)windows, T);
                return 0;
            }};
}

}  // namespace tuner::cli
