// NF4 (bitsandbytes 4-bit NormalFloat): see nf4.h for the format and the layout.

#include "quant/nf4.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"

#if defined(__AVX512F__)
// GCC 12 reports its own _mm512_undefined_* placeholders inside the intrinsics as uninitialised.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define TUNER_NF4_AVX512 1
#endif

namespace tuner {

// bitsandbytes get_4bit_type("nf4"): the 16 code values, ascending.
const float kNF4Code[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

// bitsandbytes create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for
// i = 0..6, the midpoints of torch.linspace(0.1, 1, 2^i + 1) (float32) times 10^(i-6), with
// both signs, plus 0 and 1, sorted. Values printed with 9 significant digits (exact f32).
const float kNF4DynamicCode[256] = {
    -0.992968738f, -0.978906214f, -0.96484375f, -0.950781226f, -0.936718702f, -0.922656238f,
    -0.908593774f, -0.89453125f, -0.880468726f, -0.866406202f, -0.852343738f, -0.838281214f,
    -0.82421875f, -0.810156226f, -0.796093702f, -0.782031238f, -0.767968774f, -0.75390625f,
    -0.739843786f, -0.725781262f, -0.711718798f, -0.697656274f, -0.68359375f, -0.669531286f,
    -0.655468762f, -0.641406238f, -0.627343774f, -0.61328125f, -0.599218726f, -0.585156262f,
    -0.571093798f, -0.557031274f, -0.54296875f, -0.528906226f, -0.514843762f, -0.500781238f,
    -0.486718774f, -0.47265625f, -0.458593726f, -0.444531262f, -0.430468738f, -0.416406214f,
    -0.40234375f, -0.388281226f, -0.374218762f, -0.360156238f, -0.346093714f, -0.33203125f,
    -0.317968726f, -0.303906262f, -0.289843738f, -0.275781274f, -0.26171875f, -0.247656256f,
    -0.233593762f, -0.219531253f, -0.205468744f, -0.19140625f, -0.177343741f, -0.163281247f,
    -0.149218753f, -0.135156244f, -0.12109375f, -0.107031256f, -0.0985937491f, -0.0957812443f,
    -0.0929687545f, -0.0901562497f, -0.0873437524f, -0.0845312476f, -0.0817187428f, -0.078906253f,
    -0.0760937482f, -0.0732812509f, -0.0704687461f, -0.0676562563f, -0.0648437515f, -0.0620312467f,
    -0.0592187531f, -0.0564062484f, -0.053593751f, -0.05078125f, -0.047968749f, -0.0451562516f,
    -0.0423437469f, -0.0395312496f, -0.0367187522f, -0.0339062475f, -0.0310937501f, -0.0282812472f,
    -0.0254687499f, -0.0226562507f, -0.0198437497f, -0.0170312505f, -0.0142187504f, -0.0114062503f,
    -0.00971874967f, -0.00915624946f, -0.00859375019f, -0.00803124998f, -0.00746874977f, -0.00690625003f,
    -0.00634374982f, -0.00578125007f, -0.00521875033f, -0.00465624966f, -0.00409374991f, -0.00353124971f,
    -0.00296874996f, -0.00240624999f, -0.00184375001f, -0.00128124992f, -0.000943750085f, -0.000831249985f,
    -0.00071875006f, -0.000606250076f, -0.000493750034f, -0.000381250022f, -0.000268750038f, -0.000156250011f,
    -8.87499991e-05f, -6.62500024e-05f, -4.37499984e-05f, -2.12499981e-05f, -7.7499999e-06f, -3.25000019e-06f,
    -5.50000038e-07f, 0.0f, 5.50000038e-07f, 3.25000019e-06f, 7.7499999e-06f, 2.12499981e-05f,
    4.37499984e-05f, 6.62500024e-05f, 8.87499991e-05f, 0.000156250011f, 0.000268750038f, 0.000381250022f,
    0.000493750034f, 0.000606250076f, 0.00071875006f, 0.000831249985f, 0.000943750085f, 0.00128124992f,
    0.00184375001f, 0.00240624999f, 0.00296874996f, 0.00353124971f, 0.00409374991f, 0.00465624966f,
    0.00521875033f, 0.00578125007f, 0.00634374982f, 0.00690625003f, 0.00746874977f, 0.00803124998f,
    0.00859375019f, 0.00915624946f, 0.00971874967f, 0.0114062503f, 0.0142187504f, 0.0170312505f,
    0.0198437497f, 0.0226562507f, 0.0254687499f, 0.0282812472f, 0.0310937501f, 0.0339062475f,
    0.0367187522f, 0.0395312496f, 0.0423437469f, 0.0451562516f, 0.047968749f, 0.05078125f,
    0.053593751f, 0.0564062484f, 0.0592187531f, 0.0620312467f, 0.0648437515f, 0.0676562563f,
    0.0704687461f, 0.0732812509f, 0.0760937482f, 0.078906253f, 0.0817187428f, 0.0845312476f,
    0.0873437524f, 0.0901562497f, 0.0929687545f, 0.0957812443f, 0.0985937491f, 0.107031256f,
    0.12109375f, 0.135156244f, 0.149218753f, 0.163281247f, 0.177343741f, 0.19140625f,
    0.205468744f, 0.219531253f, 0.233593762f, 0.247656256f, 0.26171875f, 0.275781274f,
    0.289843738f, 0.303906262f, 0.317968726f, 0.33203125f, 0.346093714f, 0.360156238f,
    0.374218762f, 0.388281226f, 0.40234375f, 0.416406214f, 0.430468738f, 0.444531262f,
    0.458593726f, 0.47265625f, 0.486718774f, 0.500781238f, 0.514843762f, 0.528906226f,
    0.54296875f, 0.557031274f, 0.571093798f, 0.585156262f, 0.599218726f, 0.61328125f,
    0.627343774f, 0.641406238f, 0.655468762f, 0.669531286f, 0.68359375f, 0.697656274f,
    0.711718798f, 0.725781262f, 0.739843786f, 0.75390625f, 0.767968774f, 0.782031238f,
    0.796093702f, 0.810156226f, 0.82421875f, 0.838281214f, 0.852343738f, 0.866406202f,
    0.880468726f, 0.89453125f, 0.908593774f, 0.922656238f, 0.936718702f, 0.950781226f,
    0.96484375f, 0.978906214f, 0.992968738f, 1.0f,
};

namespace {

constexpr size_t kHeaderBytes = sizeof(Nf4Header);

// Decision thresholds of bitsandbytes' dQuantizeNF4, as its f32 literals. They are the
// midpoints of neighbouring codes printed in double; read directly as f32 (as nvcc reads the
// `...f` literals), 4 of the 15 differ by one ulp from the f32 midpoint rounded ties-to-even.
constexpr float kNF4Thresholds[15] = {
    -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f,  0.2035212516784668f,  0.2920137718319893f,  0.3893125355243683f,
    0.5016634166240692f,  0.6427869200706482f,  0.8614784181118011f,
};

// Index of the nearest code to x (already divided by absmax); ties go to the lower index.
inline uint8_t nf4_index(float x, const float* mid) {
    int q = 0;
    for (int i = 0; i < 15; i++) q += x > mid[i];
    return uint8_t(q);
}

struct Parts {
    int64_t n = 0, nb = 0, nb2 = 0;
    bool dq = false;
    uint8_t* codes = nullptr;
    float* absmax = nullptr;  // plain layout
    float* offset = nullptr;  // double-quantised layout
    float* absmax2 = nullptr;
    uint8_t* qabsmax = nullptr;
};

Parts parts(const void* buf) {
    Nf4Header h;
    std::memcpy(&h, buf, sizeof h);
    TUNER_ASSERT_MSG(h.magic == kNF4Magic, "not an NF4 buffer (bad magic)");
    TUNER_ASSERT(h.n >= 0 && h.n % kNF4Block == 0);
    Parts p;
    p.n = h.n;
    p.nb = h.n / kNF4Block;
    p.nb2 = (p.nb + kNF4DQBlock - 1) / kNF4DQBlock;
    p.dq = (h.flags & kNF4FlagDoubleQuant) != 0;
    uint8_t* base = static_cast<uint8_t*>(const_cast<void*>(buf));
    p.codes = base + kHeaderBytes;
    uint8_t* tail = p.codes + h.n / 2;
    if (p.dq) {
        p.offset = reinterpret_cast<float*>(tail);
        p.absmax2 = p.offset + 1;
        p.qabsmax = reinterpret_cast<uint8_t*>(p.absmax2 + p.nb2);
    } else {
        p.absmax = reinterpret_cast<float*>(tail);
    }
    return p;
}

// absmax of block b. Double quantisation: f32(code8 * absmax2), then + offset, each rounded to
// f32 separately as bitsandbytes does. Products and sums of two f32 are formed in double and
// rounded once to f32: that is the correctly rounded f32 result (53 >= 2 * 24 + 2), and it
// keeps the compiler from fusing the two steps into one FMA.
inline float block_absmax(const Parts& p, int64_t b) {
    if (!p.dq) return p.absmax[b];
    const float prod = float(double(kNF4DynamicCode[p.qabsmax[b]]) * double(p.absmax2[b / kNF4DQBlock]));
    return float(double(prod) + double(*p.offset));
}

// Nearest entry of the (ascending) dynamic code to v; ties to the lower index.
inline uint8_t dynamic8_index(float v) {
    const float* c = kNF4DynamicCode;
    const float* hi = std::upper_bound(c, c + 256, v);  // first entry > v
    if (hi == c) return 0;
    if (hi == c + 256) return 255;
    const float* lo = hi - 1;  // entry <= v
    return uint8_t((v - *lo <= *hi - v) ? lo - c : hi - c);
}

void dequant_blocks_scalar(float* out, const Parts& p, int64_t b0, int64_t nblocks) {
    for (int64_t b = b0; b < b0 + nblocks; b++) {
        const float a = block_absmax(p, b);
        const uint8_t* q = p.codes + b * (kNF4Block / 2);
        float* y = out + (b - b0) * kNF4Block;
        for (int i = 0; i < kNF4Block / 2; i++) {
            y[2 * i] = kNF4Code[q[i] >> 4] * a;
            y[2 * i + 1] = kNF4Code[q[i] & 15] * a;
        }
    }
}

#if defined(TUNER_NF4_AVX512)
// 16 packed bytes -> their 32 nibbles in element order (high nibble first), one per byte.
inline __m256i nibbles_in_order(__m128i bytes) {
    const __m256i w = _mm256_cvtepu8_epi16(bytes);                                       // b in each u16
    const __m256i first = _mm256_srli_epi16(w, 4);                                        // low byte: b >> 4
    const __m256i second = _mm256_slli_epi16(_mm256_and_si256(w, _mm256_set1_epi16(15)), 8);  // high byte: b & 15
    return _mm256_or_si256(first, second);
}

void dequant_blocks_avx512(float* out, const Parts& p, int64_t b0, int64_t nblocks) {
    const __m512 code = _mm512_loadu_ps(kNF4Code);
    for (int64_t b = b0; b < b0 + nblocks; b++) {
        const __m512 a = _mm512_set1_ps(block_absmax(p, b));
        const uint8_t* q = p.codes + b * (kNF4Block / 2);
        float* y = out + (b - b0) * kNF4Block;
        for (int h = 0; h < 2; h++) {  // 16 bytes -> 32 values
            const __m256i idx = nibbles_in_order(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16 * h)));
            const __m512i i0 = _mm512_cvtepu8_epi32(_mm256_castsi256_si128(idx));
            const __m512i i1 = _mm512_cvtepu8_epi32(_mm256_extracti128_si256(idx, 1));
            _mm512_storeu_ps(y + 32 * h, _mm512_mul_ps(_mm512_permutexvar_ps(i0, code), a));
            _mm512_storeu_ps(y + 32 * h + 16, _mm512_mul_ps(_mm512_permutexvar_ps(i1, code), a));
        }
    }
}
#endif

void check_range(const Parts& p, int64_t e0, int64_t count) {
    TUNER_ASSERT_MSG(e0 % kNF4Block == 0 && count % kNF4Block == 0, "NF4 ranges must be whole blocks of 64");
    TUNER_ASSERT_MSG(e0 >= 0 && count >= 0 && e0 + count <= p.n, "NF4 range outside the tensor");
}

}  // namespace

