// CPU emulator of the CUDA execution model: the stand-in for <cuda_runtime.h> when the backend's
// .cu files are compiled as plain C++ with TUNER_CUDA_EMU (the tuner_lib_emu library; this
// folder is on its include path, before any CUDA toolkit). It provides what the kernels use:
// dim3 / uint3 / float4, threadIdx & co., the __global__ / __device__ / __shared__ qualifiers,
// barriers and warp exchanges, atomics, the rounding intrinsics, and a synchronous runtime API on
// host memory. Not a CUDA implementation: kernel logic only (see docs/cuda.md, "The emulator").
//
// How a launch runs (emu.cpp): the blocks of the grid one after another on the calling OS
// thread; the threads of a block as fibers on that thread (a few registers saved per switch,
// stacks reused across launches). A thread runs until it reaches a barrier (__syncthreads*,
// __syncwarp, a __shfl*_sync / vote) or exits; a barrier releases when every thread it waits for
// has arrived: all threads of the block for __syncthreads, the mask's lanes of the warp for warp
// operations (which exchange their values at that moment). A barrier that can never release
// (threads exited, or wait at another barrier) aborts with the kernel's name, the block and every
// waiting thread: a deadlock on the GPU. Since threads run one at a time until they block, a
// kernel that reads another lane's shared-memory write without a barrier between them sees the
// old value: warp-synchronous code behaves as under Volta's independent thread scheduling, at
// its most adversarial.
//
// __shared__ variables are function-local statics (blocks run one after another, so one copy
// serves every block in turn); dynamic shared memory (DYNAMIC_SHARED in cuda_common.h) is a
// buffer that ends at an inaccessible page, filled with 0xff bytes (NaN as floats) before each
// block: reading what was never written shows up as NaN, running past the launch's smem_bytes
// faults and is reported with the kernel, block and thread.
#pragma once

#include <math.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#ifndef TUNER_CUDA_EMU
#define TUNER_CUDA_EMU 1
#endif

// ---- qualifiers --------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __shared__ static
#define __constant__
#define __managed__
#define __restrict__ __restrict
#define __align__(n) alignas(n)
#define __CUDA_EMU__ 1

// ---- vector types -------------------------------------------------------------------------------
#define TUNER_EMU_VEC(T, name, align)                                                 \
    struct alignas(2 * align) name##2 { T x, y; };                                    \
    struct name##3 { T x, y, z; };                                                    \
    struct alignas(4 * align) name##4 { T x, y, z, w; };                              \
    inline name##2 make_##name##2(T x, T y) { return {x, y}; }                        \
    inline name##3 make_##name##3(T x, T y, T z) { return {x, y, z}; }                \
    inline name##4 make_##name##4(T x, T y, T z, T w) { return {x, y, z, w}; }
TUNER_EMU_VEC(float, float, 4)
TUNER_EMU_VEC(int, int, 4)
TUNER_EMU_VEC(unsigned, uint, 4)
TUNER_EMU_VEC(double, double, 8)
TUNER_EMU_VEC(short, short, 2)
TUNER_EMU_VEC(unsigned short, ushort, 2)
TUNER_EMU_VEC(signed char, char, 1)
TUNER_EMU_VEC(unsigned char, uchar, 1)
TUNER_EMU_VEC(long long, longlong, 8)
#undef TUNER_EMU_VEC
struct dim3 {
    unsigned x = 1, y = 1, z = 1;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

// The running thread's coordinates: set by the scheduler before it switches to a thread.
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
constexpr int warpSize = 32;

// ---- runtime types ---------------------------------------------------------------------------------
enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInitializationError = 3,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidSymbol = 13,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorNotReady = 600,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchOutOfResources = 701,
    cudaErrorLaunchFailure = 719,
    cudaErrorNotSupported = 801,
    cudaErrorUnknown = 999,
};
using cudaError = cudaError_t;

enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
};

