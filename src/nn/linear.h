// The `linear` layer: the one place every projection of every model goes through, so that
// LoRA adapters (y += scale * B(A(dropout(x)))) and quantised frozen bases (a property of the
// weight's dtype) work for every model family at once. For now: y = x W^T + b.
//
//   Linear q{&layer.q_proj, &layer.q_bias};
//   linear_forward(dev, q_out, h1, q, N);                       // q_out (N, out)
//   linear_backward(dev, dh1, /*accumulate_dx=*/true, dq, h1, q, N);
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace tuner {

struct Param;

struct Linear {
    const Param* weight = nullptr;  // (out, in), any dtype when frozen, F32 when trained
    const Param* bias = nullptr;    // (out) F32, or null
};

// y (N, out) = x (N, in) W^T (+ b)
void linear_forward(Device device, float* y, const float* x, const Linear& layer, int64_t N);
// dx (N, in) = or += dy W (dx may be null when the input needs no gradient);
// dW += dy^T x and db += sum dy when those parameters are trained.
void linear_backward(Device device, float* dx, bool accumulate_dx, const float* dy, const float* x,
                     const Linear& layer, int64_t N);

}  // namespace tuner
