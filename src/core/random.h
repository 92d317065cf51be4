// Deterministic, counter-based random numbers: element i of stream s under seed k is a pure
// function of (k, s, i), so results do not depend on the thread count or on the order tensors
// are generated in (init-model writes a 7B model tensor by tensor, in parallel chunks).
#pragma once

#include <cstddef>
#include <cstdint>

namespace tuner {

inline uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

// Stream id for a name (FNV-1a), so each tensor gets its own stream.
uint64_t stream_id(const char* name);

// out[i] ~ N(mean, std), for i in [0, n), from (seed, stream).
void fill_normal(float* out, size_t n, uint64_t seed, uint64_t stream, float mean, float std);
// out[i] ~ U[lo, hi).
void fill_uniform(float* out, size_t n, uint64_t seed, uint64_t stream, float lo, float hi);

}  // namespace tuner
