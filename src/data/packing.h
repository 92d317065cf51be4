// Packing samples into rows of a fixed length T, and writing rows into the arrays of a Batch.
//
// Samples are never split across rows (a chat sample cut in two would lose its prompt). Rows
// are filled best-fit decreasing over chunks of 4096 samples of the (shuffled) sequence: within
// a chunk the longest samples go first, each into the open row with the least room that fits it;
// rows stay open across chunks, and past `window` open rows the fullest are closed. With
// keep_order rows are filled next-fit, so samples stay in file order. A row's unused tail is
// padding (see fill_row).
//
// Row layout, for samples a (3 tokens) and b (2 tokens) in a row of T = 6:
//   tokens     a0 a1 a2 b0 b1 pad
//   targets    la1 la2 -100 lb1 -100 -100    (label of the next token of the same sample)
//   positions  0  1  2  0  1  0              (restart in each sample)
//   seg_start  0  0  0  3  3  5              (first index of the token's sample; padding is its own)
// so attention stays inside each sample and no sample's last token predicts the next sample.
#pragma once

#include <cstdint>
#include <vector>

#include "data/samples.h"

namespace tuner {

struct PackedRows {
    int64_t capacity = 0;                // T
    std::vector<int64_t> offsets{0};     // row r holds items[offsets[r], offsets[r+1])
    std::vector<int64_t> items;          // indices into the sequence that was packed

    int64_t rows() const { return int64_t(offsets.size()) - 1; }
};

// Packs a sequence of lengths (each in [1, capacity]) into rows of `capacity` tokens; rows are
// returned in the order they were opened. `window`: rows kept open between chunks.
PackedRows pack_rows(const std::vector<int64_t>& lengths, int64_t capacity, bool keep_order, int64_t window = 1024);

// Writes one row of T tokens holding `samples[ids[0..n)]` back to back, then padding: pad_id
// tokens with target -100, positions from 0 and their own segment. The samples must fit in T.
void fill_row(const SampleSet& samples, const int64_t* ids, int64_t n, int64_t T, int32_t pad_id, int32_t* tokens,
              int32_t* targets, int32_t* positions, int32_t* seg_start);

}  // namespace tuner
