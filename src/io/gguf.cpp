// GGUF reader. Format: ggml docs/gguf.md (versions 2 and 3 share the layout; version 1 used
// 32-bit counts and lengths and is refused, as llama.cpp does). Type numbers and block layouts:
// ggml.h enum ggml_type and ggml.c type_traits.
#include "io/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <type_traits>

#include "core/error.h"

namespace tuner {

namespace {

constexpr uint32_t kMaxDims = 4;              // GGML_MAX_DIMS
constexpr size_t kDefaultAlignment = 32;      // GGUF_DEFAULT_ALIGNMENT
constexpr size_t kHeaderSize = 4 + 4 + 8 + 8; // magic, version, tensor count, kv count
// The smallest encodings, used to bound counts by the bytes left before allocating:
// a KV is at least an empty key (8), a type (4) and a 1-byte value; a tensor info at least an
// empty name (8), n_dims (4), a type (4) and an offset (8).
constexpr size_t kMinKVBytes = 8 + 4 + 1;
constexpr size_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;

// ggml_type numbers -> name and block layout. Gaps are types ggml removed (4, 5: Q4_2, Q4_3;
// 31-33: Q4_0_4_4 ..; 36-38: IQ4_NL_4_4 ..); they are unknown here as they are to ggml.
struct TypeRow {
    uint32_t id;
    GgmlTypeInfo info;
};
const TypeRow kTypes[] = {
    {0, {"F32", 1, 4}},        {1, {"F16", 1, 2}},        {2, {"Q4_0", 32, 18}},
    {3, {"Q4_1", 32, 20}},     {6, {"Q5_0", 32, 22}},     {7, {"Q5_1", 32, 24}},
    {8, {"Q8_0", 32, 34}},     {9, {"Q8_1", 32, 36}},     {10, {"Q2_K", 256, 84}},
    {11, {"Q3_K", 256, 110}},  {12, {"Q4_K", 256, 144}},  {13, {"Q5_K", 256, 176}},
    {14, {"Q6_K", 256, 210}},  {15, {"Q8_K", 256, 292}},  {16, {"IQ2_XXS", 256, 66}},
    {17, {"IQ2_XS", 256, 74}}, {18, {"IQ3_XXS", 256, 98}}, {19, {"IQ1_S", 256, 50}},
    {20, {"IQ4_NL", 32, 18}},  {21, {"IQ3_S", 256, 110}}, {22, {"IQ2_S", 256, 82}},
    {23, {"IQ4_XS", 256, 136}}, {24, {"I8", 1, 1}},       {25, {"I16", 1, 2}},
    {26, {"I32", 1, 4}},       {27, {"I64", 1, 8}},       {28, {"F64", 1, 8}},
    {29, {"IQ1_M", 256, 56}},  {30, {"BF16", 1, 2}},      {34, {"TQ1_0", 256, 54}},
    {35, {"TQ2_0", 256, 66}},  {39, {"MXFP4", 32, 17}},
};

bool known_value_type(uint32_t t) { return t <= uint32_t(GgufValueType::F64); }

bool is_integer(GgufValueType t) {
    switch (t) {
        case GgufValueType::U8: case GgufValueType::I8: case GgufValueType::U16: case GgufValueType::I16:
        case GgufValueType::U32: case GgufValueType::I32: case GgufValueType::U64: case GgufValueType::I64:
            return true;
        default: return false;
    }
}

uint64_t load_le(const uint8_t* p, size_t n) {
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;) v = (v << 8) | p[i];  // little-endian on any host
    return v;
}

// An integer value of any width as (negative?, magnitude) so callers can range-check it.
struct IntValue {
    bool negative = false;
    uint64_t magnitude = 0;
};
IntValue read_int(GgufValueType t, const uint8_t* p) {
    size_t n = gguf_scalar_size(t);
    uint64_t raw = load_le(p, n);
    bool is_signed = t == GgufValueType::I8 || t == GgufValueType::I16 || t == GgufValueType::I32 || t == GgufValueType::I64;
    if (is_signed && (raw >> (8 * n - 1)) & 1) {
        // Sign-extend, then negate in unsigned arithmetic (well-defined for INT64_MIN too).
        uint64_t ext = n == 8 ? raw : raw | (~uint64_t(0) << (8 * n));
        return {true, ~ext + 1};
    }
    return {false, raw};
}

double read_float(GgufValueType t, const uint8_t* p) {
    if (t == GgufValueType::F32) {
        uint32_t bits = uint32_t(load_le(p, 4));
        float f;
        std::memcpy(&f, &bits, 4);
        return f;
    }
    uint64_t bits = load_le(p, 8);
    double d;
    std::memcpy(&d, &bits, 8);
    return d;
}

// The text of a message label: a string, or a callable that makes one (so that hot loops, such
// as the strings of a 150k-token vocabulary, format nothing unless there is an error).
template <typename L>
std::string label_text(const L& l) {
    if constexpr (std::is_invocable_v<const L&>) return l();
    else return std::string(l);
}

// Sequential reader over the image with bounds checks; every failure names the file, what was
// being read and the byte offset.
struct Cursor {
    const uint8_t* base;
    size_t size;
    size_t pos;
    const std::string& where;

