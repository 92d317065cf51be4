#include "io/peft.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "backend/cuda/cuda_backend.h"
#include "backend/kernels.h"
#include "core/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "models/llama.h"
#include "models/llama_tensors.h"
#include "nn/device_copy.h"
#include "quant/quant.h"

namespace tuner {

namespace fs = std::filesystem;
using nlohmann::json;

static const char* const kConfigFile = "adapter_config.json";
static const char* const kWeightsFile = "adapter_model.safetensors";
static const char* const kBaseQuantFile = "tuner_base.json";

// ---- names ----------------------------------------------------------------------------------
bool parse_lora_tensor_name(const std::string& full, int* layer, int* module, char* which) {
    std::string s = full;
    const std::string prefix = "base_model.model.";
    if (s.rfind(prefix, 0) == 0) s = s.substr(prefix.size());
    // model.layers.<il>.<parent>.<module>.lora_<A|B>[.<adapter name>].weight
    std::vector<std::string> parts;
    std::stringstream ss(s);
    for (std::string p; std::getline(ss, p, '.');) parts.push_back(p);
    if (parts.size() != 7 && parts.size() != 8) return false;
    if (parts[0] != "model" || parts[1] != "layers" || parts.back() != "weight") return false;
    if (parts[2].empty() || parts[2].size() > 6 || parts[2].find_first_not_of("0123456789") != std::string::npos)
        return false;
    int m = lora_module_index(parts[4]);
    if (m < 0 || parts[3] != lora_module_parent(m)) return false;
    if (parts[5] != "lora_A" && parts[5] != "lora_B") return false;
    if (parts.size() == 8 && parts[6].empty()) return false;
    *layer = std::stoi(parts[2]);
    *module = m;
    *which = parts[5].back();
    return true;
}

// ---- small file helpers ---------------------------------------------------------------------
static std::string read_text(const fs::path& p, const char* tag) {
    std::ifstream f(p, std::ios::binary);
    if (!f) fail("[{}] {}: cannot open ({})", tag, p.string(), std::strerror(errno));
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// ---- adapter_config.json --------------------------------------------------------------------
LoraConfig read_peft_adapter_config(const std::string& dir) {
    const fs::path path = fs::path(dir) / kConfigFile;
    if (!fs::exists(path))
        fail("[peft] {}: no {} (is this a PEFT adapter folder?)", dir, kConfigFile);
    const std::string where = path.string();
    json j;
    try {
        j = json::parse(read_text(path, "peft"));
    } catch (const json::parse_error& e) {
        fail("[peft] {}: invalid JSON: {}", where, e.what());
    }
    if (!j.is_object()) fail("[peft] {}: not a JSON object", where);
    auto has = [&](const char* k) { return j.contains(k) && !j[k].is_null(); };
    auto empty_or_null = [&](const char* k) {
        return !has(k) || (j[k].is_object() && j[k].empty()) || (j[k].is_array() && j[k].empty());
    };

    const std::string peft_type = has("peft_type") && j["peft_type"].is_string() ? j["peft_type"].get<std::string>() : "";
    if (peft_type != "LORA")
        fail("[peft] {}: peft_type is '{}'; only LORA adapters are supported", where, peft_type);
    if (!has("r") || !j["r"].is_number_integer()) fail("[peft] {}: 'r' must be an integer", where);
    LoraConfig c;
    c.r = j["r"].get<int64_t>();
    if (!has("lora_alpha") || !j["lora_alpha"].is_number()) fail("[peft] {}: 'lora_alpha' must be a number", where);
    c.lora_alpha = j["lora_alpha"].get<double>();
    c.lora_dropout = 0.0;
    if (has("lora_dropout")) {
        if (!j["lora_dropout"].is_number()) fail("[peft] {}: 'lora_dropout' must be a number", where);
        c.lora_dropout = j["lora_dropout"].get<double>();
    }
    if (has("use_rslora")) {
        if (!j["use_rslora"].is_boolean()) fail("[peft] {}: 'use_rslora' must be true or false", where);
        c.use_rslora = j["use_rslora"].get<bool>();
    }
    // Variants that change the math: refuse rather than load something else.
    if (has("use_dora") && j["use_dora"].is_boolean() && j["use_dora"].get<bool>())
        fail("[peft] {}: use_dora is true; DoRA adapters are not supported", where);
    if (has("bias") && j["bias"] != "none")
        fail("[peft] {}: bias is {}; only bias \"none\" is supported (trained biases are not)", where, j["bias"].dump());
    if (has("lora_bias") && j["lora_bias"].is_boolean() && j["lora_bias"].get<bool>())
        fail("[peft] {}: lora_bias is true; adapters with a bias on lora_B are not supported", where);
    if (has("fan_in_fan_out") && j["fan_in_fan_out"].is_boolean() && j["fan_in_fan_out"].get<bool>())
        fail("[peft] {}: fan_in_fan_out is true (GPT-2 Conv1D layout); not supported", where);
    if (!empty_or_null("rank_pattern")) fail("[peft] {}: rank_pattern (per-module ranks) is not supported", where);
    if (!empty_or_null("alpha_pattern")) fail("[peft] {}: alpha_pattern (per-module alphas) is not supported", where);
    if (!empty_or_null("modules_to_save"))
        fail("[peft] {}: modules_to_save {} is not supported (only LoRA A/B tensors)", where, j["modules_to_save"].dump());

    c.target_modules = {"all-linear"};
    if (has("target_modules") && j["target_modules"].is_array()) {
        std::vector<std::string> names;
        bool known = true;
        for (const auto& v : j["target_modules"]) {
            if (!v.is_string()) fail("[peft] {}: target_modules must be a list of strings", where);
            std::string n = v.get<std::string>();
            size_t dot = n.rfind('.');
            if (dot != std::string::npos) n = n.substr(dot + 1);  // "self_attn.q_proj" -> q_proj
            if (n == "lm_head" || n == "embed_tokens")
                fail("[peft] {}: target_modules contains {}; adapters on {} are not supported", where, n, n);
            if (lora_module_index(n) < 0) known = false;
            names.push_back(n);
        }
        if (known && !names.empty()) c.target_modules = names;
    }
    c.validate(where);
    return c;
}

// ---- save -----------------------------------------------------------------------------------
void save_peft_adapter(LlamaModel& model, const std::string& dir, const std::string& base_model_name_or_path) {
    if (!model.lora_enabled()) fail("[peft] {}: the model has no LoRA adapters to save", dir);
    const LoraConfig& c = model.lora_config();
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) fail("[peft] {}: cannot create the folder ({})", dir, ec.message());

    // The keys PEFT's LoraConfig writes (sorted, as json.dumps(sort_keys=True) does), limited to
    // those that PEFT versions from 0.10 on all understand.
    json j = json::object();
    j["alpha_pattern"] = json::object();
    j["auto_mapping"] = nullptr;
    j["base_model_name_or_path"] = base_model_name_or_path;
    j["bias"] = "none";
    j["fan_in_fan_out"] = false;
    j["inference_mode"] = true;
    j["init_lora_weights"] = true;
    j["layer_replication"] = nullptr;
    j["layers_pattern"] = nullptr;
    j["layers_to_transform"] = nullptr;
    j["loftq_config"] = json::object();
    if (c.lora_alpha == std::floor(c.lora_alpha) && std::fabs(c.lora_alpha) < 1e15)
        j["lora_alpha"] = int64_t(c.lora_alpha);  // PEFT's lora_alpha is an int
    else
        j["lora_alpha"] = c.lora_alpha;
    j["lora_dropout"] = c.lora_dropout;
    j["megatron_config"] = nullptr;
    j["megatron_core"] = "megatron.core";
    j["modules_to_save"] = nullptr;
    j["peft_type"] = "LORA";
    j["r"] = c.r;
    j["rank_pattern"] = json::object();
    j["revision"] = nullptr;
    j["target_modules"] = c.target_names();
    j["task_type"] = "CAUSAL_LM";
    j["use_dora"] = false;
    j["use_rslora"] = c.use_rslora;

    // Weights first, config last: a folder with a config always has its weights.
    SafetensorsWriter w((fs::path(dir) / kWeightsFile).string());
    std::vector<Param*> ps = model.adapter_params();
    for (Param* p : ps) w.declare(p->name, DType::F32, p->value.dims());
    std::vector<uint8_t> scratch;  // host copies of adapters on the GPU
    for (Param* p : ps) w.write(p->name, tensor_to_host(p->value, scratch));
    w.finish();
    write_text_atomic((fs::path(dir) / kConfigFile).string(), j.dump(2) + "\n", "peft");
}

// ---- load -----------------------------------------------------------------------------------
LoraTensorPairs index_peft_adapter(const SafetensorsFile& f) {
    LoraTensorPairs out;
    for (const SafetensorsTensor& t : f.tensors()) {
        int layer = 0, module = 0;
        char which = 0;
        if (!parse_lora_tensor_name(t.name, &layer, &module, &which))
            fail("[peft] {}: tensor '{}' is not a LoRA weight of a linear layer "
                 "(expected base_model.model.model.layers.N.{{self_attn|mlp}}.<module>.lora_{{A|B}}.weight; "
                 "adapters on embeddings, lm_head or biases are not supported)",
                 f.path(), t.name);
        if (!dtype_is_float(t.dtype))
            fail("[peft] {}: tensor '{}' has dtype {}; adapters must be F32, BF16 or F16", f.path(), t.name,
                 dtype_name(t.dtype));
        if (t.shape.size() != 2)
            fail("[peft] {}: tensor '{}' has {} dimensions; LoRA weights are matrices", f.path(), t.name,
                 t.shape.size());
        auto& slot = out[{layer, module}];
        const SafetensorsTensor*& dst = which == 'A' ? slot.first : slot.second;
        if (dst) fail("[peft] {}: tensors '{}' and '{}' are the same LoRA weight", f.path(), dst->name, t.name);
        dst = &t;
    }
    for (const auto& [key, ab] : out) {
        if (!ab.first || !ab.second)
            fail("[peft] {}: {} has a lora_{} but no lora_{}", f.path(), lora_module_path(key.first, key.second),
                 ab.first ? 'A' : 'B', ab.first ? 'B' : 'A');
    }
    return out;
}

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
    std::string out = "(";
    for (size_t i = 0; i < s.size(); i++) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + ")";
}

}  // namespace

