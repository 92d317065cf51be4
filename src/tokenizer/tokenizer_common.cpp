// Shared parts of the tokenizers: tokenizer_config.json, file reading, decode() on top of
// decode_append, and StreamingDecoder. Needs neither SentencePiece nor PCRE2 (the fuzz target
// links it without them).
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/internal.h"
#include "tokenizer/utf8.h"

namespace tuner {

std::string read_file_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("[tokenizer] {}: cannot read ({})", path, std::strerror(errno));
    std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) fail("[tokenizer] {}: read error", path);
    return s;
}

TokenizerConfig parse_tokenizer_config(std::string_view text, const std::string& path) {
    TokenizerConfig c;
    c.path = path;
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text.begin(), text.end());
    } catch (const nlohmann::json::exception& e) {
        fail("[tokenizer] {}: not valid JSON ({})", path, e.what());
    }
    if (!j.is_object()) fail("[tokenizer] {}: expected a JSON object", path);
    auto token = [&](const char* key) {
        TokenizerConfig::Token t;
        auto it = j.find(key);
        if (it == j.end()) return t;
        t.present = true;
        if (it->is_null()) {
            t.is_null = true;
        } else if (it->is_string()) {
            t.content = it->get<std::string>();
        } else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
            t.content = (*it)["content"].get<std::string>();  // {"__type": "AddedToken", "content": ...}
        } else {
            fail("[tokenizer] {}: '{}' must be a string, null or an object with 'content'", path, key);
        }
        return t;
    };
    c.bos_token = token("bos_token");
    c.eos_token = token("eos_token");
    auto flag = [&](const char* key) -> std::optional<bool> {
        auto it = j.find(key);
        if (it == j.end() || it->is_null()) return std::nullopt;
        if (!it->is_boolean()) fail("[tokenizer] {}: '{}' must be true or false", path, key);
        return it->get<bool>();
    };
    c.add_bos_token = flag("add_bos_token");
    c.add_eos_token = flag("add_eos_token");
    if (auto it = j.find("tokenizer_class"); it != j.end() && it->is_string()) c.tokenizer_class = it->get<std::string>();
    return c;
}

TokenizerConfig read_tokenizer_config(const std::string& dir) {
    std::filesystem::path folder(dir.empty() ? "." : dir);
    std::filesystem::path p = folder / "tokenizer_config.json", m = folder / "special_tokens_map.json";
    std::error_code ec;
    TokenizerConfig c;
    if (std::filesystem::is_regular_file(p, ec)) c = parse_tokenizer_config(read_file_bytes(p.string()), p.string());
    // transformers also takes bos_token / eos_token from special_tokens_map.json.
    if ((!c.bos_token.present || !c.eos_token.present) && std::filesystem::is_regular_file(m, ec)) {
        TokenizerConfig map = parse_tokenizer_config(read_file_bytes(m.string()), m.string());
        if (!c.bos_token.present) c.bos_token = map.bos_token;
        if (!c.eos_token.present) c.eos_token = map.eos_token;
        if (c.path.empty() && (map.bos_token.present || map.eos_token.present)) c.path = m.string();
    }
    return c;
}

bool config_controls_bos_eos(const TokenizerConfig& config) {
    // transformers' LlamaTokenizerFast (and CodeLlama's, Gemma's) rebuild the post-processor in
    // __init__ from add_bos_token (default true) and add_eos_token (default false).
    static const char* const classes[] = {"LlamaTokenizer", "LlamaTokenizerFast", "CodeLlamaTokenizer",
                                          "CodeLlamaTokenizerFast", "GemmaTokenizer", "GemmaTokenizerFast"};
    for (const char* c : classes)
        if (config.tokenizer_class == c) return true;
    return false;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
    DecodeState state;
    std::string bytes;
    for (int32_t id : ids) decode_append(state, id, skip_special, bytes);
    decode_finish(state, bytes);
    return utf8::sanitize(bytes);
}

std::string StreamingDecoder::push(int32_t id) {
    tok_.decode_append(state_, id, skip_special_, pending_);
    size_t hold = utf8::incomplete_tail(pending_);
    std::string out;
    utf8::append_sanitized(out, std::string_view(pending_).substr(0, pending_.size() - hold));
    pending_.erase(0, pending_.size() - hold);
    return out;
}

std::string StreamingDecoder::flush() {
    tok_.decode_finish(state_, pending_);
    std::string out = utf8::sanitize(pending_);
    pending_.clear();
    state_ = {};
    return out;
}

}  // namespace tuner
