// Built when nvcc was not found: every CUDA kernel entry point says so clearly.
#include "backend/kernels.h"
#include "core/error.h"

namespace tuner::cuda {

#define NO_CUDA(op) \
    fail("[cuda] {}: tuner was built without CUDA (nvcc was not found at build time, or -DTUNER_CUDA=OFF)", op)

bool available(std::string* why) {
    if (why) *why = "tuner was built without CUDA (nvcc was not found at build time, or -DTUNER_CUDA=OFF)";
    return false;
}

void matmul_forward(ActOut, ActIn, const WeightView&, const float*, int64_t, bool) { NO_CUDA("matmul_forward"); }
void matmul_backward_input(float*, ActIn, const WeightView&, int64_t, bool) { NO_CUDA("matmul_backward_input"); }
void matmul_backward_weight(float*, float*, ActIn, ActIn, int64_t, int64_t, int64_t) {
    NO_CUDA("matmul_backward_weight");
}
void embedding_forward(float*, const int32_t*, const WeightView&, int64_t) { NO_CUDA("embedding_forward"); }
void embedding_backward(float*, const float*, const int32_t*, int64_t, int64_t) { NO_CUDA("embedding_backward"); }
void rmsnorm_forward(ActOut, float*, const float*, const float*, int64_t, int64_t, float) { NO_CUDA("rmsnorm_forward"); }
void add_rmsnorm_forward(float*, ActOut, float*, const float*, const float*, const float*, int64_t, int64_t, float) {
    NO_CUDA("add_rmsnorm_forward");
}
void rmsnorm_backward(float*, float*, const float*, const float*, const float*, const float*, int64_t, int64_t, bool) {
    NO_CUDA("rmsnorm_backward");
}
void rope_forward(ActOut, const int32_t*, const float*, int64_t, int, int) { NO_CUDA("rope_forward"); }
void rope_backward(float*, const int32_t*, const float*, int64_t, int, int) { NO_CUDA("rope_backward"); }
void attention_forward(ActOut, float*, ActIn, ActIn, ActIn, const int32_t*, const AttnShape&) {
    NO_CUDA("attention_forward");
}
void attention_backward(float*, float*, float*, const float*, ActIn, ActIn, ActIn, ActIn, const float*, const int32_t*,
                        const AttnShape&) {
    NO_CUDA("attention_backward");
}
void swiglu_forward(ActOut, ActIn, ActIn, int64_t) { NO_CUDA("swiglu_forward"); }
void swiglu_backward(float*, float*, const float*, ActIn, ActIn, int64_t) { NO_CUDA("swiglu_backward"); }
void add_forward(float*, const float*, const float*, int64_t) { NO_CUDA("add_forward"); }
void add_inplace(float*, const float*, int64_t) { NO_CUDA("add_inplace"); }
void to_bf16(uint16_t*, const float*, int64_t) { NO_CUDA("to_bf16"); }
int64_t lm_head_cross_entropy(float*, float*, float*, float*, const float*, const WeightView&, const int32_t*, int64_t,
                              float) {
    NO_CUDA("lm_head_cross_entropy");
}

}  // namespace tuner::cuda
