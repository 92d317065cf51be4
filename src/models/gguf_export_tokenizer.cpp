// Tokenizers to and from GGUF metadata (see gguf_export.h): a Hugging Face tokenizer folder ->
// tokenizer.ggml.* keys (what llama.cpp's convert_hf_to_gguf.py writes: get_vocab_base for
// byte-level BPE, the SentencePiece vocabulary for `llama`, gguf-py's SpecialVocab for the
// special ids, add_*_token flags and chat templates), and tokenizer.ggml.* -> tokenizer.json.
#include <sentencepiece_processor.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "models/gguf_export.h"
#include "tokenizer/tokenizer.h"

namespace tuner {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
enum TokenType : int32_t {
    kUndefined = 0,
    kNormal = 1,
    kUnknown = 2,
    kControl = 3,
    kUserDefined = 4,
    kUnused = 5,
    kByte = 6
};

const char* const kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's space

// Pre-tokenizer regexes as the tokenizer.json files of these models spell them.
const char* const kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";

json read_json(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    if (!f) fail("[export] {}: cannot open ({})", p.string(), std::strerror(errno));
    std::stringstream ss;
    ss << f.rdbuf();
    try {
        return json::parse(ss.str());
    } catch (const json::parse_error& e) {
        fail("[export] {}: invalid JSON: {}", p.string(), e.what());
    }
}

bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }
bool ends_with(const std::string& s, const char* p) {
    const size_t k = std::strlen(p);
    return s.size() >= k && s.compare(s.size() - k, k, p) == 0;
}

// The converter's does_token_look_special: added tokens some models forget to mark special.
bool looks_special(const std::string& t) {
    if (t == "<pad>" || t == "<mask>" || t == "<2mass>" || t == "[@BOS@]") return true;
    if (starts_with(t, "<|") && ends_with(t, "|>")) return true;
    if (starts_with(t, "<\xEF\xBD\x9C") && ends_with(t, "\xEF\xBD\x9C>")) return true;  // <｜...｜> (deepseek)
    return starts_with(t, "<unused") && ends_with(t, ">");
}

bool is_byte_piece(const std::string& t) {
    return t.size() == 6 && starts_with(t, "<0x") && t[5] == '>' && std::isxdigit(uint8_t(t[3])) &&
           std::isxdigit(uint8_t(t[4]));
}

// A token of tokenizer_config.json: a string, or an AddedToken object {"content": ...}.
std::string token_content(const json& v) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
    return "";
}

// What a pre_tokenizer (possibly a Sequence) does, as far as choosing tokenizer.ggml.pre goes.
struct PreInfo {
    std::vector<std::string> split_regexes;
    bool byte_level = false, byte_level_regex = false, digits_individual = false;
    bool metaspace = false, metaspace_prefix = false;
    std::vector<std::string> others;  // component types not listed above
};

void walk_pre(const json& p, PreInfo& info) {
    if (!p.is_object()) return;
    const std::string type = p.value("type", "");
    if (type == "Sequence") {
        for (const json& q : p.value("pretokenizers", json::array())) walk_pre(q, info);
    } else if (type == "Split") {
        const json& pat = p.value("pattern", json::object());
        if (pat.contains("Regex") && pat["Regex"].is_string())
            info.split_regexes.push_back(pat["Regex"].get<std::string>());
        else info.others.push_back("Split(String)");
    } else if (type == "ByteLevel") {
        info.byte_level = true;
        info.byte_level_regex = info.byte_level_regex || p.value("use_regex", true);
    } else if (type == "Digits") {
        info.digits_individual = p.value("individual_digits", false);
    } else if (type == "Metaspace") {
        info.metaspace = true;
        const std::string scheme = p.value("prepend_scheme", p.value("add_prefix_space", true) ? "always" : "never");
        info.metaspace_prefix = scheme != "never";
    } else {
        info.others.push_back(type);
    }
}

