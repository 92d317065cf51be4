#include "data/templates.h"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/yaml_config.h"
#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;

namespace tuner {

namespace {

// Field order: name, SYSTEM, INSTRUCTION, SUFFIX, SUFFIX_AS_EOS, SEP, STOP_WORDS, special tokens.
// Strings as the reference defines them (XTuner xtuner/utils/templates.py); chatml is ours.
std::vector<ChatTemplate> make_templates() {
    const std::string im_system = "<|im_start|>system\n{system}<|im_end|>\n";
    const std::string im_instruction = "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n";
    const std::string llama2_system =
        "[INST] <<SYS>>\n You are a helpful, respectful and honest assistant. Always answer as helpfully as "
        "possible, while being safe. Your answers should not include any harmful, unethical, racist, sexist, "
        "toxic, dangerous, or illegal content. Please ensure that your responses are socially unbiased and "
        "positive in nature.\n{system}\n<</SYS>>\n [/INST] ";
    const std::string vicuna_system =
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions. {system}\n ";
    const std::string deepseek_coder_system =
        "You are an AI programming assistant, utilizing the DeepSeek Coder model, developed by DeepSeekCompany, "
        "and you only answer questions related to computer science. For politically sensitive questions, security "
        "and privacy issues, and other non-computer science questions, you will refuse to answer. {system}\n";
    const std::string ds_eos = "<\xEF\xBD\x9C" "end\xE2\x96\x81" "of\xE2\x96\x81" "sentence\xEF\xBD\x9C>";  // <｜end▁of▁sentence｜>
    return {
        {"default", "<|System|>:{system}\n", "<|User|>:{input}\n<|Bot|>:", "", false, "\n", {}, {}},
        {"zephyr", "<|system|>\n{system}\n", "<|user|>\n{input}\n<|assistant|>\n", "", false, "\n", {}, {}},
        {"internlm_chat", "<|System|>:{system}\n", "<|User|>:{input}<eoh>\n<|Bot|>:", "<eoa>", true, "\n", {"<eoa>"},
         {"<eoa>"}},
        {"internlm2_chat", im_system, im_instruction, "<|im_end|>", true, "\n", {"<|im_end|>"},
         {"<|im_start|>", "<|im_end|>"}},
        {"moss_sft", "{system}\n", "<|Human|>: {input}<eoh>\n", "", false, "\n", {"<eoc>", "<eom>"}, {}},
        {"llama2_chat", llama2_system, "[INST] {input} [/INST]", "", false, "\n", {}, {}},
        {"code_llama_chat", "{system}\n", "[INST] {input} [/INST]", "", false, "", {}, {}},
        {"chatglm2", "{system}\n", "[Round {round}]\n\n\xE9\x97\xAE\xEF\xBC\x9A{input}\n\n\xE7\xAD\x94\xEF\xBC\x9A", "",
         false, "\n\n", {}, {}},
        {"chatglm3", "<|system|>\n{system}", "<|user|>\n{input}<|assistant|>\n", "", false, "\n", {},
         {"<|system|>", "<|user|>", "<|assistant|>"}},
        {"qwen_chat", im_system, im_instruction, "<|im_end|>", true, "\n", {"<|im_end|>", "<|endoftext|>"},
         {"<|im_start|>", "<|im_end|>"}},
        {"baichuan_chat", "{system}\n", "<reserved_102>{input}<reserved_103>", "", false, "\n", {},
         {"<reserved_102>", "<reserved_103>"}},
        {"baichuan2_chat", "{system}\n", "<reserved_106>{input}<reserved_107>", "", false, "\n", {},
         {"<reserved_106>", "<reserved_107>"}},
        {"wizardlm", vicuna_system, "USER: {input} ASSISTANT:", "", false, "\n", {}, {}},
        {"wizardcoder",
         "Below is an instruction that describes a task. Write a response that appropriately completes the "
         "request.\n\n{system}\n ",
         "### Instruction:\n{input}\n\n### Response:", "", false, "\n\n", {}, {}},
        {"vicuna", vicuna_system, "USER: {input} ASSISTANT:", "", false, "\n", {}, {}},
        {"deepseek_coder", deepseek_coder_system, "### Instruction:\n{input}\n### Response:\n", "", false, "\n", {}, {}},
        {"deepseek_moe", "[INST] {system} [/INST]\n", "[INST] {input} [/INST]", "", false, "\n", {}, {}},
        {"deepseek_v2", "{system}\n\n", "User: {input}\n\nAssistant: ", ds_eos, true, "", {ds_eos}, {ds_eos}},
        {"mistral", "[INST] {system} [/INST]\n", "[INST] {input} [/INST]", "", false, "\n", {}, {}},
        {"mixtral", "[INST] {system} [/INST]\n", "[INST] {input} [/INST]", "", false, "\n", {}, {}},
        // minicpm has no SYSTEM in the reference; its chat hook renders a system text as "{system}\n".
        {"minicpm", "{system}\n", "<\xE7\x94\xA8\xE6\x88\xB7> {input} <AI>", "", false, "\n", {}, {}},
        {"minicpm3", im_system, im_instruction, "<|im_end|>", true, "\n", {"<|im_end|>", "<|endoftext|>"},
         {"<|im_start|>", "<|im_end|>"}},
        {"gemma", "<start_of_turn>system\n{system}<end_of_turn>\n",
         "<start_of_turn>user\n{input}<end_of_turn>\n<start_of_turn>model\n", "<end_of_turn>", false, "\n",
         {"<end_of_turn>"}, {"<start_of_turn>", "<end_of_turn>"}},
        {"cohere_chat", "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>{system}<|END_OF_TURN_TOKEN|>",
         "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>{input}<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>",
         "<|END_OF_TURN_TOKEN|>", true, "", {"<|END_OF_TURN_TOKEN|>"},
         {"<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>", "<|SYSTEM_TOKEN|>", "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>"}},
        {"llama3_chat", "<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>",
         "<|start_header_id|>user<|end_header_id|>\n\n{input}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
         "<|eot_id|>", true, "", {"<|eot_id|>"}, {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"}},
        {"phi3_chat", "<|system|>\n{system}<|end|>\n", "<|user|>\n{input}<|end|>\n<|assistant|>\n", "<|end|>", true,
         "\n", {"<|end|>"}, {"<|system|>", "<|user|>", "<|assistant|>", "<|end|>"}},
        // ChatML as OpenAI and many fine-tunes use it (the same strings as internlm2_chat).
        {"chatml", im_system, im_instruction, "<|im_end|>", true, "\n", {"<|im_end|>"}, {"<|im_start|>", "<|im_end|>"}},
    };
}

// Replaces each {name} of `pattern` found in `values` in one pass (values are not re-scanned).
std::string expand(const std::string& pattern, const std::vector<std::pair<std::string, std::string>>& values) {
    std::string out;
    out.reserve(pattern.size() + 64);
    for (size_t i = 0; i < pattern.size();) {
        bool done = false;
        if (pattern[i] == '{') {
            for (const auto& [k, v] : values) {
                if (pattern.compare(i + 1, k.size(), k) == 0 && i + 1 + k.size() < pattern.size() &&
                    pattern[i + 1 + k.size()] == '}') {
                    out += v;
                    i += k.size() + 2;
                    done = true;
                    break;
                }
            }
        }
        if (!done) out += pattern[i++];
    }
    return out;
}

std::string read_text(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    if (!f) return "";
    return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// A JSON file's object, or null when missing or unreadable (auto-detection only uses hints).
nlohmann::json read_json_hint(const fs::path& p) {
    std::string text = read_text(p);
    if (text.empty()) return nullptr;
    return nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
}

bool single_token(const Tokenizer& tok, const std::string& s) {
    if (tok.piece_to_id(s) < 0) return false;
    return tok.encode(s, false).size() == 1;
}

}  // namespace

const std::vector<ChatTemplate>& chat_templates() {
    static const std::vector<ChatTemplate> templates = make_templates();
    return templates;
}

const ChatTemplate* find_chat_template(const std::string& name) {
    for (const auto& t : chat_templates())
        if (t.name == name) return &t;
    return nullptr;
}

const ChatTemplate& get_chat_template(const std::string& name) {
    if (const ChatTemplate* t = find_chat_template(name)) return *t;
    std::vector<std::string> names;
    std::string list;
    for (const auto& t : chat_templates()) {
        names.push_back(t.name);
        list += (list.empty() ? "" : ", ") + t.name;
    }
    std::string near = closest_key(name, names);
    fail("[data] unknown chat template '{}'{}; templates: auto, {} (tuner templates shows them)", name,
         near.empty() ? "" : " (did you mean '" + near + "'?)", list);
}

std::string template_system(const ChatTemplate& t, const std::string& system) {
    return expand(t.system, {{"system", system}});
}

std::string template_instruction(const ChatTemplate& t, const std::string& input, int round) {
    return expand(t.instruction, {{"input", input}, {"round", std::to_string(round)}});
}

void check_template(const ChatTemplate& t, const Tokenizer& tok, const std::string& tokenizer_name) {
    for (const auto& s : t.special_tokens) {
        if (single_token(tok, s)) continue;
        size_t n = tok.encode(s, false).size();
        fail("[data] template '{}' needs '{}' to be one token, but the tokenizer {} {}; use template: auto, or the "
             "template made for this model (tuner templates lists them)",
             t.name, s, tokenizer_name,
             tok.piece_to_id(s) < 0 ? fmt::format("does not have it (it splits it into {} tokens)", n)
                                    : fmt::format("splits it into {} tokens", n));
    }
    if (!t.suffix_as_eos && tok.eos_id() < 0)
        fail("[data] template '{}' ends each answer with the tokenizer's EOS, but the tokenizer {} has no EOS token; "
             "use a template whose suffix ends the answer",
             t.name, tokenizer_name);
}

TemplateChoice auto_chat_template(const std::string& model_dir, const std::string& tokenizer_dir, const Tokenizer& tok) {
    std::string model_type, chat_template, tokenizer_class;
    if (!model_dir.empty()) {
        nlohmann::json c = read_json_hint(fs::path(model_dir) / "config.json");
        if (c.is_object() && c.contains("model_type") && c["model_type"].is_string())
            model_type = c["model_type"].get<std::string>();
    }
    for (const std::string& dir : {tokenizer_dir, model_dir}) {
        if (dir.empty() || !chat_template.empty()) continue;
        fs::path d = fs::is_directory(dir) ? fs::path(dir) : fs::path(dir).parent_path();
        nlohmann::json c = read_json_hint(d / "tokenizer_config.json");
        if (!c.is_object()) continue;
        if (c.contains("chat_template")) {
            const auto& ct = c["chat_template"];
            if (ct.is_string()) chat_template = ct.get<std::string>();
            else if (ct.is_array())  // [{name, template}, ...]: the "default" one, else the first
                for (const auto& e : ct)
                    if (e.is_object() && e.contains("template") && e["template"].is_string() &&
                        (chat_template.empty() || (e.contains("name") && e["name"] == "default")))
                        chat_template = e["template"].get<std::string>();
        }
        if (c.contains("tokenizer_class") && c["tokenizer_class"].is_string())
            tokenizer_class = c["tokenizer_class"].get<std::string>();
    }
    auto pick = [](const char* name, std::string reason) {
        return TemplateChoice{find_chat_template(name), "auto: " + reason};
    };
    bool qwen = model_type.rfind("qwen", 0) == 0 || tokenizer_class.rfind("Qwen", 0) == 0;
    auto has = [&](const char* s) { return chat_template.find(s) != std::string::npos; };
    if (!chat_template.empty()) {
        std::string why = "the tokenizer's chat_template uses ";
        if (has("<|start_header_id|>")) return pick("llama3_chat", why + "<|start_header_id|>");
        if (has("<|im_start|>")) {
            if (model_type == "internlm2") return pick("internlm2_chat", why + "<|im_start|>, model_type internlm2");
            if (qwen) return pick("qwen_chat", why + "<|im_start|> (Qwen)");
            return pick("chatml", why + "<|im_start|>");
        }
        if (has("<start_of_turn>")) return pick("gemma", why + "<start_of_turn>");
        if (has("<|user|>") && has("<|end|>")) return pick("phi3_chat", why + "<|user|> and <|end|>");
        if (has("<|START_OF_TURN_TOKEN|>")) return pick("cohere_chat", why + "<|START_OF_TURN_TOKEN|>");
        if (has("[INST]")) {
            if (has("<<SYS>>")) return pick("llama2_chat", why + "[INST] and <<SYS>>");
            return pick("mistral", why + "[INST]");
        }
    }
    if (!model_type.empty()) {
        std::string why = "model_type " + model_type;
        if (qwen) return pick("qwen_chat", why);
        if (model_type == "internlm2") return pick("internlm2_chat", why);
        if (model_type == "internlm") return pick("internlm_chat", why);
        if (model_type.rfind("gemma", 0) == 0) return pick("gemma", why);
        if (model_type == "phi3") return pick("phi3_chat", why);
        if (model_type == "mistral" || model_type == "mixtral") return pick("mistral", why);
        if (model_type == "cohere") return pick("cohere_chat", why);
        if (model_type == "deepseek_v2") return pick("deepseek_v2", why);
        if (model_type == "minicpm") return pick("minicpm", why);
        if (model_type == "minicpm3") return pick("minicpm3", why);
        if (model_type == "chatglm") return pick("chatglm3", why);
        if (model_type == "baichuan") return pick("baichuan2_chat", why);
        if (model_type == "llama" && single_token(tok, "<|eot_id|>"))
            return pick("llama3_chat", why + " with <|eot_id|> in the vocabulary");
    }
    if (single_token(tok, "<|eot_id|>") && single_token(tok, "<|start_header_id|>"))
        return pick("llama3_chat", "<|eot_id|> in the vocabulary");
    if (single_token(tok, "<|im_start|>") && single_token(tok, "<|im_end|>"))
        return pick(qwen ? "qwen_chat" : "chatml", "<|im_start|> in the vocabulary");
    if (single_token(tok, "<start_of_turn>") && single_token(tok, "<end_of_turn>"))
        return pick("gemma", "<start_of_turn> in the vocabulary");
    if (single_token(tok, "<|user|>") && single_token(tok, "<|end|>") && single_token(tok, "<|assistant|>"))
        return pick("phi3_chat", "<|user|> and <|end|> in the vocabulary");
    return pick("default", model_type.empty() ? "no chat markers found" : "model_type " + model_type + " has no chat template");
}

TemplateChoice choose_chat_template(const std::string& name, const std::string& model_dir,
                                    const std::string& tokenizer_dir, const Tokenizer& tok) {
    if (name == "auto" || name.empty()) return auto_chat_template(model_dir, tokenizer_dir, tok);
    return TemplateChoice{&get_chat_template(name), "set in the config"};
}

}  // namespace tuner
