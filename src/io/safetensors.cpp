// safetensors reader and writer. Format: https://github.com/huggingface/safetensors (README,
// "Format"): u64 little-endian header size N, N bytes of UTF-8 JSON, then the byte buffer.
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/json_util.h"
#include "io/mapped_pages.h"

namespace tuner {

namespace {

using json = nlohmann::json;

// The reference implementation refuses headers above 100 MB; a real header is a few hundred KB
// even for the largest sharded models, so anything bigger is a corrupt or hostile file.
constexpr uint64_t kMaxHeaderSize = 100'000'000;

// Reads a non-negative JSON integer into *out. Returns false (with *why set) otherwise.
bool get_unsigned(const json& v, uint64_t* out, const char** why) {
    if (v.is_number_unsigned()) {
        *out = v.get<uint64_t>();
        return true;
    }
    if (v.is_number_integer()) {  // signed: nlohmann stores non-negative values as unsigned
        *why = "is negative";
        return false;
    }
    *why = "is not an integer";
    return false;
}

std::string errno_text() { return std::strerror(errno); }

}  // namespace

Tensor SafetensorsTensor::view() const {
    // A file may legitimately hold tensors of higher rank (e.g. conv3d patch embeddings); only
    // viewing them is unsupported, so this is a user-facing error rather than an assert.
    if (shape.size() > size_t(kMaxDims))
        fail("[safetensors] tensor '{}' has {} dimensions; at most {} are supported", name, shape.size(),
             kMaxDims);
    return Tensor::view(const_cast<uint8_t*>(data), dtype, shape);
}

void SafetensorsTensor::to_f32(float* dst) const {
    TUNER_ASSERT(dtype_is_float(dtype));
    if (dtype == DType::F32) std::memcpy(dst, data, nbytes);
    else convert_to_f32(dst, data, dtype, nbytes / dtype_size(dtype));
}

// ---- header parsing ------------------------------------------------------------------------

SafetensorsHeader parse_safetensors_header(const char* json_text, size_t json_size, size_t data_size,
                                           const std::string& where) {
    // nlohmann keeps the last of duplicate keys silently; a parser callback sees every key, so
    // record the top-level ones (depth 1: the tensor names) and report a repeat after parsing.
    std::set<std::string> seen;
    std::string duplicate;
    auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
        if (event == json::parse_event_t::key && depth == 1 && duplicate.empty()) {
            const std::string& key = parsed.get_ref<const std::string&>();
            if (!seen.insert(key).second) duplicate = key;
        }
        return true;
    };
    // nlohmann stops at a NUL byte as if the input ended there, so "{}\0garbage" would pass;
    // the format (and the reference parser) allow only JSON plus trailing spaces.
    if (const void* nul = std::memchr(json_text, '\0', json_size))
        fail("[safetensors] {}: header is not valid JSON: NUL byte at offset {}", where,
             static_cast<const char*>(nul) - json_text);
    json root;
    try {
        root = json::parse(json_text, json_text + json_size, callback);
    } catch (const json::exception& e) {
        fail("[safetensors] {}: header is not valid JSON: {}", where, e.what());
    }
    if (!root.is_object()) fail("[safetensors] {}: header is a JSON {}, not an object", where, json_type_name(root));
    if (!duplicate.empty()) fail("[safetensors] {}: tensor '{}': appears twice in the header", where, duplicate);

