// Backends: one kernel table (kernel_table.inc), implemented by cpu/ (the reference, complete)
// and cuda/ (same file names). A build without CUDA links no_cuda/ stubs that throw
// "OP: CUDA was not built". Layers in nn/ pick the backend from the tensors' device.
//
//   tuner::cpu::rmsnorm_forward(out, rstd, x, w, N, C, 1e-5f);
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace tuner {

// A (possibly frozen, possibly low-precision) weight matrix W of shape (rows, cols) = (out, in),
// row-major. Trained weights are always F32. Later: NF4 and GGUF block types with their scales.
struct WeightView {
    const void* data = nullptr;
    DType dtype = DType::F32;
    int64_t rows = 0;  // out features (or vocabulary rows for an embedding table)
    int64_t cols = 0;  // in features (or hidden size)
};

struct AttnShape {
    int B = 1, T = 0, NH = 0, NKV = 0, HD = 0;
};

namespace cpu {
#include "backend/kernel_table.inc"
}  // namespace cpu

namespace cuda {
#include "backend/kernel_table.inc"
bool available();  // built with CUDA and a device is present
}  // namespace cuda

}  // namespace tuner
