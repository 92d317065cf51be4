// GGUF block types: decoders (scalar and AVX-512) and simple quantisers. Layouts in ggml_blocks.h.

#include "quant/ggml_blocks.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"

#if defined(__AVX512F__)
// GCC 12 reports its own _mm512_undefined_* placeholders inside the intrinsics as uninitialised.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define TUNER_GGML_AVX512 1
#endif

namespace tuner {

bool ggml_is_block_type(DType t) {
    return t == DType::Q8_0 || t == DType::Q4_0 || t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K;
}

int64_t ggml_block_elems(DType t) {
    switch (t) {
        case DType::Q8_0: return kQK8_0;
        case DType::Q4_0: return kQK4_0;
        case DType::Q4_K:
        case DType::Q5_K:
        case DType::Q6_K: return kQK_K;
        default: break;
    }
    TUNER_ASSERT_MSG(false, "not a GGUF block type");
    return 0;
}

size_t ggml_block_bytes(DType t) {
    switch (t) {
        case DType::Q8_0: return sizeof(BlockQ8_0);
        case DType::Q4_0: return sizeof(BlockQ4_0);
        case DType::Q4_K: return sizeof(BlockQ4_K);
        case DType::Q5_K: return sizeof(BlockQ5_K);
        case DType::Q6_K: return sizeof(BlockQ6_K);
        default: break;
    }
    TUNER_ASSERT_MSG(false, "not a GGUF block type");
    return 0;
}

void q4k_scale_min(int j, const uint8_t* s, uint8_t* sc, uint8_t* m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = uint8_t((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4));
        *m = uint8_t((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

void q4k_pack_scale_min(uint8_t* s, const uint8_t* sc, const uint8_t* m) {
    std::memset(s, 0, 12);
    for (int j = 0; j < 8; j++) {
        TUNER_ASSERT(sc[j] < 64 && m[j] < 64);
        if (j < 4) {
            s[j] = sc[j];
            s[j + 4] = m[j];
        } else {
            s[j + 4] = uint8_t((sc[j] & 15) | ((m[j] & 15) << 4));
            s[j - 4] |= uint8_t((sc[j] >> 4) << 6);
            s[j] |= uint8_t((m[j] >> 4) << 6);
        }
    }
}

namespace {

// ---- scalar decoders ---------------------------------------------------------------------------

void dequant_q8_0(float* y, const BlockQ8_0* b, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += kQK8_0) {
        const float d = f16_to_f32(b[i].d);
        for (int e = 0; e < 32; e++) y[e] = float(b[i].qs[e]) * d;
    }
}

void dequant_q4_0(float* y, const BlockQ4_0* b, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += kQK4_0) {
        const float d = f16_to_f32(b[i].d);
        for (int e = 0; e < 16; e++) {
            y[e] = float((b[i].qs[e] & 15) - 8) * d;
            y[e + 16] = float((b[i].qs[e] >> 4) - 8) * d;
        }
    }
}

// Per sub-block factors of a Q4_K / Q5_K block: d1 = d * sc, m1 = dmin * m (f32 products).
struct KFactors {
    float d1[8], m1[8];
};
KFactors k_factors(uint16_t d16, uint16_t dmin16, const uint8_t* scales) {
    KFactors f;
    const float d = f16_to_f32(d16), dmin = f16_to_f32(dmin16);
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        q4k_scale_min(j, scales, &sc, &m);
        f.d1[j] = d * float(sc);
        f.m1[j] = dmin * float(m);
    }
    return f;
}

void dequant_q4_k(float* y, const BlockQ4_K* b, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += kQK_K) {
        const KFactors f = k_factors(b[i].d, b[i].dmin, b[i].scales);
        for (int c = 0; c < 4; c++) {
            const uint8_t* q = b[i].qs + 32 * c;
            for (int l = 0; l < 32; l++) {
                y[64 * c + l] = std::fma(f.d1[2 * c], float(q[l] & 15), -f.m1[2 * c]);
                y[64 * c + 32 + l] = std::fma(f.d1[2 * c + 1], float(q[l] >> 4), -f.m1[2 * c + 1]);
            }
        }
    }
}

void dequant_q5_k(float* y, const BlockQ5_K* b, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += kQK_K) {
        const KFactors f = k_factors(b[i].d, b[i].dmin, b[i].scales);
        for (int c = 0; c < 4; c++) {
            const uint8_t* q = b[i].qs + 32 * c;
            for (int l = 0; l < 32; l++) {
                const int lo = (q[l] & 15) | (((b[i].qh[l] >> (2 * c)) & 1) << 4);
                const int hi = (q[l] >> 4) | (((b[i].qh[l] >> (2 * c + 1)) & 1) << 4);
                y[64 * c + l] = std::fma(f.d1[2 * c], float(lo), -f.m1[2 * c]);
                y[64 * c + 32 + l] = std::fma(f.d1[2 * c + 1], float(hi), -f.m1[2 * c + 1]);
            }
        }
    }
}

