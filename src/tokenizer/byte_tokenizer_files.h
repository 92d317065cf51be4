// A tokenizer the project makes itself, for demos and tests that must not depend on downloaded
// files: byte-level BPE in Hugging Face's tokenizer.json format with the 256 byte tokens (GPT-2's
// byte-to-unicode alphabet), no merges, and four special tokens: <s> (256), </s> (257),
// <|im_start|> (258), <|im_end|> (259). Every string encodes (one token per byte) and decodes back
// exactly; `tuner init-model PRESET DIR --tokenizer bytes` writes it next to a random model.
#pragma once

#include <string>

namespace tuner {

constexpr int kByteTokenizerVocab = 260;

// Writes DIR/tokenizer.json and DIR/tokenizer_config.json (DIR must exist).
void write_byte_tokenizer(const std::string& dir);

}  // namespace tuner
