// Elementwise adds (residual connections) and the bf16 rounding of a gradient. Memory-bound:
// plain loops the compiler vectorises, split across threads only when the arrays are large enough
// to pay for the fork.

#include <algorithm>

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

// out = bf16(x), in blocks per thread (convert_from_f32 vectorises each block).
void to_bf16(uint16_t* out, const float* x, int64_t n) {
    constexpr int64_t kBlock = 16384;
    const int64_t nblocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n > 4 * kBlock)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        const int64_t i0 = blk * kBlock;
        convert_from_f32(out + i0, DType::BF16, x + i0, size_t(std::min(kBlock, n - i0)));
    }
}

}  // namespace tuner::cpu
