#include "data/sampler.h"

#include <algorithm>
#include <numeric>

#include "core/random.h"

namespace tuner {

uint64_t SeededRng::next() {
    state_ += 0x9e3779b97f4a7c15ull;
    return splitmix64(state_);
}

uint64_t SeededRng::below(uint64_t n) {
    return uint64_t((static_cast<unsigned __int128>(next()) * n) >> 64);
}

uint64_t derive_seed(uint64_t seed, uint64_t stream) { return splitmix64(splitmix64(seed) ^ (stream * 0xd1b54a32d192ed03ull + 1)); }

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch, bool shuffle) {
    std::vector<int64_t> order(size_t(std::max<int64_t>(n, 0)));
    std::iota(order.begin(), order.end(), int64_t(0));
    if (shuffle) seeded_shuffle(order, derive_seed(seed, uint64_t(epoch) + 1000));
    return order;
}

std::vector<int64_t> length_grouped_order(const std::vector<int64_t>& lengths, int64_t batch_size, uint64_t seed,
                                          int64_t epoch, int64_t mega) {
    int64_t n = int64_t(lengths.size());
    std::vector<int64_t> order = epoch_order(n, seed, epoch, true);
    int64_t group = std::max<int64_t>(1, batch_size) * std::max<int64_t>(1, mega);
    for (int64_t g = 0; g < n; g += group) {
        auto b = order.begin() + g, e = order.begin() + std::min(n, g + group);
        std::stable_sort(b, e, [&](int64_t x, int64_t y) { return lengths[size_t(x)] > lengths[size_t(y)]; });
    }
    if (n == 0) return order;
    // Move the batch with the longest row to the front.
    int64_t B = std::max<int64_t>(1, batch_size);
    int64_t longest = 0;
    for (int64_t i = 1; i < n; i++)
        if (lengths[size_t(order[size_t(i)])] > lengths[size_t(order[size_t(longest)])]) longest = i;
    int64_t batch = longest / B;
    if (batch > 0) {
        int64_t first_len = std::min(B, n), this_len = std::min(B, n - batch * B);
        if (first_len == this_len) std::swap_ranges(order.begin(), order.begin() + B, order.begin() + batch * B);
        else std::swap(order[0], order[size_t(longest)]);  // the last, shorter batch: move the row alone
    }
    return order;
}

}  // namespace tuner