// tokenizer.ggml.pre for a byte-level BPE tokenizer.json (llama.cpp identifies pre-tokenizers by
// hashing the ids of a test text; the pre-tokenizer's own regex identifies the common ones).
std::string choose_pre(const PreInfo& info, std::vector<std::string>* notes, const std::string& where) {
    if (info.others.empty()) {
        if (info.split_regexes.size() == 1 && info.split_regexes[0] == kLlama3Regex) return "llama-bpe";
        if (info.split_regexes.size() == 1 && info.split_regexes[0] == kQwen2Regex) return "qwen2";
        if (info.split_regexes.empty() && info.byte_level_regex) return info.digits_individual ? "starcoder" : "gpt-2";
        if (info.split_regexes.size() == 1 && info.split_regexes[0] == kGpt2Regex && !info.digits_individual)
            return "gpt-2";
    }
    notes->push_back(fmt::format("{}: pre-tokenizer not recognised (llama-bpe, qwen2, gpt-2, starcoder are); "
                                 "tokenizer.ggml.pre is 'default', whose splitting may differ",
                                 where));
    return "default";
}

struct Vocab {
    std::vector<std::string> tokens;
    std::vector<int32_t> types;
    std::vector<float> scores;
    std::vector<std::string> merges;  // gpt2
    std::string model;                // "gpt2" / "llama"
    std::string pre;
    bool add_space_prefix = true;
    int32_t unk = -1;
    std::string source;
};

// Grows the token list to n entries; new ids are "[PAD<id>]" of type unused (the converter's
// padding up to the embedding's rows).
void pad_to(Vocab& v, size_t n) {
    for (size_t i = v.tokens.size(); i < n; i++) {
        v.tokens.push_back("[PAD" + std::to_string(i) + "]");
        v.types.push_back(kUnused);
        v.scores.push_back(-1000.0f);
    }
}

