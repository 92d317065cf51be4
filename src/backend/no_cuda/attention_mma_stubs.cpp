// Built when nvcc was not found: the mma.sync attention entry points (backend/cuda/attention_mma.h)
// say so clearly; attention_mma_supports() is false with the reason.
#include "backend/cuda/attention_mma.h"
#include "core/error.h"

namespace tuner::cuda {

namespace {
constexpr const char* kNoCuda = "tuner was built without CUDA (nvcc was not found at build time, or -DTUNER_CUDA=OFF)";
}

bool attention_mma_supports(const AttnShape&, ActIn, ActIn, ActIn, ActIn, std::string* why) {
    if (why) *why = kNoCuda;
    return false;
}
size_t attention_mma_workspace_bytes(const AttnShape&) { return 0; }
void attention_mma_force_dkv_split(int) {}
void attention_mma_forward(ActOut, float*, ActIn, ActIn, ActIn, const int32_t*, const AttnShape&) {
    fail("[cuda] attention_mma_forward: {}", kNoCuda);
}
void attention_mma_backward(float*, float*, float*, const float*, ActIn, ActIn, ActIn, ActIn, const float*,
                            const int32_t*, const AttnShape&) {
    fail("[cuda] attention_mma_backward: {}", kNoCuda);
}

}  // namespace tuner::cuda
