// CUDA residual add: not implemented yet; compiled in every build with nvcc so the backend never rots.
// The CPU version (backend/cpu/add.cpp) is the reference it will be tested against.
#include "backend/cuda/cuda_common.h"
#include "backend/kernels.h"

namespace tuner::cuda {

void add_forward(float*, const float*, const float*, int64_t) { not_implemented("add_forward"); }
void add_inplace(float*, const float*, int64_t) { not_implemented("add_inplace"); }
}  // namespace tuner::cuda