void load_peft_adapter_weights(LlamaModel& model, const std::string& dir) {
    if (!model.lora_enabled()) fail("[peft] {}: enable LoRA on the model before loading adapter weights", dir);
    const fs::path path = fs::path(dir) / kWeightsFile;
    if (!fs::exists(path)) fail("[peft] {}: no {} (is this a PEFT adapter folder?)", dir, kWeightsFile);
    SafetensorsFile f(path.string());
    const LoraTensorPairs idx = index_peft_adapter(f);
    std::set<std::pair<int, int>> used;
    for (LoraAdapter* ad : model.adapters()) {
        auto it = idx.find({ad->layer, ad->module});
        if (it == idx.end())
            fail("[peft] {}: no adapter for {} (the model has LoRA on {} in every layer)", f.path(),
                 lora_module_path(ad->layer, ad->module), kLoraModuleNames[size_t(ad->module)]);
        for (int k = 0; k < 2; k++) {
            const SafetensorsTensor& t = k == 0 ? *it->second.first : *it->second.second;
            Param& p = k == 0 ? ad->A : ad->B;
            if (t.shape != p.value.dims())
                fail("[peft] {}: tensor '{}' has shape {} but the model needs {} (r = {}; an adapter for another "
                     "model?)",
                     f.path(), t.name, shape_str(t.shape), p.value.shape_str(), ad->r());
            std::vector<float> values(size_t(p.value.numel()));
            t.to_f32(values.data());
            tensor_from_host(p.value, values.data());
        }
        used.insert(it->first);
    }
    for (const auto& [key, ab] : idx)
        if (!used.count(key)) {
            if (key.first >= int(model.config.num_layers))
                fail("[peft] {}: tensor '{}' is for layer {} but the model has {} layers", f.path(), ab.first->name,
                     key.first, model.config.num_layers);
            fail("[peft] {}: tensor '{}' has no adapter in the model (LoRA is not enabled on {})", f.path(),
                 ab.first->name, kLoraModuleNames[size_t(key.second)]);
        }
}

