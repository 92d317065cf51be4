// Records -> token samples with labels, as the reference (XTuner's encode_fn) builds them.
//
// Labels are per token and not shifted: labels[i] is tokens[i] when token i is trained, -100
// otherwise. The trainer's targets are shifted (targets[t] = labels[t+1]); packing.h does that.
//
// Chat record, per turn i (see templates.h for SYSTEM / INSTRUCTION / SUFFIX / SEP):
//   [BOS when the previous turn ended with EOS, or i == 0]   -100
//   SYSTEM(system) when non-empty + INSTRUCTION(input, i+1)   -100   (one encode call)
//   output + SUFFIX                                           trained (one encode call; -100 when
//   [EOS when the template's suffix does not act as EOS]      trained  the turn has loss false)
//   SEP                                                       -100
// Each text is encoded with add_special_tokens=false; special-token strings inside the text
// (the template's markers) are matched as single tokens, as Hugging Face does.
// Text record: [BOS when the tokenizer adds one] + text + EOS, all trained (DESIGN.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/readers.h"
#include "data/templates.h"

namespace tuner {

class Tokenizer;

constexpr int32_t kIgnoreLabel = -100;

struct EncodeOptions {
    int32_t bos_id = -1;       // -1: none
    int32_t eos_id = -1;
    bool chat_bos = false;     // BOS at the start of a chat sample and after each EOS
    bool text_bos = false;     // BOS at the start of a text record
    bool text_eos = true;      // EOS after a text record (when the tokenizer has one)
};

// The options the reference uses for this tokenizer: chat BOS when the tokenizer defines a BOS
// token; text BOS when its post-processor adds one. add_bos (-1 auto, 0, 1) overrides both.
EncodeOptions encode_options_for(const Tokenizer& tok, int add_bos);

// Appends a record's tokens and labels.
void encode_chat(const Record& r, const ChatTemplate& t, const Tokenizer& tok, const EncodeOptions& o,
                 std::vector<int32_t>* tokens, std::vector<int32_t>* labels);
void encode_text(const Record& r, const Tokenizer& tok, const EncodeOptions& o, std::vector<int32_t>* tokens,
                 std::vector<int32_t>* labels);

struct SampleInfo {
    int32_t source = 0;    // DataSource index
    int32_t file = 0;      // index into the reader's file list
    int64_t line = 0;      // where the record starts
    int32_t turns = 0;     // turns of the record (0 for text)
    bool truncated = false;
    int32_t chunk = -1;    // text records split into max_length pieces: the piece number
};

// Samples stored back to back: sample i is tokens/labels[offsets[i], offsets[i+1]).
struct SampleSet {
    std::vector<int32_t> tokens, labels;
    std::vector<int64_t> offsets{0};
    std::vector<SampleInfo> info;

    int64_t size() const { return int64_t(info.size()); }
    int64_t length(int64_t i) const { return offsets[i + 1] - offsets[i]; }
    const int32_t* tokens_of(int64_t i) const { return tokens.data() + offsets[i]; }
    const int32_t* labels_of(int64_t i) const { return labels.data() + offsets[i]; }
    // Tokens whose next token is trained (what the loss counts): labels[1..] != -100.
    int64_t trained(int64_t i) const;
    void add(const int32_t* toks, const int32_t* labs, int64_t n, const SampleInfo& si);
};

enum class RenderStyle { Markers, Color };

// The sample's text with trained tokens marked: [[...]] around trained spans (Markers), or
// trained spans in green and the rest dimmed (Color, ANSI escapes). Each span is decoded on its
// own, special tokens included.
std::string render_sample(const int32_t* tokens, const int32_t* labels, int64_t n, const Tokenizer& tok,
                          RenderStyle style);

}  // namespace tuner
