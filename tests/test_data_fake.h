// A tokenizer for data-pipeline tests: one token per byte (ids 0..255) plus special tokens
// (ids 256, 257, ...) that are matched before bytes, longest first, as Hugging Face matches added
// tokens. Expected token sequences can then be written by hand from the rendered text.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace tuner::testing {

// The Tokenizer interface grows incremental decoding (DecodeState, decode_append, describe);
// this base implements those only when the interface has them, so the fake builds either way.
template <typename T>
concept HasDecodeState = requires { typename T::DecodeState; };

template <typename Base, bool = HasDecodeState<Base>>
class FakeTokenizerBase : public Base {};

template <typename Base>
class FakeTokenizerBase<Base, true> : public Base {
  public:
    void decode_append(typename Base::DecodeState& state, int32_t id, bool skip_special,
                       std::string& bytes) const override {
        if (id < 0 || id >= this->vocab_size()) return;
        if (skip_special && this->is_special(id)) return;
        state.tokens++;
        bytes += this->id_to_piece(id);
    }
    std::string describe() const override { return "fake (one token per byte)"; }
};

class FakeTokenizer : public FakeTokenizerBase<Tokenizer> {
  public:
    // specials: extra single-token strings; bos/eos ("" for none) are added to them.
    explicit FakeTokenizer(std::vector<std::string> specials = {}, std::string bos = "<s>", std::string eos = "</s>",
                           bool adds_bos = true) {
        if (!bos.empty()) specials.push_back(bos);
        if (!eos.empty()) specials.push_back(eos);
        specials_ = specials;
        if (!bos.empty()) bos_id_ = piece_to_id(bos);
        if (!eos.empty()) eos_id_ = piece_to_id(eos);
        add_bos_ = adds_bos && bos_id_ >= 0;
        by_length_ = specials_;
        std::sort(by_length_.begin(), by_length_.end(),
                  [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
    }

    std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override {
        std::vector<int32_t> ids;
        if (add_special_tokens && add_bos_) ids.push_back(bos_id_);
        for (size_t i = 0; i < text.size();) {
            bool matched = false;
            for (const auto& s : by_length_) {
                if (!s.empty() && text.compare(i, s.size(), s) == 0) {
                    ids.push_back(piece_to_id(s));
                    i += s.size();
                    matched = true;
                    break;
                }
            }
            if (!matched) ids.push_back(static_cast<unsigned char>(text[i++]));
        }
        return ids;
    }
    std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override {
        std::string out;
        for (int32_t id : ids) {
            if (id < 256) out += char(id);
            else if (!skip_special) out += specials_[size_t(id - 256)];
        }
        return out;
    }
    int64_t vocab_size() const override { return 256 + int64_t(specials_.size()); }
    std::string id_to_piece(int32_t id) const override {
        return id < 256 ? std::string(1, char(id)) : specials_[size_t(id - 256)];
    }
    int32_t piece_to_id(std::string_view piece) const override {
        for (size_t i = 0; i < specials_.size(); i++)
            if (specials_[i] == piece) return int32_t(256 + i);
        if (piece.size() == 1) return static_cast<unsigned char>(piece[0]);
        return -1;
    }
    bool is_special(int32_t id) const override { return id >= 256; }

    // The id of a special string (for hand-written expectations).
    int32_t id(const std::string& s) const { return piece_to_id(s); }

  private:
    std::vector<std::string> specials_, by_length_;
};

// Every special string the built-in templates use.
inline std::vector<std::string> all_template_specials() {
    return {"<|im_start|>",  "<|im_end|>",          "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
            "<|system|>",    "<|user|>",            "<|assistant|>",       "<|end|>",           "<start_of_turn>",
            "<end_of_turn>", "<|endoftext|>",       "<eoa>",               "<reserved_102>",    "<reserved_103>",
            "<reserved_106>", "<reserved_107>",     "<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>",
            "<|SYSTEM_TOKEN|>", "<|USER_TOKEN|>",   "<|CHATBOT_TOKEN|>",
            "<\xEF\xBD\x9C" "end\xE2\x96\x81" "of\xE2\x96\x81" "sentence\xEF\xBD\x9C>"};
}

}  // namespace tuner::testing
