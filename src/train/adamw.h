// AdamW exactly as torch.optim.AdamW (PyTorch 1.13, single-tensor path, amsgrad off):
//   p  = p * (1 - lr * weight_decay)                      (decoupled weight decay)
//   m  = beta1 * m + (1 - beta1) * g
//   v  = beta2 * v + (1 - beta2) * g * g
//   p  = p + (-lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// with the same f32 operation order and the same scalars rounded to f32 as torch uses, so that
// a step matches torch's to the last bit or nearly. Moments are f32 (one m and one v per
// trained parameter), held in the optimizer's own arena and saved in checkpoints. Parameters on
// the GPU get their moments in device memory and the fused CUDA step (backend/cuda/adamw.cu),
// which rounds every operation as this file does.
//
//   AdamW opt(model.trainable_params(), {.lr = 2e-4});
//   opt.step(lr_for_this_step);     // uses each Param's grad; does not zero it
#pragma once

#include <cstdint>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "core/arena.h"

namespace tuner {

struct Param;

struct AdamWConfig {
    double lr = 2e-4;
    double beta1 = 0.9, beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0.0;
};

class AdamW {
  public:
    AdamW(std::vector<Param*> params, const AdamWConfig& config);

    // One update of every parameter with learning rate lr (from the schedule).
    void step(double lr);

    int64_t steps_taken() const { return t_; }
    void set_steps_taken(int64_t t) { t_ = t; }  // when resuming
    const std::vector<Param*>& params() const { return params_; }
    float* exp_avg(size_t i) { return m_[i]; }  // host pointers when the parameters are on the CPU
    float* exp_avg_sq(size_t i) { return v_[i]; }
    // The moments as tensors of the parameter's shape, on the parameters' device.
    Tensor exp_avg_tensor(size_t i) const;
    Tensor exp_avg_sq_tensor(size_t i) const;
    size_t state_bytes() const { return arena_.capacity(); }
    const AdamWConfig& config() const { return config_; }
    // GPU: kernel launches per step (runs of parameters updated as one flat range, see step()).
    size_t device_launches() const { return runs_.size(); }

  private:
    std::vector<Param*> params_;
    AdamWConfig config_;
    Arena arena_;
    cuda::DeviceArena device_memory_;  // backs arena_ when the parameters are on the GPU
    Device device_ = Device::CPU;
    std::vector<float*> m_, v_;
    // GPU: parameters whose value, grad, m and v each start where the previous one's buffer
    // (aligned) ends, merged into one flat range per run: one launch for a LoRA step's hundreds
    // of adapter tensors instead of one per tensor.
    struct Run {
        float* p;
        const float* g;
        float *m, *v;
        int64_t n;  // elements from p to the end of the run's last tensor, alignment gaps included
    };
    std::vector<Run> runs_;
    int64_t t_ = 0;
};

// Global L2 norm over every parameter's gradient (accumulated in double), as
// torch.nn.utils.clip_grad_norm_ measures it. Gradients may be on either device.
double grad_global_norm(const std::vector<Param*>& params);
// clip_grad_norm_: when norm > max_norm, scales every gradient by max_norm / (norm + 1e-6).
// Returns the norm before clipping. max_norm <= 0 only measures.
double clip_grad_norm(const std::vector<Param*>& params, double max_norm);

}  // namespace tuner
