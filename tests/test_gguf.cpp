// GGUF import: the reader against every shipped file and against hand-broken headers, typed
// metadata getters, tokenizers from GGUF metadata against llama.cpp's reference vectors, model
// config + weights (stories260K.gguf gives the logits of the same model's HF folder; GGUF files
// written here from random HF models load back to the same logits, with llama's Q/K permutation,
// qwen2's biases, tied heads and Q8_0 blocks), and `tuner tokenize model.gguf`.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/gguf.h"
#include "models/gguf_model.h"
#include "models/llama.h"
#include "models/llama_tensors.h"
#include "nn/rope.h"
#include "testing.h"
#include "tokenizer/tokenizer.h"

using namespace tuner;
using tuner::testing::check_vectors;
using tuner::testing::error_of;
using tuner::testing::logits_of;
using tuner::testing::max_abs_diff;
using tuner::testing::read_file;
using tuner::testing::read_vectors;
namespace fs = std::filesystem;

namespace {

void write_all(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
}

// ---- a minimal GGUF writer for tests (records where each field lands, for byte edits) ---------

struct GgufBuilder {
    std::string kv_bytes;
    uint64_t n_kv = 0;
    struct T {
        std::string name;
        std::vector<int64_t> ne;
        uint32_t type;
        std::string data;
    };
    std::vector<T> tensors;
    uint32_t alignment = 32;

    static void put(std::string& s, const void* p, size_t n) { s.append(static_cast<const char*>(p), n); }
    static void u32(std::string& s, uint32_t v) { put(s, &v, 4); }
    static void u64(std::string& s, uint64_t v) { put(s, &v, 8); }
    static void str(std::string& s, const std::string& v) {
        u64(s, v.size());
        s += v;
    }
    void key(const std::string& k, GgufValueType t) {
        str(kv_bytes, k);
        u32(kv_bytes, uint32_t(t));
        n_kv++;
    }
    void kv_u32(const std::string& k, uint32_t v) { key(k, GgufValueType::U32), u32(kv_bytes, v); }
    void kv_i32(const std::string& k, int32_t v) { key(k, GgufValueType::I32), put(kv_bytes, &v, 4); }
    void kv_u64(const std::string& k, uint64_t v) { key(k, GgufValueType::U64), u64(kv_bytes, v); }
    void kv_u8(const std::string& k, uint8_t v) { key(k, GgufValueType::U8), put(kv_bytes, &v, 1); }
    void kv_f32(const std::string& k, float v) { key(k, GgufValueType::F32), put(kv_bytes, &v, 4); }
    void kv_f64(const std::string& k, double v) { key(k, GgufValueType::F64), put(kv_bytes, &v, 8); }
    void kv_bool(const std::string& k, bool v) {
        key(k, GgufValueType::BOOL);
        uint8_t b = v;
        put(kv_bytes, &b, 1);
    }
    void kv_str(const std::string& k, const std::string& v) { key(k, GgufValueType::STRING), str(kv_bytes, v); }
    void kv_strs(const std::string& k, const std::vector<std::string>& v) {
        key(k, GgufValueType::ARRAY);
        u32(kv_bytes, uint32_t(GgufValueType::STRING));
        u64(kv_bytes, v.size());
        for (const auto& s : v) str(kv_bytes, s);
    }
    void kv_f32s(const std::string& k, const std::vector<float>& v) {
        key(k, GgufValueType::ARRAY);
        u32(kv_bytes, uint32_t(GgufValueType::F32));
        u64(kv_bytes, v.size());
        put(kv_bytes, v.data(), v.size() * 4);
    }
    void kv_i32s(const std::string& k, const std::vector<int32_t>& v) {
        key(k, GgufValueType::ARRAY);
        u32(kv_bytes, uint32_t(GgufValueType::I32));
        u64(kv_bytes, v.size());
        put(kv_bytes, v.data(), v.size() * 4);
    }
    void tensor(const std::string& name, std::vector<int64_t> ne, uint32_t type, std::string data) {
        tensors.push_back({name, std::move(ne), type, std::move(data)});
    }
    void tensor_f32(const std::string& name, std::vector<int64_t> ne, const std::vector<float>& v) {
        tensor(name, std::move(ne), 0, std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4));
    }

    // Positions in the built file, for tests that break one field.
    size_t tensor_info_pos = 0;              // first tensor info
    std::vector<size_t> tensor_offset_pos;   // each tensor's u64 offset field
    size_t data_pos = 0;

    std::string build() {
        std::string s = "GGUF";
        u32(s, 3);
        u64(s, tensors.size());
        u64(s, n_kv);
        s += kv_bytes;
        tensor_info_pos = s.size();
        tensor_offset_pos.clear();
        uint64_t off = 0;
        std::vector<uint64_t> offsets;
        for (const T& t : tensors) {
            str(s, t.name);
            u32(s, uint32_t(t.ne.size()));
            for (int64_t d : t.ne) u64(s, uint64_t(d));
            u32(s, t.type);
            tensor_offset_pos.push_back(s.size());
            u64(s, off);
            offsets.push_back(off);
            off += (t.data.size() + alignment - 1) / alignment * alignment;
        }
        while (s.size() % alignment) s.push_back('\0');
        data_pos = s.size();
        for (size_t i = 0; i < tensors.size(); i++) {
            s.resize(data_pos + offsets[i], '\0');
            s += tensors[i].data;
        }
        return s;
    }
};

void put_u64(std::string& s, size_t pos, uint64_t v) { std::memcpy(&s[pos], &v, 8); }
void put_u32(std::string& s, size_t pos, uint32_t v) { std::memcpy(&s[pos], &v, 4); }

std::string parse_error(const std::string& bytes) {
    return error_of([&] { Gguf g(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "t.gguf"); });
}

// A small valid file: metadata of every kind and two F32 tensors.
GgufBuilder small_builder() {
    GgufBuilder b;
    b.kv_str("general.architecture", "llama");
    b.kv_u32("a.u32", 7);
    b.kv_i32("a.i32", -3);
    b.kv_u64("a.u64", 5000000000ull);
    b.kv_u8("a.u8", 200);
    b.kv_f32("a.f32", 0.5f);
    b.kv_f64("a.f64", 0.25);
    b.kv_bool("a.bool", true);
    b.kv_strs("a.strs", {"x", "", "yz"});
    b.kv_f32s("a.f32s", {1.5f, -2.0f});
    b.kv_i32s("a.i32s", {1, -2, 3});
    b.tensor_f32("w", {3, 2}, {1, 2, 3, 4, 5, 6});
    b.tensor_f32("v", {4}, {7, 8, 9, 10});
    return b;
}

// ---- models ----------------------------------------------------------------------------------