void dequant_q6_k(float* y, const BlockQ6_K* b, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += kQK_K) {
        const float d = f16_to_f32(b[i].d);
        for (int h = 0; h < 2; h++) {
            const uint8_t* ql = b[i].ql + 64 * h;
            const uint8_t* qh = b[i].qh + 32 * h;
            float* yh = y + 128 * h;
            for (int l = 0; l < 32; l++) {
                const int q0 = ((ql[l] & 15) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q1 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q2 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q3 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                for (int p = 0; p < 4; p++) {
                    const int e = 32 * p + l;  // index within the half
                    const float ds = d * float(b[i].scales[(128 * h + e) / 16]);
                    const int q = p == 0 ? q0 : p == 1 ? q1 : p == 2 ? q2 : q3;
                    yh[e] = ds * float(q);
                }
            }
        }
    }
}

#if defined(TUNER_GGML_AVX512)
// ---- AVX-512 decoders (same arithmetic as the scalar ones, so bit-identical) --------------------

inline __m512 u8x16_to_ps(const uint8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

void dequant_q8_0_avx512(float* y, const BlockQ8_0* b, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += kQK8_0) {
        const __m512 d = _mm512_set1_ps(f16_to_f32(b[i].d));
        for (int h = 0; h < 2; h++) {
            const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs + 16 * h));
            _mm512_storeu_ps(y + 16 * h, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), d));
        }
    }
}

void dequant_q4_0_avx512(float* y, const BlockQ4_0* b, int64_t nb) {
    const __m512i mask = _mm512_set1_epi32(15), eight = _mm512_set1_epi32(8);
    for (int64_t i = 0; i < nb; i++, y += kQK4_0) {
        const __m512 d = _mm512_set1_ps(f16_to_f32(b[i].d));
        const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs)));
        const __m512i lo = _mm512_sub_epi32(_mm512_and_si512(q, mask), eight);
        const __m512i hi = _mm512_sub_epi32(_mm512_srli_epi32(q, 4), eight);
        _mm512_storeu_ps(y, _mm512_mul_ps(_mm512_cvtepi32_ps(lo), d));
        _mm512_storeu_ps(y + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(hi), d));
    }
}

// Q4_K and Q5_K: qh == nullptr for Q4_K.
void dequant_k45_avx512(float* y, uint16_t d16, uint16_t dmin16, const uint8_t* scales, const uint8_t* qs,
                        const uint8_t* qh) {
    const KFactors f = k_factors(d16, dmin16, scales);
    const __m512i mask = _mm512_set1_epi32(15), one = _mm512_set1_epi32(1);
    for (int c = 0; c < 4; c++) {
        const __m512 d_lo = _mm512_set1_ps(f.d1[2 * c]), m_lo = _mm512_set1_ps(f.m1[2 * c]);
        const __m512 d_hi = _mm512_set1_ps(f.d1[2 * c + 1]), m_hi = _mm512_set1_ps(f.m1[2 * c + 1]);
        for (int h = 0; h < 2; h++) {  // 16 bytes at a time: elements 64c + 16h + (0..15) and +32
            const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs + 32 * c + 16 * h)));
            __m512i lo = _mm512_and_si512(q, mask), hi = _mm512_srli_epi32(q, 4);
            if (qh) {
                const __m512i bits =
                    _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qh + 16 * h)));
                lo = _mm512_or_si512(lo, _mm512_slli_epi32(_mm512_and_si512(_mm512_srlv_epi32(bits, _mm512_set1_epi32(2 * c)), one), 4));
                hi = _mm512_or_si512(hi,
                                     _mm512_slli_epi32(_mm512_and_si512(_mm512_srlv_epi32(bits, _mm512_set1_epi32(2 * c + 1)), one), 4));
            }
            _mm512_storeu_ps(y + 64 * c + 16 * h, _mm512_fmsub_ps(d_lo, _mm512_cvtepi32_ps(lo), m_lo));
            _mm512_storeu_ps(y + 64 * c + 32 + 16 * h, _mm512_fmsub_ps(d_hi, _mm512_cvtepi32_ps(hi), m_hi));
        }
    }
}

