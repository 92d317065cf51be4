#include "core/random.h"

#include <cmath>

namespace tuner {

uint64_t stream_id(const char* name) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char* p = name; *p; p++) h = (h ^ uint8_t(*p)) * 0x100000001b3ull;
    return h;
}

// 53 random bits -> double in (0, 1): never exactly 0, so log() below is finite.
static inline double unit(uint64_t bits) { return (double(bits >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

void fill_normal(float* out, size_t n, uint64_t seed, uint64_t stream, float mean, float std) {
    const uint64_t key = splitmix64(seed ^ splitmix64(stream));
    // Box-Muller: pair j gives elements 2j and 2j+1.
#pragma omp parallel for schedule(static)
    for (size_t j = 0; j < (n + 1) / 2; j++) {
        double u1 = unit(splitmix64(key + 2 * j));
        double u2 = unit(splitmix64(key + 2 * j + 1));
        double r = std::sqrt(-2.0 * std::log(u1));
        double a = 6.283185307179586 * u2;
        out[2 * j] = float(mean + std * r * std::cos(a));
        if (2 * j + 1 < n) out[2 * j + 1] = float(mean + std * r * std::sin(a));
    }
}

void fill_uniform(float* out, size_t n, uint64_t seed, uint64_t stream, float lo, float hi) {
    const uint64_t key = splitmix64(seed ^ splitmix64(stream));
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = float(lo + (hi - lo) * unit(splitmix64(key + i)));
}

}  // namespace tuner
