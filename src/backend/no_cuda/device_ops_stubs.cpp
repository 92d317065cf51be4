// Built when nvcc was not found: the device helpers of backend/cuda/device_ops.h say so clearly.
#include "backend/cuda/device_ops.h"
#include "core/error.h"

namespace tuner::cuda {

#define NO_CUDA(what) \
    fail("[cuda] {}: tuner was built without CUDA (nvcc was not found at build time, or -DTUNER_CUDA=OFF)", what)

void scale_inplace(float*, int64_t, float) { NO_CUDA("scale_inplace"); }
void lora_dropout_forward(ActOut, ActIn, int64_t, uint64_t, uint32_t, float) { NO_CUDA("lora_dropout_forward"); }
void lora_dropout_backward_add(float*, const float*, int64_t, uint64_t, uint32_t, float) {
    NO_CUDA("lora_dropout_backward_add");
}
double sum_squares(const std::vector<std::pair<const float*, int64_t>>&) { NO_CUDA("sum_squares"); }
void memory_info(size_t*, size_t*) { NO_CUDA("memory_info"); }
size_t cublaslt_workspace_bytes() { return 0; }
void decode_attention(float*, const float*, const float*, const float*, int, int, int, int, int) {
    NO_CUDA("decode_attention");
}

}  // namespace tuner::cuda