LoraConfig load_peft_adapter(LlamaModel& model, const std::string& dir, std::optional<double> lora_dropout,
                             uint64_t seed) {
    LoraConfig c = read_peft_adapter_config(dir);
    if (lora_dropout) c.lora_dropout = *lora_dropout;
    c.seed = seed;
    const fs::path path = fs::path(dir) / kWeightsFile;
    if (!fs::exists(path)) fail("[peft] {}: no {} (is this a PEFT adapter folder?)", dir, kWeightsFile);
    {
        // The modules come from the tensors: every layer must have the same set.
        SafetensorsFile f(path.string());
        const LoraTensorPairs idx = index_peft_adapter(f);
        if (idx.empty()) fail("[peft] {}: holds no LoRA tensors", f.path());
        std::array<int, kLoraModules> layers_with{};
        for (const auto& [key, ab] : idx) {
            if (key.first >= int(model.config.num_layers))
                fail("[peft] {}: tensor '{}' is for layer {} but the model has {} layers", f.path(), ab.first->name,
                     key.first, model.config.num_layers);
            layers_with[size_t(key.second)]++;
        }
        std::vector<std::string> mods;
        for (int m = 0; m < kLoraModules; m++) {
            if (layers_with[size_t(m)] == 0) continue;
            if (layers_with[size_t(m)] != int(model.config.num_layers))
                fail("[peft] {}: {} has adapters in {} of {} layers; adapters on a subset of layers "
                     "(layers_to_transform) are not supported",
                     f.path(), kLoraModuleNames[size_t(m)], layers_with[size_t(m)], model.config.num_layers);
            mods.push_back(kLoraModuleNames[size_t(m)]);
        }
        if (c.target_modules != std::vector<std::string>{"all-linear"}) {
            LoraConfig listed = c;
            if (listed.target_names() != mods)
                fail("[peft] {}: target_modules lists [{}] but {} holds adapters for [{}]", dir,
                     fmt::join(listed.target_names(), ", "), kWeightsFile, fmt::join(mods, ", "));
        }
        c.target_modules = mods;
        const int64_t r = idx.begin()->second.first->shape[0];
        if (r != c.r)
            fail("[peft] {}: tensor '{}' has rank {} but adapter_config.json says r = {}", f.path(),
                 idx.begin()->second.first->name, r, c.r);
    }
    model.enable_lora(c);
    load_peft_adapter_weights(model, dir);
    return c;
}

