// libFuzzer target for the safetensors header parser.
//
// Input: 8 bytes little-endian data-section size, then the header JSON text. A header either
// parses, and then every tensor must lie inside the data section without overlapping another,
// or it is rejected with a tuner::Error. Anything else (a crash, a sanitizer report, another
// exception type, a broken invariant below) is a finding.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
    if (size < 8) return -1;  // reject: not added to the corpus
    uint64_t data_size = 0;
    for (int i = 7; i >= 0; i--) data_size = (data_size << 8) | bytes[i];
    const char* text = reinterpret_cast<const char*>(bytes + 8);
    try {
        tuner::SafetensorsHeader h = tuner::parse_safetensors_header(text, size - 8, size_t(data_size), "fuzz");
        if (h.offsets.size() != h.tensors.size()) std::abort();
        std::vector<std::pair<uint64_t, uint64_t>> ranges;
        for (size_t i = 0; i < h.tensors.size(); i++) {
            const tuner::SafetensorsTensor& t = h.tensors[i];
            uint64_t begin = h.offsets[i], end = begin + t.nbytes;
            if (end < begin || end > data_size) std::abort();  // inside the data section
            uint64_t numel = 1;
            for (int64_t d : t.shape) {
                if (d < 0) std::abort();
                numel *= uint64_t(d);  // cannot overflow: the parser checked the product
            }
            if (numel * tuner::dtype_size(t.dtype) != t.nbytes) std::abort();
            if (i > 0 && h.offsets[i] < h.offsets[i - 1]) std::abort();  // in file order
            if (t.nbytes > 0) ranges.push_back({begin, end});
        }
        for (size_t i = 1; i < ranges.size(); i++)
            if (ranges[i].first < ranges[i - 1].second) std::abort();  // no overlap
    } catch (const tuner::Error&) {
        // A rejected header: the expected outcome for most inputs.
    }
    return 0;
}
