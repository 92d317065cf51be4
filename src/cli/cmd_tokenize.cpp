// tuner tokenize MODEL_OR_TOKENIZER (TEXT | --text S | --file F) [--no-special] [--pieces] [--bench]
//
// MODEL_OR_TOKENIZER: a model or tokenizer folder, tokenizer.json, tokenizer.model, or a .gguf
// file (its tokenizer.ggml.* metadata).
// Prints the ids on one line, space-separated. --pieces adds a second line with each token's
// vocabulary piece as a JSON string. --no-special encodes as Hugging Face does with
// add_special_tokens=False (no BOS/EOS from the post-processor; special tokens written in the
// text are still recognised). --bench encodes the text repeatedly on one thread for about
// --seconds and prints the throughput instead.
#include <chrono>
#include <ctime>
#include <cstdio>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/error.h"
#include "io/gguf.h"
#include "tokenizer/internal.h"
#include "tokenizer/tokenizer.h"

namespace tuner::cli {

namespace {

struct Opts {
    std::string model, text, file;
    bool no_special = false, pieces = false, bench = false;
    double seconds = 2.0;
};

double thread_cpu_seconds() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

int run_bench(const Tokenizer& tok, const std::string& text, bool add_special, double seconds) {
    using clock = std::chrono::steady_clock;
    // The first run fills the per-thread word cache, as the first batches of a real run do;
    // it is timed separately.
    auto c0 = clock::now();
    size_t tokens = tok.encode(text, add_special).size();
    double first = std::chrono::duration<double>(clock::now() - c0).count();
    auto t0 = clock::now();
    double cpu0 = thread_cpu_seconds();
    double elapsed = 0;
    int64_t runs = 0;
    do {
        tokens = tok.encode(text, add_special).size();
        runs++;
        elapsed = std::chrono::duration<double>(clock::now() - t0).count();
    } while (elapsed < seconds);
    double cpu = thread_cpu_seconds() - cpu0;
    double mb = double(text.size()) * double(runs) / 1e6;
    std::printf("%s\n", tok.describe().c_str());
    std::printf("first run (cold cache): %.3f s, %.2f MB/s\n", first, double(text.size()) / 1e6 / first);
    std::printf("encoded %.2f MB (%lld runs of %zu bytes -> %zu tokens) in %.2f s on one thread: %.2f MB/s "
                "(%.2f MB/s of thread CPU time), %.2fM tokens/s\n",
                mb, (long long)runs, text.size(), tokens, elapsed, mb / elapsed, mb / cpu,
                double(tokens) * double(runs) / elapsed / 1e6);
    return 0;
}

}  // namespace

Command add_tokenize(CLI::App& app) {
    auto o = std::make_shared<Opts>();
    auto* sub = app.add_subcommand("tokenize", "encode text and print the token ids");
    sub->add_option("model", o->model, "model folder, tokenizer folder, tokenizer.json, tokenizer.model or .gguf file")
        ->required();
    auto* text = sub->add_option("--text", o->text, "the text to encode");
    auto* file = sub->add_option("--file", o->file, "encode this file's bytes as one text");
    auto* positional = sub->add_option("text", o->text, "the text to encode (as --text)");
    text->excludes(file);
    positional->excludes(text)->excludes(file);
    sub->add_flag("--no-special", o->no_special, "no BOS/EOS (Hugging Face add_special_tokens=False)");
    sub->add_flag("--pieces", o->pieces, "also print the tokens' pieces (second line, JSON strings)");
    sub->add_flag("--bench", o->bench, "measure encoding throughput (MB/s, one thread) instead");
    sub->add_option("--seconds", o->seconds, "how long --bench runs (default 2)");
    return {sub, [o, text, file, positional]() -> int {
                if (text->count() == 0 && positional->count() == 0 && file->count() == 0)
                    fail("[tokenize] give the text with --text or --file (or as the argument after the model)");
                std::string input = file->count() ? read_file_bytes(o->file) : o->text;
                auto tok = is_gguf_path(o->model) ? load_gguf_tokenizer(o->model) : Tokenizer::load(o->model);
                if (o->bench) return run_bench(*tok, input, !o->no_special, o->seconds);
                std::vector<int32_t> ids = tok->encode(input, !o->no_special);
                std::string line;
                for (size_t i = 0; i < ids.size(); i++) {
                    if (i) line.push_back(' ');
                    line += std::to_string(ids[i]);
                }
                std::printf("%s\n", line.c_str());
                if (o->pieces) {
                    line.clear();
                    for (size_t i = 0; i < ids.size(); i++) {
                        if (i) line.push_back(' ');
                        // Pieces may hold raw bytes of half a character: dump them with U+FFFD.
                        line += nlohmann::json(tok->id_to_piece(ids[i]))
                                    .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
                    }
                    std::printf("%s\n", line.c_str());
                }
                return 0;
            }};
}

}  // namespace tuner::cli
