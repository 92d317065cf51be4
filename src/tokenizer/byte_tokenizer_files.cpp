#include "tokenizer/byte_tokenizer_files.h"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"

namespace tuner {

using nlohmann::json;

// GPT-2's printable stand-in for each byte: printable Latin-1 bytes map to themselves, the rest
// to U+0100 + n in byte order (the alphabet every byte-level BPE vocabulary is written in).
static std::string byte_symbol(int b) {
    bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    int cp = b;
    if (!printable) {
        int n = 0;
        for (int x = 0; x < b; x++)
            if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) n++;
        cp = 256 + n;
    }
    std::string s;  // UTF-8 of cp (< 0x800)
    if (cp < 0x80) s.push_back(char(cp));
    else s += {char(0xC0 | (cp >> 6)), char(0x80 | (cp & 0x3F))};
    return s;
}

void write_byte_tokenizer(const std::string& dir) {
    json vocab = json::object();
    for (int b = 0; b < 256; b++) vocab[byte_symbol(b)] = b;
    const char* specials[] = {"<s>", "</s>", "<|im_start|>", "<|im_end|>"};
    json added = json::array();
    for (int i = 0; i < 4; i++) {
        vocab[specials[i]] = 256 + i;
        added.push_back({{"id", 256 + i}, {"content", specials[i]}, {"single_word", false}, {"lstrip", false},
                         {"rstrip", false}, {"normalized", false}, {"special", true}});
    }
    json tok = {
        {"version", "1.0"},
        {"truncation", nullptr},
        {"padding", nullptr},
        {"added_tokens", added},
        {"normalizer", nullptr},
        {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
        {"post_processor", nullptr},
        {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
        {"model",
         {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
          {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
          {"vocab", vocab}, {"merges", json::array()}}},
    };
    json cfg = {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"add_bos_token", false}, {"model_max_length", 1024},
                {"tokenizer_class", "PreTrainedTokenizerFast"}};
    auto write = [&](const std::string& name, const json& j) {
        write_text_atomic((std::filesystem::path(dir) / name).string(), j.dump(2) + "\n", "tokenizer");
    };
    write("tokenizer.json", tok);
    write("tokenizer_config.json", cfg);
}

}  // namespace tuner
