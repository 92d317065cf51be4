// SwiGLU: h = silu(gate) * up with silu(g) = g * sigmoid(g). gate, up, h are (N, F) flattened to n.
// exp is the vectorised one from simd.h: a scalar expf per element would cost as much as a
// small GEMM at these sizes.

#include <algorithm>

#include "backend/cpu/simd.h"
#include "backend/cpu/act_f32.h"
#include "backend/kernels.h"

namespace tuner::cpu {

using namespace simd;

namespace {
constexpr int64_t kBlock = 4096;  // elements per OpenMP work item
inline Vec sigmoid(Vec g) { return div(set1(1.0f), add(set1(1.0f), exp(sub(zero(), g)))); }
}  // namespace

void swiglu_forward(ActOut h_act, ActIn gate_act, ActIn up_act, int64_t n) {
    const F32In gate_f32(gate_act, n), up_f32(up_act, n);
    F32Out h_f32(h_act, n);
    float* h = h_f32.get();
    const float *gate = gate_f32.get(), *up = up_f32.get();
    const int64_t nblocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n > 4 * kBlock)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        const int64_t end = std::min(n, (blk + 1) * kBlock);
        for (int64_t i = blk * kBlock; i < end; i += W) {
            const Mask m = mask_first(int(std::min<int64_t>(W, end - i)));
            const Vec g = load(gate + i, m), u = load(up + i, m);
            store(h + i, mul(mul(g, sigmoid(g)), u), m);
        }
    }
}

// With s = sigmoid(g): d silu/dg = s * (1 + g * (1 - s)).
//   dgate = dh * up * s * (1 + g (1 - s)),  dup = dh * g * s      (both overwritten)
void swiglu_backward(float* dgate, float* dup, const float* dh, ActIn gate_act, ActIn up_act, int64_t n) {
    const F32In gate_f32(gate_act, n), up_f32(up_act, n);
    const float *gate = gate_f32.get(), *up = up_f32.get();
    const int64_t nblocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n > 4 * kBlock)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        const int64_t end = std::min(n, (blk + 1) * kBlock);
        for (int64_t i = blk * kBlock; i < end; i += W) {
            const Mask m = mask_first(int(std::min<int64_t>(W, end - i)));
            const Vec g = load(gate + i, m), u = load(up + i, m), d = load(dh + i, m);
            const Vec s = sigmoid(g);
            const Vec dsilu = mul(s, fmadd(g, sub(set1(1.0f), s), set1(1.0f)));
            store(dgate + i, mul(mul(d, u), dsilu), m);
            store(dup + i, mul(d, mul(g, s)), m);
        }
    }
}

}  // namespace tuner::cpu
