#include "train/adamw.h"

#include <cmath>

#include "backend/cuda/device_ops.h"
#include "models/llama.h"

namespace tuner {

AdamW::AdamW(std::vector<Param*> params, const AdamWConfig& config) : params_(std::move(params)), config_(config) {
    size_t bytes = 0;
    if (!params_.empty()) device_ = params_[0]->value.device;
    for (const Param* p : params_) {
        TUNER_ASSERT_MSG(p->value.dtype == DType::F32 && p->trainable(), "AdamW updates f32 trained parameters");
        TUNER_ASSERT_MSG(p->value.device == device_ && p->grad.device == device_,
                         "AdamW: every parameter and gradient on one device");
        bytes += 2 * align_up(p->value.nbytes());
    }
    if (device_ == Device::CUDA && bytes > 0) {
        device_memory_ = cuda::DeviceArena("optimizer state", bytes);
        void* base = device_memory_.alloc(bytes, "m, v");
        cuda::memset_device(base, 0, bytes);
        arena_ = Arena::over("optimizer state", base, bytes, Device::CUDA);
    } else {
        arena_ = Arena("optimizer state", bytes);
    }
    for (const Param* p : params_) {
        m_.push_back(arena_.alloc_f32(size_t(p->value.numel())));
        v_.push_back(arena_.alloc_f32(size_t(p->value.numel())));
    }
}

Tensor AdamW::exp_avg_tensor(size_t i) const {
    return Tensor::view(m_[i], DType::F32, params_[i]->value.dims(), device_);
}
Tensor AdamW::exp_avg_sq_tensor(size_t i) const {
    return Tensor::view(v_[i], DType::F32, params_[i]->value.dims(), device_);
}

void AdamW::step(double lr) {
    t_++;
    const AdamWConfig& c = config_;
    if (device_ == Device::CUDA) {
        const cuda::AdamWScalars s = cuda::adamw_scalars(lr, c.beta1, c.beta2, c.eps, c.weight_decay, t_);
        for (size_t k = 0; k < params_.size(); k++)
            cuda::adamw_step(params_[k]->value.f32_on_device(), params_[k]->grad.f32_on_device(), m_[k], v_[k],
                             params_[k]->value.numel(), s);
        return;
    }
    // Scalars exactly as torch forms them: python floats (double), rounded to f32 where they
    // meet an f32 tensor.
    const float decay = float(1.0 - lr * c.weight_decay);
    const float b1 = float(c.beta1), one_minus_b1 = float(1.0 - c.beta1);
    const float b2 = float(c.beta2), one_minus_b2 = float(1.0 - c.beta2);
    const double bias_correction1 = 1.0 - std::pow(c.beta1, double(t_));
    const double bias_correction2 = 1.0 - std::pow(c.beta2, double(t_));
    const float neg_step_size = float(-(lr / bias_correction1));
    const float bias_correction2_sqrt = float(std::sqrt(bias_correction2));
    const float eps = float(c.eps);
    const bool decays = c.weight_decay != 0.0;
    for (size_t k = 0; k < params_.size(); k++) {
        float* p = params_[k]->value.f32();
        const float* g = params_[k]->grad.f32();
        float* m = m_[k];
        float* v = v_[k];
        const int64_t n = params_[k]->value.numel();
#pragma omp parallel for simd schedule(static) if (n > 65536)
        for (int64_t i = 0; i < n; i++) {
            float pi = decays ? p[i] * decay : p[i];
            float mi = m[i] * b1 + g[i] * one_minus_b1;          // exp_avg.mul_(b1).add_(g, alpha=1-b1)
            float vi = v[i] * b2 + (g[i] * g[i]) * one_minus_b2;  // exp_avg_sq.mul_(b2).addcmul_(g, g, 1-b2)
            float denom = std::sqrt(vi) / bias_correction2_sqrt + eps;
            p[i] = pi + (neg_step_size * mi) / denom;            // addcdiv_: self + value * t1 / t2
            m[i] = mi;
            v[i] = vi;
        }
    }
}

double grad_global_norm(const std::vector<Param*>& params) {
    double total = 0;
    std::vector<std::pair<const float*, int64_t>> on_gpu;  // summed in one call (one synchronisation)
    for (const Param* p : params) {
        if (p->grad.device == Device::CUDA) {
            on_gpu.emplace_back(p->grad.f32_on_device(), p->grad.numel());
            continue;
        }
        const float* g = p->grad.f32();
        const int64_t n = p->grad.numel();
        double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static) if (n > 65536)
        for (int64_t i = 0; i < n; i++) s += double(g[i]) * double(g[i]);
        total += s;
    }
    if (!on_gpu.empty()) total += cuda::sum_squares(on_gpu);
    return std::sqrt(total);
}

double clip_grad_norm(const std::vector<Param*>& params, double max_norm) {
    double norm = grad_global_norm(params);
    if (max_norm <= 0) return norm;
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) {
        const float c = float(coef);
        for (Param* p : params) {
            if (p->grad.device == Device::CUDA) {
                cuda::scale_inplace(p->grad.f32_on_device(), p->grad.numel(), c);
                continue;
            }
            float* g = p->grad.f32();
            const int64_t n = p->grad.numel();
#pragma omp parallel for simd schedule(static) if (n > 65536)
            for (int64_t i = 0; i < n; i++) g[i] *= c;
        }
    }
    return norm;
}

}  // namespace tuner
