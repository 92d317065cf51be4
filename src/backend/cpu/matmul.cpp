// matmul: the `linear` layer's core, y = x W^T + bias, and its two backward products.
//
// All GEMMs go to oneDNN matmul primitives (f32). Measured on the 2-core Zen build machine at
// N=512, in=576, out=1536 (best of 10, 2 threads): oneDNN matmul ~500 GFLOP/s for all three
// products, OpenBLAS cblas_sgemm ~250, oneDNN's BLAS-like dnnl::sgemm 390-500. Creating a
// primitive costs far more than running a small one, so primitives are cached by shape.
//
// Low-precision weights (frozen: BF16/F16, NF4 and the GGUF block types) are converted to f32 a
// tile of rows at a time (quant/quant.h weight_rows_to_f32) into per-thread scratch and
// multiplied tile by tile, so a whole weight is never materialised in f32.

#include <algorithm>
#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>

#include "backend/cpu/gemm.h"
#include "backend/cpu/act_f32.h"
#include "backend/kernels.h"
#include "core/error.h"
#include "core/scratch.h"

namespace tuner::cpu {

namespace {

using dnnl::memory;

struct Engine {
    dnnl::engine engine{dnnl::engine::kind::cpu, 0};
    dnnl::stream stream{engine};
};

Engine& cpu_engine() {
    static Engine e;  // thread-safe one-time init
    return e;
}

// Everything a primitive depends on. M varies with the batch, so a training run sees a handful
// of entries per layer shape; inference with changing prompt lengths could see many, hence the cap.
using GemmKey = std::array<int64_t, 10>;

struct GemmPrimitive {
    dnnl::matmul prim;
    memory::desc a, b, c, bias;
};

std::shared_ptr<GemmPrimitive> gemm_primitive(const GemmKey& key, bool trans_a, bool trans_b, int64_t M, int64_t N,
                                              int64_t K, int64_t lda, int64_t ldb, int64_t ldc, bool accumulate,
                                              bool has_bias) {
    static std::mutex mutex;
    static std::map<GemmKey, std::shared_ptr<GemmPrimitive>> cache;
    {
        std::lock_guard<std::mutex> lock(mutex);
        auto it = cache.find(key);
        if (it != cache.end()) return it->second;
    }
    // Build outside the lock (slow); a racing builder of the same key just wastes its work.
    auto p = std::make_shared<GemmPrimitive>();
    const auto f32 = memory::data_type::f32;
    // Row-major with leading dimensions expressed as strides; a transposed operand swaps them.
    p->a = memory::desc({M, K}, f32, trans_a ? memory::dims{1, lda} : memory::dims{lda, 1});
    p->b = memory::desc({K, N}, f32, trans_b ? memory::dims{1, ldb} : memory::dims{ldb, 1});
    p->c = memory::desc({M, N}, f32, memory::dims{ldc, 1});
    dnnl::primitive_attr attr;
    if (accumulate) {
        // beta = 1: the sum post-op adds the old C inside the kernel (no separate pass).
        dnnl::post_ops ops;
        ops.append_sum(1.0f);
        attr.set_post_ops(ops);
    }
    Engine& e = cpu_engine();
    if (has_bias) {
        p->bias = memory::desc({1, N}, f32, memory::dims{N, 1});
        p->prim =
            dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(p->a, p->b, p->bias, p->c), attr, e.engine));
    } else {
        p->prim = dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(p->a, p->b, p->c), attr, e.engine));
    }
    std::lock_guard<std::mutex> lock(mutex);
    if (cache.size() >= 4096) cache.clear();
    cache.emplace(key, p);
    return p;
}

}  // namespace

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
           int64_t ldb, float* C, int64_t ldc, bool accumulate, const float* bias) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {  // empty product: C = C or 0, plus bias (oneDNN rejects zero dims)
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++)
                C[i * ldc + j] = (accumulate ? C[i * ldc + j] : 0.0f) + (bias ? bias[j] : 0.0f);
        return;
    }
    // Very unequal shapes without a transposed B (the cross-entropy's dx = dlogits @ head with
    // K = V, and dhead += dlogits^T x with K = a few rows) run 1.5x faster in oneDNN's BLAS-style
    // sgemm than in the matmul primitive (measured at R=128..160 rows, V=49152, C=576: 450 vs
    // 300 GFLOP/s); the linear-layer shapes are as fast or faster with the matmul primitive.
    if (!trans_b && !bias && (K >= 32 * M || (trans_a && 32 * K <= M))) {
        const dnnl::status st =
            dnnl::sgemm(trans_a ? 'T' : 'N', 'N', M, N, K, 1.0f, A, lda, B, ldb, accumulate ? 1.0f : 0.0f, C, ldc);
        TUNER_ASSERT_MSG(st == dnnl::status::success, "dnnl_sgemm failed");
        return;
    }
    GemmKey key = {M, N, K, lda, ldb, ldc, trans_a, trans_b, accumulate, bias != nullptr};
    auto p = gemm_primitive(key, trans_a, trans_b, M, N, K, lda, ldb, ldc, accumulate, bias != nullptr);
    Engine& e = cpu_engine();
    // Memory objects only wrap our pointers (cheap); oneDNN never writes A, B or bias.
    memory a(p->a, e.engine, const_cast<float*>(A));
    memory b(p->b, e.engine, const_cast<float*>(B));
    memory c(p->c, e.engine, C);
    if (bias) {
        memory bm(p->bias, e.engine, const_cast<float*>(bias));
        p->prim.execute(e.stream, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_BIAS, bm}, {DNNL_ARG_DST, c}});
    } else {
        p->prim.execute(e.stream, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
    }
    e.stream.wait();
}