    SafetensorsHeader header;
    struct Range {
        uint64_t begin, end;
        size_t index;
    };
    std::vector<Range> ranges;
    std::vector<SafetensorsTensor> tensors;
    for (auto item = root.begin(); item != root.end(); ++item) {
        // Named variables, not a structured binding: clang < 16 cannot capture those in `bad`.
        const std::string& name = item.key();
        const json& entry = item.value();
        if (name == "__metadata__") {
            if (!entry.is_object())
                fail("[safetensors] {}: __metadata__ should be an object, got {}", where, json_type_name(entry));
            for (const auto& [key, value] : entry.items()) {
                if (!value.is_string())
                    fail("[safetensors] {}: __metadata__ value of '{}' should be a string, got {}", where, key,
                         json_type_name(value));
                header.metadata[key] = value.get<std::string>();
            }
            continue;
        }
        auto bad = [&](const std::string& problem) -> void {
            fail("[safetensors] {}: tensor '{}': {}", where, name, problem);
        };
        if (!entry.is_object()) bad(fmt::format("entry should be an object, got {}", json_type_name(entry)));

        SafetensorsTensor t;
        t.name = name;

        auto dtype_it = entry.find("dtype");
        if (dtype_it == entry.end()) bad("missing 'dtype'");
        if (!dtype_it->is_string()) bad(fmt::format("'dtype' should be a string, got {}", json_type_name(*dtype_it)));
        const std::string& dtype_name_str = dtype_it->get_ref<const std::string&>();
        if (!dtype_from_name(dtype_name_str, &t.dtype)) bad(fmt::format("unknown dtype '{}'", dtype_name_str));

        auto shape_it = entry.find("shape");
        if (shape_it == entry.end()) bad("missing 'shape'");
        if (!shape_it->is_array()) bad(fmt::format("'shape' should be an array, got {}", json_type_name(*shape_it)));
        uint64_t numel = 1;
        bool overflow = false;
        for (const json& d : *shape_it) {
            uint64_t dim = 0;
            const char* why = "";
            if (!get_unsigned(d, &dim, &why)) bad(fmt::format("shape {} has a dimension that {}", shape_it->dump(), why));
            if (dim > uint64_t(INT64_MAX)) bad(fmt::format("shape {} has a dimension that is too large", shape_it->dump()));
            t.shape.push_back(int64_t(dim));
            overflow = overflow || __builtin_mul_overflow(numel, dim, &numel);
        }
        uint64_t nbytes = 0;
        overflow = overflow || __builtin_mul_overflow(numel, uint64_t(dtype_size(t.dtype)), &nbytes);
        if (overflow) {
            // A shape with a zero dimension has no bytes, however large the others are.
            bool has_zero = std::any_of(t.shape.begin(), t.shape.end(), [](int64_t d) { return d == 0; });
            if (!has_zero) bad(fmt::format("shape {} overflows 64 bits", shape_it->dump()));
            nbytes = 0;
        }

        auto off_it = entry.find("data_offsets");
        if (off_it == entry.end()) bad("missing 'data_offsets'");
        if (!off_it->is_array() || off_it->size() != 2)
            bad(fmt::format("'data_offsets' should be an array [begin, end], got {}", off_it->dump()));
        uint64_t begin = 0, end = 0;
        const char* why = "";
        if (!get_unsigned((*off_it)[0], &begin, &why) || !get_unsigned((*off_it)[1], &end, &why))
            bad(fmt::format("'data_offsets' {} has an offset that {}", off_it->dump(), why));
        if (begin > end) bad(fmt::format("data_offsets begin {} is after end {}", begin, end));
        if (end - begin != nbytes)
            bad(fmt::format("data_offsets give {} bytes but {} {} needs {} bytes", end - begin, dtype_name(t.dtype),
                            shape_it->dump(), nbytes));
        if (end > data_size) bad(fmt::format("ends at byte {} past the file end ({})", end, data_size));

        t.nbytes = size_t(nbytes);
        ranges.push_back({begin, end, tensors.size()});
        tensors.push_back(std::move(t));
    }

    // File order; ties (zero-size tensors at the same offset) broken by name for determinism.
    std::sort(ranges.begin(), ranges.end(), [&](const Range& a, const Range& b) {
        if (a.begin != b.begin) return a.begin < b.begin;
        if (a.end != b.end) return a.end < b.end;
        return tensors[a.index].name < tensors[b.index].name;
    });
    // Zero-size tensors occupy no bytes and so cannot overlap anything.
    const Range* last = nullptr;  // the previous non-empty range; ends furthest so far
    for (const Range& r : ranges) {
        if (r.begin == r.end) continue;
        if (last && r.begin < last->end)
            fail("[safetensors] {}: tensor '{}': bytes [{}, {}) overlap tensor '{}' at [{}, {})", where,
                 tensors[r.index].name, r.begin, r.end, tensors[last->index].name, last->begin, last->end);
        last = &r;
    }
    header.tensors.reserve(ranges.size());
    header.offsets.reserve(ranges.size());
    for (const Range& r : ranges) {
        header.tensors.push_back(std::move(tensors[r.index]));
        header.offsets.push_back(size_t(r.begin));
    }
    return header;
}

