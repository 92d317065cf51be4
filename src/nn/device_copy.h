// Host access to tensors that may live on the GPU (Tensor::device == CUDA): what savers,
// loaders and initialisers use so that one code path serves a model on either device.
//
//   std::vector<uint8_t> scratch;
//   w.write(p->name, tensor_to_host(p->value, scratch));   // p->value on CPU or CUDA
//   tensor_from_host(p->value, host_values.data());
//
// Sizes are Tensor::nbytes() (numel x element size): for F32/BF16/F16 tensors, which is what
// trained parameters, gradients and optimizer moments are. Quantised weights move as whole
// arenas (LlamaModel), never through these.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace tuner {

// t's bytes readable on the host: t.data itself on the CPU, else a copy made into `scratch`.
const void* tensor_to_host(const Tensor& t, std::vector<uint8_t>& scratch);
// Overwrites t with nbytes() bytes from host memory src.
void tensor_from_host(const Tensor& t, const void* src);
// Sets every byte of t to zero.
void tensor_zero(const Tensor& t);

}  // namespace tuner