void dequant_q6_k_avx512(float* y, const BlockQ6_K* b, int64_t nb) {
    const __m512i mask = _mm512_set1_epi32(15), three = _mm512_set1_epi32(3), bias = _mm512_set1_epi32(32);
    for (int64_t i = 0; i < nb; i++, y += kQK_K) {
        const float d = f16_to_f32(b[i].d);
        for (int h = 0; h < 2; h++) {
            for (int l0 = 0; l0 < 32; l0 += 16) {
                const __m512i qh = _mm512_cvtepu8_epi32(
                    _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qh + 32 * h + l0)));
                for (int p = 0; p < 4; p++) {
                    const __m512i ql = _mm512_cvtepu8_epi32(
                        _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].ql + 64 * h + 32 * (p & 1) + l0)));
                    const __m512i lo4 = p < 2 ? _mm512_and_si512(ql, mask) : _mm512_srli_epi32(ql, 4);
                    const __m512i hi2 = _mm512_and_si512(_mm512_srlv_epi32(qh, _mm512_set1_epi32(2 * p)), three);
                    const __m512i q = _mm512_sub_epi32(_mm512_or_si512(lo4, _mm512_slli_epi32(hi2, 4)), bias);
                    const int e = 128 * h + 32 * p + l0;  // 16 elements e..e+15 share one scale
                    const __m512 ds = _mm512_set1_ps(d * float(b[i].scales[e / 16]));
                    _mm512_storeu_ps(y + e, _mm512_mul_ps(ds, _mm512_cvtepi32_ps(q)));
                }
            }
        }
    }
}
#endif

// ---- quantisers --------------------------------------------------------------------------------

// The smallest f16 whose value times `levels` is >= target (target >= 0, finite).
uint16_t f16_covering(float target, float levels) {
    uint16_t h = f32_to_f16(target / levels);
    while (double(f16_to_f32(h)) * levels < double(target) && h < 0x7bffu) h++;
    return h;
}

// Smallest integer k in [0, kmax] with unit * k >= need (need >= 0); kmax if none.
int ceil_units(double need, double unit, int kmax) {
    if (unit <= 0.0 || need <= 0.0) return 0;
    int k = int(std::min<double>(kmax, std::ceil(need / unit)));
    while (k < kmax && unit * k < need) k++;
    return k;
}

inline int round_clamp(float v, int lo, int hi) { return std::clamp(int(std::lrint(v)), lo, hi); }

void quant_q8_0(BlockQ8_0* b, const float* x, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += kQK8_0) {
        float amax = 0.0f;
        for (int e = 0; e < 32; e++) amax = std::max(amax, std::fabs(x[e]));
        b[i].d = f32_to_f16(amax / 127.0f);
        const float d = f16_to_f32(b[i].d), id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int e = 0; e < 32; e++) b[i].qs[e] = int8_t(round_clamp(x[e] * id, -127, 127));
    }
}