size_t nf4_nbytes(int64_t n, bool double_quant) {
    TUNER_ASSERT_MSG(n >= 0 && n % kNF4Block == 0, "NF4 tensors hold a multiple of 64 elements");
    const int64_t nb = n / kNF4Block, nb2 = (nb + kNF4DQBlock - 1) / kNF4DQBlock;
    const size_t scales = double_quant ? size_t(4 + 4 * nb2 + nb) : size_t(4 * nb);
    return kHeaderBytes + size_t(n / 2) + scales;
}

int64_t nf4_numel(const void* src) { return parts(src).n; }
bool nf4_double_quant(const void* src) { return parts(src).dq; }

void nf4_init(void* dst, int64_t n, bool double_quant) {
    TUNER_ASSERT_MSG(n >= 0 && n % kNF4Block == 0, "NF4 tensors hold a multiple of 64 elements");
    const Nf4Header h{kNF4Magic, double_quant ? kNF4FlagDoubleQuant : 0u, n};
    std::memcpy(dst, &h, sizeof h);
}

void nf4_quantize_range(void* dst, const float* src, int64_t e0, int64_t count, float* absmax_out) {
    const Parts p = parts(dst);
    check_range(p, e0, count);
    const float* mid = kNF4Thresholds;
    const int64_t nblocks = count / kNF4Block;
#pragma omp parallel for schedule(static) if (count > 65536)
    for (int64_t j = 0; j < nblocks; j++) {
        const float* x = src + j * kNF4Block;
        float amax = 0.0f;
        for (int i = 0; i < kNF4Block; i++) amax = std::max(amax, std::fabs(x[i]));
        absmax_out[j] = amax;
        uint8_t* q = p.codes + (e0 / kNF4Block + j) * (kNF4Block / 2);
        if (amax == 0.0f) {  // all zeros: code 7 is exactly 0 (bitsandbytes' 0 * inf gives code 0, also 0)
            std::memset(q, 0x77, kNF4Block / 2);
            continue;
        }
        const float inv = 1.0f / amax;  // bitsandbytes multiplies by the reciprocal
        for (int i = 0; i < kNF4Block / 2; i++)
            q[i] = uint8_t(nf4_index(x[2 * i] * inv, mid) << 4 | nf4_index(x[2 * i + 1] * inv, mid));
    }
}

