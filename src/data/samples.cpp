#include "data/samples.h"

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace tuner {

EncodeOptions encode_options_for(const Tokenizer& tok, int add_bos) {
    EncodeOptions o;
    o.bos_id = tok.bos_id();
    o.eos_id = tok.eos_id();
    bool has_bos = o.bos_id >= 0;
    o.chat_bos = add_bos < 0 ? has_bos : (add_bos == 1 && has_bos);
    o.text_bos = add_bos < 0 ? (has_bos && tok.adds_bos()) : (add_bos == 1 && has_bos);
    o.text_eos = o.eos_id >= 0;
    return o;
}

namespace {

void append(std::vector<int32_t>* tokens, std::vector<int32_t>* labels, const std::vector<int32_t>& ids, bool trained) {
    tokens->insert(tokens->end(), ids.begin(), ids.end());
    if (trained) labels->insert(labels->end(), ids.begin(), ids.end());
    else labels->insert(labels->end(), ids.size(), kIgnoreLabel);
}

void append_one(std::vector<int32_t>* tokens, std::vector<int32_t>* labels, int32_t id, bool trained) {
    tokens->push_back(id);
    labels->push_back(trained ? id : kIgnoreLabel);
}

}  // namespace

void encode_chat(const Record& r, const ChatTemplate& t, const Tokenizer& tok, const EncodeOptions& o,
                 std::vector<int32_t>* tokens, std::vector<int32_t>* labels) {
    bool needs_bos = true;
    std::vector<int32_t> sep_ids;
    if (!t.sep.empty()) sep_ids = tok.encode(t.sep, false);
    for (size_t i = 0; i < r.turns.size(); i++) {
        const Turn& turn = r.turns[i];
        if (needs_bos && o.chat_bos && o.bos_id >= 0) append_one(tokens, labels, o.bos_id, false);
        std::string prompt;
        if (!turn.system.empty()) prompt = template_system(t, turn.system);
        prompt += template_instruction(t, turn.input, int(i) + 1);
        append(tokens, labels, tok.encode(prompt, false), false);
        append(tokens, labels, tok.encode(turn.output + t.suffix, false), turn.train);
        if (!t.suffix_as_eos) {
            if (o.eos_id < 0) fail("[data] template '{}' needs the tokenizer's EOS, but it has none", t.name);
            append_one(tokens, labels, o.eos_id, turn.train);
            needs_bos = true;
        } else {
            needs_bos = false;
        }
        append(tokens, labels, sep_ids, false);
    }
}

void encode_text(const Record& r, const Tokenizer& tok, const EncodeOptions& o, std::vector<int32_t>* tokens,
                 std::vector<int32_t>* labels) {
    if (o.text_bos && o.bos_id >= 0) append_one(tokens, labels, o.bos_id, true);
    append(tokens, labels, tok.encode(r.text, false), true);
    if (o.text_eos && o.eos_id >= 0) append_one(tokens, labels, o.eos_id, true);
}

int64_t SampleSet::trained(int64_t i) const {
    const int32_t* l = labels_of(i);
    int64_t n = length(i), c = 0;
    for (int64_t k = 1; k < n; k++) c += l[k] != kIgnoreLabel;
    return c;
}

void SampleSet::add(const int32_t* toks, const int32_t* labs, int64_t n, const SampleInfo& si) {
    tokens.insert(tokens.end(), toks, toks + n);
    labels.insert(labels.end(), labs, labs + n);
    offsets.push_back(int64_t(tokens.size()));
    info.push_back(si);
}

std::string render_sample(const int32_t* tokens, const int32_t* labels, int64_t n, const Tokenizer& tok,
                          RenderStyle style) {
    std::string out;
    int64_t i = 0;
    while (i < n) {
        bool trained = labels[i] != kIgnoreLabel;
        int64_t j = i;
        while (j < n && (labels[j] != kIgnoreLabel) == trained) j++;
        std::string text = tok.decode(std::vector<int32_t>(tokens + i, tokens + j), false);
        if (style == RenderStyle::Markers) {
            out += trained ? "[[" + text + "]]" : text;
        } else {
            out += trained ? "\x1b[32m" + text + "\x1b[0m" : "\x1b[2m" + text + "\x1b[0m";
        }
        i = j;
    }
    return out;
}

}  // namespace tuner
