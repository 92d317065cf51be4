// Elementwise adds (residual connections). Memory-bound: plain loops the compiler vectorises,
// split across threads only when the arrays are large enough to pay for the fork.

#include "backend/kernels.h"

namespace tuner::cpu {

// out = a + b; out may alias a (or b).
void add_forward(float* out, const float* a, const float* b, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

// a += b.
void add_inplace(float* a, const float* b, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) a[i] += b[i];
}

}  // namespace tuner::cpu
