// CUDA embedding: not implemented yet; compiled in every build with nvcc so the backend never rots.
// The CPU version (backend/cpu/embedding.cpp) is the reference it will be tested against.
#include "backend/cuda/cuda_common.h"
#include "backend/kernels.h"

namespace tuner::cuda {

void embedding_forward(float*, const int32_t*, const WeightView&, int64_t) { not_implemented("embedding_forward"); }
void embedding_backward(float*, const float*, const int32_t*, int64_t, int64_t) { not_implemented("embedding_backward"); }
}  // namespace tuner::cuda
