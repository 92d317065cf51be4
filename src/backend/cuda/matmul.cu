// matmul: the `linear` layer's core, y = x W^T + bias, and its two backward products, on
// cuBLASLt.
//
// Precision (config().compute, see cuda_backend.h):
//  * F32 / TF32: x and dy stay f32. An f32 weight is used as it is; a bf16/f16/NF4/GGUF weight
//    is dequantised to f32 a tile of rows at a time into the workspace, then multiplied. F32 is
//    CUBLAS_COMPUTE_32F (the CPU backend's numbers up to summation order); TF32 is
//    CUBLAS_COMPUTE_32F_FAST_TF32 (10-bit mantissa products, f32 accumulation).
//  * BF16: an f32 x (or dy) is rounded to bf16 once per call into the workspace, a bf16 x
//    (kernels.h ActIn) is used as stored; a bf16 weight is used as stored, any other weight is
//    converted to bf16 tiles; bf16 x bf16 products with f32 accumulation (CUBLAS_COMPUTE_32F with
//    CUDA_R_16BF inputs: cuBLASLt's mixed-type GEMM, A/B bf16, C/D f32 or bf16). An f32 y is
//    written as f32; a bf16 y (ActOut) is written by the GEMM as bf16 (D = bf16, the f32
//    accumulator rounded once; accumulate: beta = 1 with C = D, so y = bf16(y + x W^T) summed in
//    f32). A bias on a bf16 y is added after the GEMM, by a kernel that widens y, adds in f32 and
//    rounds again (two roundings where the CPU has one: within a bf16 ulp, far inside the
//    GEMM's own bf16 error). The weight gradient rounds dy and an f32 x to bf16 too; a bf16 x is
//    its operand as stored.
//  * bf16 activations need BF16 compute: under F32 / TF32 a bf16 x or y throws (the model
//    stores bf16 activations only with BF16 compute, and widening them would need workspace the
//    planner does not reserve for F32 / TF32).
// NF4 and the GGUF block types always go dequantise-tile-then-GEMM (weights.cu decodes them
// bit-identically to the CPU); a fused dequantising GEMM is the next step for speed (dev/cuda/
// nf4_matmul.cu is where that starts).
//
// cuBLASLt plans (descriptors, layouts, heuristic algorithm) are cached by shape, types and
// operand alignment: creating them costs more than a small GEMM. Operand alignment is passed to
// the heuristic (MIN_ALIGNMENT prefs), so column offsets into y (the tile loop) are safe.

#include <algorithm>
#include <array>
#include <map>
#include <mutex>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/weights.h"
#include "backend/kernels.h"