// llama.cpp's convert_hf_to_gguf.py permutation of Q/K rows (the inverse of gguf_unpermute_rows).
std::vector<float> permute_rows(const std::vector<float>& w, int64_t rows, int64_t cols, int64_t n_head) {
    std::vector<float> out(w.size());
    const int64_t HD = rows / n_head, half = HD / 2;
    for (int64_t h = 0; h < n_head; h++)
        for (int64_t i = 0; i < 2; i++)
            for (int64_t j = 0; j < half; j++)
                std::memcpy(&out[size_t((h * HD + 2 * j + i) * cols)], &w[size_t((h * HD + i * half + j) * cols)],
                            size_t(cols) * 4);
    return out;
}

ModelConfig tiny_config(const std::string& arch) {
    ModelConfig c;
    c.architecture = arch == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
    c.model_type = arch;
    c.vocab_size = 40;
    c.hidden_size = 32;
    c.intermediate_size = 64;
    c.num_layers = 2;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.head_dim = 8;
    c.max_position_embeddings = 64;
    c.rms_norm_eps = 1e-5;
    c.rope_theta = 10000.0;
    c.attention_bias = arch == "qwen2";
    c.tie_word_embeddings = arch == "qwen2";
    return c;
}

// Writes model m as llama.cpp's converter would (F32 tensors, or Q8_0 for the matrices when
// q8 is set: returns the quantised bytes by HF name in *q8_bytes).
GgufBuilder gguf_of(LlamaModel& m, bool q8 = false, std::map<std::string, std::string>* q8_bytes = nullptr) {
    const ModelConfig& c = m.config;
    const std::string arch = c.model_type;
    GgufBuilder b;
    b.kv_str("general.architecture", arch);
    b.kv_str("general.name", "tiny " + arch);
    b.kv_u32(arch + ".context_length", uint32_t(c.max_position_embeddings));
    b.kv_u32(arch + ".embedding_length", uint32_t(c.hidden_size));
    b.kv_u32(arch + ".feed_forward_length", uint32_t(c.intermediate_size));
    b.kv_u32(arch + ".block_count", uint32_t(c.num_layers));
    b.kv_u32(arch + ".attention.head_count", uint32_t(c.num_heads));
    b.kv_u32(arch + ".attention.head_count_kv", uint32_t(c.num_kv_heads));
    b.kv_u32(arch + ".rope.dimension_count", uint32_t(c.head_dim));
    b.kv_f32(arch + ".attention.layer_norm_rms_epsilon", float(c.rms_norm_eps));
    b.kv_f32(arch + ".rope.freq_base", float(c.rope_theta));
    for (Param* p : m.params()) {
        std::vector<float> v(size_t(p->value.numel()));
        std::memcpy(v.data(), p->value.data, v.size() * 4);
        const int64_t rows = p->value.shape[0], cols = p->value.ndim > 1 ? p->value.shape[1] : 1;
        const bool q = p->name.find("q_proj") != std::string::npos, k = p->name.find("k_proj") != std::string::npos;
        if (arch == "llama" && (q || k)) v = permute_rows(v, rows, cols, q ? c.num_heads : c.num_kv_heads);
        std::vector<int64_t> ne = p->value.ndim > 1 ? std::vector<int64_t>{cols, rows} : std::vector<int64_t>{rows};
        const std::string name = hf_to_gguf_name(p->name);
        if (q8 && p->value.ndim == 2 && cols % 32 == 0) {
            // Q8_0: per block of 32, d = amax / 127 as f16, q = round(x / d).
            std::string bytes;
            for (size_t blk = 0; blk < v.size() / 32; blk++) {
                float amax = 0;
                for (int e = 0; e < 32; e++) amax = std::max(amax, std::fabs(v[blk * 32 + e]));
                uint16_t dh = f32_to_f16(amax / 127.0f);
                float d = f16_to_f32(dh);
                GgufBuilder::put(bytes, &dh, 2);
                for (int e = 0; e < 32; e++) {
                    int8_t qv = int8_t(d == 0 ? 0 : std::lround(v[blk * 32 + e] / d));
                    GgufBuilder::put(bytes, &qv, 1);
                }
            }
            if (q8_bytes) (*q8_bytes)[p->name] = bytes;
            b.tensor(name, ne, 8, bytes);
        } else {
            b.tensor_f32(name, ne, v);
        }
    }
    return b;
}

}  // namespace

// ---- the reader -------------------------------------------------------------------------------

TEST(GgufReader, EveryShippedFileParses) {
    TUNER_REQUIRE_SHARED_DATA(data);
    std::vector<std::string> files;
    for (const auto& e : fs::recursive_directory_iterator(data + "/gguf"))
        if (e.path().extension() == ".gguf") files.push_back(e.path().string());
    files.push_back(data + "/stories260K/stories260K.gguf");
    ASSERT_GE(files.size(), 14u);
    for (const auto& f : files) {
        SCOPED_TRACE(f);
        GgufFile g(f);
        EXPECT_EQ(g.version(), 3u);
        EXPECT_TRUE(g.has("general.architecture"));
        EXPECT_GT(g.array_size("tokenizer.ggml.tokens"), 0u);
        for (const GgufTensor& t : g.tensors()) {
            EXPECT_EQ(t.offset % g.alignment(), 0u);
            EXPECT_LE(g.data_offset() + t.offset + t.nbytes, g.size());
        }
    }
    GgufFile tiny(data + "/gguf/tiny-random/llama-2-tiny-random.gguf");
    EXPECT_EQ(tiny.tensors().size(), 12u);
    EXPECT_EQ(tiny.data_offset(), 724416u);  // as its PROVENANCE.txt says
    EXPECT_EQ(tiny.get_u32("llama.embedding_length"), 8u);
    const GgufTensor* emb = tiny.find_tensor("token_embd.weight");
    ASSERT_NE(emb, nullptr);
    EXPECT_EQ(emb->ne, (std::vector<int64_t>{8, 32000}));
    EXPECT_EQ(emb->shape(), (std::vector<int64_t>{32000, 8}));
    EXPECT_EQ(emb->dtype(tiny.path()), DType::F16);
    EXPECT_EQ(emb->nbytes, 32000u * 8 * 2);
    GgufFile stories(data + "/stories260K/stories260K.gguf");
    EXPECT_EQ(stories.tensors().size(), 48u);
    EXPECT_FLOAT_EQ(stories.get_f32("llama.attention.layer_norm_rms_epsilon"), 1e-5f);
}

