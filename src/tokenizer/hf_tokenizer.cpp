// Hugging Face tokenizer.json with a BPE model, following the tokenizers library's pipeline:
//
//   text -> added tokens matched on the raw text (normalized=false tokens)
//        -> each remaining segment normalized (normalizer), then normalized=true added tokens
//        -> each remaining piece pre-tokenized into words (pre_tokenizer)
//        -> each word through the BPE model
//        -> with add_special_tokens, the post-processor's template around it all
//
// and decoding token by token through the decoder chain (see decode_append). Every part of the
// JSON is checked as it is read; anything unexpected is a tuner::Error naming the file and the
// JSON path of the offending value, so the fuzz target can feed it arbitrary bytes.
#include <algorithm>
#include <cctype>
#include <cstring>
#include <memory>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/internal.h"
#include "tokenizer/regex.h"
#include "tokenizer/unicode_norm.h"
#include "tokenizer/utf8.h"

namespace tuner {

namespace {

using json = nlohmann::json;

// The GPT-2 pre-tokenizer regex, used by ByteLevel with use_regex=true.
const char* const kGpt2Pattern = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const char* const kMetaspace = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK
constexpr int kMaxDepth = 32;                     // nesting of Sequence components

// ---- JSON access with errors that name the file and the field -------------------------------

struct Ctx {
    const std::string& path;

    [[noreturn]] void bad(const std::string& where, const std::string& what) const {
        fail("[tokenizer] {}: {}: {}", path, where, what);
    }
    const json* field(const json& obj, const char* key) const {
        if (!obj.is_object()) return nullptr;
        auto it = obj.find(key);
        if (it == obj.end() || it->is_null()) return nullptr;
        return &*it;
    }
    const json& object(const json& v, const std::string& where) const {
        if (!v.is_object()) bad(where, "expected an object");
        return v;
    }
    const json& array(const json& v, const std::string& where) const {
        if (!v.is_array()) bad(where, "expected an array");
        return v;
    }
    std::string str(const json& v, const std::string& where) const {
        if (!v.is_string()) bad(where, "expected a string");
        return v.get<std::string>();
    }
    std::string str_field(const json& obj, const char* key, const std::string& where, const char* def = nullptr) const {
        const json* v = field(obj, key);
        if (!v) {
            if (def) return def;
            bad(where, fmt::format("'{}' is missing", key));
        }
        return str(*v, where + "." + key);
    }
    bool bool_field(const json& obj, const char* key, const std::string& where, bool def) const {
        const json* v = field(obj, key);
        if (!v) return def;
        if (!v->is_boolean()) bad(where + "." + key, "expected true or false");
        return v->get<bool>();
    }
    int64_t int_field(const json& obj, const char* key, const std::string& where, int64_t def) const {
        const json* v = field(obj, key);
        if (!v) return def;
        return integer(*v, where + "." + key);
    }
    int64_t integer(const json& v, const std::string& where) const {
        if (v.is_number_unsigned()) {
            uint64_t u = v.get<uint64_t>();
            if (u > uint64_t(INT32_MAX)) bad(where, "number out of range");
            return int64_t(u);
        }
        if (v.is_number_integer()) {
            int64_t i = v.get<int64_t>();
            if (i < INT32_MIN || i > INT32_MAX) bad(where, "number out of range");
            return i;
        }
        bad(where, "expected an integer");
    }
    std::string type_of(const json& v, const std::string& where) const {
        object(v, where);
        return str_field(v, "type", where);
    }
    // One Unicode character given as a string (Metaspace's replacement, Strip's content).
    std::string one_char(const json& v, const std::string& where) const {
        std::string s = str(v, where);
        if (s.empty() || utf8::valid_sequence_length(s, 0) != s.size()) bad(where, "expected a single character");
        return s;
    }
};

// ---- patterns: a literal string or a regex ----------------------------------------------------

struct Pattern {
    std::string literal;
    std::unique_ptr<Regex> regex;

