// libFuzzer target: the tokenizer.json loader, then encode / decode / streaming decode with
// whatever loaded. Any input must either load or throw tuner::Error; a loaded tokenizer must only
// produce ids below vocab_size(), decode to valid UTF-8, and stream exactly what decode() gives.
// Anything else (a crash, a sanitizer report, another exception) is a finding.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/error.h"
#include "tokenizer/internal.h"
#include "tokenizer/regex.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace {

void check(bool ok, const char* what) {
    if (!ok) {
        std::fprintf(stderr, "fuzz_tokenizer_json: invariant broken: %s\n", what);
        std::abort();
    }
}

void exercise(const tuner::Tokenizer& tok, std::string_view text) {
    for (bool special : {false, true}) {
        std::vector<int32_t> ids = tok.encode(text, special);
        for (int32_t id : ids) check(id >= 0 && id < tok.vocab_size(), "encode produced an id outside the vocabulary");
        std::string all = tok.decode(ids, !special);
        check(tuner::utf8::is_valid(all), "decode produced invalid UTF-8");
        tuner::StreamingDecoder sd(tok, !special);
        std::string streamed;
        for (int32_t id : ids) streamed += sd.push(id);
        streamed += sd.flush();
        check(streamed == all, "streaming decode differs from decode");
    }
    for (int32_t id : {0, 1, 2, 255, 256, -1, 1 << 30}) {
        std::string piece = tok.id_to_piece(id);
        int32_t back = tok.piece_to_id(piece);
        (void)tok.is_special(id);
        check(back >= -1 && back < tok.vocab_size(), "piece_to_id out of range");
    }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    // A pattern with catastrophic backtracking must fail fast rather than time out.
    tuner::set_regex_match_limit(100000);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view input(reinterpret_cast<const char*>(data), size);
    std::unique_ptr<tuner::Tokenizer> tok;
    try {
        tok = tuner::load_hf_tokenizer(input, "fuzz/tokenizer.json", {});
    } catch (const tuner::Error&) {
        return 0;
    }
    try {
        exercise(*tok, "Hello world! 123 don't  \t\n\n  x");
        exercise(*tok, "ab\xE4\xB8\x96\xF0\x9F\xA6\x99 <s></s><|endoftext|> \xE2\x96\x81\xE2\x96\x81 \xFF\xC3");
        exercise(*tok, "");
        // Some of the input itself as text, to reach words the fixed strings do not.
        exercise(*tok, input.substr(0, 96));
    } catch (const tuner::Error&) {
        // Encoding may refuse with a message (a regex over its match limit); never crash.
    }
    return 0;
}