TEST(GgufReader, TypedGetters) {
    std::string bytes = small_builder().build();
    Gguf g(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "t.gguf");
    EXPECT_EQ(g.get_string("general.architecture"), "llama");
    EXPECT_EQ(g.get_string("nope", "dflt"), "dflt");
    // Integer widening: any integer type whose value fits.
    EXPECT_EQ(g.get_u32("a.u32"), 7u);
    EXPECT_EQ(g.get_u32("a.u8"), 200u);
    EXPECT_EQ(g.get_i64("a.u32"), 7);
    EXPECT_EQ(g.get_i64("a.i32"), -3);
    EXPECT_EQ(g.get_i64("a.u64"), 5000000000ll);
    EXPECT_EQ(g.get_u32("nope", 9u), 9u);
    EXPECT_FLOAT_EQ(g.get_f32("a.f32"), 0.5f);
    EXPECT_FLOAT_EQ(g.get_f32("a.f64"), 0.25f);
    EXPECT_FLOAT_EQ(g.get_f32("a.u32"), 7.0f);
    EXPECT_TRUE(g.get_bool("a.bool"));
    EXPECT_FALSE(g.get_bool("nope", false));
    auto strs = g.get_string_array("a.strs");
    ASSERT_EQ(strs.size(), 3u);
    EXPECT_EQ(strs[0], "x");
    EXPECT_EQ(strs[1], "");
    EXPECT_EQ(strs[2], "yz");
    EXPECT_EQ(g.get_f32_array("a.f32s"), (std::vector<float>{1.5f, -2.0f}));
    EXPECT_EQ(g.get_i32_array("a.i32s"), (std::vector<int32_t>{1, -2, 3}));
    EXPECT_EQ(g.array_size("a.strs"), 3u);
    // Errors name the key.
    EXPECT_CONTAINS(error_of([&] { g.get_u32("a.i32"); }), "key 'a.i32' is -3, which does not fit in u32");
    EXPECT_CONTAINS(error_of([&] { g.get_u32("a.u64"); }), "does not fit in u32");
    EXPECT_CONTAINS(error_of([&] { g.get_string("a.u32"); }), "[gguf] t.gguf: key 'a.u32' should be a string, got u32");
    EXPECT_CONTAINS(error_of([&] { g.get_u32("a.strs"); }), "should be an integer, got an array of string");
    EXPECT_CONTAINS(error_of([&] { g.get_string("missing"); }), "[gguf] t.gguf: missing key 'missing'");
    EXPECT_CONTAINS(error_of([&] { g.get_f32_array("a.i32s"); }), "should be an array of f32");
    EXPECT_CONTAINS(error_of([&] { g.get_bool("a.u8"); }), "should be a bool");
    // Tensors.
    const GgufTensor* w = g.find_tensor("w");
    ASSERT_NE(w, nullptr);
    EXPECT_EQ(w->shape(), (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(w->numel, 6);
    EXPECT_EQ(w->nbytes, 24u);
    float f[6];
    std::memcpy(f, w->data, 24);
    EXPECT_EQ(f[5], 6.0f);
    EXPECT_EQ(g.find_tensor("nope"), nullptr);
    EXPECT_EQ(g.data_offset() % 32, 0u);
}

TEST(GgufReader, MalformedHeaders) {
    GgufBuilder b = small_builder();
    const std::string good = b.build();
    {
        Gguf ok(reinterpret_cast<const uint8_t*>(good.data()), good.size(), "t.gguf");  // no throw
        EXPECT_EQ(ok.tensors().size(), 2u);
    }
    auto edited = [&](auto edit) {
        std::string s = good;
        edit(s);
        return parse_error(s);
    };
    // Lying counts are refused before anything is allocated.
    EXPECT_CONTAINS(edited([](std::string& s) { put_u64(s, 8, uint64_t(1) << 60); }),
                    "header claims 1152921504606846976 tensors but the rest of the file");
    EXPECT_CONTAINS(edited([](std::string& s) { put_u64(s, 16, ~uint64_t(0)); }),
                    "header claims 18446744073709551615 metadata key-value pairs");
    // One more KV than there is: runs into the tensor infos and fails there, with a position.
    EXPECT_CONTAINS(edited([](std::string& s) { put_u64(s, 16, 12); }), "(at byte");
    // Huge string length (the first key's length is at byte 24).
    EXPECT_CONTAINS(edited([](std::string& s) { put_u64(s, 24, uint64_t(1) << 62); }),
                    "key of metadata pair #0: string length 4611686018427387904 runs past the file end");
    // Tensor data offset past the end of the file.
    EXPECT_CONTAINS(edited([&](std::string& s) { put_u64(s, b.tensor_offset_pos[1], 1 << 20); }),
                    "tensor 'v': data [1048576, 1048592) of the data section runs past the file end");
    // Unaligned offset.
    EXPECT_CONTAINS(edited([&](std::string& s) { put_u64(s, b.tensor_offset_pos[1], 4); }),
                    "tensor 'v': data offset 4 is not a multiple of the alignment 32");
    // Overlapping tensors.
    EXPECT_CONTAINS(edited([&](std::string& s) { put_u64(s, b.tensor_offset_pos[1], 0); }), "overlaps tensor");
    // Bad magic, version 1, unknown version, big-endian.
    EXPECT_CONTAINS(edited([](std::string& s) { s[0] = 'X'; }), "not a GGUF file");
    EXPECT_CONTAINS(edited([](std::string& s) { put_u32(s, 4, 1); }), "GGUF version 1 is not supported");
    EXPECT_CONTAINS(edited([](std::string& s) { put_u32(s, 4, 7); }), "unsupported GGUF version 7");
    EXPECT_CONTAINS(edited([](std::string& s) { put_u32(s, 4, 0x03000000); }), "big-endian GGUF files are not supported");
    // Every truncation of the file is an error, never a crash.
    ASSERT_EQ(good.size(), b.data_pos + 32 + 16);  // ends with the last tensor's data
    size_t said_truncated = 0;
    for (size_t n = 0; n < good.size(); n++) {
        std::string msg = parse_error(good.substr(0, n));
        EXPECT_CONTAINS(msg, "[gguf] t.gguf: ");
        said_truncated += msg.find("(truncated file?)") != std::string::npos;
    }
    EXPECT_GT(said_truncated, 50u);
    EXPECT_CONTAINS(parse_error(good.substr(0, 10)), "shorter than the 24-byte GGUF header");
}

TEST(GgufReader, MalformedMetadataAndTensorInfos) {
    auto build_error = [](auto setup) {
        GgufBuilder b;
        setup(b);
        return parse_error(b.build());
    };
    EXPECT_CONTAINS(build_error([](GgufBuilder& b) { b.kv_u32("general.alignment", 24); }),
                    "key 'general.alignment' is 24, which is not a power of two");
    EXPECT_CONTAINS(build_error([](GgufBuilder& b) { b.kv_u32("general.alignment", 0); }), "not a power of two");
    EXPECT_CONTAINS(build_error([](GgufBuilder& b) { b.kv_u64("general.alignment", 32); }),
                    "'general.alignment' should be a u32, got u64");
    EXPECT_CONTAINS(build_error([](GgufBuilder& b) { b.kv_u32("k", 1), b.kv_u32("k", 2); }), "key 'k' appears twice");
    EXPECT_CONTAINS(build_error([](GgufBuilder& b) {
                        b.key("k", GgufValueType(13));
                        GgufBuilder::u32(b.kv_bytes, 0);
                    }),
                    "key 'k' has unknown value type 13");
    EXPECT_CONTAINS(build_error([](GgufBuilder& b) {
                        b.key("nested", GgufValueType::ARRAY);
                        GgufBuilder::u32(b.kv_bytes, uint32_t(GgufValueType::ARRAY));
                        GgufBuilder::u64(b.kv_bytes, 1);
                    }),
                    "key 'nested' is an array of arrays");
    EXPECT_CONTAINS(build_error([](GgufBuilder& b) {
                        b.key("arr", GgufValueType::ARRAY);
                        GgufBuilder::u32(b.kv_bytes, uint32_t(GgufValueType::U64));
                        GgufBuilder::u64(b.kv_bytes, uint64_t(1) << 61);
                    }),
                    "key 'arr': array length 2305843009213693952 of u64 runs past the file end");
    EXPECT_CONTAINS(build_error([](GgufBuilder& b) {
                        b.key("strs", GgufValueType::ARRAY);
                        GgufBuilder::u32(b.kv_bytes, uint32_t(GgufValueType::STRING));
                        GgufBuilder::u64(b.kv_bytes, 2);
                        GgufBuilder::str(b.kv_bytes, "a");
                        GgufBuilder::u64(b.kv_bytes, 1000);  // second string runs past the end
                    }),
                    "key 'strs' element 1: string length 1000 runs past the file end");
    EXPECT_CONTAINS(build_error([](GgufBuilder& b) {
                        b.key("b", GgufValueType::BOOL);
                        b.kv_bytes.push_back(char(7));
                    }),
                    "key 'b': bool value 7 is not 0 or 1");
    EXPECT_CONTAINS(build_error([](GgufBuilder& b) { b.tensor_f32("t", {2, 2}, {1, 2, 3, 4}), b.tensor_f32("t", {1}, {1}); }),
                    "tensor 't' appears twice");
    EXPECT_CONTAINS(build_error([](GgufBuilder& b) { b.tensor("t", {4}, 99, std::string(16, '\0')); }),
                    "tensor 't' has unknown ggml type 99");
    EXPECT_CONTAINS(build_error([](GgufBuilder& b) { b.tensor("t", {4}, 4, std::string(16, '\0')); }),
                    "unknown ggml type 4");  // Q4_2, removed from ggml
    EXPECT_CONTAINS(build_error([](GgufBuilder& b) { b.tensor("t", {16, 2}, 8, std::string(68, '\0')); }),
                    "tensor 't': ne[0] = 16 is not a multiple of the Q8_0 block size 32");
    EXPECT_CONTAINS(build_error([](GgufBuilder& b) { b.tensor("t", {1, 1, 1, 1, 1}, 0, std::string(4, '\0')); }),
                    "tensor 't' has 5 dimensions; GGUF allows at most 4");
    EXPECT_CONTAINS(build_error([](GgufBuilder& b) {
                        b.tensor("t", {int64_t(1) << 32, int64_t(1) << 32}, 0, std::string(4, '\0'));
                    }),
                    "tensor 't': the product of its dimensions overflows 64 bits");
    EXPECT_CONTAINS(build_error([](GgufBuilder& b) { b.tensor("t", {int64_t(1) << 40, 1 << 22}, 0, std::string(4, '\0')); }),
                    "tensor 't': its size in bytes overflows 64 bits");
    // A type that parses but tuner does not run: a clear error when used.
    GgufBuilder q2;
    q2.tensor("t", {256}, 10, std::string(84, '\0'));
    std::string bytes = q2.build();
    Gguf g(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "q2.gguf");
    EXPECT_STREQ(g.tensors()[0].type_name(), "Q2_K");
    EXPECT_CONTAINS(error_of([&] { g.tensors()[0].dtype(g.path()); }),
                    "[gguf] q2.gguf: tensor 't' has type Q2_K, which tuner does not support");
    // Zero-size tensors are fine anywhere.
    GgufBuilder z;
    z.tensor("z", {0, 5}, 0, "");
    z.tensor_f32("a", {1}, {1});
    std::string zb = z.build();
    EXPECT_NO_THROW(Gguf(reinterpret_cast<const uint8_t*>(zb.data()), zb.size(), "z.gguf"));
}

TEST(GgufReader, FileErrors) {
    std::string dir = tuner::testing::make_temp_dir("gguf");
    EXPECT_CONTAINS(error_of([&] { GgufFile f(dir + "/missing.gguf"); }), "missing.gguf: cannot open");
    EXPECT_CONTAINS(error_of([&] { GgufFile f(dir); }), "not a regular file");
    write_all(dir + "/short.gguf", "GGUF");
    EXPECT_CONTAINS(error_of([&] { GgufFile f(dir + "/short.gguf"); }), "file is 4 bytes");
    EXPECT_TRUE(is_gguf_path("a/b.GGUF"));
    EXPECT_FALSE(is_gguf_path("a/gguf"));
}

// ---- tokenizers from GGUF -------------------------------------------------------------------

TEST(GgufTokenizer, VocabularyFilesMatchReferenceVectors) {
    TUNER_REQUIRE_SHARED_DATA(data);
    // Every vocabulary GGUF with a .inp/.out pair (bert-bge: tokenizer.ggml.model "bert", WordPiece).
    const char* names[] = {"gpt-2", "llama-spm", "phi-3", "deepseek-coder", "deepseek-llm", "falcon",
                           "starcoder", "refact", "mpt", "bert-bge"};
    size_t checked = 0;
    for (const char* name : names) {
        std::string gguf = data + "/gguf/vocab/ggml-vocab-" + std::string(name) + ".gguf";
        if (!fs::exists(data + "/vectors/ggml-vocab-" + std::string(name) + ".gguf.inp")) continue;
        auto vectors = read_vectors(data, name);
        ASSERT_EQ(vectors.size(), 46u) << name;
        auto tok = load_gguf_tokenizer(gguf);
        check_vectors(*tok, vectors, name, "(" + tok->describe() + ")");
        checked++;
    }
    EXPECT_EQ(checked, 10u);
}

// llama.cpp's llama-bpe and qwen2 vocabulary files are too big to ship; the same vocabularies are
// written here as GGUF metadata from their tokenizer.json (tokens by id, added special tokens as
// control tokens, merges as "a b"), as llama.cpp's converter does.
TEST(GgufTokenizer, Llama3AndQwen2WrittenAsGgufMatchReferenceVectors) {
    TUNER_REQUIRE_SHARED_DATA(data);
    struct Case {
        const char* vectors;
        const char* dir;
        const char* pre;
    };
    for (const Case& k : {Case{"llama-bpe", "tokenizers/llama3-hf", "llama-bpe"}, Case{"qwen2", "tokenizers/qwen2.5-hf", "qwen2"}}) {
        nlohmann::json j = nlohmann::json::parse(read_file(data + "/" + k.dir + "/tokenizer.json"));
        std::vector<std::string> tokens;
        std::vector<int32_t> types;
        auto put = [&](const std::string& t, int64_t id, int32_t type) {
            if (size_t(id) >= tokens.size()) {
                tokens.resize(size_t(id) + 1);
                types.resize(size_t(id) + 1, 5);
            }
            tokens[size_t(id)] = t;
            types[size_t(id)] = type;
        };
        for (auto it = j["model"]["vocab"].begin(); it != j["model"]["vocab"].end(); ++it) put(it.key(), it.value().get<int64_t>(), 1);
        for (const auto& t : j["added_tokens"]) put(t["content"], t["id"].get<int64_t>(), t["special"].get<bool>() ? 3 : 4);
        for (size_t i = 0; i < tokens.size(); i++)
            if (tokens[i].empty()) tokens[i] = "[PAD" + std::to_string(i) + "]";
        std::vector<std::string> merges;
        for (const auto& m : j["model"]["merges"])
            merges.push_back(m.is_string() ? m.get<std::string>() : m[0].get<std::string>() + " " + m[1].get<std::string>());
        GgufBuilder b;
        b.kv_str("tokenizer.ggml.model", "gpt2");
        b.kv_str("tokenizer.ggml.pre", k.pre);
        b.kv_strs("tokenizer.ggml.tokens", tokens);
        b.kv_i32s("tokenizer.ggml.token_type", types);
        b.kv_strs("tokenizer.ggml.merges", merges);
        std::string bytes = b.build();
        Gguf g(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), std::string(k.vectors) + ".gguf");
        auto tok = load_gguf_tokenizer(g);
        auto vectors = read_vectors(data, k.vectors);
        ASSERT_EQ(vectors.size(), 46u);
        check_vectors(*tok, vectors, k.vectors, std::string("(GGUF written from ") + k.dir + ")");
    }
}

TEST(GgufTokenizer, SpecialTokensAndRoundTrip) {
    TUNER_REQUIRE_SHARED_DATA(data);
    auto spm = load_gguf_tokenizer(data + "/gguf/vocab/ggml-vocab-llama-spm.gguf");
    EXPECT_EQ(spm->bos_id(), 1);
    EXPECT_EQ(spm->eos_id(), 2);
    EXPECT_TRUE(spm->adds_bos());
    EXPECT_FALSE(spm->adds_eos());
    EXPECT_EQ(spm->vocab_size(), 32000);
    std::vector<int32_t> ids = spm->encode("Hello world", true);
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids[0], 1);
    EXPECT_EQ(spm->decode(ids, true), "Hello world");
    EXPECT_TRUE(spm->is_special(1));
    std::vector<int32_t> around = spm->encode("a</s>b", false);  // </s> is matched as a token
    ASSERT_EQ(around.size(), 3u);
    EXPECT_EQ(around[1], 2);

    auto gpt2 = load_gguf_tokenizer(data + "/gguf/vocab/ggml-vocab-gpt-2.gguf");
    EXPECT_FALSE(gpt2->adds_bos());
    EXPECT_EQ(gpt2->eos_id(), 50256);
    EXPECT_EQ(gpt2->decode(gpt2->encode(" naïve 🦙 <|endoftext|>x", false)), " naïve 🦙 <|endoftext|>x");
    EXPECT_EQ(gpt2->encode("<|endoftext|>", false), (std::vector<int32_t>{50256}));

    // Phi-3: the chat tokens strip the whitespace after them (llama.cpp's rule for this model).
    auto phi3 = load_gguf_tokenizer(data + "/gguf/vocab/ggml-vocab-phi-3.gguf");
    auto hf = Tokenizer::load(data + "/tokenizers/phi3-mini-hf-llama2vocab");
    for (const char* text : {"<|user|>\nHi<|end|>\n<|assistant|> ok", "<s> a </s> b", "x <|endoftext|> y"})
        EXPECT_EQ(phi3->encode(text, false), hf->encode(text, false)) << text;
}

