// Warp-level tensor-core and async-copy instructions as device functions: inline PTX with nvcc,
// the CPU emulator's implementations under TUNER_CUDA_EMU (emu/include/mma_ptx_emu.h), so kernel
// code is the same in both builds. Self-contained (CUDA headers only), like the kernels that use it
// (attention_mma.cuh), so the kernel lab can include it too.
//
//   mma_bf16_16816(d, a, b)   d (4 f32) += a (16 x 16 bf16, 4 regs) b (16 x 8 bf16, 2 regs)
//                             mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
//   ldmatrix_x4(r, p)         ldmatrix.sync.aligned.m8n8.x4.shared.b16 (lane l: row address l % 8
//   ldmatrix_x4_trans(r, p)     of matrix l / 8), and its .trans form
//   cp_async_16(dst, src, ok) cp.async.cg 16 bytes global -> shared, zero-filled when !ok
//   cp_async_4(dst, src, ok)  cp.async.ca 4 bytes
//   cp_async_commit(), cp_async_wait<N>()   commit_group / wait_group N
//   pack_bf16x2(lo, hi)       two f32 rounded to bf16 in one .b32 register (lo in the low half)
//   fast_exp2(x)              ex2.approx.ftz.f32
//
// Register layouts (PTX ISA "Matrix Fragments for mma.m16n8k16 with floating point type"; g = lane
// >> 2, t = lane % 4): A registers 0..3 hold rows g, g+8, g, g+8 and columns 2t..2t+1 (+8 for
// registers 2, 3); B registers 0..1 hold k = 2t..2t+1 (+8 for register 1) of column n = g; C/D
// hold (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1). The emulator implements these maps exactly.
// Everything here needs sm_80 (cp.async, bf16 mma); TUNER_MMA_ARCH_OK is 0 when compiling device
// code for an older architecture, where callers compile their kernels as traps.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#if defined(TUNER_CUDA_EMU)
#include <mma_ptx_emu.h>
#endif

#if defined(TUNER_CUDA_EMU) || !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define TUNER_MMA_ARCH_OK 1
#else
#define TUNER_MMA_ARCH_OK 0
#endif

namespace tuner::cuda::ptx {

#if TUNER_MMA_ARCH_OK

__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t b0,
                                               const uint32_t b1) {
#if defined(TUNER_CUDA_EMU)
    const uint32_t b[2] = {b0, b1};
    ::tuner::emu::mma_bf16_16816(d, a, b);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

#if !defined(TUNER_CUDA_EMU)
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
#endif

// p: this lane's row address in shared memory (16-byte aligned), see the top of this file.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
#if defined(TUNER_CUDA_EMU)
    ::tuner::emu::ldmatrix(r, p, 4, false);
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
#endif
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
#if defined(TUNER_CUDA_EMU)
    ::tuner::emu::ldmatrix(r, p, 4, true);
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
#endif
}

// 16 bytes from global src to shared dst (both 16-byte aligned); !ok: dst is zero-filled and src
// is not read (it must still be a valid pointer: pass the tensor's base).
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool ok) {
#if defined(TUNER_CUDA_EMU)
    ::tuner::emu::cp_async(dst, src, 16, ok ? 16 : 0);
#else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(ok ? 16 : 0)
                 : "memory");
#endif
}

// 4 bytes (both 4-byte aligned); !ok: zero-filled.
__device__ __forceinline__ void cp_async_4(void* dst, const void* src, bool ok) {
#if defined(TUNER_CUDA_EMU)
    ::tuner::emu::cp_async(dst, src, 4, ok ? 4 : 0);
#else
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(ok ? 4 : 0)
                 : "memory");
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if defined(TUNER_CUDA_EMU)
    ::tuner::emu::cp_async_commit();
#else
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most N of this thread's committed groups are still in flight. Other threads'
// copies are visible after a __syncthreads that follows their waits.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(TUNER_CUDA_EMU)
    ::tuner::emu::cp_async_wait(N);
#else
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

#endif  // TUNER_MMA_ARCH_OK

// 2^x by the special-function unit (ex2.approx.ftz.f32: relative error ~2^-22, results below
// 2^-126 flushed to 0, 2^-inf = 0): what softmax needs, without exp2f's slow path for subnormal
// results (which costs registers in the attention kernels). The emulator uses exp2f.
__device__ __forceinline__ float fast_exp2(float x) {
#if defined(TUNER_CUDA_EMU) || !defined(__CUDA_ARCH__)
    return exp2f(x);
#else
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
#endif
}

// Two f32 rounded to nearest-even bf16, `lo` in the low 16 bits (the lower-numbered fragment element).
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    uint32_t r;
    static_assert(sizeof(h) == sizeof(r), "__nv_bfloat162 is 32 bits");
    memcpy(&r, &h, sizeof r);
    return r;
}

}  // namespace tuner::cuda::ptx
