// GGUF export: the writer's layout checked byte by byte with an independent minimal parser (no
// llama.cpp `gguf` package here) and by the reader (io/gguf.h); write failures leave nothing;
// models exported in every type load back through the reader (LlamaModel::load on the .gguf)
// with exactly equal weights for f32/f16/bf16, weights within each block type's error bound for
// q8_0/q4_0/q4_k/q6_k, and logits of stories260K close to its HF folder's per type; llama3 rope
// scaling, Qwen2 biases, tokenizers written as GGUF metadata against their tokenizer.json on
// llama.cpp's reference strings; an adapter merged on export equals `tuner merge`'s output;
// LoRA adapter GGUFs as llama.cpp's loader checks them; GGUF -> Hugging Face; `tuner export`.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

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
#include "io/gguf_writer.h"
#include "io/peft.h"
#include "io/safetensors.h"
#include "models/gguf_export.h"
#include "models/gguf_model.h"
#include "models/llama.h"
#include "models/llama_tensors.h"
#include "quant/ggml_blocks.h"
#include "quant/quant.h"
#include "testing.h"
#include "tokenizer/tokenizer.h"

using namespace tuner;
using tuner::testing::error_of;
using tuner::testing::logits_of;
using tuner::testing::max_abs_diff;
using tuner::testing::read_file;
using tuner::testing::read_vector_texts;
namespace fs = std::filesystem;

namespace {

// ---- an independent minimal GGUF parser (ggml docs/gguf.md), sharing nothing with io/gguf ----

struct MiniInfo {
    std::string name;
    std::vector<uint64_t> ne;
    uint32_t type;
    uint64_t offset;
};
struct MiniGguf {
    uint32_t version = 0;
    uint64_t n_tensors = 0, n_kv = 0;
    std::vector<std::string> keys;
    std::vector<uint32_t> key_types;
    std::string first_key, first_string;  // the first KV (a string value)
    std::vector<MiniInfo> infos;
    uint64_t infos_end = 0;
};

struct Cursor {
    const std::string& b;
    size_t p = 0;
    uint64_t le(size_t n) {
        if (p + n > b.size()) throw std::runtime_error("past the end");
        uint64_t v = 0;
        for (size_t i = 0; i < n; i++) v |= uint64_t(uint8_t(b[p + i])) << (8 * i);
        p += n;
        return v;
    }
    std::string str() {
        uint64_t n = le(8);
        if (p + n > b.size()) throw std::runtime_error("string past the end");
        std::string s = b.substr(p, size_t(n));
        p += size_t(n);
        return s;
    }
    void skip_value(uint32_t type) {
        static const size_t sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
        if (type == 8) {
            str();
        } else if (type == 9) {
            uint32_t et = uint32_t(le(4));
            uint64_t n = le(8);
            for (uint64_t i = 0; i < n; i++) skip_value(et);
        } else if (type < 13) {
            p += sizes[type];
        } else {
            throw std::runtime_error("bad value type");
        }
    }
};

MiniGguf mini_parse(const std::string& bytes) {
    MiniGguf g;
    Cursor c{bytes};
    if (bytes.compare(0, 4, "GGUF") != 0) throw std::runtime_error("no magic");
    c.p = 4;
    g.version = uint32_t(c.le(4));
    g.n_tensors = c.le(8);
    g.n_kv = c.le(8);
    for (uint64_t i = 0; i < g.n_kv; i++) {
        std::string key = c.str();
        uint32_t type = uint32_t(c.le(4));
        g.keys.push_back(key);
        g.key_types.push_back(type);
        if (i == 0 && type == 8) {
            g.first_key = key;
            g.first_string = c.str();
        } else {
            c.skip_value(type);
        }
    }
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        MiniInfo t;
        t.name = c.str();
        uint32_t nd = uint32_t(c.le(4));
        for (uint32_t d = 0; d < nd; d++) t.ne.push_back(c.le(8));
        t.type = uint32_t(c.le(4));
        t.offset = c.le(8);
        g.infos.push_back(t);
    }
    g.infos_end = c.p;
    return g;
}

// ---- models ---------------------------------------------------------------------------------

// Every parameter of a model as f32 (dequantised when stored as blocks), by name.
std::map<std::string, std::vector<float>> params_f32(LlamaModel& m) {
    std::map<std::string, std::vector<float>> out;
    for (Param* p : m.params()) {
        WeightView w = p->weight_view();
        std::vector<float> v(size_t(p->value.numel()));
        weight_rows_to_f32(v.data(), w, 0, w.rows);
        out[p->name] = std::move(v);
    }
    return out;
}

ModelConfig random_config(const std::string& arch, int64_t C, int64_t F, int64_t V) {
    ModelConfig c;
    c.architecture = arch == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
    c.model_type = arch;
    c.vocab_size = V;
    c.hidden_size = C;
    c.intermediate_size = F;
    c.num_layers = 2;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.head_dim = C / 4;
    c.max_position_embeddings = 256;
    c.rms_norm_eps = 1e-5;
    c.rope_theta = 10000.0;
    c.attention_bias = arch == "qwen2";
    c.tie_word_embeddings = true;
    c.bos_token_id = 1;
    c.eos_token_id = 2;
    return c;
}

// A Hugging Face folder (config.json + model.safetensors, no tokenizer) of a random model.
std::string random_hf_folder(const ModelConfig& c, uint64_t seed) {
    auto m = LlamaModel::random(c, {}, seed);
    if (c.attention_bias)  // values in the biases, so that a mix-up shows
        for (auto& L : m->layers)
            for (Param* p : {&L.q_bias, &L.k_bias, &L.v_bias}) {
                auto r = tuner::testing::random_floats(size_t(p->value.numel()), seed + 3, 0.5f);
                std::memcpy(p->value.data, r.data(), r.size() * 4);
            }
    std::string dir = tuner::testing::make_temp_dir("gguf-export-hf");
    m->save(dir, DType::F32);
    return dir;
}

const std::vector<int32_t> kStoryTokens = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 7, 99, 300};

// The largest |error| a block of `values` may have after a round trip through `type` (see
// quant/ggml_blocks.h for each quantiser's bound; a small relative slack covers the f16 scale
// and f32 rounding of the division).
float block_bound(DType type, const float* v, int64_t n) {
    float amax = 0, lo = 0, hi = 0;
    for (int64_t i = 0; i < n; i++) {
        amax = std::max(amax, std::fabs(v[i]));
        lo = std::min(lo, v[i]);
        hi = std::max(hi, v[i]);
    }
    switch (type) {
        case DType::Q8_0: return amax / 127 / 2 * 1.01f + 1e-7f;           // d / 2, d = amax / 127
        case DType::Q4_0: return amax / 8 * 1.01f + 1e-7f;                 // |d| (d = max / -8)
        case DType::Q4_K: return (hi - lo) / 15 * 1.02f + 1e-6f;           // one step of the super-block's range
        case DType::Q6_K: return amax / 31 * 1.02f + 1e-6f;                // one step (d sc <= max / 31 + d)
        case DType::F16: return amax * (1.0f / 2048) + 6e-8f;              // half an f16 ulp
        default: return 0.0f;
    }
}

