// A compiled PCRE2 pattern for the tokenizers' pre-tokenizer and normalizer regexes (internal).
//
// Patterns are compiled with PCRE2_UTF | PCRE2_UCP, so \s, \w, \d and \p{..} follow Unicode as
// the Oniguruma engine of Hugging Face tokenizers does, and with the JIT when PCRE2 has one.
// Subjects must be valid UTF-8 (the tokenizers clean their input first).
// Compiled patterns are immutable and shared between threads; match data lives per thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tuner {

class Regex {
  public:
    // Throws tuner::Error "[tokenizer] WHERE: bad regex '...': MESSAGE at offset N".
    Regex(const std::string& pattern, const std::string& where);
    ~Regex();
    Regex(const Regex&) = delete;
    Regex& operator=(const Regex&) = delete;

    // Appends the [start, end) byte ranges of the successive non-overlapping matches in s.
    // Empty matches are not reported (the search moves on by one character), as tokenizers'
    // Split never keeps empty pieces.
    void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const;
    // The first non-empty match at or after byte pos (a character boundary); false if none.
    // s must be valid UTF-8 (find_all checks; PCRE2 is told not to, to stay linear).
    bool find(std::string_view s, size_t pos, size_t* start, size_t* end) const;

    const std::string& pattern() const { return pattern_; }

  private:
    std::string pattern_, where_;
    void* code_ = nullptr;  // pcre2_code_8*
    bool jit_ = false;
};

// Upper bound on the backtracking work of one match attempt (PCRE2 match limit). The default is
// generous; the fuzz target lowers it so that a pathological pattern fails fast with an Error.
void set_regex_match_limit(uint32_t limit);

}  // namespace tuner