    // Non-empty, non-overlapping matches, left to right.
    void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
        if (regex) {
            regex->find_all(s, out);
            return;
        }
        if (literal.empty()) return;
        size_t pos = 0;
        while ((pos = s.find(literal, pos)) != std::string_view::npos) {
            out.emplace_back(pos, pos + literal.size());
            pos += literal.size();
        }
    }
};

Pattern parse_pattern(const Ctx& c, const json& v, const std::string& where) {
    c.object(v, where);
    Pattern p;
    if (const json* s = c.field(v, "String")) {
        p.literal = c.str(*s, where + ".String");
    } else if (const json* r = c.field(v, "Regex")) {
        p.regex = std::make_unique<Regex>(c.str(*r, where + ".Regex"), c.path + ": " + where);
    } else {
        c.bad(where, "expected {\"String\": ...} or {\"Regex\": ...}");
    }
    return p;
}

void replace_all(std::string& s, const Pattern& p, const std::string& content) {
    thread_local std::vector<std::pair<size_t, size_t>> m;
    m.clear();
    p.find_all(s, m);
    if (m.empty()) return;
    std::string out;
    out.reserve(s.size());
    size_t prev = 0;
    for (auto [a, b] : m) {
        out.append(s, prev, a - prev);
        out += content;
        prev = b;
    }
    out.append(s, prev, std::string::npos);
    s = std::move(out);
}

// ---- normalizers ------------------------------------------------------------------------------

struct Normalizer {
    virtual ~Normalizer() = default;
    virtual void apply(std::string& s) const = 0;
};

struct SequenceNormalizer : Normalizer {
    std::vector<std::unique_ptr<Normalizer>> parts;
    void apply(std::string& s) const override {
        for (const auto& p : parts) p->apply(s);
    }
};
struct FormNormalizer : Normalizer {
    NormalForm form;
    explicit FormNormalizer(NormalForm f) : form(f) {}
    void apply(std::string& s) const override { s = unicode_normalize(s, form); }
};
struct LowercaseNormalizer : Normalizer {
    void apply(std::string& s) const override { s = unicode_lowercase(s); }
};
struct StripAccentsNormalizer : Normalizer {
    void apply(std::string& s) const override { s = unicode_strip_marks(s); }
};
struct PrependNormalizer : Normalizer {
    std::string text;
    void apply(std::string& s) const override {
        if (!s.empty()) s.insert(0, text);
    }
};
struct AppendNormalizer : Normalizer {
    std::string text;
    void apply(std::string& s) const override {
        if (!s.empty()) s += text;
    }
};
struct ReplaceNormalizer : Normalizer {
    Pattern pattern;
    std::string content;
    void apply(std::string& s) const override { replace_all(s, pattern, content); }
};
// Strips Unicode whitespace on the left and/or right.
struct StripNormalizer : Normalizer {
    bool left = true, right = true;
    void apply(std::string& s) const override {
        size_t b = 0, e = s.size();
        if (left) {
            while (b < e) {
                size_t len = utf8::valid_sequence_length(s, b);
                if (!len || !utf8::is_whitespace(utf8::decode_at(s, b, len))) break;
                b += len;
            }
        }
        if (right) {
            while (e > b) {
                size_t k = e - 1;
                while (k > b && (uint8_t(s[k]) & 0xC0) == 0x80) k--;
                size_t len = utf8::valid_sequence_length(s, k);
                if (!len || k + len != e || !utf8::is_whitespace(utf8::decode_at(s, k, len))) break;
                e = k;
            }
        }
        s = s.substr(b, e - b);
    }
};

std::unique_ptr<Normalizer> parse_normalizer(const Ctx& c, const json& v, const std::string& where, int depth) {
    if (depth > kMaxDepth) c.bad(where, "normalizers nested too deeply");
    std::string type = c.type_of(v, where);
    if (type == "Sequence") {
        auto n = std::make_unique<SequenceNormalizer>();
        const json* list = c.field(v, "normalizers");
        if (!list) c.bad(where, "'normalizers' is missing");
        c.array(*list, where + ".normalizers");
        for (size_t i = 0; i < list->size(); i++)
            n->parts.push_back(parse_normalizer(c, (*list)[i], fmt::format("{}.normalizers[{}]", where, i), depth + 1));
        return n;
    }
    if (type == "NFC") return std::make_unique<FormNormalizer>(NormalForm::NFC);
    if (type == "NFD") return std::make_unique<FormNormalizer>(NormalForm::NFD);
    if (type == "NFKC") return std::make_unique<FormNormalizer>(NormalForm::NFKC);
    if (type == "NFKD") return std::make_unique<FormNormalizer>(NormalForm::NFKD);
    if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
    if (type == "StripAccents") return std::make_unique<StripAccentsNormalizer>();
    if (type == "Prepend") {
        auto n = std::make_unique<PrependNormalizer>();
        n->text = c.str_field(v, "prepend", where);
        return n;
    }
    if (type == "Append") {
        auto n = std::make_unique<AppendNormalizer>();
        n->text = c.str_field(v, "append", where);
        return n;
    }
    if (type == "Replace") {
        auto n = std::make_unique<ReplaceNormalizer>();
        const json* p = c.field(v, "pattern");
        if (!p) c.bad(where, "'pattern' is missing");
        n->pattern = parse_pattern(c, *p, where + ".pattern");
        n->content = c.str_field(v, "content", where);
        return n;
    }
    if (type == "Strip") {
        auto n = std::make_unique<StripNormalizer>();
        n->left = c.bool_field(v, "strip_left", where, true);
        n->right = c.bool_field(v, "strip_right", where, true);
        return n;
    }
    c.bad(where, fmt::format("normalizer type '{}' is not supported yet", type));
}

// ---- pre-tokenizers ---------------------------------------------------------------------------

// Pre-tokenized words: byte ranges of one backing buffer, so that splitting copies nothing.
struct Pieces {
    struct Ref {
        size_t off, len;
        bool at_start;  // begins at offset 0 of the original text (Metaspace prepend_scheme "first")
    };
    std::string text;
    std::vector<Ref> refs;
    std::string_view view(const Ref& r) const { return std::string_view(text).substr(r.off, r.len); }
};

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

SplitBehavior parse_behavior(const Ctx& c, const json& v, const std::string& where) {
    std::string b = c.str(v, where);
    if (b == "Removed") return SplitBehavior::Removed;
    if (b == "Isolated") return SplitBehavior::Isolated;
    if (b == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
    if (b == "MergedWithNext") return SplitBehavior::MergedWithNext;
    if (b == "Contiguous") return SplitBehavior::Contiguous;
    c.bad(where, fmt::format("unknown split behavior '{}'", b));
}

// Cuts the piece r (of length n) at the given matches (relative to r) as tokenizers'
// NormalizedString::split does, appending the non-empty parts to out.
void split_piece(const Pieces::Ref& r, const std::vector<std::pair<size_t, size_t>>& matches,
                 SplitBehavior behavior, bool invert, std::vector<Pieces::Ref>& out) {
    struct Seg {
        size_t b, e;
        bool match;
    };
    if (matches.empty()) {  // the common case: the piece is one unmatched part
        if (r.len && !(behavior == SplitBehavior::Removed && invert)) out.push_back(r);
        return;
    }
    thread_local std::vector<Seg> segs, merged;
    segs.clear();
    size_t prev = 0, n = r.len;
    for (auto [a, b] : matches) {
        if (prev < a) segs.push_back({prev, a, false});
        segs.push_back({a, b, true});
        prev = b;
    }
    if (prev < n) segs.push_back({prev, n, false});
    if (invert)
        for (auto& s : segs) s.match = !s.match;
    merged.clear();
    switch (behavior) {
        case SplitBehavior::Removed:
            for (auto& s : segs)
                if (!s.match) merged.push_back(s);
            break;
        case SplitBehavior::Isolated: merged = segs; break;
        case SplitBehavior::MergedWithPrevious: {
            bool prev_match = false;
            for (auto& s : segs) {
                if (s.match && !prev_match && !merged.empty())
                    merged.back().e = s.e;
                else
                    merged.push_back(s);
                prev_match = s.match;
            }
            break;
        }
        case SplitBehavior::MergedWithNext: {
            bool next_match = false;
            for (size_t i = segs.size(); i-- > 0;) {
                const Seg& s = segs[i];
                if (s.match && !next_match && !merged.empty())
                    merged.back().b = s.b;
                else
                    merged.push_back(s);
                next_match = s.match;
            }
            std::reverse(merged.begin(), merged.end());
            break;
        }
        case SplitBehavior::Contiguous: {
            bool prev_match = false;
            for (size_t i = 0; i < segs.size(); i++) {
                const Seg& s = segs[i];
                if (i > 0 && s.match == prev_match)
                    merged.back().e = s.e;
                else
                    merged.push_back(s);
                prev_match = s.match;
            }
            break;
        }
    }
    for (auto& s : merged)
        if (s.e > s.b) out.push_back(Pieces::Ref{r.off + s.b, s.e - s.b, r.at_start && s.b == 0});
}

// Splits every piece at the matches of a pattern.
template <typename FindAll>
void split_pieces(Pieces& p, FindAll&& find_all, SplitBehavior behavior, bool invert) {
    thread_local std::vector<std::pair<size_t, size_t>> m;
    std::vector<Pieces::Ref> out;
    out.reserve(p.refs.size() * 2 + 16);
    for (const auto& r : p.refs) {
        m.clear();
        find_all(p.view(r), m);
        split_piece(r, m, behavior, invert, out);
    }
    p.refs = std::move(out);
}

struct PreTokenizer {
    virtual ~PreTokenizer() = default;
    virtual void apply(Pieces& pieces) const = 0;
};

struct SequencePreTokenizer : PreTokenizer {
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    void apply(Pieces& pieces) const override {
        for (const auto& p : parts) p->apply(pieces);
    }
};

struct SplitPreTokenizer : PreTokenizer {
    Pattern pattern;
    SplitBehavior behavior = SplitBehavior::Isolated;
    bool invert = false;
    void apply(Pieces& pieces) const override {
        split_pieces(
            pieces, [&](std::string_view s, auto& m) { pattern.find_all(s, m); }, behavior, invert);
    }
};

// GPT-2's reversible byte -> character map: printable Latin-1 bytes stand for themselves, the
// others take the code points from U+0100 up, in byte order.
struct ByteMap {
    char bytes[256][2];
    uint8_t length[256];
    int16_t char_to_byte[512];
    ByteMap() {
        std::fill(std::begin(char_to_byte), std::end(char_to_byte), int16_t(-1));
        int next = 256;
        for (int b = 0; b < 256; b++) {
            bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            char32_t c = printable ? char32_t(b) : char32_t(next++);
            std::string e = utf8::encode(c);
            length[b] = uint8_t(e.size());
            std::memcpy(bytes[b], e.data(), e.size());
            char_to_byte[c] = int16_t(b);
        }
    }
};
const ByteMap& byte_map() {
    static const ByteMap m;
    return m;
}

// Rewrites every piece with f(piece, out) into a fresh buffer.
template <typename F>
void rewrite_pieces(Pieces& p, F&& f) {
    std::string text;
    text.reserve(p.text.size() + p.text.size() / 2 + 16);
    for (auto& r : p.refs) {
        size_t off = text.size();
        f(p.view(r), r, text);
        r.off = off;
        r.len = text.size() - off;
    }
    p.text = std::move(text);
}

struct ByteLevelPreTokenizer : PreTokenizer {
    bool add_prefix_space = false;
    std::unique_ptr<Regex> regex;  // the GPT-2 pattern when use_regex
    void apply(Pieces& pieces) const override {
        if (add_prefix_space)
            rewrite_pieces(pieces, [](std::string_view s, const Pieces::Ref&, std::string& out) {
                if (s.empty() || s[0] != ' ') out.push_back(' ');
                out.append(s);
            });
        if (regex)
            split_pieces(
                pieces, [&](std::string_view s, auto& m) { regex->find_all(s, m); }, SplitBehavior::Isolated,
                false);
        // Map every byte to its character: at most two bytes each, written straight into place.
        const ByteMap& bm = byte_map();
        std::string text(pieces.text.size() * 2, '\0');
        char* out = text.data();
        for (auto& r : pieces.refs) {
            const char* in = pieces.text.data() + r.off;
            char* start = out;
            for (size_t i = 0; i < r.len; i++) {
                uint8_t b = uint8_t(in[i]);
                out[0] = bm.bytes[b][0];
                out[1] = bm.bytes[b][1];
                out += bm.length[b];
            }
            r.off = size_t(start - text.data());
            r.len = size_t(out - start);
        }
        text.resize(size_t(out - text.data()));
        pieces.text = std::move(text);
    }
};

enum class PrependScheme { Always, First, Never };

struct MetaspacePreTokenizer : PreTokenizer {
    std::string replacement = kMetaspace;
    PrependScheme scheme = PrependScheme::Always;
    bool split = true;
    void apply(Pieces& pieces) const override {
        rewrite_pieces(pieces, [&](std::string_view s, const Pieces::Ref& r, std::string& out) {
            bool starts = s.substr(0, replacement.size()) == replacement || (!s.empty() && s[0] == ' ');
            if (!starts && (scheme == PrependScheme::Always || (scheme == PrependScheme::First && r.at_start)))
                out += replacement;
            for (char ch : s) {
                if (ch == ' ')
                    out += replacement;
                else
                    out.push_back(ch);
            }
        });
        if (split) {
            Pattern rep;
            rep.literal = replacement;
            split_pieces(
                pieces, [&](std::string_view s, auto& m) { rep.find_all(s, m); }, SplitBehavior::MergedWithNext,
                false);
        }
    }
};

std::unique_ptr<SplitPreTokenizer> regex_split(const Ctx& c, const std::string& pattern, SplitBehavior behavior,
                                               bool invert, const std::string& where) {
    auto s = std::make_unique<SplitPreTokenizer>();
    s->pattern.regex = std::make_unique<Regex>(pattern, c.path + ": " + where);
    s->behavior = behavior;
    s->invert = invert;
    return s;
}

PrependScheme parse_prepend_scheme(const Ctx& c, const json& v, const std::string& where) {
    if (const json* s = c.field(v, "prepend_scheme")) {
        std::string x = c.str(*s, where + ".prepend_scheme");
        if (x == "always") return PrependScheme::Always;
        if (x == "first") return PrependScheme::First;
        if (x == "never") return PrependScheme::Never;
        c.bad(where + ".prepend_scheme", fmt::format("unknown prepend_scheme '{}'", x));
    }
    // Files written before prepend_scheme existed carry add_prefix_space.
    return c.bool_field(v, "add_prefix_space", where, true) ? PrependScheme::Always : PrependScheme::Never;
}

std::unique_ptr<PreTokenizer> parse_pre_tokenizer(const Ctx& c, const json& v, const std::string& where, int depth) {
    if (depth > kMaxDepth) c.bad(where, "pre-tokenizers nested too deeply");
    std::string type = c.type_of(v, where);
    if (type == "Sequence") {
        auto s = std::make_unique<SequencePreTokenizer>();
        const json* list = c.field(v, "pretokenizers");
        if (!list) c.bad(where, "'pretokenizers' is missing");
        c.array(*list, where + ".pretokenizers");
        for (size_t i = 0; i < list->size(); i++)
            s->parts.push_back(
                parse_pre_tokenizer(c, (*list)[i], fmt::format("{}.pretokenizers[{}]", where, i), depth + 1));
        return s;
    }
    if (type == "Split") {
        auto s = std::make_unique<SplitPreTokenizer>();
        const json* p = c.field(v, "pattern");
        if (!p) c.bad(where, "'pattern' is missing");
        s->pattern = parse_pattern(c, *p, where + ".pattern");
        const json* b = c.field(v, "behavior");
        if (!b) c.bad(where, "'behavior' is missing");
        s->behavior = parse_behavior(c, *b, where + ".behavior");
        s->invert = c.bool_field(v, "invert", where, false);
        return s;
    }
    if (type == "ByteLevel") {
        auto b = std::make_unique<ByteLevelPreTokenizer>();
        b->add_prefix_space = c.bool_field(v, "add_prefix_space", where, true);
        if (c.bool_field(v, "use_regex", where, true)) b->regex = std::make_unique<Regex>(kGpt2Pattern, c.path + ": " + where);
        return b;
    }
    if (type == "Metaspace") {
        auto m = std::make_unique<MetaspacePreTokenizer>();
        if (const json* r = c.field(v, "replacement")) m->replacement = c.one_char(*r, where + ".replacement");
        m->scheme = parse_prepend_scheme(c, v, where);
        m->split = c.bool_field(v, "split", where, true);
        return m;
    }
    if (type == "Digits")
        return regex_split(c, c.bool_field(v, "individual_digits", where, false) ? "\\p{N}" : "\\p{N}+",
                           SplitBehavior::Isolated, false, where);
    if (type == "Whitespace") return regex_split(c, "\\w+|[^\\w\\s]+", SplitBehavior::Removed, true, where);
    if (type == "WhitespaceSplit") return regex_split(c, "\\s+", SplitBehavior::Removed, false, where);
    if (type == "Punctuation") {
        SplitBehavior b = SplitBehavior::Isolated;
        if (const json* x = c.field(v, "behavior")) b = parse_behavior(c, *x, where + ".behavior");
        return regex_split(c, "[\\p{P}!-/:-@\\[-`{-~]", b, false, where);
    }
    if (type == "BertPreTokenizer") {
        auto s = std::make_unique<SequencePreTokenizer>();
        s->parts.push_back(regex_split(c, "\\s+", SplitBehavior::Removed, false, where));
        s->parts.push_back(regex_split(c, "[\\p{P}!-/:-@\\[-`{-~]", SplitBehavior::Isolated, false, where));
        return s;
    }
    c.bad(where, fmt::format("pre-tokenizer type '{}' is not supported yet", type));
}

// ---- decoders ---------------------------------------------------------------------------------

struct DecodeStep {
    enum Kind { ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip } kind;
    std::shared_ptr<Pattern> pattern;  // Replace
    std::string content;               // Replace: the replacement; Strip/Metaspace: the character
    int64_t start = 0, stop = 0;       // Strip
    bool prepend = true;               // Metaspace: prepend_scheme != never
};

void parse_decoder(const Ctx& c, const json& v, const std::string& where, int depth, std::vector<DecodeStep>& steps) {
    if (depth > kMaxDepth) c.bad(where, "decoders nested too deeply");
    std::string type = c.type_of(v, where);
    DecodeStep s{};
    if (type == "Sequence") {
        const json* list = c.field(v, "decoders");
        if (!list) c.bad(where, "'decoders' is missing");
        c.array(*list, where + ".decoders");
        for (size_t i = 0; i < list->size(); i++)
            parse_decoder(c, (*list)[i], fmt::format("{}.decoders[{}]", where, i), depth + 1, steps);
        return;
    }
    if (type == "ByteLevel") {
        s.kind = DecodeStep::ByteLevel;
    } else if (type == "Metaspace") {
        s.kind = DecodeStep::Metaspace;
        s.content = kMetaspace;
        if (const json* r = c.field(v, "replacement")) s.content = c.one_char(*r, where + ".replacement");
        s.prepend = parse_prepend_scheme(c, v, where) != PrependScheme::Never;
    } else if (type == "Replace") {
        s.kind = DecodeStep::Replace;
        const json* p = c.field(v, "pattern");
        if (!p) c.bad(where, "'pattern' is missing");
        s.pattern = std::make_shared<Pattern>(parse_pattern(c, *p, where + ".pattern"));
        s.content = c.str_field(v, "content", where);
    } else if (type == "ByteFallback") {
        s.kind = DecodeStep::ByteFallback;
    } else if (type == "Fuse") {
        s.kind = DecodeStep::Fuse;
    } else if (type == "Strip") {
        s.kind = DecodeStep::Strip;
        s.content = c.one_char(c.field(v, "content") ? *c.field(v, "content") : json(" "), where + ".content");
        s.start = c.int_field(v, "start", where, 0);
        s.stop = c.int_field(v, "stop", where, 0);
        if (s.start < 0 || s.stop < 0) c.bad(where, "start and stop must not be negative");
    } else {
        c.bad(where, fmt::format("decoder type '{}' is not supported yet", type));
    }
    steps.push_back(std::move(s));
}

// ---- added tokens -----------------------------------------------------------------------------

struct AddedToken {
    std::string content;
    int32_t id = -1;
    bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
};

// Leftmost-longest matching of a set of strings (a byte trie), as tokenizers' Aho-Corasick
// automaton with MatchKind::LeftmostLongest finds them.
class TokenMatcher {
  public:
    void add(const std::string& s, int32_t token) {
        if (s.empty()) return;
        int32_t node = 0;
        for (char ch : s) {
            uint64_t key = uint64_t(node) << 8 | uint8_t(ch);
            auto it = edges_.find(key);
            if (it == edges_.end()) {
                terminal_.push_back(-1);
                it = edges_.emplace(key, int32_t(terminal_.size() - 1)).first;
            }
            node = it->second;
        }
        if (terminal_[size_t(node)] < 0) terminal_[size_t(node)] = token;  // first one added wins
        first_[uint8_t(s[0])] = true;
        empty_ = false;
    }
    bool empty() const { return empty_; }
    // The leftmost, then longest, match starting at or after pos.
    bool find(std::string_view s, size_t pos, size_t* b, size_t* e, int32_t* token) const {
        for (size_t i = pos; i < s.size(); i++) {
            if (!first_[uint8_t(s[i])]) continue;
            int32_t node = 0, best = -1;
            size_t best_end = 0;
            for (size_t k = i; k < s.size(); k++) {
                auto it = edges_.find(uint64_t(node) << 8 | uint8_t(s[k]));
                if (it == edges_.end()) break;
                node = it->second;
                if (terminal_[size_t(node)] >= 0) {
                    best = terminal_[size_t(node)];
                    best_end = k + 1;
                }
            }
            if (best >= 0) {
                *b = i;
                *e = best_end;
                *token = best;
                return true;
            }
        }
        return false;
    }

  private:
    std::unordered_map<uint64_t, int32_t> edges_;
    std::vector<int32_t> terminal_{-1};  // node 0 is the root
    bool first_[256] = {};
    bool empty_ = true;
};

// ---- the tokenizer ----------------------------------------------------------------------------

class HfTokenizer final : public Tokenizer {
  public:
    HfTokenizer(const json& j, const std::string& path, const TokenizerConfig& config);

    std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override;
    void decode_append(DecodeState& state, int32_t id, bool skip_special, std::string& bytes) const override;
    int64_t vocab_size() const override { return int64_t(pieces_.size()); }
    std::string id_to_piece(int32_t id) const override {
        return id >= 0 && size_t(id) < pieces_.size() ? pieces_[size_t(id)] : std::string();
    }
    int32_t piece_to_id(std::string_view piece) const override {
        auto it = added_ids_.find(piece);
        if (it != added_ids_.end()) return it->second;
        return model_->token_to_id(piece);
    }
    bool is_special(int32_t id) const override {
        return id >= 0 && size_t(id) < special_.size() && special_[size_t(id)];
    }
    std::string describe() const override { return description_; }

  private:
    struct Segment {
        size_t b, e;
        int32_t token;  // index into added_, -1 for text
    };
    void find_added(std::string_view s, const TokenMatcher& m, std::vector<Segment>& out) const;
    void encode_segment(std::string_view s, bool at_start, std::vector<int32_t>& ids) const;
    void encode_normalized(std::string text, bool at_start, std::vector<int32_t>& ids) const;
    int32_t resolve_special(const TokenizerConfig::Token& t) const;

    std::string path_, description_;
    std::unique_ptr<BpeModel> model_;
    std::unique_ptr<Normalizer> normalizer_;
    std::unique_ptr<PreTokenizer> pre_tokenizer_;
    std::vector<DecodeStep> decoder_;
    bool has_decoder_ = false;
    std::vector<AddedToken> added_;
    PieceMap added_ids_;
    TokenMatcher raw_matcher_, normalized_matcher_;
    std::vector<std::string> pieces_;
    std::vector<uint8_t> special_, present_;
};

void parse_post_processor(const Ctx& c, const json& v, const std::string& where, int depth,
                          const HfTokenizer& tok, std::vector<int32_t>& prefix, std::vector<int32_t>& suffix);

HfTokenizer::HfTokenizer(const json& j, const std::string& path, const TokenizerConfig& config) : path_(path) {
    Ctx c{path_};
    c.object(j, "top level");

    // Model.
    const json* m = c.field(j, "model");
    if (!m) c.bad("model", "missing");
    c.object(*m, "model");
    std::string type;
    if (const json* t = c.field(*m, "type")) {
        type = c.str(*t, "model.type");
    } else {
        // tokenizers accepts a model without "type" and recognises it by its fields.
        type = c.field(*m, "merges") ? "BPE" : c.field(*m, "vocab") && (*m)["vocab"].is_array() ? "Unigram" : "WordPiece";
    }
    if (type != "BPE") fail("[tokenizer] {}: model type '{}' is not supported yet", path_, type);
    const json* vocab = c.field(*m, "vocab");
    if (!vocab) c.bad("model.vocab", "missing");
    c.object(*vocab, "model.vocab");
    PieceMap vmap;
    vmap.reserve(vocab->size());
    int64_t max_id = -1;
    for (auto it = vocab->begin(); it != vocab->end(); ++it) {
        int64_t id = c.integer(it.value(), "model.vocab[\"" + it.key() + "\"]");
        if (id < 0) c.bad("model.vocab[\"" + it.key() + "\"]", "negative id");
        vmap[it.key()] = int32_t(id);
        max_id = std::max(max_id, id);
    }
    std::vector<std::pair<std::string, std::string>> merges;
    if (const json* ms = c.field(*m, "merges")) {
        c.array(*ms, "model.merges");
        merges.reserve(ms->size());
        for (size_t i = 0; i < ms->size(); i++) {
            const json& e = (*ms)[i];
            std::string where = fmt::format("model.merges[{}]", i);
            if (e.is_string()) {
                // Legacy spelling "a b": exactly one space (tokens never contain one).
                std::string s = e.get<std::string>();
                size_t sp = s.find(' ');
                if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
                    c.bad(where, fmt::format("merge '{}' is not two tokens separated by one space", s));
                merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
            } else if (e.is_array() && e.size() == 2) {
                merges.emplace_back(c.str(e[0], where + "[0]"), c.str(e[1], where + "[1]"));
            } else {
                c.bad(where, "expected \"a b\" or [\"a\", \"b\"]");
            }
        }
    }
    BpeOptions opt;
    if (const json* u = c.field(*m, "unk_token")) opt.unk_token = c.str(*u, "model.unk_token");
    opt.continuing_subword_prefix = c.str_field(*m, "continuing_subword_prefix", "model", "");
    opt.end_of_word_suffix = c.str_field(*m, "end_of_word_suffix", "model", "");
    opt.fuse_unk = c.bool_field(*m, "fuse_unk", "model", false);
    opt.byte_fallback = c.bool_field(*m, "byte_fallback", "model", false);
    opt.ignore_merges = c.bool_field(*m, "ignore_merges", "model", false);
    if (const json* d = c.field(*m, "dropout")) {
        if (!d->is_number()) c.bad("model.dropout", "expected a number");
        if (d->get<double>() != 0.0) c.bad("model.dropout", "BPE dropout is not supported (training-time only)");
    }

    // Added tokens.
    if (const json* at = c.field(j, "added_tokens")) {
        c.array(*at, "added_tokens");
        for (size_t i = 0; i < at->size(); i++) {
            std::string where = fmt::format("added_tokens[{}]", i);
            const json& e = c.object((*at)[i], where);
            AddedToken t;
            t.content = c.str_field(e, "content", where);
            int64_t id = c.int_field(e, "id", where, -1);
            if (id < 0) c.bad(where, "'id' is missing or negative");
            t.id = int32_t(id);
            t.single_word = c.bool_field(e, "single_word", where, false);
            t.lstrip = c.bool_field(e, "lstrip", where, false);
            t.rstrip = c.bool_field(e, "rstrip", where, false);
            t.special = c.bool_field(e, "special", where, false);
            t.normalized = c.bool_field(e, "normalized", where, !t.special);
            if (t.content.empty()) continue;  // tokenizers ignores empty added tokens
            max_id = std::max(max_id, id);
            added_.push_back(std::move(t));
        }
    }
    // Ids index a dense table: refuse files whose ids are mostly holes (a fuzzed or broken file
    // must not make us allocate gigabytes).
    size_t count = vocab->size() + added_.size();
    if (max_id >= int64_t(2 * count + 1024))
        fail("[tokenizer] {}: token ids go up to {} for {} tokens (ids must be nearly contiguous)", path_, max_id, count);

    model_ = std::make_unique<BpeModel>(std::move(vmap), merges, opt, path_);
    merges.clear();
    merges.shrink_to_fit();

    pieces_.assign(size_t(max_id + 1), std::string());
    special_.assign(size_t(max_id + 1), 0);
    present_.assign(size_t(max_id + 1), 0);
    for (const auto& [piece, id] : model_->vocab()) {
        pieces_[size_t(id)] = piece;
        present_[size_t(id)] = 1;
    }
    for (size_t i = 0; i < added_.size(); i++) {
        const AddedToken& t = added_[i];
        pieces_[size_t(t.id)] = t.content;
        present_[size_t(t.id)] = 1;
        if (t.special) special_[size_t(t.id)] = 1;
        added_ids_[t.content] = t.id;
    }

    // Normalizer, pre-tokenizer, decoder.
    if (const json* n = c.field(j, "normalizer")) normalizer_ = parse_normalizer(c, *n, "normalizer", 0);
    if (const json* p = c.field(j, "pre_tokenizer")) pre_tokenizer_ = parse_pre_tokenizer(c, *p, "pre_tokenizer", 0);
    if (const json* d = c.field(j, "decoder")) {
        parse_decoder(c, *d, "decoder", 0, decoder_);
        has_decoder_ = true;
    }

    // Matchers for added tokens: normalized=false ones on the raw text, the others on the
    // normalized text (with their content normalized the same way). Special tokens first, as
    // tokenizers builds its automaton from special_tokens then added_tokens.
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < added_.size(); i++) {
            const AddedToken& t = added_[i];
            if (t.special != (pass == 0)) continue;
            if (!t.normalized) {
                raw_matcher_.add(t.content, int32_t(i));
            } else {
                std::string s = t.content;
                if (normalizer_) normalizer_->apply(s);
                normalized_matcher_.add(s, int32_t(i));
            }
        }
    }