// WordPiece edge cases on a small vocabulary in llama.cpp's spelling ("▁" word-initial pieces,
// bare continuations, bracketed special tokens).
TEST(GgufTokenizer, WordPiece) {
    auto build = [](const std::vector<std::string>& tokens) {
        GgufBuilder b;
        b.kv_str("tokenizer.ggml.model", "bert");
        b.kv_strs("tokenizer.ggml.tokens", tokens);
        std::vector<int32_t> types(tokens.size(), 1);
        for (size_t i = 0; i < 4; i++) types[i] = 3;
        b.kv_i32s("tokenizer.ggml.token_type", types);
        b.kv_u32("tokenizer.ggml.unknown_token_id", 1);
        b.kv_u32("tokenizer.ggml.cls_token_id", 2);
        b.kv_u32("tokenizer.ggml.seperator_token_id", 3);
        std::string bytes = b.build();
        Gguf g(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "wp.gguf");
        return load_gguf_tokenizer(g);
    };
    //                0        1        2        3        4        5         6      7      8      9
    auto tok = build({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "▁un", "▁unaff", "able", "aff", "▁,", "▁!",
                      //  10       11        12      13       14       15     16    17
                      "▁apfel", "▁cafe", "▁the", "▁a", "▁hello", "▁x", "▁中", "x"});
    using ids = std::vector<int32_t>;
    auto enc = [&](const std::string& s) { return tok->encode(s, false); };
    EXPECT_EQ(enc("unaffable"), (ids{5, 6}));  // longest first: ▁unaff + able, not ▁un + aff + able
    EXPECT_EQ(enc("unaffz"), (ids{1}));        // no piece for the tail: the whole word is [UNK]
    EXPECT_EQ(enc("zebra the"), (ids{1, 12}));  // unknown word, then a known one
    EXPECT_EQ(enc("able"), (ids{1}));          // a continuation piece never starts a word
    ids xs(100, 17);
    xs[0] = 15;
    EXPECT_EQ(enc(std::string(100, 'x')), xs);  // 100 characters: max_input_chars_per_word
    EXPECT_EQ(enc(std::string(101, 'x')), (ids{1}));  // one more: [UNK] without trying
    EXPECT_EQ(enc("hello,the!!a"), (ids{14, 8, 12, 9, 9, 13}));  // each punctuation char is a word
    EXPECT_EQ(enc("  hello\t\n the  "), (ids{14, 12}));
    EXPECT_EQ(enc("Äpfel CAFÉ Café"), (ids{10, 11, 11}));  // uncased: NFD, accents stripped, lowercased
    EXPECT_EQ(enc("x中x"), (ids{15, 16, 15}));              // CJK ideographs are words of their own
    EXPECT_EQ(enc("a\u200Bthe"), (ids{1}));  // U+200B (Cf) is removed by clean_text: "athe"
    EXPECT_EQ(enc("hello [SEP]the[CLS]"), (ids{14, 3, 12, 2}));  // special tokens matched in the raw text
    EXPECT_EQ(tok->encode("hello", true), (ids{2, 14, 3}));      // [CLS] ... [SEP]
    EXPECT_EQ(tok->bos_id(), 2);
    EXPECT_EQ(tok->eos_id(), 3);
    EXPECT_TRUE(tok->is_special(1));
    EXPECT_FALSE(tok->is_special(4));
    EXPECT_EQ(tok->piece_to_id("▁unaff"), 5);
    // Decoding: word-initial pieces start words, continuations are glued on.
    EXPECT_EQ(tok->decode({2, 5, 6, 8, 12, 3}), "[CLS] unaffable , the [SEP]");
    EXPECT_EQ(tok->decode({2, 5, 6, 8, 12, 3}, true), "unaffable , the");
    EXPECT_EQ(tok->decode({6, 7, 13}), "ableaff a");

    // A vocabulary with uppercase letters is cased: no lowercasing, accents kept.
    auto cased = build({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "▁Café", "▁café", "▁Cafe"});
    EXPECT_EQ(cased->encode("Café café Cafe cafe", false), (ids{4, 5, 6, 1}));
    EXPECT_EQ(cased->describe().find("uncased"), std::string::npos) << cased->describe();
}