void quant_q4_0(BlockQ4_0* b, const float* x, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += kQK4_0) {
        float amax = 0.0f, max = 0.0f;
        for (int e = 0; e < 32; e++)
            if (std::fabs(x[e]) > amax) amax = std::fabs(x[e]), max = x[e];
        b[i].d = f32_to_f16(max / -8.0f);
        const float d = f16_to_f32(b[i].d), id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int e = 0; e < 16; e++) {
            const int q0 = round_clamp(x[e] * id, -8, 7) + 8, q1 = round_clamp(x[e + 16] * id, -8, 7) + 8;
            b[i].qs[e] = uint8_t(q0 | (q1 << 4));
        }
    }
}

// Q4_K / Q5_K (levels = 15 / 31): fills d, dmin, scales and the level of every value in L.
void quant_k45_block(const float* x, int levels, uint16_t* d16, uint16_t* dmin16, uint8_t* scales, uint8_t* L) {
    float lo[8], hi[8];
    float max_min = 0.0f;
    for (int j = 0; j < 8; j++) {
        lo[j] = 0.0f, hi[j] = -INFINITY;
        for (int l = 0; l < 32; l++) lo[j] = std::min(lo[j], x[32 * j + l]), hi[j] = std::max(hi[j], x[32 * j + l]);
        max_min = std::max(max_min, -lo[j]);
    }
    // Mins first (rounded up, so -m1 <= lo), then scales that cover [-m1, hi] with the actual m1.
    *dmin16 = f16_covering(max_min, 63.0f);
    const float dmin = f16_to_f32(*dmin16);
    uint8_t ls[8], lm[8];
    float m1[8], need[8], max_need = 0.0f;
    for (int j = 0; j < 8; j++) {
        lm[j] = uint8_t(ceil_units(-double(lo[j]), dmin, 63));
        m1[j] = dmin * float(lm[j]);
        need[j] = std::max(0.0f, (hi[j] + m1[j]) / float(levels));
        max_need = std::max(max_need, need[j]);
    }
    *d16 = f16_covering(max_need, 63.0f);
    const float d = f16_to_f32(*d16);
    for (int j = 0; j < 8; j++) {
        ls[j] = uint8_t(ceil_units(double(hi[j]) + m1[j], double(d) * levels, 63));
        const float d1 = d * float(ls[j]);
        const float inv = d1 > 0.0f ? 1.0f / d1 : 0.0f;
        for (int l = 0; l < 32; l++) L[32 * j + l] = uint8_t(round_clamp((x[32 * j + l] + m1[j]) * inv, 0, levels));
    }
    q4k_pack_scale_min(scales, ls, lm);
}

void quant_q4_k(BlockQ4_K* b, const float* x, int64_t nb) {
    uint8_t L[kQK_K];
    for (int64_t i = 0; i < nb; i++, x += kQK_K) {
        quant_k45_block(x, 15, &b[i].d, &b[i].dmin, b[i].scales, L);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) b[i].qs[32 * c + l] = uint8_t(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
    }
}

void quant_q5_k(BlockQ5_K* b, const float* x, int64_t nb) {
    uint8_t L[kQK_K];
    for (int64_t i = 0; i < nb; i++, x += kQK_K) {
        quant_k45_block(x, 31, &b[i].d, &b[i].dmin, b[i].scales, L);
        std::memset(b[i].qh, 0, 32);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) {
                const int a = L[64 * c + l], z = L[64 * c + 32 + l];
                b[i].qs[32 * c + l] = uint8_t((a & 15) | ((z & 15) << 4));
                b[i].qh[l] |= uint8_t(((a >> 4) << (2 * c)) | ((z >> 4) << (2 * c + 1)));
            }
    }
}