// Checks every tensor of `exported` (loaded from the GGUF at path) against the source values,
// block by block with the bound of the type the file stores it in. Returns the types seen.
std::map<std::string, int> check_within_bounds(const std::string& gguf_path, LlamaModel& source, LlamaModel& exported) {
    GgufModel g(gguf_path);
    auto a = params_f32(source), b = params_f32(exported);
    std::map<std::string, int> types;
    for (const auto& [name, ref] : a) {
        SCOPED_TRACE(name);
        const DType t = g.dtype(name);
        types[dtype_name(t)]++;
        const std::vector<float>& got = b.at(name);
        EXPECT_EQ(got.size(), ref.size());
        const int64_t block = t == DType::F16 ? 1 : dtype_block_elems(t);
        int64_t bad = 0;
        for (size_t i0 = 0; i0 < ref.size(); i0 += size_t(block)) {
            const int64_t n = std::min<int64_t>(block, int64_t(ref.size() - i0));
            const float bound = block_bound(t, &ref[i0], n);
            for (int64_t k = 0; k < n; k++)
                if (std::fabs(got[i0 + size_t(k)] - ref[i0 + size_t(k)]) > bound) bad++;
        }
        EXPECT_EQ(bad, 0) << dtype_name(t);
        // Exactly the source quantised row by row in HF order: the Q/K permutation moves whole
        // rows, so it commutes with the (per-row) quantisers.
        const std::vector<int64_t> shape = [&] {
            for (Param* p : source.params())
                if (p->name == name) return p->value.dims();
            return std::vector<int64_t>{};
        }();
        const int64_t c = shape.back(), r = int64_t(ref.size()) / c;
        std::vector<uint8_t> q(dtype_nbytes(t, int64_t(ref.size())));
        std::vector<float> want(ref.size());
        quantize_rows(q.data(), t, ref.data(), shape.size() == 1 ? 1 : r, shape.size() == 1 ? int64_t(ref.size()) : c);
        weight_rows_to_f32(
            want.data(),
            WeightView{q.data(), t, shape.size() == 1 ? 1 : r, shape.size() == 1 ? int64_t(ref.size()) : c}, 0,
            shape.size() == 1 ? 1 : r);
        EXPECT_EQ(got, want) << "not the source quantised as " << dtype_name(t);
    }
    return types;
}

// A PEFT adapter for `model_dir` with non-zero B (a fresh adapter would merge to nothing).
std::string make_adapter(const std::string& model_dir, bool rslora, uint64_t seed) {
    ModelOptions o;
    o.trainable = false;
    LoraConfig lc;
    lc.r = 4;
    lc.lora_alpha = 8;
    lc.lora_dropout = 0;
    lc.use_rslora = rslora;
    lc.seed = seed;
    o.lora = lc;
    auto m = LlamaModel::load(model_dir, o);
    for (Param* p : m->adapter_params()) {
        auto r = tuner::testing::random_floats(size_t(p->value.numel()), seed++, 0.05f);
        std::memcpy(p->value.data, r.data(), r.size() * 4);
    }
    std::string dir = tuner::testing::make_temp_dir("gguf-export-adapter") + "/adapter";
    save_peft_adapter(*m, dir, model_dir);
    return dir;
}

}  // namespace

// ---- the writer -----------------------------------------------------------------------------

TEST(GgufWriter, LayoutMatchesTheSpecByteForByte) {
    std::string dir = tuner::testing::make_temp_dir("gguf-writer");
    const std::string path = dir + "/t.gguf";
    std::vector<float> norm = {1.5f, -2.0f, 3.25f};
    std::vector<float> mat = tuner::testing::random_floats(2 * 64, 1);
    std::vector<uint8_t> q8(dtype_nbytes(DType::Q8_0, 2 * 64));
    quantize_rows(q8.data(), DType::Q8_0, mat.data(), 2, 64);
    std::vector<uint16_t> h = {0x3C00, 0x4000, 0xC000, 0x0001, 0x7BFF, 0x8000};  // f16 (2, 3)
    {
        GgufWriter w(path);
        w.add_string("general.architecture", "llama");
        w.add_u8("t.u8", 200);
        w.add_i8("t.i8", -100);
        w.add_u16("t.u16", 60000);
        w.add_i16("t.i16", -30000);
        w.add_u32("t.u32", 4000000000u);
        w.add_i32("t.i32", -2000000000);
        w.add_u64("t.u64", 1ull << 60);
        w.add_i64("t.i64", -(1ll << 60));
        w.add_f32("t.f32", 0.1f);
        w.add_f64("t.f64", 0.1);
        w.add_bool("t.bool", true);
        w.add_string("t.utf8", "Grüße ▁ <s>");
        w.add_string_array("t.strings", {"a", "", "ĠHello"});
        w.add_f32_array("t.floats", {1.0f, -0.5f, 1e-30f});
        w.add_i32_array("t.ints", {-1, 0, 2147483647});
        const uint16_t shorts[] = {1, 2, 65535};
        w.add_array("t.u16s", GgufValueType::U16, shorts, 3);
        EXPECT_TRUE(w.has_key("t.u8"));
        w.declare("norm", DType::F32, {3});
        w.declare("blocks", DType::Q8_0, {2, 64});
        w.declare("half", DType::F16, {2, 3});
        EXPECT_EQ(w.tensor_nbytes("blocks"), size_t(4 * 34));  // 2 rows of 2 blocks
        w.write("norm", norm.data(), 12);
        w.write("blocks", q8.data(), 68);  // in two parts
        w.write("blocks", q8.data() + 68, 68);
        w.write("half", h.data(), 12);
        w.finish();
        EXPECT_EQ(w.file_size(), fs::file_size(path));
    }
    EXPECT_FALSE(fs::exists(path + ".tmp"));
    const std::string bytes = read_file(path);

    // Independent parse: header, first KV, every KV skipped by its type, the tensor infos.
    MiniGguf m = mini_parse(bytes);
    EXPECT_EQ(bytes.substr(0, 4), "GGUF");
    EXPECT_EQ(m.version, 3u);
    EXPECT_EQ(m.n_tensors, 3u);
    EXPECT_EQ(m.n_kv, 17u);
    EXPECT_EQ(m.first_key, "general.architecture");
    EXPECT_EQ(m.first_string, "llama");
    EXPECT_EQ(m.key_types[1], 0u);   // u8
    EXPECT_EQ(m.key_types[9], 6u);   // f32
    EXPECT_EQ(m.key_types[13], 9u);  // array
    ASSERT_EQ(m.infos.size(), 3u);
    EXPECT_EQ(m.infos[0].name, "norm");
    EXPECT_EQ(m.infos[0].ne, (std::vector<uint64_t>{3}));
    EXPECT_EQ(m.infos[0].type, 0u);
    EXPECT_EQ(m.infos[1].ne, (std::vector<uint64_t>{64, 2}));  // ggml order: cols first
    EXPECT_EQ(m.infos[1].type, 8u);                            // GGML_TYPE_Q8_0
    EXPECT_EQ(m.infos[2].ne, (std::vector<uint64_t>{3, 2}));
    EXPECT_EQ(m.infos[2].type, 1u);
    const uint64_t data_start = (m.infos_end + 31) / 32 * 32;
    EXPECT_EQ(m.infos[0].offset, 0u);
    EXPECT_EQ(m.infos[1].offset, 32u);   // 12 bytes padded to 32
    EXPECT_EQ(m.infos[2].offset, 192u);  // 32 + 136 padded to 32
    EXPECT_EQ(bytes.size(), data_start + 192 + 32);
    for (uint64_t i = m.infos_end; i < data_start; i++) EXPECT_EQ(bytes[size_t(i)], 0) << "header padding";
    EXPECT_EQ(std::memcmp(bytes.data() + data_start, norm.data(), 12), 0);
    EXPECT_EQ(std::memcmp(bytes.data() + data_start + 32, q8.data(), 136), 0);
    EXPECT_EQ(std::memcmp(bytes.data() + data_start + 192, h.data(), 12), 0);
    for (uint64_t i = data_start + 12; i < data_start + 32; i++) EXPECT_EQ(bytes[size_t(i)], 0) << "tensor padding";

    // The reader accepts it and reads every value back.
    GgufFile f(path);
    EXPECT_EQ(f.version(), 3u);
    EXPECT_EQ(f.alignment(), 32u);
    EXPECT_EQ(f.data_offset(), data_start);
    EXPECT_EQ(f.get_u32("t.u8"), 200u);
    EXPECT_EQ(f.get_i64("t.i8"), -100);
    EXPECT_EQ(f.get_u32("t.u16"), 60000u);
    EXPECT_EQ(f.get_i64("t.i16"), -30000);
    EXPECT_EQ(f.get_u32("t.u32"), 4000000000u);
    EXPECT_EQ(f.get_i64("t.i32"), -2000000000);
    EXPECT_EQ(f.get_i64("t.u64"), int64_t(1) << 60);
    EXPECT_EQ(f.get_i64("t.i64"), -(int64_t(1) << 60));
    EXPECT_EQ(f.get_f32("t.f32"), 0.1f);
    EXPECT_EQ(f.find("t.f64")->type, GgufValueType::F64);
    double d;
    std::memcpy(&d, f.find("t.f64")->data, 8);
    EXPECT_EQ(d, 0.1);
    EXPECT_TRUE(f.get_bool("t.bool"));
    EXPECT_EQ(f.get_string("t.utf8"), "Grüße ▁ <s>");
    auto strings = f.get_string_array("t.strings");
    ASSERT_EQ(strings.size(), 3u);
    EXPECT_EQ(strings[1], "");
    EXPECT_EQ(strings[2], "ĠHello");
    EXPECT_EQ(f.get_f32_array("t.floats"), (std::vector<float>{1.0f, -0.5f, 1e-30f}));
    EXPECT_EQ(f.get_i32_array("t.ints"), (std::vector<int32_t>{-1, 0, 2147483647}));
    EXPECT_EQ(f.get_i32_array("t.u16s"), (std::vector<int32_t>{1, 2, 65535}));
    const GgufTensor* blocks = f.find_tensor("blocks");
    ASSERT_NE(blocks, nullptr);
    EXPECT_EQ(blocks->dtype(path), DType::Q8_0);
    EXPECT_EQ(blocks->shape(), (std::vector<int64_t>{2, 64}));
    EXPECT_EQ(std::memcmp(blocks->data, q8.data(), q8.size()), 0);
}

