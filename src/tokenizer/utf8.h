// UTF-8 helpers shared by the tokenizers (internal to src/tokenizer/).
//
// Ill-formed input is handled the way Python's and Rust's lossy decoders do it: each "maximal
// subpart of an ill-formed subsequence" (Unicode 15, section 3.9, U+FFFD substitution of maximal
// subparts) becomes one U+FFFD. A byte sequence can therefore be cleaned in pieces, as long as a
// piece never ends inside a sequence that could still complete (see utf8_incomplete_tail), and
// the result equals cleaning it at once: StreamingDecoder relies on this.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tuner::utf8 {

inline constexpr char32_t kReplacement = 0xFFFD;

// Length of the well-formed sequence starting at s[i], or 0 if s[i..] does not start with one
// (an ill-formed byte, or a sequence cut short by the end of s).
size_t valid_sequence_length(std::string_view s, size_t i);

// Length of the maximal subpart starting at s[i] when s[i..] does not start with a well-formed
// sequence: the longest prefix that could begin a well-formed sequence (at least 1).
size_t ill_formed_length(std::string_view s, size_t i);

// True when s is well-formed UTF-8 (fast path for ASCII).
bool is_valid(std::string_view s);

// s with every maximal ill-formed subpart replaced by U+FFFD.
std::string sanitize(std::string_view s);
// Appends sanitize(s) to out.
void append_sanitized(std::string& out, std::string_view s);

// Number of bytes at the end of s that form a proper prefix of a well-formed sequence (0..3):
// bytes that must be held back because the next bytes may complete them.
size_t incomplete_tail(std::string_view s);

// Decodes the well-formed sequence of length len at s[i] (len from valid_sequence_length).
char32_t decode_at(std::string_view s, size_t i, size_t len);
// Appends the UTF-8 encoding of c (c must be a scalar value).
void append(std::string& out, char32_t c);
inline std::string encode(char32_t c) {
    std::string s;
    append(s, c);
    return s;
}

// Number of bytes of the sequence that starts with lead byte b, assuming well-formed input.
inline size_t sequence_length_from_lead(uint8_t b) {
    return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}

// Unicode White_Space (what Rust's and Oniguruma's \s match).
bool is_whitespace(char32_t c);

}  // namespace tuner::utf8