namespace tuner::cuda {

namespace {

// ---- cuBLASLt plans ---------------------------------------------------------------------------

struct LtPlan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo;
};

using PlanKey = std::array<int64_t, 14>;

uint32_t pointer_alignment(const void* p) {
    const uintptr_t v = reinterpret_cast<uintptr_t>(p);
    uint32_t a = 256;
    while (a > 1 && (v % a) != 0) a >>= 1;
    return a;
}

void destroy_plan(LtPlan& p) {
    if (p.op) cublasLtMatmulDescDestroy(p.op);
    if (p.a) cublasLtMatrixLayoutDestroy(p.a);
    if (p.b) cublasLtMatrixLayoutDestroy(p.b);
    if (p.c) cublasLtMatrixLayoutDestroy(p.c);
}

// Column-major problem: D (m, n) = op(LA) (m, k) @ op(LB) (k, n) [+ D]; see gemm() for how the
// row-major operands map onto it.
LtPlan make_plan(cublasOperation_t op_a, cublasOperation_t op_b, int64_t m, int64_t n, int64_t k, int64_t lda,
                 int64_t ldb, int64_t ldc, cudaDataType_t ab, cudaDataType_t cd, bool tf32, uint32_t align_a,
                 uint32_t align_b, uint32_t align_c) {
    Context& ctx = context();
    LtPlan p;
    const cublasComputeType_t compute = tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, compute, CUDA_R_32F));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
    // Layouts describe the stored matrices (before op): rows x cols, column-major, leading dim.
    const bool ta = op_a == CUBLAS_OP_T, tb = op_b == CUBLAS_OP_T;
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, ab, uint64_t(ta ? k : m), uint64_t(ta ? m : k), lda));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, ab, uint64_t(tb ? n : k), uint64_t(tb ? k : n), ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, cd, uint64_t(m), uint64_t(n), ldc));

    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const size_t ws = ctx.lt_workspace_bytes;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a,
                                                      sizeof(align_a)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b,
                                                      sizeof(align_b)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c,
                                                      sizeof(align_c)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c,
                                                      sizeof(align_c)));
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
    const cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(ctx.lt, p.op, p.a, p.b, p.c, p.c, pref, 1, &heur, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
        destroy_plan(p);
        fail("[cuda] cuBLASLt has no algorithm for a {} GEMM with {} output m={} n={} k={} (lda {}, ldb {}, ldc {}, "
             "alignments {}/{}/{}): {}",
             ab == CUDA_R_16BF ? "bf16" : (tf32 ? "tf32" : "f32"), cd == CUDA_R_16BF ? "bf16" : "f32", m, n, k, lda,
             ldb, ldc, align_a, align_b, align_c,
             st != CUBLAS_STATUS_SUCCESS ? cublasLtGetStatusString(st) : "no result");
    }
    p.algo = heur.algo;
    return p;
}

const LtPlan& plan_for(const PlanKey& key, cublasOperation_t op_a, cublasOperation_t op_b, int64_t m, int64_t n,
                       int64_t k, int64_t lda, int64_t ldb, int64_t ldc, cudaDataType_t ab, cudaDataType_t cd,
                       bool tf32, uint32_t align_a, uint32_t align_b, uint32_t align_c) {
    static std::mutex mutex;
    static std::map<PlanKey, LtPlan> cache;
    std::lock_guard<std::mutex> lock(mutex);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
    if (cache.size() >= 4096) {  // inference with ever-changing lengths: start over
        for (auto& kv : cache) destroy_plan(kv.second);
        cache.clear();
    }
    return cache
        .emplace(key, make_plan(op_a, op_b, m, n, k, lda, ldb, ldc, ab, cd, tf32, align_a, align_b, align_c))
        .first->second;
}

// ---- small kernels --------------------------------------------------------------------------

// y (N, out) += bias (out) broadcast over rows; y f32 or bf16 (widened, added in f32, rounded).
template <typename E>
__global__ void add_bias_kernel(E* y, const float* bias, int64_t N, int64_t out) {
    const int64_t n = N * out;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        store_f32(y + i, load_f32(y + i) + bias[i % out]);
}

template <typename E>
__global__ void zero_kernel(E* c, int64_t M, int64_t N, int64_t ldc) {
    const int64_t n = M * N;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        store_f32(c + (i / N) * ldc + i % N, 0.0f);
}

// dst (C) += column sums of src (N, C) (f32, or a bf16 copy of a gradient, widened). Blocks own
// 32 columns; their 16 warps split the rows and add their partial sums in a fixed order:
// deterministic, no atomics.
constexpr int kColWarps = 16;
template <typename E>
__global__ void column_sums_add_kernel(float* dst, const E* src, int64_t N, int64_t C) {
    __shared__ float partial[kColWarps][33];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t c = int64_t(blockIdx.x) * 32 + lane;
    float acc = 0.0f;
    if (c < C)
        for (int64_t n = warp; n < N; n += kColWarps) acc += load_f32(src + n * C + c);
    partial[warp][lane] = acc;
    __syncthreads();
    if (warp == 0 && c < C) {
        float s = 0.0f;
        for (int w = 0; w < kColWarps; w++) s += partial[w][lane];
        dst[c] += s;
    }
}

