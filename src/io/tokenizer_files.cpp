#include "io/tokenizer_files.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace tuner {

namespace fs = std::filesystem;
using nlohmann::json;

static std::string read_file(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    if (!f) fail("[tokenizer] {}: cannot open", p.string());
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

static json parse_json_file(const fs::path& p) {
    try {
        return json::parse(read_file(p));
    } catch (const json::parse_error& e) {
        fail("[tokenizer] {}: invalid JSON: {}", p.string(), e.what());
    }
}

// Counts field-1 entries (repeated SentencePiece pieces) of a ModelProto: a minimal protobuf walk.
static int64_t count_sentencepiece_pieces(const fs::path& p) {
    std::string b = read_file(p);
    size_t i = 0;
    int64_t pieces = 0;
    auto varint = [&](uint64_t* v) {
        *v = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (i >= b.size()) fail("[tokenizer] {}: truncated protobuf", p.string());
            uint8_t c = uint8_t(b[i++]);
            *v |= uint64_t(c & 0x7f) << shift;
            if (!(c & 0x80)) return;
        }
        fail("[tokenizer] {}: bad varint", p.string());
    };
    while (i < b.size()) {
        uint64_t key, v;
        varint(&key);
        switch (key & 7) {
            case 0: varint(&v); break;
            case 1: i += 8; break;
            case 5: i += 4; break;
            case 2:
                varint(&v);
                if (v > b.size() - i) fail("[tokenizer] {}: field runs past the end of the file", p.string());
                i += v;
                if ((key >> 3) == 1) pieces++;
                break;
            default: fail("[tokenizer] {}: unsupported protobuf wire type {}", p.string(), key & 7);
        }
    }
    if (i > b.size()) fail("[tokenizer] {}: truncated protobuf", p.string());
    return pieces;
}

TokenizerFilesInfo read_tokenizer_files_info(const std::string& dir) {
    TokenizerFilesInfo info;
    const char* candidates[] = {"tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                                "special_tokens_map.json", "generation_config.json", "vocab.json", "merges.txt"};
    for (const char* name : candidates)
        if (fs::exists(fs::path(dir) / name)) info.files.push_back(name);

    std::map<std::string, int64_t> token_ids;
    if (fs::exists(fs::path(dir) / "tokenizer.json")) {
        fs::path p = fs::path(dir) / "tokenizer.json";
        json j = parse_json_file(p);
        if (!j.is_object() || !j.contains("model") || !j["model"].is_object() || !j["model"].contains("vocab"))
            fail("[tokenizer] {}: no model.vocab", p.string());
        const json& vocab = j["model"]["vocab"];
        auto note = [&](const std::string& tok, int64_t id) {
            if (id < 0) fail("[tokenizer] {}: negative id for token '{}'", p.string(), tok);
            token_ids[tok] = id;
            info.vocab_size = std::max(info.vocab_size, id + 1);
        };
        if (vocab.is_object()) {
            for (auto it = vocab.begin(); it != vocab.end(); ++it) {
                if (!it.value().is_number_integer()) fail("[tokenizer] {}: vocab id of '{}' is not an integer", p.string(), it.key());
                note(it.key(), it.value().get<int64_t>());
            }
        } else if (vocab.is_array()) {  // Unigram: [[piece, score], ...]
            for (size_t k = 0; k < vocab.size(); k++)
                note(vocab[k].is_array() && !vocab[k].empty() && vocab[k][0].is_string() ? vocab[k][0].get<std::string>() : "",
                     int64_t(k));
        } else {
            fail("[tokenizer] {}: model.vocab is neither an object nor an array", p.string());
        }
        if (j.contains("added_tokens") && j["added_tokens"].is_array())
            for (const auto& t : j["added_tokens"])
                if (t.is_object() && t.contains("id") && t["id"].is_number_integer() && t.contains("content") &&
                    t["content"].is_string())
                    note(t["content"].get<std::string>(), t["id"].get<int64_t>());
    } else if (fs::exists(fs::path(dir) / "tokenizer.model")) {
        info.vocab_size = count_sentencepiece_pieces(fs::path(dir) / "tokenizer.model");
        info.bos_token_id = 1;  // SentencePiece defaults (unk 0, bos 1, eos 2)
        info.eos_token_id = 2;
    } else {
        fail("[tokenizer] {}: no tokenizer.json or tokenizer.model", dir);
    }
    if (info.vocab_size <= 0) fail("[tokenizer] {}: empty vocabulary", dir);

    fs::path cfg = fs::path(dir) / "tokenizer_config.json";
    if (fs::exists(cfg) && !token_ids.empty()) {
        json j = parse_json_file(cfg);
        auto token_of = [&](const char* key) -> std::string {
            if (!j.contains(key)) return "";
            const json& v = j[key];
            if (v.is_string()) return v.get<std::string>();
            if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
            return "";
        };
        std::string bos = token_of("bos_token"), eos = token_of("eos_token");
        if (!bos.empty() && token_ids.count(bos)) info.bos_token_id = token_ids[bos];
        if (!eos.empty() && token_ids.count(eos)) info.eos_token_id = token_ids[eos];
    }
    return info;
}

}  // namespace tuner
