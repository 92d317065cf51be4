#include "tokenizer/unicode_norm.h"

#include <unicode/bytestream.h>
#include <unicode/casemap.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>

#include <climits>

#include "core/error.h"
#include "tokenizer/utf8.h"

namespace tuner {

namespace {

const icu::Normalizer2& normalizer(NormalForm form) {
    UErrorCode status = U_ZERO_ERROR;
    const icu::Normalizer2* n = nullptr;
    switch (form) {
        case NormalForm::NFC: n = icu::Normalizer2::getNFCInstance(status); break;
        case NormalForm::NFD: n = icu::Normalizer2::getNFDInstance(status); break;
        case NormalForm::NFKC: n = icu::Normalizer2::getNFKCInstance(status); break;
        case NormalForm::NFKD: n = icu::Normalizer2::getNFKDInstance(status); break;
    }
    if (U_FAILURE(status) || !n) fail("[tokenizer] ICU normalizer data is missing ({})", u_errorName(status));
    return *n;
}

bool is_ascii(std::string_view s) {
    for (char c : s)
        if (uint8_t(c) >= 0x80) return false;
    return true;
}

}  // namespace

std::string unicode_normalize(std::string_view s, NormalForm form) {
    if (is_ascii(s)) return std::string(s);  // ASCII is invariant under all four forms
    if (s.size() > size_t(INT32_MAX)) fail("[tokenizer] text of {} bytes is too long to normalize", s.size());
    const icu::Normalizer2& n = normalizer(form);
    UErrorCode status = U_ZERO_ERROR;
    icu::StringPiece piece(s.data(), int32_t(s.size()));
    if (n.isNormalizedUTF8(piece, status) && U_SUCCESS(status)) return std::string(s);
    status = U_ZERO_ERROR;
    std::string out;
    out.reserve(s.size() + s.size() / 8);
    icu::StringByteSink<std::string> sink(&out);
    n.normalizeUTF8(0, piece, sink, nullptr, status);
    if (U_FAILURE(status)) fail("[tokenizer] Unicode normalization failed ({})", u_errorName(status));
    return out;
}

std::string unicode_lowercase(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    if (is_ascii(s)) {
        for (char c : s) out.push_back(c >= 'A' && c <= 'Z' ? char(c + 32) : c);
        return out;
    }
    if (s.size() > size_t(INT32_MAX)) fail("[tokenizer] text of {} bytes is too long to lowercase", s.size());
    UErrorCode status = U_ZERO_ERROR;
    icu::StringByteSink<std::string> sink(&out);
    icu::CaseMap::utf8ToLower("", 0, icu::StringPiece(s.data(), int32_t(s.size())), sink, nullptr, status);
    if (U_FAILURE(status)) fail("[tokenizer] lowercasing failed ({})", u_errorName(status));
    return out;
}

std::string unicode_strip_marks(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    size_t i = 0;
    while (i < s.size()) {
        size_t len = utf8::valid_sequence_length(s, i);
        if (len == 0) len = 1;
        char32_t c = utf8::decode_at(s, i, len);
        if (u_charType(UChar32(c)) != U_NON_SPACING_MARK) out.append(s.substr(i, len));
        i += len;
    }
    return out;
}

bool unicode_is_word_char(char32_t c) {
    if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    // Rust's \w: Alphabetic, M, Nd, Pc, Join_Control.
    int8_t t = u_charType(UChar32(c));
    return u_isUAlphabetic(UChar32(c)) || t == U_NON_SPACING_MARK || t == U_ENCLOSING_MARK ||
           t == U_COMBINING_SPACING_MARK || t == U_DECIMAL_DIGIT_NUMBER || t == U_CONNECTOR_PUNCTUATION ||
           c == 0x200C || c == 0x200D;
}

}  // namespace tuner
