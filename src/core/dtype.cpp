#include "core/dtype.h"
#include "core/error.h"

#include <algorithm>
#include <cctype>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace tuner {

const char* dtype_name(DType t) {
    switch (t) {
        case DType::F32: return "F32";
        case DType::F16: return "F16";
        case DType::BF16: return "BF16";
        case DType::F64: return "F64";
        case DType::I32: return "I32";
        case DType::I64: return "I64";
        case DType::U8: return "U8";
        case DType::I8: return "I8";
        case DType::BOOL: return "BOOL";
        case DType::NF4: return "NF4";
        case DType::Q8_0: return "Q8_0";
        case DType::Q4_0: return "Q4_0";
        case DType::Q4_K: return "Q4_K";
        case DType::Q5_K: return "Q5_K";
        case DType::Q6_K: return "Q6_K";
    }
    return "?";
}

bool dtype_from_name(std::string_view name, DType* out) {
    static const struct {
        const char* name;
        DType type;
    } table[] = {{"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16}, {"F64", DType::F64},
                 {"I32", DType::I32}, {"I64", DType::I64}, {"U8", DType::U8},     {"I8", DType::I8},
                 {"BOOL", DType::BOOL}};
    for (const auto& e : table) {
        if (name == e.name) {
            *out = e.type;
            return true;
        }
    }
    return false;
}

bool dtype_from_user_name(std::string_view name, DType* out) {
    std::string s(name);
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    if (s == "f32" || s == "float32" || s == "fp32") *out = DType::F32;
    else if (s == "bf16" || s == "bfloat16") *out = DType::BF16;
    else if (s == "f16" || s == "float16" || s == "fp16") *out = DType::F16;
    else return false;
    return true;
}

// IEEE 754 binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits.
float f16_to_f32(uint16_t h) {
    uint32_t sign = uint32_t(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {  // subnormal: normalise
            int e = -1;
            do {
                e++;
                mant <<= 1;
            } while ((mant & 0x400u) == 0);
            mant &= 0x3ffu;
            bits = sign | (uint32_t(127 - 15 - e) << 23) | (mant << 13);
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

uint16_t f32_to_f16(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    uint16_t sign = uint16_t((bits >> 16) & 0x8000u);
    uint32_t abs = bits & 0x7fffffffu;
    if (abs > 0x7f800000u) return uint16_t(sign | 0x7e00u);  // NaN
    if (abs >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520: inf
    if (abs < 0x38800000u) {
        // Result is subnormal (or zero) in f16: value = m * 2^-24 with m rounded to nearest even.
        if (abs < 0x33000000u) return sign;  // below half of the smallest subnormal
        uint32_t exp = abs >> 23;
        uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - exp;  // 24-bit mantissa -> units of 2^-24
        uint32_t q = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return uint16_t(sign | q);
    }
    // Normal: rebias exponent and round the 13 dropped mantissa bits to nearest even.
    uint32_t r = abs - ((127u - 15u) << 23);
    r += 0x0fffu + ((r >> 13) & 1u);
    return uint16_t(sign | (r >> 13));
}

void convert_to_f32(float* dst, const void* src, DType src_type, size_t n) {
    switch (src_type) {
        case DType::F32: std::memcpy(dst, src, n * 4); return;
        case DType::BF16: {
            const uint16_t* s = static_cast<const uint16_t*>(src);
            size_t i = 0;
#if defined(__AVX512F__)
            for (; i + 16 <= n; i += 16) {
                __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i));
                __m512i w = _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16);
                _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(w));
            }
#endif
            for (; i < n; i++) dst[i] = bf16_to_f32(s[i]);
            return;
        }
        case DType::F16: {
            const uint16_t* s = static_cast<const uint16_t*>(src);
            size_t i = 0;
#if defined(__AVX512F__)
            for (; i + 16 <= n; i += 16) {
                __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i));
                _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(h));
            }
#endif
            for (; i < n; i++) dst[i] = f16_to_f32(s[i]);
            return;
        }
        case DType::F64: {
            const double* s = static_cast<const double*>(src);
            for (size_t i = 0; i < n; i++) dst[i] = float(s[i]);
            return;
        }
        default: break;
    }
    fail("[dtype] cannot convert {} to F32", dtype_name(src_type));
}

void convert_from_f32(void* dst, DType dst_type, const float* src, size_t n) {
    switch (dst_type) {
        case DType::F32: std::memcpy(dst, src, n * 4); return;
        case DType::BF16: {
            uint16_t* d = static_cast<uint16_t*>(dst);
            for (size_t i = 0; i < n; i++) d[i] = f32_to_bf16(src[i]);
            return;
        }
        case DType::F16: {
            uint16_t* d = static_cast<uint16_t*>(dst);
            for (size_t i = 0; i < n; i++) d[i] = f32_to_f16(src[i]);
            return;
        }
        case DType::F64: {
            double* d = static_cast<double*>(dst);
            for (size_t i = 0; i < n; i++) d[i] = src[i];
            return;
        }
        default: break;
    }
    fail("[dtype] cannot convert F32 to {}", dtype_name(dst_type));
}

}  // namespace tuner
