#include "nn/linear.h"

#include "backend/kernels.h"
#include "models/llama.h"

namespace tuner {

void linear_forward(Device device, float* y, const float* x, const Linear& layer, int64_t N) {
    WeightView w = layer.weight->weight_view();
    const float* bias = layer.bias ? static_cast<const float*>(layer.bias->value.data) : nullptr;
    if (device == Device::CUDA) cuda::matmul_forward(y, x, w, bias, N, false);
    else cpu::matmul_forward(y, x, w, bias, N, false);
}

void linear_backward(Device device, float* dx, bool accumulate_dx, const float* dy, const float* x,
                     const Linear& layer, int64_t N) {
    const Param& W = *layer.weight;
    WeightView w = W.weight_view();
    if (dx) {
        if (device == Device::CUDA) cuda::matmul_backward_input(dx, dy, w, N, accumulate_dx);
        else cpu::matmul_backward_input(dx, dy, w, N, accumulate_dx);
    }
    if (W.trainable()) {
        float* dbias = (layer.bias && layer.bias->trainable()) ? static_cast<float*>(layer.bias->grad.data) : nullptr;
        float* dw = static_cast<float*>(W.grad.data);
        if (device == Device::CUDA) cuda::matmul_backward_weight(dw, dbias, dy, x, N, w.rows, w.cols);
        else cpu::matmul_backward_weight(dw, dbias, dy, x, N, w.rows, w.cols);
    }
}

}  // namespace tuner