    // Post-processor, then BOS/EOS.
    if (const json* pp = c.field(j, "post_processor"))
        parse_post_processor(c, *pp, "post_processor", 0, *this, prefix_ids_, suffix_ids_);
    for (int32_t id : prefix_ids_)
        if (id < 0 || size_t(id) >= pieces_.size() || !present_[size_t(id)])
            c.bad("post_processor", fmt::format("id {} is not a token of this tokenizer", id));
    for (int32_t id : suffix_ids_)
        if (id < 0 || size_t(id) >= pieces_.size() || !present_[size_t(id)])
            c.bad("post_processor", fmt::format("id {} is not a token of this tokenizer", id));
    bos_id_ = resolve_special(config.bos_token);
    eos_id_ = resolve_special(config.eos_token);
    if (config_controls_bos_eos(config)) {
        prefix_ids_.clear();
        suffix_ids_.clear();
        if (config.add_bos_token.value_or(true) && bos_id_ >= 0) prefix_ids_.push_back(bos_id_);
        if (config.add_eos_token.value_or(false) && eos_id_ >= 0) suffix_ids_.push_back(eos_id_);
    }
    if (!config.bos_token.present && bos_id_ < 0 && !prefix_ids_.empty()) bos_id_ = prefix_ids_.front();
    if (!config.eos_token.present && eos_id_ < 0 && !suffix_ids_.empty()) eos_id_ = suffix_ids_.back();
    if (!config.bos_token.present && bos_id_ < 0)
        for (const char* name : {"<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"})
            if ((bos_id_ = piece_to_id(name)) >= 0) break;
    if (!config.eos_token.present && eos_id_ < 0)
        for (const char* name : {"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"})
            if ((eos_id_ = piece_to_id(name)) >= 0) break;
    add_bos_ = bos_id_ >= 0 && std::find(prefix_ids_.begin(), prefix_ids_.end(), bos_id_) != prefix_ids_.end();
    add_eos_ = eos_id_ >= 0 && std::find(suffix_ids_.begin(), suffix_ids_.end(), eos_id_) != suffix_ids_.end();

