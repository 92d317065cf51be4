// tuner chat MODEL_DIR [--adapter DIR] [--template NAME|auto|none] [--system TEXT] [--stop STR ...]
//     [--max-new-tokens N] [--ctx N] [sampling flags] [--verbose]
// Interactive multi-turn chat on stdin/stdout (infer/chat.h). Each line read is one user turn;
// the reply streams to stdout token by token and ends with a newline. Works through a pipe: the
// "> " prompt and the banner appear only when stdin is a terminal. Lines /reset, /exit (or
// /quit, or end of input) and /help are commands. Notes (turns dropped when the context fills
// up) go to stderr, and so do the per-reply statistics (tokens, tokens/s) when stdin is a
// terminal or with --verbose.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>

#include "cli/commands.h"
#include "cli/device_option.h"
#include "core/error.h"
#include "core/threads.h"
#include "infer/chat.h"
#include "io/peft.h"
#include "models/llama.h"
#include "tokenizer/tokenizer.h"

namespace tuner::cli {

namespace {

const char* kChatHelp =
    "  type a message and press Enter; the reply streams below it\n"
    "  /reset   forget the conversation (and the KV cache)\n"
    "  /exit    quit (also /quit, or end of input)\n"
    "  /help    this text\n";

}  // namespace

ChatSetup load_chat_model(const std::string& model_dir, const std::string& adapter, const std::string& tmpl,
                          Device device) {
    ChatSetup s;
    s.model = load_model_with_adapter(model_dir, adapter, device);
    s.tok = Tokenizer::load(model_dir);
    if (s.tok->vocab_size() > s.model->config.vocab_size)
        fail("[chat] {}: the tokenizer has {} tokens but the model's vocab_size is {}", model_dir, s.tok->vocab_size(),
             s.model->config.vocab_size);
    if (tmpl == "none") {
        s.template_reason = "plain text";
        return s;
    }
    TemplateChoice tc = choose_chat_template(tmpl, model_dir, "", *s.tok);
    s.tmpl = tc.tmpl;
    s.template_reason = tmpl == "auto" ? tc.reason : "--template";
    if (s.tmpl) check_template(*s.tmpl, *s.tok, model_dir);
    return s;
}

Command add_chat(CLI::App& app) {
    struct Opts {
        std::string model, adapter, tmpl = "auto", system;
        std::vector<std::string> stops;
        int max_new = 512, ctx = 0, threads = 0;
        bool verbose = false, echo = false;
        SamplingParams sampling;  // the reference chat's defaults: temperature 0.1, top-k 40, top-p 0.75
        std::string device = "cpu";
    };
    auto o = std::make_shared<Opts>();
    auto* sub = app.add_subcommand("chat", "interactive multi-turn chat (reads lines from stdin; works with a pipe)");
    sub->add_option("model", o->model, "Hugging Face model folder")->required();
    sub->add_option("--adapter", o->adapter, "a PEFT LoRA adapter folder to apply");
    sub->add_option("--template", o->tmpl, "chat template name, auto (from the model), or none (plain text)");
    sub->add_option("--system", o->system, "system text of the conversation");
    sub->add_option("--stop,--stop-words", o->stops, "stop string (repeatable), besides the template's and EOS");
    sub->add_option("--max-new-tokens", o->max_new, "tokens per reply at most");
    sub->add_option("--ctx", o->ctx, "context length in tokens (default: the model's, up to 4096)");
    add_sampling_options(sub, &o->sampling);
    sub->add_flag("--verbose,-v", o->verbose, "print tokens and tokens/s after each reply (stderr)");
    sub->add_flag("--echo", o->echo,
                  "print each message read as 'user> ...' and prefix replies with 'model> ' (transcripts from a pipe)");
    add_threads_option(sub, &o->threads);
    add_device_option(sub, &o->device);
    return {sub, [o]() {
                set_num_threads(o->threads);
                const bool tty = isatty(STDIN_FILENO);
                ChatSetup setup = load_chat_model(o->model, o->adapter, o->tmpl, resolve_device(o->device, "chat"));
                ChatOptions co;
                co.tmpl = setup.tmpl;
                co.encode = encode_options_for(*setup.tok, -1);
                co.system = o->system;
                co.sampling = o->sampling;
                co.max_new_tokens = o->max_new;
                co.stop_words = o->stops;
                co.context = o->ctx;
                ChatSession chat(*setup.model, *setup.tok, co);
                chat.on_note = [](const std::string& s) { std::fprintf(stderr, "%s\n", s.c_str()); };
                if (tty) {
                    std::fprintf(stderr, "chat with %s%s%s, template %s (%s), context %d tokens; /help for commands\n",
                                 o->model.c_str(), o->adapter.empty() ? "" : " + ", o->adapter.c_str(),
                                 setup.tmpl ? setup.tmpl->name.c_str() : "none", setup.template_reason.c_str(),
                                 chat.context());
                }
                std::string line;
                while (true) {
                    if (tty) {
                        std::fputs("> ", stdout);
                        std::fflush(stdout);
                    }
                    if (!std::getline(std::cin, line)) break;
                    if (!line.empty() && line.back() == '\r') line.pop_back();
                    if (line == "/exit" || line == "/quit") break;
                    if (line == "/help") {
                        std::fputs(kChatHelp, stdout);
                        std::fflush(stdout);
                        continue;
                    }
                    if (line == "/reset") {
                        chat.reset();
                        if (tty) std::fprintf(stderr, "(conversation cleared)\n");
                        continue;
                    }
                    if (line.empty()) continue;
                    if (o->echo) {
                        std::printf("user> %s\nmodel> ", line.c_str());
                        std::fflush(stdout);
                    }
                    try {
                        ChatReply r = chat.send(line, [](std::string_view s) {
                            std::fwrite(s.data(), 1, s.size(), stdout);
                            std::fflush(stdout);
                        });
                        std::fputs("\n", stdout);
                        std::fflush(stdout);
                        if (tty || o->verbose)
                            std::fprintf(stderr,
                                         "[%d tokens in %.2f s, %.1f tokens/s; prompt %d tokens in %.2f s; %s; %d in "
                                         "context]\n",
                                         r.generated, r.generate_s, r.generate_s > 0 ? r.generated / r.generate_s : 0.0,
                                         r.prompt_tokens, r.prefill_s, chat_stop_name(r.stop), int(chat.history().size()));
                    } catch (const Error& e) {  // a message too long for the context: say so, keep going
                        std::fprintf(stderr, "error: %s\n", e.what());
                    }
                }
                return 0;
            }};
}

}  // namespace tuner::cli
