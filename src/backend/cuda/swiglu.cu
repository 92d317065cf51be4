// CUDA SwiGLU: not implemented yet; compiled in every build with nvcc so the backend never rots.
// The CPU version (backend/cpu/swiglu.cpp) is the reference it will be tested against.
#include "backend/cuda/cuda_common.h"
#include "backend/kernels.h"

namespace tuner::cuda {

void swiglu_forward(float*, const float*, const float*, int64_t) { not_implemented("swiglu_forward"); }
void swiglu_backward(float*, float*, const float*, const float*, const float*, int64_t) { not_implemented("swiglu_backward"); }
}  // namespace tuner::cuda
