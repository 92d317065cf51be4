// GGUF export of models and LoRA adapters, and GGUF -> Hugging Face (see gguf_export.h).
// Conventions from llama.cpp: convert_hf_to_gguf.py (keys, names, Q/K permutation, llama3
// rope_freqs, --outtype fallbacks), llama-quantize (output tensor in Q6_K), convert_lora_to_gguf.py
// and llama-adapter.cpp (adapter layout).
#include "models/gguf_export.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "backend/kernels.h"
#include "core/error.h"
#include "io/atomic_file.h"
#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "io/mapped_pages.h"
#include "io/peft.h"
#include "io/safetensors.h"
#include "models/gguf_model.h"
#include "nn/lora.h"
#include "nn/rope.h"
#include "quant/quant.h"

namespace tuner {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Elements converted per block of rows: 4M f32 values (16 MB) keep memory flat for any model.
constexpr int64_t kChunkElems = int64_t(1) << 22;

const char* ggml_name(DType t) { return ggml_type_info(dtype_to_ggml_type(t))->name; }

// general.architecture of a config: Mistral converts as llama (as convert_hf_to_gguf.py does).
std::string gguf_arch(const ModelConfig& c, const std::string& where) {
    if (c.model_type == "llama" || c.model_type == "mistral") return "llama";
    if (c.model_type == "qwen2") return "qwen2";
    fail("[export] {}: model_type '{}' has no GGUF export (supported: llama, mistral, qwen2)", where, c.model_type);
}

std::string folder_name(const std::string& path) {
    fs::path p(path);
    if (p.filename().empty()) p = p.parent_path();
    std::string n = p.filename().string();
    return n.empty() ? "model" : n;
}

std::string shape_str(const std::vector<int64_t>& s) {
    std::string out = "(";
    for (size_t i = 0; i < s.size(); i++) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + ")";
}

bool ends_with(const std::string& s, const char* suffix) {
    const size_t k = std::strlen(suffix);
    return s.size() >= k && s.compare(s.size() - k, k, suffix) == 0;
}

// Heads whose rows llama.cpp's converter permutes: q_proj (NH) and k_proj (NKV), weights and
// biases, of `llama` models; 0 for every other tensor.
int64_t permute_heads(const std::string& hf_name, const ModelConfig& c, const std::string& arch) {
    if (arch != "llama") return 0;
    if (ends_with(hf_name, "q_proj.weight") || ends_with(hf_name, "q_proj.bias")) return c.num_heads;
    if (ends_with(hf_name, "k_proj.weight") || ends_with(hf_name, "k_proj.bias")) return c.num_kv_heads;
    return 0;
}

// (out, in) of the linear a LoRA module adapts.
std::pair<int64_t, int64_t> lora_module_shape(const ModelConfig& c, int module) {
    const int64_t C = c.hidden_size, F = c.intermediate_size;
    const int64_t QD = c.num_heads * c.head_dim, KVD = c.num_kv_heads * c.head_dim;
    switch (LoraModule(module)) {
        case LoraModule::q_proj: return {QD, C};
        case LoraModule::k_proj: case LoraModule::v_proj: return {KVD, C};
        case LoraModule::o_proj: return {C, QD};
        case LoraModule::gate_proj: case LoraModule::up_proj: return {F, C};
        case LoraModule::down_proj: return {C, F};
    }
    return {0, 0};
}

// A PEFT adapter folder: its config and its LoRA tensors by (layer, module), checked as
// io/peft.cpp checks them (index_peft_adapter); re-indexed here because the merge has to run
// inside the export's tensor loop.
struct AdapterFile {
    LoraConfig config;
    std::unique_ptr<SafetensorsFile> file;
    LoraTensorPairs modules;
};

AdapterFile read_adapter(const std::string& dir) {
    AdapterFile a;
    a.config = read_peft_adapter_config(dir);
    const fs::path path = fs::path(dir) / "adapter_model.safetensors";
    if (!fs::exists(path)) fail("[peft] {}: no adapter_model.safetensors (is this a PEFT adapter folder?)", dir);
    a.file = std::make_unique<SafetensorsFile>(path.string());
    a.modules = index_peft_adapter(*a.file);
    if (a.modules.empty()) fail("[peft] {}: holds no LoRA tensors", a.file->path());
    return a;
}

// Checks A (r, in) and B (out, r) of every module against the (out, in) the config gives.
void check_adapter_shapes(const AdapterFile& a, const ModelConfig& c, const std::string& base) {
    for (const auto& [key, ab] : a.modules) {
        const auto [layer, module] = key;
        if (layer >= c.num_layers)
            fail("[export] {}: tensor '{}' is for layer {} but {} has {} layers (an adapter for another model?)",
                 a.file->path(), ab.first->name, layer, base, c.num_layers);
        const auto [out, in] = lora_module_shape(c, module);
        const int64_t r = a.config.r;
        if (ab.first->shape != std::vector<int64_t>{r, in})
            fail("[export] {}: tensor '{}' has shape {} but {} with r = {} needs ({}, {})", a.file->path(),
                 ab.first->name, shape_str(ab.first->shape), base, r, r, in);
        if (ab.second->shape != std::vector<int64_t>{out, r})
            fail("[export] {}: tensor '{}' has shape {} but {} with r = {} needs ({}, {})", a.file->path(),
                 ab.second->name, shape_str(ab.second->shape), base, r, out, r);
    }
}

// W (rows, cols) f32 += scale * B A, exactly as merge_peft_adapter computes it (same kernel,
// same operand layout), so an exported merge equals `tuner merge` bit for bit before rounding
// to the output type. Fails on a non-finite result.
void merge_into(float* w, const SafetensorsTensor& A, const SafetensorsTensor& B, float scale, int64_t rows,
                int64_t cols, const std::string& where, const std::string& name) {
    const int64_t r = A.shape[0];
    std::vector<float> a32(size_t(r * cols)), b32(size_t(rows * r)), bts(size_t(r * rows));
    A.to_f32(a32.data());
    B.to_f32(b32.data());
    for (int64_t o = 0; o < rows; o++)
        for (int64_t k = 0; k < r; k++) bts[size_t(k * rows + o)] = scale * b32[size_t(o * r + k)];
    cpu::matmul_backward_weight(w, nullptr, bts.data(), a32.data(), r, rows, cols);
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < rows * cols; i++)
        if (!std::isfinite(w[i])) {
            if (first < 0) first = i;
            bad++;
        }
    if (bad)
        fail("[export] {}: merging into '{}' gives {} non-finite value(s) (first at [{}, {}]); the adapter holds "
             "NaN/inf or values too large to merge",
             where, name, bad, first / cols, first % cols);
}

}  // namespace