    bool byte_level = false;
    for (const auto& s : decoder_) byte_level = byte_level || s.kind == DecodeStep::ByteLevel;
    description_ = fmt::format("{} ({} BPE, {} tokens, {} merges{})", path_,
                               byte_level ? "byte-level" : opt.byte_fallback ? "SentencePiece-style" : "plain",
                               pieces_.size(), model_->num_merges(), opt.ignore_merges ? ", ignore_merges" : "");
}

int32_t HfTokenizer::resolve_special(const TokenizerConfig::Token& t) const {
    if (!t.present || t.is_null) return -1;
    return piece_to_id(t.content);
}

// Post-processors only matter here for the ids they put around a single sequence.
void parse_post_processor(const Ctx& c, const json& v, const std::string& where, int depth, const HfTokenizer& tok,
                          std::vector<int32_t>& prefix, std::vector<int32_t>& suffix) {
    if (depth > kMaxDepth) c.bad(where, "post-processors nested too deeply");
    std::string type = c.type_of(v, where);
    if (type == "Sequence") {
        const json* list = c.field(v, "processors");
        if (!list) c.bad(where, "'processors' is missing");
        c.array(*list, where + ".processors");
        for (size_t i = 0; i < list->size(); i++)
            parse_post_processor(c, (*list)[i], fmt::format("{}.processors[{}]", where, i), depth + 1, tok, prefix, suffix);
        return;
    }
    if (type == "ByteLevel") return;  // only trims offsets
    if (type == "RobertaProcessing" || type == "BertProcessing") {
        // "cls": ["<s>", 0], "sep": ["</s>", 2]: [cls] A [sep].
        auto token = [&](const char* key) {
            const json* t = c.field(v, key);
            std::string w = where + "." + key;
            if (!t || !t->is_array() || t->size() != 2) c.bad(w, "expected [token, id]");
            return int32_t(c.integer((*t)[1], w + "[1]"));
        };
        int32_t cls = token("cls"), sep = token("sep");
        prefix.insert(prefix.begin(), cls);
        suffix.push_back(sep);
        return;
    }
    if (type != "TemplateProcessing") c.bad(where, fmt::format("post-processor type '{}' is not supported yet", type));
    const json* single = c.field(v, "single");
    if (!single) c.bad(where, "'single' is missing");
    c.array(*single, where + ".single");
    std::unordered_map<std::string, std::vector<int32_t>> specials;
    if (const json* st = c.field(v, "special_tokens")) {
        c.object(*st, where + ".special_tokens");
        for (auto it = st->begin(); it != st->end(); ++it) {
            std::string w = where + ".special_tokens[\"" + it.key() + "\"]";
            const json* ids = c.field(c.object(it.value(), w), "ids");
            if (!ids) c.bad(w, "'ids' is missing");
            c.array(*ids, w + ".ids");
            std::vector<int32_t> list;
            for (size_t i = 0; i < ids->size(); i++) list.push_back(int32_t(c.integer((*ids)[i], w + ".ids")));
            specials[it.key()] = std::move(list);
        }
    }
    std::vector<int32_t> before, after;
    bool seen_a = false;
    for (size_t i = 0; i < single->size(); i++) {
        const json& item = (*single)[i];
        std::string w = fmt::format("{}.single[{}]", where, i);
        std::string special;
        if (item.is_string()) {
            // Older spelling: "$A", "$B:1", "[CLS]", "[SEP]:0".
            std::string s = item.get<std::string>();
            s = s.substr(0, s.find(':'));
            if (!s.empty() && s[0] == '$') {
                seen_a = true;
                continue;
            }
            special = s;
        } else if (const json* sp = c.field(item, "SpecialToken")) {
            special = c.str_field(c.object(*sp, w + ".SpecialToken"), "id", w + ".SpecialToken");
        } else if (c.field(item, "Sequence")) {
            seen_a = true;
            continue;
        } else {
            c.bad(w, "expected a SpecialToken or a Sequence");
        }
        std::vector<int32_t> ids;
        auto it = specials.find(special);
        if (it != specials.end()) {
            ids = it->second;
        } else {
            int32_t id = tok.piece_to_id(special);
            if (id < 0) c.bad(w, fmt::format("special token '{}' is neither in special_tokens nor in the vocabulary", special));
            ids.push_back(id);
        }
        (seen_a ? after : before).insert((seen_a ? after : before).end(), ids.begin(), ids.end());
    }
    prefix.insert(prefix.begin(), before.begin(), before.end());
    suffix.insert(suffix.end(), after.begin(), after.end());
}