TEST(GgufWriter, AnotherAlignmentIsRecorded) {
    std::string dir = tuner::testing::make_temp_dir("gguf-writer-align");
    const std::string path = dir + "/a.gguf";
    {
        GgufWriter w(path, 64);
        w.add_string("general.architecture", "llama");
        w.declare("a", DType::F32, {5});
        w.declare("b", DType::BF16, {3, 7});
        std::vector<float> a(5, 1.0f);
        std::vector<uint16_t> b(21, 0x3F80);
        w.write("a", a.data(), 20);
        w.write("b", b.data(), 42);
        w.finish();
    }
    MiniGguf m = mini_parse(read_file(path));
    EXPECT_EQ(m.keys[0], "general.alignment");  // first, so readers know it before the data
    EXPECT_EQ(m.infos[1].offset, 64u);
    EXPECT_EQ(m.infos[1].type, 30u);  // GGML_TYPE_BF16
    GgufFile f(path);
    EXPECT_EQ(f.alignment(), 64u);
    EXPECT_EQ(f.data_offset() % 64, 0u);
    EXPECT_EQ(f.find_tensor("b")->dtype(path), DType::BF16);
}

TEST(GgufWriter, FailuresLeaveNoFile) {
    std::string dir = tuner::testing::make_temp_dir("gguf-writer-fail");
    // A folder that does not exist: the error names the file.
    std::string msg = error_of([&] {
        GgufWriter w(dir + "/missing/x.gguf");
        w.add_string("general.architecture", "llama");
        w.finish();
    });
    EXPECT_CONTAINS(msg, "[gguf] " + dir + "/missing/x.gguf.tmp: cannot create (No such file or directory)");
    EXPECT_FALSE(fs::exists(dir + "/missing"));
    // An error between two tensors (here: a thrown exception) removes the temporary file and
    // leaves an existing file at PATH untouched.
    const std::string path = dir + "/keep.gguf";
    std::ofstream(path) << "previous";
    try {
        GgufWriter w(path);
        w.declare("a", DType::F32, {4});
        w.declare("b", DType::F32, {4});
        float v[4] = {1, 2, 3, 4};
        w.write("a", v, 16);
        EXPECT_TRUE(fs::exists(path + ".tmp"));
        throw std::runtime_error("stop");
    } catch (const std::runtime_error&) {
    }
    EXPECT_FALSE(fs::exists(path + ".tmp"));
    EXPECT_EQ(read_file(path), "previous");
    // A read-only folder (root ignores permissions, so only as another user).
    if (geteuid() != 0) {
        fs::create_directory(dir + "/ro");
        chmod((dir + "/ro").c_str(), 0555);
        msg = error_of([&] { GgufWriter(dir + "/ro/x.gguf").finish(); });
        EXPECT_CONTAINS(msg, "x.gguf.tmp: cannot create (Permission denied)");
        chmod((dir + "/ro").c_str(), 0755);
    }
}

// ---- type rules and the Q/K permutation -----------------------------------------------------

TEST(GgufExport, TensorTypeRules) {
    ModelConfig c = random_config("llama", 256, 172, 300);
    auto spec = [&](const std::string& name) {
        for (const TensorSpec& s : llama_tensor_specs(c))
            if (s.name == name) return s;
        ADD_FAILURE() << name;
        return TensorSpec{};
    };
    const TensorSpec q = spec("model.layers.0.self_attn.q_proj.weight"),
                     down = spec("model.layers.0.mlp.down_proj.weight"), norm = spec("model.norm.weight"),
                     emb = spec("model.embed_tokens.weight");
    for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K})
        EXPECT_EQ(gguf_export_tensor_type(norm, c, t), DType::F32);
    EXPECT_EQ(gguf_export_tensor_type(q, c, DType::BF16), DType::BF16);
    EXPECT_EQ(gguf_export_tensor_type(down, c, DType::F16), DType::F16);
    EXPECT_EQ(gguf_export_tensor_type(q, c, DType::Q4_K), DType::Q4_K);
    EXPECT_EQ(gguf_export_tensor_type(down, c, DType::Q4_K), DType::F16);  // 172 columns: not even 32-wide
    EXPECT_EQ(gguf_export_tensor_type(down, c, DType::Q8_0), DType::F16);
    // Tied: the embedding is the output -> Q6_K for every quantised type but Q8_0.
    EXPECT_EQ(gguf_export_tensor_type(emb, c, DType::Q4_0), DType::Q6_K);
    EXPECT_EQ(gguf_export_tensor_type(emb, c, DType::Q4_K), DType::Q6_K);
    EXPECT_EQ(gguf_export_tensor_type(emb, c, DType::Q8_0), DType::Q8_0);
    EXPECT_EQ(gguf_export_tensor_type(emb, c, DType::F16), DType::F16);
    c.tie_word_embeddings = false;
    EXPECT_EQ(gguf_export_tensor_type(emb, c, DType::Q4_0), DType::Q4_0);
    EXPECT_EQ(gguf_export_tensor_type(spec("lm_head.weight"), c, DType::Q4_0), DType::Q6_K);
    // 64-wide rows: K types fall back to Q8_0.
    ModelConfig s = random_config("llama", 64, 128, 300);
    for (const TensorSpec& t : llama_tensor_specs(s)) {
        if (t.kind != TensorKind::Linear) continue;
        EXPECT_EQ(gguf_export_tensor_type(t, s, DType::Q6_K), t.shape.back() % 256 ? DType::Q8_0 : DType::Q6_K);
    }
    DType t;
    EXPECT_TRUE(gguf_export_type_from_name("Q4_K", &t));
    EXPECT_EQ(t, DType::Q4_K);
    EXPECT_FALSE(gguf_export_type_from_name("q5_1", &t));
    EXPECT_EQ(gguf_file_type(DType::Q8_0), 7u);
    EXPECT_EQ(gguf_file_type(DType::BF16), 32u);
}