TEST(GgufTokenizer, Stories260KMatchesItsTokenizerJson) {
    TUNER_REQUIRE_SHARED_DATA(data);
    auto g = load_gguf_tokenizer(data + "/stories260K/stories260K.gguf");
    auto hf = Tokenizer::load(data + "/stories260K/hf");
    EXPECT_EQ(g->encode("Once upon a time", true), (std::vector<int32_t>{1, 403, 407, 261, 378}));
    std::string text = read_file(data + "/stories260K/expected_greedy_output_200steps.txt");
    for (const std::string& s : {text, std::string("Héllo wörld 🦙\n\n  tabs\tand  spaces"), std::string(" x")})
        EXPECT_EQ(g->encode(s, true), hf->encode(s, true)) << s;
}

TEST(GgufTokenizer, Errors) {
    auto err = [](auto setup) {
        GgufBuilder b;
        setup(b);
        std::string bytes = b.build();
        return error_of([&] {
            Gguf g(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "v.gguf");
            load_gguf_tokenizer(g);
        });
    };
    EXPECT_CONTAINS(err([](GgufBuilder& b) { b.kv_str("x", "y"); }), "[gguf] v.gguf: missing key 'tokenizer.ggml.model'");
    EXPECT_CONTAINS(err([](GgufBuilder& b) { b.kv_str("tokenizer.ggml.model", "t5"); }),
                    "tokenizer.ggml.model is 't5'; supported: llama (SentencePiece), gpt2 (byte-level BPE)");
    EXPECT_CONTAINS(err([](GgufBuilder& b) {
                        b.kv_str("tokenizer.ggml.model", "gpt2");
                        b.kv_strs("tokenizer.ggml.tokens", {"a", "b", "a"});
                        b.kv_strs("tokenizer.ggml.merges", {});
                    }),
                    "tokens 0 and 2 of tokenizer.ggml.tokens are the same text 'a'");
    EXPECT_CONTAINS(err([](GgufBuilder& b) {
                        b.kv_str("tokenizer.ggml.model", "gpt2");
                        b.kv_strs("tokenizer.ggml.tokens", {"a", "b", "ab"});
                        b.kv_strs("tokenizer.ggml.merges", {"ab"});
                    }),
                    "tokenizer.ggml.merges[0] 'ab' is not two tokens separated by a space");
    EXPECT_CONTAINS(err([](GgufBuilder& b) {
                        b.kv_str("tokenizer.ggml.model", "llama");
                        b.kv_strs("tokenizer.ggml.tokens", {"a", "b"});
                        b.kv_i32s("tokenizer.ggml.token_type", {1});
                    }),
                    "tokenizer.ggml.token_type has 1 entries for 2 tokens");
    EXPECT_CONTAINS(err([](GgufBuilder& b) {
                        b.kv_str("tokenizer.ggml.model", "llama");
                        b.kv_strs("tokenizer.ggml.tokens", {"a", "\xff"});
                    }),
                    "token 1 of tokenizer.ggml.tokens is not valid UTF-8");
    // A small gpt2-style vocabulary works end to end.
    GgufBuilder b;
    b.kv_str("tokenizer.ggml.model", "gpt2");
    b.kv_str("tokenizer.ggml.pre", "gpt-2");
    b.kv_strs("tokenizer.ggml.tokens", {"a", "b", "ab", "\xC4\xA0", "\xC4\xA0" "ab", "<eos>"});
    b.kv_i32s("tokenizer.ggml.token_type", {1, 1, 1, 1, 1, 3});
    b.kv_strs("tokenizer.ggml.merges", {"a b", "\xC4\xA0 ab"});
    b.kv_u32("tokenizer.ggml.eos_token_id", 5);
    b.kv_bool("tokenizer.ggml.add_eos_token", true);
    std::string bytes = b.build();
    Gguf g(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "v.gguf");
    auto tok = load_gguf_tokenizer(g);
    EXPECT_EQ(tok->encode("ab ab<eos>", true), (std::vector<int32_t>{2, 4, 5, 5}));
    EXPECT_EQ(tok->eos_id(), 5);
    EXPECT_TRUE(tok->adds_eos());
}

