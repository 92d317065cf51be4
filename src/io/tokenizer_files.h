// What init-model needs to know about a tokenizer folder before the tokenizer itself exists:
// the files to copy, the vocabulary size (largest id + 1, added tokens included) and the
// BOS/EOS ids named in tokenizer_config.json.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tuner {

struct TokenizerFilesInfo {
    std::vector<std::string> files;  // tokenizer files present in the folder (names only)
    int64_t vocab_size = 0;
    int64_t bos_token_id = -1;
    int64_t eos_token_id = -1;
};

// Reads tokenizer.json (model.vocab and added_tokens) or, without it, counts the pieces of a
// SentencePiece tokenizer.model. Errors name the file.
TokenizerFilesInfo read_tokenizer_files_info(const std::string& dir);

}  // namespace tuner
