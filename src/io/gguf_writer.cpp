// GGUF v3 writer. Format: ggml docs/gguf.md. Written through PATH.tmp + rename, like
// SafetensorsWriter.
#include "io/gguf_writer.h"

#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "io/atomic_file.h"
#include "quant/quant.h"

namespace tuner {

namespace {

constexpr uint32_t kVersion = 3;
constexpr size_t kMaxDims = 4;  // GGML_MAX_DIMS

// Little-endian bytes of an integer of n bytes, appended to out (independent of the host).
void append_le(std::string& out, uint64_t v, size_t n) {
    for (size_t i = 0; i < n; i++) out.push_back(char(uint8_t(v >> (8 * i))));
}

void append_string(std::string& out, const std::string& s) {
    append_le(out, s.size(), 8);
    out += s;
}

template <typename F>
uint64_t bits_of(F v) {
    static_assert(sizeof(F) == 4 || sizeof(F) == 8);
    if constexpr (sizeof(F) == 4) {
        uint32_t b;
        std::memcpy(&b, &v, 4);
        return b;
    } else {
        uint64_t b;
        std::memcpy(&b, &v, 8);
        return b;
    }
}

}  // namespace

uint32_t dtype_to_ggml_type(DType t) {
    switch (t) {
        case DType::F32: return 0;
        case DType::F16: return 1;
        case DType::Q4_0: return 2;
        case DType::Q8_0: return 8;
        case DType::Q4_K: return 12;
        case DType::Q5_K: return 13;
        case DType::Q6_K: return 14;
        case DType::I8: return 24;
        case DType::I32: return 26;
        case DType::I64: return 27;
        case DType::F64: return 28;
        case DType::BF16: return 30;
        default: break;
    }
    TUNER_ASSERT_MSG(false, "dtype has no ggml type number");
    return 0;
}

GgufWriter::GgufWriter(std::string path, uint32_t alignment)
    : path_(std::move(path)), tmp_(path_ + ".tmp"), alignment_(alignment) {
    TUNER_ASSERT_MSG(alignment > 0 && (alignment & (alignment - 1)) == 0, "GGUF alignment must be a power of two");
    if (alignment != 32) add_u32("general.alignment", alignment);
}

GgufWriter::~GgufWriter() {
    if (file_) std::fclose(file_);
    file_ = nullptr;
    if (!finished_) std::remove(tmp_.c_str());
}

// ---- metadata -------------------------------------------------------------------------------

void GgufWriter::begin_kv(const std::string& key, GgufValueType type) {
    TUNER_ASSERT_MSG(file_ == nullptr && !finished_, "add metadata before writing tensor data");
    TUNER_ASSERT_MSG(!key.empty(), "empty GGUF key");
    TUNER_ASSERT_MSG(keys_.insert(key).second, "GGUF key added twice");
    append_string(kv_, key);
    append_le(kv_, uint32_t(type), 4);
    kv_count_++;
}

void GgufWriter::add_u8(const std::string& k, uint8_t v) { begin_kv(k, GgufValueType::U8); append_le(kv_, v, 1); }
void GgufWriter::add_i8(const std::string& k, int8_t v) {
    begin_kv(k, GgufValueType::I8);
    append_le(kv_, uint8_t(v), 1);
}
void GgufWriter::add_u16(const std::string& k, uint16_t v) { begin_kv(k, GgufValueType::U16); append_le(kv_, v, 2); }
void GgufWriter::add_i16(const std::string& k, int16_t v) {
    begin_kv(k, GgufValueType::I16);
    append_le(kv_, uint16_t(v), 2);
}
void GgufWriter::add_u32(const std::string& k, uint32_t v) { begin_kv(k, GgufValueType::U32); append_le(kv_, v, 4); }
void GgufWriter::add_i32(const std::string& k, int32_t v) {
    begin_kv(k, GgufValueType::I32);
    append_le(kv_, uint32_t(v), 4);
}
void GgufWriter::add_u64(const std::string& k, uint64_t v) { begin_kv(k, GgufValueType::U64); append_le(kv_, v, 8); }
void GgufWriter::add_i64(const std::string& k, int64_t v) {
    begin_kv(k, GgufValueType::I64);
    append_le(kv_, uint64_t(v), 8);
}
void GgufWriter::add_f32(const std::string& k, float v) {
    begin_kv(k, GgufValueType::F32);
    append_le(kv_, bits_of(v), 4);
}
void GgufWriter::add_f64(const std::string& k, double v) {
    begin_kv(k, GgufValueType::F64);
    append_le(kv_, bits_of(v), 8);
}
void GgufWriter::add_bool(const std::string& k, bool v) {
    begin_kv(k, GgufValueType::BOOL);
    append_le(kv_, v ? 1 : 0, 1);
}

void GgufWriter::add_string(const std::string& k, const std::string& v) {
    begin_kv(k, GgufValueType::STRING);
    append_string(kv_, v);
}

void GgufWriter::add_string_array(const std::string& k, const std::vector<std::string>& v) {
    begin_kv(k, GgufValueType::ARRAY);
    append_le(kv_, uint32_t(GgufValueType::STRING), 4);
    append_le(kv_, v.size(), 8);
    for (const std::string& s : v) append_string(kv_, s);
}

void GgufWriter::add_f32_array(const std::string& k, const std::vector<float>& v) {
    begin_kv(k, GgufValueType::ARRAY);
    append_le(kv_, uint32_t(GgufValueType::F32), 4);
    append_le(kv_, v.size(), 8);
    for (float f : v) append_le(kv_, bits_of(f), 4);
}

void GgufWriter::add_i32_array(const std::string& k, const std::vector<int32_t>& v) {
    begin_kv(k, GgufValueType::ARRAY);
    append_le(kv_, uint32_t(GgufValueType::I32), 4);
    append_le(kv_, v.size(), 8);
    for (int32_t x : v) append_le(kv_, uint32_t(x), 4);
}

void GgufWriter::add_array(const std::string& k, GgufValueType elem, const void* data, uint64_t count) {
    const size_t size = gguf_scalar_size(elem);
    TUNER_ASSERT_MSG(size > 0, "add_array takes fixed-size element types (strings: add_string_array)");
    begin_kv(k, GgufValueType::ARRAY);
    append_le(kv_, uint32_t(elem), 4);
    append_le(kv_, count, 8);
    kv_.append(static_cast<const char*>(data), size_t(count) * size);
}

// ---- tensors --------------------------------------------------------------------------------

void GgufWriter::declare(const std::string& name, DType dtype, const std::vector<int64_t>& shape) {
    TUNER_ASSERT_MSG(file_ == nullptr && !finished_, "declare every tensor before the first write");
    TUNER_ASSERT_MSG(!name.empty() && name.size() < 64, "GGUF tensor names are 1 to 63 bytes (GGML_MAX_NAME)");
    TUNER_ASSERT_MSG(names_.insert(name).second, "tensor declared twice");
    TUNER_ASSERT_MSG(!shape.empty() && shape.size() <= kMaxDims, "GGUF tensors have 1 to 4 dimensions");
    (void)dtype_to_ggml_type(dtype);  // asserts for dtypes GGUF cannot hold
    int64_t n = 1;
    for (int64_t d : shape) {
        TUNER_ASSERT(d >= 0);
        TUNER_ASSERT(!__builtin_mul_overflow(n, d, &n));
    }
    TUNER_ASSERT_MSG(shape.back() % dtype_block_elems(dtype) == 0, "cols must be a multiple of the block size");
    const size_t nbytes = dtype_nbytes(dtype, n);
    entries_.push_back({name, dtype, shape, nbytes, data_size_});
    data_size_ += (nbytes + alignment_ - 1) / alignment_ * alignment_;
}

size_t GgufWriter::tensor_nbytes(const std::string& name) const {
    for (const Entry& e : entries_)
        if (e.name == name) return e.nbytes;
    TUNER_ASSERT_MSG(false, "tensor not declared");
    return 0;
}

void GgufWriter::put(const void* data, size_t n) {
    if (n == 0) return;
    if (std::fwrite(data, 1, n, file_) != n) atomic_write_failed("gguf", tmp_, errno);
    written_ += n;
}

void GgufWriter::pad_to_alignment() {
    static const char zeros[256] = {};
    size_t pad = size_t((alignment_ - written_ % alignment_) % alignment_);
    while (pad > 0) {
        size_t k = pad < sizeof(zeros) ? pad : sizeof(zeros);
        put(zeros, k);
        pad -= k;
    }
}

void GgufWriter::open_and_write_header() {
    TUNER_ASSERT(file_ == nullptr && !finished_);
    file_ = std::fopen(tmp_.c_str(), "wb");
    if (!file_) fail("[gguf] {}: cannot create ({})", tmp_, std::strerror(errno));
    // Tensor data is written in parts of a few MB; a large stdio buffer keeps the calls few.
    std::setvbuf(file_, nullptr, _IOFBF, size_t(1) << 20);
    std::string head = "GGUF";
    append_le(head, kVersion, 4);
    append_le(head, entries_.size(), 8);
    append_le(head, kv_count_, 8);
    put(head.data(), head.size());
    put(kv_.data(), kv_.size());
    std::string infos;
    for (const Entry& e : entries_) {
        append_string(infos, e.name);
        append_le(infos, uint32_t(e.shape.size()), 4);
        for (size_t i = e.shape.size(); i-- > 0;) append_le(infos, uint64_t(e.shape[i]), 8);  // ggml order
        append_le(infos, dtype_to_ggml_type(e.dtype), 4);
        append_le(infos, e.offset, 8);
    }
    put(infos.data(), infos.size());
    pad_to_alignment();  // the data section starts aligned
    // Zero-size tensors at the front are complete already.
    while (next_ < entries_.size() && entries_[next_].nbytes == 0) next_++;
}

void GgufWriter::write(const std::string& name, const void* data, size_t nbytes) {
    TUNER_ASSERT_MSG(!finished_, "write after finish");
    if (!file_) open_and_write_header();
    TUNER_ASSERT_MSG(next_ < entries_.size(), "more data than the declared tensors hold");
    const Entry& e = entries_[next_];
    TUNER_ASSERT_MSG(e.name == name, "tensors must be written in declaration order");
    TUNER_ASSERT_MSG(done_ + nbytes <= e.nbytes, "more bytes than the tensor holds");
    put(data, nbytes);
    done_ += nbytes;
    if (done_ == e.nbytes) {
        pad_to_alignment();
        done_ = 0;
        next_++;
        while (next_ < entries_.size() && entries_[next_].nbytes == 0) next_++;
    }
}

void GgufWriter::finish() {
    TUNER_ASSERT_MSG(!finished_, "finish called twice");
    if (!file_) open_and_write_header();
    TUNER_ASSERT_MSG(next_ == entries_.size(), "finish before every declared tensor was written");
    FILE* f = file_;
    file_ = nullptr;
    atomic_file_finish(f, tmp_, path_, "gguf");
    finished_ = true;
}

}  // namespace tuner
