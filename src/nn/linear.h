// The `linear` layer: the one place every projection of every model goes through, so that
// LoRA adapters (y += scale * B(A(dropout(x)))) and quantised frozen bases (a property of the
// weight's dtype) work for every model family at once.
//
//   y = x W^T (+ b)  [+ scale * dropout(x) A^T B^T  when an adapter is attached]
//
//   Linear q{&layer.q_proj, &layer.q_bias};
//   linear_forward(dev, q_out, h1, q, N);                       // q_out (N, out)
//   linear_backward(dev, dh1, /*accumulate_dx=*/true, dq, h1, q, N);
//
// With an adapter (see nn/lora.h), the caller supplies the per-call buffers in `lora_call` and
// must pass the same Linear (same xa buffer, same dropout key) to forward and backward:
//   forward:  xa = scale * dropout(x) A^T  (N, r, saved)      y += xa B^T
//   backward: dB += dy^T xa                                     (= scale * dy^T dropout(x) A^T)
//             dxa = scale * dy B    (N, r)
//             dA += dxa^T dropout(x)  (dropout(x) regenerated from the key, never stored)
//             dx += mask / (1-p) * (dxa A)   added to the base path's dx
// The base weight gets a gradient only when it is trained (full fine-tuning); LoRA leaves it
// frozen, so its backward is the input gradient alone.
#pragma once

#include <cstdint>

#include "backend/kernels.h"
#include "core/tensor.h"

namespace tuner {

struct Param;
struct LoraAdapter;

// Working memory and dropout state of one adapted linear for one call (owned by the model's
// memory plan). Ignored when Linear::lora is null.
struct LoraCall {
    float* xa = nullptr;     // (N, r) saved for backward: scale * dropout(x) A^T
    float* dxa = nullptr;    // (N, r) backward scratch (activation gradient)
    float* xdrop = nullptr;  // (N, in) f32 scratch for dropout(x) (stored in x's dtype) and the
                             // masked input gradient; needed only when `dropout` is set
    uint64_t dropout_key = 0;
    bool dropout = false;  // apply the adapter's dropout (training with p > 0)
};

struct Linear {
    const Param* weight = nullptr;  // (out, in), any dtype when frozen, F32 when trained
    const Param* bias = nullptr;    // (out) F32, or null
    const LoraAdapter* lora = nullptr;  // active adapter, or null (none, or adapters disabled)
    LoraCall lora_call;
    // (N, out) scratch, or null: backward rounds dy to bf16 here once and gives that copy to all
    // its GEMMs (input gradient, weight gradient, the adapter's dB and dxa) instead of each bf16
    // GEMM converting the f32 dy again. The model sets it when it stores bf16 activations (the
    // bf16 matmuls round dy to bf16 anyway, so on CUDA their results are unchanged).
    uint16_t* dy_bf16 = nullptr;
};

// y (N, out) = x (N, in) W^T (+ b) (+ the adapter's term). x and y may be bf16 storage
// (kernels.h ActIn / ActOut; the model's bf16 activations): the base product is rounded to
// bf16 once, then the adapter's term is added and the sum rounded again, as a bf16 PEFT
// model computes base_layer(x) + lora_B(lora_A(dropout(x))) * scale.
void linear_forward(Device device, ActOut y, ActIn x, const Linear& layer, int64_t N);
// dx (N, in) = or += dy W (+ the adapter's input gradient) (dx may be null when the input needs
// no gradient); dW += dy^T x and db += sum dy when those parameters are trained; dA, dB += when
// an adapter is attached.
void linear_backward(Device device, float* dx, bool accumulate_dx, const float* dy, ActIn x, const Linear& layer,
                     int64_t N);

}  // namespace tuner
