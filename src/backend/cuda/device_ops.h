// What the model and the trainer need on the GPU besides the kernel table (backend/kernels.h)
// and the runtime (cuda_backend.h): the LoRA adapter's elementwise steps, gradient norms for
// clipping, device memory figures, and attention for KV-cache decoding. Plain C++ (no CUDA
// types); a build without CUDA links no_cuda/device_ops_stubs.cpp, which throws
// "[cuda] X: tuner was built without CUDA".
//
// Every pointer is device memory unless the comment says host. The elementwise ops are
// bit-identical to their CPU counterparts (same f32 operations, same dropout masks), so a LoRA
// step on the GPU differs from the CPU one only where the matmuls and reductions sum in
// another order.
//
//   cuda::scale_inplace(xa, N * r, scale);
//   cuda::lora_dropout_forward(xdrop, x, N * in, key, lora_dropout_threshold(p), 1 / (1 - p));
//   double ss = cuda::sum_squares({{grad_a, n_a}, {grad_b, n_b}});   // one synchronisation
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "backend/kernels.h"

namespace tuner::cuda {

// x[i] *= s
void scale_inplace(float* x, int64_t n, float s);

// LoRA dropout with nn/lora.h's masks: element i is kept when the high 32 bits of
// splitmix64(key + i) are >= threshold (lora_dropout_threshold(p)), and kept elements are
// multiplied by keep_scale = 1 / (1 - p).
//   forward:       out[i] = keep ? x[i] * keep_scale : 0
//   backward_add:  dx[i] += keep ? g[i] * keep_scale : 0
// out and x may be bf16 storage (kernels.h ActOut / ActIn): the product is formed in f32 and
// rounded on store.
void lora_dropout_forward(ActOut out, ActIn x, int64_t n, uint64_t key, uint32_t threshold, float keep_scale);
void lora_dropout_backward_add(float* dx, const float* g, int64_t n, uint64_t key, uint32_t threshold,
                               float keep_scale);

// Sum of x[i]^2 over every element of every (x, n) tensor, accumulated in double: one kernel per
// tensor writes per-block partial sums into its own slots, then one copy brings them all to the
// host, where they are added in order (deterministic, and one synchronisation per call rather
// than one per tensor: a LoRA step on a 7B model has 448 adapter tensors). The partial-sum buffer
// is allocated on the first call and grows only if a later call has more tensors.
double sum_squares(const std::vector<std::pair<const float*, int64_t>>& tensors);

// Free and total device memory (cudaMemGetInfo), in bytes.
void memory_info(size_t* free_bytes, size_t* total_bytes);
// Bytes cuBLASLt's own workspace takes (created once by init()).
size_t cublaslt_workspace_bytes();

// Attention of n new queries against a KV cache (incremental decoding):
//   q, out (n, NH, HD); K, V (max_T, NKV, HD) with rows [0, p0 + n) filled (the new tokens'
//   keys and values already appended). Query i (position p0 + i) of head h attends keys
//   0 .. p0 + i of kv head h / (NH / NKV); scale 1/sqrt(HD); softmax in f32.
// One block per (query, head); keys in chunks through shared memory. HD <= 256.
void decode_attention(float* out, const float* q, const float* K, const float* V, int n, int p0, int NH, int NKV,
                      int HD);

}  // namespace tuner::cuda
