// tuner generate MODEL_DIR (--prompt TEXT | --prompt-ids "1 2 3" | --eval FILE) [--adapter DIR]
//     [--chat] [--template NAME|auto|none] [--system TEXT] [--stop STR ...] [--max-new-tokens N]
//     [sampling flags]
// One completion for scripts (greedy unless --temperature > 0). --chat answers the prompt as the
// first user turn of a chat session (infer/chat.h): the reply `tuner chat` gives first with the
// same flags, template required. --eval FILE scores the model's
// answers on an alpaca .json/.jsonl file (instruction [+ input] -> output): `accuracy` counts an
// answer as right when the generated text, trimmed, starts with the reference output (a model
// that never learned to emit EOS still scores), `exact` when it equals it.
#include <algorithm>
#include <fstream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/device_option.h"
#include "core/threads.h"
#include "infer/chat.h"
#include "infer/generate.h"
#include "infer/prompt.h"
#include "infer/sampling.h"
#include "io/peft.h"
#include "models/llama.h"
#include "tokenizer/tokenizer.h"

namespace tuner::cli {

namespace {

std::string trim(const std::string& s) {
    size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
    return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

// Alpaca records of a .json array or .jsonl file: (prompt, answer).
std::vector<std::pair<std::string, std::string>> read_eval_records(const std::string& path) {
    std::ifstream f(path);
    if (!f) fail("[generate] {}: cannot open", path);
    std::vector<nlohmann::json> recs;
    std::string first((std::istreambuf_iterator<char>(f)), {});
    try {
        if (!first.empty() && first.find_first_not_of(" \t\r\n") != std::string::npos &&
            first[first.find_first_not_of(" \t\r\n")] == '[') {
            for (auto& r : nlohmann::json::parse(first)) recs.push_back(r);
        } else {
            std::istringstream in(first);
            std::string line;
            while (std::getline(in, line))
                if (!trim(line).empty()) recs.push_back(nlohmann::json::parse(line));
        }
    } catch (const nlohmann::json::parse_error& e) {
        fail("[generate] {}: invalid JSON: {}", path, e.what());
    }
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& r : recs) {
        if (!r.is_object() || !r.contains("instruction") || !r.contains("output"))
            fail("[generate] {}: records need 'instruction' and 'output'", path);
        std::string prompt = r["instruction"].get<std::string>();
        if (r.contains("input") && r["input"].is_string() && !r["input"].get<std::string>().empty())
            prompt += "\n" + r["input"].get<std::string>();
        out.emplace_back(prompt, r["output"].get<std::string>());
    }
    return out;
}

}  // namespace

void add_sampling_options(CLI::App* sub, SamplingParams* p) {
    sub->add_option("--temperature", p->temperature, "0 = greedy");
    sub->add_option("--top-k", p->top_k, "top-k (0 = off)");
    sub->add_option("--top-p", p->top_p, "top-p (1 = off)");
    sub->add_option("--repetition-penalty", p->repetition_penalty, "repetition penalty (1 = off)");
    sub->add_option("--seed", p->seed, "sampling seed");
}

Command add_generate(CLI::App& app) {
    struct Opts {
        std::string model, prompt, prompt_ids, adapter, tmpl = "auto", system, eval;
        std::vector<std::string> stops;
        int max_new = 64, threads = 0;
        bool chat = false;
        SamplingParams sampling;
        std::string device = "cpu";
    };
    auto o = std::make_shared<Opts>();
    o->sampling.temperature = 0.0;  // scripts want reproducible output by default
    auto* sub = app.add_subcommand("generate", "one completion of a prompt (greedy unless --temperature > 0)");
    sub->add_option("model", o->model, "Hugging Face model folder")->required();
    sub->add_option("--prompt", o->prompt, "prompt text (rendered with the chat template)");
    sub->add_option("--prompt-ids", o->prompt_ids, "prompt as token ids, space-separated (no template)");
    sub->add_option("--eval", o->eval, "alpaca .json/.jsonl: print exact-match accuracy of the answers");
    sub->add_option("--adapter", o->adapter, "a PEFT LoRA adapter folder to apply");
    sub->add_option("--template", o->tmpl, "chat template name, auto, or none (raw text)");
    sub->add_option("--system", o->system, "system text");
    sub->add_option("--stop,--stop-words", o->stops, "stop string (repeatable), besides the template's and EOS");
    sub->add_flag("--chat", o->chat, "answer --prompt as the first turn of `tuner chat` (a template is required)");
    sub->add_option("--max-new-tokens", o->max_new, "tokens to generate");
    add_sampling_options(sub, &o->sampling);
    add_threads_option(sub, &o->threads);
    add_device_option(sub, &o->device);
    return {sub, [o]() {
                set_num_threads(o->threads);
                const Device device = resolve_device(o->device, "generate");
                if (o->chat) {
                    if (o->tmpl == "none") fail("[generate] --chat needs a chat template (--template auto or a name)");
                    if (o->prompt.empty()) fail("[generate] --chat needs --prompt");
                    if (!o->prompt_ids.empty() || !o->eval.empty())
                        fail("[generate] --chat takes --prompt, not --prompt-ids or --eval");
                    ChatSetup setup = load_chat_model(o->model, o->adapter, o->tmpl, device);
                    ChatOptions co;
                    co.tmpl = setup.tmpl;
                    co.encode = encode_options_for(*setup.tok, -1);
                    co.system = o->system, co.sampling = o->sampling, co.stop_words = o->stops;
                    co.max_new_tokens = o->max_new;
                    // A cache just long enough for this prompt and its reply.
                    const int64_t need = int64_t(render_chat(*setup.tok, co, {}, o->prompt).size()) + o->max_new;
                    co.context = int(std::min<int64_t>(need, setup.model->config.max_position_embeddings));
                    ChatSession chat(*setup.model, *setup.tok, co);
                    std::printf("%s\n", chat.send(o->prompt).text.c_str());
                    return 0;
                }
                auto model = load_model_with_adapter(o->model, o->adapter, device);
                if (!o->prompt_ids.empty()) {
                    std::vector<int32_t> prompt;
                    std::istringstream in(o->prompt_ids);
                    long long v;
                    while (in >> v) {
                        if (v < 0 || v >= model->config.vocab_size)
                            fail("[generate] prompt id {} is outside the vocabulary [0, {})", v, model->config.vocab_size);
                        prompt.push_back(int32_t(v));
                    }
                    auto out = greedy_generate(*model, prompt, o->max_new, model->config.eos_token_id);
                    for (size_t i = 0; i < out.size(); i++) std::printf(i ? " %d" : "%d", out[i]);
                    std::printf("\n");
                    return 0;
                }
                auto tok = Tokenizer::load(o->model);
                const ChatTemplate* tmpl = nullptr;
                std::vector<std::string> stops;
                if (o->tmpl != "none") {
                    TemplateChoice tc = choose_chat_template(o->tmpl, o->model, "", *tok);
                    tmpl = tc.tmpl;
                    if (tmpl) stops = tmpl->stop_words;
                }
                stops.insert(stops.end(), o->stops.begin(), o->stops.end());
                EncodeOptions enc = encode_options_for(*tok, -1);
                if (!o->eval.empty()) {
                    auto recs = read_eval_records(o->eval);
                    int correct = 0, exact = 0;
                    for (const auto& [prompt, answer] : recs) {
                        auto ids = render_prompt(*tok, tmpl, enc, o->system, prompt);
                        std::string got = trim(generate_text(*model, *tok, ids, o->sampling, o->max_new, stops));
                        std::string want = trim(answer);
                        correct += got.compare(0, want.size(), want) == 0;
                        exact += got == want;
                    }
                    const double n = recs.empty() ? 1.0 : double(recs.size());
                    std::printf("{\"accuracy\": %.4f, \"exact\": %.4f, \"correct\": %d, \"total\": %zu}\n",
                                double(correct) / n, double(exact) / n, correct, recs.size());
                    return 0;
                }
                if (o->prompt.empty() && o->system.empty()) fail("[generate] give --prompt, --prompt-ids or --eval");
                auto ids = render_prompt(*tok, tmpl, enc, o->system, o->prompt);
                std::printf("%s\n", generate_text(*model, *tok, ids, o->sampling, o->max_new, stops).c_str());
                return 0;
            }};
}

}  // namespace tuner::cli
