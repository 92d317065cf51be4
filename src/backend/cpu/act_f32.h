// The CPU reference computes in f32. An op given a bf16 activation (kernels.h ActIn / ActOut)
// widens it into a temporary f32 copy on the way in and rounds its f32 result to bf16 on the way
// out: exactly the rounding points the CUDA kernels have (widen on load, round on store), so
// the CPU stays the reference for the bf16-activation path too. The copies allocate, so this
// path is for tests and checks; the CPU model itself keeps f32 activations (no copy, no
// allocation: an f32 buffer is used in place).
//
//   F32In g(gate, n);  F32Out h(h_act, n);      // h.get() is float*, rounded back when h dies
//   swiglu_f32(h.get(), g.get(), ...);
#pragma once

#include <cstdint>
#include <vector>

#include "backend/kernels.h"

namespace tuner::cpu {

// An input activation of n elements as f32.
class F32In {
  public:
    F32In(ActIn a, int64_t n) {
        if (!a.bf16()) {
            p_ = a.f32();
            return;
        }
        tmp_.resize(size_t(n));
        convert_to_f32(tmp_.data(), a.data, DType::BF16, size_t(n));
        p_ = tmp_.data();
    }
    const float* get() const { return p_; }

  private:
    std::vector<float> tmp_;
    const float* p_ = nullptr;
};

// An output activation of n elements written through f32. read_old: the op reads the buffer
// before writing it (in place, or accumulate), so the old bf16 values are widened first.
class F32Out {
  public:
    F32Out(ActOut a, int64_t n, bool read_old = false) : out_(a), n_(n) {
        if (!a.bf16()) {
            p_ = a.f32();
            return;
        }
        tmp_.resize(size_t(n));
        if (read_old) convert_to_f32(tmp_.data(), a.data, DType::BF16, size_t(n));
        p_ = tmp_.data();
    }
    ~F32Out() {
        if (out_.bf16()) convert_from_f32(out_.data, DType::BF16, tmp_.data(), size_t(n_));
    }
    F32Out(const F32Out&) = delete;
    F32Out& operator=(const F32Out&) = delete;
    float* get() const { return p_; }

  private:
    ActOut out_;
    int64_t n_;
    std::vector<float> tmp_;
    float* p_ = nullptr;
};

}  // namespace tuner::cpu
