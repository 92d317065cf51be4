// CPU emulator (see cuda_runtime.h): __half with IEEE binary16 conversions rounding to nearest
// even (as core/dtype.h's f32_to_f16; NaN becomes CUDA's canonical 0x7fff).
#pragma once

#include <cstdint>
#include <cstring>

#include "cuda_runtime.h"

namespace tuner::emu {
inline float f16_bits_to_f32(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {  // subnormal: normalise
            int e = -1;
            do {
                e++;
                mant <<= 1;
            } while ((mant & 0x400u) == 0);
            bits = sign | (uint32_t(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}
inline uint16_t f32_to_f16_bits(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    const uint16_t sign = uint16_t((bits >> 16) & 0x8000u);
    const uint32_t abs = bits & 0x7fffffffu;
    if (abs > 0x7f800000u) return 0x7fffu;                    // NaN: CUDA's canonical NaN
    if (abs >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520: inf
    if (abs < 0x38800000u) {                                   // subnormal or zero in f16
        if (abs < 0x33000000u) return sign;
        const uint32_t exp = abs >> 23, mant = (abs & 0x7fffffu) | 0x800000u, shift = 126 - exp;
        uint32_t q = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return uint16_t(sign | q);
    }
    uint32_t r = abs - ((127u - 15u) << 23);
    r += 0x0fffu + ((r >> 13) & 1u);
    return uint16_t(sign | (r >> 13));
}
}  // namespace tuner::emu

struct __half {
    unsigned short __x;
    __half() = default;
    __half(float f) : __x(tuner::emu::f32_to_f16_bits(f)) {}
    __half(double f) : __x(tuner::emu::f32_to_f16_bits(float(f))) {}
    operator float() const { return tuner::emu::f16_bits_to_f32(__x); }
};
struct __half2 {
    __half x, y;
};
using half = __half;
using half2 = __half2;

inline __half __ushort_as_half(unsigned short bits) {
    __half h;
    h.__x = bits;
    return h;
}
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline float __half2float(__half h) { return float(h); }
inline __half __float2half(float f) { return __half(f); }
inline __half __float2half_rn(float f) { return __half(f); }
inline __half2 __floats2half2_rn(float a, float b) { return __half2{__half(a), __half(b)}; }
inline float2 __half22float2(__half2 h) { return float2{float(h.x), float(h.y)}; }
// Arithmetic rounds the exact f32 result to f16 (exact for one operation: f32 carries enough bits).
inline __half __hadd(__half a, __half b) { return __half(float(a) + float(b)); }
inline __half __hsub(__half a, __half b) { return __half(float(a) - float(b)); }
inline __half __hmul(__half a, __half b) { return __half(float(a) * float(b)); }
inline __half __hdiv(__half a, __half b) { return __half(float(a) / float(b)); }
