// CPU emulator (see cuda_runtime.h): the subset of CUDA's WMMA API (<mma.h>, nvcuda::wmma) the
// kernels use: m16n16k16 fragments of __nv_bfloat16 / __half (matrix_a, matrix_b, row_major or
// col_major) and float accumulators; fill_fragment, load_matrix_sync, store_matrix_sync and
// mma_sync.
//
// What it models, and how strictly:
//  * load / store / mma are warp-collective, like the shuffles: every lane of the warp must
//    reach the same call (else an abort naming both lanes; a lane that never arrives is a
//    deadlock report). As the CUDA programming guide words it, load_matrix_sync and mma_sync
//    "wait until all warp lanes have arrived" and then run: here the last lane to arrive runs the
//    whole warp's load or product before any lane is released. A store writes each lane's own
//    elements when that lane continues, so reading another lane's stored elements needs a
//    __syncwarp() in between (without one the emulated read sees the old value, as it may on a
//    GPU).
//  * Arguments: every lane must pass the same pointer and ldm; the pointer 256-bit aligned and
//    ldm a multiple of 16 bytes (8 bf16 / half, 4 floats), as the API requires. Violations abort.
//  * The element-to-lane map of a fragment is unspecified in CUDA. Here each fragment kind
//    (matrix_a / matrix_b x row / col, accumulator) has its own fixed pseudo-random permutation
//    of the 256 elements over 32 lanes x 8: consistent between load, mma and store, but code that
//    assumes a layout (reading x[i] as element (row, col), or reusing an accumulator's x[] as a
//    matrix_a) gets wrong numbers here. Uniform elementwise operations on x[] (scaling every
//    element, fill) are fine, as in CUDA.
//  * Numbers: products of the 16-bit inputs are exact in f32 and accumulated in f32, one
//    rounding per addition, in k order starting from c (tensor cores sum in another order with
//    their own internal precision: results agree within a few f32 ulps of the sum's magnitude).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <type_traits>

#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "cuda_runtime.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

namespace detail {

constexpr int kElems = 8;  // 256 elements over 32 lanes, as for the real m16n16k16 fragments

// Which element-to-lane map a fragment kind uses.
template <typename Use, typename Layout>
struct MapId;
template <> struct MapId<matrix_a, row_major> { static constexpr int value = 0; };
template <> struct MapId<matrix_a, col_major> { static constexpr int value = 1; };
template <> struct MapId<matrix_b, row_major> { static constexpr int value = 2; };
template <> struct MapId<matrix_b, col_major> { static constexpr int value = 3; };
template <> struct MapId<accumulator, void> { static constexpr int value = 4; };

// map(id)[lane * 8 + i] = row * 16 + col of the element lane holds in x[i] (row/col of the
// logical tile: (m, k) for matrix_a, (k, n) for matrix_b, (m, n) for the accumulator).
inline const uint8_t* map(int id) {
    struct Maps {
        uint8_t p[5][256];
        Maps() {
            for (int m = 0; m < 5; m++) {
                for (int i = 0; i < 256; i++) p[m][i] = uint8_t(i);
                uint64_t s = 0x9e3779b97f4a7c15ull * uint64_t(m + 1);
                for (int i = 255; i > 0; i--) {  // Fisher-Yates with splitmix64
                    s += 0x9e3779b97f4a7c15ull;
                    uint64_t z = s;
                    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
                    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
                    z ^= z >> 31;
                    const int j = int(z % uint64_t(i + 1));
                    const uint8_t t = p[m][i];
                    p[m][i] = p[m][j], p[m][j] = t;
                }
            }
        }
    };
    static const Maps maps;
    return maps.p[id];
}

inline int lane_id() {
    const unsigned linear = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    return int(linear & 31u);
}

inline void check_lanes(const char* name, void* const* args) {
    for (int l = 0; l < 32; l++)
        if (!args[l]) {
            char buf[160];
            std::snprintf(buf, sizeof buf, "%s: lane %d of the warp does not take part (WMMA needs all 32 lanes)",
                          name, l);
            tuner::emu::die_in_kernel(buf);
        }
}

struct MemArg {
    void* elems;  // the lane's x[]
    const void* ptr;
    unsigned ldm;
    bool col;  // column-major memory
};

template <typename T>
void check_mem(const char* name, void* const* args) {
    check_lanes(name, args);
    const MemArg& a0 = *static_cast<const MemArg*>(args[0]);
    char buf[240];
    for (int l = 1; l < 32; l++) {
        const MemArg& a = *static_cast<const MemArg*>(args[l]);
        if (a.ptr != a0.ptr || a.ldm != a0.ldm || a.col != a0.col) {
            std::snprintf(buf, sizeof buf, "%s: lane %d passes (%p, ldm %u) but lane 0 (%p, ldm %u): every lane must pass "
                          "the same pointer, ldm and layout", name, l, a.ptr, a.ldm, a0.ptr, a0.ldm);
            tuner::emu::die_in_kernel(buf);
        }
    }
    if (reinterpret_cast<uintptr_t>(a0.ptr) % 32 != 0) {
        std::snprintf(buf, sizeof buf, "%s: pointer %p is not 256-bit (32-byte) aligned", name, a0.ptr);
        tuner::emu::die_in_kernel(buf);
    }
    if ((a0.ldm * sizeof(T)) % 16 != 0 || a0.ldm < 16) {
        std::snprintf(buf, sizeof buf, "%s: ldm %u is not a multiple of %zu elements (16 bytes) of at least 16", name,
                      a0.ldm, 16 / sizeof(T));
        tuner::emu::die_in_kernel(buf);
    }
}

template <typename T>
inline size_t offset(int p, unsigned ldm, bool col) {
    const int r = p / 16, c = p % 16;
    return col ? size_t(r) + size_t(c) * ldm : size_t(r) * ldm + size_t(c);
}

template <typename T, int Map>
void load_fn(void* const* args) {
    check_mem<T>("load_matrix_sync", args);
    const uint8_t* m = map(Map);
    for (int l = 0; l < 32; l++) {
        const MemArg& a = *static_cast<const MemArg*>(args[l]);
        T* x = static_cast<T*>(a.elems);
        const T* src = static_cast<const T*>(a.ptr);
        for (int i = 0; i < kElems; i++) x[i] = src[offset<T>(m[l * kElems + i], a.ldm, a.col)];
    }
}

template <typename T>
void store_check_fn(void* const* args) {
    check_mem<T>("store_matrix_sync", args);
}

struct MmaArg {
    float* d;
    const void* a;
    const void* b;
    const float* c;
};

template <typename TA, int MapA, int MapB>
void mma_fn(void* const* args) {
    check_lanes("mma_sync", args);
    const uint8_t *ma = map(MapA), *mb = map(MapB), *mc = map(4);
    float A[256], B[256], C[256];
    for (int l = 0; l < 32; l++) {
        const MmaArg& g = *static_cast<const MmaArg*>(args[l]);
        for (int i = 0; i < kElems; i++) {
            A[ma[l * kElems + i]] = float(static_cast<const TA*>(g.a)[i]);
            B[mb[l * kElems + i]] = float(static_cast<const TA*>(g.b)[i]);
            C[mc[l * kElems + i]] = g.c[i];
        }
    }
    float D[256];
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            float acc = C[i * 16 + j];
            for (int k = 0; k < 16; k++) acc += A[i * 16 + k] * B[k * 16 + j];  // exact product, f32 sum
            D[i * 16 + j] = acc;
        }
    for (int l = 0; l < 32; l++) {  // after every read: d may alias c
        const MmaArg& g = *static_cast<const MmaArg*>(args[l]);
        for (int i = 0; i < kElems; i++) g.d[i] = D[mc[l * kElems + i]];
    }
}

}  // namespace detail