Vocab vocab_from_tokenizer_json(const fs::path& path, std::vector<std::string>* notes) {
    const std::string where = path.string();
    const json j = read_json(path);
    if (!j.is_object() || !j.contains("model") || !j["model"].is_object())
        fail("[export] {}: no 'model' object", where);
    const json& m = j["model"];
    const std::string type = m.value("type", "BPE");
    if (type != "BPE")
        fail("[export] {}: a {} tokenizer has no GGUF export (byte-level BPE and SentencePiece-style BPE do)", where,
             type);
    PreInfo pre;
    walk_pre(j.value("pre_tokenizer", json()), pre);
    const json decoder = j.value("decoder", json());
    const bool byte_level = pre.byte_level || (decoder.is_object() && decoder.value("type", "") == "ByteLevel");
    const bool byte_fallback = m.value("byte_fallback", false);
    bool prepend = false, replace_space = false;
    const json norm = j.value("normalizer", json());
    auto scan_norm = [&](const json& n) {
        if (!n.is_object()) return;
        const std::string t = n.value("type", "");
        if (t == "Prepend" && n.value("prepend", "") == kSpace) prepend = true;
        if (t == "Replace" && n.value("content", "") == kSpace) replace_space = true;
    };
    scan_norm(norm);
    if (norm.is_object() && norm.value("type", "") == "Sequence")
        for (const json& n : norm.value("normalizers", json::array())) scan_norm(n);
    const bool spm = !byte_level && (byte_fallback || prepend || replace_space || pre.metaspace);
    if (!byte_level && !spm)
        fail("[export] {}: a BPE tokenizer that is neither byte-level (ByteLevel) nor SentencePiece-style (Metaspace, "
             "\"▁\" normalizer or byte_fallback) has no GGUF tokenizer type",
             where);

    Vocab v;
    v.model = spm ? "llama" : "gpt2";
    v.source = "tokenizer.json";
    if (!m.contains("vocab") || !m["vocab"].is_object()) fail("[export] {}: model.vocab is not an object", where);
    std::map<int64_t, std::string> by_id;
    for (const auto& [piece, id] : m["vocab"].items()) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0)
            fail("[export] {}: vocab entry '{}' has no id", where, piece);
        by_id[id.get<int64_t>()] = piece;
    }
    struct Added {
        std::string content;
        bool special;
    };
    std::map<int64_t, Added> added;
    for (const json& t : j.value("added_tokens", json::array())) {
        if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer()) continue;
        added[t["id"].get<int64_t>()] = {t.value("content", ""), t.value("special", false)};
    }
    int64_t n = 0;
    if (!by_id.empty()) n = std::max(n, by_id.rbegin()->first + 1);
    if (!added.empty()) n = std::max(n, added.rbegin()->first + 1);
    if (n > int64_t(INT32_MAX)) fail("[export] {}: token ids up to {} are too large", where, n - 1);
    v.tokens.assign(size_t(n), "");
    v.types.assign(size_t(n), kUnused);
    v.scores.assign(size_t(n), 0.0f);
    std::vector<bool> have(size_t(n), false);
    for (const auto& [id, piece] : by_id) {
        v.tokens[size_t(id)] = piece;
        v.types[size_t(id)] = spm && byte_fallback && is_byte_piece(piece) ? kByte : kNormal;
        have[size_t(id)] = true;
    }
    for (const auto& [id, a] : added) {
        v.tokens[size_t(id)] = a.content;
        v.types[size_t(id)] = a.special || looks_special(a.content) ? kControl : kUserDefined;
        have[size_t(id)] = true;
    }
    for (size_t i = 0; i < size_t(n); i++)
        if (!have[i]) {
            v.tokens[i] = "[PAD" + std::to_string(i) + "]";
            v.scores[i] = -1000.0f;
        }
    if (m.contains("unk_token") && m["unk_token"].is_string()) {
        const std::string u = m["unk_token"].get<std::string>();
        for (size_t i = 0; i < size_t(n); i++)
            if (v.tokens[i] == u) {
                v.unk = int32_t(i);
                v.types[i] = kUnknown;
                break;
            }
    }

    // Merges, in either spelling ("a b" or ["a", "b"]).
    std::vector<std::pair<std::string, std::string>> merges;
    for (const json& mg : m.value("merges", json::array())) {
        if (mg.is_string()) {
            const std::string s = mg.get<std::string>();
            const size_t sp = s.size() > 1 ? s.find(' ', 1) : std::string::npos;
            if (sp == std::string::npos)
                fail("[export] {}: merge '{}' is not two tokens separated by a space", where, s);
            merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
        } else if (mg.is_array() && mg.size() == 2 && mg[0].is_string() && mg[1].is_string()) {
            merges.emplace_back(mg[0].get<std::string>(), mg[1].get<std::string>());
        } else {
            fail("[export] {}: a merge is neither \"a b\" nor [\"a\", \"b\"]: {}", where, mg.dump());
        }
    }
    if (!spm) {
        // llama.cpp splits "a b" at the first space after the first byte, so a byte-level
        // vocabulary (no spaces: they are "Ġ") always round-trips.
        for (const auto& [a, b] : merges) {
            if (b.find(' ') != std::string::npos || a.empty())
                fail("[export] {}: merge ('{}', '{}') cannot be written as llama.cpp's \"a b\"", where, a, b);
            v.merges.push_back(a + " " + b);
        }
        v.pre = choose_pre(pre, notes, where);
        return v;
    }
    // SentencePiece-style: scores from the merge order. A piece's score is minus the rank of the
    // first merge that produces it (pieces numbered densely in that order), so higher scores come
    // first as in a SentencePiece model; normal pieces no merge produces (characters) come after.
    std::unordered_map<std::string, size_t> id_of;
    for (size_t i = 0; i < size_t(n); i++) id_of.emplace(v.tokens[i], i);
    std::vector<bool> ranked(size_t(n), false);
    int64_t next = 0;
    for (const auto& [a, b] : merges) {
        auto it = id_of.find(a + b);
        if (it == id_of.end() || ranked[it->second] || v.types[it->second] != kNormal) continue;
        ranked[it->second] = true;
        v.scores[it->second] = -float(next++);
    }
    for (size_t i = 0; i < size_t(n); i++)
        if (v.types[i] == kNormal && !ranked[i]) v.scores[i] = -float(next++);
    v.add_space_prefix = prepend || (pre.metaspace && pre.metaspace_prefix);
    return v;
}

