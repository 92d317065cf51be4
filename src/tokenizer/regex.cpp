#include "tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <atomic>

#include "core/error.h"
#include "tokenizer/utf8.h"

namespace tuner {

namespace {

std::atomic<uint32_t> g_match_limit{100'000'000};

std::string pcre2_message(int code) {
    PCRE2_UCHAR buf[256];
    int n = pcre2_get_error_message(code, buf, sizeof(buf));
    return n < 0 ? "unknown PCRE2 error" : std::string(reinterpret_cast<char*>(buf), size_t(n));
}

// Per-thread match state: match data (only the whole-match offsets are read), a match context
// with limits, and a JIT stack larger than PCRE2's 32 KiB default so that long runs of
// whitespace against patterns like \s+(?!\S) do not exhaust it.
struct MatchState {
    pcre2_match_data* data = nullptr;
    pcre2_match_context* context = nullptr;
    pcre2_jit_stack* jit_stack = nullptr;
    uint32_t limit = 0;

    MatchState() {
        data = pcre2_match_data_create(32, nullptr);
        context = pcre2_match_context_create(nullptr);
        jit_stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
        if (!data || !context) throw std::bad_alloc();
        if (jit_stack) pcre2_jit_stack_assign(context, nullptr, jit_stack);
        pcre2_set_heap_limit(context, 64 * 1024);  // KiB, for the interpreter's backtracking frames
        set_limit(g_match_limit.load(std::memory_order_relaxed));
    }
    ~MatchState() {
        pcre2_match_data_free(data);
        pcre2_match_context_free(context);
        if (jit_stack) pcre2_jit_stack_free(jit_stack);
    }
    void set_limit(uint32_t l) {
        limit = l;
        pcre2_set_match_limit(context, l);
    }
};

MatchState& match_state() {
    thread_local MatchState state;
    uint32_t l = g_match_limit.load(std::memory_order_relaxed);
    if (state.limit != l) state.set_limit(l);
    return state;
}

}  // namespace

void set_regex_match_limit(uint32_t limit) { g_match_limit.store(limit); }

Regex::Regex(const std::string& pattern, const std::string& where) : pattern_(pattern), where_(where) {
    int err = 0;
    PCRE2_SIZE err_offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     PCRE2_UTF | PCRE2_UCP, &err, &err_offset, nullptr);
    if (!code)
        fail("[tokenizer] {}: bad regex '{}': {} at offset {}", where, pattern, pcre2_message(err), err_offset);
    code_ = code;
    uint32_t have_jit = 0;
    pcre2_config(PCRE2_CONFIG_JIT, &have_jit);
    if (have_jit) jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

bool Regex::find(std::string_view s, size_t pos, size_t* start, size_t* end) const {
    auto* code = static_cast<pcre2_code*>(code_);
    MatchState& st = match_state();
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
    while (pos <= s.size()) {
        // The subject was validated by the caller (find_all, or the tokenizer's input cleaning).
        int rc = pcre2_match(code, subject, s.size(), pos, PCRE2_NO_UTF_CHECK, st.data, st.context);
        if (rc == PCRE2_ERROR_NOMATCH) return false;
        if (rc < 0)
            fail("[tokenizer] {}: regex '{}' failed on a {}-byte text: {}", where_, pattern_, s.size(),
                 pcre2_message(rc));
        PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.data);
        if (ov[1] > ov[0]) {
            *start = ov[0];
            *end = ov[1];
            return true;
        }
        // An empty match: look again one character further on.
        if (ov[0] >= s.size()) return false;
        pos = ov[0] + utf8::sequence_length_from_lead(uint8_t(s[ov[0]]));
    }
    return false;
}

void Regex::find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
    if (!utf8::is_valid(s)) fail("[tokenizer] {}: regex subject is not valid UTF-8", where_);
    size_t pos = 0, a, b;
    while (pos < s.size() && find(s, pos, &a, &b)) {
        out.emplace_back(a, b);
        pos = b;
    }
}

}  // namespace tuner
