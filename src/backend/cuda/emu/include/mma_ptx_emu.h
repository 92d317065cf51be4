// CPU emulator (see cuda_runtime.h): the warp-level PTX instructions that backend/cuda/mma_ptx.cuh
// wraps in inline assembly on a GPU, with the register layouts of the PTX ISA:
//  * mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (D = A B + C),
//  * ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{,.trans}.shared.b16,
//  * cp.async.{ca,cg}.shared.global (4, 8 or 16 bytes, zero-filling past src-size) with
//    cp.async.commit_group and cp.async.wait_group.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type" and
// "Warp-level matrix load instruction: ldmatrix"), with groupID g = lane >> 2 and
// threadID_in_group t = lane % 4; a .b32 register holds two bf16, the lower-numbered element in its
// low 16 bits:
//   A (16 x 16, row):  a0,a1: (g, 2t..2t+1)   a2,a3: (g+8, 2t..2t+1)
//                      a4,a5: (g, 2t+8..+9)   a6,a7: (g+8, 2t+8..+9)     (registers a[0..3])
//   B (16 x 8, col):   b0,b1: (k 2t..2t+1, n g)   b2,b3: (k 2t+8..+9, n g)  (registers b[0..1])
//   C, D (16 x 8 f32): c0,c1: (g, 2t..2t+1)   c2,c3: (g+8, 2t..2t+1)
//   ldmatrix: matrix i (8 x 8 b16) has its 8 row addresses in lanes 8i .. 8i+7; lane l receives in
//   r[i] row l/4, columns 2(l%4), 2(l%4)+1 of it; with .trans, rows 2(l%4) and 2(l%4)+1 of
//   column l/4 (the transposed matrix's row l/4).
// The emulator implements exactly these maps, so a kernel that assumes another layout computes
// wrong numbers here (tests/test_cuda_emu.cpp pins them against plain reference products).
//
// What it models:
//  * mma and ldmatrix are warp-collective (".sync.aligned"): all 32 lanes must reach the same one
//    (else an abort naming both lanes, or a deadlock report), and the last lane to arrive runs the
//    whole warp's operation before any lane continues. ldmatrix addresses must be 16-byte aligned.
//  * mma numbers: the 16 products of bf16 inputs are exact and summed, with c, in double, then
//    rounded once to f32 (tensor cores sum in their own order and internal precision: results
//    agree within a few f32 ulps of the magnitudes summed).
//  * cp.async copies are deferred: the source is read when the copy is issued, the destination
//    written only when a cp.async.wait_group that covers its group runs in the issuing thread (or
//    when the thread exits). A kernel that reads shared memory it copied without waiting sees the
//    old bytes (0xff, NaN, if never written): the GPU gives no guarantee there either. Uncommitted
//    copies are not covered by any wait (as in PTX). Destinations must lie in the launch's dynamic
//    shared memory, sources (when src-size > 0) inside one cudaMalloc allocation; both aligned to
//    the copy size. Violations abort with the kernel, block and thread.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>

#include "cuda_bf16.h"
#include "cuda_runtime.h"