// ---- models -----------------------------------------------------------------------------------

TEST(GgufModel, NameMapping) {
    EXPECT_EQ(gguf_to_hf_name("blk.12.attn_q.weight"), "model.layers.12.self_attn.q_proj.weight");
    EXPECT_EQ(gguf_to_hf_name("blk.0.ffn_norm.weight"), "model.layers.0.post_attention_layernorm.weight");
    EXPECT_EQ(gguf_to_hf_name("blk.3.attn_v.bias"), "model.layers.3.self_attn.v_proj.bias");
    EXPECT_EQ(gguf_to_hf_name("token_embd.weight"), "model.embed_tokens.weight");
    EXPECT_EQ(gguf_to_hf_name("output.weight"), "lm_head.weight");
    EXPECT_EQ(gguf_to_hf_name("blk.01.attn_q.weight"), "");
    EXPECT_EQ(gguf_to_hf_name("blk.1.ffn_gate_exps.weight"), "");
    for (const auto& s : llama_tensor_specs(tiny_config("qwen2"))) {
        std::string g = hf_to_gguf_name(s.name);
        EXPECT_FALSE(g.empty()) << s.name;
        EXPECT_EQ(gguf_to_hf_name(g), s.name);
    }
    // Un-permuting undoes llama.cpp's permutation, row for row.
    std::vector<float> w(12 * 3);
    for (size_t i = 0; i < w.size(); i++) w[i] = float(i);
    std::vector<float> p = permute_rows(w, 12, 3, 3), back(w.size());
    gguf_unpermute_rows(reinterpret_cast<const uint8_t*>(p.data()), reinterpret_cast<uint8_t*>(back.data()), 12, 12, 3);
    EXPECT_EQ(back, w);
    EXPECT_NE(p, w);
}