// ---- types ----------------------------------------------------------------------------------

bool gguf_export_type_from_name(const std::string& name, DType* out) {
    std::string n = name;
    std::transform(n.begin(), n.end(), n.begin(), [](char ch) { return char(std::tolower(uint8_t(ch))); });
    static const std::pair<const char*, DType> kNames[] = {
        {"f32", DType::F32},   {"f16", DType::F16},   {"bf16", DType::BF16}, {"q8_0", DType::Q8_0},
        {"q4_0", DType::Q4_0}, {"q4_k", DType::Q4_K}, {"q6_k", DType::Q6_K},
    };
    for (const auto& [s, t] : kNames)
        if (n == s) {
            *out = t;
            return true;
        }
    return false;
}

uint32_t gguf_file_type(DType t) {
    switch (t) {
        case DType::F32: return 0;   // LLAMA_FTYPE_ALL_F32
        case DType::F16: return 1;   // MOSTLY_F16
        case DType::Q4_0: return 2;  // MOSTLY_Q4_0
        case DType::Q8_0: return 7;  // MOSTLY_Q8_0
        case DType::Q4_K: return 14; // MOSTLY_Q4_K_S
        case DType::Q6_K: return 18; // MOSTLY_Q6_K
        case DType::BF16: return 32; // MOSTLY_BF16
        default: break;
    }
    TUNER_ASSERT_MSG(false, "not an export type");
    return 0;
}

DType gguf_export_tensor_type(const TensorSpec& s, const ModelConfig& c, DType t) {
    if (s.kind == TensorKind::Norm || s.kind == TensorKind::Bias || s.shape.size() < 2) return DType::F32;
    if (!dtype_is_quantized(t)) return t;
    // llama-quantize keeps the output matrix (the embedding when it doubles as the output) in
    // Q6_K for every type but Q8_0.
    const bool output = s.kind == TensorKind::Head || (s.kind == TensorKind::Embedding && c.tie_word_embeddings);
    const DType want = output && t != DType::Q8_0 ? DType::Q6_K : t;
    const int64_t cols = s.shape.back();
    if (cols % dtype_block_elems(want) == 0) return want;
    if (cols % dtype_block_elems(DType::Q8_0) == 0) return DType::Q8_0;
    return DType::F16;
}

