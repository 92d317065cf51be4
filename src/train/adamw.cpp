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
    // Every m, then every v, in parameter order: laid out as the parameters and gradients are in
    // their arenas, so that on the GPU neighbours merge into runs (below).
    for (const Param* p : params_) m_.push_back(arena_.alloc_f32(size_t(p->value.numel())));
    for (const Param* p : params_) v_.push_back(arena_.alloc_f32(size_t(p->value.numel())));
    if (device_ != Device::CUDA) return;
    // A gap between two merged tensors is arena alignment padding: zero in all four buffers
    // (arenas are zeroed when made, zero_grad clears whole arenas) and it stays zero under the
    // update (m = v = 0, p = 0 + 0 / eps) as long as eps > 0; with eps = 0 nothing merges.
    auto follows = [](const void* next, const void* prev, size_t prev_bytes) {
        return static_cast<const char*>(next) == static_cast<const char*>(prev) + align_up(prev_bytes);
    };
    for (size_t k = 0; k < params_.size(); k++) {
        const Param& p = *params_[k];
        float* value = p.value.f32_on_device();
        const float* grad = p.grad.f32_on_device();
        const int64_t n = p.value.numel();
        if (!runs_.empty() && config_.eps > 0) {
            Run& r = runs_.back();
            const size_t run_bytes = size_t(r.n) * sizeof(float);  // through the previous tensor's end
            if (follows(value, r.p, run_bytes) && follows(grad, r.g, run_bytes) && follows(m_[k], r.m, run_bytes) &&
                follows(v_[k], r.v, run_bytes)) {
                r.n = (value - r.p) + n;
                continue;
            }
        }
        runs_.push_back({value, grad, m_[k], v_[k], n});
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
        for (const Run& r : runs_) cuda::adamw_step(r.p, r.g, r.m, r.v, r.n, s);
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

// The GPU gradients of params as flat ranges: a gradient that starts where the previous one's
// buffer (aligned) ends extends its range over the zero alignment gap (zero_grad clears whole
// arenas), so a LoRA step's adapter gradients are one range: one kernel instead of hundreds.
static std::vector<std::pair<float*, int64_t>> gpu_grad_ranges(const std::vector<Param*>& params) {
    std::vector<std::pair<float*, int64_t>> out;
    for (Param* p : params) {
        if (p->grad.device != Device::CUDA) continue;
        float* g = p->grad.f32_on_device();
        const int64_t n = p->grad.numel();
        if (!out.empty()) {
            auto& [start, len] = out.back();
            if (reinterpret_cast<char*>(g) == reinterpret_cast<char*>(start) + align_up(size_t(len) * sizeof(float))) {
                len = (g - start) + n;
                continue;
            }
        }
        out.emplace_back(g, n);
    }
    return out;
}

double grad_global_norm(const std::vector<Param*>& params) {
    double total = 0;
    std::vector<std::pair<const float*, int64_t>> on_gpu;  // summed in one call (one synchronisation)
    for (const auto& [g, n] : gpu_grad_ranges(params)) on_gpu.emplace_back(g, n);
    for (const Param* p : params) {
        if (p->grad.device == Device::CUDA) continue;
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
        for (const auto& [g, n] : gpu_grad_ranges(params)) cuda::scale_inplace(g, n, c);
        for (Param* p : params) {
            if (p->grad.device == Device::CUDA) continue;
            float* g = p->grad.f32();
            const int64_t n = p->grad.numel();
#pragma omp parallel for simd schedule(static) if (n > 65536)
            for (int64_t i = 0; i < n; i++) g[i] *= c;
        }
    }
    return norm;
}

}  // namespace tuner