enum cudaDeviceAttr {
    cudaDevAttrMaxThreadsPerBlock = 1,
    cudaDevAttrMaxBlockDimX = 2,
    cudaDevAttrMaxGridDimX = 5,
    cudaDevAttrMaxSharedMemoryPerBlock = 8,
    cudaDevAttrWarpSize = 10,
    cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrComputeCapabilityMajor = 75,
    cudaDevAttrComputeCapabilityMinor = 76,
    cudaDevAttrMaxSharedMemoryPerMultiprocessor = 81,
    cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};

enum cudaFuncAttribute {
    cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
    cudaFuncAttributePreferredSharedMemoryCarveout = 9,
};

struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    size_t sharedMemPerBlock;
    size_t sharedMemPerBlockOptin;
    size_t sharedMemPerMultiprocessor;
    int regsPerBlock;
    int warpSize;
    int maxThreadsPerBlock;
    int maxThreadsDim[3];
    int maxGridSize[3];
    int major, minor;
    int multiProcessorCount;
    int maxThreadsPerMultiProcessor;
    int l2CacheSize;
    int memoryBusWidth;
    int clockRate, memoryClockRate;
};

struct cudaFuncAttributes {
    size_t sharedSizeBytes;
    size_t constSizeBytes;
    size_t localSizeBytes;
    int maxThreadsPerBlock;
    int numRegs;
    int ptxVersion, binaryVersion;
    int maxDynamicSharedSizeBytes;
};

struct CUstream_st;
struct CUevent_st;
using cudaStream_t = CUstream_st*;
using cudaEvent_t = CUevent_st*;
#define cudaStreamNonBlocking 0x01
#define cudaStreamDefault 0x00
#define cudaEventDefault 0x00
#define cudaEventDisableTiming 0x02
#define cudaHostAllocDefault 0x00

enum cudaDataType_t {
    CUDA_R_32F = 0,
    CUDA_R_64F = 1,
    CUDA_R_16F = 2,
    CUDA_R_8I = 3,
    CUDA_R_32I = 10,
    CUDA_R_16BF = 14,
};
using cudaDataType = cudaDataType_t;

// ---- runtime API (emu.cpp): synchronous, device memory is host memory ----------------------------
const char* cudaGetErrorString(cudaError_t err);
const char* cudaGetErrorName(cudaError_t err);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaDeviceReset();
cudaError_t cudaMalloc(void** p, size_t bytes);
cudaError_t cudaFree(void* p);
cudaError_t cudaMallocHost(void** p, size_t bytes);
cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned flags);
cudaError_t cudaFreeHost(void* p);
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t stream);
cudaError_t cudaFreeAsync(void* p, cudaStream_t stream);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream = 0);
cudaError_t cudaMemset(void* dst, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream = 0);
cudaError_t cudaStreamCreate(cudaStream_t* s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags = 0);
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = 0);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);

namespace tuner::emu {
cudaError_t func_get_attributes(cudaFuncAttributes* attr, const void* func);
cudaError_t func_set_attribute(const void* func, cudaFuncAttribute attr, int value);
cudaError_t copy_to_symbol(void* symbol, size_t symbol_bytes, const void* src, size_t count, size_t offset);
cudaError_t copy_from_symbol(void* dst, const void* symbol, size_t symbol_bytes, size_t count, size_t offset);
}  // namespace tuner::emu

template <typename F>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, F* func) {
    return tuner::emu::func_get_attributes(attr, reinterpret_cast<const void*>(func));
}
template <typename F>
cudaError_t cudaFuncSetAttribute(F* func, cudaFuncAttribute attr, int value) {
    return tuner::emu::func_set_attribute(reinterpret_cast<const void*>(func), attr, value);
}
template <typename T>
cudaError_t cudaMemcpyToSymbol(T& symbol, const void* src, size_t count, size_t offset = 0,
                               cudaMemcpyKind = cudaMemcpyHostToDevice) {
    return tuner::emu::copy_to_symbol(&symbol, sizeof(T), src, count, offset);
}
template <typename T>
cudaError_t cudaMemcpyFromSymbol(void* dst, const T& symbol, size_t count, size_t offset = 0,
                                 cudaMemcpyKind = cudaMemcpyDeviceToHost) {
    return tuner::emu::copy_from_symbol(dst, &symbol, sizeof(T), count, offset);
}

