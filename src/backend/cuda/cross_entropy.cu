// lm_head + cross-entropy, fused and chunked: the (N, V) logits are never stored whole.
//
// x (N, C) final hidden states, head (V, C), targets (N) with -100 = ignored.
//   loss_n = logsumexp(logits_n) - logits_n[target_n],  logits_n = head @ x_n
//   dlogits_n = grad_scale * (softmax(logits_n) - onehot(target_n))
//   dx_n = dlogits_n @ head        dhead += sum_n dlogits_n^T x_n
//
// As on the CPU (backend/cpu/cross_entropy.cpp):
//  1. One block compacts the active (non-ignored) rows into a list (a block-wide prefix sum),
//     writes loss 0 / lse 0 for ignored rows and flags targets outside [0, V). The count comes
//     back to the host (the op returns it; this is its one synchronisation).
//  2. Chunks of R active rows (R x V f32 logits = config().ce_logit_elems, 128 MiB by default:
//     R = 261 rows for V = 128256): gather the rows of x, logits = xs @ head^T through the
//     matmul path (cuBLASLt; a bf16 or quantised head is converted tile by tile), then one block
//     per row computes max, sum of exp, loss and lse, and overwrites the logits with dlogits.
//  3. dxs = dlogits @ head (scattered back to dx rows; ignored rows of dx are 0) and
//     dhead += dlogits^T @ xs, both GEMMs in the same precision as the logits.
// The precision follows config().compute like every matmul: in BF16, xs and dlogits are
// rounded to bf16 for the GEMMs, the softmax and loss are always f32.

#include <algorithm>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/weights.h"
#include "backend/kernels.h"

namespace tuner::cuda {

namespace {

constexpr int32_t kIgnore = -100;
constexpr int kCompactThreads = 1024;
constexpr int kRowThreads = 1024;

// rows[0..count) = indices of the active rows in order; info = {count, any target out of range}.
// Ignored rows get loss 0 and lse 0. One block.
__global__ void ce_compact_kernel(int32_t* rows, int32_t* info, float* losses, float* lse, const int32_t* targets,
                                  int64_t N, int64_t V) {
    __shared__ int warp_total[32];
    __shared__ int base;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nwarps = blockDim.x >> 5;
    if (tid == 0) base = 0;
    int bad = 0;
    __syncthreads();
    for (int64_t c0 = 0; c0 < N; c0 += blockDim.x) {
        const int64_t i = c0 + tid;
        const int32_t t = i < N ? targets[i] : kIgnore;
        const int active = i < N && t != kIgnore;
        if (i < N && !active) {
            losses[i] = 0.0f;
            if (lse) lse[i] = 0.0f;
        }
        if (active && (t < 0 || t >= V)) bad = 1;
        // Inclusive scan of `active` within the warp, then across warps.
        int x = active;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const int y = __shfl_up_sync(0xffffffffu, x, o);
            if (lane >= o) x += y;
        }
        if (lane == 31) warp_total[warp] = x;
        __syncthreads();
        if (warp == 0) {
            int w = lane < nwarps ? warp_total[lane] : 0;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const int y = __shfl_up_sync(0xffffffffu, w, o);
                if (lane >= o) w += y;
            }
            warp_total[lane] = w;  // inclusive totals per warp
        }
        __syncthreads();
        const int before = base + (warp > 0 ? warp_total[warp - 1] : 0) + x - active;
        if (active) rows[before] = int32_t(i);
        __syncthreads();
        if (tid == 0) base += warp_total[nwarps - 1];
        __syncthreads();
    }
    bad = __syncthreads_or(bad);
    if (tid == 0) info[0] = base, info[1] = bad;
}

// dst row r = src row rows[r] (gather) or dst row rows[r] = src row r (scatter); C floats a row.
__global__ void gather_rows_kernel(float* dst, const float* src, const int32_t* rows, int64_t nr, int64_t C) {
    for (int64_t r = blockIdx.x; r < nr; r += gridDim.x) {
        const float* s = src + int64_t(rows[r]) * C;
        float* d = dst + r * C;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) d[c] = s[c];
    }
}
__global__ void scatter_rows_kernel(float* dst, const float* src, const int32_t* rows, int64_t nr, int64_t C) {
    for (int64_t r = blockIdx.x; r < nr; r += gridDim.x) {
        const float* s = src + r * C;
        float* d = dst + int64_t(rows[r]) * C;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) d[c] = s[c];
    }
}

