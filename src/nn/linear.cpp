#include "nn/linear.h"

#include "backend/cuda/device_ops.h"
#include "backend/kernels.h"
#include "nn/lora.h"
#include "nn/param.h"

namespace tuner {

// The ops of one device: the kernel table's matmuls plus the adapter's elementwise steps, which
// are bit-identical on both devices (same f32 operations, same dropout masks).
namespace {
struct Ops {
    Device device;
    void matmul_forward(ActOut y, ActIn x, const WeightView& w, const float* b, int64_t N, bool acc) const {
        if (device == Device::CUDA) cuda::matmul_forward(y, x, w, b, N, acc);
        else cpu::matmul_forward(y, x, w, b, N, acc);
    }
    void matmul_backward_input(float* dx, ActIn dy, const WeightView& w, int64_t N, bool acc) const {
        if (device == Device::CUDA) cuda::matmul_backward_input(dx, dy, w, N, acc);
        else cpu::matmul_backward_input(dx, dy, w, N, acc);
    }
    void matmul_backward_weight(float* dw, float* db, ActIn dy, ActIn x, int64_t N, int64_t out,
                                int64_t in) const {
        if (device == Device::CUDA) cuda::matmul_backward_weight(dw, db, dy, x, N, out, in);
        else cpu::matmul_backward_weight(dw, db, dy, x, N, out, in);
    }
    void to_bf16(uint16_t* out, const float* x, int64_t n) const {
        if (device == Device::CUDA) cuda::to_bf16(out, x, n);
        else cpu::to_bf16(out, x, n);
    }
    // x[i] *= s (the adapter's small (N, r) products).
    void scale_inplace(float* x, int64_t n, float s) const {
        if (device == Device::CUDA) return cuda::scale_inplace(x, n, s);
#pragma omp parallel for simd schedule(static) if (n > 65536)
        for (int64_t i = 0; i < n; i++) x[i] *= s;
    }
    void dropout_forward(ActOut out, ActIn x, int64_t n, uint64_t key, float p) const {
        if (device == Device::CUDA)
            cuda::lora_dropout_forward(out, x, n, key, lora_dropout_threshold(p), 1.0f / (1.0f - p));
        else lora_dropout_forward(out, x, n, key, p);
    }
    void dropout_backward_add(float* dx, const float* g, int64_t n, uint64_t key, float p) const {
        if (device == Device::CUDA)
            cuda::lora_dropout_backward_add(dx, g, n, key, lora_dropout_threshold(p), 1.0f / (1.0f - p));
        else lora_dropout_backward_add(dx, g, n, key, p);
    }
};
}  // namespace

void linear_forward(Device device, ActOut y, ActIn x, const Linear& layer, int64_t N) {
    const Ops ops{device};
    WeightView w = layer.weight->weight_view();
    const float* bias = layer.bias ? static_cast<const float*>(layer.bias->value.data) : nullptr;
    ops.matmul_forward(y, x, w, bias, N, false);
    if (!layer.lora) return;

    const LoraAdapter& ad = *layer.lora;
    const LoraCall& call = layer.lora_call;
    const int64_t in = w.cols, r = ad.r();
    TUNER_ASSERT(call.xa && ad.A.value.shape[1] == in && ad.B.value.shape[0] == w.rows);
    ActIn xin = x;
    if (call.dropout) {
        TUNER_ASSERT(call.xdrop);
        const ActOut xdrop{call.xdrop, x.dtype};  // dropout(x) in x's dtype
        ops.dropout_forward(xdrop, x, N * in, call.dropout_key, ad.dropout);
        xin = xdrop;
    }
    ops.matmul_forward(call.xa, xin, ad.A.weight_view(), nullptr, N, false);  // (N, r)
    ops.scale_inplace(call.xa, N * r, ad.scale);
    ops.matmul_forward(y, call.xa, ad.B.weight_view(), nullptr, N, /*accumulate=*/true);
}

void linear_backward(Device device, float* dx, bool accumulate_dx, const float* dy_f32, ActIn x, const Linear& layer,
                     int64_t N) {
    const Ops ops{device};
    const Param& W = *layer.weight;
    WeightView w = W.weight_view();
    ActIn dy = dy_f32;
    if (layer.dy_bf16) {
        ops.to_bf16(layer.dy_bf16, dy_f32, N * w.rows);
        dy = ActIn(layer.dy_bf16, DType::BF16);
    }
    if (dx) ops.matmul_backward_input(dx, dy, w, N, accumulate_dx);
    if (W.trainable()) {
        float* dbias = (layer.bias && layer.bias->trainable()) ? static_cast<float*>(layer.bias->grad.data) : nullptr;
        float* dw = static_cast<float*>(W.grad.data);
        ops.matmul_backward_weight(dw, dbias, dy, x, N, w.rows, w.cols);
    }
    if (!layer.lora) return;

    const LoraAdapter& ad = *layer.lora;
    const LoraCall& call = layer.lora_call;
    const int64_t out = w.rows, in = w.cols, r = ad.r();
    TUNER_ASSERT(call.xa && call.dxa && ad.A.trainable() && ad.B.trainable());
    // dB (out, r) += dy^T xa: xa already carries the scale.
    ops.matmul_backward_weight(static_cast<float*>(ad.B.grad.data), nullptr, dy, call.xa, N, out, r);
    // dxa (N, r) = scale * dy B
    ops.matmul_backward_input(call.dxa, dy, ad.B.weight_view(), N, false);
    ops.scale_inplace(call.dxa, N * r, ad.scale);
    // dA (r, in) += dxa^T dropout(x)
    ActIn xin = x;
    if (call.dropout) {
        TUNER_ASSERT(call.xdrop);
        const ActOut xdrop{call.xdrop, x.dtype};
        ops.dropout_forward(xdrop, x, N * in, call.dropout_key, ad.dropout);  // same key: same mask
        xin = xdrop;
    }
    ops.matmul_backward_weight(static_cast<float*>(ad.A.grad.data), nullptr, call.dxa, xin, N, r, in);
    if (!dx) return;
    if (call.dropout) {
        // d(dropout(x)) = dxa A into the scratch (dropout(x) is no longer needed), then through
        // the mask into dx.
        ops.matmul_backward_input(call.xdrop, call.dxa, ad.A.weight_view(), N, false);
        ops.dropout_backward_add(dx, call.xdrop, N * in, call.dropout_key, ad.dropout);
    } else {
        ops.matmul_backward_input(dx, call.dxa, ad.A.weight_view(), N, /*accumulate=*/true);
    }
}

}  // namespace tuner