// ---- the scheduler (emu.cpp) -------------------------------------------------------------------------
namespace tuner::emu {

// Runs invoke(closure) once per thread of the grid. Bad configurations (empty or oversized grid
// or block, dynamic shared memory past the kernel's limit) set the error cudaGetLastError returns.
void run_grid(const char* launch_text, const void* kernel, dim3 grid, dim3 block, size_t smem_bytes,
              cudaStream_t stream, void (*invoke)(void*), void* closure);

// What launch() (cuda_common.h) calls: the arguments converted to the kernel's parameter types
// once, as a <<<>>> launch does; every thread gets its own copy.
template <typename... P, typename... A>
void run_kernel(const char* launch_text, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem_bytes,
                cudaStream_t stream, A&&... args) {
    static_assert(sizeof...(P) == sizeof...(A), "launch: wrong number of kernel arguments");
    struct Closure {
        void (*kernel)(P...);
        std::tuple<std::decay_t<P>...> args;
    };
    Closure c{kernel, std::tuple<std::decay_t<P>...>(std::forward<A>(args)...)};
    run_grid(
        launch_text, reinterpret_cast<const void*>(kernel), grid, block, smem_bytes, stream,
        [](void* p) {
            Closure* cl = static_cast<Closure*>(p);
            std::tuple<std::decay_t<P>...> own = cl->args;  // by value, as each CUDA thread has its own
            std::apply(cl->kernel, std::move(own));
        },
        &c);
}

void* dynamic_shared();  // the running block's dynamic shared memory

// Barriers, called from inside a kernel.
enum BlockOp : int { kBarSync, kBarOr, kBarAnd, kBarCount };
int block_barrier(BlockOp op, int pred);
enum WarpOp : int { kSyncwarp, kShflIdx, kShflUp, kShflDown, kShflXor, kBallot, kAny, kAll, kCollective };
uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int param, int width);

// A warp-collective operation (the WMMA calls in <mma.h>): every lane of the mask calls it with its
// own `arg`; when the last one arrives, fn(args) runs once with the 32 lanes' args (null for lanes
// outside the mask), before any lane is released. Lanes must agree on fn (else: an abort naming
// `name` and both lanes, as for shuffles). fn may abort with die_in_kernel.
using CollectiveFn = void (*)(void* const* args);
void warp_collective(const char* name, unsigned mask, void* arg, CollectiveFn fn);
[[noreturn]] void die_in_kernel(const char* what);  // "[cuda emu] kernel K, block B, thread T: what", abort

template <typename T>
T shfl(WarpOp op, unsigned mask, T var, int param, int width) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "__shfl*_sync of a type over 8 bytes");
    uint64_t v = 0;
    std::memcpy(&v, &var, sizeof(T));
    v = warp_op(op, mask, v, param, width);
    T r;
    std::memcpy(&r, &v, sizeof(T));
    return r;
}

}  // namespace tuner::emu

// ---- synchronisation and warp intrinsics -------------------------------------------------------------
inline void __syncthreads() { tuner::emu::block_barrier(tuner::emu::kBarSync, 0); }
inline int __syncthreads_or(int p) { return tuner::emu::block_barrier(tuner::emu::kBarOr, p); }
inline int __syncthreads_and(int p) { return tuner::emu::block_barrier(tuner::emu::kBarAnd, p); }
inline int __syncthreads_count(int p) { return tuner::emu::block_barrier(tuner::emu::kBarCount, p); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { tuner::emu::warp_op(tuner::emu::kSyncwarp, mask, 0, 0, 32); }
template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32) {
    return tuner::emu::shfl(tuner::emu::kShflIdx, mask, var, src_lane, width);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
    return tuner::emu::shfl(tuner::emu::kShflUp, mask, var, int(delta), width);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
    return tuner::emu::shfl(tuner::emu::kShflDown, mask, var, int(delta), width);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
    return tuner::emu::shfl(tuner::emu::kShflXor, mask, var, lane_mask, width);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
    return unsigned(tuner::emu::warp_op(tuner::emu::kBallot, mask, pred != 0, 0, 32));
}
inline int __any_sync(unsigned mask, int pred) {
    return int(tuner::emu::warp_op(tuner::emu::kAny, mask, pred != 0, 0, 32));
}
inline int __all_sync(unsigned mask, int pred) {
    return int(tuner::emu::warp_op(tuner::emu::kAll, mask, pred != 0, 0, 32));
}
unsigned __activemask();
inline void __threadfence() {}
inline void __threadfence_block() {}
inline void __threadfence_system() {}
inline void __nanosleep(unsigned) {}
long long clock64();