TEST(GgufExport, QkPermutationIsLlamaCppsAndTheReaderUndoesIt) {
    // rows = 3 heads x HD 4: output row h*4 + 2j + i takes input row h*4 + 2i + j.
    std::vector<float> w(12);
    for (size_t i = 0; i < w.size(); i++) w[i] = float(i);
    std::vector<float> p(12), back(12);
    gguf_permute_rows(reinterpret_cast<const uint8_t*>(w.data()), reinterpret_cast<uint8_t*>(p.data()), 12, 4, 3);
    EXPECT_EQ(p, (std::vector<float>{0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11}));
    gguf_unpermute_rows(reinterpret_cast<const uint8_t*>(p.data()), reinterpret_cast<uint8_t*>(back.data()), 12, 4, 3);
    EXPECT_EQ(back, w);
}

// ---- models ---------------------------------------------------------------------------------

TEST(GgufExport, Stories260KFloatTypesLoadBackExactly) {
    TUNER_REQUIRE_SHARED_DATA(data);
    const std::string hf_dir = data + "/stories260K/hf";
    auto hf = LlamaModel::load(hf_dir, {});
    const auto ref = params_f32(*hf);
    const std::vector<float> ref_logits = logits_of(*hf, kStoryTokens);
    std::string dir = tuner::testing::make_temp_dir("gguf-export-float");
    for (DType t : {DType::F32, DType::F16, DType::BF16}) {
        SCOPED_TRACE(dtype_name(t));
        GgufExportOptions o;
        o.type = t;
        const std::string out = dir + "/s-" + dtype_name(t) + ".gguf";
        GgufExportReport r = export_gguf(hf_dir, out, o);
        EXPECT_EQ(r.arch, "llama");
        EXPECT_EQ(r.tensors, 2 + 5 * 9);  // tied: no output.weight
        EXPECT_EQ(r.file_bytes, fs::file_size(out));
        EXPECT_FALSE(fs::exists(out + ".tmp"));

        // Our own parse of the header, then the reader's checks and config.
        MiniGguf m = mini_parse(read_file(out));
        EXPECT_EQ(m.version, 3u);
        EXPECT_EQ(m.n_tensors, uint64_t(r.tensors));
        EXPECT_EQ(m.first_key, "general.architecture");
        EXPECT_EQ(m.first_string, "llama");
        GgufFile f(out);
        EXPECT_EQ(f.get_string("general.type"), "model");
        EXPECT_EQ(f.get_u32("general.file_type"), gguf_file_type(t));
        EXPECT_FALSE(f.has("general.quantization_version"));
        EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "llama");
        const ModelConfig c = gguf_model_config(f);
        EXPECT_EQ(c.hidden_size, 64);
        EXPECT_EQ(c.intermediate_size, 172);
        EXPECT_EQ(c.num_layers, 5);
        EXPECT_EQ(c.num_heads, 8);
        EXPECT_EQ(c.num_kv_heads, 4);
        EXPECT_EQ(c.head_dim, 8);
        EXPECT_EQ(c.vocab_size, 512);
        EXPECT_EQ(c.max_position_embeddings, 512);
        EXPECT_FLOAT_EQ(float(c.rms_norm_eps), 1e-5f);
        EXPECT_TRUE(c.tie_word_embeddings);
        EXPECT_EQ(c.bos_token_id, 1);
        EXPECT_EQ(c.eos_token_id, 2);
        EXPECT_EQ(f.find_tensor("blk.0.attn_norm.weight")->dtype(out), DType::F32);
        EXPECT_EQ(f.find_tensor("blk.0.attn_q.weight")->dtype(out), t);
        EXPECT_EQ(f.find_tensor("token_embd.weight")->dtype(out), t);

        // Weights: exactly the HF values rounded once to the type (norms exact, in F32).
        auto gg = LlamaModel::load(out, {});
        const auto got = params_f32(*gg);
        ASSERT_EQ(got.size(), ref.size());
        for (const auto& [name, v] : ref) {
            const bool norm = name.find("norm") != std::string::npos;
            std::vector<float> want = v;
            if (!norm && t != DType::F32) {
                std::vector<uint16_t> h(v.size());
                convert_from_f32(h.data(), t, v.data(), v.size());
                convert_to_f32(want.data(), h.data(), t, v.size());
            }
            EXPECT_EQ(got.at(name), want) << name;
        }
        // Logits: f32 is the same model (the permutation moves whole rows back and forth);
        // f16 / bf16 change each weight by at most 2^-11 / 2^-8 relative, and these logits of a
        // 5-layer model with |logit| < 20 move by ~1e-2 (f16) and ~0.1 (bf16).
        const float d = max_abs_diff(ref_logits, logits_of(*gg, kStoryTokens));
        std::printf("[ %-6s ] max |logit difference| exported vs HF: %g\n", dtype_name(t), double(d));
        EXPECT_LE(d, t == DType::F32 ? 0.0f : t == DType::F16 ? 0.02f : 0.15f);
    }
}

TEST(GgufExport, Stories260KIsLlamaCppsOwnConversion) {
    // ../shared/data/stories260K/stories260K.gguf was made by llama.cpp from the same weights:
    // every tensor we write (Q and K permuted, with 8 query and 4 key/value heads) is byte for
    // byte the one llama.cpp's converter wrote, and so is the vocabulary (tokens, SentencePiece
    // scores made from the merge order, token types) and the special ids.
    TUNER_REQUIRE_SHARED_DATA(data);
    std::string dir = tuner::testing::make_temp_dir("gguf-export-llamacpp");
    GgufExportOptions o;
    o.type = DType::F32;
    export_gguf(data + "/stories260K/hf", dir + "/s.gguf", o);
    GgufFile ours(dir + "/s.gguf"), theirs(data + "/stories260K/stories260K.gguf");
    int compared = 0;
    for (const GgufTensor& t : ours.tensors()) {
        const GgufTensor* u = theirs.find_tensor(t.name);
        ASSERT_NE(u, nullptr) << t.name;
        EXPECT_EQ(t.ne, u->ne) << t.name;
        EXPECT_EQ(t.ggml_type, u->ggml_type) << t.name;
        ASSERT_EQ(t.nbytes, u->nbytes) << t.name;
        EXPECT_EQ(std::memcmp(t.data, u->data, t.nbytes), 0) << t.name;
        compared++;
    }
    EXPECT_EQ(compared, 47);  // theirs also has output.weight, a copy of the tied embedding
    for (const char* key : {"tokenizer.ggml.tokens"}) {
        auto a = ours.get_string_array(key), b = theirs.get_string_array(key);
        EXPECT_EQ(a, b);
    }
    EXPECT_EQ(ours.get_f32_array("tokenizer.ggml.scores"), theirs.get_f32_array("tokenizer.ggml.scores"));
    EXPECT_EQ(ours.get_i32_array("tokenizer.ggml.token_type"), theirs.get_i32_array("tokenizer.ggml.token_type"));
    for (const char* key :
         {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
          "llama.embedding_length", "llama.feed_forward_length", "llama.block_count", "llama.attention.head_count",
          "llama.attention.head_count_kv", "llama.rope.dimension_count"})
        EXPECT_EQ(ours.get_u32(key), theirs.get_u32(key)) << key;
    EXPECT_EQ(ours.get_f32("llama.attention.layer_norm_rms_epsilon"),
              theirs.get_f32("llama.attention.layer_norm_rms_epsilon"));
}

