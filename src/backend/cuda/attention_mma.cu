// Host side of the mma.sync flash attention (attention_mma.h): checks, launch configurations, and
// the one instantiation per (head-dim bucket, input dtype, output dtype) of the kernels in
// attention_mma.cuh.
#include "backend/cuda/attention_mma.h"

#include <cmath>
#include <cstdint>

#include "backend/cuda/attention_mma.cuh"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_common.h"
#include "core/error.h"

namespace tuner::cuda {

namespace {

namespace am = attn_mma;
using bf16 = __nv_bfloat16;
using am::Params;

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

bool check(const AttnShape& s, ActIn q, ActIn k, ActIn v, ActIn out, std::string* why) {
    auto no = [&](std::string w) {
        if (why) *why = std::move(w);
        return false;
    };
    if (s.B <= 0 || s.T <= 0 || s.NH <= 0 || s.NKV <= 0 || s.NH % s.NKV != 0)
        return no(
            fmt::format("bad shape B={} T={} NH={} NKV={} (NH must be a multiple of NKV)", s.B, s.T, s.NH, s.NKV));
    if (am::bucket(s.HD) == 0) return no(fmt::format("head dim {} (needs HD % 8 == 0 and 8 <= HD <= 128)", s.HD));
    if (s.NH > 65535 || s.B > 65535 || (int64_t(s.T) + 63) / 64 > 65535)
        return no("NH, B and ceil(T / 64) must be at most 65535 (grid dimensions)");
    for (const ActIn* a : {&q, &k, &v, &out})
        if (a->dtype != DType::F32 && a->dtype != DType::BF16)
            return no(fmt::format("activations are f32 or bf16, got {}", dtype_name(a->dtype)));
    if (q.dtype != k.dtype || q.dtype != v.dtype)
        return no(fmt::format("q, k, v must share a dtype (got {}, {}, {})", dtype_name(q.dtype), dtype_name(k.dtype),
                              dtype_name(v.dtype)));
    for (const ActIn* a : {&q, &k, &v, &out})
        if (!aligned16(a->data)) return no("q, k, v, out must be 16-byte aligned");
    return true;
}

Params params(const AttnShape& s) {
    const float scale = 1.0f / std::sqrt(float(s.HD));
    return Params{s.B, s.T, s.NH, s.NKV, s.HD, s.NH / s.NKV, scale, scale * am::kLog2e};
}


template <int HDMAX, typename TI, typename TO>
void forward_launch(TO* out, float* lse, const TI* q, const TI* k, const TI* v, const int32_t* seg, const Params& p) {
    constexpr size_t smem = am::Fwd<HDMAX>::smem_bytes;
    constexpr int BR = am::Fwd<HDMAX>::BR;
    static const bool ready =
        (opt_in_smem(am::attention_mma_forward_kernel<HDMAX, TI, TO>, smem, "attention_mma_forward"), true);
    (void)ready;
    const dim3 grid(unsigned(p.NH), unsigned((p.T + BR - 1) / BR), unsigned(p.B));
    launch(am::attention_mma_forward_kernel<HDMAX, TI, TO>, grid, am::kThreads, smem, context().stream, out, lse, q, k,
           v, seg, p);
    CUDA_LAUNCH_CHECK("attention_mma_forward_kernel");
}

template <typename TI, typename TO>
void forward_typed(TO* out, float* lse, const TI* q, const TI* k, const TI* v, const int32_t* seg, const Params& p) {
    if (am::bucket(p.HD) == 64) forward_launch<64>(out, lse, q, k, v, seg, p);
    else forward_launch<128>(out, lse, q, k, v, seg, p);
}

template <int HDMAX, typename TI>
void backward_launch(float* dq, float* dk, float* dv, float* part, const bf16* dout16, const TI* q, const TI* k,
                     const TI* v, const float* lse, const float* D, const int32_t* seg, const Params& p) {
    using C = am::Bwd<HDMAX>;
    cudaStream_t stream = context().stream;
    static const bool ready =
        (opt_in_smem(am::attention_mma_dq_kernel<HDMAX, TI>, C::dq_smem_bytes, "attention_mma_backward (dq)"),
         opt_in_smem(am::attention_mma_dkv_kernel<HDMAX, TI>, C::dkv_smem_bytes, "attention_mma_backward (dk, dv)"),
         true);
    (void)ready;
    const dim3 grid_q(unsigned(p.NH), unsigned((p.T + C::BR - 1) / C::BR), unsigned(p.B));
    launch(am::attention_mma_dq_kernel<HDMAX, TI>, grid_q, am::kThreads, C::dq_smem_bytes, stream, dq, dout16, q, k, v,
           lse, D, seg, p);
    CUDA_LAUNCH_CHECK("attention_mma_dq_kernel");
    const dim3 grid_kv(unsigned(p.NKV * p.S), unsigned((p.T + C::BC - 1) / C::BC), unsigned(p.B));
    launch(am::attention_mma_dkv_kernel<HDMAX, TI>, grid_kv, am::kThreads, C::dkv_smem_bytes, stream, dk, dv, part,
           dout16, q, k, v, lse, D, seg, p);
    CUDA_LAUNCH_CHECK("attention_mma_dkv_kernel");
    if (p.S > 1) {
        const int64_t n4 = int64_t(p.B) * p.T * p.NKV * p.HD / 4;
        launch(am::attention_mma_dkv_reduce_kernel, grid_for(n4, 256), 256, 0, stream, dk, dv, part, n4, p.S);
        CUDA_LAUNCH_CHECK("attention_mma_dkv_reduce_kernel");
    }
}

template <typename TI>
void backward_typed(float* dq, float* dk, float* dv, float* part, const bf16* dout16, const TI* q, const TI* k,
                    const TI* v, const float* lse, const float* D, const int32_t* seg, const Params& p) {
    if (am::bucket(p.HD) == 64) backward_launch<64>(dq, dk, dv, part, dout16, q, k, v, lse, D, seg, p);
    else backward_launch<128>(dq, dk, dv, part, dout16, q, k, v, lse, D, seg, p);
}

// Blocks per (key block, kv head) of the dk / dv kernel: the smallest divisor S of G that gives at
// least 4 blocks per SM (two waves at the two blocks an SM holds). Causal key block kb has
// T / 64 - kb query tiles per head, so with fewer blocks than that the longest ones run alone at
// the end; with S > 1 each block does G / S heads and the longest unit shrinks by S.
int g_forced_split = 0;  // attention_mma_force_dkv_split

int dkv_split(const AttnShape& s, int sm_count) {
    const int G = s.NH / s.NKV;
    if (g_forced_split > 0) return G % g_forced_split == 0 ? g_forced_split : G;
    const int64_t blocks = int64_t((s.T + 63) / 64) * s.NKV * s.B;
    for (int d = 1; d < G; d++)
        if (G % d == 0 && blocks * d >= 4 * int64_t(sm_count)) return d;
    return G;
}

}  // namespace

bool attention_mma_supports(const AttnShape& s, ActIn q, ActIn k, ActIn v, ActIn out, std::string* why) {
    if (!out.data) out = ActIn(q.data, q.dtype);  // no out to check: stand in q
    return check(s, q, k, v, out, why);
}

void attention_mma_force_dkv_split(int S) { g_forced_split = S > 0 ? S : 0; }

size_t attention_mma_workspace_bytes(const AttnShape& s) {
    if (s.B <= 0 || s.T <= 0 || s.NKV <= 0 || s.NH % s.NKV != 0) return 0;
    const size_t rows = size_t(s.B) * s.T * s.NH;
    // The dk / dv partial sums for the most blocks per key block (S = G, whatever the device).
    const size_t nkv = size_t(s.B) * s.T * s.NKV * size_t(s.HD), G = size_t(s.NH / s.NKV);
    return ws_size(rows * sizeof(float)) + ws_size(rows * size_t(s.HD) * sizeof(bf16)) +
           (G > 1 ? ws_size((G - 1) * 2 * nkv * sizeof(float)) : 0);
}

void attention_mma_forward(ActOut out, float* lse, ActIn q, ActIn k, ActIn v, const int32_t* seg_start,
                           const AttnShape& s) {
    if (s.B <= 0 || s.T <= 0) return;
    context("attention_mma_forward");
    std::string why;
    if (!check(s, q, k, v, ActIn(out), &why)) fail("[cuda] attention_mma_forward: {}", why);
    const Params p = params(s);
    with_out(out, "attention_mma_forward", [&](auto* o) {
        if (q.bf16())
            forward_typed(o, lse, static_cast<const bf16*>(q.data), static_cast<const bf16*>(k.data),
                          static_cast<const bf16*>(v.data), seg_start, p);
        else
            forward_typed(o, lse, static_cast<const float*>(q.data), static_cast<const float*>(k.data),
                          static_cast<const float*>(v.data), seg_start, p);
    });
}

void attention_mma_backward(float* dq, float* dk, float* dv, const float* dout, ActIn q, ActIn k, ActIn v, ActIn out,
                            const float* lse, const int32_t* seg_start, const AttnShape& s) {
    if (s.B <= 0 || s.T <= 0) return;
    context("attention_mma_backward");
    std::string why;
    if (!check(s, q, k, v, out, &why)) fail("[cuda] attention_mma_backward: {}", why);
    for (const void* ptr : {static_cast<const void*>(dq), static_cast<const void*>(dk), static_cast<const void*>(dv),
                            static_cast<const void*>(dout)})
        if (!aligned16(ptr)) fail("[cuda] attention_mma_backward: dq, dk, dv, dout must be 16-byte aligned");
    Params p = params(s);
    p.S = dkv_split(s, context().sm_count);
    Workspace ws("attention_mma_backward", attention_mma_workspace_bytes(s));
    const size_t rows = size_t(s.B) * s.T * s.NH;
    float* D = ws.take<float>(rows);
    bf16* dout16 = ws.take<bf16>(rows * size_t(s.HD));
    float* part = p.S > 1 ? ws.take<float>(size_t(p.S - 1) * 2 * size_t(s.B) * s.T * s.NKV * size_t(s.HD)) : nullptr;
    cudaStream_t stream = context().stream;
    with_in(out, "attention_mma_backward", [&](const auto* o) {
        launch(am::attention_mma_delta_kernel<elem_t<decltype(o)>>, grid_for(int64_t(rows) * 32, 256), 256, 0, stream,
               D, dout16, dout, o, p);
    });
    CUDA_LAUNCH_CHECK("attention_mma_delta_kernel");
    if (q.bf16())
        backward_typed(dq, dk, dv, part, dout16, static_cast<const bf16*>(q.data), static_cast<const bf16*>(k.data),
                       static_cast<const bf16*>(v.data), lse, D, seg_start, p);
    else
        backward_typed(dq, dk, dv, part, dout16, static_cast<const float*>(q.data), static_cast<const float*>(k.data),
                       static_cast<const float*>(v.data), lse, D, seg_start, p);
}

}  // namespace tuner::cuda
