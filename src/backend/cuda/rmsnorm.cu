// CUDA RMSNorm: not implemented yet; compiled in every build with nvcc so the backend never rots.
// The CPU version (backend/cpu/rmsnorm.cpp) is the reference it will be tested against.
#include "backend/cuda/cuda_common.h"
#include "backend/kernels.h"

namespace tuner::cuda {

void rmsnorm_forward(float*, float*, const float*, const float*, int64_t, int64_t, float) { not_implemented("rmsnorm_forward"); }
void rmsnorm_backward(float*, float*, const float*, const float*, const float*, const float*, int64_t, int64_t) {
    not_implemented("rmsnorm_backward");
}
}  // namespace tuner::cuda
