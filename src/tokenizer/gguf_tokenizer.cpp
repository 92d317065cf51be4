// A tokenizer from the metadata of a GGUF file (tokenizer.ggml.*), built as the tokenizer.json
// that describes the same tokenizer and run through the tokenizer.json pipeline
// (hf_tokenizer.cpp), as transformers' own GGUF import does (integrations/ggml.py).
//
// tokenizer.ggml.model:
//  * `llama`: SentencePiece BPE (Llama 1/2, Mistral v0.1, Phi-3 and the like). tokens + scores
//    + token_type; Hugging Face's LlamaTokenizerFast layout: normalizer Prepend("▁") (unless
//    tokenizer.ggml.add_space_prefix is false) + Replace(" " -> "▁"), BPE with byte_fallback
//    (<0xXX> tokens) and fuse_unk, merges derived from the scores exactly as transformers'
//    SentencePieceExtractor derives them from a tokenizer.model (every split of a normal piece
//    into two pieces of the vocabulary, ranked by the piece's score, then the lengths of the two
//    halves, highest first), decoder Replace("▁" -> " "), ByteFallback, Fuse, Strip(1 left).
//  * `gpt2`: byte-level BPE with tokenizer.ggml.merges ("a b"), pre-tokenized with the regexes
//    llama.cpp uses for tokenizer.ggml.pre (llm_tokenizer_bpe in llama-vocab.cpp), each a Split
//    with Isolated behaviour applied in turn, then ByteLevel without regex. `llama-bpe`/`llama3`
//    also ignore merges for whole-word vocabulary hits, as Llama 3's tokenizer.json does.
//    A missing or unknown pre falls back to llama.cpp's default regexes.
//  * `bert`: WordPiece (BERT, bge, MiniLM and the like), not through tokenizer.json but with the
//    dedicated tokenizer of wordpiece.h, which reads llama.cpp's spelling of the vocabulary
//    ("▁word" word-initial, bare continuations). BERT uncased (lowercasing and accent stripping)
//    unless some normal token has an uppercase ASCII letter (a cased vocabulary: llama.cpp
//    always lowercases; transformers' BertTokenizer for bert-base-cased does not). Control tokens
//    are matched in the text; add_special_tokens gives [CLS] ... [SEP]
//    (tokenizer.ggml.cls_token_id, default bos_token_id, then 101; seperator_token_id, the key's
//    spelling, default eos_token_id, then 102), as llama.cpp's add_bos/add_sep; BOS is CLS and
//    EOS is SEP.
// Token types (tokenizer.ggml.token_type): 1 normal, 2 unknown, 3 control, 4 user-defined,
// 5 unused, 6 byte. Control and unknown tokens become special added tokens, user-defined ones
// non-special added tokens (both matched in the text before the model runs, as HF does); unused
// and byte tokens are only in the vocabulary. Phi-3 (general.name containing "phi3"/"phi-3")
// gets llama.cpp's rstrip rule for its chat tokens.
// Special ids: tokenizer.ggml.bos_token_id / eos_token_id / unknown_token_id (SentencePiece
// defaults 1 / 2 / 0); tokenizer.ggml.add_bos_token / add_eos_token (defaults as llama.cpp:
// BOS for `llama` and for llama3-style BPE, no EOS) make the post-processor template.
#include <algorithm>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/gguf.h"
#include "tokenizer/internal.h"
#include "tokenizer/utf8.h"
#include "tokenizer/wordpiece.h"

