// CUDA matmul (cuBLASLt): not implemented yet; compiled in every build with nvcc so the backend never rots.
// The CPU version (backend/cpu/matmul.cpp) is the reference it will be tested against.
#include "backend/cuda/cuda_common.h"
#include "backend/kernels.h"

namespace tuner::cuda {

void matmul_forward(float*, const float*, const WeightView&, const float*, int64_t, bool) { not_implemented("matmul_forward"); }
void matmul_backward_input(float*, const float*, const WeightView&, int64_t, bool) { not_implemented("matmul_backward_input"); }
void matmul_backward_weight(float*, float*, const float*, const float*, int64_t, int64_t, int64_t) {
    not_implemented("matmul_backward_weight");
}
}  // namespace tuner::cuda
