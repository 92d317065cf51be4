// Internal to the CUDA backend (included by the .cu files only): call-site error checks (llm.c's
// cudaCheck), the context (cuBLASLt handle, stream), the per-op workspace cursor, kernel launches
// (launch, DYNAMIC_SHARED) and small device helpers (warp reductions, grid sizes).
//
// The same .cu files also compile as plain C++ against the CPU emulator of the CUDA execution
// model (TUNER_CUDA_EMU, the tuner_lib_emu library; see emu/include/cuda_runtime.h and docs/cuda.md): its
// include folder provides stand-ins for <cuda_runtime.h>, <cuda_bf16.h>, <cuda_fp16.h> and
// <cublasLt.h>, so the includes below are the same in both builds.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>
#include <utility>

#include "backend/cuda/cuda_backend.h"
#include "core/error.h"

namespace tuner::cuda {

// "[cuda] src/backend/cuda/matmul.cu:88: cudaMemsetAsync(...): out of memory"
[[noreturn]] void cuda_fail(const char* call, const char* file, int line, const char* what);
inline void cuda_check(cudaError_t err, const char* call, const char* file, int line) {
    if (err != cudaSuccess) cuda_fail(call, file, line, cudaGetErrorString(err));
}
inline void cublas_check(cublasStatus_t st, const char* call, const char* file, int line) {
    if (st != CUBLAS_STATUS_SUCCESS) cuda_fail(call, file, line, cublasLtGetStatusString(st));
}

}  // namespace tuner::cuda

#define CUDA_CHECK(call) ::tuner::cuda::cuda_check((call), #call, __FILE__, __LINE__)
#define CUBLAS_CHECK(call) ::tuner::cuda::cublas_check((call), #call, __FILE__, __LINE__)
// After every kernel launch: a bad launch configuration is reported where it happened (errors
// inside the kernel surface at the next synchronising call).
#define CUDA_LAUNCH_CHECK(kernel) ::tuner::cuda::cuda_check(cudaGetLastError(), kernel, __FILE__, __LINE__)

namespace tuner::cuda {

// Created once by init() (first use), never destroyed before exit.
struct Context {
    int device = 0;
    int sm_count = 0;
    size_t smem_optin = 0;  // max dynamic shared memory per block after opting in
    cublasLtHandle_t lt = nullptr;
    void* lt_workspace = nullptr;  // cuBLASLt's own workspace (32 MiB, as NVIDIA recommends for Hopper)
    size_t lt_workspace_bytes = 0;
    cudaStream_t stream = 0;  // legacy default stream (see cuda_backend.h)
};
// init() on first call. An op passes its name, so that without a device the error names it:
// "[cuda] rmsnorm_forward: no CUDA device: cudaGetDeviceCount: ...".
Context& context(const char* op = nullptr);

// Opts a kernel into more than 48 KiB of dynamic shared memory (call once per instantiation);
// throws, naming the kernel, when the device allows less than it needs.
template <typename Kernel>
void opt_in_smem(Kernel kernel, size_t smem, const char* name) {
    const Context& ctx = context();
    if (smem > ctx.smem_optin)
        fail("[cuda] {}: needs {} bytes of shared memory per block, the device allows {}", name, smem, ctx.smem_optin);
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
}

// A bump cursor over the reserved workspace for one op call. Each op first checks its planned
// size (need) against the workspace, which gives the user a clear message; take() past the
// plan is then a bug in a *_workspace_bytes planner and aborts.
class Workspace {
  public:
    Workspace(const char* op, size_t need);
    template <typename T>
    T* take(size_t n) {
        return static_cast<T*>(take_bytes(n * sizeof(T)));
    }
    void* take_bytes(size_t bytes);
    size_t left() const { return cap_ - used_; }
    // Scratch taken after mark() is reused once rewound (a chunk loop; stream order keeps the
    // previous chunk's kernels ahead of the next chunk's writes).
    size_t mark() const { return used_; }
    void rewind(size_t mark) { used_ = mark; }

