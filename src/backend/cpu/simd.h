// Internal to the CPU backend: a 16-lane f32 vector and the handful of operations the kernels
// need (loads with a lane mask, FMA, max, horizontal sums, exp). With AVX-512 a Vec is one zmm
// register; elsewhere it is a plain array that the compiler vectorises as well as it can. The
// kernels are written once against this interface, so the fallback is the same algorithm.
//
//   Vec acc = simd::zero();
//   for (int i = 0; i < n; i += simd::W) acc = simd::fmadd(simd::load(a + i, simd::mask_first(n - i)), b, acc);
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#if defined(__AVX512F__)
// GCC 12 warns about its own _mm512_undefined_ps() inside the intrinsics (a false positive,
// GCC bug 105593); the warning points into the intrinsic headers, so silence it there.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace tuner::cpu::simd {

constexpr int W = 16;   // lanes per Vec
using Mask = uint32_t;  // one bit per lane, lane 0 in bit 0

// Lanes [0, n), n clamped to [0, W].
inline Mask mask_first(int n) {
    n = std::clamp(n, 0, W);
    return n == W ? 0xffffu : ((1u << n) - 1u);
}
// Lanes l with lo <= l < hi.
inline Mask mask_range(int lo, int hi) { return mask_first(hi) & ~mask_first(lo); }

#if defined(__AVX512F__)

struct Vec {
    __m512 v;
};
inline Vec zero() { return {_mm512_setzero_ps()}; }
inline Vec set1(float x) { return {_mm512_set1_ps(x)}; }
inline Vec load(const float* p) { return {_mm512_loadu_ps(p)}; }
// Masked-off lanes read as 0 and are not touched in memory (safe at the end of an array).
inline Vec load(const float* p, Mask m) { return {_mm512_maskz_loadu_ps(__mmask16(m), p)}; }
inline void store(float* p, Vec a) { _mm512_storeu_ps(p, a.v); }
inline void store(float* p, Vec a, Mask m) { _mm512_mask_storeu_ps(p, __mmask16(m), a.v); }
inline Vec fmadd(Vec a, Vec b, Vec c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }  // a*b + c
inline Vec add(Vec a, Vec b) { return {_mm512_add_ps(a.v, b.v)}; }
inline Vec sub(Vec a, Vec b) { return {_mm512_sub_ps(a.v, b.v)}; }
inline Vec mul(Vec a, Vec b) { return {_mm512_mul_ps(a.v, b.v)}; }
inline Vec div(Vec a, Vec b) { return {_mm512_div_ps(a.v, b.v)}; }
inline Vec max(Vec a, Vec b) { return {_mm512_max_ps(a.v, b.v)}; }
// m ? a : b, lane by lane.
inline Vec select(Mask m, Vec a, Vec b) { return {_mm512_mask_blend_ps(__mmask16(m), b.v, a.v)}; }
inline float reduce_add(Vec a) { return _mm512_reduce_add_ps(a.v); }
inline float reduce_max(Vec a) { return _mm512_reduce_max_ps(a.v); }

// e^x with about 1 ulp of error. Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, then the
// degree-7 Taylor polynomial of e^r (truncation error r^8/8! < 1e-8 relative) and 2^n applied
// with scalef, which gives exact 0 below the denormal range and inf above FLT_MAX. exp(-inf) = 0.
inline Vec exp(Vec x) {
    // Operand order keeps NaN: max/min return the second operand when either is NaN.
    __m512 t = _mm512_max_ps(_mm512_set1_ps(-104.0f), x.v);
    t = _mm512_min_ps(_mm512_set1_ps(89.0f), t);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(t, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), t);  // exact: 9-bit constant
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return {_mm512_scalef_ps(p, n)};
}

#else  // portable fallback: same interface, plain arrays

struct Vec {
    float f[W];
};
inline Vec zero() { return Vec{}; }
inline Vec set1(float x) {
    Vec r;
    for (int l = 0; l < W; l++) r.f[l] = x;
    return r;
}
inline Vec load(const float* p) {
    Vec r;
    for (int l = 0; l < W; l++) r.f[l] = p[l];
    return r;
}
inline Vec load(const float* p, Mask m) {
    Vec r;
    for (int l = 0; l < W; l++) r.f[l] = (m >> l) & 1u ? p[l] : 0.0f;
    return r;
}
inline void store(float* p, Vec a) {
    for (int l = 0; l < W; l++) p[l] = a.f[l];
}
inline void store(float* p, Vec a, Mask m) {
    for (int l = 0; l < W; l++)
        if ((m >> l) & 1u) p[l] = a.f[l];
}
#define TUNER_SIMD_BINARY(name, expr)     \
    inline Vec name(Vec a, Vec b) {       \
        Vec r;                            \
        for (int l = 0; l < W; l++) {     \
            float x = a.f[l], y = b.f[l]; \
            r.f[l] = (expr);              \
        }                                 \
        return r;                         \
    }
TUNER_SIMD_BINARY(add, x + y)
TUNER_SIMD_BINARY(sub, x - y)
TUNER_SIMD_BINARY(mul, x* y)
TUNER_SIMD_BINARY(div, x / y)
TUNER_SIMD_BINARY(max, x > y ? x : y)
#undef TUNER_SIMD_BINARY
inline Vec fmadd(Vec a, Vec b, Vec c) {
    Vec r;
    for (int l = 0; l < W; l++) r.f[l] = std::fma(a.f[l], b.f[l], c.f[l]);
    return r;
}
inline Vec select(Mask m, Vec a, Vec b) {
    Vec r;
    for (int l = 0; l < W; l++) r.f[l] = (m >> l) & 1u ? a.f[l] : b.f[l];
    return r;
}
inline float reduce_add(Vec a) {
    float s = 0.0f;
    for (int l = 0; l < W; l++) s += a.f[l];
    return s;
}
inline float reduce_max(Vec a) {
    float s = a.f[0];
    for (int l = 1; l < W; l++) s = a.f[l] > s ? a.f[l] : s;
    return s;
}
inline Vec exp(Vec x) {
    Vec r;
    for (int l = 0; l < W; l++) r.f[l] = std::exp(x.f[l]);
    return r;
}

#endif

}  // namespace tuner::cpu::simd