namespace tuner {

namespace {

using json = nlohmann::json;

const char* const kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's space

enum TokenType : int32_t { kUndefined = 0, kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

// ---- llama.cpp's pre-tokenizer regexes, by tokenizer.ggml.pre -------------------------------

const char* const kGpt2 = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
// Llama 3's tokenizer.json regex with (?i:...) spelled out as llama.cpp spells it.
const char* const kLlama3 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// DeepSeek LLM's letter class: the cased letters (Lu, Ll, Lt), as code points.
const char* const kDeepseekLetters =
    R"(\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF})"
    R"(\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1})"
    R"(\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5})"
    R"(\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A})"
    R"(\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B})"
    R"(\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC})"
    R"(\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107})"
    R"(\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134})"
    R"(\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4})"
    R"(\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787})"
    R"(\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A})"
    R"(\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2})"
    R"(\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+)";
// CJK ideographs 4E00-9FA5, U+0800-4E00 and Hangul AC00-D7FF, as in DeepSeek's tokenizers.
const char* const kDeepseekCjk = R"([\x{4E00}-\x{9FA5}\x{0800}-\x{4E00}\x{AC00}-\x{D7FF}]+)";

struct PreTokenizer {
    std::string name;  // llama.cpp's pre-type the GGUF name maps to
    std::vector<std::string> regexes;
    bool ignore_merges = false;
    bool add_bos = false;  // llama.cpp's default for tokenizer.ggml.add_bos_token
};

PreTokenizer pre_tokenizer_for(const std::string& pre) {
    auto is = [&](std::initializer_list<const char*> names) {
        for (const char* n : names)
            if (pre == n) return true;
        return false;
    };
    if (is({"llama3", "llama-v3", "llama-bpe", "falcon3", "dbrx", "smaug-bpe", "chatglm-bpe", "glm4"}))
        return {"llama3", {kLlama3}, /*ignore_merges=*/is({"llama3", "llama-v3", "llama-bpe", "falcon3"}),
                /*add_bos=*/is({"llama3", "llama-v3", "llama-bpe", "falcon3"})};
    if (is({"qwen2", "stablelm2", "deepseek-r1-qwen", "megrez"})) return {"qwen2", {kQwen2}};
    if (is({"deepseek-llm"}))
        return {"deepseek-llm",
                {R"([\r\n])", kDeepseekLetters, R"(\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+)",
                 R"(\s+$)", kDeepseekCjk, R"(\p{N}+)"}};
    if (is({"deepseek-coder"}))
        return {"deepseek-coder", {R"([\r\n])", R"(\s?\p{L}+)", R"(\s?\p{P}+)", kDeepseekCjk, R"(\p{N})"}};
    if (is({"falcon"})) return {"falcon", {R"([\p{P}\$\+<=>\^~\|`]+)", kGpt2, R"([0-9][0-9][0-9])"}};
    if (is({"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b"}))
        return {"starcoder", {R"(\p{N})", kGpt2}};
    if (is({"gpt-2", "phi-2", "mpt", "olmo", "jais", "jina-es", "jina-de", "jina-v1-en", "jina-v2-es", "jina-v2-de",
            "jina-v2-code", "roberta-bpe", "gigachat", "exaone4", "trillion"}))
        return {"gpt-2", {kGpt2}};
    if (is({"poro-chat", "bloom", "gpt3-finnish"})) return {"bloom", {R"( ?[^(\s|.,!?\x{2026}\x{3002}\x{FF0C}\x{3001}\x{0964}\x{06D4}\x{060C})]+)"}};
    // "default", a missing key (older files such as gpt-neox) and names llama.cpp does not know.
    return {"default", {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2, R"(\p{N}+)", R"([0-9][0-9][0-9])"}};
}

// ---- building the tokenizer.json -----------------------------------------------------------

struct Vocab {
    std::vector<std::string> tokens;
    std::vector<int32_t> types;
    std::vector<float> scores;
};

[[noreturn]] void bad(const Gguf& g, const std::string& what) { fail("[tokenizer] {}: {}", g.path(), what); }

Vocab read_vocab(const Gguf& g) {
    Vocab v;
    const std::vector<std::string_view> tokens = g.get_string_array("tokenizer.ggml.tokens");
    if (tokens.empty()) bad(g, "tokenizer.ggml.tokens is empty");
    if (tokens.size() > size_t(INT32_MAX)) bad(g, "too many tokens");
    v.tokens.reserve(tokens.size());
    std::unordered_map<std::string_view, size_t> seen;
    seen.reserve(tokens.size());
    for (size_t i = 0; i < tokens.size(); i++) {
        std::string t(tokens[i]);
        // llama.cpp renames empty tokens so that every token has its own text.
        if (t.empty()) t = "[EMPTY_" + std::to_string(i) + "]";
        if (!utf8::is_valid(t)) bad(g, fmt::format("token {} of tokenizer.ggml.tokens is not valid UTF-8", i));
        v.tokens.push_back(std::move(t));
    }
    for (size_t i = 0; i < v.tokens.size(); i++) {
        auto [it, fresh] = seen.emplace(v.tokens[i], i);
        if (!fresh)
            bad(g, fmt::format("tokens {} and {} of tokenizer.ggml.tokens are the same text '{}'", it->second, i,
                               v.tokens[i]));
    }
    if (g.has("tokenizer.ggml.token_type")) {
        v.types = g.get_i32_array("tokenizer.ggml.token_type");
        if (v.types.size() != v.tokens.size())
            bad(g, fmt::format("tokenizer.ggml.token_type has {} entries for {} tokens", v.types.size(), v.tokens.size()));
    } else {
        v.types.assign(v.tokens.size(), kNormal);
    }
    if (g.has("tokenizer.ggml.scores")) {
        v.scores = g.get_f32_array("tokenizer.ggml.scores");
        if (v.scores.size() != v.tokens.size())
            bad(g, fmt::format("tokenizer.ggml.scores has {} entries for {} tokens", v.scores.size(), v.tokens.size()));
    } else {
        v.scores.assign(v.tokens.size(), 0.0f);
    }
    return v;
}

// A special-token id key: absent -> def; out of range -> -1 (llama.cpp warns and ignores it).
int32_t special_id(const Gguf& g, const char* key, int32_t def, size_t n_tokens) {
    if (!g.has(key)) return def < int32_t(n_tokens) ? def : -1;
    uint32_t id = g.get_u32(key);
    return id < n_tokens ? int32_t(id) : -1;
}

// transformers' SentencePieceExtractor (generate_merges with scores): every split of a piece into
// two pieces of the vocabulary, within a piece ordered by the halves' ids, then all of them
// stably ordered by (piece score, length of the left half, length of the right half), highest
// first. Only normal pieces are merge results here: control, user-defined and byte tokens are
// matched or produced by other means.
json spm_merges(const Vocab& v) {
    std::unordered_map<std::string_view, int32_t> id_of;
    id_of.reserve(v.tokens.size());
    for (size_t i = 0; i < v.tokens.size(); i++) id_of.emplace(v.tokens[i], int32_t(i));
    struct Merge {
        int32_t left, right;
        float score;
        int32_t left_chars, right_chars;
    };
    std::vector<Merge> merges;
    std::vector<size_t> bounds;
    for (size_t i = 0; i < v.tokens.size(); i++) {
        if (v.types[i] != kNormal && v.types[i] != kUndefined) continue;
        const std::string& piece = v.tokens[i];
        bounds.clear();
        for (size_t p = 0; p < piece.size();) {
            p += std::max<size_t>(1, utf8::valid_sequence_length(piece, p));
            bounds.push_back(p);
        }
        const size_t first = merges.size();
        const int32_t total_chars = int32_t(bounds.size());
        for (size_t k = 0; k + 1 < bounds.size(); k++) {
            auto l = id_of.find(std::string_view(piece).substr(0, bounds[k]));
            if (l == id_of.end()) continue;
            auto r = id_of.find(std::string_view(piece).substr(bounds[k]));
            if (r == id_of.end()) continue;
            merges.push_back({l->second, r->second, v.scores[i], int32_t(k + 1), total_chars - int32_t(k + 1)});
        }
        std::sort(merges.begin() + std::ptrdiff_t(first), merges.end(), [](const Merge& a, const Merge& b) {
            return a.left != b.left ? a.left < b.left : a.right < b.right;
        });
    }
    std::stable_sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) {
        if (a.score != b.score) return a.score > b.score;
        if (a.left_chars != b.left_chars) return a.left_chars > b.left_chars;
        return a.right_chars > b.right_chars;
    });
    json out = json::array();
    for (const Merge& m : merges) out.push_back(json::array({v.tokens[size_t(m.left)], v.tokens[size_t(m.right)]}));
    return out;
}

json bpe_merges(const Gguf& g) {
    json out = json::array();
    if (!g.has("tokenizer.ggml.merges")) bad(g, "tokenizer.ggml.model is gpt2 but tokenizer.ggml.merges is missing");
    const std::vector<std::string_view> merges = g.get_string_array("tokenizer.ggml.merges");
    for (size_t i = 0; i < merges.size(); i++) {
        // "a b", split at the first space after the first byte (llama.cpp's rule; a lone space
        // can be the left token of a non-byte-level vocabulary).
        std::string_view m = merges[i];
        size_t sp = m.size() > 1 ? m.find(' ', 1) : std::string_view::npos;
        if (sp == std::string_view::npos)
            bad(g, fmt::format("tokenizer.ggml.merges[{}] '{}' is not two tokens separated by a space", i, m));
        std::string a(m.substr(0, sp)), b(m.substr(sp + 1));
        if (!utf8::is_valid(a) || !utf8::is_valid(b))
            bad(g, fmt::format("tokenizer.ggml.merges[{}] is not valid UTF-8", i));
        out.push_back(json::array({std::move(a), std::move(b)}));
    }
    return out;
}

json template_processor(int32_t bos, int32_t eos, bool add_bos, bool add_eos) {
    json single = json::array(), specials = json::object();
    if (add_bos && bos >= 0) {
        single.push_back({{"SpecialToken", {{"id", "BOS"}, {"type_id", 0}}}});
        specials["BOS"] = {{"id", "BOS"}, {"ids", {bos}}, {"tokens", json::array()}};
    }
    single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
    if (add_eos && eos >= 0) {
        single.push_back({{"SpecialToken", {{"id", "EOS"}, {"type_id", 0}}}});
        specials["EOS"] = {{"id", "EOS"}, {"ids", {eos}}, {"tokens", json::array()}};
    }
    return {{"type", "TemplateProcessing"}, {"single", single}, {"special_tokens", specials}};
}

std::unique_ptr<Tokenizer> load_wordpiece(const Gguf& g) {
    Vocab v = read_vocab(g);
    const size_t n = v.tokens.size();
    WordPieceVocab w;
    w.where = g.path();
    w.unk_id = special_id(g, "tokenizer.ggml.unknown_token_id", 100, n);
    if (w.unk_id < 0) bad(g, "tokenizer.ggml.model is bert but there is no unknown token (tokenizer.ggml.unknown_token_id)");
    const int32_t cls = special_id(g, "tokenizer.ggml.cls_token_id", special_id(g, "tokenizer.ggml.bos_token_id", 101, n), n);
    const int32_t sep = special_id(g, "tokenizer.ggml.seperator_token_id", special_id(g, "tokenizer.ggml.eos_token_id", 102, n), n);
    w.bos_id = cls;
    w.eos_id = sep;
    if (cls >= 0 && g.get_bool("tokenizer.ggml.add_bos_token", true)) w.prefix.push_back(cls);
    if (sep >= 0 && g.get_bool("tokenizer.ggml.add_sep_token", g.get_bool("tokenizer.ggml.add_eos_token", true)))
        w.suffix.push_back(sep);
    w.special.resize(n);
    bool cased = false;
    for (size_t i = 0; i < n; i++) {
        const int32_t type = v.types[i];
        w.special[i] = type == kControl || type == kUnknown;
        if (type == kNormal && !cased)
            cased = std::any_of(v.tokens[i].begin(), v.tokens[i].end(), [](char ch) { return ch >= 'A' && ch <= 'Z'; }) &&
                    !(v.tokens[i].front() == '[' && v.tokens[i].back() == ']');
    }
    w.lowercase = !cased;
    w.pieces = std::move(v.tokens);
    return make_wordpiece_tokenizer(std::move(w));
}

}  // namespace

