// Chat templates: the named prompt templates of the reference system (XTuner), with its exact
// strings, plus `chatml`. A conversation of turns {system?, input, output} is rendered per turn as
//
//   [BOS] SYSTEM(system, when non-empty) INSTRUCTION(input, round) | output SUFFIX [EOS] | SEP
//
// where the part between bars is trained (when the turn is trained) and the rest is not (label
// -100). SUFFIX is appended to every output; when the suffix does not act as EOS
// (suffix_as_eos false) the tokenizer's EOS follows it and is trained too, and the next turn
// starts with BOS again. SEP follows every turn, the last one included. `{system}`, `{input}`
// and `{round}` (1-based turn number) are replaced once; text inside the values is not
// re-expanded.
#pragma once

#include <string>
#include <vector>

namespace tuner {

class Tokenizer;

struct ChatTemplate {
    std::string name;
    std::string system;       // contains {system}
    std::string instruction;  // contains {input}, optionally {round}
    std::string suffix;       // appended to every assistant output ("" for none)
    bool suffix_as_eos = false;
    std::string sep;          // after every turn ("" for none)
    std::vector<std::string> stop_words;
    // Strings the template relies on being one token each in the model's tokenizer (its
    // special tokens); check_template verifies them.
    std::vector<std::string> special_tokens;
};

// Every template, in the order `tuner templates` lists them.
const std::vector<ChatTemplate>& chat_templates();
// By name; nullptr when unknown.
const ChatTemplate* find_chat_template(const std::string& name);
// By name; an unknown name is an error that lists the names and the closest one.
const ChatTemplate& get_chat_template(const std::string& name);

// The SYSTEM block for a system text, and the INSTRUCTION block for an input of turn `round`.
std::string template_system(const ChatTemplate& t, const std::string& system);
std::string template_instruction(const ChatTemplate& t, const std::string& input, int round);

// Checks that each of the template's special strings is a single token of the tokenizer and that
// an EOS exists when the template appends one. Errors name the template and the token:
//   [data] template 'qwen_chat' needs '<|im_end|>' to be one token, but tokenizer X splits it into 6
// `tokenizer_name` names the tokenizer in messages.
void check_template(const ChatTemplate& t, const Tokenizer& tok, const std::string& tokenizer_name);

struct TemplateChoice {
    const ChatTemplate* tmpl = nullptr;
    std::string reason;  // why it was chosen ("auto: model_type qwen2")
};

// template: auto. Looks at, in order: the Jinja chat_template of tokenizer_config.json (its
// marker tokens), config.json's model_type, then the tokenizer's vocabulary (<|eot_id|>,
// <|im_start|>, ...); falls back to `default`. Either folder may be "".
TemplateChoice auto_chat_template(const std::string& model_dir, const std::string& tokenizer_dir, const Tokenizer& tok);

// Resolves `name` ("auto" or a template name).
TemplateChoice choose_chat_template(const std::string& name, const std::string& model_dir,
                                    const std::string& tokenizer_dir, const Tokenizer& tok);

}  // namespace tuner