void gguf_permute_rows(const uint8_t* src, uint8_t* dst, int64_t rows, size_t row_bytes, int64_t n_head) {
    TUNER_ASSERT(n_head > 0 && rows % n_head == 0 && (rows / n_head) % 2 == 0);
    const int64_t HD = rows / n_head, half = HD / 2;
    for (int64_t h = 0; h < n_head; h++)
        for (int64_t i = 0; i < 2; i++)
            for (int64_t j = 0; j < half; j++) {
                const int64_t to = h * HD + 2 * j + i, from = h * HD + i * half + j;
                std::memcpy(dst + size_t(to) * row_bytes, src + size_t(from) * row_bytes, row_bytes);
            }
}

// ---- model ----------------------------------------------------------------------------------

GgufExportReport export_gguf(const std::string& model_dir, const std::string& out_path, const GgufExportOptions& o) {
    const DType T = o.type;
    if (!(dtype_is_float(T) || T == DType::Q8_0 || T == DType::Q4_0 || T == DType::Q4_K || T == DType::Q6_K))
        fail("[export] type {} cannot be exported (f32, f16, bf16, q8_0, q4_0, q4_k, q6_k)", dtype_name(T));
    if (is_gguf_path(model_dir))
        fail("[export] {}: is a GGUF file already; export takes a Hugging Face model folder", model_dir);
    if (!fs::is_directory(model_dir)) fail("[export] {}: not a folder", model_dir);
    const std::string config_path = (fs::path(model_dir) / "config.json").string();
    if (!fs::exists(config_path)) fail("[export] {}: no config.json (is this a Hugging Face model folder?)", model_dir);
    const ModelConfig c = load_config(config_path);
    GgufExportReport report;
    report.arch = gguf_arch(c, config_path);
    const std::string& arch = report.arch;
    SafetensorsModel base(model_dir);

    AdapterFile adapter;
    float scale = 0.0f;
    std::map<std::string, std::pair<const SafetensorsTensor*, const SafetensorsTensor*>> adapted;  // HF name -> A, B
    if (!o.adapter_dir.empty()) {
        adapter = read_adapter(o.adapter_dir);
        check_adapter_shapes(adapter, c, model_dir);
        scale = adapter.config.scale();
        for (const auto& [key, ab] : adapter.modules)
            adapted[lora_module_path(key.first, key.second) + ".weight"] = ab;
    }

    // What to write: every tensor of the config (no lm_head when tied, even if the folder has one).
    struct Item {
        TensorSpec spec;
        std::string gguf_name;
        const SafetensorsTensor* src;
        DType type;
    };
    std::vector<Item> items;
    std::map<std::pair<int64_t, DType>, std::vector<std::string>> fallbacks;  // (cols, type) -> names
    for (const TensorSpec& s : llama_tensor_specs(c)) {
        const SafetensorsTensor& t = base.get(s.name);
        if (t.shape != s.shape)
            fail("[export] {}: tensor '{}' has shape {} but config.json implies {}", model_dir, s.name,
                 shape_str(t.shape), shape_str(s.shape));
        if (!dtype_is_float(t.dtype))
            fail("[export] {}: tensor '{}' is {}; only F32, BF16 and F16 weights can be exported", model_dir, s.name,
                 dtype_name(t.dtype));
        const std::string g = hf_to_gguf_name(s.name);
        TUNER_ASSERT_MSG(!g.empty(), "no GGUF name for a Llama tensor");
        items.push_back({s, g, &t, gguf_export_tensor_type(s, c, T)});
        const DType got = items.back().type;
        const bool output = s.kind == TensorKind::Head || (s.kind == TensorKind::Embedding && c.tie_word_embeddings);
        if (dtype_is_quantized(T) && got != T && got != DType::F32 && !(output && got == DType::Q6_K))
            fallbacks[{s.shape.back(), got}].push_back(g);
    }
    for (const auto& [key, names] : fallbacks) {
        std::string list;
        for (size_t i = 0; i < names.size() && i < 3; i++) list += (i ? ", " : "") + names[i];
        if (names.size() > 3) list += ", ...";
        report.notes.push_back(fmt::format("{} tensor(s) with {} columns (not whole {} blocks) written as {}: {}",
                                           names.size(), key.first, ggml_name(T), ggml_name(key.second), list));
    }

    GgufWriter w(out_path);
    w.add_string("general.architecture", arch);
    w.add_string("general.type", "model");
    w.add_string("general.name", o.name.empty() ? folder_name(model_dir) : o.name);
    w.add_u32("general.file_type", gguf_file_type(T));
    if (dtype_is_quantized(T)) w.add_u32("general.quantization_version", 2);  // GGML_QNT_VERSION
    auto key = [&](const char* k) { return arch + "." + k; };
    w.add_u32(key("context_length"), uint32_t(c.max_position_embeddings));
    w.add_u32(key("embedding_length"), uint32_t(c.hidden_size));
    w.add_u32(key("block_count"), uint32_t(c.num_layers));
    w.add_u32(key("feed_forward_length"), uint32_t(c.intermediate_size));
    w.add_u32(key("attention.head_count"), uint32_t(c.num_heads));
    w.add_u32(key("attention.head_count_kv"), uint32_t(c.num_kv_heads));
    w.add_u32(key("attention.key_length"), uint32_t(c.head_dim));
    w.add_u32(key("attention.value_length"), uint32_t(c.head_dim));
    w.add_f32(key("attention.layer_norm_rms_epsilon"), float(c.rms_norm_eps));
    w.add_f32(key("rope.freq_base"), float(c.rope_theta));
    w.add_u32(key("rope.dimension_count"), uint32_t(c.head_dim));
    w.add_u32(key("vocab_size"), uint32_t(c.vocab_size));
    if (c.rope_scaling.type == RopeScalingType::Linear) {
        w.add_string(key("rope.scaling.type"), "linear");
        w.add_f32(key("rope.scaling.factor"), float(c.rope_scaling.factor));
    }
    report.tokenizer = gguf_add_tokenizer(w, model_dir, c, &report.notes);

    // llama3 rope scaling travels as per-frequency divisors (llama.cpp divides each base
    // frequency by its factor): factor = base inv_freq / scaled inv_freq.
    std::vector<float> rope_factors;
    if (c.rope_scaling.type == RopeScalingType::Llama3) {
        ModelConfig plain = c;
        plain.rope_scaling = RopeScaling{};
        const std::vector<float> base_f = rope_inv_freq(plain), scaled = rope_inv_freq(c);
        for (size_t i = 0; i < base_f.size(); i++) rope_factors.push_back(base_f[i] / scaled[i]);
        w.declare("rope_freqs.weight", DType::F32, {int64_t(rope_factors.size())});
        report.types["F32"]++;
    }
    for (const Item& it : items) {
        w.declare(it.gguf_name, it.type, it.spec.shape);
        report.types[ggml_name(it.type)]++;
    }
    report.tensors = int64_t(items.size() + (rope_factors.empty() ? 0 : 1));

    if (!rope_factors.empty()) w.write("rope_freqs.weight", rope_factors.data(), rope_factors.size() * sizeof(float));
    std::vector<float> whole, f32, perm;
    std::vector<uint8_t> out;
    for (const Item& it : items) {
        const SafetensorsTensor& t = *it.src;
        const int64_t heads = permute_heads(it.spec.name, c, arch);
        // A permuted bias moves element by element: rows of one value.
        const int64_t cols = it.spec.shape.size() == 1 && heads ? 1 : it.spec.shape.back();
        const int64_t rows = int64_t(spec_numel(it.spec)) / std::max<int64_t>(cols, 1);
        // Blocks of rows: whole heads for permuted tensors (the permutation stays inside a head).
        const int64_t unit = heads ? rows / heads : 1;
        int64_t chunk = std::max<int64_t>(1, kChunkElems / std::max<int64_t>(cols, 1));
        chunk = std::max(unit, chunk / unit * unit);
        const float* merged = nullptr;
        auto ab = adapted.find(it.spec.name);
        if (ab != adapted.end()) {
            whole.resize(size_t(rows * cols));
            t.to_f32(whole.data());
            merge_into(whole.data(), *ab->second.first, *ab->second.second, scale, rows, cols, adapter.file->path(),
                       it.spec.name);
            merged = whole.data();
        }
        for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
            const int64_t n = std::min(chunk, rows - r0);
            const size_t ne = size_t(n * cols);
            const float* src;
            if (merged) {
                src = merged + size_t(r0 * cols);
            } else {
                f32.resize(ne);
                weight_rows_to_f32(f32.data(), WeightView{t.data, t.dtype, rows, cols}, r0, n);
                const size_t esize = dtype_size(t.dtype);
                release_mapped_pages(t.data + size_t(r0 * cols) * esize, ne * esize);
                src = f32.data();
            }
            if (heads) {
                perm.resize(ne);
                gguf_permute_rows(reinterpret_cast<const uint8_t*>(src), reinterpret_cast<uint8_t*>(perm.data()), n,
                                  size_t(cols) * sizeof(float), n / unit);
                src = perm.data();
            }
            if (it.type == DType::F32) {
                w.write(it.gguf_name, src, ne * sizeof(float));
            } else {
                out.resize(dtype_nbytes(it.type, int64_t(ne)));
                quantize_rows(out.data(), it.type, src, n, cols);
                w.write(it.gguf_name, out.data(), out.size());
            }
        }
        if (merged) std::vector<float>().swap(whole);
        release_mapped_pages(t.data, t.nbytes);
    }
    w.finish();
    report.file_bytes = w.file_size();
    return report;
}