// ---- tiles ------------------------------------------------------------------------------------

bool bf16_compute() { return config().compute == MatmulCompute::BF16; }
bool tf32_compute() { return config().compute == MatmulCompute::TF32; }

// True when the weight must be converted before the GEMM (not already in the compute type).
bool needs_tile(DType t) { return bf16_compute() ? t != DType::BF16 : t != DType::F32; }

// Rows of W per converted tile: config().weight_tile_elems / in, a multiple of 64 (so column
// offsets into y stay 256-byte aligned), at least 64, at most out.
int64_t tile_rows(int64_t out, int64_t in) {
    const int64_t rows = std::max<int64_t>(64, config().weight_tile_elems / std::max<int64_t>(in, 1) / 64 * 64);
    return std::min(rows, out);
}

size_t tile_bytes(int64_t out, int64_t in) { return size_t(tile_rows(out, in) * in) * (bf16_compute() ? 2 : 4); }

// Converts rows [r0, r0 + rows) of w into the compute type at tile.
void convert_tile(void* tile, const WeightView& w, int64_t r0, int64_t rows, cudaStream_t stream) {
    if (bf16_compute()) weight_rows_to_bf16(static_cast<__nv_bfloat16*>(tile), w, r0, rows, stream);
    else weight_rows_to_f32(static_cast<float*>(tile), w, r0, rows, stream);
}

// A bf16 activation needs BF16 compute (see the top of this file); other dtypes are errors.
void check_act(const char* op, const char* what, DType t) {
    check_act_dtype(t, op);
    if (t == DType::BF16 && !bf16_compute())
        fail("[cuda] {}: {} is a bf16 activation, which needs BF16 matmul compute (cuda_matmul: bf16); the compute "
             "is {} (bf16 activations are not widened into the workspace)",
             op, what, tf32_compute() ? "tf32" : "f32");
}

// x (n elements, checked by check_act) in the compute type: itself (F32/TF32 with f32 x, BF16
// with bf16 x) or a bf16 copy of an f32 x in the workspace (BF16).
const void* operand(Workspace& ws, ActIn x, int64_t n, cudaStream_t stream) {
    if (!bf16_compute() || x.bf16()) return x.data;
    __nv_bfloat16* xb = ws.take<__nv_bfloat16>(size_t(n));
    f32_to_bf16(xb, x.f32(), n, stream);
    return xb;
}

GemmType gemm_type() { return bf16_compute() ? GemmType::BF16 : GemmType::F32; }
size_t elem_bytes() { return bf16_compute() ? 2 : 4; }

}  // namespace

// ---- the GEMM -------------------------------------------------------------------------------------

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const void* A, int64_t lda, const void* B,
          int64_t ldb, ActOut C, int64_t ldc, bool accumulate, GemmType type, bool tf32, cudaStream_t stream) {
    if (M <= 0 || N <= 0) return;
    const bool c_bf16 = C.bf16();
    TUNER_ASSERT_MSG(!c_bf16 || type == GemmType::BF16, "gemm: a bf16 C needs bf16 operands");
    if (K <= 0) {  // empty product: C = C or 0
        if (!accumulate) {
            with_out(C, "gemm", [&](auto* c) {
                launch(zero_kernel<elem_t<decltype(c)>>, grid_for(M * N, 256), 256, 0, stream, c, M, N, ldc);
                CUDA_LAUNCH_CHECK("zero_kernel");
            });
        }
        return;
    }
    // Row-major C (M, N) is column-major C^T (N, M) with the same leading dimension, and
    // C^T = op(B)^T op(A)^T. A row-major stored matrix is its own transpose in column-major, so:
    //   cuBLASLt's first operand is our B, transposed iff trans_b; its second is our A,
    //   transposed iff trans_a; m = N, n = M, k = K.
    const cublasOperation_t op_a = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_b = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cudaDataType_t ab = type == GemmType::BF16 ? CUDA_R_16BF : CUDA_R_32F;
    const cudaDataType_t cd = c_bf16 ? CUDA_R_16BF : CUDA_R_32F;
    tf32 = tf32 && type == GemmType::F32;
    const uint32_t align_a = pointer_alignment(B), align_b = pointer_alignment(A), align_c = pointer_alignment(C.data);
    const PlanKey key = {M,      N,       K,       lda, ldb, ldc, trans_a, trans_b, int64_t(type), tf32,
                         align_a, align_b, align_c, c_bf16};
    const LtPlan& p = plan_for(key, op_a, op_b, N, M, K, ldb, lda, ldc, ab, cd, tf32, align_a, align_b, align_c);
    Context& ctx = context();
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    // C and D are the same matrix (beta = 1 reads it; a bf16 C is widened by cuBLASLt, the sum is
    // formed in f32 and rounded once into D).
    CUBLAS_CHECK(cublasLtMatmul(ctx.lt, p.op, &alpha, B, p.a, A, p.b, &beta, C.data, p.c, C.data, p.c, &p.algo,
                                ctx.lt_workspace, ctx.lt_workspace_bytes, stream));
}