void nf4_quantize_dynamic8(uint8_t* q, float* absmax2, const float* x, int64_t n) {
    const int64_t nblocks = (n + kNF4DQBlock - 1) / kNF4DQBlock;
    for (int64_t b = 0; b < nblocks; b++) {
        const int64_t i0 = b * kNF4DQBlock, i1 = std::min(n, i0 + kNF4DQBlock);
        float amax = 0.0f;
        for (int64_t i = i0; i < i1; i++) amax = std::max(amax, std::fabs(x[i]));
        absmax2[b] = amax;
        if (amax == 0.0f) {
            std::fill(q + i0, q + i1, uint8_t(127));  // code 127 is exactly 0
            continue;
        }
        const float inv = 1.0f / amax;
        for (int64_t i = i0; i < i1; i++) q[i] = dynamic8_index(x[i] * inv);
    }
}

void nf4_store_absmax(void* dst, const float* absmax) {
    const Parts p = parts(dst);
    if (!p.dq) {
        std::memcpy(p.absmax, absmax, size_t(p.nb) * 4);
        return;
    }
    // bitsandbytes: offset = absmax.mean(); absmax -= offset; quantize_blockwise(absmax, 256).
    double sum = 0.0;
    for (int64_t b = 0; b < p.nb; b++) sum += absmax[b];
    const float offset = p.nb > 0 ? float(sum / double(p.nb)) : 0.0f;
    std::vector<float> centred(static_cast<size_t>(p.nb));
    for (int64_t b = 0; b < p.nb; b++) centred[size_t(b)] = absmax[b] - offset;
    std::memcpy(p.offset, &offset, 4);
    nf4_quantize_dynamic8(p.qabsmax, p.absmax2, centred.data(), p.nb);
}

