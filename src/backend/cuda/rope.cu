// CUDA RoPE: not implemented yet; compiled in every build with nvcc so the backend never rots.
// The CPU version (backend/cpu/rope.cpp) is the reference it will be tested against.
#include "backend/cuda/cuda_common.h"
#include "backend/kernels.h"

namespace tuner::cuda {

void rope_forward(float*, const int32_t*, const float*, int64_t, int, int) { not_implemented("rope_forward"); }
void rope_backward(float*, const int32_t*, const float*, int64_t, int, int) { not_implemented("rope_backward"); }
}  // namespace tuner::cuda
