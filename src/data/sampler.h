// Orders of rows per epoch: seeded shuffles (our own Fisher-Yates on splitmix64, so an order is
// the same on every platform and standard library) and a length-grouped order.
//
//   std::vector<int64_t> order = epoch_order(n, seed, epoch, /*shuffle=*/true);
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace tuner {

// A generator of 64-bit values from a seed (splitmix64 over a counter).
class SeededRng {
  public:
    explicit SeededRng(uint64_t seed) : state_(seed) {}
    uint64_t next();
    // Uniform in [0, n) (Lemire's multiply-shift; bias below 2^-40 for n < 2^24).
    uint64_t below(uint64_t n);

  private:
    uint64_t state_;
};

// A seed for stream `stream` (an epoch, a purpose) derived from a user seed.
uint64_t derive_seed(uint64_t seed, uint64_t stream);

// Shuffles v in place.
template <typename T>
void seeded_shuffle(std::vector<T>& v, uint64_t seed) {
    SeededRng rng(seed);
    for (size_t i = v.size(); i > 1; i--) {
        size_t j = size_t(rng.below(i));
        std::swap(v[i - 1], v[j]);
    }
}

// 0..n-1, shuffled with (seed, epoch) when shuffle is true.
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch, bool shuffle);

// Length-grouped order (as Hugging Face's LengthGroupedSampler): a seeded shuffle cut into
// "mega-batches" of batch_size * mega rows, each sorted by length, longest first, so that a batch
// of batch_size consecutive rows has similar lengths and padding is small. The batch holding the
// longest row of the epoch is moved to the front, so running out of memory shows at once.
std::vector<int64_t> length_grouped_order(const std::vector<int64_t>& lengths, int64_t batch_size, uint64_t seed,
                                          int64_t epoch, int64_t mega = 50);

}  // namespace tuner