    size_t left() const { return size - pos; }

    template <typename... Args>
    [[noreturn]] void bad(size_t at, fmt::format_string<Args...> format, Args&&... args) const {
        fail("[gguf] {}: {} (at byte {})", where, fmt::format(format, std::forward<Args>(args)...), at);
    }
    template <typename L>
    void need(size_t n, const L& what, const char* part) const {
        if (n > left())
            bad(pos, "{}{}: needs {} bytes but the file ends after {} more (truncated file?)", label_text(what), part, n,
                left());
    }
    template <typename L>
    uint32_t u32(const L& what, const char* part = "") {
        need(4, what, part);
        uint32_t v = uint32_t(load_le(base + pos, 4));
        pos += 4;
        return v;
    }
    template <typename L>
    uint64_t u64(const L& what, const char* part = "") {
        need(8, what, part);
        uint64_t v = load_le(base + pos, 8);
        pos += 8;
        return v;
    }
    // A GGUF string: u64 length + bytes. Returns the bytes as a view into the image.
    template <typename L>
    std::string_view str(const L& what) {
        size_t at = pos;
        uint64_t n = u64(what, " length");
        if (n > left())
            bad(at, "{}: string length {} runs past the file end ({} bytes left)", label_text(what), n, left());
        std::string_view s(reinterpret_cast<const char*>(base + pos), size_t(n));
        pos += size_t(n);
        return s;
    }
};

std::string quoted(std::string_view s) {
    // Names in messages: printable ASCII as is, anything else escaped, long names cut.
    std::string out = "'";
    for (size_t i = 0; i < s.size() && i < 120; i++) {
        unsigned char c = uint8_t(s[i]);
        if (c >= 0x20 && c < 0x7f && c != '\'') out.push_back(char(c));
        else out += fmt::format("\\x{:02x}", c);
    }
    if (s.size() > 120) out += "...";
    return out + "'";
}

std::string errno_text() { return std::strerror(errno); }

}  // namespace

// ---- type tables ---------------------------------------------------------------------------

size_t gguf_scalar_size(GgufValueType t) {
    switch (t) {
        case GgufValueType::U8: case GgufValueType::I8: case GgufValueType::BOOL: return 1;
        case GgufValueType::U16: case GgufValueType::I16: return 2;
        case GgufValueType::U32: case GgufValueType::I32: case GgufValueType::F32: return 4;
        case GgufValueType::U64: case GgufValueType::I64: case GgufValueType::F64: return 8;
        default: return 0;
    }
}

