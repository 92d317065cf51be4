// Backends: one kernel table (kernel_table.inc), implemented by cpu/ (the reference, complete)
// and cuda/ (same file names). A build without CUDA links no_cuda/ stubs that throw
// "OP: CUDA was not built". Layers in nn/ pick the backend from the tensors' device.
//
//   tuner::cpu::rmsnorm_forward(out, rstd, x, w, N, C, 1e-5f);
#pragma once

#include <cstdint>
#include <string>

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
// True when tuner was built with CUDA and a device that can run this build's kernels is
// present. Otherwise false, and *why (when not null) says why in words a user can act on:
// "tuner was built without CUDA ...", "cudaGetDeviceCount: no CUDA-capable device is
// detected (cudaErrorNoDevice)", "device 0 (...) cannot run this build's kernels (compiled for
// CUDA architectures 900) ...". Cached after the first call. The rest of the CUDA runtime (arenas, workspace, AdamW) is in
// backend/cuda/cuda_backend.h.
bool available(std::string* why = nullptr);
}  // namespace cuda

}  // namespace tuner