// tokenizers' AddedVocabulary::find_matches: leftmost-longest matches, single_word matches
// dropped when a word character touches them, lstrip/rstrip extending a match over whitespace.
void HfTokenizer::find_added(std::string_view s, const TokenMatcher& m, std::vector<Segment>& out) const {
    auto char_before = [&](size_t pos, size_t* start) -> char32_t {
        size_t k = pos - 1;
        while (k > 0 && (uint8_t(s[k]) & 0xC0) == 0x80) k--;
        *start = k;
        size_t len = utf8::valid_sequence_length(s, k);
        return len ? utf8::decode_at(s, k, len) : utf8::kReplacement;
    };
    auto char_at = [&](size_t pos, size_t* len) -> char32_t {
        *len = utf8::valid_sequence_length(s, pos);
        if (!*len) {
            *len = 1;
            return utf8::kReplacement;
        }
        return utf8::decode_at(s, pos, *len);
    };
    size_t start_offset = 0, pos = 0, mb, me;
    int32_t tok;
    while (m.find(s, pos, &mb, &me, &tok)) {
        pos = me;
        const AddedToken& t = added_[size_t(tok)];
        if (t.single_word) {
            size_t k, len;
            bool start_space = mb == 0 || !unicode_is_word_char(char_before(mb, &k));
            bool stop_space = me == s.size() || !unicode_is_word_char(char_at(me, &len));
            if (!start_space || !stop_space) continue;
        }
        size_t b = mb, e = me;
        if (t.lstrip) {
            size_t nb = b, k;
            while (nb > 0 && utf8::is_whitespace(char_before(nb, &k))) nb = k;
            b = std::max(nb, start_offset);
        }
        if (t.rstrip) {
            size_t len;
            while (e < s.size() && utf8::is_whitespace(char_at(e, &len))) e += len;
            pos = e;  // the next match starts after the stripped whitespace
        }
        if (start_offset < b) out.push_back({start_offset, b, -1});
        out.push_back({b, e, tok});
        start_offset = e;
    }
    if (start_offset < s.size()) out.push_back({start_offset, s.size(), -1});
}

