// Unicode normalization forms, lowercasing and accent stripping for tokenizer.json normalizers
// (internal), done with ICU on UTF-8 directly. Input must be valid UTF-8.
#pragma once

#include <string>
#include <string_view>

namespace tuner {

enum class NormalForm { NFC, NFD, NFKC, NFKD };

// s in the given normal form (a copy-free check first: text already normalized is returned as is).
std::string unicode_normalize(std::string_view s, NormalForm form);
// Full Unicode lowercasing (as Rust's str::to_lowercase, final sigma included).
std::string unicode_lowercase(std::string_view s);
// Removes nonspacing combining marks (general category Mn), as tokenizers' StripAccents.
std::string unicode_strip_marks(std::string_view s);
// True for general categories L* / N* (used for single_word added tokens' \w checks).
bool unicode_is_word_char(char32_t c);

}  // namespace tuner
