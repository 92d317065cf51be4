// CUDA fused lm_head + cross-entropy: not implemented yet; compiled in every build with nvcc so the backend never rots.
// The CPU version (backend/cpu/cross_entropy.cpp) is the reference it will be tested against.
#include "backend/cuda/cuda_common.h"
#include "backend/kernels.h"

namespace tuner::cuda {

int64_t lm_head_cross_entropy(float*, float*, float*, float*, const float*, const WeightView&, const int32_t*, int64_t,
                              float) {
    not_implemented("lm_head_cross_entropy");
}
}  // namespace tuner::cuda
