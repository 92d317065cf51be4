#include "nn/linear.h"

#include "backend/kernels.h"
#include "nn/lora.h"
#include "nn/param.h"

namespace tuner {

// x[i] *= s (the adapter's small (N, r) products).
static void scale_inplace(float* x, int64_t n, float s) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) x[i] *= s;
}

static void check_lora_device(Device device) {
    // The adapter's elementwise steps (scale, dropout masks) are CPU loops for now.
    if (device == Device::CUDA) fail("[lora] LoRA adapters have no CUDA implementation yet (run on the CPU)");
}

void linear_forward(Device device, float* y, const float* x, const Linear& layer, int64_t N) {
    WeightView w = layer.weight->weight_view();
    const float* bias = layer.bias ? static_cast<const float*>(layer.bias->value.data) : nullptr;
    if (device == Device::CUDA) cuda::matmul_forward(y, x, w, bias, N, false);
    else cpu::matmul_forward(y, x, w, bias, N, false);
    if (!layer.lora) return;

    check_lora_device(device);
    const LoraAdapter& ad = *layer.lora;
    const LoraCall& call = layer.lora_call;
    const int64_t in = w.cols, r = ad.r();
    TUNER_ASSERT(call.xa && ad.A.value.shape[1] == in && ad.B.value.shape[0] == w.rows);
    const float* xin = x;
    if (call.dropout) {
        TUNER_ASSERT(call.xdrop);
        lora_dropout_forward(call.xdrop, x, N * in, call.dropout_key, ad.dropout);
        xin = call.xdrop;
    }
    cpu::matmul_forward(call.xa, xin, ad.A.weight_view(), nullptr, N, false);  // (N, r)
    scale_inplace(call.xa, N * r, ad.scale);
    cpu::matmul_forward(y, call.xa, ad.B.weight_view(), nullptr, N, /*accumulate=*/true);
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
    if (!layer.lora) return;

    check_lora_device(device);
    const LoraAdapter& ad = *layer.lora;
    const LoraCall& call = layer.lora_call;
    const int64_t out = w.rows, in = w.cols, r = ad.r();
    TUNER_ASSERT(call.xa && call.dxa && ad.A.trainable() && ad.B.trainable());
    // dB (out, r) += dy^T xa: xa already carries the scale.
    cpu::matmul_backward_weight(static_cast<float*>(ad.B.grad.data), nullptr, dy, call.xa, N, out, r);
    // dxa (N, r) = scale * dy B
    cpu::matmul_backward_input(call.dxa, dy, ad.B.weight_view(), N, false);
    scale_inplace(call.dxa, N * r, ad.scale);
    // dA (r, in) += dxa^T dropout(x)
    const float* xin = x;
    if (call.dropout) {
        TUNER_ASSERT(call.xdrop);
        lora_dropout_forward(call.xdrop, x, N * in, call.dropout_key, ad.dropout);  // same key: same mask
        xin = call.xdrop;
    }
    cpu::matmul_backward_weight(static_cast<float*>(ad.A.grad.data), nullptr, call.dxa, xin, N, r, in);
    if (!dx) return;
    if (call.dropout) {
        // d(dropout(x)) = dxa A into the scratch (dropout(x) is no longer needed), then through
        // the mask into dx.
        cpu::matmul_backward_input(call.xdrop, call.dxa, ad.A.weight_view(), N, false);
        lora_dropout_backward_add(dx, call.xdrop, N * in, call.dropout_key, ad.dropout);
    } else {
        cpu::matmul_backward_input(dx, call.dxa, ad.A.weight_view(), N, /*accumulate=*/true);
    }
}

}  // namespace tuner
