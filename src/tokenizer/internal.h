// Pieces shared by the tokenizer implementations (internal to src/tokenizer/).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "tokenizer/tokenizer.h"

namespace tuner {

// What tokenizer_config.json (transformers) says about special tokens; absent fields stay empty.
struct TokenizerConfig {
    std::string path;  // "" when there is no tokenizer_config.json
    // bos_token / eos_token: absent (nullopt), null (empty string with is_null), or the content.
    struct Token {
        bool present = false, is_null = false;
        std::string content;
    };
    Token bos_token, eos_token;
    std::optional<bool> add_bos_token, add_eos_token;
    std::string tokenizer_class;
};

// Parses the text of a tokenizer_config.json; path is for messages. Throws tuner::Error.
TokenizerConfig parse_tokenizer_config(std::string_view text, const std::string& path);
// Reads DIR/tokenizer_config.json when it exists, else returns an empty config.
TokenizerConfig read_tokenizer_config(const std::string& dir);

// Builds a tokenizer from the text of a tokenizer.json (path is for messages only).
std::unique_ptr<Tokenizer> load_hf_tokenizer(std::string_view json_text, const std::string& path,
                                             const TokenizerConfig& config);
// Loads a SentencePiece tokenizer.model.
std::unique_ptr<Tokenizer> load_sp_tokenizer(const std::string& path, const TokenizerConfig& config);

// The whole file; throws "[tokenizer] PATH: cannot read (reason)".
std::string read_file_bytes(const std::string& path);

// True when transformers rebuilds the post-processor of this tokenizer class from
// add_bos_token / add_eos_token (LlamaTokenizerFast and its relatives do).
bool config_controls_bos_eos(const TokenizerConfig& config);

}  // namespace tuner