// ---- LoRA adapter ---------------------------------------------------------------------------

GgufLoraExportReport export_gguf_lora(const std::string& adapter_dir, const std::string& base_dir_in,
                                      const std::string& out_path) {
    AdapterFile a = read_adapter(adapter_dir);
    std::string base_dir = base_dir_in;
    if (base_dir.empty()) {
        // PEFT records the base; it is usable when it is a local folder.
        std::ifstream f(fs::path(adapter_dir) / "adapter_config.json");
        json j = json::parse(f, nullptr, false);
        std::string recorded;
        if (j.is_object() && j.contains("base_model_name_or_path") && j["base_model_name_or_path"].is_string())
            recorded = j["base_model_name_or_path"].get<std::string>();
        const bool usable = !recorded.empty() && (fs::exists(fs::path(recorded) / "config.json") ||
                                                  (is_gguf_path(recorded) && fs::is_regular_file(recorded)));
        if (!usable)
            fail("[export] {}: the base model's config is needed (head counts, architecture): pass --base MODEL_DIR "
                 "(or a .gguf model){}",
                 adapter_dir,
                 recorded.empty() ? std::string()
                                  : fmt::format(" (the adapter's base_model_name_or_path '{}' is not a local folder "
                                                "with a config.json)",
                                                recorded));
        base_dir = recorded;
    }
    // The base: an HF folder's config.json, or a GGUF model's metadata (an adapter trained on it).
    ModelConfig c;
    std::string config_path;
    if (is_gguf_path(base_dir) && fs::is_regular_file(base_dir)) {
        config_path = base_dir;
        c = gguf_model_config(GgufFile(base_dir));
    } else {
        config_path = (fs::path(base_dir) / "config.json").string();
        if (!fs::exists(config_path))
            fail("[export] {}: no config.json (the --base folder of the adapter, or a .gguf model)", base_dir);
        c = load_config(config_path);
    }
    GgufLoraExportReport report;
    report.arch = gguf_arch(c, config_path);
    check_adapter_shapes(a, c, base_dir);
    report.r = a.config.r;
    report.alpha =
        float(a.config.use_rslora ? a.config.lora_alpha * std::sqrt(double(a.config.r)) : a.config.lora_alpha);

    GgufWriter w(out_path);
    w.add_string("general.architecture", report.arch);
    w.add_string("general.type", "adapter");
    w.add_string("general.name", folder_name(adapter_dir));
    w.add_u32("general.file_type", 0);  // ALL_F32
    w.add_string("adapter.type", "lora");
    w.add_f32("adapter.lora.alpha", report.alpha);
    struct Pair {
        std::string a, b;
        const SafetensorsTensor *A, *B;
        int64_t heads;
    };
    std::vector<Pair> pairs;
    for (const auto& [key, ab] : a.modules) {
        const std::string hf = lora_module_path(key.first, key.second) + ".weight";
        const std::string g = hf_to_gguf_name(hf);
        TUNER_ASSERT(!g.empty());
        pairs.push_back({g + ".lora_a", g + ".lora_b", ab.first, ab.second, permute_heads(hf, c, report.arch)});
        w.declare(pairs.back().a, DType::F32, ab.first->shape);
        w.declare(pairs.back().b, DType::F32, ab.second->shape);
    }
    std::vector<float> buf, perm;
    for (const Pair& p : pairs) {
        for (const SafetensorsTensor* t : {p.A, p.B}) {
            buf.resize(t->nbytes / dtype_size(t->dtype));
            t->to_f32(buf.data());
            const float* src = buf.data();
            if (t == p.B && p.heads) {
                // B A gets W's row order when B's rows (the output features) are permuted.
                perm.resize(buf.size());
                gguf_permute_rows(reinterpret_cast<const uint8_t*>(buf.data()), reinterpret_cast<uint8_t*>(perm.data()),
                                  t->shape[0], size_t(t->shape[1]) * sizeof(float), p.heads);
                src = perm.data();
            }
            w.write(t == p.A ? p.a : p.b, src, buf.size() * sizeof(float));
        }
    }
    w.finish();
    report.pairs = int64_t(pairs.size());
    report.file_bytes = w.file_size();
    return report;
}