TEST(GgufExport, Stories260KQuantisedWithinEachTypesBound) {
    TUNER_REQUIRE_SHARED_DATA(data);
    const std::string hf_dir = data + "/stories260K/hf";
    auto hf = LlamaModel::load(hf_dir, {});
    const std::vector<float> ref_logits = logits_of(*hf, kStoryTokens);
    std::string dir = tuner::testing::make_temp_dir("gguf-export-quant");
    // Max |logit difference| allowed per type (the logits reach |20|): Q8_0's half-step errors
    // (up to 0.4% of a block's largest weight, in every matrix and in the tied embedding that
    // also makes the logits) move them by ~0.25; Q4_0's steps of 1/8 of a block's largest weight
    // by ~4 in a model this small (64 wide). The K types fall back to Q8_0 here (rows of 64 and
    // 172 are not 256-wide), ffn_down to F16. The most likely next token must stay the same at
    // every position.
    const std::map<DType, float> tol = {
        {DType::Q8_0, 0.5f}, {DType::Q4_0, 6.0f}, {DType::Q4_K, 0.5f}, {DType::Q6_K, 0.5f}};
    for (const auto& [t, limit] : tol) {
        SCOPED_TRACE(dtype_name(t));
        GgufExportOptions o;
        o.type = t;
        const std::string out = dir + "/s-" + dtype_name(t) + ".gguf";
        GgufExportReport r = export_gguf(hf_dir, out, o);
        EXPECT_FALSE(r.notes.empty());  // the fallbacks are reported
        GgufFile f(out);
        EXPECT_EQ(f.get_u32("general.quantization_version"), 2u);
        EXPECT_EQ(f.get_u32("general.file_type"), gguf_file_type(t));
        auto gg = LlamaModel::load(out, {});  // trainable: blocks dequantised to f32
        auto types = check_within_bounds(out, *hf, *gg);
        EXPECT_EQ(types["F16"], 5);  // ffn_down: 172 columns
        EXPECT_EQ(types["F32"], 11);
        if (t == DType::Q4_0) {
            EXPECT_EQ(types["Q4_0"], 30);
            EXPECT_EQ(types["Q8_0"], 1);  // the tied embedding: Q6_K wanted, 64 columns -> Q8_0
        } else {
            EXPECT_EQ(types["Q8_0"], 31);
        }
        // A frozen model keeps the blocks and runs on them.
        ModelOptions frozen;
        frozen.trainable = false;
        auto gf = LlamaModel::load(out, frozen);
        EXPECT_EQ(gf->layers[0].q_proj.value.dtype, t == DType::Q4_0 ? DType::Q4_0 : DType::Q8_0);
        const std::vector<float> lg = logits_of(*gf, kStoryTokens);
        const float d = max_abs_diff(ref_logits, lg);
        float lmax = 0;
        for (float x : ref_logits) lmax = std::max(lmax, std::fabs(x));
        int agree = 0;
        const size_t V = 512;
        for (size_t p = 0; p < kStoryTokens.size(); p++) {
            auto a =
                std::max_element(ref_logits.begin() + p * V, ref_logits.begin() + (p + 1) * V) - ref_logits.begin();
            auto b = std::max_element(lg.begin() + p * V, lg.begin() + (p + 1) * V) - lg.begin();
            agree += a == b;
        }
        std::printf("[ %-6s ] max |logit difference| exported vs HF: %g (max |logit| %g), argmax agrees at %d of %zu\n",
                    dtype_name(t), double(d), double(lmax), agree, kStoryTokens.size());
        EXPECT_LE(d, limit);
        EXPECT_GT(d, 0.0f);
        EXPECT_EQ(agree, int(kStoryTokens.size()));
    }
}

TEST(GgufExport, KTypesOnWideRowsAndOutputInQ6K) {
    // 256-wide rows so that Q4_K / Q6_K apply; an untied head.
    ModelConfig c = random_config("llama", 256, 512, 300);
    c.tie_word_embeddings = false;
    const std::string hf_dir = random_hf_folder(c, 5);
    auto hf = LlamaModel::load(hf_dir, {});
    std::string dir = tuner::testing::make_temp_dir("gguf-export-k");
    for (DType t : {DType::Q4_K, DType::Q6_K, DType::Q4_0, DType::Q8_0}) {
        SCOPED_TRACE(dtype_name(t));
        GgufExportOptions o;
        o.type = t;
        const std::string out = dir + "/k.gguf";
        GgufExportReport r = export_gguf(hf_dir, out, o);
        EXPECT_TRUE(r.notes.size() == 1);  // only: the folder has no tokenizer
        GgufFile f(out);
        EXPECT_EQ(f.find_tensor("output.weight")->dtype(out), t == DType::Q8_0 ? DType::Q8_0 : DType::Q6_K);
        EXPECT_EQ(f.find_tensor("token_embd.weight")->dtype(out), t);
        EXPECT_EQ(f.find_tensor("blk.1.ffn_down.weight")->dtype(out), t);
        EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "none");
        EXPECT_EQ(gguf_model_config(f).bos_token_id, 1);
        EXPECT_EQ(gguf_model_config(f).eos_token_id, 2);
        EXPECT_EQ(f.get_u32("llama.vocab_size"), 300u);
        auto gg = LlamaModel::load(out, {});
        auto types = check_within_bounds(out, *hf, *gg);
        // 14 linears + the embedding, + the head when it is in the same type.
        EXPECT_EQ(types[dtype_name(t)], t == DType::Q8_0 || t == DType::Q6_K ? 16 : 15);
    }
}

