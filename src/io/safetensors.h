// safetensors: read (memory-mapped, header validated) and write.
//
// Format: 8-byte little-endian header length n, n bytes of JSON
//   {"__metadata__": {str: str}, "name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}}
// then the data; offsets are relative to the end of the header.
// The reader checks: header length inside the file, valid JSON object, every entry an object with
// a known dtype, an integer shape, two offsets with begin <= end, (product of shape) x dtype size
// == end - begin (with overflow checks), ranges inside the file, and no two ranges overlapping.
// Each problem is a tuner::Error naming the file and the tensor:
//   [safetensors] model.safetensors: tensor 'x' ends at byte 812 past the file end (640)
//
//   SafetensorsFile f("model.safetensors");
//   const SafetensorsTensor* t = f.find("model.norm.weight");   // null if absent
//   Tensor view = t->view();                                    // points into the mapping
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace tuner {

struct SafetensorsTensor {
    std::string name;
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    // Inside the mapping. Aligned to its dtype when the file pads its header to 8 bytes, as
    // transformers and SafetensorsWriter do; the format itself does not promise alignment.
    const uint8_t* data = nullptr;
    size_t nbytes = 0;
    Tensor view() const;  // read-only in spirit: the mapping is PROT_READ
    // Copies the elements to dst as f32, converting BF16/F16 (a float dtype; nbytes / size elements).
    void to_f32(float* dst) const;
};

// Parses and validates a header (the JSON text) against a data section of data_size bytes.
// Used by SafetensorsFile and by the fuzzer; `where` names the file in errors. The returned
// tensors have data == nullptr + offset (callers add the data base).
struct SafetensorsHeader {
    std::vector<SafetensorsTensor> tensors;  // in file order of their data offsets
    std::map<std::string, std::string> metadata;
    std::vector<size_t> offsets;  // begin offset of each tensor, parallel to tensors
};
SafetensorsHeader parse_safetensors_header(const char* json_text, size_t json_size, size_t data_size,
                                           const std::string& where);

// One memory-mapped .safetensors file.
class SafetensorsFile {
  public:
    explicit SafetensorsFile(const std::string& path);
    ~SafetensorsFile();
    SafetensorsFile(const SafetensorsFile&) = delete;
    SafetensorsFile& operator=(const SafetensorsFile&) = delete;

    const std::string& path() const { return path_; }
    const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
    const std::map<std::string, std::string>& metadata() const { return metadata_; }
    const SafetensorsTensor* find(const std::string& name) const;

  private:
    std::string path_;
    void* map_ = nullptr;
    size_t map_size_ = 0;
    std::vector<SafetensorsTensor> tensors_;
    std::map<std::string, size_t> index_;
    std::map<std::string, std::string> metadata_;
};

// A model's weights: model.safetensors, or the shards listed in model.safetensors.index.json
// ("weight_map": {tensor name: shard file}). Every tensor of the index must exist in its shard.
class SafetensorsModel {
  public:
    explicit SafetensorsModel(const std::string& model_dir);
    const SafetensorsTensor* find(const std::string& name) const;
    // Drops the resident pages of t's bytes from this process (madvise MADV_DONTNEED on the
    // read-only mapping; a later read faults them in again from the file). Loaders call it after
    // copying a tensor out so that RSS does not grow by the size of the model files.
    void release(const SafetensorsTensor& t) const;
    // Like find, but a missing tensor is a tuner::Error naming the folder and the tensor.
    const SafetensorsTensor& get(const std::string& name) const;
    std::vector<std::string> names() const;
    const std::string& dir() const { return dir_; }

  private:
    std::string dir_;
    std::vector<std::unique_ptr<SafetensorsFile>> files_;
    std::map<std::string, const SafetensorsTensor*> index_;
};

// Writes a .safetensors file. Tensors are streamed one by one (a 7B model is written without
// holding it in memory): declare every tensor first, then write their data in the same order.
// The file is written to PATH.tmp and renamed to PATH by finish(); a writer destroyed before
// finish() removes the temporary file.
//
//   SafetensorsWriter w("out/model.safetensors");
//   w.declare("a", DType::F32, {2, 3});  w.declare("b", DType::BF16, {4});
//   w.write("a", ptr_a);  w.write("b", ptr_b);   // raw bytes in the declared dtype
//   w.finish();
class SafetensorsWriter {
  public:
    explicit SafetensorsWriter(std::string path, std::map<std::string, std::string> metadata = {});
    ~SafetensorsWriter();
    void declare(const std::string& name, DType dtype, const std::vector<int64_t>& shape);
    void write(const std::string& name, const void* data);  // in declaration order
    void finish();

  private:
    struct Entry {
        std::string name;
        DType dtype;
        std::vector<int64_t> shape;
        size_t nbytes;
    };
    std::string path_;
    std::map<std::string, std::string> metadata_;
    std::vector<Entry> entries_;
    size_t next_ = 0;
    FILE* file_ = nullptr;
    bool finished_ = false;
    void open_and_write_header();
};

}  // namespace tuner