Vocab vocab_from_sentencepiece(const fs::path& path) {
    sentencepiece::SentencePieceProcessor sp;
    const auto status = sp.Load(path.string());
    if (!status.ok()) fail("[export] {}: cannot load the SentencePiece model ({})", path.string(), status.ToString());
    Vocab v;
    v.model = "llama";
    v.source = "tokenizer.model";
    const int n = sp.GetPieceSize();
    for (int i = 0; i < n; i++) {
        v.tokens.push_back(sp.IdToPiece(i));
        v.scores.push_back(sp.GetScore(i));
        int32_t t = kNormal;
        if (sp.IsUnknown(i)) t = kUnknown;
        else if (sp.IsControl(i)) t = kControl;
        else if (sp.IsUnused(i)) t = kUnused;
        else if (sp.IsByte(i)) t = kByte;
        v.types.push_back(t);
        if (t == kUnknown && v.unk < 0) v.unk = i;
    }
    // SentencePiece adds the dummy prefix unless its normalizer spec says otherwise; the serialized
    // spec is not exposed through the processor, and every Llama-family model keeps the default.
    v.add_space_prefix = true;
    return v;
}

int32_t find_token(const Vocab& v, const std::string& text) {
    if (text.empty()) return -1;
    for (size_t i = 0; i < v.tokens.size(); i++)
        if (v.tokens[i] == text) return int32_t(i);
    return -1;
}

}  // namespace