// ---- ops inside a workspace cursor ------------------------------------------------------------------

// y (N, out) = x (N, in) @ W^T (+ bias); W (out, in).
void matmul_forward_ws(Workspace& ws, ActOut y, ActIn x, const WeightView& w, const float* bias, int64_t N,
                       bool accumulate) {
    const int64_t out = w.rows, in = w.cols;
    check_act("matmul_forward", "x", x.dtype);
    check_act("matmul_forward", "y", y.dtype);
    if (N <= 0 || out <= 0) return;
    cudaStream_t stream = context().stream;
    const void* xa = operand(ws, x, N * in, stream);
    if (!needs_tile(w.dtype)) {
        gemm(false, true, N, out, in, xa, in, w.data, in, y, out, accumulate, gemm_type(), tf32_compute(), stream);
    } else {
        // Tile of W rows -> columns [r0, r0 + rows) of y.
        const int64_t tr = tile_rows(out, in);
        void* tile = ws.take_bytes(size_t(tr * in) * elem_bytes());
        for (int64_t r0 = 0; r0 < out; r0 += tr) {
            const int64_t rows = std::min(tr, out - r0);
            convert_tile(tile, w, r0, rows, stream);
            gemm(false, true, N, rows, in, xa, in, tile, in, y.offset(r0), out, accumulate, gemm_type(),
                 tf32_compute(), stream);
        }
    }
    if (bias) {
        with_out(y, "matmul_forward", [&](auto* yp) {
            launch(add_bias_kernel<elem_t<decltype(yp)>>, grid_for(N * out, 256), 256, 0, stream, yp, bias, N, out);
            CUDA_LAUNCH_CHECK("add_bias_kernel");
        });
    }
}

// dx (N, in) = or += dy (N, out) @ W.
void matmul_backward_input_ws(Workspace& ws, float* dx, ActIn dy, const WeightView& w, int64_t N,
                              bool accumulate) {
    const int64_t out = w.rows, in = w.cols;
    check_act("matmul_backward_input", "dy", dy.dtype);
    if (N <= 0 || in <= 0) return;
    cudaStream_t stream = context().stream;
    const void* dya = operand(ws, dy, N * out, stream);
    const size_t es = elem_bytes();
    if (!needs_tile(w.dtype) || out <= 0) {  // (out = 0: an empty product, gemm zeroes dx or leaves it)
        gemm(false, false, N, in, out, dya, out, w.data, in, dx, in, accumulate, gemm_type(), tf32_compute(), stream);
        return;
    }
    // dx = sum over row tiles of dy[:, r0:r0+rows] @ W[r0:r0+rows]; the first tile honours
    // `accumulate`, later tiles add.
    const int64_t tr = tile_rows(out, in);
    void* tile = ws.take_bytes(size_t(tr * in) * es);
    for (int64_t r0 = 0; r0 < out; r0 += tr) {
        const int64_t rows = std::min(tr, out - r0);
        convert_tile(tile, w, r0, rows, stream);
        const void* dy_cols = static_cast<const uint8_t*>(dya) + size_t(r0) * es;
        gemm(false, false, N, in, rows, dy_cols, out, tile, in, dx, in, accumulate || r0 > 0, gemm_type(),
             tf32_compute(), stream);
    }
}

