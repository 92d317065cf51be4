// GGUF v3 writer: metadata of every value type, tensor infos, aligned tensor data, streamed
// tensor by tensor (a 7B model is written without holding it in memory).
//
// Layout written (ggml docs/gguf.md; the reader in io/gguf.h checks the same things):
//   "GGUF" | u32 3 | u64 tensor_count | u64 kv_count
//   kv_count x     { string key | u32 value_type | value }            in the order added
//   tensor_count x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
//   zero padding to the alignment | tensor data, each tensor padded with zeros to the alignment
// Strings are u64 length + bytes (no terminator); arrays u32 element type + u64 count +
// elements; everything little-endian. Shapes are given row-major ((rows, cols), as PyTorch
// and safetensors) and written in ggml order (ne[0] = cols, the contiguous dimension).
// Offsets are relative to the data section and multiples of the alignment (32, GGUF's
// default, unless the constructor is given another power of two, which is then recorded as
// the u32 key general.alignment, the first key of the file).
//
// The file is written to PATH.tmp and renamed to PATH by finish() after an fsync; a writer
// destroyed before finish() (an exception, a full disk) removes PATH.tmp, so PATH is either
// the complete previous file or the complete new one. Errors are tuner::Error naming the file:
//   [gguf] out/model.gguf.tmp: write failed (No space left on device)
// Misuse (a key twice, a tensor written out of order or with the wrong size) is an assert.
//
//   GgufWriter w("model.gguf");
//   w.add_string("general.architecture", "llama");
//   w.add_u32("llama.block_count", 16);
//   w.add_string_array("tokenizer.ggml.tokens", tokens);
//   w.declare("token_embd.weight", DType::Q8_0, {V, C});      // every tensor before any data
//   w.declare("output_norm.weight", DType::F32, {C});
//   w.write("token_embd.weight", blocks, nbytes);             // in declaration order; a
//   w.write("output_norm.weight", norm, C * 4);               // tensor may come in parts
//   w.finish();
#pragma once

#include <cstdint>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "io/gguf.h"  // GgufValueType

namespace tuner {

// The ggml_type number of a tuner DType (F32 0, F16 1, Q4_0 2, Q8_0 8, Q4_K 12, Q5_K 13,
// Q6_K 14, I8 24, I32 26, I64 27, F64 28, BF16 30). Asserts for types GGUF has no number for
// (NF4, U8, BOOL).
uint32_t dtype_to_ggml_type(DType t);

class GgufWriter {
  public:
    explicit GgufWriter(std::string path, uint32_t alignment = 32);
    ~GgufWriter();
    GgufWriter(const GgufWriter&) = delete;
    GgufWriter& operator=(const GgufWriter&) = delete;

    const std::string& path() const { return path_; }

    // ---- metadata (before the first write) ----
    void add_u8(const std::string& key, uint8_t v);
    void add_i8(const std::string& key, int8_t v);
    void add_u16(const std::string& key, uint16_t v);
    void add_i16(const std::string& key, int16_t v);
    void add_u32(const std::string& key, uint32_t v);
    void add_i32(const std::string& key, int32_t v);
    void add_u64(const std::string& key, uint64_t v);
    void add_i64(const std::string& key, int64_t v);
    void add_f32(const std::string& key, float v);
    void add_f64(const std::string& key, double v);
    void add_bool(const std::string& key, bool v);
    void add_string(const std::string& key, const std::string& v);
    void add_string_array(const std::string& key, const std::vector<std::string>& v);
    void add_f32_array(const std::string& key, const std::vector<float>& v);
    void add_i32_array(const std::string& key, const std::vector<int32_t>& v);
    // An array of fixed-size elements (any value type but STRING and ARRAY): count elements of
    // the type's size at data, already little-endian.
    void add_array(const std::string& key, GgufValueType elem_type, const void* data, uint64_t count);
    bool has_key(const std::string& key) const { return keys_.count(key) != 0; }

    // ---- tensors ----
    // Declares a tensor of `dtype` with a row-major shape (1 to 4 dimensions). For block types
    // the last dimension (cols) must be a multiple of the block size.
    void declare(const std::string& name, DType dtype, const std::vector<int64_t>& shape);
    // Appends nbytes of the tensor's data (raw bytes in its dtype: GGUF blocks for block
    // types). Tensors are written in declaration order; a tensor may come in several parts,
    // and the next tensor starts once the previous one has all its bytes (tensors of zero
    // bytes need no call).
    void write(const std::string& name, const void* data, size_t nbytes);
    // Bytes one declared tensor takes in the file (without padding).
    size_t tensor_nbytes(const std::string& name) const;
    // Writes what is left (the header when nothing was written yet), syncs and renames.
    void finish();
    // Size of the finished file.
    uint64_t file_size() const { return written_; }

  private:
    struct Entry {
        std::string name;
        DType dtype;
        std::vector<int64_t> shape;
        size_t nbytes;
        uint64_t offset;
    };
    void begin_kv(const std::string& key, GgufValueType type);
    void open_and_write_header();
    void put(const void* data, size_t n);  // to the file, counted
    void pad_to_alignment();

    std::string path_, tmp_;
    uint32_t alignment_;
    std::string kv_;  // serialised key-value pairs
    uint64_t kv_count_ = 0;
    std::set<std::string> keys_;
    std::vector<Entry> entries_;
    std::set<std::string> names_;
    uint64_t data_size_ = 0;  // bytes of the data section so far (declared)
    size_t next_ = 0;         // index of the tensor being written
    size_t done_ = 0;         // bytes of entries_[next_] written
    FILE* file_ = nullptr;
    uint64_t written_ = 0;
    bool finished_ = false;
};

}  // namespace tuner
