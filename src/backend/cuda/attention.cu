// CUDA flash attention: not implemented yet; compiled in every build with nvcc so the backend never rots.
// The CPU version (backend/cpu/attention.cpp) is the reference it will be tested against.
#include "backend/cuda/cuda_common.h"
#include "backend/kernels.h"

namespace tuner::cuda {

void attention_forward(float*, float*, const float*, const float*, const float*, const int32_t*, const AttnShape&) {
    not_implemented("attention_forward");
}
void attention_backward(float*, float*, float*, const float*, const float*, const float*, const float*, const float*,
                        const float*, const int32_t*, const AttnShape&) {
    not_implemented("attention_backward");
}
}  // namespace tuner::cuda
