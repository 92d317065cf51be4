// libFuzzer target for the GGUF reader and the tokenizer built from GGUF metadata.
//
// Input: the bytes of a GGUF file. It either parses, and then every metadata value and every
// tensor's data must lie inside the input (tensors aligned, in the data section, not
// overlapping), every typed getter must either return or throw tuner::Error, and a tokenizer in
// the metadata must either load (and encode a short text into valid ids) or throw tuner::Error;
// or the parse throws tuner::Error. Anything else (a crash, a sanitizer report, another
// exception type, a broken invariant below) is a finding.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/gguf.h"
#include "tokenizer/regex.h"
#include "tokenizer/tokenizer.h"

namespace {

bool inside(const uint8_t* base, size_t size, const uint8_t* p, size_t n) {
    return p >= base && size_t(p - base) <= size && n <= size - size_t(p - base);
}

template <typename F>
void may_fail(F&& f) {
    try {
        f();
    } catch (const tuner::Error&) {
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
    static bool once = [] {
        tuner::set_regex_match_limit(100000);  // fixed patterns, but keep every run short
        return true;
    }();
    (void)once;
    try {
        tuner::Gguf g(bytes, size, "fuzz");
        if (g.alignment() == 0 || (g.alignment() & (g.alignment() - 1)) != 0) std::abort();
        for (const tuner::GgufKV& kv : g.kvs()) {
            if (kv.nbytes > 0 && !inside(bytes, size, kv.data, kv.nbytes)) std::abort();
            if (g.find(kv.key) != &kv) std::abort();
            // Every getter either answers or throws tuner::Error.
            may_fail([&] { g.get_string(kv.key); });
            may_fail([&] { g.get_u32(kv.key); });
            may_fail([&] { g.get_i64(kv.key); });
            may_fail([&] { g.get_f32(kv.key); });
            may_fail([&] { g.get_bool(kv.key); });
            may_fail([&] {
                for (std::string_view s : g.get_string_array(kv.key))
                    if (!s.empty() && !inside(bytes, size, reinterpret_cast<const uint8_t*>(s.data()), s.size()))
                        std::abort();
            });
            may_fail([&] { g.get_f32_array(kv.key); });
            may_fail([&] { g.get_i32_array(kv.key); });
        }
        std::vector<std::pair<uint64_t, uint64_t>> ranges;
        for (const tuner::GgufTensor& t : g.tensors()) {
            const tuner::GgmlTypeInfo* info = tuner::ggml_type_info(t.ggml_type);
            if (!info || t.ne.size() > 4) std::abort();
            if (t.offset % g.alignment() != 0) std::abort();
            if (g.data_offset() % g.alignment() != 0) std::abort();
            if (t.nbytes > 0 && !inside(bytes, size, t.data, t.nbytes)) std::abort();
            if (t.nbytes > 0 && t.data != bytes + g.data_offset() + t.offset) std::abort();
            uint64_t numel = 1;
            for (int64_t d : t.ne) {
                if (d < 0) std::abort();
                numel *= uint64_t(d);  // the parser checked the product
            }
            if (int64_t(numel) != t.numel) std::abort();
            if (!t.ne.empty() && t.ne[0] % info->block_elems != 0) std::abort();
            if (numel / info->block_elems * info->block_bytes != t.nbytes) std::abort();
            if (g.find_tensor(t.name) != &t) std::abort();
            may_fail([&] { t.dtype("fuzz"); });
            if (t.nbytes > 0) ranges.push_back({t.offset, t.offset + t.nbytes});
        }
        std::sort(ranges.begin(), ranges.end());
        for (size_t i = 1; i < ranges.size(); i++)
            if (ranges[i].first < ranges[i - 1].second) std::abort();  // no overlap
        if (g.has("tokenizer.ggml.model")) {
            may_fail([&] {
                auto tok = tuner::load_gguf_tokenizer(g);
                std::vector<int32_t> ids = tok->encode("Hello, wörld 123 <s>\n  x", true);
                for (int32_t id : ids)
                    if (id < 0 || id >= tok->vocab_size()) std::abort();
                tok->decode(ids);
            });
        }
    } catch (const tuner::Error&) {
        // A rejected file: the expected outcome for most inputs.
    }
    return 0;
}
