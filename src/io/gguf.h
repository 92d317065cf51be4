// GGUF: read (memory-mapped, every count, length and offset checked before use).
//
// Format (ggml docs/gguf.md), all little-endian:
//   "GGUF" | u32 version (2 or 3) | u64 tensor_count | u64 kv_count
//   kv_count x   { string key | u32 value_type | value }
//   tensor_count x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
//   padding to `general.alignment` (u32, default 32) | tensor data
// A string is u64 length + bytes (no terminator); an array value is u32 element type + u64 count
// + elements. Tensor offsets are relative to the start of the data section and are multiples of
// the alignment. Dimensions are in ggml order: ne[0] is the fastest-varying (contiguous) one, so
// a PyTorch (rows, cols) matrix is stored as ne = {cols, rows}; shape() gives the row-major order.
// Block-quantised types store each row of ne[0] elements as ne[0] / block_elems whole blocks.
//
// The reader checks: magic and version; every string length, array count, tensor count and KV
// count against the bytes left in the file before anything is allocated (a header claiming 2^60
// tensors is an error, not an allocation); value and element types known, arrays of arrays
// refused; bools 0 or 1; keys and tensor names unique; general.alignment a u32 power of two;
// at most 4 dimensions, each below 2^63, with a product that does not overflow; the ggml type
// known and ne[0] a multiple of its block size; each tensor's data aligned, inside the file,
// and not overlapping another tensor's. Every problem is a tuner::Error that names the file,
// the key or tensor and the byte offset:
//   [gguf] model.gguf: tensor 'blk.0.attn_q.weight': data [1024, 5120) of the data section runs past
//   the file end (the data section has 4096 bytes) (at byte 812)
//
//   GgufFile f("model.gguf");
//   std::string arch = f.get_string("general.architecture");
//   uint32_t layers = f.get_u32(arch + ".block_count");
//   const GgufTensor* t = f.find_tensor("token_embd.weight");   // null if absent
//   DType dt = t->dtype(f.path());   // F32/F16/BF16/Q8_0/Q4_0/Q4_K/Q5_K/Q6_K, else an Error
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"

namespace tuner {

// Metadata value types (gguf.md gguf_metadata_value_type).
enum class GgufValueType : uint32_t {
    U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7,
    STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};
const char* gguf_value_type_name(GgufValueType t);  // "u32", "string", ... ("?" when unknown)
size_t gguf_scalar_size(GgufValueType t);        // bytes of one value; 0 for string, array, unknown

// ggml tensor types (ggml.h enum ggml_type) with their block layout: a row of ne[0] elements is
// ne[0] / block_elems blocks of block_bytes bytes. Returns null for numbers ggml does not
// define (or has removed, like 4, 5 and the Q4_0_4_4 family).
struct GgmlTypeInfo {
    const char* name;  // "F32", "Q4_K", ...
    uint32_t block_elems;
    uint32_t block_bytes;
};
const GgmlTypeInfo* ggml_type_info(uint32_t ggml_type);
// The tuner DType of a ggml type: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K (and F64, I8,
// I32, I64). False for the others (Q2_K, IQ4_XS, ...): files holding them still parse.
bool ggml_type_to_dtype(uint32_t ggml_type, DType* out);

struct GgufKV {
    std::string key;
    GgufValueType type = GgufValueType::U8;
    GgufValueType elem_type = GgufValueType::U8;  // arrays only
    uint64_t count = 1;      // arrays: number of elements; scalars: 1
    const uint8_t* data = nullptr;  // the value (a string: its bytes; an array: its first element)
    size_t nbytes = 0;       // bytes at data (a string's length; an array's whole payload)
    size_t offset = 0;       // file offset of the key, for messages
};

struct GgufTensor {
    std::string name;
    uint32_t ggml_type = 0;
    std::vector<int64_t> ne;   // ggml order: ne[0] is the fastest-varying dimension
    uint64_t offset = 0;       // relative to the data section
    int64_t numel = 0;
    size_t nbytes = 0;
    const uint8_t* data = nullptr;  // inside the mapping (read-only)
    size_t info_offset = 0;    // file offset of the tensor info, for messages