const char* gguf_value_type_name(GgufValueType t) {
    switch (t) {
        case GgufValueType::U8: return "u8";
        case GgufValueType::I8: return "i8";
        case GgufValueType::U16: return "u16";
        case GgufValueType::I16: return "i16";
        case GgufValueType::U32: return "u32";
        case GgufValueType::I32: return "i32";
        case GgufValueType::F32: return "f32";
        case GgufValueType::BOOL: return "bool";
        case GgufValueType::STRING: return "string";
        case GgufValueType::ARRAY: return "array";
        case GgufValueType::U64: return "u64";
        case GgufValueType::I64: return "i64";
        case GgufValueType::F64: return "f64";
    }
    return "?";
}

const GgmlTypeInfo* ggml_type_info(uint32_t ggml_type) {
    for (const TypeRow& r : kTypes)
        if (r.id == ggml_type) return &r.info;
    return nullptr;
}

bool ggml_type_to_dtype(uint32_t ggml_type, DType* out) {
    switch (ggml_type) {
        case 0: *out = DType::F32; return true;
        case 1: *out = DType::F16; return true;
        case 2: *out = DType::Q4_0; return true;
        case 8: *out = DType::Q8_0; return true;
        case 12: *out = DType::Q4_K; return true;
        case 13: *out = DType::Q5_K; return true;
        case 14: *out = DType::Q6_K; return true;
        case 24: *out = DType::I8; return true;
        case 26: *out = DType::I32; return true;
        case 27: *out = DType::I64; return true;
        case 28: *out = DType::F64; return true;
        case 30: *out = DType::BF16; return true;
        default: return false;
    }
}

const char* GgufTensor::type_name() const {
    const GgmlTypeInfo* info = ggml_type_info(ggml_type);
    return info ? info->name : "?";
}

DType GgufTensor::dtype(const std::string& where) const {
    DType d;
    if (!ggml_type_to_dtype(ggml_type, &d))
        fail("[gguf] {}: tensor {} has type {}, which tuner does not support (supported: F32, F16, BF16, Q8_0, "
             "Q4_0, Q4_K, Q5_K, Q6_K; requantise the model, e.g. with llama-quantize)",
             where, quoted(name), type_name());
    return d;
}

// ---- parsing -------------------------------------------------------------------------------