// ---- atomics: one OS thread runs every emulated thread and never switches inside these ------------
template <typename T>
T atomicAdd(T* p, T v) {
    const T old = *p;
    *p = T(old + v);
    return old;
}
template <typename T>
T atomicSub(T* p, T v) {
    const T old = *p;
    *p = T(old - v);
    return old;
}
template <typename T>
T atomicMin(T* p, T v) {
    const T old = *p;
    *p = v < old ? v : old;
    return old;
}
template <typename T>
T atomicMax(T* p, T v) {
    const T old = *p;
    *p = v > old ? v : old;
    return old;
}
template <typename T>
T atomicExch(T* p, T v) {
    const T old = *p;
    *p = v;
    return old;
}
template <typename T>
T atomicCAS(T* p, T compare, T v) {
    const T old = *p;
    if (old == compare) *p = v;
    return old;
}
template <typename T>
T atomicOr(T* p, T v) {
    const T old = *p;
    *p = old | v;
    return old;
}
template <typename T>
T atomicAnd(T* p, T v) {
    const T old = *p;
    *p = old & v;
    return old;
}
inline unsigned atomicInc(unsigned* p, unsigned limit) {
    const unsigned old = *p;
    *p = old >= limit ? 0 : old + 1;
    return old;
}

// ---- integer and bit intrinsics ----------------------------------------------------------------------
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
    x = ((x >> 8) & 0x00ff00ffu) | ((x & 0x00ff00ffu) << 8);
    return (x >> 16) | (x << 16);
}
inline unsigned __umulhi(unsigned a, unsigned b) { return unsigned((uint64_t(a) * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
inline int __mul24(int a, int b) { return a * b; }
template <typename T>
T __ldg(const T* p) {
    return *p;
}
template <typename T>
T __ldcs(const T* p) {
    return *p;
}
template <typename T>
void __stcs(T* p, T v) {
    *p = v;
}

// ---- float intrinsics: each a separately rounded IEEE operation (the emu sources are compiled with
// -ffp-contract=off, so plain a * b + c is two roundings too, where nvcc would usually fuse) -------------
inline float __int_as_float(int x) {
    float f;
    std::memcpy(&f, &x, 4);
    return f;
}
inline int __float_as_int(float f) {
    int x;
    std::memcpy(&x, &f, 4);
    return x;
}
inline float __uint_as_float(unsigned x) {
    float f;
    std::memcpy(&f, &x, 4);
    return f;
}
inline unsigned __float_as_uint(float f) {
    unsigned x;
    std::memcpy(&x, &f, 4);
    return x;
}
inline double __longlong_as_double(long long x) {
    double d;
    std::memcpy(&d, &x, 8);
    return d;
}
inline long long __double_as_longlong(double d) {
    long long x;
    std::memcpy(&x, &d, 8);
    return x;
}
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __frsqrt_rn(float a) { return 1.0f / std::sqrt(a); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return exp10f(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline float __powf(float a, float b) { return powf(a, b); }
inline void __sincosf(float x, float* s, float* c) { sincosf(x, s, c); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : (x == x ? x : 0.0f)); }
inline int __float2int_rn(float x) { return int(nearbyintf(x)); }
inline int __float2int_rz(float x) { return int(x); }
inline int __float2int_rd(float x) { return int(floorf(x)); }
inline int __float2int_ru(float x) { return int(ceilf(x)); }
inline unsigned __float2uint_rn(float x) { return unsigned(nearbyintf(x)); }
inline float __int2float_rn(int x) { return float(x); }
inline float __uint2float_rn(unsigned x) { return float(x); }
inline float __ll2float_rn(long long x) { return float(x); }
inline float __double2float_rn(double x) { return float(x); }
