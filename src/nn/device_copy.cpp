#include "nn/device_copy.h"

#include <cstring>

#include "backend/cuda/cuda_backend.h"

namespace tuner {

static void check_copyable(const Tensor& t) {
    TUNER_ASSERT_MSG(dtype_size(t.dtype) > 0 && t.is_contiguous(),
                     "host/device copies are for contiguous F32/BF16/F16 tensors");
}

const void* tensor_to_host(const Tensor& t, std::vector<uint8_t>& scratch) {
    if (t.device == Device::CPU) return t.data;
    check_copyable(t);
    scratch.resize(t.nbytes());
    cuda::copy_to_host(scratch.data(), t.data, t.nbytes());
    return scratch.data();
}

void tensor_from_host(const Tensor& t, const void* src) {
    check_copyable(t);
    if (t.device == Device::CPU) std::memcpy(t.data, src, t.nbytes());
    else cuda::copy_to_device(t.data, src, t.nbytes());
}

void tensor_zero(const Tensor& t) {
    check_copyable(t);
    if (t.device == Device::CPU) std::memset(t.data, 0, t.nbytes());
    else cuda::memset_device(t.data, 0, t.nbytes());
}

}  // namespace tuner