TEST(GgufExport, Qwen2BiasesLlamaBiasesAndRopeScaling) {
    std::string dir = tuner::testing::make_temp_dir("gguf-export-arch");
    const std::vector<int32_t> tokens = {3, 1, 4, 1, 5, 9, 2, 6, 5, 35, 8, 9, 7, 9};
    struct Case {
        const char* name;
        ModelConfig config;
    };
    std::vector<Case> cases;
    cases.push_back({"qwen2", random_config("qwen2", 64, 96, 50)});
    ModelConfig lb = random_config("llama", 64, 96, 50);
    lb.attention_bias = true;  // permuted like the weights
    cases.push_back({"llama with biases", lb});
    ModelConfig l3 = random_config("llama", 256, 96, 50);  // head_dim 64: rope frequencies across the llama3 bands
    l3.rope_theta = 500000.0;
    l3.rope_scaling = RopeScaling{RopeScalingType::Llama3, 32.0, 1.0, 4.0, 8192};
    cases.push_back({"llama3 rope", l3});
    ModelConfig lin = random_config("llama", 64, 96, 50);
    lin.rope_scaling.type = RopeScalingType::Linear;
    lin.rope_scaling.factor = 4.0;
    cases.push_back({"linear rope", lin});
    for (const Case& k : cases) {
        SCOPED_TRACE(k.name);
        const std::string hf_dir = random_hf_folder(k.config, 9);
        auto hf = LlamaModel::load(hf_dir, {});
        GgufExportOptions o;
        o.type = DType::F32;
        const std::string out = dir + "/m.gguf";
        export_gguf(hf_dir, out, o);
        GgufFile f(out);
        EXPECT_EQ(f.get_string("general.architecture"), k.config.model_type);
        const ModelConfig c = gguf_model_config(f);
        EXPECT_EQ(c.attention_bias, k.config.attention_bias);
        EXPECT_EQ(c.rope_scaling.type, k.config.rope_scaling.type);
        EXPECT_EQ(c.rope_scaling.factor, k.config.rope_scaling.factor);
        EXPECT_EQ(c.rope_scaling.original_max_position_embeddings,
                  k.config.rope_scaling.original_max_position_embeddings);
        EXPECT_EQ(f.find_tensor("rope_freqs.weight") != nullptr, k.config.rope_scaling.type == RopeScalingType::Llama3);
        if (k.config.attention_bias) {
            EXPECT_EQ(f.find_tensor("blk.0.attn_k.bias")->dtype(out), DType::F32);
        }
        auto gg = LlamaModel::load(out, {});
        EXPECT_EQ(max_abs_diff(logits_of(*hf, tokens), logits_of(*gg, tokens)), 0.0f);
    }
}

// ---- tokenizers -------------------------------------------------------------------------------

TEST(GgufExport, TokenizersAsGgufMetadataEncodeLikeTheirTokenizerJson) {
    TUNER_REQUIRE_SHARED_DATA(data);
    std::string dir = tuner::testing::make_temp_dir("gguf-export-tok");
    // A folder with Qwen2.5-Instruct's tokenizer_config.json (chat template) beside its tokenizer.json.
    const std::string qwen_instruct = dir + "/qwen-instruct";
    fs::create_directories(qwen_instruct);
    fs::copy_file(data + "/tokenizers/qwen2.5-hf/tokenizer.json", qwen_instruct + "/tokenizer.json");
    fs::copy_file(data + "/tokenizers/qwen2.5-hf/instruct/tokenizer_config.json",
                  qwen_instruct + "/tokenizer_config.json");
    struct Case {
        std::string folder, vectors, model, pre;
    };
    const std::vector<Case> cases = {
        {data + "/tokenizers/gpt2", "gpt-2", "gpt2", "gpt-2"},
        {data + "/tokenizers/llama3-hf", "llama-bpe", "gpt2", "llama-bpe"},
        {qwen_instruct, "qwen2", "gpt2", "qwen2"},
        {data + "/tokenizers/phi3-mini-hf-llama2vocab", "phi-3", "llama", "default"},
        {data + "/stories260K/hf", "llama-spm", "llama", "default"},
    };
    for (const Case& k : cases) {
        SCOPED_TRACE(k.folder);
        auto hf = Tokenizer::load(k.folder);
        ModelConfig c = random_config("llama", 64, 96, hf->vocab_size());
        c.bos_token_id = c.eos_token_id = -1;  // the tokenizer's own ids only
        const std::string out = dir + "/" + fs::path(k.folder).filename().string() + ".gguf";
        std::vector<std::string> notes;
        {
            GgufWriter w(out);
            w.add_string("general.architecture", "llama");
            w.add_string("general.name", fs::path(k.folder).filename().string());
            gguf_add_tokenizer(w, k.folder, c, &notes);
            w.finish();
        }
        EXPECT_TRUE(notes.empty()) << (notes.empty() ? "" : notes[0]);
        GgufFile f(out);
        EXPECT_EQ(f.get_string("tokenizer.ggml.model"), k.model);
        EXPECT_EQ(f.get_string("tokenizer.ggml.pre"), k.pre);
        EXPECT_EQ(int64_t(f.array_size("tokenizer.ggml.tokens")), hf->vocab_size());
        auto gg = load_gguf_tokenizer(out);
        // Without a BOS (Qwen2.5's bos_token is null) no id is written; the reader then guesses
        // one by name, which only matters to text that asks for BOS (none is added here).
        if (hf->bos_id() >= 0) EXPECT_EQ(gg->bos_id(), hf->bos_id());
        else EXPECT_FALSE(f.has("tokenizer.ggml.bos_token_id"));
        EXPECT_EQ(gg->eos_id(), hf->eos_id());
        EXPECT_EQ(gg->adds_bos(), hf->adds_bos());
        int same = 0, n = 0;
        for (const std::string& text : read_vector_texts(data, k.vectors)) {
            n++;
            const auto a = hf->encode(text, false), b = gg->encode(text, false);
            if (a == b) same++;
            else ADD_FAILURE() << "text '" << text << "' encodes differently";
            EXPECT_EQ(hf->encode(text, true), gg->encode(text, true));
        }
        EXPECT_EQ(same, n);
        if (k.vectors == "qwen2") {
            const nlohmann::json cfg = nlohmann::json::parse(read_file(qwen_instruct + "/tokenizer_config.json"));
            EXPECT_EQ(f.get_string("tokenizer.chat_template"), cfg["chat_template"].get<std::string>());
            EXPECT_EQ(f.get_u32("tokenizer.ggml.padding_token_id"), 151643u);
        }
    }
}

// ---- adapters ---------------------------------------------------------------------------------

TEST(GgufExport, AdapterMergedOnExportEqualsTunerMerge) {
    TUNER_REQUIRE_SHARED_DATA(data);
    const std::string hf_dir = data + "/stories260K/hf";
    const std::string adapter = make_adapter(hf_dir, false, 21);
    std::string dir = tuner::testing::make_temp_dir("gguf-export-merge");
    merge_peft_adapter(hf_dir, adapter, dir + "/merged", DType::F32);
    for (DType t : {DType::F32, DType::Q8_0}) {
        SCOPED_TRACE(dtype_name(t));
        GgufExportOptions o;
        o.type = t;
        o.name = "same";
        export_gguf(dir + "/merged", dir + "/a.gguf", o);
        o.adapter_dir = adapter;
        export_gguf(hf_dir, dir + "/b.gguf", o);
        GgufFile a(dir + "/a.gguf"), b(dir + "/b.gguf");
        ASSERT_EQ(a.tensors().size(), b.tensors().size());
        for (const GgufTensor& ta : a.tensors()) {
            const GgufTensor* tb = b.find_tensor(ta.name);
            ASSERT_NE(tb, nullptr) << ta.name;
            ASSERT_EQ(ta.nbytes, tb->nbytes);
            EXPECT_EQ(std::memcmp(ta.data, tb->data, ta.nbytes), 0) << ta.name;
        }
        // The whole file is the same, metadata included.
        EXPECT_EQ(read_file(dir + "/a.gguf"), read_file(dir + "/b.gguf"));
    }
    // The adapter changed the model.
    auto base = LlamaModel::load(hf_dir, {}), merged = LlamaModel::load(dir + "/b.gguf", {});
    EXPECT_GT(max_abs_diff(logits_of(*base, kStoryTokens), logits_of(*merged, kStoryTokens)), 1e-3f);
}