Gguf::Gguf(const uint8_t* data, size_t size, std::string where) : where_(std::move(where)), size_(size) {
    Cursor c{data, size, 0, where_};
    if (size < kHeaderSize)
        fail("[gguf] {}: file is {} bytes, shorter than the {}-byte GGUF header", where_, size, kHeaderSize);
    if (std::memcmp(data, "GGUF", 4) != 0) {
        fail("[gguf] {}: not a GGUF file (starts with {}, expected 'GGUF')", where_,
             quoted(std::string_view(reinterpret_cast<const char*>(data), 4)));
    }
    c.pos = 4;
    version_ = c.u32("version");
    if (version_ == 1)
        c.bad(4, "GGUF version 1 is not supported (32-bit counts; convert the file again with a current llama.cpp)");
    if (version_ != 2 && version_ != 3) {
        // A big-endian file (gguf v3 allows it) reads as a huge version number here.
        bool swapped = __builtin_bswap32(version_) == 2 || __builtin_bswap32(version_) == 3;
        if (swapped) c.bad(4, "big-endian GGUF files are not supported");
        c.bad(4, "unsupported GGUF version {} (2 and 3 are supported)", version_);
    }
    const uint64_t n_tensors = c.u64("tensor count");
    const uint64_t n_kv = c.u64("metadata key-value count");
    // Bound both counts by the bytes that are left before reserving anything.
    if (n_kv > c.left() / kMinKVBytes)
        c.bad(16, "header claims {} metadata key-value pairs but the rest of the file ({} bytes) holds at most {}",
              n_kv, c.left(), c.left() / kMinKVBytes);
    if (n_tensors > c.left() / kMinTensorInfoBytes)
        c.bad(8, "header claims {} tensors but the rest of the file ({} bytes) holds at most {} tensor infos",
              n_tensors, c.left(), c.left() / kMinTensorInfoBytes);

    // ---- metadata ----
    kvs_.reserve(size_t(n_kv));
    for (uint64_t i = 0; i < n_kv; i++) {
        GgufKV kv;
        kv.offset = c.pos;
        kv.key = std::string(c.str([&] { return fmt::format("key of metadata pair #{}", i); }));
        const std::string what = "key " + quoted(kv.key);
        if (kv_index_.count(kv.key)) c.bad(kv.offset, "{} appears twice", what);
        const size_t type_at = c.pos;
        uint32_t type = c.u32(what, " value type");
        if (!known_value_type(type)) c.bad(type_at, "{} has unknown value type {}", what, type);
        kv.type = GgufValueType(type);
        auto check_bools = [&](const uint8_t* p, uint64_t n) {
            for (uint64_t k = 0; k < n; k++)
                if (p[k] > 1) c.bad(size_t(p + k - data), "{}: bool value {} is not 0 or 1", what, p[k]);
        };
        if (kv.type == GgufValueType::STRING) {
            std::string_view s = c.str(what);
            kv.data = reinterpret_cast<const uint8_t*>(s.data());
            kv.nbytes = s.size();
        } else if (kv.type == GgufValueType::ARRAY) {
            const size_t elem_at = c.pos;
            uint32_t et = c.u32(what, " array element type");
            if (!known_value_type(et)) c.bad(elem_at, "{} is an array of unknown value type {}", what, et);
            kv.elem_type = GgufValueType(et);
            if (kv.elem_type == GgufValueType::ARRAY)
                c.bad(elem_at, "{} is an array of arrays, which GGUF readers do not support", what);
            const size_t count_at = c.pos;
            kv.count = c.u64(what, " array length");
            const size_t esz = kv.elem_type == GgufValueType::STRING ? 8 : gguf_scalar_size(kv.elem_type);
            if (kv.count > c.left() / esz)
                c.bad(count_at, "{}: array length {} of {} runs past the file end ({} bytes left)", what, kv.count,
                      gguf_value_type_name(kv.elem_type), c.left());
            kv.data = data + c.pos;
            if (kv.elem_type == GgufValueType::STRING) {
                for (uint64_t k = 0; k < kv.count; k++) c.str([&] { return fmt::format("{} element {}", what, k); });
            } else {
                c.pos += size_t(kv.count) * esz;  // bounded above
                if (kv.elem_type == GgufValueType::BOOL) check_bools(kv.data, kv.count);
            }
            kv.nbytes = size_t(data + c.pos - kv.data);
        } else {
            size_t n = gguf_scalar_size(kv.type);
            c.need(n, what, " value");
            kv.data = data + c.pos;
            kv.nbytes = n;
            c.pos += n;
            if (kv.type == GgufValueType::BOOL) check_bools(kv.data, 1);
        }
        kv_index_.emplace(kv.key, kvs_.size());
        kvs_.push_back(std::move(kv));
    }

    if (const GgufKV* a = find("general.alignment")) {
        // ggml writes and requires a u32 power of two.
        if (a->type != GgufValueType::U32)
            c.bad(a->offset, "key 'general.alignment' should be a u32, got {}", gguf_value_type_name(a->type));
        uint32_t v = uint32_t(load_le(a->data, 4));
        if (v == 0 || (v & (v - 1)) != 0)
            c.bad(a->offset, "key 'general.alignment' is {}, which is not a power of two", v);
        alignment_ = v;
    } else {
        alignment_ = kDefaultAlignment;
    }

    // ---- tensor infos ----
    tensors_.reserve(size_t(n_tensors));
    for (uint64_t i = 0; i < n_tensors; i++) {
        GgufTensor t;
        t.info_offset = c.pos;
        t.name = std::string(c.str([&] { return fmt::format("name of tensor #{}", i); }));
        const std::string what = "tensor " + quoted(t.name);
        if (tensor_index_.count(t.name)) c.bad(t.info_offset, "{} appears twice", what);
        const size_t dims_at = c.pos;
        uint32_t n_dims = c.u32(what, " dimension count");
        if (n_dims > kMaxDims) c.bad(dims_at, "{} has {} dimensions; GGUF allows at most {}", what, n_dims, kMaxDims);
        uint64_t numel = 1;
        bool overflow = false, zero = false;
        for (uint32_t d = 0; d < n_dims; d++) {
            uint64_t ne = c.u64([&] { return fmt::format("{} dimension {}", what, d); });
            if (ne > uint64_t(INT64_MAX)) c.bad(dims_at, "{} has dimension ne[{}] = {}, above 2^63", what, d, ne);
            t.ne.push_back(int64_t(ne));
            zero = zero || ne == 0;
            overflow = overflow || __builtin_mul_overflow(numel, ne, &numel);
        }
        if (zero) numel = 0;
        if (!zero && (overflow || numel > uint64_t(INT64_MAX)))
            c.bad(dims_at, "{}: the product of its dimensions overflows 64 bits", what);
        t.numel = int64_t(numel);
        const size_t type_at = c.pos;
        t.ggml_type = c.u32(what, " type");
        const GgmlTypeInfo* info = ggml_type_info(t.ggml_type);
        if (!info) c.bad(type_at, "{} has unknown ggml type {}", what, t.ggml_type);
        const int64_t ne0 = t.ne.empty() ? 1 : t.ne[0];
        if (ne0 % int64_t(info->block_elems) != 0)
            c.bad(dims_at, "{}: ne[0] = {} is not a multiple of the {} block size {}", what, ne0, info->name,
                  info->block_elems);
        uint64_t nbytes = 0;
        if (__builtin_mul_overflow(numel / info->block_elems, uint64_t(info->block_bytes), &nbytes))
            c.bad(dims_at, "{}: its size in bytes overflows 64 bits", what);
        t.nbytes = size_t(nbytes);
        const size_t off_at = c.pos;
        t.offset = c.u64(what, " data offset");
        if (t.offset % alignment_ != 0)
            c.bad(off_at, "{}: data offset {} is not a multiple of the alignment {}", what, t.offset, alignment_);
        tensor_index_.emplace(t.name, tensors_.size());
        tensors_.push_back(std::move(t));
    }

    // ---- data section ----
    // It starts at the first multiple of the alignment after the tensor infos (a file without
    // tensors may end right after its metadata).
    uint64_t data_start = (uint64_t(c.pos) + alignment_ - 1) / alignment_ * alignment_;
    data_offset_ = size_t(data_start);
    if (!tensors_.empty() && data_start > size)
        c.bad(c.pos, "the tensor data section would start at byte {}, past the file end ({})", data_start, size);
    const uint64_t data_size = tensors_.empty() ? 0 : uint64_t(size) - data_start;
    std::vector<size_t> order(tensors_.size());
    for (size_t i = 0; i < order.size(); i++) {
        GgufTensor& t = tensors_[i];
        order[i] = i;
        uint64_t end = 0;
        if (__builtin_add_overflow(t.offset, uint64_t(t.nbytes), &end) || end > data_size)
            c.bad(t.info_offset, "tensor {}: data [{}, {}) of the data section runs past the file end (the data "
                  "section has {} bytes)", quoted(t.name), t.offset, t.offset + uint64_t(t.nbytes), data_size);
        t.data = data + data_offset_ + size_t(t.offset);
    }
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
        if (tensors_[a].offset != tensors_[b].offset) return tensors_[a].offset < tensors_[b].offset;
        return a < b;
    });
    const GgufTensor* last = nullptr;  // the previous non-empty tensor in data order
    for (size_t i : order) {
        const GgufTensor& t = tensors_[i];
        if (t.nbytes == 0) continue;  // occupies no bytes, overlaps nothing
        if (last && t.offset < last->offset + last->nbytes)
            c.bad(t.info_offset, "tensor {}: data [{}, {}) overlaps tensor {} at [{}, {})", quoted(t.name), t.offset,
                  t.offset + t.nbytes, quoted(last->name), last->offset, last->offset + last->nbytes);
        last = &t;
    }
}

