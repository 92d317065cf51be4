// CPU emulator (see cuda_runtime.h): __nv_bfloat16 with conversions rounding to nearest even (as
// core/dtype.h's f32_to_bf16; NaN becomes CUDA's canonical 0x7fff).
#pragma once

#include <cstdint>
#include <cstring>

#include "core/dtype.h"
#include "cuda_fp16.h"
#include "cuda_runtime.h"

namespace tuner::emu {
// core/dtype.h's conversions; a NaN becomes CUDA's canonical 0x7fff.
inline float bf16_bits_to_f32(uint16_t h) { return tuner::bf16_to_f32(h); }
inline uint16_t f32_to_bf16_bits(float f) { return f != f ? uint16_t(0x7fffu) : tuner::f32_to_bf16(f); }
}  // namespace tuner::emu

struct __nv_bfloat16 {
    unsigned short __x;
    __nv_bfloat16() = default;
    __nv_bfloat16(float f) : __x(tuner::emu::f32_to_bf16_bits(f)) {}
    __nv_bfloat16(double f) : __x(tuner::emu::f32_to_bf16_bits(float(f))) {}
    operator float() const { return tuner::emu::bf16_bits_to_f32(__x); }
};
struct __nv_bfloat162 {
    __nv_bfloat16 x, y;
};
using nv_bfloat16 = __nv_bfloat16;
using nv_bfloat162 = __nv_bfloat162;

inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short bits) {
    __nv_bfloat16 h;
    h.__x = bits;
    return h;
}
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline float __bfloat162float(__nv_bfloat16 h) { return float(h); }
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rz(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    return __ushort_as_bfloat16(uint16_t(bits >> 16));
}
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {__nv_bfloat16(a), __nv_bfloat16(b)}; }
inline __nv_bfloat162 __float22bfloat162_rn(float2 f) { return {__nv_bfloat16(f.x), __nv_bfloat16(f.y)}; }
inline float2 __bfloat1622float2(__nv_bfloat162 h) { return float2{float(h.x), float(h.y)}; }
inline __nv_bfloat16 __hadd(__nv_bfloat16 a, __nv_bfloat16 b) { return __nv_bfloat16(float(a) + float(b)); }
inline __nv_bfloat16 __hmul(__nv_bfloat16 a, __nv_bfloat16 b) { return __nv_bfloat16(float(a) * float(b)); }