  private:
    uint8_t* base_ = nullptr;
    size_t cap_ = 0, used_ = 0;
};
// Bytes a take of `bytes` consumes (aligned like DeviceArena views), for the planners.
inline size_t ws_size(size_t bytes) { return (bytes + kDeviceAlign - 1) / kDeviceAlign * kDeviceAlign; }

// ---- launch helpers -------------------------------------------------------------------------

// launch(kernel, grid, block, smem_bytes, stream, args...) is kernel<<<grid, block, smem_bytes,
// stream>>>(args...) with nvcc; under the emulator it runs the grid on the CPU (blocks one after
// another, the threads of a block as fibers). Follow it with CUDA_LAUNCH_CHECK("kernel") in both.
//   launch(add_kernel, grid_for(n, 256), 256, 0, stream, out, a, b, n);
//   CUDA_LAUNCH_CHECK("add_kernel");
#if defined(TUNER_CUDA_EMU)
// A macro, so that the emulator knows the kernel's name for its reports (deadlocks, faults).
#define launch(...) launch_named_(#__VA_ARGS__, __VA_ARGS__)
template <typename... P, typename... A>
void launch_named_(const char* text, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem_bytes,
                   cudaStream_t stream, A&&... args) {
    ::tuner::emu::run_kernel(text, kernel, grid, block, smem_bytes, stream, std::forward<A>(args)...);
}
#else
template <typename... P, typename... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream, A&&... args) {
    kernel<<<grid, block, smem_bytes, stream>>>(std::forward<A>(args)...);
}
#endif

// Dynamic shared memory of a kernel (the launch's smem_bytes), as a T* named `name`:
//   DYNAMIC_SHARED(float4, smem4);   // extern __shared__ float4 smem4[] with nvcc
#if defined(TUNER_CUDA_EMU)
#define DYNAMIC_SHARED(T, name) T* name = static_cast<T*>(::tuner::emu::dynamic_shared())
#else
#define DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif

// ---- activations: f32 or bf16 storage (kernels.h ActIn / ActOut) ---------------------------------
// Kernels that read or write an activation are templated on its element type E (float or
// __nv_bfloat16) and go through load_f32 / store_f32: a bf16 element is widened exactly on load
// and an f32 result rounded to nearest even on store (the CPU reference's act_f32.h rounding
// points); the float instantiation is the plain f32 code, so f32 results are unchanged bit for bit.
// The host side picks the instantiation with with_in / with_out (each activation argument
// independently).
//   with_out(h, [&](auto* hp) { with_in(x, [&](const auto* xp) {
//       launch(k<elem_t<decltype(hp)>, elem_t<decltype(xp)>>, grid, 256, 0, stream, hp, xp, n); }); });
template <typename P>
using elem_t = std::remove_const_t<std::remove_pointer_t<P>>;

// Throws "[cuda] OP: activations are f32 or bf16, got f16" for any other dtype.
void check_act_dtype(DType t, const char* op);

template <typename F>
void with_in(ActIn a, const char* op, F&& f) {
    check_act_dtype(a.dtype, op);
    if (a.bf16()) f(static_cast<const __nv_bfloat16*>(a.data));
    else f(static_cast<const float*>(a.data));
}
template <typename F>
void with_out(ActOut a, const char* op, F&& f) {
    check_act_dtype(a.dtype, op);
    if (a.bf16()) f(static_cast<__nv_bfloat16*>(a.data));
    else f(static_cast<float*>(a.data));
}

inline unsigned grid_for(int64_t n, int threads) {
    const int64_t blocks = (n + threads - 1) / threads;
    // Grid-stride loops cover the rest: 64k blocks keep every SM busy.
    return unsigned(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

#if defined(__CUDACC__) || defined(TUNER_CUDA_EMU)
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
// Sum over a block of up to 1024 threads (blockDim.x a multiple of 32); every thread gets the
// result. `shared` holds 32 floats. Starts and ends with a barrier, so it can be called in a loop.
__device__ __forceinline__ float block_sum(float v, float* shared) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    float t = lane < nwarps ? shared[lane] : 0.0f;
    return warp_sum(t);
}
__device__ __forceinline__ float block_max(float v, float* shared) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    float t = lane < nwarps ? shared[lane] : -INFINITY;
    return warp_max(t);
}

__device__ __forceinline__ float load_f32(const float* p) { return *p; }
__device__ __forceinline__ float load_f32(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void store_f32(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_f32(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
#endif

}  // namespace tuner::cuda