// ---- SafetensorsFile -----------------------------------------------------------------------

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail("[safetensors] {}: cannot open ({})", path, errno_text());
    struct stat st;
    if (fstat(fd, &st) != 0) {
        std::string why = errno_text();
        ::close(fd);
        fail("[safetensors] {}: cannot stat ({})", path, why);
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        fail("[safetensors] {}: not a regular file", path);
    }
    uint64_t file_size = uint64_t(st.st_size);
    if (file_size < 8) {
        ::close(fd);
        fail("[safetensors] {}: file is {} bytes, shorter than the 8-byte header length", path, file_size);
    }
    void* map = mmap(nullptr, size_t(file_size), PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    ::close(fd);  // the mapping keeps the file alive
    if (map == MAP_FAILED) fail("[safetensors] {}: mmap failed ({})", path, std::strerror(map_errno));
    map_ = map;
    map_size_ = size_t(file_size);
    // Weights are read front to back once when a model loads.
    madvise(map_, map_size_, MADV_SEQUENTIAL);

    try {
        const uint8_t* base = static_cast<const uint8_t*>(map_);
        uint64_t n = 0;
        for (int i = 7; i >= 0; i--) n = (n << 8) | base[i];  // little-endian on any host
        if (n > file_size - 8)
            fail("[safetensors] {}: header length {} is larger than the rest of the file ({} bytes)", path, n,
                 file_size - 8);
        if (n > kMaxHeaderSize)
            fail("[safetensors] {}: header length {} is over the {} byte limit", path, n, kMaxHeaderSize);
        const uint8_t* data = base + 8 + n;
        SafetensorsHeader header = parse_safetensors_header(reinterpret_cast<const char*>(base + 8), size_t(n),
                                                            size_t(file_size - 8 - n), path);
        tensors_ = std::move(header.tensors);
        metadata_ = std::move(header.metadata);
        for (size_t i = 0; i < tensors_.size(); i++) {
            tensors_[i].data = data + header.offsets[i];
            index_[tensors_[i].name] = i;
        }
    } catch (...) {
        munmap(map_, map_size_);
        map_ = nullptr;
        throw;
    }
}

SafetensorsFile::~SafetensorsFile() {
    if (map_) munmap(map_, map_size_);
}

const SafetensorsTensor* SafetensorsFile::find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &tensors_[it->second];
}

// ---- SafetensorsModel ----------------------------------------------------------------------

namespace {
bool file_exists(const std::string& path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0;
}
}  // namespace

SafetensorsModel::SafetensorsModel(const std::string& model_dir) : dir_(model_dir) {
    const std::string single = model_dir + "/model.safetensors";
    const std::string index_path = model_dir + "/model.safetensors.index.json";
    // Same preference as transformers: the single file first, then the sharded index.
    if (file_exists(single)) {
        files_.push_back(std::make_unique<SafetensorsFile>(single));
        for (const auto& t : files_[0]->tensors()) index_[t.name] = &t;
        return;
    }
    if (!file_exists(index_path)) fail("[model] {}: no model.safetensors or model.safetensors.index.json", model_dir);

    std::ifstream in(index_path);
    if (!in) fail("[model] {}: cannot open ({})", index_path, errno_text());
    json index;
    try {
        index = json::parse(in);
    } catch (const json::exception& e) {
        fail("[model] {}: {}", index_path, e.what());
    }
    if (!index.is_object()) fail("[model] {}: should be a JSON object", index_path);
    auto wm = index.find("weight_map");
    if (wm == index.end()) fail("[model] {}: missing key 'weight_map'", index_path);
    if (!wm->is_object()) fail("[model] {}: 'weight_map' should be an object, got {}", index_path, json_type_name(*wm));

    std::map<std::string, size_t> shard_file;  // shard name -> index in files_
    for (const auto& [name, shard] : wm->items()) {
        if (!shard.is_string())
            fail("[model] {}: weight_map entry '{}' should be a string, got {}", index_path, name,
                 json_type_name(shard));
        const std::string& shard_name = shard.get_ref<const std::string&>();
        auto it = shard_file.find(shard_name);
        if (it == shard_file.end()) {
            std::string shard_path = model_dir + "/" + shard_name;
            if (!file_exists(shard_path))
                fail("[model] {}: shard '{}' (listed for tensor '{}') does not exist", index_path, shard_name, name);
            files_.push_back(std::make_unique<SafetensorsFile>(shard_path));
            it = shard_file.emplace(shard_name, files_.size() - 1).first;
        }
        const SafetensorsTensor* t = files_[it->second]->find(name);
        if (!t)
            fail("[model] {}: tensor '{}' is listed in shard '{}' but that file does not contain it", index_path,
                 name, shard_name);
        index_[name] = t;
    }
    // Tensors a shard holds beyond its weight_map entries are still loaded, as transformers
    // loads each listed shard whole; the weight_map wins for names listed there.
    for (const auto& f : files_)
        for (const auto& t : f->tensors()) index_.emplace(t.name, &t);
}