// ---- metadata getters ----------------------------------------------------------------------

const GgufKV* Gguf::find(const std::string& key) const {
    auto it = kv_index_.find(key);
    return it == kv_index_.end() ? nullptr : &kvs_[it->second];
}

const GgufKV& Gguf::require(const std::string& key) const {
    const GgufKV* kv = find(key);
    if (!kv) fail("[gguf] {}: missing key '{}'", where_, key);
    return *kv;
}

void Gguf::bad_type(const GgufKV& kv, const char* wanted) const {
    std::string got = gguf_value_type_name(kv.type);
    if (kv.type == GgufValueType::ARRAY) got = fmt::format("an array of {}", gguf_value_type_name(kv.elem_type));
    fail("[gguf] {}: key {} should be {}, got {} (at byte {})", where_, quoted(kv.key), wanted, got, kv.offset);
}

std::string Gguf::get_string(const std::string& key) const {
    const GgufKV& kv = require(key);
    if (kv.type != GgufValueType::STRING) bad_type(kv, "a string");
    return std::string(reinterpret_cast<const char*>(kv.data), kv.nbytes);
}

std::string Gguf::get_string(const std::string& key, const std::string& def) const {
    return has(key) ? get_string(key) : def;
}

uint32_t Gguf::get_u32(const std::string& key) const {
    const GgufKV& kv = require(key);
    if (!is_integer(kv.type)) bad_type(kv, "an integer");
    IntValue v = read_int(kv.type, kv.data);
    if (v.negative || v.magnitude > UINT32_MAX)
        fail("[gguf] {}: key {} is {}{}, which does not fit in u32 (at byte {})", where_, quoted(key),
             v.negative ? "-" : "", v.magnitude, kv.offset);
    return uint32_t(v.magnitude);
}

