// embedding: token ids -> rows of a (V, C) table stored in any dtype (decoded on the device by
// weights.cu, bit-identical to the CPU decoders); backward scatters with atomicAdd.
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/weights.h"
#include "backend/kernels.h"

namespace tuner::cuda {

namespace {

// dtable (V, C) += dout (N, C) rows at ids; block n adds row n. Repeated ids meet in atomicAdd,
// so their order (and the last bits of such rows) can vary run to run, unlike the CPU
// backend's fixed row order.
__global__ void embedding_backward_kernel(float* dtable, const float* dout, const int32_t* ids, int64_t N, int64_t C) {
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        float* dst = dtable + int64_t(ids[n]) * C;
        const float* src = dout + n * C;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) atomicAdd(dst + c, src[c]);
    }
}

}  // namespace

// out (N, C) = table[ids].
void embedding_forward(float* out, const int32_t* ids, const WeightView& table, int64_t N) {
    check_weight(table, "embedding_forward");
    embedding_gather(out, ids, table, N, context("embedding_forward").stream);
}

// dtable (V, C) += scatter of dout (N, C) at ids.
void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t N, int64_t C) {
    if (N <= 0 || C <= 0) return;
    const unsigned blocks = unsigned(N < 65535 ? N : 65535);
    launch(embedding_backward_kernel, blocks, 256, 0, context("embedding_backward").stream, dtable, dout, ids, N, C);
    CUDA_LAUNCH_CHECK("embedding_backward_kernel");
}

}  // namespace tuner::cuda
