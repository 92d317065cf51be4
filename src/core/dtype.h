// Element types and their conversions.
//
// Activations, gradients and trained (master) weights are f32. Frozen weights may be stored in
// bf16 or f16 (and later NF4 / GGUF blocks) and are converted inside kernels, tile by tile.
// Conversions to bf16/f16 round to nearest, ties to even, like torch's .to(torch.bfloat16).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace tuner {

enum class DType : uint8_t {
    F32, F16, BF16, F64, I32, I64, U8, I8, BOOL,
    // Block-quantised frozen weights (see quant/): a tensor of n elements is n / block_elems
    // blocks. The GGUF types use llama.cpp's byte layouts; NF4 is bitsandbytes' 4-bit
    // NormalFloat (blocks of 64, absmax scaling, optional double quantisation).
    NF4, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K,
};

// True for the block-quantised types (NF4, Q8_0, ...): dtype_size() is 0 for them; use
// dtype_nbytes() and the quant/ row dequantisers instead of element pointers.
inline bool dtype_is_quantized(DType t) { return t >= DType::NF4; }
// F32, BF16 or F16 (not F64): the dtypes a Hugging Face model folder holds its weights in.
inline bool dtype_is_float(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }
// config.json's torch_dtype for one of those: "float32", "bfloat16" or "float16".
inline const char* dtype_torch_name(DType t) {
    return t == DType::BF16 ? "bfloat16" : t == DType::F16 ? "float16" : "float32";
}

inline size_t dtype_size(DType t) {
    switch (t) {
        case DType::F32: return 4;
        case DType::F16: return 2;
        case DType::BF16: return 2;
        case DType::F64: return 8;
        case DType::I32: return 4;
        case DType::I64: return 8;
        case DType::U8: return 1;
        case DType::I8: return 1;
        case DType::BOOL: return 1;
        default: return 0;  // block-quantised: no per-element size
    }
}

// Names as safetensors spells them ("F32", "BF16", ...).
const char* dtype_name(DType t);
// Parses a safetensors dtype name; returns false for names we do not support.
bool dtype_from_name(std::string_view name, DType* out);
// Parses a user-facing name: "f32", "float32", "bf16", "bfloat16", "f16", "float16" (any case).
bool dtype_from_user_name(std::string_view name, DType* out);

// ---- scalar conversions -------------------------------------------------------------------
inline float bf16_to_f32(uint16_t h) {
    uint32_t bits = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// Round to nearest even; NaN stays a (quiet) NaN.
inline uint16_t f32_to_bf16(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x0040u);
    uint32_t rounding_bias = 0x7fffu + ((bits >> 16) & 1u);
    return uint16_t((bits + rounding_bias) >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);  // round to nearest even, overflow to inf, subnormals kept

// ---- bulk conversions (vectorised where the CPU allows) -----------------------------------
void convert_to_f32(float* dst, const void* src, DType src_type, size_t n);
void convert_from_f32(void* dst, DType dst_type, const float* src, size_t n);

}  // namespace tuner