TEST(GgufExport, LoraAdapterAsLlamaCppLoadsIt) {
    TUNER_REQUIRE_SHARED_DATA(data);
    const std::string hf_dir = data + "/stories260K/hf";
    std::string dir = tuner::testing::make_temp_dir("gguf-export-lora");
    GgufExportOptions base_o;
    base_o.type = DType::F32;
    export_gguf(hf_dir, dir + "/base.gguf", base_o);
    GgufFile base(dir + "/base.gguf");
    for (bool rslora : {false, true}) {
        SCOPED_TRACE(rslora ? "rslora" : "lora");
        const std::string adapter = make_adapter(hf_dir, rslora, 40);
        const std::string out = dir + "/lora.gguf";
        // No --base: the adapter's base_model_name_or_path is a local folder.
        GgufLoraExportReport r = export_gguf_lora(adapter, "", out);
        EXPECT_EQ(r.pairs, 5 * 7);
        EXPECT_EQ(r.r, 4);
        const MiniGguf m = mini_parse(read_file(out));
        EXPECT_EQ(m.first_key, "general.architecture");
        EXPECT_EQ(m.first_string, "llama");
        GgufFile f(out);
        EXPECT_EQ(f.get_string("general.type"), "adapter");
        EXPECT_EQ(f.get_string("adapter.type"), "lora");
        EXPECT_EQ(f.find("adapter.lora.alpha")->type, GgufValueType::F32);
        // llama.cpp scales by alpha / r; rsLoRA's alpha / sqrt(r) needs alpha * sqrt(r) = 16.
        EXPECT_FLOAT_EQ(f.get_f32("adapter.lora.alpha"), rslora ? 16.0f : 8.0f);
        EXPECT_EQ(f.tensors().size(), size_t(2 * 5 * 7));
        // The shape checks of llama-adapter.cpp, against the exported base.
        for (const GgufTensor& t : base.tensors()) {
            if (t.ne.size() != 2 || t.name == "token_embd.weight") continue;
            const GgufTensor* a = f.find_tensor(t.name + ".lora_a");
            const GgufTensor* b = f.find_tensor(t.name + ".lora_b");
            ASSERT_TRUE(a && b) << t.name;
            EXPECT_EQ(a->ne[0], t.ne[0]) << t.name;  // in
            EXPECT_EQ(b->ne[1], t.ne[1]) << t.name;  // out
            EXPECT_EQ(a->ne[1], b->ne[0]) << t.name;  // r
            EXPECT_EQ(a->ne[1], 4);
            EXPECT_EQ(a->dtype(out), DType::F32);
        }
        // lora_a is PEFT's A as it is; lora_b is B with Q/K rows permuted like the base weights,
        // so that W' + scale B' A = permute(W + scale B A).
        SafetensorsFile st(adapter + "/adapter_model.safetensors");
        const ModelConfig c = load_config(hf_dir + "/config.json");
        for (int module = 0; module < 7; module++) {
            const std::string hf = lora_module_path(2, module);
            const std::string g = hf_to_gguf_name(hf + ".weight");
            const SafetensorsTensor* A = st.find("base_model.model." + hf + ".lora_A.weight");
            const SafetensorsTensor* B = st.find("base_model.model." + hf + ".lora_B.weight");
            ASSERT_TRUE(A && B);
            EXPECT_EQ(std::memcmp(f.find_tensor(g + ".lora_a")->data, A->data, A->nbytes), 0) << g;
            const GgufTensor* gb = f.find_tensor(g + ".lora_b");
            std::vector<uint8_t> back(gb->nbytes);
            const int64_t heads = module == 0 ? c.num_heads : module == 1 ? c.num_kv_heads : 0;
            if (heads) {
                gguf_unpermute_rows(gb->data, back.data(), B->shape[0], size_t(B->shape[1]) * 4, heads);
                EXPECT_NE(std::memcmp(gb->data, B->data, B->nbytes), 0) << g;  // really permuted
            } else {
                std::memcpy(back.data(), gb->data, gb->nbytes);
            }
            EXPECT_EQ(std::memcmp(back.data(), B->data, B->nbytes), 0) << g;
        }
    }
    // An adapter whose recorded base is not a local folder needs --base.
    const std::string adapter = make_adapter(hf_dir, false, 3);
    nlohmann::json cfg = nlohmann::json::parse(read_file(adapter + "/adapter_config.json"));
    cfg["base_model_name_or_path"] = "someone/some-model";
    std::ofstream(adapter + "/adapter_config.json") << cfg.dump();
    EXPECT_CONTAINS(error_of([&] { export_gguf_lora(adapter, "", dir + "/x.gguf"); }), "pass --base MODEL_DIR");
    EXPECT_NO_THROW(export_gguf_lora(adapter, hf_dir, dir + "/x.gguf"));
    // A GGUF base (an adapter trained on llama.cpp's stories260K.gguf) gives the same file.
    export_gguf_lora(adapter, data + "/stories260K/stories260K.gguf", dir + "/z.gguf");
    EXPECT_EQ(read_file(dir + "/x.gguf"), read_file(dir + "/z.gguf"));
    // An adapter for another model: the shapes say so, and nothing is written.
    ModelConfig other = random_config("llama", 32, 96, 512);
    const std::string other_dir = random_hf_folder(other, 1);
    EXPECT_CONTAINS(error_of([&] { export_gguf_lora(adapter, other_dir, dir + "/y.gguf"); }), "has shape (4, 64) but");
    EXPECT_FALSE(fs::exists(dir + "/y.gguf"));
}

// ---- GGUF -> Hugging Face ---------------------------------------------------------------------

TEST(GgufExport, HfFolderFromLlamaCppsStories260K) {
    TUNER_REQUIRE_SHARED_DATA(data);
    const std::string gguf = data + "/stories260K/stories260K.gguf";
    std::string dir = tuner::testing::make_temp_dir("gguf-export-hf");
    HfExportReport r = export_hf_from_gguf(gguf, dir + "/out");
    EXPECT_EQ(r.dtype, DType::F32);  // no general.file_type: the matrices' type (F32)
    ASSERT_TRUE(r.tokenizer_written) << r.tokenizer;
    for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"})
        EXPECT_TRUE(fs::exists(dir + "/out/" + f)) << f;
    EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);  // no temporary folder left
    auto from_gguf = LlamaModel::load(gguf, {}), from_hf = LlamaModel::load(dir + "/out", {});
    EXPECT_EQ(params_f32(*from_gguf), params_f32(*from_hf));
    auto orig = LlamaModel::load(data + "/stories260K/hf", {});
    EXPECT_LE(max_abs_diff(logits_of(*orig, kStoryTokens), logits_of(*from_hf, kStoryTokens)), 1e-5f);
    // The tokenizer.json encodes as the GGUF's tokenizer, and as the original tokenizer.json.
    auto tg = load_gguf_tokenizer(gguf), th = Tokenizer::load(dir + "/out"),
         to = Tokenizer::load(data + "/stories260K/hf");
    for (const std::string& text : read_vector_texts(data, "llama-spm")) {
        EXPECT_EQ(th->encode(text, true), tg->encode(text, true)) << text;
        EXPECT_EQ(th->encode(text, false), to->encode(text, false)) << text;
    }
    EXPECT_EQ(th->bos_id(), 1);
    EXPECT_EQ(th->eos_id(), 2);
    // An existing non-empty folder is refused.
    EXPECT_CONTAINS(error_of([&] { export_hf_from_gguf(gguf, dir + "/out"); }), "already exists");
    // HF -> GGUF bf16 -> HF keeps bf16 (the file type) and every bf16 value.
    GgufExportOptions o;
    o.type = DType::BF16;
    export_gguf(data + "/stories260K/hf", dir + "/s.gguf", o);
    r = export_hf_from_gguf(dir + "/s.gguf", dir + "/back");
    EXPECT_EQ(r.dtype, DType::BF16);
    EXPECT_EQ(load_config(dir + "/back/config.json").torch_dtype, "bfloat16");
    // Matrices bit for bit; the norms (F32 in the GGUF) rounded to bf16 like the rest of an HF
    // bf16 checkpoint.
    auto a = LlamaModel::load(dir + "/s.gguf", {}), b = LlamaModel::load(dir + "/back", {});
    auto pa = params_f32(*a), pb = params_f32(*b);
    for (auto& [name, v] : pa) {
        std::vector<uint16_t> h(v.size());
        convert_from_f32(h.data(), DType::BF16, v.data(), v.size());
        convert_to_f32(v.data(), h.data(), DType::BF16, v.size());
        EXPECT_EQ(v, pb.at(name)) << name;
    }
}

