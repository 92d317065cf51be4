// Backends: one kernel table (kernel_table.inc), implemented by cpu/ (the reference, complete)
// and cuda/ (same file names). A build without CUDA links no_cuda/ stubs that throw
// "OP: CUDA was not built". Layers in nn/ pick the backend from the tensors' device.
//
//   tuner::cpu::rmsnorm_forward(out, rstd, x, w, N, C, 1e-5f);
#pragma once

#include <cstdint>
#include <string>

#include "core/dtype.h"
#include "core/error.h"

namespace tuner {

// A (possibly frozen, possibly low-precision) weight matrix W of shape (rows, cols) = (out, in),
// row-major. Trained weights are always F32. Later: NF4 and GGUF block types with their scales.
struct WeightView {
    const void* data = nullptr;
    DType dtype = DType::F32;
    int64_t rows = 0;  // out features (or vocabulary rows for an embedding table)
    int64_t cols = 0;  // in features (or hidden size)
};

// An activation buffer an op reads (ActIn) or writes (ActOut): f32, or bf16 storage. With bf16
// matmuls on CUDA the model stores the activations it saves for backward (norm outputs, q/k/v,
// attention output, gate/up/SwiGLU outputs) in bf16: half the memory, and the GEMMs read them
// as they are instead of converting a copy. The math is f32 either way: a bf16 input is widened
// on load and a bf16 output rounded to nearest even on store. Residual stream, gradients, rstd,
// lse and losses are always f32. A float* converts implicitly (the f32 case), so f32 callers
// write `rmsnorm_forward(out, ...)` as before; bf16 buffers are named explicitly:
//   ActOut h1{bf16_buffer, DType::BF16};
struct ActOut {
    void* data = nullptr;
    DType dtype = DType::F32;
    ActOut() = default;
    ActOut(float* p) : data(p) {}  // NOLINT: implicit on purpose (the f32 case)
    ActOut(void* p, DType t) : data(p), dtype(t) {}
    bool bf16() const { return dtype == DType::BF16; }
    float* f32() const {  // data as float*; the buffer must be f32
        TUNER_ASSERT(dtype == DType::F32);
        return static_cast<float*>(data);
    }
    ActOut offset(int64_t elems) const { return {static_cast<char*>(data) + elems * int64_t(dtype_size(dtype)), dtype}; }
};
struct ActIn {
    const void* data = nullptr;
    DType dtype = DType::F32;
    ActIn() = default;
    ActIn(const float* p) : data(p) {}  // NOLINT: implicit on purpose (the f32 case)
    ActIn(const void* p, DType t) : data(p), dtype(t) {}
    ActIn(const ActOut& o) : data(o.data), dtype(o.dtype) {}  // NOLINT: a written buffer read back
    bool bf16() const { return dtype == DType::BF16; }
    const float* f32() const {  // data as const float*; the buffer must be f32
        TUNER_ASSERT(dtype == DType::F32);
        return static_cast<const float*>(data);
    }
    ActIn offset(int64_t elems) const {
        return {static_cast<const char*>(data) + elems * int64_t(dtype_size(dtype)), dtype};
    }
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