// ---- GGUF -> Hugging Face -------------------------------------------------------------------

HfExportReport export_hf_from_gguf(const std::string& gguf_path, const std::string& out_dir,
                                   std::optional<DType> dtype_opt) {
    if (dtype_opt && !dtype_is_float(*dtype_opt))
        fail("[export] --type {}: a Hugging Face folder takes f32, bf16 or f16", dtype_name(*dtype_opt));
    std::error_code ec;
    if (fs::exists(out_dir) && (!fs::is_directory(out_dir) || !fs::is_empty(out_dir, ec)))
        fail("[export] {}: already exists; refusing to overwrite it (choose a new output folder)", out_dir);
    GgufModel g(gguf_path);
    ModelConfig c = g.config();
    DType dtype = DType::F16;
    if (dtype_opt) {
        dtype = *dtype_opt;
    } else if (g.file().has("general.file_type")) {
        const uint32_t ft = g.file().get_u32("general.file_type");
        dtype = ft == 0 ? DType::F32 : ft == 32 ? DType::BF16 : DType::F16;
    } else {
        // No file type (older converters): the type of the matrices, when it is a float one.
        const DType t = g.dtype("model.layers.0.mlp.down_proj.weight");
        if (dtype_is_float(t)) dtype = t;
    }
    c.torch_dtype = dtype_torch_name(dtype);

    TempDir tmp(out_dir, "export");

    const std::vector<TensorSpec> specs = llama_tensor_specs(c);
    SafetensorsWriter w((tmp.path / "model.safetensors").string());
    for (const TensorSpec& s : specs) w.declare(s.name, dtype, s.shape);
    std::vector<float> f32;
    std::vector<uint8_t> bytes;
    for (const TensorSpec& s : specs) {
        const GgufWeight gw = g.get(s.name);
        if (gw.shape != s.shape)
            fail("[export] {}: tensor '{}' has shape {} but the metadata implies {}", gguf_path, gw.gguf_name,
                 shape_str(gw.shape), shape_str(s.shape));
        const int64_t n = int64_t(spec_numel(s)), cols = s.shape.back(), rows = n / std::max<int64_t>(cols, 1);
        // SafetensorsWriter takes a tensor whole: hold it in the output dtype only, converting a
        // block of rows at a time through f32.
        bytes.resize(size_t(n) * dtype_size(dtype));
        const int64_t chunk = std::max<int64_t>(1, kChunkElems / std::max<int64_t>(cols, 1));
        for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
            const int64_t nr = std::min(chunk, rows - r0);
            float* dst = dtype == DType::F32 ? reinterpret_cast<float*>(bytes.data()) + r0 * cols : nullptr;
            if (!dst) {
                f32.resize(size_t(nr * cols));
                dst = f32.data();
            }
            weight_rows_to_f32(dst, WeightView{gw.bytes(), gw.dtype, rows, cols}, r0, nr);
            if (dtype != DType::F32)
                convert_from_f32(bytes.data() + size_t(r0 * cols) * dtype_size(dtype), dtype, dst, size_t(nr * cols));
        }
        w.write(s.name, bytes.data());
        release_mapped_pages(gw.data, gw.nbytes);
    }
    w.finish();
    write_text_atomic((tmp.path / "config.json").string(), config_to_json(c).dump(2) + "\n", "export");

    HfExportReport report;
    report.dtype = dtype;
    report.tokenizer_written = write_hf_tokenizer_from_gguf(g.file(), tmp.path.string(), &report.tokenizer);

    tmp.commit();
    return report;
}

}  // namespace tuner
