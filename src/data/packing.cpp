#include "data/packing.h"

#include <algorithm>
#include <map>

#include "core/error.h"

namespace tuner {

PackedRows pack_rows(const std::vector<int64_t>& lengths, int64_t capacity, bool keep_order, int64_t window) {
    PackedRows out;
    out.capacity = capacity;
    out.items.reserve(lengths.size());
    std::vector<std::vector<int64_t>> rows;
    if (keep_order) {  // next-fit
        int64_t free = 0;
        for (size_t i = 0; i < lengths.size(); i++) {
            TUNER_ASSERT(lengths[i] >= 1 && lengths[i] <= capacity);
            if (rows.empty() || lengths[i] > free) rows.emplace_back(), free = capacity;
            rows.back().push_back(int64_t(i));
            free -= lengths[i];
        }
    } else {
        // Best-fit decreasing over chunks of the (shuffled) sequence: inside a chunk the longest
        // samples are placed first, each into the open row with the least room that fits it.
        // Rows stay open across chunks; past `window` open rows the fullest ones are closed.
        std::multimap<int64_t, size_t> open;  // free tokens -> row
        const size_t chunk = 4096;
        std::vector<size_t> idx;
        for (size_t c0 = 0; c0 < lengths.size(); c0 += chunk) {
            size_t c1 = std::min(lengths.size(), c0 + chunk);
            idx.resize(c1 - c0);
            for (size_t i = c0; i < c1; i++) idx[i - c0] = i;
            std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return lengths[a] > lengths[b]; });
            for (size_t i : idx) {
                int64_t len = lengths[i];
                TUNER_ASSERT(len >= 1 && len <= capacity);
                auto it = open.lower_bound(len);
                size_t row;
                int64_t free;
                if (it != open.end()) {
                    row = it->second;
                    free = it->first - len;
                    open.erase(it);
                } else {
                    row = rows.size();
                    rows.emplace_back();
                    free = capacity - len;
                }
                rows[row].push_back(int64_t(i));
                if (free > 0) open.emplace(free, row);
            }
            while (int64_t(open.size()) > std::max<int64_t>(1, window)) open.erase(open.begin());
        }
    }
    for (const auto& r : rows) {
        out.items.insert(out.items.end(), r.begin(), r.end());
        out.offsets.push_back(int64_t(out.items.size()));
    }
    return out;
}

void fill_row(const SampleSet& samples, const int64_t* ids, int64_t n, int64_t T, int32_t pad_id, int32_t* tokens,
              int32_t* targets, int32_t* positions, int32_t* seg_start) {
    int64_t pos = 0;
    for (int64_t s = 0; s < n; s++) {
        int64_t len = samples.length(ids[s]);
        TUNER_ASSERT(pos + len <= T);
        const int32_t* tok = samples.tokens_of(ids[s]);
        const int32_t* lab = samples.labels_of(ids[s]);
        for (int64_t k = 0; k < len; k++) {
            tokens[pos + k] = tok[k];
            targets[pos + k] = k + 1 < len ? lab[k + 1] : kIgnoreLabel;
            positions[pos + k] = int32_t(k);
            seg_start[pos + k] = int32_t(pos);
        }
        pos += len;
    }
    for (int64_t k = pos; k < T; k++) {
        tokens[k] = pad_id;
        targets[k] = kIgnoreLabel;
        positions[k] = int32_t(k - pos);
        seg_start[k] = int32_t(pos);
    }
}

}  // namespace tuner
