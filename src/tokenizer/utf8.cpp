#include "tokenizer/utf8.h"

#include <cstring>

namespace tuner::utf8 {

namespace {

// The range the second byte must lie in after lead byte b (Unicode table 3-7), or {1, 0} when b
// cannot start a multi-byte sequence.
struct Range {
    uint8_t lo, hi;
};
inline Range second_byte_range(uint8_t b) {
    if (b >= 0xC2 && b <= 0xDF) return {0x80, 0xBF};
    if (b == 0xE0) return {0xA0, 0xBF};
    if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) return {0x80, 0xBF};
    if (b == 0xED) return {0x80, 0x9F};
    if (b == 0xF0) return {0x90, 0xBF};
    if (b >= 0xF1 && b <= 0xF3) return {0x80, 0xBF};
    if (b == 0xF4) return {0x80, 0x8F};
    return {1, 0};
}

inline size_t expected_length(uint8_t b) { return b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4; }

// How many bytes of s[i..] match a well-formed sequence (0 when s[i] is no valid lead byte).
// Sets *complete when all bytes of the sequence are there.
inline size_t matched_prefix(std::string_view s, size_t i, bool* complete) {
    uint8_t b = uint8_t(s[i]);
    *complete = false;
    if (b < 0x80) {
        *complete = true;
        return 1;
    }
    Range r = second_byte_range(b);
    if (r.lo > r.hi) return 0;
    size_t need = expected_length(b);
    size_t n = 1;
    if (i + 1 >= s.size()) return n;
    uint8_t c = uint8_t(s[i + 1]);
    if (c < r.lo || c > r.hi) return n;
    n = 2;
    while (n < need) {
        if (i + n >= s.size()) return n;
        c = uint8_t(s[i + n]);
        if (c < 0x80 || c > 0xBF) return n;
        n++;
    }
    *complete = true;
    return n;
}

}  // namespace

size_t valid_sequence_length(std::string_view s, size_t i) {
    bool complete;
    size_t n = matched_prefix(s, i, &complete);
    return complete ? n : 0;
}

size_t ill_formed_length(std::string_view s, size_t i) {
    bool complete;
    size_t n = matched_prefix(s, i, &complete);
    return n == 0 ? 1 : n;
}

bool is_valid(std::string_view s) {
    size_t i = 0, n = s.size();
    const char* p = s.data();
    while (i < n) {
        // Eight ASCII bytes at a time.
        if (i + 8 <= n) {
            uint64_t w;
            std::memcpy(&w, p + i, 8);
            if ((w & 0x8080808080808080ull) == 0) {
                i += 8;
                continue;
            }
        }
        if (uint8_t(p[i]) < 0x80) {
            i++;
            continue;
        }
        size_t len = valid_sequence_length(s, i);
        if (len == 0) return false;
        i += len;
    }
    return true;
}

void append_sanitized(std::string& out, std::string_view s) {
    if (is_valid(s)) {
        out.append(s);
        return;
    }
    size_t i = 0;
    while (i < s.size()) {
        size_t len = valid_sequence_length(s, i);
        if (len) {
            out.append(s.substr(i, len));
            i += len;
        } else {
            append(out, kReplacement);
            i += ill_formed_length(s, i);
        }
    }
}

std::string sanitize(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    append_sanitized(out, s);
    return out;
}

size_t incomplete_tail(std::string_view s) {
    // A proper prefix of a sequence is at most 3 bytes long and starts with a lead byte.
    size_t n = s.size();
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        size_t i = n - back;
        uint8_t b = uint8_t(s[i]);
        if (b < 0x80) return 0;
        if (b >= 0xC0) {
            bool complete;
            size_t m = matched_prefix(s, i, &complete);
            // Held back only if every byte up to the end matched and the sequence is not done.
            return (!complete && m == back) ? back : 0;
        }
    }
    return 0;
}

char32_t decode_at(std::string_view s, size_t i, size_t len) {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(s.data()) + i;
    switch (len) {
        case 1: return p[0];
        case 2: return char32_t(p[0] & 0x1F) << 6 | (p[1] & 0x3F);
        case 3: return char32_t(p[0] & 0x0F) << 12 | char32_t(p[1] & 0x3F) << 6 | (p[2] & 0x3F);
        default:
            return char32_t(p[0] & 0x07) << 18 | char32_t(p[1] & 0x3F) << 12 | char32_t(p[2] & 0x3F) << 6 |
                   (p[3] & 0x3F);
    }
}

void append(std::string& out, char32_t c) {
    if (c < 0x80) {
        out.push_back(char(c));
    } else if (c < 0x800) {
        out.push_back(char(0xC0 | (c >> 6)));
        out.push_back(char(0x80 | (c & 0x3F)));
    } else if (c < 0x10000) {
        out.push_back(char(0xE0 | (c >> 12)));
        out.push_back(char(0x80 | ((c >> 6) & 0x3F)));
        out.push_back(char(0x80 | (c & 0x3F)));
    } else {
        out.push_back(char(0xF0 | (c >> 18)));
        out.push_back(char(0x80 | ((c >> 12) & 0x3F)));
        out.push_back(char(0x80 | ((c >> 6) & 0x3F)));
        out.push_back(char(0x80 | (c & 0x3F)));
    }
}

bool is_whitespace(char32_t c) {
    if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D);
    if (c < 0x85) return false;
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

}  // namespace tuner::utf8