int64_t weight_tile_rows(int64_t cols) {
    const int64_t tile_floats = int64_t(1) << 20;  // 4 MiB
    int64_t rows = tile_floats / std::max<int64_t>(cols, 1) / 16 * 16;
    return std::max<int64_t>(rows, 16);
}

// y (N, out) = x (N, in) @ W^T (+ bias); W (out, in).
void matmul_forward(ActOut y_act, ActIn x_act, const WeightView& w, const float* bias, int64_t N, bool accumulate) {
    const int64_t out = w.rows, in = w.cols;
    const F32In x_f32(x_act, N * in);
    F32Out y_f32(y_act, N * out, /*read_old=*/accumulate);
    float* y = y_f32.get();
    const float* x = x_f32.get();
    if (w.dtype == DType::F32) {
        sgemm(false, true, N, out, in, x, in, static_cast<const float*>(w.data), in, y, out, accumulate, bias);
        return;
    }
    // Tile of W rows -> columns [r0, r0+rows) of y.
    const int64_t tile_rows = std::min(weight_tile_rows(in), out);
    float* tile = scratch_f32(ScratchSlot::kWeightTile, size_t(tile_rows * in));
    for (int64_t r0 = 0; r0 < out; r0 += tile_rows) {
        const int64_t rows = std::min(tile_rows, out - r0);
        weight_rows_to_f32(tile, w, r0, rows);
        sgemm(false, true, N, rows, in, x, in, tile, in, y + r0, out, accumulate, bias ? bias + r0 : nullptr);
    }
}

// dx (N, in) = or += dy (N, out) @ W.
void matmul_backward_input(float* dx, ActIn dy_act, const WeightView& w, int64_t N, bool accumulate) {
    const int64_t out = w.rows, in = w.cols;
    const F32In dy_f32(dy_act, N * out);
    const float* dy = dy_f32.get();
    if (w.dtype == DType::F32) {
        sgemm(false, false, N, in, out, dy, out, static_cast<const float*>(w.data), in, dx, in, accumulate);
        return;
    }
    // dx = sum over row tiles of dy[:, r0:r0+rows] @ W[r0:r0+rows]; the first tile honours
    // `accumulate`, later tiles add.
    const int64_t tile_rows = std::min(weight_tile_rows(in), out);
    float* tile = scratch_f32(ScratchSlot::kWeightTile, size_t(tile_rows * in));
    for (int64_t r0 = 0; r0 < out; r0 += tile_rows) {
        const int64_t rows = std::min(tile_rows, out - r0);
        weight_rows_to_f32(tile, w, r0, rows);
        sgemm(false, false, N, in, rows, dy + r0, out, tile, in, dx, in, accumulate || r0 > 0);
    }
}

// dW (out, in) += dy^T (out, N) @ x (N, in); dbias (out) += column sums of dy (N, out).
void matmul_backward_weight(float* dw, float* dbias, ActIn dy_act, ActIn x_act, int64_t N, int64_t out, int64_t in) {
    const F32In x_f32(x_act, N * in), dy_f32(dy_act, N * out);
    const float *x = x_f32.get(), *dy = dy_f32.get();
    sgemm(true, false, out, in, N, dy, out, x, in, dw, in, /*accumulate=*/true);
    if (!dbias) return;
    // Column sums: each thread owns a block of columns and walks all rows (no race, fixed order).
    constexpr int64_t kCols = 256;
    const int64_t nblocks = (out + kCols - 1) / kCols;
#pragma omp parallel for schedule(static) if (N * out > 65536)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        const int64_t c0 = blk * kCols, nc = std::min(kCols, out - c0);
        alignas(64) float acc[kCols] = {};
        for (int64_t n = 0; n < N; n++) {
            const float* row = dy + n * out + c0;
#pragma omp simd
            for (int64_t c = 0; c < nc; c++) acc[c] += row[c];
        }
        for (int64_t c = 0; c < nc; c++) dbias[c0 + c] += acc[c];
    }
}

}  // namespace tuner::cpu