// ---- merge ----------------------------------------------------------------------------------

void write_adapter_base_quantization(const std::string& adapter_dir, const std::string& type, bool double_quant) {
    json j;
    j["base_quantization"] = type;
    j["double_quant"] = double_quant;
    write_text_atomic((fs::path(adapter_dir) / kBaseQuantFile).string(), j.dump(2) + "\n", "peft");
}

AdapterBaseQuant read_adapter_base_quantization(const std::string& adapter_dir) {
    const fs::path path = fs::path(adapter_dir) / kBaseQuantFile;
    AdapterBaseQuant q;
    if (!fs::exists(path)) return q;
    try {
        json j = json::parse(read_text(path, "peft"));
        q.type = j.value("base_quantization", std::string());
        q.double_quant = j.value("double_quant", true);
    } catch (const json::exception& e) {
        fail("[peft] {}: invalid: {}", path.string(), e.what());
    }
    if (!q.type.empty() && q.type != "nf4") fail("[peft] {}: unknown base_quantization '{}' (nf4)", path.string(), q.type);
    return q;
}

void use_adapter_base_storage(ModelOptions& options, const std::string& adapter_dir) {
    const AdapterBaseQuant q = read_adapter_base_quantization(adapter_dir);
    if (q.type == "nf4") {
        options.weight_dtype = DType::NF4;
        options.quant.nf4_double_quant = q.double_quant;
    }
}

std::unique_ptr<LlamaModel> load_model_with_adapter(const std::string& model_dir, const std::string& adapter_dir,
                                                    Device device) {
    ModelOptions mo;
    mo.trainable = false;
    mo.device = device;
    // On the GPU with bf16 matmuls the frozen weights are read as bf16 anyway: store them so
    // (half the memory); an adapter's recorded base storage (QLoRA: NF4) still wins below.
    if (device == Device::CUDA && cuda::config().compute == cuda::MatmulCompute::BF16) mo.weight_dtype = DType::BF16;
    mo.activation_dtype = default_activation_dtype(device);
    if (!adapter_dir.empty()) use_adapter_base_storage(mo, adapter_dir);
    auto model = LlamaModel::load(model_dir, mo);
    if (!adapter_dir.empty()) load_peft_adapter(*model, adapter_dir);
    return model;
}