// dW (out, in) += dy^T (out, N) @ x (N, in); dbias (out) += column sums of dy (N, out).
void matmul_backward_weight_ws(Workspace& ws, float* dw, float* dbias, ActIn dy, ActIn x, int64_t N,
                               int64_t out, int64_t in) {
    check_act("matmul_backward_weight", "x", x.dtype);
    check_act("matmul_backward_weight", "dy", dy.dtype);
    if (N <= 0 || out <= 0) return;
    cudaStream_t stream = context().stream;
    if (in > 0) {
        const void* dya = operand(ws, dy, N * out, stream);
        const void* xa = operand(ws, x, N * in, stream);
        gemm(true, false, out, in, N, dya, out, xa, in, dw, in, /*accumulate=*/true, gemm_type(), tf32_compute(),
             stream);
    }
    if (dbias) {
        with_in(dy, "matmul_backward_weight", [&](const auto* dyp) {
            launch(column_sums_add_kernel<elem_t<decltype(dyp)>>, unsigned((out + 31) / 32), 32 * kColWarps, 0, stream,
                   dbias, dyp, N, out);
            CUDA_LAUNCH_CHECK("column_sums_add_kernel");
        });
    }
}

// ---- planning and the kernel table -------------------------------------------------------------------

// An upper bound whatever the activations' dtypes: a bf16 x or dy (bf16 compute) needs no copy, so
// its call takes less than planned; a bf16 y takes nothing extra (the GEMM writes it directly).
size_t matmul_workspace_bytes(int64_t N, const WeightView& w) {
    const int64_t out = w.rows, in = w.cols;
    if (N <= 0 || out <= 0 || in <= 0) return 0;
    const size_t tile = needs_tile(w.dtype) ? ws_size(tile_bytes(out, in)) : 0;
    if (!bf16_compute()) return tile;
    const size_t fwd = ws_size(size_t(N * in) * 2) + tile;
    const size_t bwd_in = ws_size(size_t(N * out) * 2) + tile;
    const size_t bwd_w = ws_size(size_t(N * out) * 2) + ws_size(size_t(N * in) * 2);
    return std::max({fwd, bwd_in, bwd_w});
}

void matmul_forward(ActOut y, ActIn x, const WeightView& w, const float* bias, int64_t N, bool accumulate) {
    context("matmul_forward");
    check_weight(w, "matmul_forward");
    Workspace ws("matmul_forward", matmul_workspace_bytes(N, w));
    matmul_forward_ws(ws, y, x, w, bias, N, accumulate);
}

void matmul_backward_input(float* dx, ActIn dy, const WeightView& w, int64_t N, bool accumulate) {
    context("matmul_backward_input");
    check_weight(w, "matmul_backward_input");
    Workspace ws("matmul_backward_input", matmul_workspace_bytes(N, w));
    matmul_backward_input_ws(ws, dx, dy, w, N, accumulate);
}

void matmul_backward_weight(float* dw, float* dbias, ActIn dy, ActIn x, int64_t N, int64_t out, int64_t in) {
    context("matmul_backward_weight");
    const WeightView w{dw, DType::F32, out, in};
    Workspace ws("matmul_backward_weight", matmul_workspace_bytes(N, w));
    matmul_backward_weight_ws(ws, dw, dbias, dy, x, N, out, in);
}

}  // namespace tuner::cuda