namespace tuner::emu {

// cp.async of `bytes` (4, 8 or 16) from global src to shared dst; bytes past src_bytes (0..bytes)
// are zero-filled. Joins the calling thread's open group (emu.cpp).
void cp_async(void* dst, const void* src, int bytes, int src_bytes);
// cp.async.commit_group: closes the open group (an empty group is fine).
void cp_async_commit();
// cp.async.wait_group n: completes every committed group but the newest n.
void cp_async_wait(int n);

namespace ptx_detail {

inline int lane_id() {
    const unsigned linear = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    return int(linear & 31u);
}

inline void check_all_lanes(const char* name, void* const* args) {
    for (int l = 0; l < 32; l++)
        if (!args[l]) {
            char buf[160];
            std::snprintf(buf, sizeof buf, "%s: lane %d of the warp does not take part (all 32 lanes must)", name, l);
            die_in_kernel(buf);
        }
}

inline float bf16_lo(uint32_t r) { return bf16_bits_to_f32(uint16_t(r & 0xffffu)); }
inline float bf16_hi(uint32_t r) { return bf16_bits_to_f32(uint16_t(r >> 16)); }

struct MmaArg {
    float* d;           // c on entry, d on exit (4 floats)
    const uint32_t* a;  // 4 registers
    const uint32_t* b;  // 2 registers
};

inline void mma_bf16_16816_fn(void* const* args) {
    check_all_lanes("mma.sync.m16n8k16", args);
    float A[16][16], B[16][8], C[16][8];
    for (int l = 0; l < 32; l++) {
        const MmaArg& x = *static_cast<const MmaArg*>(args[l]);
        const int g = l >> 2, t = l & 3;
        // A: register i holds rows g (i = 0, 2) or g + 8 (i = 1, 3), columns 2t (+8 for i >= 2)
        for (int i = 0; i < 4; i++) {
            const int row = g + 8 * (i & 1), col = 2 * t + 8 * (i >> 1);
            A[row][col] = bf16_lo(x.a[i]);
            A[row][col + 1] = bf16_hi(x.a[i]);
        }
        // B: register i holds k = 2t, 2t+1 (+8 for i = 1) of column g
        for (int i = 0; i < 2; i++) {
            B[2 * t + 8 * i][g] = bf16_lo(x.b[i]);
            B[2 * t + 8 * i + 1][g] = bf16_hi(x.b[i]);
        }
        // C: c0, c1 row g; c2, c3 row g + 8; columns 2t, 2t+1
        for (int i = 0; i < 4; i++) C[g + 8 * (i >> 1)][2 * t + (i & 1)] = x.d[i];
    }
    float D[16][8];
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 8; j++) {
            double acc = C[i][j];
            for (int k = 0; k < 16; k++) acc += double(A[i][k]) * double(B[k][j]);
            D[i][j] = float(acc);
        }
    for (int l = 0; l < 32; l++) {  // after every read
        const MmaArg& x = *static_cast<const MmaArg*>(args[l]);
        const int g = l >> 2, t = l & 3;
        for (int i = 0; i < 4; i++) x.d[i] = D[g + 8 * (i >> 1)][2 * t + (i & 1)];
    }
}

struct LdmArg {
    uint32_t* r;
    const void* p;  // this lane's row address (lanes 0 .. 8 num - 1)
    int num;        // 1, 2 or 4 matrices
    bool trans;
};

inline uint16_t load_b16(const void* row, int col) {
    uint16_t v;
    std::memcpy(&v, static_cast<const uint8_t*>(row) + 2 * col, 2);
    return v;
}

inline void ldmatrix_fn(void* const* args) {
    check_all_lanes("ldmatrix", args);
    const LdmArg& a0 = *static_cast<const LdmArg*>(args[0]);
    char buf[200];
    for (int l = 0; l < 32; l++) {
        const LdmArg& a = *static_cast<const LdmArg*>(args[l]);
        if (a.num != a0.num || a.trans != a0.trans) {
            std::snprintf(buf, sizeof buf, "ldmatrix: lane %d executes .x%d%s, lane 0 .x%d%s", l, a.num,
                          a.trans ? ".trans" : "", a0.num, a0.trans ? ".trans" : "");
            die_in_kernel(buf);
        }
        if (l < 8 * a.num && reinterpret_cast<uintptr_t>(a.p) % 16 != 0) {
            std::snprintf(buf, sizeof buf, "ldmatrix: lane %d's row address %p is not 16-byte aligned", l, a.p);
            die_in_kernel(buf);
        }
    }
    // Every lane's registers from the row addresses (all read before any register is written).
    uint32_t out[32][4];
    for (int l = 0; l < 32; l++)
        for (int i = 0; i < a0.num; i++) {
            const int g = l >> 2, t = l & 3;
            uint16_t lo, hi;
            if (!a0.trans) {
                const void* row = static_cast<const LdmArg*>(args[8 * i + g])->p;
                lo = load_b16(row, 2 * t), hi = load_b16(row, 2 * t + 1);
            } else {
                lo = load_b16(static_cast<const LdmArg*>(args[8 * i + 2 * t])->p, g);
                hi = load_b16(static_cast<const LdmArg*>(args[8 * i + 2 * t + 1])->p, g);
            }
            out[l][i] = uint32_t(lo) | (uint32_t(hi) << 16);
        }
    for (int l = 0; l < 32; l++) {
        const LdmArg& a = *static_cast<const LdmArg*>(args[l]);
        for (int i = 0; i < a0.num; i++) a.r[i] = out[l][i];
    }
}

}  // namespace ptx_detail

// d += a b (m16n8k16, bf16 inputs, f32 accumulators). Warp-collective.
inline void mma_bf16_16816(float* d, const uint32_t* a, const uint32_t* b) {
    ptx_detail::MmaArg x{d, a, b};
    warp_collective("mma.sync.m16n8k16", 0xffffffffu, &x, &ptx_detail::mma_bf16_16816_fn);
}

// ldmatrix .m8n8 .x{num} (.trans) .b16 into r[0 .. num-1]. Warp-collective.
inline void ldmatrix(uint32_t* r, const void* p, int num, bool trans) {
    ptx_detail::LdmArg x{r, p, num, trans};
    warp_collective("ldmatrix", 0xffffffffu, &x, &ptx_detail::ldmatrix_fn);
}

}  // namespace tuner::emu