TEST(GgufModel, Stories260KGivesTheLogitsOfItsHfFolder) {
    TUNER_REQUIRE_SHARED_DATA(data);
    auto hf = LlamaModel::load(data + "/stories260K/hf", {});
    auto gg = LlamaModel::load(data + "/stories260K/stories260K.gguf", {});
    const ModelConfig& c = gg->config;
    EXPECT_EQ(c.hidden_size, 64);
    EXPECT_EQ(c.num_layers, 5);
    EXPECT_EQ(c.num_heads, 8);
    EXPECT_EQ(c.num_kv_heads, 4);
    EXPECT_EQ(c.intermediate_size, 172);
    EXPECT_EQ(c.vocab_size, 512);
    EXPECT_EQ(c.bos_token_id, 1);
    EXPECT_FALSE(c.tie_word_embeddings);  // the GGUF stores output.weight (a copy of the embedding)
    std::vector<int32_t> tokens = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 7, 99, 300};
    std::vector<float> a = logits_of(*hf, tokens), b = logits_of(*gg, tokens);
    float d = max_abs_diff(a, b);
    std::printf("[ stories  ] max |logit difference| GGUF vs HF: %g\n", double(d));
    EXPECT_LE(d, 1e-5f);
    // Frozen in bf16, the same model still gives close logits.
    ModelOptions o;
    o.trainable = false;
    o.weight_dtype = DType::BF16;
    auto gb = LlamaModel::load(data + "/stories260K/stories260K.gguf", o);
    EXPECT_EQ(gb->layers[0].q_proj.value.dtype, DType::BF16);
    EXPECT_LE(max_abs_diff(a, logits_of(*gb, tokens)), 0.1f);
}

TEST(GgufModel, TinyRandomLlama2Loads) {
    TUNER_REQUIRE_SHARED_DATA(data);
    auto m = LlamaModel::load(data + "/gguf/tiny-random/llama-2-tiny-random.gguf", {});
    EXPECT_EQ(m->config.hidden_size, 8);
    EXPECT_EQ(m->config.num_heads, 2);
    EXPECT_EQ(m->config.head_dim, 4);
    EXPECT_EQ(m->config.vocab_size, 32000);
    EXPECT_EQ(m->config.max_position_embeddings, 4096);
    EXPECT_FALSE(m->config.tie_word_embeddings);
    EXPECT_EQ(m->embed_tokens.value.dtype, DType::F32);
    std::vector<float> l = logits_of(*m, {1, 15043, 3186});
    for (float x : l) ASSERT_TRUE(std::isfinite(x));
    // F16 kept as F16 in a frozen model; its logits equal the F32 ones (same values).
    ModelOptions o;
    o.trainable = false;
    o.weight_dtype = DType::F16;
    auto mf = LlamaModel::load(data + "/gguf/tiny-random/llama-2-tiny-random.gguf", o);
    EXPECT_EQ(mf->layers[0].gate_proj.value.dtype, DType::F16);
    EXPECT_LE(max_abs_diff(l, logits_of(*mf, {1, 15043, 3186})), 1e-4f);
}

TEST(GgufModel, WrittenFromHfModelsLoadToTheSameLogits) {
    for (const char* arch : {"llama", "qwen2"}) {
        SCOPED_TRACE(arch);
        ModelConfig c = tiny_config(arch);
        auto hf = LlamaModel::random(c, {}, 7);
        if (c.attention_bias)  // give the biases values, so that a mix-up would show
            for (auto& L : hf->layers)
                for (Param* p : {&L.q_bias, &L.k_bias, &L.v_bias}) {
                    auto r = tuner::testing::random_floats(size_t(p->value.numel()), 3, 0.5f);
                    std::memcpy(p->value.data, r.data(), r.size() * 4);
                }
        std::string dir = tuner::testing::make_temp_dir("gguf-model");
        write_all(dir + "/m.gguf", gguf_of(*hf).build());
        auto gg = LlamaModel::load(dir + "/m.gguf", {});
        EXPECT_EQ(gg->config.attention_bias, c.attention_bias);
        EXPECT_EQ(gg->config.tie_word_embeddings, c.tie_word_embeddings);
        EXPECT_EQ(gg->config.num_kv_heads, 2);
        std::vector<int32_t> tokens = {3, 1, 4, 1, 5, 9, 2, 6, 5, 35};
        EXPECT_EQ(max_abs_diff(logits_of(*hf, tokens), logits_of(*gg, tokens)), 0.0f);
    }
}

TEST(GgufModel, QuantisedTensorsStayBlocksInAFrozenModel) {
    ModelConfig c = tiny_config("llama");
    auto hf = LlamaModel::random(c, {}, 11);
    std::map<std::string, std::string> q8;
    std::string dir = tuner::testing::make_temp_dir("gguf-q8");
    write_all(dir + "/m.gguf", gguf_of(*hf, /*q8=*/true, &q8).build());
    ModelOptions o;
    o.trainable = false;
    auto m = LlamaModel::load(dir + "/m.gguf", o);
    const Param& q = m->layers[1].q_proj;
    ASSERT_EQ(q.value.dtype, DType::Q8_0);
    EXPECT_EQ(m->embed_tokens.value.dtype, DType::Q8_0);
    EXPECT_EQ(m->layers[0].attn_norm.value.dtype, DType::F32);
    // The stored blocks are the file's, with Q's rows un-permuted as whole rows (one block each).
    const std::string& file = q8["model.layers.1.self_attn.q_proj.weight"];
    const size_t row = 34;  // 32 columns: one Q8_0 block per row
    const int64_t HD = 8;
    for (int64_t r = 0; r < 32; r++) {
        int64_t h = r / HD, i = (r % HD) / (HD / 2), j = r % (HD / 2);
        int64_t stored = h * HD + 2 * j + i;
        EXPECT_EQ(std::memcmp(static_cast<const uint8_t*>(q.value.data) + size_t(r) * row, file.data() + size_t(stored) * row, row), 0)
            << "row " << r;
    }
    EXPECT_EQ(m->memory_plan().role_bytes("weights") < size_t(hf->num_params()) * 2, true);
    // Full fine-tuning dequantises the blocks to f32: Q8_0 is d * q, within half a step of the
    // original values (d = amax / 127 per block of 32; N(0, 0.02) weights have amax < 0.1).
    auto t = LlamaModel::load(dir + "/m.gguf", {});
    ASSERT_EQ(t->layers[1].q_proj.value.dtype, DType::F32);
    const float* w = t->layers[1].q_proj.value.f32();
    const float* w0 = hf->layers[1].q_proj.value.f32();
    float worst = 0;
    for (int64_t e = 0; e < 32 * 32; e++) worst = std::max(worst, std::fabs(w[e] - w0[e]));
    EXPECT_LE(worst, 0.1f / 127 / 2 * 1.01f);
    EXPECT_GT(worst, 0.0f);
    // The frozen model runs on its blocks (kernels dequantise tile by tile) and gives the logits
    // of the dequantised one.
    std::vector<int32_t> tokens = {3, 1, 4, 1, 5, 9, 2, 6};
    std::vector<float> lq = logits_of(*m, tokens), lf = logits_of(*t, tokens);
    EXPECT_LE(max_abs_diff(lq, lf), 1e-4f);
    EXPECT_GT(max_abs_diff(lq, logits_of(*hf, tokens)), 0.0f);
}