    // Row-major shape, outermost first (ne reversed): token_embd ne {C, V} -> {V, C}.
    std::vector<int64_t> shape() const { return std::vector<int64_t>(ne.rbegin(), ne.rend()); }
    const char* type_name() const;  // "Q4_K"
    // The tuner DType; an unsupported ggml type is a tuner::Error
    //   [gguf] WHERE: tensor 'x' has type Q2_K, which tuner does not support (...)
    DType dtype(const std::string& where) const;
};

// The parsed contents of a GGUF image (bytes in memory). Metadata values and tensor data point
// into the image, which must outlive this object.
class Gguf {
  public:
    // Parses and validates size bytes at data; `where` names the file in messages.
    Gguf(const uint8_t* data, size_t size, std::string where);

    const std::string& path() const { return where_; }
    uint32_t version() const { return version_; }
    size_t alignment() const { return alignment_; }
    size_t data_offset() const { return data_offset_; }  // start of the tensor data section
    size_t size() const { return size_; }

    // ---- metadata ----
    const std::vector<GgufKV>& kvs() const { return kvs_; }  // in file order
    const GgufKV* find(const std::string& key) const;        // null if absent
    bool has(const std::string& key) const { return find(key) != nullptr; }

    // Typed getters. A missing key (for the forms without a default) or a value of another type
    // is a tuner::Error naming the key. Integers widen: get_u32 takes any integer type whose
    // value fits in u32, get_i64 any that fits in i64. get_f32 takes f32, f64 and integers.
    std::string get_string(const std::string& key) const;
    std::string get_string(const std::string& key, const std::string& def) const;
    uint32_t get_u32(const std::string& key) const;
    uint32_t get_u32(const std::string& key, uint32_t def) const;
    int64_t get_i64(const std::string& key) const;
    int64_t get_i64(const std::string& key, int64_t def) const;
    float get_f32(const std::string& key) const;
    float get_f32(const std::string& key, float def) const;
    bool get_bool(const std::string& key) const;
    bool get_bool(const std::string& key, bool def) const;
    // Arrays. Strings are views into the image. get_i32_array widens any integer element type
    // whose values fit; get_f32_array takes f32 or f64 elements.
    std::vector<std::string_view> get_string_array(const std::string& key) const;
    std::vector<float> get_f32_array(const std::string& key) const;
    std::vector<int32_t> get_i32_array(const std::string& key) const;
    uint64_t array_size(const std::string& key) const;  // error unless an array

    // ---- tensors ----
    const std::vector<GgufTensor>& tensors() const { return tensors_; }  // in file order of the infos
    const GgufTensor* find_tensor(const std::string& name) const;       // null if absent

  private:
    const GgufKV& require(const std::string& key) const;
    [[noreturn]] void bad_type(const GgufKV& kv, const char* wanted) const;

    std::string where_;
    size_t size_ = 0;
    uint32_t version_ = 0;
    size_t alignment_ = 32;
    size_t data_offset_ = 0;
    std::vector<GgufKV> kvs_;
    std::map<std::string, size_t, std::less<>> kv_index_;
    std::vector<GgufTensor> tensors_;
    std::map<std::string, size_t, std::less<>> tensor_index_;
};

// One memory-mapped .gguf file.
class GgufFile : public Gguf {
  public:
    explicit GgufFile(const std::string& path);
    ~GgufFile();
    GgufFile(const GgufFile&) = delete;
    GgufFile& operator=(const GgufFile&) = delete;

  private:
    struct Mapping {
        void* addr = nullptr;
        size_t size = 0;
        ~Mapping();
    };
    static std::unique_ptr<Mapping> map_file(const std::string& path);
    GgufFile(std::unique_ptr<Mapping> map, const std::string& path);
    std::unique_ptr<Mapping> map_;
};

// True when path names a GGUF file by its extension (".gguf", any case).
bool is_gguf_path(const std::string& path);

}  // namespace tuner
