// Tensor descriptor: a view of memory that something else owns (an arena, a memory-mapped file).
//
// Shapes are row-major with the last dimension contiguous unless strides say otherwise; strides
// are in elements. Kernels take raw pointers plus dimension letters (llm.c style); the
// descriptor is what layers, models and file readers pass around.
//   Tensor t = Tensor::view(ptr, DType::F32, {B, T, C});
//   float* p = t.f32();   // asserts dtype F32 and a CPU device
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace tuner {

enum class Device : uint8_t { CPU, CUDA };

inline const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

constexpr int kMaxDims = 4;

struct Tensor {
    void* data = nullptr;
    DType dtype = DType::F32;
    Device device = Device::CPU;
    int ndim = 0;
    int64_t shape[kMaxDims] = {0, 0, 0, 0};
    int64_t stride[kMaxDims] = {0, 0, 0, 0};

    // A contiguous row-major view.
    static Tensor view(void* data, DType dtype, std::initializer_list<int64_t> dims, Device device = Device::CPU) {
        return view(data, dtype, std::vector<int64_t>(dims), device);
    }
    static Tensor view(void* data, DType dtype, const std::vector<int64_t>& dims, Device device = Device::CPU) {
        TUNER_ASSERT(dims.size() <= size_t(kMaxDims));
        Tensor t;
        t.data = data;
        t.dtype = dtype;
        t.device = device;
        t.ndim = int(dims.size());
        int64_t s = 1;
        for (int i = t.ndim - 1; i >= 0; i--) {
            t.shape[i] = dims[size_t(i)];
            t.stride[i] = s;
            s *= dims[size_t(i)];
        }
        return t;
    }

    int64_t numel() const {
        int64_t n = 1;
        for (int i = 0; i < ndim; i++) n *= shape[i];
        return n;
    }
    size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
    int64_t dim(int i) const { return shape[i < 0 ? ndim + i : i]; }
    bool is_contiguous() const {
        int64_t s = 1;
        for (int i = ndim - 1; i >= 0; i--) {
            if (shape[i] != 1 && stride[i] != s) return false;
            s *= shape[i];
        }
        return true;
    }
    std::vector<int64_t> dims() const { return std::vector<int64_t>(shape, shape + ndim); }
    std::string shape_str() const;  // "(576, 1536)"

    float* f32() const {
        TUNER_ASSERT(dtype == DType::F32 && device == Device::CPU);
        return static_cast<float*>(data);
    }
    // f32 data on whatever device holds it (for kernel calls that dispatch on the device).
    float* f32_on_device() const {
        TUNER_ASSERT(dtype == DType::F32);
        return static_cast<float*>(data);
    }
};

}  // namespace tuner
