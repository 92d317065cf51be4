// GGUF / llama.cpp block-quantised types, byte-exact with ggml-common.h (QK_K = 256).
//
// A tensor of n elements is n / block_elems blocks stored back to back; a row of a 2-D weight
// (rows, cols) is cols / block_elems whole blocks (cols must be a multiple of block_elems).
// f16 fields are IEEE binary16, everything little-endian. Element e of a block decodes as:
//
//  Q8_0 (32 values, 34 bytes): {f16 d; i8 qs[32]}                 y[e] = qs[e] * d
//  Q4_0 (32 values, 18 bytes): {f16 d; u8 qs[16]}                 y[e] = (nib(e) - 8) * d,
//        nib(e) = qs[e] & 15 for e < 16 (low nibbles), qs[e - 16] >> 4 for e >= 16.
//  Q4_K (256 values, 144 bytes): {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]}
//        8 sub-blocks of 32, each with a 6-bit scale sc[j] and a 6-bit min m[j] packed in
//        `scales` (see q4k_scale_min). For e in chunk c = e / 64 (32 bytes qs[32c .. 32c+31]):
//        r = e % 64 < 32: q = qs[32c + r] & 15, else q = qs[32c + r - 32] >> 4; j = e / 32;
//        y[e] = (d * sc[j]) * q - dmin * m[j].
//  Q5_K (256 values, 176 bytes): {f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}
//        as Q4_K plus a fifth bit: q += 16 * ((qh[e % 32] >> (e / 32)) & 1).
//  Q6_K (256 values, 210 bytes): {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}
//        two halves h = e / 128 of 128 values; within a half, i = e % 128, p = i / 32 (0..3),
//        l = i % 32: low 4 bits from ql[64h + 32 (p & 1) + l] (low nibble for p < 2, high for
//        p >= 2), high 2 bits (qh[32h + l] >> 2p) & 3; y[e] = (d * scales[e / 16]) * (q - 32).
//
// Rounding: Q4_K / Q5_K compute d * sc[j] and dmin * m[j] in f32 and then d1 * q - m1 with ONE
// rounding (a fused multiply-add, in the scalar and the vector path alike); llama.cpp's C
// reference writes the same expression and gets it fused or not depending on its compiler's
// contraction setting, so results can differ from a given llama.cpp build by one f32 ulp.
// All other types are one or two f32 multiplies, bit-identical to llama.cpp.
//
// Quantisers (ours, simple and deterministic; they do not run llama.cpp's error search, so the
// bytes differ from llama.cpp's quantize for the same input, but they are valid blocks):
//  Q8_0: d = f16(amax / 127), q = round(x / d).                  |err| <= d / 2
//  Q4_0: d = f16(max / -8) with max the value of largest |x| (llama.cpp's convention, the
//        max maps to q = 0 exactly), q = clamp(round(x / d) + 8, 0, 15).
//        |err| <= |d| / 2, except values of the other sign beyond 7.5 |d|: |err| <= |d|.
//  Q4_K / Q5_K: per sub-block, lo = min(0, min x), hi = max x; the 6-bit min is rounded UP so
//        -dmin * m <= lo, the 6-bit scale rounded UP so the Q levels cover [lo, hi], both shared
//        f16 factors rounded up to cover the largest sub-block; q = round((x + dmin m) / (d sc)).
//        |err| <= d sc / 2 where d sc <= (hi - lo + dmin) / Q + d  (Q = 15 or 31).
//  Q6_K: per sub-block of 16, the int8 scale rounded up so 31 levels cover max |x|;
//        q = clamp(round(x / (d sc)), -32, 31).     |err| <= d sc / 2, d sc <= max|x| / 31 + d.
// (plus f32 rounding of the division: a relative 1e-6 of the block's largest |x|.)
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace tuner {

constexpr int64_t kQK8_0 = 32;
constexpr int64_t kQK4_0 = 32;
constexpr int64_t kQK_K = 256;

struct BlockQ8_0 {
    uint16_t d;
    int8_t qs[32];
};
struct BlockQ4_0 {
    uint16_t d;
    uint8_t qs[16];
};
struct BlockQ4_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qs[128];
};
struct BlockQ5_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qh[32];
    uint8_t qs[128];
};
struct BlockQ6_K {
    uint8_t ql[128];
    uint8_t qh[64];
    int8_t scales[16];
    uint16_t d;
};
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_K) == 144 &&
              sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210);

// True for Q8_0, Q4_0, Q4_K, Q5_K, Q6_K.
bool ggml_is_block_type(DType t);
int64_t ggml_block_elems(DType t);  // 32 or 256
size_t ggml_block_bytes(DType t);   // 34, 18, 144, 176, 210

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K block (llama.cpp's
// get_scale_min_k4): j < 4: sc = s[j] & 63, m = s[j + 4] & 63; j >= 4: the low 4 bits in
// s[j + 4] (sc low nibble, m high nibble), the high 2 bits in the top bits of s[j - 4] (sc) and
// s[j] (m).
void q4k_scale_min(int j, const uint8_t* scales, uint8_t* sc, uint8_t* m);
// The inverse: packs sc[8], m[8] (each < 64) into 12 bytes.
void q4k_pack_scale_min(uint8_t* scales, const uint8_t* sc, const uint8_t* m);

// out (nblocks * block_elems) = the values of nblocks consecutive blocks. AVX-512 when compiled
// for it; ggml_dequantize_scalar is the plain-C reference, bit-identical.
void ggml_dequantize(DType t, float* out, const void* blocks, int64_t nblocks);
void ggml_dequantize_scalar(DType t, float* out, const void* blocks, int64_t nblocks);

// blocks (nblocks blocks) = src (nblocks * block_elems values) quantised (see the top).
void ggml_quantize(DType t, void* blocks, const float* src, int64_t nblocks);

}  // namespace tuner
