// A named parameter of a model (base weights and LoRA adapters alike). Defined apart from any
// model family so that nn/ layers (linear, lora) and the trainer share one type.
//
//   Param p;                      // value: any dtype when frozen, F32 when trained
//   if (p.trainable()) ...        // grad: F32 tensor of the same shape, or no data when frozen
#pragma once

#include <string>

#include "backend/kernels.h"
#include "core/tensor.h"

namespace tuner {

// A named parameter: its value (any dtype for a frozen weight, F32 when trained) and, when
// trained, an F32 gradient of the same shape (grad.data == nullptr when frozen).
struct Param {
    std::string name;  // Hugging Face tensor name, e.g. "model.layers.0.self_attn.q_proj.weight"
    Tensor value;
    Tensor grad;
    bool trainable() const { return grad.data != nullptr; }
    // value as a 2-D (rows, cols) matrix; a 1-D value is (n, 1).
    WeightView weight_view() const {
        WeightView w;
        w.data = value.data;
        w.dtype = value.dtype;
        w.rows = value.shape[0];
        w.cols = value.ndim > 1 ? value.shape[1] : 1;
        return w;
    }
};

}  // namespace tuner