std::vector<int32_t> HfTokenizer::encode(std::string_view text, bool add_special_tokens) const {
    std::string cleaned;
    if (!utf8::is_valid(text)) {
        cleaned = utf8::sanitize(text);
        text = cleaned;
    }
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 8);
    if (add_special_tokens) ids.insert(ids.end(), prefix_ids_.begin(), prefix_ids_.end());
    if (raw_matcher_.empty()) {
        encode_segment(text, true, ids);
    } else {
        std::vector<Segment> segs;
        find_added(text, raw_matcher_, segs);
        for (const Segment& sg : segs) {
            if (sg.token >= 0)
                ids.push_back(added_[size_t(sg.token)].id);
            else
                encode_segment(text.substr(sg.b, sg.e - sg.b), sg.b == 0, ids);
        }
    }
    if (add_special_tokens) ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
    return ids;
}

void HfTokenizer::encode_segment(std::string_view s, bool at_start, std::vector<int32_t>& ids) const {
    if (s.empty()) return;
    std::string n(s);
    if (normalizer_) normalizer_->apply(n);
    if (n.empty()) return;
    if (normalized_matcher_.empty()) {
        encode_normalized(std::move(n), at_start, ids);
        return;
    }
    std::vector<Segment> segs;
    find_added(n, normalized_matcher_, segs);
    for (const Segment& sg : segs) {
        if (sg.token >= 0)
            ids.push_back(added_[size_t(sg.token)].id);
        else
            encode_normalized(n.substr(sg.b, sg.e - sg.b), at_start && sg.b == 0, ids);
    }
}

