// NF4: bitsandbytes' 4-bit NormalFloat (QLoRA, Dettmers et al. 2023), as frozen base weights.
//
// The format, exactly as bitsandbytes quantize_4bit(quant_type="nf4", blocksize=64) defines it:
//  * The tensor is flattened (row-major) and cut into blocks of 64 consecutive values.
//  * Each block keeps absmax = max |x| (f32) and stores every x as the index of the nearest of
//    16 code values (kNF4Code: quantiles of N(0, 1) scaled to [-1, 1], with exact -1, 0 and 1)
//    to x / absmax. Nearest means: index = number of thresholds m_i (the midpoints
//    (c_i + c_{i+1}) / 2, as the f32 literals of bitsandbytes' dQuantizeNF4) with
//    x * (1 / absmax) > m_i, which is its decision tree (ties go to the lower code).
//    value = kNF4Code[index] * absmax.
//  * Two indices per byte, the FIRST value in the HIGH nibble: byte i holds elements 2i (bits
//    7..4) and 2i+1 (bits 3..0), as bitsandbytes packs them.
//  * Optional double quantisation (bitsandbytes compress_statistics=True): offset = mean of all
//    block absmax values; the values (absmax - offset) are quantised 8-bit in blocks of 256
//    with their own f32 absmax ("absmax2") to bitsandbytes' signed dynamic code
//    (create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)), nearest code value
//    (ties to the lower code; bitsandbytes' binary search in dQuantize picks the nearest too,
//    up to how it breaks exact ties). The mean is taken in double here (torch sums in f32). absmax is recovered as f32(code8[q] * absmax2) + offset, two
//    f32 roundings as in bitsandbytes (dequantize_blockwise, then += offset).
//    Saves 3.5 bytes per 64 values (0.5 -> ~0.127 bits per value of scale overhead).
//
// In-memory layout of an NF4 tensor of n elements (n a multiple of 64, nb = n / 64 blocks,
// nb2 = ceil(nb / 256)), one contiguous buffer, offsets in bytes:
//   [0, 16)                 Nf4Header {u32 magic "NF4\0", u32 flags (bit 0: double quant), i64 n}
//   [16, 16 + n/2)          packed 4-bit codes (high nibble first, see above)
//   then, without double quantisation:
//     f32 absmax[nb]
//   or, with double quantisation:
//     f32 offset, f32 absmax2[nb2], u8 qabsmax[nb]
// Total: nf4_nbytes(n, double_quant). Every f32 array starts at a multiple of 4 bytes from the
// buffer start (n/2 is a multiple of 32). Little-endian, like every file format we read.
//
// Usage:
//   std::vector<uint8_t> buf(nf4_nbytes(rows * cols, true));
//   nf4_quantize(buf.data(), w, rows * cols, /*double_quant=*/true);
//   nf4_dequantize(tile, buf.data(), r0 * cols, nrows * cols);   // e0, count multiples of 64
#pragma once

#include <cstddef>
#include <cstdint>

namespace tuner {

constexpr int64_t kNF4Block = 64;     // values per absmax
constexpr int64_t kNF4DQBlock = 256;  // absmax values per absmax2 (double quantisation)
constexpr uint32_t kNF4Magic = 0x0034464Eu;  // "NF4\0" little-endian
constexpr uint32_t kNF4FlagDoubleQuant = 1u;

// bitsandbytes' NF4 code book (get_4bit_type("nf4")), index 0..15, ascending.
extern const float kNF4Code[16];
// bitsandbytes' signed 8-bit dynamic code (create_dynamic_map()), 256 values ascending from
// -0.99297 to 1.0, with 0 at index 127. Generated with bitsandbytes' formula on torch 1.13 CPU
// (torch's float32 linspace decides the last bit of some entries; other torch versions may
// differ by one ulp in a few entries; bitsandbytes stores the map it used with the weights).
extern const float kNF4DynamicCode[256];

struct Nf4Header {
    uint32_t magic;
    uint32_t flags;
    int64_t n;
};
static_assert(sizeof(Nf4Header) == 16);

// Bytes of an NF4 tensor of n elements (n % 64 == 0).
size_t nf4_nbytes(int64_t n, bool double_quant);
// Number of elements / double-quantisation flag recorded in the header (asserts the magic).
int64_t nf4_numel(const void* src);
bool nf4_double_quant(const void* src);

// ---- quantisation ----------------------------------------------------------------------------
// Whole tensor: src (n) f32 -> dst (nf4_nbytes(n, double_quant) bytes). Parallel inside.
void nf4_quantize(void* dst, const float* src, int64_t n, bool double_quant);

// The same in pieces, for converting a weight a few rows at a time without an f32 copy of it:
//   nf4_init(dst, n, dq);
//   for each range: nf4_quantize_range(dst, rows_f32, e0, count, absmax + e0 / 64);
//   nf4_store_absmax(dst, absmax);    // absmax: nb floats gathered by the caller
// nf4_quantize_range writes the codes of elements [e0, e0 + count) (e0, count multiples of 64)
// from src (count values) and their block absmax values to absmax_out (count / 64 floats).
void nf4_init(void* dst, int64_t n, bool double_quant);
void nf4_quantize_range(void* dst, const float* src, int64_t e0, int64_t count, float* absmax_out);
// Stores all nb block absmax values: as f32, or double-quantised when the header says so.
void nf4_store_absmax(void* dst, const float* absmax);

// ---- dequantisation --------------------------------------------------------------------------
// out (count) = elements [e0, e0 + count) of the tensor; e0 and count multiples of 64.
// Uses AVX-512 when compiled for it; nf4_dequantize_scalar is the plain-C reference and gives
// bit-identical results.
void nf4_dequantize(float* out, const void* src, int64_t e0, int64_t count);
void nf4_dequantize_scalar(float* out, const void* src, int64_t e0, int64_t count);

// out (nblocks) = the absmax of blocks [b0, b0 + nblocks) as dequantisation uses it (after
// undoing the double quantisation when present).
void nf4_block_absmax(float* out, const void* src, int64_t b0, int64_t nblocks);

// ---- the 8-bit blockwise quantiser used by double quantisation (exposed for tests) -----------
// q (n), absmax2 (ceil(n / 256)): x -> nearest kNF4DynamicCode entry of x * (1 / absmax2) per
// block of 256. Dequantised value: code[q] * absmax2.
void nf4_quantize_dynamic8(uint8_t* q, float* absmax2, const float* x, int64_t n);

}  // namespace tuner