const SafetensorsTensor* SafetensorsModel::find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : it->second;
}

const SafetensorsTensor& SafetensorsModel::get(const std::string& name) const {
    const SafetensorsTensor* t = find(name);
    if (!t) fail("[model] {}: no tensor '{}' in the model's safetensors files", dir_, name);
    return *t;
}

void SafetensorsModel::release(const SafetensorsTensor& t) const { release_mapped_pages(t.data, t.nbytes); }

std::vector<std::string> SafetensorsModel::names() const {
    std::vector<std::string> out;
    out.reserve(index_.size());
    for (const auto& [name, t] : index_) out.push_back(name);
    return out;
}

// ---- SafetensorsWriter ---------------------------------------------------------------------

SafetensorsWriter::SafetensorsWriter(std::string path, std::map<std::string, std::string> metadata)
    : path_(std::move(path)), metadata_(std::move(metadata)) {}

SafetensorsWriter::~SafetensorsWriter() {
    if (file_) std::fclose(file_);
    file_ = nullptr;
    if (!finished_) std::remove((path_ + ".tmp").c_str());
}

void SafetensorsWriter::declare(const std::string& name, DType dtype, const std::vector<int64_t>& shape) {
    TUNER_ASSERT_MSG(file_ == nullptr && !finished_, "declare every tensor before the first write");
    TUNER_ASSERT_MSG(name != "__metadata__", "'__metadata__' is reserved");
    for (const Entry& e : entries_) TUNER_ASSERT_MSG(e.name != name, "tensor declared twice");
    uint64_t n = dtype_size(dtype);
    for (int64_t d : shape) {
        TUNER_ASSERT(d >= 0);
        TUNER_ASSERT(!__builtin_mul_overflow(n, uint64_t(d), &n));
    }
    entries_.push_back({name, dtype, shape, size_t(n)});
}

void SafetensorsWriter::open_and_write_header() {
    TUNER_ASSERT(file_ == nullptr);
    const std::string tmp = path_ + ".tmp";
    // ordered_json keeps __metadata__ first and the tensors in declaration order.
    nlohmann::ordered_json header;
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    meta["format"] = "pt";
    for (const auto& [k, v] : metadata_) meta[k] = v;
    header["__metadata__"] = meta;
    uint64_t offset = 0;
    for (const Entry& e : entries_) {
        nlohmann::ordered_json entry;
        entry["dtype"] = dtype_name(e.dtype);
        entry["shape"] = e.shape;
        entry["data_offsets"] = {offset, offset + e.nbytes};
        header[e.name] = entry;
        offset += e.nbytes;
    }
    std::string text = header.dump();
    // Pad with spaces (allowed by the format) so the data starts 8-byte aligned in the file and
    // every tensor of a naturally aligned dtype can be read in place from the mapping.
    while ((8 + text.size()) % 8 != 0) text.push_back(' ');

    file_ = std::fopen(tmp.c_str(), "wb");
    if (!file_) fail("[safetensors] {}: cannot create ({})", tmp, errno_text());
    uint8_t len[8];
    uint64_t n = text.size();
    for (int i = 0; i < 8; i++) len[i] = uint8_t(n >> (8 * i));
    if (std::fwrite(len, 1, 8, file_) != 8 || std::fwrite(text.data(), 1, text.size(), file_) != text.size())
        atomic_write_failed("safetensors", tmp, errno);
}

void SafetensorsWriter::write(const std::string& name, const void* data) {
    TUNER_ASSERT_MSG(!finished_, "write after finish");
    TUNER_ASSERT_MSG(next_ < entries_.size(), "more writes than declared tensors");
    TUNER_ASSERT_MSG(entries_[next_].name == name, "tensors must be written in declaration order");
    if (!file_) open_and_write_header();
    const Entry& e = entries_[next_];
    if (e.nbytes > 0) {
        TUNER_ASSERT(data != nullptr);
        if (std::fwrite(data, 1, e.nbytes, file_) != e.nbytes)
            atomic_write_failed("safetensors", path_ + ".tmp", errno);
    }
    next_++;
}

void SafetensorsWriter::finish() {
    TUNER_ASSERT_MSG(!finished_, "finish called twice");
    TUNER_ASSERT_MSG(next_ == entries_.size(), "finish before every declared tensor was written");
    if (!file_) open_and_write_header();  // no tensors, or only declared ones of size 0
    FILE* f = file_;
    file_ = nullptr;
    atomic_file_finish(f, path_ + ".tmp", path_, "safetensors");
    finished_ = true;
}

}  // namespace tuner
