// CPU emulator: the cuBLASLt subset (see include/cublasLt.h). Products are summed in double, so
// the result is the exact product of the operands as read, rounded once to the output type.
#include <omp.h>

#include <cstdio>
#include <string>
#include <vector>

#include "cublasLt.h"
#include "cuda_bf16.h"
#include "cuda_fp16.h"

struct cublasLtContext {
    int unused = 0;
};
struct cublasLtMatmulDescOpaque_t {
    cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
    cudaDataType_t scale = CUDA_R_32F;
    cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
};
struct cublasLtMatrixLayoutOpaque_t {
    cudaDataType_t type = CUDA_R_32F;
    uint64_t rows = 0, cols = 0;
    int64_t ld = 0;
    int32_t batch = 1;
    int64_t batch_stride = 0;
};
struct cublasLtMatmulPreferenceOpaque_t {
    uint64_t max_workspace = 0;
    uint32_t align[4] = {256, 256, 256, 256};  // A, B, C, D: cuBLASLt's defaults
};

namespace {

template <typename T>
cublasStatus_t read_attr(T* dst, const void* buf, size_t size) {
    if (!buf || size != sizeof(T)) return CUBLAS_STATUS_INVALID_VALUE;
    std::memcpy(dst, buf, sizeof(T));
    return CUBLAS_STATUS_SUCCESS;
}

size_t type_bytes(cudaDataType_t t) {
    switch (t) {
        case CUDA_R_32F: return 4;
        case CUDA_R_64F: return 8;
        case CUDA_R_16F:
        case CUDA_R_16BF: return 2;
        default: return 0;
    }
}

// The algorithm the heuristic hands out: the preference's alignments, to check at matmul time.
struct Algo {
    uint64_t magic;
    uint32_t align[4];
};
constexpr uint64_t kAlgoMagic = 0x54554e4552454d55ull;  // "TUNEREMU"

uint32_t round_tf32(uint32_t bits) {  // to nearest (ties away), 10 mantissa bits kept
    if ((bits & 0x7f800000u) == 0x7f800000u) return bits;
    return (bits + 0x1000u) & 0xffffe000u;
}

double read_elem(const void* p, cudaDataType_t t, int64_t i, cublasComputeType_t compute) {
    switch (t) {
        case CUDA_R_32F: {
            float f = static_cast<const float*>(p)[i];
            if (compute == CUBLAS_COMPUTE_32F_FAST_TF32) {
                uint32_t b;
                std::memcpy(&b, &f, 4);
                b = round_tf32(b);
                std::memcpy(&f, &b, 4);
            } else if (compute == CUBLAS_COMPUTE_32F_FAST_16BF) {
                f = float(__nv_bfloat16(f));
            } else if (compute == CUBLAS_COMPUTE_32F_FAST_16F) {
                f = float(__half(f));
            }
            return f;
        }
        case CUDA_R_64F: return static_cast<const double*>(p)[i];
        case CUDA_R_16BF: return float(static_cast<const __nv_bfloat16*>(p)[i]);
        case CUDA_R_16F: return float(static_cast<const __half*>(p)[i]);
        default: return 0.0;
    }
}

void write_elem(void* p, cudaDataType_t t, int64_t i, double v) {
    switch (t) {
        case CUDA_R_32F: static_cast<float*>(p)[i] = float(v); break;
        case CUDA_R_64F: static_cast<double*>(p)[i] = v; break;
        case CUDA_R_16BF: static_cast<__nv_bfloat16*>(p)[i] = __nv_bfloat16(float(v)); break;
        case CUDA_R_16F: static_cast<__half*>(p)[i] = __half(float(v)); break;
        default: break;
    }
}

// The problem's shape (m, n, k) from the layouts, or an error.
cublasStatus_t check_problem(const cublasLtMatmulDescOpaque_t* d, const cublasLtMatrixLayoutOpaque_t* a,
                             const cublasLtMatrixLayoutOpaque_t* b, const cublasLtMatrixLayoutOpaque_t* c,
                             const cublasLtMatrixLayoutOpaque_t* dd) {
    if (!d || !a || !b || !c || !dd) return CUBLAS_STATUS_INVALID_VALUE;
    const uint64_t m = d->ta == CUBLAS_OP_N ? a->rows : a->cols, k = d->ta == CUBLAS_OP_N ? a->cols : a->rows;
    const uint64_t kb = d->tb == CUBLAS_OP_N ? b->rows : b->cols, n = d->tb == CUBLAS_OP_N ? b->cols : b->rows;
    if (k != kb || c->rows != m || c->cols != n || dd->rows != m || dd->cols != n) return CUBLAS_STATUS_INVALID_VALUE;
    for (const auto* l : {a, b, c, dd})
        if (type_bytes(l->type) == 0 || l->ld < int64_t(std::max<uint64_t>(l->rows, 1)))
            return CUBLAS_STATUS_INVALID_VALUE;
    if (a->type != b->type || c->type != dd->type) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (d->compute == CUBLAS_COMPUTE_32F_FAST_TF32 && a->type != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (d->compute == CUBLAS_COMPUTE_64F ? a->type != CUDA_R_64F : a->type == CUDA_R_64F)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

const char* cublasLtGetStatusString(cublasStatus_t s) {
    switch (s) {
        case CUBLAS_STATUS_SUCCESS: return "success";
        case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
        case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
        case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
        case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
        case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
        default: return "an internal operation failed";
    }
}
const char* cublasLtGetStatusName(cublasStatus_t s) { return cublasLtGetStatusString(s); }

cublasStatus_t cublasLtCreate(cublasLtHandle_t* h) {
    *h = new cublasLtContext();
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute, cudaDataType_t scale) {
    if (scale != CUDA_R_32F && scale != CUDA_R_64F) return CUBLAS_STATUS_NOT_SUPPORTED;
    *desc = new cublasLtMatmulDescOpaque_t();
    (*desc)->compute = compute, (*desc)->scale = scale;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
    delete desc;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t size) {
    switch (attr) {
        case CUBLASLT_MATMUL_DESC_TRANSA: return read_attr(&desc->ta, buf, size);
        case CUBLASLT_MATMUL_DESC_TRANSB: return read_attr(&desc->tb, buf, size);
        case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE: return read_attr(&desc->compute, buf, size);
        case CUBLASLT_MATMUL_DESC_SCALE_TYPE: return read_attr(&desc->scale, buf, size);
        case CUBLASLT_MATMUL_DESC_EPILOGUE: {
            int32_t e = 0;
            if (cublasStatus_t st = read_attr(&e, buf, size)) return st;
            return e == CUBLASLT_EPILOGUE_DEFAULT ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_SUPPORTED;
        }
        default: return CUBLAS_STATUS_NOT_SUPPORTED;  // not emulated: say so rather than ignore it
    }
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType_t type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
    *layout = new cublasLtMatrixLayoutOpaque_t();
    (*layout)->type = type, (*layout)->rows = rows, (*layout)->cols = cols, (*layout)->ld = ld;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
    delete layout;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t attr,
                                                const void* buf, size_t size) {
    switch (attr) {
        case CUBLASLT_MATRIX_LAYOUT_TYPE: return read_attr(&l->type, buf, size);
        case CUBLASLT_MATRIX_LAYOUT_ROWS: return read_attr(&l->rows, buf, size);
        case CUBLASLT_MATRIX_LAYOUT_COLS: return read_attr(&l->cols, buf, size);
        case CUBLASLT_MATRIX_LAYOUT_LD: return read_attr(&l->ld, buf, size);
        case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT: return read_attr(&l->batch, buf, size);
        case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET: return read_attr(&l->batch_stride, buf, size);
        case CUBLASLT_MATRIX_LAYOUT_ORDER: {
            int32_t o = 0;
            if (cublasStatus_t st = read_attr(&o, buf, size)) return st;
            return o == CUBLASLT_ORDER_COL ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_SUPPORTED;
        }
        default: return CUBLAS_STATUS_NOT_SUPPORTED;
    }
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
    *pref = new cublasLtMatmulPreferenceOpaque_t();
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
    delete pref;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void* buf,
                                                    size_t size) {
    switch (attr) {
        case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES: return read_attr(&pref->max_workspace, buf, size);
        case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES: return read_attr(&pref->align[0], buf, size);
        case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES: return read_attr(&pref->align[1], buf, size);
        case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES: return read_attr(&pref->align[2], buf, size);
        case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: return read_attr(&pref->align[3], buf, size);
        case CUBLASLT_MATMUL_PREF_SEARCH_MODE: return CUBLAS_STATUS_SUCCESS;
        default: return CUBLAS_STATUS_NOT_SUPPORTED;
    }
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t* results, int* returned) {
    if (!handle || !pref || requested < 1 || !results || !returned) return CUBLAS_STATUS_INVALID_VALUE;
    *returned = 0;
    if (cublasStatus_t st = check_problem(desc, a, b, c, d)) return st;
    // The alignments an algorithm may assume must divide the element size's multiples.
    for (uint32_t al : pref->align)
        if (al == 0 || (al & (al - 1)) != 0) return CUBLAS_STATUS_INVALID_VALUE;
    cublasLtMatmulHeuristicResult_t r{};
    Algo algo{kAlgoMagic, {pref->align[0], pref->align[1], pref->align[2], pref->align[3]}};
    static_assert(sizeof(Algo) <= sizeof(r.algo));
    std::memcpy(&r.algo, &algo, sizeof algo);
    r.workspaceSize = 0;
    r.state = CUBLAS_STATUS_SUCCESS;
    r.wavesCount = 1.0f;
    results[0] = r;
    *returned = 1;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t a, const void* B, cublasLtMatrixLayout_t b, const void* beta,
                              const void* C, cublasLtMatrixLayout_t c, void* D, cublasLtMatrixLayout_t d,
                              const cublasLtMatmulAlgo_t* algo, void*, size_t, cudaStream_t) {
    if (!handle || !alpha || !beta || !A || !B || !D) return CUBLAS_STATUS_INVALID_VALUE;
    if (cublasStatus_t st = check_problem(desc, a, b, c, d)) return st;
    if (algo) {
        Algo al;
        std::memcpy(&al, algo, sizeof al);
        if (al.magic != kAlgoMagic) return CUBLAS_STATUS_INVALID_VALUE;
        const void* ptrs[4] = {A, B, C, D};
        for (int i = 0; i < 4; i++)
            if (ptrs[i] && reinterpret_cast<uintptr_t>(ptrs[i]) % al.align[i] != 0) {
                std::fprintf(stderr,
                             "[cuda emu] cublasLtMatmul: operand %c is %zu-byte aligned, the algorithm was chosen for "
                             "%u-byte alignment (MIN_ALIGNMENT preference)\n",
                             "ABCD"[i], size_t(reinterpret_cast<uintptr_t>(ptrs[i]) & (~reinterpret_cast<uintptr_t>(ptrs[i]) + 1)),
                             al.align[i]);
                return CUBLAS_STATUS_INVALID_VALUE;
            }
    }
    const double al = desc->scale == CUDA_R_64F ? *static_cast<const double*>(alpha) : *static_cast<const float*>(alpha);
    const double be = desc->scale == CUDA_R_64F ? *static_cast<const double*>(beta) : *static_cast<const float*>(beta);
    if (be != 0.0 && !C) return CUBLAS_STATUS_INVALID_VALUE;
    const int64_t m = int64_t(d->rows), n = int64_t(d->cols);
    const int64_t k = int64_t(desc->ta == CUBLAS_OP_N ? a->cols : a->rows);
    const bool ta = desc->ta != CUBLAS_OP_N, tb = desc->tb != CUBLAS_OP_N;
    const int32_t batches = std::max(d->batch, 1);
    for (int32_t bi = 0; bi < batches; bi++) {
        const int64_t oa = bi * a->batch_stride, ob = bi * b->batch_stride, oc = bi * c->batch_stride,
                      od = bi * d->batch_stride;
        // op(A) as m rows of k, op(B)^T as n rows of k: contiguous dot products.
        std::vector<double> ap(size_t(m * k)), bp(size_t(n * k));
        for (int64_t i = 0; i < m; i++)
            for (int64_t kk = 0; kk < k; kk++)
                ap[size_t(i * k + kk)] = read_elem(A, a->type, oa + (ta ? kk + i * a->ld : i + kk * a->ld), desc->compute);
        for (int64_t j = 0; j < n; j++)
            for (int64_t kk = 0; kk < k; kk++)
                bp[size_t(j * k + kk)] = read_elem(B, b->type, ob + (tb ? j + kk * b->ld : kk + j * b->ld), desc->compute);
#pragma omp parallel for schedule(static)
        for (int64_t j = 0; j < n; j++) {
            const double* bj = bp.data() + j * k;
            for (int64_t i = 0; i < m; i++) {
                const double* ai = ap.data() + i * k;
                double s = 0.0;
                for (int64_t kk = 0; kk < k; kk++) s += ai[kk] * bj[kk];
                double v = al * s;
                if (be != 0.0) v += be * read_elem(C, c->type, oc + i + j * c->ld, CUBLAS_COMPUTE_32F);
                write_elem(D, d->type, od + i + j * d->ld, v);
            }
        }
    }
    return CUBLAS_STATUS_SUCCESS;
}