template <typename Use, int m, int n, int k, typename T, typename Layout = void>
class fragment {
    static_assert(m == 16 && n == 16 && k == 16, "the WMMA emulator has m16n16k16 fragments only");
    static_assert(std::is_same_v<Use, accumulator> ? std::is_same_v<T, float> && std::is_same_v<Layout, void>
                                                   : (std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>) &&
                                                         !std::is_same_v<Layout, void>,
                  "the WMMA emulator has bf16 / half matrix_a, matrix_b (row_major or col_major) and float accumulators");

public:
    using element_type = T;
    using storage_element_type = T;
    static constexpr int num_elements = detail::kElems;
    T x[num_elements];
};

template <typename Use, int m, int n, int k, typename T, typename Layout, typename V>
inline void fill_fragment(fragment<Use, m, n, k, T, Layout>& f, const V& v) {
    for (int i = 0; i < f.num_elements; i++) f.x[i] = T(v);
}

template <typename Use, typename T, typename Layout>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ldm) {
    static_assert(!std::is_same_v<Use, accumulator>, "an accumulator load takes a layout_t");
    detail::MemArg a{f.x, p, ldm, std::is_same_v<Layout, col_major>};
    tuner::emu::warp_collective("load_matrix_sync", 0xffffffffu, &a,
                                &detail::load_fn<T, detail::MapId<Use, Layout>::value>);
}

inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ldm,
                             layout_t layout) {
    detail::MemArg a{f.x, p, ldm, layout == mem_col_major};
    tuner::emu::warp_collective("load_matrix_sync", 0xffffffffu, &a, &detail::load_fn<float, 4>);
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm,
                              layout_t layout) {
    detail::MemArg a{const_cast<float*>(f.x), p, ldm, layout == mem_col_major};
    tuner::emu::warp_collective("store_matrix_sync", 0xffffffffu, &a, &detail::store_check_fn<float>);
    // Each lane writes its own elements as it continues (see the top of this file).
    const uint8_t* m = detail::map(4);
    const int l = detail::lane_id();
    for (int i = 0; i < f.num_elements; i++) p[detail::offset<float>(m[l * detail::kElems + i], ldm, a.col)] = f.x[i];
}

template <typename T, typename LA, typename LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, T, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c,
                     bool satf = false) {
    (void)satf;
    detail::MmaArg g{d.x, a.x, b.x, c.x};
    tuner::emu::warp_collective(
        "mma_sync", 0xffffffffu, &g,
        &detail::mma_fn<T, detail::MapId<matrix_a, LA>::value, detail::MapId<matrix_b, LB>::value>);
}

}  // namespace wmma
}  // namespace nvcuda
