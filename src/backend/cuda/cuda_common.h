// Shared by the CUDA kernels: error checks that name the call site (llm.c's cudaCheck).
#pragma once

#include <cuda_runtime.h>

#include "core/error.h"

namespace tuner::cuda {

inline void cuda_check(cudaError_t err, const char* call, const char* file, int line) {
    if (err != cudaSuccess)
        fail("[cuda] {}:{}: {} failed: {} ---> HINT: check the device is present and has free memory", file, line,
             call, cudaGetErrorString(err));
}

// The CUDA backend is being built kernel by kernel (issue: CUDA backend); an op that is not
// there yet says so instead of computing something wrong.
[[noreturn]] inline void not_implemented(const char* op) {
    fail("[cuda] {} has no CUDA implementation yet (use the CPU backend)", op);
}

}  // namespace tuner::cuda

#define CUDA_CHECK(call) ::tuner::cuda::cuda_check((call), #call, __FILE__, __LINE__)