std::string gguf_add_tokenizer(GgufWriter& w, const std::string& dir, const ModelConfig& config,
                               std::vector<std::string>* notes) {
    const fs::path folder(dir);
    const fs::path tj = folder / "tokenizer.json", tm = folder / "tokenizer.model";
    const std::string arch = config.model_type == "qwen2" ? "qwen2" : "llama";
    if (!fs::exists(tj) && !fs::exists(tm)) {
        w.add_string("tokenizer.ggml.model", "none");
        // The config's ids still say which ids generation starts and stops with.
        if (config.bos_token_id >= 0) w.add_u32("tokenizer.ggml.bos_token_id", uint32_t(config.bos_token_id));
        if (config.eos_token_id >= 0) w.add_u32("tokenizer.ggml.eos_token_id", uint32_t(config.eos_token_id));
        notes->push_back(fmt::format("{}: no tokenizer.json or tokenizer.model; the GGUF has no vocabulary "
                                     "(tokenizer.ggml.model 'none': llama.cpp loads it, but cannot tokenize text)",
                                     dir));
        return "none (the folder has no tokenizer)";
    }
    // tokenizer.json first: it holds the added tokens, and our Tokenizer reads it the same way.
    Vocab v = fs::exists(tj) ? vocab_from_tokenizer_json(tj, notes) : vocab_from_sentencepiece(tm);
    if (int64_t(v.tokens.size()) > config.vocab_size)
        fail("[export] {}: the tokenizer has {} tokens but the model's vocab_size is {} (its embedding has that many "
             "rows); llama.cpp needs one embedding row per token",
             dir, v.tokens.size(), config.vocab_size);
    pad_to(v, size_t(config.vocab_size));
    {
        std::set<std::string> seen;
        for (size_t i = 0; i < v.tokens.size(); i++)
            if (!seen.insert(v.tokens[i]).second)
                fail("[export] {}: token {} '{}' has the same text as an earlier token; GGUF vocabularies need unique "
                     "texts",
                     dir, i, v.tokens[i]);
    }

    // Special ids and BOS/EOS rules as our tokenizer applies them (tokenizer_config.json, the
    // post-processor, Llama-class rules), else config.json's ids.
    int32_t bos =
        config.bos_token_id >= 0 && config.bos_token_id < int64_t(v.tokens.size()) ? int32_t(config.bos_token_id) : -1;
    int32_t eos =
        config.eos_token_id >= 0 && config.eos_token_id < int64_t(v.tokens.size()) ? int32_t(config.eos_token_id) : -1;
    bool add_bos = false, add_eos = false, know_add = false;
    try {
        std::unique_ptr<Tokenizer> tok = Tokenizer::load(dir);
        if (tok->bos_id() >= 0) bos = tok->bos_id();
        if (tok->eos_id() >= 0) eos = tok->eos_id();
        add_bos = tok->adds_bos();
        add_eos = tok->adds_eos();
        know_add = true;
    } catch (const Error& e) {
        notes->push_back(fmt::format("the tokenizer does not load ({}); BOS/EOS from config.json and "
                                     "tokenizer_config.json only",
                                     e.what()));
    }
    json tcfg = json::object();
    if (fs::exists(folder / "tokenizer_config.json")) tcfg = read_json(folder / "tokenizer_config.json");
    if (!tcfg.is_object()) tcfg = json::object();
    if (!know_add) {
        add_bos = tcfg.value("add_bos_token", v.model == "llama");
        add_eos = tcfg.value("add_eos_token", false);
    }
    int32_t unk = v.unk;
    if (unk < 0 && tcfg.contains("unk_token")) unk = find_token(v, token_content(tcfg["unk_token"]));
    int32_t pad = tcfg.contains("pad_token") ? find_token(v, token_content(tcfg["pad_token"])) : -1;
    if (pad < 0 && fs::exists(folder / "config.json")) {
        const json cj = read_json(folder / "config.json");
        if (cj.is_object() && cj.contains("pad_token_id") && cj["pad_token_id"].is_number_integer()) {
            const int64_t p = cj["pad_token_id"].get<int64_t>();
            if (p >= 0 && p < int64_t(v.tokens.size())) pad = int32_t(p);
        }
    }
    if (v.model == "llama") {
        // SentencePiece marks its BOS/EOS control tokens; LlamaHfVocab does the same for
        // tokenizer.json vocabularies.
        for (int32_t id : {bos, eos})
            if (id >= 0 && v.types[size_t(id)] != kUnknown) v.types[size_t(id)] = kControl;
    }
    if (unk >= 0) v.types[size_t(unk)] = kUnknown;

    w.add_string("tokenizer.ggml.model", v.model);
    if (v.model == "gpt2") w.add_string("tokenizer.ggml.pre", v.pre);
    else w.add_string("tokenizer.ggml.pre", "default");
    w.add_string_array("tokenizer.ggml.tokens", v.tokens);
    if (v.model == "llama") w.add_f32_array("tokenizer.ggml.scores", v.scores);
    w.add_i32_array("tokenizer.ggml.token_type", v.types);
    if (v.model == "gpt2") w.add_string_array("tokenizer.ggml.merges", v.merges);
    if (bos >= 0) w.add_u32("tokenizer.ggml.bos_token_id", uint32_t(bos));
    if (eos >= 0) w.add_u32("tokenizer.ggml.eos_token_id", uint32_t(eos));
    if (unk >= 0) w.add_u32("tokenizer.ggml.unknown_token_id", uint32_t(unk));
    if (pad >= 0) w.add_u32("tokenizer.ggml.padding_token_id", uint32_t(pad));
    w.add_bool("tokenizer.ggml.add_bos_token", add_bos);
    w.add_bool("tokenizer.ggml.add_eos_token", add_eos);
    if (v.model == "llama") w.add_bool("tokenizer.ggml.add_space_prefix", v.add_space_prefix);

    // Chat templates: a string, or a list of {name, template} (the "default" one is the
    // template; the others are tokenizer.chat_template.<name>, as gguf-py's SpecialVocab).
    bool have_template = false;
    if (tcfg.contains("chat_template")) {
        const json& ct = tcfg["chat_template"];
        if (ct.is_string()) {
            w.add_string("tokenizer.chat_template", ct.get<std::string>());
            have_template = true;
        } else if (ct.is_array()) {
            for (const json& e : ct) {
                if (!e.is_object() || !e.contains("name") || !e.contains("template") || !e["name"].is_string() ||
                    !e["template"].is_string())
                    continue;
                const std::string name = e["name"].get<std::string>();
                const std::string k = name == "default" ? "tokenizer.chat_template" : "tokenizer.chat_template." + name;
                if (w.has_key(k)) continue;
                w.add_string(k, e["template"].get<std::string>());
                have_template = have_template || name == "default";
            }
        }
    }
    if (!have_template && fs::exists(folder / "chat_template.jinja")) {
        std::ifstream f(folder / "chat_template.jinja", std::ios::binary);
        std::stringstream ss;
        ss << f.rdbuf();
        w.add_string("tokenizer.chat_template", ss.str());
        have_template = true;
    }
    std::string desc = fmt::format("{} from {}", v.model, v.source);
    if (v.model == "gpt2")
        desc += fmt::format(" (pre {}), {} tokens, {} merges", v.pre, v.tokens.size(), v.merges.size());
    else desc += fmt::format(", {} tokens", v.tokens.size());
    if (have_template) desc += ", chat template";
    return desc;
}

