// CPU emulator (see cuda_runtime.h): __half with IEEE binary16 conversions rounding to nearest
// even (as core/dtype.h's f32_to_f16; NaN becomes CUDA's canonical 0x7fff).
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "cuda_runtime.h"

namespace tuner::emu {
// core/dtype.h's conversions (the CPU's, so device and host agree bit for bit), except that a NaN
// becomes CUDA's canonical 0x7fff instead of keeping its payload.
inline float f16_bits_to_f32(uint16_t h) { return tuner::f16_to_f32(h); }
inline uint16_t f32_to_f16_bits(float f) { return f != f ? uint16_t(0x7fffu) : tuner::f32_to_f16(f); }
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