TEST(GgufExport, TokenizerJsonFromVocabularyGgufs) {
    TUNER_REQUIRE_SHARED_DATA(data);
    std::string dir = tuner::testing::make_temp_dir("gguf-export-vocab");
    for (const char* name : {"gpt-2", "llama-spm", "phi-3", "starcoder", "refact", "mpt"}) {
        SCOPED_TRACE(name);
        const std::string path = data + "/gguf/vocab/ggml-vocab-" + std::string(name) + ".gguf";
        GgufFile g(path);
        const std::string out = dir + "/" + name;
        fs::create_directories(out);
        std::string note;
        ASSERT_TRUE(write_hf_tokenizer_from_gguf(g, out, &note)) << note;
        EXPECT_EQ(note.find("not reproduced"), std::string::npos) << note;
        auto a = load_gguf_tokenizer(path), b = Tokenizer::load(out);
        EXPECT_EQ(a->bos_id(), b->bos_id());
        EXPECT_EQ(a->eos_id(), b->eos_id());
        EXPECT_EQ(a->vocab_size(), b->vocab_size());
        int same = 0, n = 0;
        for (const std::string& text : read_vector_texts(data, name)) {
            n++;
            if (a->encode(text, true) == b->encode(text, true)) same++;
            else ADD_FAILURE() << "text '" << text << "' encodes differently";
        }
        EXPECT_EQ(same, n);
    }
    // A tokenizer type without an export: nothing written, the reason given.
    GgufFile bert(data + "/gguf/vocab/ggml-vocab-bert-bge.gguf");
    std::string note;
    EXPECT_FALSE(write_hf_tokenizer_from_gguf(bert, dir, &note));
    EXPECT_CONTAINS(note, "'bert'");
    EXPECT_FALSE(fs::exists(dir + "/tokenizer.json"));
}

// ---- errors and the CLI -------------------------------------------------------------------------

TEST(GgufExport, Errors) {
    std::string dir = tuner::testing::make_temp_dir("gguf-export-err");
    GgufExportOptions o;
    EXPECT_CONTAINS(error_of([&] { export_gguf(dir, dir + "/x.gguf", o); }), "no config.json");
    EXPECT_CONTAINS(error_of([&] { export_gguf(dir + "/x.gguf", dir + "/y.gguf", o); }), "is a GGUF file already");
    o.type = DType::NF4;
    EXPECT_CONTAINS(error_of([&] { export_gguf(dir, dir + "/x.gguf", o); }), "cannot be exported");
    // A tokenizer larger than the embedding.
    ModelConfig c = random_config("llama", 64, 96, 200);
    const std::string hf_dir = random_hf_folder(c, 2);
    TUNER_REQUIRE_SHARED_DATA(data);
    fs::copy_file(data + "/stories260K/hf/tokenizer.json", hf_dir + "/tokenizer.json");
    o.type = DType::F16;
    EXPECT_CONTAINS(error_of([&] { export_gguf(hf_dir, dir + "/x.gguf", o); }),
                    "the tokenizer has 512 tokens but the model's vocab_size is 200");
    EXPECT_FALSE(fs::exists(dir + "/x.gguf"));
    EXPECT_FALSE(fs::exists(dir + "/x.gguf.tmp"));
}

TEST(GgufExportCli, ExportsAndFailsCleanly) {
    TUNER_REQUIRE_SHARED_DATA(data);
    const std::string exe = tuner::testing::tuner_exe();
    const std::string hf_dir = data + "/stories260K/hf";
    std::string dir = tuner::testing::make_temp_dir("gguf-export-cli");
    std::string out;
    int rc =
        tuner::testing::run_command(exe + " export " + hf_dir + " --format gguf --type q8_0 " + dir + "/s.gguf", &out);
    EXPECT_EQ(rc, 0) << out;
    EXPECT_CONTAINS(out, "exported " + hf_dir + " -> " + dir + "/s.gguf: llama, 47 tensors");
    EXPECT_CONTAINS(out, "note: 5 tensor(s) with 172 columns (not whole Q8_0 blocks) written as F16");
    rc = tuner::testing::run_command(exe + " export " + dir + "/s.gguf --format hf --type f16 " + dir + "/hf", &out);
    EXPECT_EQ(rc, 0) << out;
    EXPECT_TRUE(fs::exists(dir + "/hf/model.safetensors"));
    const std::string adapter = make_adapter(hf_dir, false, 8);
    rc = tuner::testing::run_command(
        exe + " export " + adapter + " --format gguf-lora --base " + hf_dir + " " + dir + "/l.gguf", &out);
    EXPECT_EQ(rc, 0) << out;
    EXPECT_CONTAINS(out, "r 4, alpha 8, 35 adapted linears");
    rc = tuner::testing::run_command(exe + " export " + hf_dir + " --format gguf --type q5_1 " + dir + "/x.gguf", &out);
    EXPECT_EQ(rc, 1);
    EXPECT_CONTAINS(out, "error: [export] --type q5_1: expected f32, f16, bf16, q8_0, q4_0, q4_k or q6_k");
    rc = tuner::testing::run_command(exe + " export " + hf_dir + " --format onnx " + dir + "/x.gguf", &out);
    EXPECT_EQ(rc, 1);
    EXPECT_CONTAINS(out, "--format onnx: expected gguf, gguf-lora or hf");
    // A full disk (a file size limit of 64 KiB): a clear error, no partial file, and an older
    // file at OUT untouched.
    std::ofstream(dir + "/full.gguf") << "older";
    rc = tuner::testing::run_command(
        "bash -c 'ulimit -f 64; " + exe + " export " + hf_dir + " --format gguf --type f32 " + dir + "/full.gguf'",
        &out);
    EXPECT_EQ(rc, 1) << out;
    EXPECT_CONTAINS(out, "error: [gguf] " + dir + "/full.gguf.tmp: write failed (File too large");
    EXPECT_FALSE(fs::exists(dir + "/full.gguf.tmp"));
    EXPECT_EQ(read_file(dir + "/full.gguf"), "older");
    rc = tuner::testing::run_command(exe + " export " + hf_dir + " --format gguf " + dir + "/no/such/dir/x.gguf", &out);
    EXPECT_EQ(rc, 1);
    EXPECT_CONTAINS(out, "error: [gguf] " + dir + "/no/such/dir/x.gguf.tmp: cannot create (No such file or directory)");
}