// ---- GGUF -> tokenizer.json ---------------------------------------------------------------------

namespace {

// Byte length of the UTF-8 sequence starting with lead byte c (1 for invalid leads, so every
// string splits into pieces).
size_t utf8_len(uint8_t c) {
    if (c >= 0xF0 && c < 0xF8) return 4;
    if (c >= 0xE0) return c < 0xF0 ? 3 : 1;
    if (c >= 0xC0) return 2;
    return 1;
}

// transformers' generate_merges over a SentencePiece vocabulary: every split of a normal piece
// into two pieces of the vocabulary (within a piece ordered by the halves' ids), then all of them
// stably sorted by (piece score, left length, right length), highest first.
json merges_from_scores(const std::vector<std::string>& tokens, const std::vector<int32_t>& types,
                        const std::vector<float>& scores) {
    std::unordered_map<std::string, int32_t> id_of;
    for (size_t i = 0; i < tokens.size(); i++) id_of.emplace(tokens[i], int32_t(i));
    struct M {
        int32_t l, r;
        float score;
        int32_t lchars, rchars;
    };
    std::vector<M> all;
    for (size_t i = 0; i < tokens.size(); i++) {
        if (types[i] != kNormal && types[i] != kUndefined) continue;
        const std::string& p = tokens[i];
        std::vector<size_t> cuts;
        for (size_t k = 0; k < p.size();) {
            k += std::min(utf8_len(uint8_t(p[k])), p.size() - k);
            cuts.push_back(k);
        }
        const size_t first = all.size();
        for (size_t c = 0; c + 1 < cuts.size(); c++) {
            auto l = id_of.find(p.substr(0, cuts[c])), r = id_of.find(p.substr(cuts[c]));
            if (l == id_of.end() || r == id_of.end()) continue;
            all.push_back({l->second, r->second, scores[i], int32_t(c + 1), int32_t(cuts.size() - c - 1)});
        }
        std::sort(all.begin() + std::ptrdiff_t(first), all.end(),
                  [](const M& a, const M& b) { return a.l != b.l ? a.l < b.l : a.r < b.r; });
    }
    std::stable_sort(all.begin(), all.end(), [](const M& a, const M& b) {
        if (a.score != b.score) return a.score > b.score;
        if (a.lchars != b.lchars) return a.lchars > b.lchars;
        return a.rchars > b.rchars;
    });
    json out = json::array();
    for (const M& m : all) out.push_back(json::array({tokens[size_t(m.l)], tokens[size_t(m.r)]}));
    return out;
}

json split_isolated(const char* regex) {
    return {{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}};
}
json byte_level(bool use_regex) {
    return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

}  // namespace

bool write_hf_tokenizer_from_gguf(const Gguf& g, const std::string& dir, std::string* note) {
    const std::string model = g.get_string("tokenizer.ggml.model", "");
    if (model != "llama" && model != "gpt2") {
        *note = model.empty()
                    ? "the GGUF has no tokenizer (no tokenizer.ggml.model)"
                    : fmt::format("tokenizer.ggml.model '{}' has no tokenizer.json export (llama and gpt2 do)", model);
        return false;
    }
    if (!g.has("tokenizer.ggml.tokens")) {
        *note = "the GGUF has no tokenizer.ggml.tokens";
        return false;
    }
    const bool spm = model == "llama";
    std::vector<std::string> tokens;
    for (std::string_view t : g.get_string_array("tokenizer.ggml.tokens")) tokens.emplace_back(t);
    const size_t n = tokens.size();
    std::vector<int32_t> types = g.has("tokenizer.ggml.token_type") ? g.get_i32_array("tokenizer.ggml.token_type")
                                                                     : std::vector<int32_t>(n, kNormal);
    std::vector<float> scores = g.has("tokenizer.ggml.scores") ? g.get_f32_array("tokenizer.ggml.scores")
                                                                : std::vector<float>(n, 0.0f);
    if (types.size() != n || scores.size() != n)
        fail("[export] {}: tokenizer.ggml.token_type / scores do not have one entry per token", g.path());
    const std::string pre = g.get_string("tokenizer.ggml.pre", "default");
    auto id_key = [&](const char* key, int32_t def) -> int32_t {
        if (!g.has(key)) return def < int32_t(n) ? def : -1;
        const uint32_t id = g.get_u32(key);
        return id < n ? int32_t(id) : -1;
    };
    const bool llama3 = pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3" || pre == "falcon3";
    const int32_t bos = id_key("tokenizer.ggml.bos_token_id", spm ? 1 : -1);
    const int32_t eos = id_key("tokenizer.ggml.eos_token_id", spm ? 2 : -1);
    const int32_t unk = id_key("tokenizer.ggml.unknown_token_id", spm ? 0 : -1);
    const int32_t pad = id_key("tokenizer.ggml.padding_token_id", -1);
    const bool add_bos = g.get_bool("tokenizer.ggml.add_bos_token", spm || llama3);
    const bool add_eos = g.get_bool("tokenizer.ggml.add_eos_token", false);

    json j;
    j["version"] = "1.0";
    j["truncation"] = nullptr;
    j["padding"] = nullptr;
    json added = json::array(), vocab = json::object();
    bool has_bytes = false;
    for (size_t i = 0; i < n; i++) {
        vocab[tokens[i]] = int32_t(i);
        has_bytes = has_bytes || types[i] == kByte;
        if (types[i] != kControl && types[i] != kUnknown && types[i] != kUserDefined) continue;
        const bool special = types[i] != kUserDefined;
        added.push_back({{"id", int32_t(i)}, {"content", tokens[i]}, {"single_word", false}, {"lstrip", false},
                         {"rstrip", false}, {"normalized", !special && !spm}, {"special", special}});
    }
    j["added_tokens"] = added;
    json bpe = {
        {"type", "BPE"}, {"dropout", nullptr}, {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr}};
    std::string what;
    if (spm) {
        json norms = json::array();
        if (g.get_bool("tokenizer.ggml.add_space_prefix", true))
            norms.push_back({{"type", "Prepend"}, {"prepend", kSpace}});
        norms.push_back({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpace}});
        j["normalizer"] = {{"type", "Sequence"}, {"normalizers", norms}};
        j["pre_tokenizer"] = nullptr;
        j["decoder"] = {{"type", "Sequence"},
                        {"decoders",
                         {{{"type", "Replace"}, {"pattern", {{"String", kSpace}}}, {"content", " "}},
                          {{"type", "ByteFallback"}},
                          {{"type", "Fuse"}},
                          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
        bpe["unk_token"] = unk >= 0 ? json(tokens[size_t(unk)]) : json(nullptr);
        bpe["fuse_unk"] = true;
        bpe["byte_fallback"] = has_bytes;
        bpe["ignore_merges"] = false;
        bpe["merges"] = merges_from_scores(tokens, types, scores);
        what = fmt::format("SentencePiece-style BPE, {} tokens, {} merges from the scores", n, bpe["merges"].size());
    } else {
        json merges = json::array();
        if (g.has("tokenizer.ggml.merges"))
            for (std::string_view m : g.get_string_array("tokenizer.ggml.merges")) {
                const size_t sp = m.size() > 1 ? m.find(' ', 1) : std::string_view::npos;
                if (sp == std::string_view::npos)
                    fail("[export] {}: tokenizer.ggml.merges entry '{}' is not two tokens", g.path(), m);
                merges.push_back(json::array({std::string(m.substr(0, sp)), std::string(m.substr(sp + 1))}));
            }
        j["normalizer"] = nullptr;
        bool exact = true;
        if (llama3) {
            j["pre_tokenizer"] = {{"type", "Sequence"},
                                  {"pretokenizers", {split_isolated(kLlama3Regex), byte_level(false)}}};
        } else if (pre == "qwen2" || pre == "deepseek-r1-qwen") {
            j["normalizer"] = {{"type", "NFC"}};
            j["pre_tokenizer"] = {{"type", "Sequence"},
                                  {"pretokenizers", {split_isolated(kQwen2Regex), byte_level(false)}}};
        } else if (pre == "starcoder" || pre == "smollm" || pre == "refact") {
            j["pre_tokenizer"] = {
                {"type", "Sequence"},
                {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, byte_level(true)}}};
        } else {
            j["pre_tokenizer"] = byte_level(true);
            exact = pre == "gpt-2" || pre == "default" || pre == "mpt" || pre == "olmo" || pre == "phi-2";
        }
        j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
        bpe["unk_token"] = nullptr;
        bpe["fuse_unk"] = false;
        bpe["byte_fallback"] = false;
        bpe["ignore_merges"] = llama3;
        bpe["merges"] = merges;
        what = fmt::format("byte-level BPE (pre {}), {} tokens, {} merges", pre, n, merges.size());
        if (!exact)
            what += fmt::format("; pre-tokenizer '{}' is not reproduced (GPT-2's byte-level split is written instead: "
                                "some texts will split differently)",
                                pre);
    }
    bpe["vocab"] = vocab;
    j["model"] = bpe;
    // TemplateProcessing: [BOS] $A [EOS] for one sequence, [BOS] $A [EOS] [BOS] $B [EOS] for pairs.
    json single = json::array(), pair = json::array(), specials = json::object();
    for (const char* seq : {"A", "B"}) {
        const int type_id = seq[0] == 'A' ? 0 : 1;
        json& t = type_id == 0 ? single : pair;
        if (type_id == 1) pair = single;
        if (add_bos && bos >= 0) t.push_back({{"SpecialToken", {{"id", tokens[size_t(bos)]}, {"type_id", type_id}}}});
        t.push_back({{"Sequence", {{"id", seq}, {"type_id", type_id}}}});
        if (add_eos && eos >= 0) t.push_back({{"SpecialToken", {{"id", tokens[size_t(eos)]}, {"type_id", type_id}}}});
    }
    for (int32_t id : {add_bos ? bos : -1, add_eos ? eos : -1})
        if (id >= 0)
            specials[tokens[size_t(id)]] = {
                {"id", tokens[size_t(id)]}, {"ids", {id}}, {"tokens", {tokens[size_t(id)]}}};
    j["post_processor"] = {
        {"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}};

    json cfg = json::object();
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast";
    cfg["add_bos_token"] = add_bos;
    cfg["add_eos_token"] = add_eos;
    cfg["bos_token"] = bos >= 0 ? json(tokens[size_t(bos)]) : json(nullptr);
    cfg["eos_token"] = eos >= 0 ? json(tokens[size_t(eos)]) : json(nullptr);
    cfg["unk_token"] = unk >= 0 ? json(tokens[size_t(unk)]) : json(nullptr);
    if (pad >= 0) cfg["pad_token"] = tokens[size_t(pad)];
    cfg["clean_up_tokenization_spaces"] = false;
    const std::string arch = g.get_string("general.architecture", "");
    if (!arch.empty() && g.has(arch + ".context_length")) cfg["model_max_length"] = g.get_i64(arch + ".context_length");
    if (g.has("tokenizer.chat_template")) cfg["chat_template"] = g.get_string("tokenizer.chat_template");

    for (const auto& [name, text] : {std::pair<const char*, std::string>{"tokenizer.json", j.dump(2)},
                                     std::pair<const char*, std::string>{"tokenizer_config.json", cfg.dump(2)}}) {
        const fs::path p = fs::path(dir) / name;
        std::ofstream f(p, std::ios::binary);
        f << text << "\n";
        f.flush();
        if (!f) fail("[export] {}: write failed ({})", p.string(), std::strerror(errno));
    }
    *note = what;
    return true;
}

}  // namespace tuner