// One block per chunk row: loss and lse of row n = rows[r]; with grads, the logits row becomes
// dlogits = grad_scale * softmax - grad_scale * onehot(target), formed as on the CPU:
// p = exp(logit - max), then p * (grad_scale / sum), then the target entry minus grad_scale.
__global__ void ce_softmax_kernel(float* logits, float* losses, float* lse, const int32_t* rows,
                                  const int32_t* targets, int64_t nr, int64_t V, float grad_scale, bool grads) {
    __shared__ float shared[32];
    for (int64_t r = blockIdx.x; r < nr; r += gridDim.x) {
        float* row = logits + r * V;
        const int64_t n = rows[r];
        const int32_t t = targets[n];
        const float target_logit = row[t];
        float mx = -INFINITY;
        for (int64_t j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, row[j]);
        mx = block_max(mx, shared);
        float sum = 0.0f;
        for (int64_t j = threadIdx.x; j < V; j += blockDim.x) sum += expf(row[j] - mx);
        sum = block_sum(sum, shared);  // (its barriers also order every read of row[t] before the writes below)
        const float row_lse = mx + logf(sum);
        if (threadIdx.x == 0) {
            losses[n] = row_lse - target_logit;
            if (lse) lse[n] = row_lse;
        }
        if (grads) {
            const float f = grad_scale / sum;
            for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
                float g = expf(row[j] - mx) * f;
                if (j == t) g -= grad_scale;
                row[j] = g;
            }
        }
        __syncthreads();
    }
}

unsigned row_blocks(int64_t n) { return unsigned(std::min<int64_t>(std::max<int64_t>(n, 1), 65535)); }

// Rows per chunk for at most N active rows: ce_logit_elems / V, a multiple of 16, at least 16.
int64_t chunk_rows(int64_t N, int64_t V) {
    const int64_t r = std::max<int64_t>(16, config().ce_logit_elems / std::max<int64_t>(V, 1) / 16 * 16);
    return std::max<int64_t>(1, std::min(r, N));
}

}  // namespace

size_t cross_entropy_workspace_bytes(int64_t N, const WeightView& head) {
    if (N <= 0) return 0;
    const int64_t V = head.rows, C = head.cols, R = chunk_rows(N, V);
    return ws_size(size_t(N) * 4) + ws_size(2 * 4) + ws_size(size_t(R * V) * 4) + 2 * ws_size(size_t(R * C) * 4) +
           matmul_workspace_bytes(R, head);
}

int64_t lm_head_cross_entropy(float* losses, float* lse, float* dx, float* dhead, const float* x,
                              const WeightView& head, const int32_t* targets, int64_t N, float grad_scale) {
    const char* op = "lm_head_cross_entropy";
    context(op);
    check_weight(head, op);
    if (dhead && head.dtype != DType::F32) fail("[cuda] {}: a trained lm_head must be F32", op);
    if (dhead && !dx) fail("[cuda] {}: dhead needs dx (both null for evaluation)", op);
    if (N <= 0) return 0;
    const int64_t V = head.rows, C = head.cols;
    const bool grads = dx != nullptr;
    cudaStream_t stream = context().stream;
    Workspace ws(op, cross_entropy_workspace_bytes(N, head));
    int32_t* rows = ws.take<int32_t>(size_t(N));
    int32_t* info = ws.take<int32_t>(2);

    launch(ce_compact_kernel, 1, kCompactThreads, 0, stream, rows, info, losses, lse, targets, N, V);
    CUDA_LAUNCH_CHECK("ce_compact_kernel");
    if (grads) CUDA_CHECK(cudaMemsetAsync(dx, 0, size_t(N * C) * sizeof(float), stream));  // ignored rows: dx = 0
    int32_t host_info[2];
    CUDA_CHECK(cudaMemcpyAsync(host_info, info, sizeof host_info, cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    if (host_info[1]) fail("[cuda] {}: a target id is outside the vocabulary [0, {})", op, V);
    const int64_t count = host_info[0];
    if (count == 0) return 0;

    const int64_t R = chunk_rows(N, V);
    float* logits = ws.take<float>(size_t(R * V));
    float* xs = ws.take<float>(size_t(R * C));
    float* dxs = ws.take<float>(size_t(R * C));
    const size_t mark = ws.mark();
    for (int64_t c0 = 0; c0 < count; c0 += R) {
        const int64_t nr = std::min(R, count - c0);
        const int32_t* crow = rows + c0;
        ws.rewind(mark);
        launch(gather_rows_kernel, row_blocks(nr), 256, 0, stream, xs, x, crow, nr, C);
        CUDA_LAUNCH_CHECK("gather_rows_kernel");
        matmul_forward_ws(ws, logits, xs, head, nullptr, nr, false);  // (nr, V)
        launch(ce_softmax_kernel, row_blocks(nr), kRowThreads, 0, stream, logits, losses, lse, crow, targets, nr, V,
                                                                      grad_scale, grads);
        CUDA_LAUNCH_CHECK("ce_softmax_kernel");
        if (!grads) continue;
        ws.rewind(mark);
        matmul_backward_input_ws(ws, dxs, logits, head, nr, false);  // dxs (nr, C) = dlogits @ head
        launch(scatter_rows_kernel, row_blocks(nr), 256, 0, stream, dx, dxs, crow, nr, C);
        CUDA_LAUNCH_CHECK("scatter_rows_kernel");
        if (dhead) {
            ws.rewind(mark);
            matmul_backward_weight_ws(ws, dhead, nullptr, logits, xs, nr, V, C);  // dhead += dlogits^T xs
        }
    }
    return count;
}

}  // namespace tuner::cuda