TEST(GgufModel, ConfigErrors) {
    ModelConfig c = tiny_config("llama");
    auto hf = LlamaModel::random(c, {}, 1);
    std::string dir = tuner::testing::make_temp_dir("gguf-bad");
    auto load_err = [&](GgufBuilder b) {
        write_all(dir + "/b.gguf", b.build());
        return error_of([&] { LlamaModel::load(dir + "/b.gguf", {}); });
    };
    {
        GgufBuilder b;
        b.kv_str("general.architecture", "gemma");
        EXPECT_CONTAINS(load_err(b), "b.gguf: general.architecture is 'gemma'; supported: llama, qwen2");
    }
    {
        GgufBuilder b = gguf_of(*hf);
        b.kv_u32("llama.rope.dimension_count", 4);  // appended: a second key of that name
        EXPECT_CONTAINS(load_err(b), "key 'llama.rope.dimension_count' appears twice");
    }
    {
        GgufBuilder b = gguf_of(*hf);
        b.kv_str("llama.rope.scaling.type", "yarn");
        EXPECT_CONTAINS(load_err(b), "key 'llama.rope.scaling.type' is 'yarn'");
    }
    {
        GgufBuilder b = gguf_of(*hf);
        b.tensor_f32("blk.0.ffn_gate_exps.weight", {1}, {0});
        EXPECT_CONTAINS(load_err(b), "tensor 'blk.0.ffn_gate_exps.weight' has no place in a llama model");
    }
    {
        GgufBuilder b = gguf_of(*hf);
        b.tensors.erase(b.tensors.begin() + 3);
        EXPECT_CONTAINS(load_err(b), "no tensor 'blk.0.attn_k.weight' (the model's model.layers.0.self_attn.k_proj.weight)");
    }
    {
        GgufBuilder b = gguf_of(*hf);
        b.tensors[1].ne = {32, 4};  // attn_norm as a matrix
        b.tensors[1].data.resize(32 * 4 * 4);
        EXPECT_CONTAINS(load_err(b), "tensor 'model.layers.0.input_layernorm.weight' (blk.0.attn_norm.weight) has shape");
    }
    {
        GgufBuilder b = gguf_of(*hf);
        b.tensors[2].type = 10;  // Q2_K
        b.tensors[2].ne = {256, 4};
        b.tensors[2].data.assign(4 * 84, '\0');
        EXPECT_CONTAINS(load_err(b), "has type Q2_K, which tuner does not support");
    }
    // Llama 3.1's rope_freqs.weight becomes the llama3 rope_scaling it came from.
    {
        ModelConfig c3 = tiny_config("llama");
        c3.head_dim = 64;
        c3.hidden_size = 256;
        c3.rope_theta = 500000;
        c3.rope_scaling = RopeScaling{RopeScalingType::Llama3, 8.0, 1.0, 4.0, 8192};
        ModelConfig plain = c3;
        plain.rope_scaling = RopeScaling{};
        std::vector<float> base = rope_inv_freq(plain), scaled = rope_inv_freq(c3), freqs(32);
        for (size_t i = 0; i < freqs.size(); i++) freqs[i] = base[i] / scaled[i];
        GgufBuilder b;
        b.kv_str("general.architecture", "llama");
        b.kv_u32("llama.embedding_length", 256);
        b.kv_u32("llama.feed_forward_length", 512);
        b.kv_u32("llama.block_count", 1);
        b.kv_u32("llama.attention.head_count", 4);
        b.kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
        b.kv_f32("llama.rope.freq_base", 500000.0f);
        b.kv_strs("tokenizer.ggml.tokens", {"a", "b"});
        b.tensor_f32("rope_freqs.weight", {32}, freqs);
        std::string bytes = b.build();
        Gguf g(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "l3.gguf");
        ModelConfig got = gguf_model_config(g);
        EXPECT_EQ(got.rope_scaling.type, RopeScalingType::Llama3);
        EXPECT_EQ(got.rope_scaling.factor, 8.0);
        EXPECT_EQ(got.rope_scaling.original_max_position_embeddings, 8192);
        EXPECT_EQ(got.vocab_size, 2);
        EXPECT_TRUE(got.tie_word_embeddings);
    }
}

// ---- CLI ----------------------------------------------------------------------------------------

TEST(GgufCli, TokenizeAGgufFile) {
    TUNER_REQUIRE_SHARED_DATA(data);
    std::string out;
    int rc = tuner::testing::run_command(
        tuner::testing::tuner_exe() + " tokenize " + data + "/stories260K/stories260K.gguf 'Once upon a time' --pieces", &out);
    EXPECT_EQ(rc, 0) << out;
    EXPECT_CONTAINS(out, "1 403 407 261 378\n");
    EXPECT_CONTAINS(out, "\"<s>\" \"▁Once\"");
    rc = tuner::testing::run_command(
        tuner::testing::tuner_exe() + " tokenize " + data + "/gguf/vocab/ggml-vocab-gpt-2.gguf --text 'Hello world' --no-special",
        &out);
    EXPECT_EQ(rc, 0) << out;
    EXPECT_EQ(out, "15496 995\n");
    rc = tuner::testing::run_command(
        tuner::testing::tuner_exe() + " tokenize " + data + "/gguf/vocab/ggml-vocab-bert-bge.gguf --text 'Hello world' --no-special",
        &out);
    EXPECT_EQ(rc, 0) << out;
    EXPECT_EQ(out, "7592 2088\n");
}
