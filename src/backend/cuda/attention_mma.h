// bf16 flash attention on mma.sync tensor cores (FlashAttention-2 style: P in registers, cp.async
// double buffering; kernels in attention_mma.cuh), host entry points. Plain C++: a build without
// CUDA links no_cuda/attention_mma_stubs.cpp. Not wired into cuda::attention_forward / backward
// (attention.cu) yet: the same semantics and output conventions as those (kernels.h), so a
// caller can switch when attention_mma_supports() says yes.
//
// Shapes: q, out, dq (B, T, NH, HD); k, v, dk, dv (B, T, NKV, HD); lse (B, NH, T), f32. Query t of
// row b sees keys [seg_start[b*T + t], t] (seg_start null: [0, t]; 0 <= seg_start[t] <= t).
// Scale 1/sqrt(HD); lse = log-sum-exp of the scaled scores (natural log).
//
// Preconditions (attention_mma_supports checks them; the entry points throw when they fail):
//  * NH % NKV == 0; HD % 8 == 0 and 8 <= HD <= 128 (tiles are padded to 64 or 128);
//  * q, k, v all f32 or all bf16 (ActIn); out f32 or bf16 (forward) and the out the backward
//    reads likewise; dout, dq, dk, dv, lse f32;
//  * every tensor pointer 16-byte aligned (cudaMalloc and DeviceArena views are 256-byte
//    aligned); seg_start, when given, 4-byte aligned;
//  * any T >= 1 (not only multiples of a tile); NH, B and ceil(T / 64) at most 65535 (grid sizes).
// Numerics: bf16 operands (q, k, v, dout rounded to bf16 when staged; P and dS rounded to bf16 as
// tensor-core inputs), f32 accumulation, softmax / lse / D in f32: the tolerances of the
// existing bf16 path (out 1e-2, lse 5e-3, gradients 2e-2 of each tensor's max).
// Deterministic: no atomics, fixed summation orders; dq, dk, dv are overwritten.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "backend/kernels.h"

namespace tuner::cuda {

// Whether the mma kernels take this shape and these dtypes / pointers (out: the forward's output
// or the backward's saved out; pass {} to skip pointer checks). False with *why set otherwise.
bool attention_mma_supports(const AttnShape& s, ActIn q, ActIn k, ActIn v, ActIn out, std::string* why = nullptr);

// Workspace bytes attention_mma_backward takes (the forward takes none): D (B, NH, T) f32, dout
// rounded to bf16 (B, T, NH, HD), and with GQA (G = NH / NKV > 1) room for the dk / dv partial sums
// of up to G - 1 extra head groups ((G - 1) x 2 x B T NKV HD f32; how many are used depends on the
// device's SM count), each rounded up to the workspace alignment. For B=1 T=2048 NH=32 NKV=8
// HD=128: 0.25 + 16 + 48 MiB.
size_t attention_mma_workspace_bytes(const AttnShape& s);

void attention_mma_forward(ActOut out, float* lse, ActIn q, ActIn k, ActIn v, const int32_t* seg_start,
                           const AttnShape& s);
// dq, dk, dv overwritten; recomputes P from lse. Workspace: attention_mma_workspace_bytes(s).
void attention_mma_backward(float* dq, float* dk, float* dv, const float* dout, ActIn q, ActIn k, ActIn v, ActIn out,
                            const float* lse, const int32_t* seg_start, const AttnShape& s);

// Tests and benchmarks: the number S of dk / dv blocks per (key block, kv head), each summing G / S
// query heads, partial sums added in a fixed order (S must divide G; other values mean G). 0
// (default): automatic, the smallest S giving at least 4 blocks per SM. Results differ between
// values of S in the last bits only (the order of the head sum).
void attention_mma_force_dkv_split(int S);

}  // namespace tuner::cuda
