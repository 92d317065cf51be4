// WordPiece (BERT) tokenizer: see wordpiece.h. The normalizer, pre-tokenizer and model follow
// Hugging Face tokenizers (normalizers/bert.rs, pre_tokenizers/bert.rs, models/wordpiece),
// whose ids llama.cpp's reference vectors hold; character classes come from ICU.
#include "tokenizer/wordpiece.h"

#include <algorithm>

#include <unicode/uchar.h>

#include "core/error.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/unicode_norm.h"
#include "tokenizer/utf8.h"

namespace tuner {

namespace {

const char* const kWordStart = "\xE2\x96\x81";  // U+2581, llama.cpp's mark of a word-initial piece
constexpr size_t kWordStartLen = 3;

// tokenizers' is_whitespace: \t \n \r and Unicode White_Space.
bool is_bert_whitespace(char32_t c) { return c == '\t' || c == '\n' || c == '\r' || utf8::is_whitespace(c); }

// tokenizers' is_control: categories C* (Cc, Cf, Cs, Co, Cn), except \t \n \r (whitespace there).
bool is_bert_control(char32_t c) {
    if (c == '\t' || c == '\n' || c == '\r') return false;
    switch (u_charType(UChar32(c))) {
        case U_CONTROL_CHAR:
        case U_FORMAT_CHAR:
        case U_SURROGATE:
        case U_PRIVATE_USE_CHAR:
        case U_UNASSIGNED: return true;
        default: return false;
    }
}

// tokenizers' is_bert_punc: ASCII punctuation (which includes $ + < = > ^ ` | ~, symbols in
// Unicode's terms) and Unicode punctuation P*.
bool is_bert_punctuation(char32_t c) {
    if (c < 0x80) return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') || (c >= '{' && c <= '~');
    return u_ispunct(UChar32(c));
}

// The CJK Unified Ideographs blocks BERT pads with spaces (tokenizers' is_chinese_char).
bool is_cjk(char32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// Calls f(code point, byte offset, byte length) for each character of valid UTF-8 s.
template <class F>
void for_each_char(std::string_view s, F&& f) {
    for (size_t p = 0; p < s.size();) {
        size_t len = utf8::valid_sequence_length(s, p);
        if (!len) len = 1;  // not reached: input is sanitized first
        f(utf8::decode_at(s, p, len), p, len);
        p += len;
    }
}

class WordPieceTokenizer final : public Tokenizer {
  public:
    explicit WordPieceTokenizer(WordPieceVocab v);

    std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override;
    void decode_append(DecodeState& state, int32_t id, bool skip_special, std::string& bytes) const override;
    int64_t vocab_size() const override { return int64_t(v_.pieces.size()); }
    std::string id_to_piece(int32_t id) const override {
        return id >= 0 && size_t(id) < v_.pieces.size() ? v_.pieces[size_t(id)] : std::string();
    }
    int32_t piece_to_id(std::string_view piece) const override {
        auto it = ids_.find(piece);
        return it == ids_.end() ? -1 : it->second;
    }
    bool is_special(int32_t id) const override {
        return id >= 0 && size_t(id) < v_.special.size() && v_.special[size_t(id)];
    }
    std::string describe() const override {
        return fmt::format("{} (WordPiece, {} tokens, {})", v_.where, v_.pieces.size(), v_.lowercase ? "uncased" : "cased");
    }

  private:
    void encode_text(std::string_view text, std::vector<int32_t>& ids) const;
    void encode_word(std::string_view word, std::vector<int32_t>& ids) const;

    WordPieceVocab v_;
    PieceMap ids_;  // GGUF spelling -> id
    // Special tokens by first byte, longest first (leftmost-longest matching in the raw text).
    std::vector<int32_t> special_by_byte_[256];
};

WordPieceTokenizer::WordPieceTokenizer(WordPieceVocab v) : v_(std::move(v)) {
    const size_t n = v_.pieces.size();
    auto check = [&](int32_t id, const char* what) {
        if (id < 0 || size_t(id) >= n) fail("[tokenizer] {}: {} id {} is not a token (the vocabulary has {})", v_.where, what, id, n);
    };
    check(v_.unk_id, "the unknown token's");
    if (v_.bos_id >= 0) check(v_.bos_id, "BOS");
    if (v_.eos_id >= 0) check(v_.eos_id, "EOS");
    for (int32_t id : v_.prefix) check(id, "a prefix");
    for (int32_t id : v_.suffix) check(id, "a suffix");
    if (v_.max_input_chars_per_word == 0) fail("[tokenizer] {}: max_input_chars_per_word is 0", v_.where);
    v_.special.resize(n, 0);
    ids_.reserve(n);
    for (size_t i = 0; i < n; i++) {
        if (!ids_.emplace(v_.pieces[i], int32_t(i)).second)
            fail("[tokenizer] {}: token '{}' appears twice", v_.where, v_.pieces[i]);
        if (v_.special[i] && !v_.pieces[i].empty()) special_by_byte_[uint8_t(v_.pieces[i][0])].push_back(int32_t(i));
    }
    for (auto& list : special_by_byte_)
        std::stable_sort(list.begin(), list.end(),
                         [&](int32_t a, int32_t b) { return v_.pieces[size_t(a)].size() > v_.pieces[size_t(b)].size(); });
    bos_id_ = v_.bos_id;
    eos_id_ = v_.eos_id;
    prefix_ids_ = v_.prefix;
    suffix_ids_ = v_.suffix;
    add_bos_ = bos_id_ >= 0 && std::find(prefix_ids_.begin(), prefix_ids_.end(), bos_id_) != prefix_ids_.end();
    add_eos_ = eos_id_ >= 0 && std::find(suffix_ids_.begin(), suffix_ids_.end(), eos_id_) != suffix_ids_.end();
}

std::vector<int32_t> WordPieceTokenizer::encode(std::string_view raw, bool add_special_tokens) const {
    std::string clean;
    if (!utf8::is_valid(raw)) {
        clean = utf8::sanitize(raw);
        raw = clean;
    }
    std::vector<int32_t> ids;
    if (add_special_tokens) ids = prefix_ids_;
    // Special tokens first, on the raw text (tokenizers' added tokens with normalized=false).
    size_t from = 0;
    for (size_t p = 0; p < raw.size(); p++) {
        for (int32_t id : special_by_byte_[uint8_t(raw[p])]) {
            const std::string& t = v_.pieces[size_t(id)];
            if (raw.compare(p, t.size(), t) != 0) continue;
            encode_text(raw.substr(from, p - from), ids);
            ids.push_back(id);
            p += t.size() - 1;
            from = p + 1;
            break;
        }
    }
    encode_text(raw.substr(from), ids);
    if (add_special_tokens) ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
    return ids;
}

void WordPieceTokenizer::encode_text(std::string_view text, std::vector<int32_t>& ids) const {
    if (text.empty()) return;
    // BertNormalizer: clean_text and handle_chinese_chars ...
    std::string s;
    s.reserve(text.size() + 8);
    for_each_char(text, [&](char32_t c, size_t p, size_t len) {
        if (c == 0 || c == utf8::kReplacement || is_bert_control(c)) return;
        if (is_bert_whitespace(c)) {
            s.push_back(' ');
        } else if (is_cjk(c)) {
            s.push_back(' ');
            s.append(text.substr(p, len));
            s.push_back(' ');
        } else {
            s.append(text.substr(p, len));
        }
    });
    // ... then strip_accents (NFD, drop Mn) and lowercase, in that order.
    if (v_.lowercase) s = unicode_lowercase(unicode_strip_marks(unicode_normalize(s, NormalForm::NFD)));
    // BertPreTokenizer: whitespace separates words, each punctuation character is a word.
    size_t word = std::string::npos;  // start of the word being collected
    for_each_char(s, [&](char32_t c, size_t p, size_t len) {
        const bool space = is_bert_whitespace(c), punct = !space && is_bert_punctuation(c);
        if ((space || punct) && word != std::string::npos) {
            encode_word(std::string_view(s).substr(word, p - word), ids);
            word = std::string::npos;
        }
        if (punct) encode_word(std::string_view(s).substr(p, len), ids);
        else if (!space && word == std::string::npos) word = p;
    });
    if (word != std::string::npos) encode_word(std::string_view(s).substr(word), ids);
}

// Greedy longest-match-first (tokenizers' WordPiece::tokenize): from each position, the longest
// piece of the vocabulary that matches; the first piece is looked up as a word-initial one.
void WordPieceTokenizer::encode_word(std::string_view word, std::vector<int32_t>& ids) const {
    std::vector<size_t> bounds;  // byte offset of each character, then the end
    for_each_char(word, [&](char32_t, size_t p, size_t) { bounds.push_back(p); });
    if (bounds.size() > v_.max_input_chars_per_word) {
        ids.push_back(v_.unk_id);
        return;
    }
    bounds.push_back(word.size());
    const size_t first = ids.size();
    std::string key;
    for (size_t start = 0; start + 1 < bounds.size();) {
        int32_t found = -1;
        size_t end = bounds.size() - 1;
        for (; end > start; end--) {
            key.clear();
            if (start == 0) key = kWordStart;
            key.append(word.substr(bounds[start], bounds[end] - bounds[start]));
            auto it = ids_.find(key);
            if (it != ids_.end()) {
                found = it->second;
                break;
            }
        }
        if (found < 0) {
            // Some position has no piece: the whole word is unknown.
            ids.resize(first);
            ids.push_back(v_.unk_id);
            return;
        }
        ids.push_back(found);
        start = end;
    }
}

void WordPieceTokenizer::decode_append(DecodeState& state, int32_t id, bool skip_special, std::string& bytes) const {
    if (id < 0 || size_t(id) >= v_.pieces.size()) return;  // no such token: skipped
    if (skip_special && v_.special[size_t(id)]) return;
    const std::string& piece = v_.pieces[size_t(id)];
    const bool first = state.tokens++ == 0;
    const bool word_start = piece.compare(0, kWordStartLen, kWordStart) == 0;
    const bool bracketed = piece.size() >= 2 && piece.front() == '[' && piece.back() == ']';
    if (word_start || bracketed || v_.special[size_t(id)]) {
        if (!first) bytes.push_back(' ');
        bytes.append(piece, word_start ? kWordStartLen : 0, std::string::npos);
    } else {
        bytes += piece;  // a continuation ("##ing" in BERT's own vocabulary)
    }
}

}  // namespace

std::unique_ptr<Tokenizer> make_wordpiece_tokenizer(WordPieceVocab vocab) {
    return std::make_unique<WordPieceTokenizer>(std::move(vocab));
}

}  // namespace tuner
