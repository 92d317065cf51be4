// Fused AdamW step (torch.optim.AdamW; the CPU version is train/adamw.cpp): one pass over p, g,
// m, v per parameter tensor, memory-bound (16 bytes read, 12 written per parameter).
//
// Every operation is an explicitly rounded intrinsic (__fmul_rn, __fadd_rn, __fdiv_rn,
// __fsqrt_rn) in the order train/adamw.cpp writes it, so nvcc cannot contract a multiply and an
// add into one FMA: the result is what torch's separate tensor ops produce, up to how torch's
// own CPU kernels fuse (its add with alpha may use an FMA: a last-bit difference at most).
#include <cmath>

#include "backend/cuda/cuda_common.h"

namespace tuner::cuda {

namespace {

__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, int64_t n, AdamWScalars s) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        const float gi = g[i];
        const float pi = s.decays ? __fmul_rn(p[i], s.decay) : p[i];                         // p.mul_(1 - lr wd)
        const float mi = __fadd_rn(__fmul_rn(m[i], s.beta1), __fmul_rn(gi, s.one_minus_beta1));  // exp_avg
        const float vi = __fadd_rn(__fmul_rn(v[i], s.beta2), __fmul_rn(__fmul_rn(gi, gi), s.one_minus_beta2));
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), s.bias_correction2_sqrt), s.eps);
        p[i] = __fadd_rn(pi, __fdiv_rn(__fmul_rn(s.neg_step_size, mi), denom));  // addcdiv_
        m[i] = mi;
        v[i] = vi;
    }
}

}  // namespace

// The scalars exactly as AdamW::step forms them: python floats (double), rounded to f32 where
// they meet an f32 tensor.
AdamWScalars adamw_scalars(double lr, double beta1, double beta2, double eps, double weight_decay, int64_t t) {
    AdamWScalars s;
    s.decay = float(1.0 - lr * weight_decay);
    s.beta1 = float(beta1), s.one_minus_beta1 = float(1.0 - beta1);
    s.beta2 = float(beta2), s.one_minus_beta2 = float(1.0 - beta2);
    const double bias_correction1 = 1.0 - std::pow(beta1, double(t));
    const double bias_correction2 = 1.0 - std::pow(beta2, double(t));
    s.neg_step_size = float(-(lr / bias_correction1));
    s.bias_correction2_sqrt = float(std::sqrt(bias_correction2));
    s.eps = float(eps);
    s.decays = weight_decay != 0.0;
    return s;
}

void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, const AdamWScalars& s) {
    if (n <= 0) return;
    launch(adamw_kernel, grid_for(n, 256), 256, 0, context("adamw_step").stream, p, g, m, v, n, s);
    CUDA_LAUNCH_CHECK("adamw_kernel");
}

}  // namespace tuner::cuda