void nf4_quantize(void* dst, const float* src, int64_t n, bool double_quant) {
    nf4_init(dst, n, double_quant);
    std::vector<float> absmax(size_t(n / kNF4Block));
    nf4_quantize_range(dst, src, 0, n, absmax.data());
    nf4_store_absmax(dst, absmax.data());
}

void nf4_block_absmax(float* out, const void* src, int64_t b0, int64_t nblocks) {
    const Parts p = parts(src);
    TUNER_ASSERT(b0 >= 0 && nblocks >= 0 && b0 + nblocks <= p.nb);
    for (int64_t b = 0; b < nblocks; b++) out[b] = block_absmax(p, b0 + b);
}

void nf4_dequantize_scalar(float* out, const void* src, int64_t e0, int64_t count) {
    const Parts p = parts(src);
    check_range(p, e0, count);
    dequant_blocks_scalar(out, p, e0 / kNF4Block, count / kNF4Block);
}

void nf4_dequantize(float* out, const void* src, int64_t e0, int64_t count) {
    const Parts p = parts(src);
    check_range(p, e0, count);
#if defined(TUNER_NF4_AVX512)
    dequant_blocks_avx512(out, p, e0 / kNF4Block, count / kNF4Block);
#else
    dequant_blocks_scalar(out, p, e0 / kNF4Block, count / kNF4Block);
#endif
}

}  // namespace tuner