uint32_t Gguf::get_u32(const std::string& key, uint32_t def) const { return has(key) ? get_u32(key) : def; }

int64_t Gguf::get_i64(const std::string& key) const {
    const GgufKV& kv = require(key);
    if (!is_integer(kv.type)) bad_type(kv, "an integer");
    IntValue v = read_int(kv.type, kv.data);
    if (!v.negative && v.magnitude > uint64_t(INT64_MAX))
        fail("[gguf] {}: key {} is {}, which does not fit in i64 (at byte {})", where_, quoted(key), v.magnitude,
             kv.offset);
    return v.negative ? int64_t(0 - v.magnitude) : int64_t(v.magnitude);
}

int64_t Gguf::get_i64(const std::string& key, int64_t def) const { return has(key) ? get_i64(key) : def; }

float Gguf::get_f32(const std::string& key) const {
    const GgufKV& kv = require(key);
    if (kv.type == GgufValueType::F32 || kv.type == GgufValueType::F64) return float(read_float(kv.type, kv.data));
    if (is_integer(kv.type)) {
        IntValue v = read_int(kv.type, kv.data);
        return v.negative ? -float(v.magnitude) : float(v.magnitude);
    }
    bad_type(kv, "a number");
}

float Gguf::get_f32(const std::string& key, float def) const { return has(key) ? get_f32(key) : def; }

bool Gguf::get_bool(const std::string& key) const {
    const GgufKV& kv = require(key);
    if (kv.type != GgufValueType::BOOL) bad_type(kv, "a bool");
    return kv.data[0] != 0;
}

bool Gguf::get_bool(const std::string& key, bool def) const { return has(key) ? get_bool(key) : def; }

uint64_t Gguf::array_size(const std::string& key) const {
    const GgufKV& kv = require(key);
    if (kv.type != GgufValueType::ARRAY) bad_type(kv, "an array");
    return kv.count;
}