void quant_q6_k(BlockQ6_K* b, const float* x, int64_t nb) {
    uint8_t L[kQK_K];
    for (int64_t i = 0; i < nb; i++, x += kQK_K) {
        float amax[16], max_need = 0.0f;
        for (int j = 0; j < 16; j++) {
            amax[j] = 0.0f;
            for (int l = 0; l < 16; l++) amax[j] = std::max(amax[j], std::fabs(x[16 * j + l]));
            max_need = std::max(max_need, amax[j] / 31.0f);
        }
        b[i].d = f16_covering(max_need, 127.0f);
        const float d = f16_to_f32(b[i].d);
        for (int j = 0; j < 16; j++) {
            const int sc = ceil_units(amax[j], double(d) * 31.0, 127);
            b[i].scales[j] = int8_t(sc);
            const float ds = d * float(sc), inv = ds > 0.0f ? 1.0f / ds : 0.0f;
            for (int l = 0; l < 16; l++) L[16 * j + l] = uint8_t(round_clamp(x[16 * j + l] * inv, -32, 31) + 32);
        }
        for (int h = 0; h < 2; h++)
            for (int l = 0; l < 32; l++) {
                const uint8_t* q = L + 128 * h;
                b[i].ql[64 * h + l] = uint8_t((q[l] & 15) | ((q[l + 64] & 15) << 4));
                b[i].ql[64 * h + 32 + l] = uint8_t((q[l + 32] & 15) | ((q[l + 96] & 15) << 4));
                b[i].qh[32 * h + l] =
                    uint8_t((q[l] >> 4) | ((q[l + 32] >> 4) << 2) | ((q[l + 64] >> 4) << 4) | ((q[l + 96] >> 4) << 6));
            }
    }
}

}  // namespace

void ggml_dequantize_scalar(DType t, float* out, const void* blocks, int64_t nb) {
    switch (t) {
        case DType::Q8_0: return dequant_q8_0(out, static_cast<const BlockQ8_0*>(blocks), nb);
        case DType::Q4_0: return dequant_q4_0(out, static_cast<const BlockQ4_0*>(blocks), nb);
        case DType::Q4_K: return dequant_q4_k(out, static_cast<const BlockQ4_K*>(blocks), nb);
        case DType::Q5_K: return dequant_q5_k(out, static_cast<const BlockQ5_K*>(blocks), nb);
        case DType::Q6_K: return dequant_q6_k(out, static_cast<const BlockQ6_K*>(blocks), nb);
        default: break;
    }
    TUNER_ASSERT_MSG(false, "not a GGUF block type");
}

void ggml_dequantize(DType t, float* out, const void* blocks, int64_t nb) {
#if defined(TUNER_GGML_AVX512)
    switch (t) {
        case DType::Q8_0: return dequant_q8_0_avx512(out, static_cast<const BlockQ8_0*>(blocks), nb);
        case DType::Q4_0: return dequant_q4_0_avx512(out, static_cast<const BlockQ4_0*>(blocks), nb);
        case DType::Q4_K: {
            const BlockQ4_K* b = static_cast<const BlockQ4_K*>(blocks);
            for (int64_t i = 0; i < nb; i++) dequant_k45_avx512(out + i * kQK_K, b[i].d, b[i].dmin, b[i].scales, b[i].qs, nullptr);
            return;
        }
        case DType::Q5_K: {
            const BlockQ5_K* b = static_cast<const BlockQ5_K*>(blocks);
            for (int64_t i = 0; i < nb; i++) dequant_k45_avx512(out + i * kQK_K, b[i].d, b[i].dmin, b[i].scales, b[i].qs, b[i].qh);
            return;
        }
        case DType::Q6_K: return dequant_q6_k_avx512(out, static_cast<const BlockQ6_K*>(blocks), nb);
        default: break;
    }
#endif
    ggml_dequantize_scalar(t, out, blocks, nb);
}

void ggml_quantize(DType t, void* blocks, const float* src, int64_t nb) {
    switch (t) {
        case DType::Q8_0: return quant_q8_0(static_cast<BlockQ8_0*>(blocks), src, nb);
        case DType::Q4_0: return quant_q4_0(static_cast<BlockQ4_0*>(blocks), src, nb);
        case DType::Q4_K: return quant_q4_k(static_cast<BlockQ4_K*>(blocks), src, nb);
        case DType::Q5_K: return quant_q5_k(static_cast<BlockQ5_K*>(blocks), src, nb);
        case DType::Q6_K: return quant_q6_k(static_cast<BlockQ6_K*>(blocks), src, nb);
        default: break;
    }
    TUNER_ASSERT_MSG(false, "not a GGUF block type");
}

}  // namespace tuner