std::unique_ptr<Tokenizer> load_gguf_tokenizer(const Gguf& g) {
    const std::string model = g.get_string("tokenizer.ggml.model");
    if (model == "bert") return load_wordpiece(g);
    if (model != "llama" && model != "gpt2")
        bad(g, fmt::format("tokenizer.ggml.model is '{}'; supported: llama (SentencePiece), gpt2 (byte-level BPE), bert (WordPiece)", model));
    const bool spm = model == "llama";
    const Vocab v = read_vocab(g);
    const size_t n = v.tokens.size();
    const std::string pre_name = g.get_string("tokenizer.ggml.pre", "default");
    const PreTokenizer pre = spm ? PreTokenizer{} : pre_tokenizer_for(pre_name);

    const int32_t bos = special_id(g, "tokenizer.ggml.bos_token_id", spm ? 1 : -1, n);
    const int32_t eos = special_id(g, "tokenizer.ggml.eos_token_id", spm ? 2 : -1, n);
    const int32_t unk = special_id(g, "tokenizer.ggml.unknown_token_id", spm ? 0 : -1, n);
    const bool add_bos = g.get_bool("tokenizer.ggml.add_bos_token", spm || pre.add_bos);
    const bool add_eos = g.get_bool("tokenizer.ggml.add_eos_token", false);

    // llama.cpp's per-model token attributes: Phi-3 strips whitespace after its special tokens.
    std::string name = g.get_string("general.name", "");
    std::transform(name.begin(), name.end(), name.begin(), [](char ch) { return char(std::tolower(uint8_t(ch))); });
    const bool phi3 = name.find("phi-3") != std::string::npos || name.find("phi3") != std::string::npos;

    json j;
    j["version"] = "1.0";
    json vocab = json::object();
    json added = json::array();
    bool has_bytes = false;
    for (size_t i = 0; i < n; i++) {
        vocab[v.tokens[i]] = int32_t(i);
        const int32_t type = v.types[i];
        has_bytes = has_bytes || type == kByte;
        if (type != kControl && type != kUserDefined && type != kUnknown) continue;
        const bool special = type != kUserDefined;
        bool rstrip = false;
        if (phi3) {
            const std::string& t = v.tokens[i];
            rstrip = t != "<unk>" && t != "<s>" && t != "<|endoftext|>";
        }
        added.push_back({{"id", int32_t(i)}, {"content", v.tokens[i]}, {"single_word", false}, {"lstrip", false},
                         {"rstrip", rstrip}, {"normalized", !special && !spm}, {"special", special}});
    }
    j["added_tokens"] = std::move(added);

    json bpe = {{"type", "BPE"}, {"dropout", nullptr}};
    if (spm) {
        json normalizers = json::array();
        if (g.get_bool("tokenizer.ggml.add_space_prefix", true))
            normalizers.push_back({{"type", "Prepend"}, {"prepend", kSpace}});
        normalizers.push_back({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpace}});
        j["normalizer"] = {{"type", "Sequence"}, {"normalizers", std::move(normalizers)}};
        j["pre_tokenizer"] = nullptr;
        j["decoder"] = {{"type", "Sequence"},
                        {"decoders",
                         {{{"type", "Replace"}, {"pattern", {{"String", kSpace}}}, {"content", " "}},
                          {{"type", "ByteFallback"}},
                          {{"type", "Fuse"}},
                          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
        if (unk >= 0) bpe["unk_token"] = v.tokens[size_t(unk)];
        bpe["fuse_unk"] = true;
        bpe["byte_fallback"] = has_bytes;
        bpe["merges"] = spm_merges(v);
    } else {
        json parts = json::array();
        for (const std::string& r : pre.regexes)
            parts.push_back({{"type", "Split"}, {"pattern", {{"Regex", r}}}, {"behavior", "Isolated"}, {"invert", false}});
        parts.push_back({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}});
        j["normalizer"] = nullptr;
        j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", std::move(parts)}};
        j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}};
        bpe["ignore_merges"] = pre.ignore_merges;
        bpe["merges"] = bpe_merges(g);
    }
    bpe["vocab"] = std::move(vocab);
    j["model"] = std::move(bpe);
    j["post_processor"] = template_processor(bos, eos, add_bos, add_eos);

    TokenizerConfig config;
    config.path = g.path();
    if (bos >= 0) config.bos_token = {true, false, v.tokens[size_t(bos)]};
    if (eos >= 0) config.eos_token = {true, false, v.tokens[size_t(eos)]};
    const std::string where = spm ? g.path() : fmt::format("{} (pre-tokenizer {})", g.path(), pre.name);
    return load_hf_tokenizer(j.dump(), where, config);
}

std::unique_ptr<Tokenizer> load_gguf_tokenizer(const std::string& path) {
    GgufFile g(path);
    return load_gguf_tokenizer(static_cast<const Gguf&>(g));
}

}  // namespace tuner