std::vector<std::string_view> Gguf::get_string_array(const std::string& key) const {
    const GgufKV& kv = require(key);
    if (kv.type != GgufValueType::ARRAY || kv.elem_type != GgufValueType::STRING) bad_type(kv, "an array of strings");
    std::vector<std::string_view> out;
    out.reserve(size_t(kv.count));
    const uint8_t* p = kv.data;
    for (uint64_t i = 0; i < kv.count; i++) {
        // Lengths were checked against the file while parsing.
        size_t n = size_t(load_le(p, 8));
        out.emplace_back(reinterpret_cast<const char*>(p + 8), n);
        p += 8 + n;
    }
    return out;
}

std::vector<float> Gguf::get_f32_array(const std::string& key) const {
    const GgufKV& kv = require(key);
    if (kv.type != GgufValueType::ARRAY || (kv.elem_type != GgufValueType::F32 && kv.elem_type != GgufValueType::F64))
        bad_type(kv, "an array of f32");
    std::vector<float> out(size_t(kv.count));
    const size_t esz = gguf_scalar_size(kv.elem_type);
    for (size_t i = 0; i < out.size(); i++) out[i] = float(read_float(kv.elem_type, kv.data + i * esz));
    return out;
}

std::vector<int32_t> Gguf::get_i32_array(const std::string& key) const {
    const GgufKV& kv = require(key);
    if (kv.type != GgufValueType::ARRAY || !is_integer(kv.elem_type)) bad_type(kv, "an array of integers");
    std::vector<int32_t> out(size_t(kv.count));
    const size_t esz = gguf_scalar_size(kv.elem_type);
    for (size_t i = 0; i < out.size(); i++) {
        IntValue v = read_int(kv.elem_type, kv.data + i * esz);
        if (v.magnitude > (v.negative ? uint64_t(INT32_MAX) + 1 : uint64_t(INT32_MAX)))
            fail("[gguf] {}: key {} element {} is {}{}, which does not fit in i32 (at byte {})", where_, quoted(key),
                 i, v.negative ? "-" : "", v.magnitude, kv.offset);
        out[i] = v.negative ? int32_t(-int64_t(v.magnitude)) : int32_t(v.magnitude);
    }
    return out;
}

const GgufTensor* Gguf::find_tensor(const std::string& name) const {
    auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

// ---- GgufFile ------------------------------------------------------------------------------

GgufFile::Mapping::~Mapping() {
    if (addr) munmap(addr, size);
}

GgufFile::GgufFile(const std::string& path) : GgufFile(map_file(path), path) {}

GgufFile::GgufFile(std::unique_ptr<Mapping> map, const std::string& path)
    : Gguf(static_cast<const uint8_t*>(map->addr), map->size, path), map_(std::move(map)) {}

GgufFile::~GgufFile() = default;

std::unique_ptr<GgufFile::Mapping> GgufFile::map_file(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail("[gguf] {}: cannot open ({})", path, errno_text());
    struct stat st;
    if (fstat(fd, &st) != 0) {
        std::string why = errno_text();
        ::close(fd);
        fail("[gguf] {}: cannot stat ({})", path, why);
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        fail("[gguf] {}: not a regular file", path);
    }
    size_t size = size_t(st.st_size);
    if (size < kHeaderSize) {
        ::close(fd);
        fail("[gguf] {}: file is {} bytes, shorter than the {}-byte GGUF header", path, size, kHeaderSize);
    }
    void* addr = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    ::close(fd);  // the mapping keeps the file alive
    if (addr == MAP_FAILED) fail("[gguf] {}: mmap failed ({})", path, std::strerror(map_errno));
    auto m = std::make_unique<GgufFile::Mapping>();
    m->addr = addr;
    m->size = size;
    return m;
}

bool is_gguf_path(const std::string& path) {
    if (path.size() < 5) return false;
    std::string ext = path.substr(path.size() - 5);
    for (char& ch : ext) ch = char(std::tolower(uint8_t(ch)));
    return ext == ".gguf";
}

}  // namespace tuner