void merge_peft_adapter(const std::string& model_dir, const std::string& adapter_dir, const std::string& out_dir,
                        std::optional<DType> dtype, std::optional<AdapterBaseQuant> base_quant) {
    if (dtype && !dtype_is_float(*dtype)) fail("[merge] output dtype must be f32, bf16 or f16");
    const AdapterBaseQuant bq = base_quant ? *base_quant : read_adapter_base_quantization(adapter_dir);
    if (!fs::is_directory(model_dir)) fail("[merge] {}: not a folder", model_dir);
    if (!fs::exists(fs::path(model_dir) / "config.json")) fail("[merge] {}: no config.json", model_dir);
    // What a QLoRA run stored each tensor as (the loader's rule): NF4 projections, BF16
    // embeddings and head; norms, biases and unknown tensors unchanged.
    std::map<std::string, DType> trained_storage;
    if (bq.type == "nf4")
        for (const TensorSpec& s : llama_tensor_specs(load_config((fs::path(model_dir) / "config.json").string())))
            trained_storage[s.name] = frozen_storage_dtype(s.kind, false, DType::NF4);
    std::error_code ec;
    if (fs::exists(out_dir)) {
        if (!fs::is_directory(out_dir) || !fs::is_empty(out_dir, ec))
            fail("[merge] {}: already exists; refusing to overwrite it (choose a new output folder)", out_dir);
    }

    // Read and validate everything before writing anything.
    const LoraConfig cfg = read_peft_adapter_config(adapter_dir);
    const float scale = cfg.scale();
    const fs::path adapter_path = fs::path(adapter_dir) / kWeightsFile;
    if (!fs::exists(adapter_path)) fail("[peft] {}: no {} (is this a PEFT adapter folder?)", adapter_dir, kWeightsFile);
    SafetensorsFile af(adapter_path.string());
    const LoraTensorPairs idx = index_peft_adapter(af);
    SafetensorsModel base(model_dir);
    // base weight name -> (A, B)
    std::map<std::string, std::pair<const SafetensorsTensor*, const SafetensorsTensor*>> by_weight;
    for (const auto& [key, ab] : idx) {
        const std::string wname = lora_module_path(key.first, key.second) + ".weight";
        const SafetensorsTensor* W = base.find(wname);
        if (!W)
            fail("[merge] {}: tensor '{}' adapts '{}', which {} does not have (an adapter for another model?)",
                 af.path(), ab.first->name, wname, model_dir);
        if (!dtype_is_float(W->dtype) || W->shape.size() != 2)
            fail("[merge] {}: '{}' is {} {}; only F32/BF16/F16 matrices can be merged", model_dir, wname,
                 dtype_name(W->dtype), shape_str(W->shape));
        const SafetensorsTensor &A = *ab.first, &B = *ab.second;
        const int64_t out = W->shape[0], in = W->shape[1], r = A.shape[0];
        if (A.shape != std::vector<int64_t>{r, in})
            fail("[merge] {}: tensor '{}' has shape {} but '{}' {} needs ({}, {})", af.path(), A.name, shape_str(A.shape),
                 wname, shape_str(W->shape), r, in);
        if (B.shape != std::vector<int64_t>{out, r})
            fail("[merge] {}: tensor '{}' has shape {} but '{}' {} needs ({}, {})", af.path(), B.name, shape_str(B.shape),
                 wname, shape_str(W->shape), out, r);
        if (r != cfg.r)
            fail("[merge] {}: tensor '{}' has rank {} but adapter_config.json says r = {}", af.path(), A.name, r, cfg.r);
        by_weight[wname] = ab;
    }

    // Output into a temporary sibling folder, renamed at the end.
    TempDir tmp(out_dir, "merge");

    std::vector<std::string> names = base.names();
    SafetensorsWriter w((tmp.path / "model.safetensors").string());
    for (const std::string& n : names) {
        const SafetensorsTensor& t = base.get(n);
        w.declare(n, dtype && dtype_is_float(t.dtype) ? *dtype : t.dtype, t.shape);
    }
    std::vector<float> f32, bts;
    std::vector<float> a32;
    std::vector<uint8_t> bytes;
    for (const std::string& n : names) {
        const SafetensorsTensor& t = base.get(n);
        const DType out_dtype = dtype && dtype_is_float(t.dtype) ? *dtype : t.dtype;
        auto it = by_weight.find(n);
        const auto st = trained_storage.find(n);
        const DType trained_as =
            st != trained_storage.end() && dtype_is_float(t.dtype) && t.shape.size() == 2 ? st->second : DType::F32;
        if (it == by_weight.end() && out_dtype == t.dtype && trained_as == DType::F32) {
            w.write(n, t.data);  // untouched tensor: bytes as they are
            continue;
        }
        const size_t count = t.nbytes / dtype_size(t.dtype);
        f32.resize(count);
        t.to_f32(f32.data());
        if (trained_as != DType::F32) {
            // The weights the adapter was trained against: quantise, then dequantise in f32.
            const int64_t rows = t.shape[0], cols = t.shape[1];
            QuantOptions qo;
            qo.nf4_double_quant = bq.double_quant;
            std::vector<uint8_t> stored(dtype_nbytes(trained_as, rows * cols, qo));
            convert_weight(stored.data(), trained_as, WeightView{f32.data(), DType::F32, rows, cols}, qo);
            weight_rows_to_f32(f32.data(), WeightView{stored.data(), trained_as, rows, cols}, 0, rows);
        }
        if (it != by_weight.end()) {
            const SafetensorsTensor &A = *it->second.first, &B = *it->second.second;
            const int64_t rows = t.shape[0], cols = t.shape[1], r = A.shape[0];
            a32.resize(size_t(r * cols));
            A.to_f32(a32.data());
            // W (out, in) += (scale B^T)^T A: bts (r, out) = scale * B^T, then the weight-gradient
            // GEMM dW += dy^T x with dy = bts (N = r rows) and x = A.
            std::vector<float> b32(size_t(rows * r));
            B.to_f32(b32.data());
            bts.resize(size_t(r * rows));
            for (int64_t o = 0; o < rows; o++)
                for (int64_t k = 0; k < r; k++) bts[size_t(k * rows + o)] = scale * b32[size_t(o * r + k)];
            cpu::matmul_backward_weight(f32.data(), nullptr, bts.data(), a32.data(), r, rows, cols);
            int64_t bad = 0, first = -1;
            for (size_t i = 0; i < count; i++)
                if (!std::isfinite(f32[i])) {
                    if (first < 0) first = int64_t(i);
                    bad++;
                }
            if (bad) {
                float before = 0.0f;  // the base value at the first bad element
                convert_to_f32(&before, t.data + size_t(first) * dtype_size(t.dtype), t.dtype, 1);
                fail("[merge] {}: merging into '{}' gives {} non-finite value(s) (first at [{}, {}]: W = {}, W + "
                     "scale * B A = {}); the adapter holds NaN/inf or values too large to merge. Nothing was "
                     "written to {}",
                     af.path(), n, bad, first / cols, first % cols, before, f32[size_t(first)], out_dir);
            }
        }
        if (out_dtype == DType::F32) {
            w.write(n, f32.data());
        } else {
            bytes.resize(count * dtype_size(out_dtype));
            convert_from_f32(bytes.data(), out_dtype, f32.data(), count);
            w.write(n, bytes.data());
        }
    }
    w.finish();

    // config.json: every key kept; torch_dtype follows an explicit output dtype.
    json config;
    const fs::path config_path = fs::path(model_dir) / "config.json";
    try {
        config = json::parse(read_text(config_path, "merge"));
    } catch (const json::parse_error& e) {
        fail("[merge] {}: invalid JSON: {}", config_path.string(), e.what());
    }
    if (dtype) config["torch_dtype"] = dtype_torch_name(*dtype);
    write_text_atomic((tmp.path / "config.json").string(), config.dump(2) + "\n", "merge");

    // Tokenizer and generation files, when present.
    for (const char* f : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                          "generation_config.json", "added_tokens.json", "vocab.json", "merges.txt",
                          "chat_template.jinja"}) {
        const fs::path src = fs::path(model_dir) / f;
        if (!fs::exists(src)) continue;
        fs::copy_file(src, tmp.path / f, fs::copy_options::overwrite_existing, ec);
        if (ec) fail("[merge] {}: cannot copy {} ({})", out_dir, src.string(), ec.message());
    }

    // An empty OUT_DIR may exist (checked above); rename(2) replaces an empty directory.
    tmp.commit();
}

}  // namespace tuner