void HfTokenizer::encode_normalized(std::string text, bool at_start, std::vector<int32_t>& ids) const {
    if (text.empty()) return;
    if (!pre_tokenizer_) {
        model_->encode_word(text, ids);
        return;
    }
    Pieces pieces;
    pieces.text = std::move(text);
    pieces.refs.push_back(Pieces::Ref{0, pieces.text.size(), at_start});
    pre_tokenizer_->apply(pieces);
    for (const auto& r : pieces.refs) model_->encode_word(pieces.view(r), ids);
}

// tokenizers decodes a list of tokens through its decoder chain; here each token goes through
// the chain on its own, with state carrying what the chain needs from the tokens before it
// (the token's index, and for a Strip after Fuse how many characters are still to strip).
// This gives the same text (see the header) and lets StreamingDecoder work token by token.
void HfTokenizer::decode_append(DecodeState& state, int32_t id, bool skip_special, std::string& bytes) const {
    if (id < 0 || size_t(id) >= pieces_.size() || !present_[size_t(id)]) return;  // no such token: skipped
    if (skip_special && special_[size_t(id)]) return;
    const std::string& piece = pieces_[size_t(id)];
    int64_t index = state.tokens++;
    if (!has_decoder_) {
        // No decoder: tokenizers joins the tokens with spaces.
        if (index > 0) bytes.push_back(' ');
        bytes += piece;
        return;
    }
    if (state.counters.size() < decoder_.size()) {
        state.counters.resize(decoder_.size());
        for (size_t i = 0; i < decoder_.size(); i++) state.counters[i] = decoder_[i].start;
    }
    std::string tok = piece;
    bool fused = false;
    for (size_t si = 0; si < decoder_.size(); si++) {
        const DecodeStep& st = decoder_[si];
        int64_t i = fused ? 0 : index;
        switch (st.kind) {
            case DecodeStep::Replace:
                // A regex needs UTF-8; a lone byte from ByteFallback is left as it is.
                if (!st.pattern->regex || utf8::is_valid(tok)) replace_all(tok, *st.pattern, st.content);
                break;
            case DecodeStep::ByteFallback:
                // "<0xNN>" becomes the byte itself (tokenizers groups such bytes into characters;
                // raw bytes give the same text once cleaned, see decode()).
                if (!fused && tok.size() == 6 && tok.compare(0, 3, "<0x") == 0 && tok[5] == '>' &&
                    std::isxdigit(uint8_t(tok[3])) && std::isxdigit(uint8_t(tok[4]))) {
                    tok = std::string(1, char(std::stoi(tok.substr(3, 2), nullptr, 16)));
                }
                break;
            case DecodeStep::Fuse: fused = true; break;
            case DecodeStep::Strip: {
                const std::string& ch = st.content;
                if (!fused) {
                    int64_t n = 0;
                    size_t b = 0;
                    while (n < st.start && tok.compare(b, ch.size(), ch) == 0) b += ch.size(), n++;
                    size_t e = tok.size();
                    n = 0;
                    while (n < st.stop && e >= b + ch.size() && tok.compare(e - ch.size(), ch.size(), ch) == 0)
                        e -= ch.size(), n++;
                    tok = tok.substr(b, e - b);
                } else {
                    // After Fuse the chain sees one string: strip its first `start` characters,
                    // wherever the token boundaries fall. (`stop` of a fused Strip is not applied:
                    // no known tokenizer uses it, and it would need look-ahead.)
                    int64_t& left = state.counters[si];
                    size_t b = 0;
                    while (left > 0 && tok.compare(b, ch.size(), ch) == 0) b += ch.size(), left--;
                    tok.erase(0, b);
                    if (!tok.empty()) left = 0;
                }
                break;
            }
            case DecodeStep::Metaspace: {
                std::string out;
                size_t p = 0;
                while (p < tok.size()) {
                    if (tok.compare(p, st.content.size(), st.content) == 0) {
                        if (!(i == 0 && st.prepend)) out.push_back(' ');
                        p += st.content.size();
                    } else {
                        out.push_back(tok[p++]);
                    }
                }
                tok = std::move(out);
                break;
            }
            case DecodeStep::ByteLevel: {
                const ByteMap& bm = byte_map();
                std::string out;
                size_t p = 0;
                bool ok = true;
                while (p < tok.size()) {
                    size_t len = utf8::valid_sequence_length(tok, p);
                    char32_t ch = len ? utf8::decode_at(tok, p, len) : 0x10FFFF;
                    if (!len || ch >= 512 || bm.char_to_byte[ch] < 0) {
                        ok = false;  // not a byte-level token: tokenizers keeps it as it is
                        break;
                    }
                    out.push_back(char(bm.char_to_byte[ch]));
                    p += len;
                }
                if (ok) tok = std::move(out);
                break;
            }
        }
    }
    bytes += tok;
}

}  // namespace

std::unique_ptr<Tokenizer> load_hf_tokenizer(std::string_view json_text, const std::string& path,
                                             const TokenizerConfig& config) {
    json j;
    try {
        j = json::parse(json_text.begin(), json_text.end());
    } catch (const json::exception& e) {
        fail("[tokenizer] {}: not valid JSON ({})", path, e.what());
    }
    try {
        return std::make_unique<HfTokenizer>(j, path, config);
    } catch (const json::exception& e) {
        // Every access is checked; this is a safety net for a value of an unexpected kind.
        fail("[tokenizer] {}: unexpected content ({})", path, e.what());
    }
}

}  // namespace tuner
