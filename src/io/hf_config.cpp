// config.json <-> ModelConfig. Key names and defaults follow transformers' LlamaConfig,
// MistralConfig and Qwen2Config (configuration_*.py), and its rope_scaling conventions
// (modeling_rope_utils.py: "rope_type", or the legacy "type").
#include "io/hf_config.h"

#include <cerrno>
#include <cstring>
#include <fstream>

#include "core/error.h"
#include "io/json_util.h"

namespace tuner {

namespace {

using json = nlohmann::json;

struct Arch {
    const char* architecture;
    const char* model_type;
    int64_t default_max_position_embeddings;  // the transformers config class default
};
constexpr Arch kArchs[] = {
    {"LlamaForCausalLM", "llama", 2048},
    {"MistralForCausalLM", "mistral", 4096 * 32},
    {"Qwen2ForCausalLM", "qwen2", 32768},
};
constexpr const char* kSupported = "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM";

// Reads keys of one JSON object, with errors that name the file and the key. `prefix` names an
// enclosing object ("rope_scaling.") for nested keys.
struct Reader {
    const json& j;
    const std::string& where;
    std::string prefix;

    // Null counts as absent: transformers writes None for "use the default".
    const json* find(const char* key) const {
        auto it = j.find(key);
        if (it == j.end() || it->is_null()) return nullptr;
        return &*it;
    }
    [[noreturn]] void missing(const char* key) const { fail("[config] {}: missing key '{}{}'", where, prefix, key); }
    [[noreturn]] void wrong_type(const char* key, const char* want, const json& v) const {
        fail("[config] {}: key '{}{}' should be {}, got {}", where, prefix, key, want, json_type_name(v));
    }

    int64_t integer(const json& v, const char* key) const {
        if (v.is_number_unsigned()) {
            uint64_t u = v.get<uint64_t>();
            if (u > uint64_t(INT64_MAX)) fail("[config] {}: key '{}{}' is too large ({})", where, prefix, key, u);
            return int64_t(u);
        }
        if (v.is_number_integer()) return v.get<int64_t>();
        wrong_type(key, "an integer", v);
    }
    int64_t required_int(const char* key) const {
        const json* v = find(key);
        if (!v) {
            if (j.contains(key)) wrong_type(key, "an integer", j.at(key));  // present but null
            missing(key);
        }
        return integer(*v, key);
    }
    int64_t optional_int(const char* key, int64_t fallback) const {
        const json* v = find(key);
        return v ? integer(*v, key) : fallback;
    }
    double number(const json& v, const char* key) const {
        if (!v.is_number()) wrong_type(key, "a number", v);
        return v.get<double>();
    }
    double required_number(const char* key) const {
        const json* v = find(key);
        if (!v) missing(key);
        return number(*v, key);
    }
    double optional_number(const char* key, double fallback) const {
        const json* v = find(key);
        return v ? number(*v, key) : fallback;
    }
    bool optional_bool(const char* key, bool fallback) const {
        const json* v = find(key);
        if (!v) return fallback;
        if (!v->is_boolean()) wrong_type(key, "a boolean", *v);
        return v->get<bool>();
    }
    std::string optional_string(const char* key, const std::string& fallback) const {
        const json* v = find(key);
        if (!v) return fallback;
        if (!v->is_string()) wrong_type(key, "a string", *v);
        return v->get<std::string>();
    }
    // bos/eos_token_id: an integer, a list of integers (the first is the one we add), or null.
    int64_t token_id(const char* key) const {
        const json* v = find(key);
        if (!v) return -1;
        if (v->is_array()) {
            if (v->empty()) return -1;
            return integer((*v)[0], key);
        }
        if (!v->is_number_integer()) wrong_type(key, "an integer or a list of integers", *v);
        return integer(*v, key);
    }
};

RopeScaling parse_rope_scaling(const json& j, const std::string& where) {
    RopeScaling rs;
    auto it = j.find("rope_scaling");
    if (it == j.end() || it->is_null()) return rs;
    if (!it->is_object()) fail("[config] {}: key 'rope_scaling' should be an object or null, got {}", where,
                               json_type_name(*it));
    Reader r{*it, where, "rope_scaling."};
    std::string type = r.optional_string("rope_type", "");
    if (type.empty()) type = r.optional_string("type", "");  // transformers < 4.43 spelling
    if (type.empty()) fail("[config] {}: rope_scaling has no 'rope_type' (or 'type')", where);
    if (type == "default") return rs;
    if (type == "linear") {
        rs.type = RopeScalingType::Linear;
        rs.factor = r.required_number("factor");
    } else if (type == "llama3") {
        rs.type = RopeScalingType::Llama3;
        rs.factor = r.required_number("factor");
        rs.low_freq_factor = r.required_number("low_freq_factor");
        rs.high_freq_factor = r.required_number("high_freq_factor");
        rs.original_max_position_embeddings = r.required_int("original_max_position_embeddings");
        if (!(rs.high_freq_factor > rs.low_freq_factor))
            fail("[config] {}: rope_scaling high_freq_factor ({}) must be larger than low_freq_factor ({})", where,
                 rs.high_freq_factor, rs.low_freq_factor);
        if (rs.original_max_position_embeddings <= 0)
            fail("[config] {}: rope_scaling original_max_position_embeddings must be positive, got {}", where,
                 rs.original_max_position_embeddings);
    } else {
        fail("[config] {}: rope_scaling type '{}' is not supported (supported: default, linear, llama3)", where, type);
    }
    if (!(rs.factor > 0)) fail("[config] {}: rope_scaling factor must be positive, got {}", where, rs.factor);
    return rs;
}

}  // namespace

int64_t ModelConfig::num_params() const {
    const int64_t C = hidden_size, F = intermediate_size, V = vocab_size;
    const int64_t NH = num_heads, NKV = num_kv_heads, HD = head_dim;
    int64_t attn = C * NH * HD + 2 * C * NKV * HD + NH * HD * C;  // q, k, v, o
    if (attention_bias) attn += NH * HD + 2 * NKV * HD;           // q, k, v biases
    const int64_t layer = C + attn + C + 3 * C * F;               // 2 norms, gate/up/down
    int64_t n = V * C + num_layers * layer + C;                   // embedding, layers, final norm
    if (!tie_word_embeddings) n += V * C;                         // lm_head
    return n;
}

ModelConfig config_from_json(const json& j, const std::string& where) {
    if (!j.is_object()) fail("[config] {}: should be a JSON object, got {}", where, json_type_name(j));
    Reader r{j, where, ""};
    ModelConfig c;

    // Architecture: architectures[0], or inferred from model_type when the list is absent.
    const Arch* arch = nullptr;
    std::string model_type = r.optional_string("model_type", "");
    if (const json* a = r.find("architectures")) {
        if (!a->is_array() || a->empty() || !(*a)[0].is_string())
            fail("[config] {}: key 'architectures' should be a non-empty list of strings", where);
        const std::string name = (*a)[0].get<std::string>();
        for (const Arch& x : kArchs)
            if (name == x.architecture) arch = &x;
        if (!arch) fail("[config] {}: unknown architecture '{}' (supported: {})", where, name, kSupported);
    } else {
        for (const Arch& x : kArchs)
            if (model_type == x.model_type) arch = &x;
        if (!arch) {
            if (model_type.empty()) r.missing("architectures");
            fail("[config] {}: no 'architectures' and unknown model_type '{}' (supported: {})", where, model_type,
                 kSupported);
        }
    }
    c.architecture = arch->architecture;
    c.model_type = model_type.empty() ? arch->model_type : model_type;
    const bool is_qwen2 = c.architecture == "Qwen2ForCausalLM";
    const bool is_mistral = c.architecture == "MistralForCausalLM";

    c.vocab_size = r.required_int("vocab_size");
    c.hidden_size = r.required_int("hidden_size");
    c.intermediate_size = r.required_int("intermediate_size");
    c.num_layers = r.required_int("num_hidden_layers");
    c.num_heads = r.required_int("num_attention_heads");
    auto positive = [&](const char* key, int64_t v) {
        if (v <= 0) fail("[config] {}: key '{}' must be positive, got {}", where, key, v);
    };
    positive("vocab_size", c.vocab_size);
    positive("hidden_size", c.hidden_size);
    positive("intermediate_size", c.intermediate_size);
    positive("num_hidden_layers", c.num_layers);
    positive("num_attention_heads", c.num_heads);

    c.num_kv_heads = r.optional_int("num_key_value_heads", c.num_heads);
    positive("num_key_value_heads", c.num_kv_heads);
    if (c.num_heads % c.num_kv_heads != 0)
        fail("[config] {}: num_attention_heads ({}) is not a multiple of num_key_value_heads ({})", where, c.num_heads,
             c.num_kv_heads);
    if (r.find("head_dim")) {
        c.head_dim = r.optional_int("head_dim", 0);
        positive("head_dim", c.head_dim);
    } else {
        if (c.hidden_size % c.num_heads != 0)
            fail("[config] {}: hidden_size ({}) is not a multiple of num_attention_heads ({}) and head_dim is not given",
                 where, c.hidden_size, c.num_heads);
        c.head_dim = c.hidden_size / c.num_heads;
    }

    c.max_position_embeddings = r.optional_int("max_position_embeddings", arch->default_max_position_embeddings);
    positive("max_position_embeddings", c.max_position_embeddings);
    c.rms_norm_eps = r.optional_number("rms_norm_eps", 1e-6);
    if (!(c.rms_norm_eps > 0)) fail("[config] {}: key 'rms_norm_eps' must be positive, got {}", where, c.rms_norm_eps);
    c.rope_theta = r.optional_number("rope_theta", 10000.0);
    if (!(c.rope_theta > 0)) fail("[config] {}: key 'rope_theta' must be positive, got {}", where, c.rope_theta);
    c.rope_scaling = parse_rope_scaling(j, where);

    // PretrainedConfig defaults tie_word_embeddings to true, but LlamaConfig, MistralConfig and
    // Qwen2Config all pass False to it, so an absent key means untied for every family here.
    c.tie_word_embeddings = r.optional_bool("tie_word_embeddings", false);
    // Qwen2 always has q/k/v biases (no config key); Mistral never; Llama when attention_bias.
    if (is_qwen2) {
        c.attention_bias = true;
    } else if (is_mistral) {
        c.attention_bias = false;
    } else {
        c.attention_bias = r.optional_bool("attention_bias", false);
    }
    c.mlp_bias = r.optional_bool("mlp_bias", false);
    if (c.mlp_bias) fail("[config] {}: mlp_bias: true is not supported", where);

    c.bos_token_id = r.token_id("bos_token_id");
    c.eos_token_id = r.token_id("eos_token_id");
    // transformers >= 4.56 writes "dtype" instead of "torch_dtype".
    c.torch_dtype = r.optional_string("torch_dtype", r.optional_string("dtype", "float32"));
    c.hidden_act = r.optional_string("hidden_act", "silu");
    if (c.hidden_act != "silu")
        fail("[config] {}: hidden_act '{}' is not supported (only 'silu')", where, c.hidden_act);

    // Sliding-window attention. Qwen2 only uses it when use_sliding_window is true, which we
    // refuse. Mistral applies sliding_window unconditionally, but for sequences no longer than
    // the window (4096 for Mistral 7B v0.1) it equals full causal attention, which is what we
    // compute; we ignore the window and only record it so it is written back.
    if (is_qwen2 && r.optional_bool("use_sliding_window", false))
        fail("[config] {}: use_sliding_window is true: sliding window attention is not supported", where);
    if (const json* sw = r.find("sliding_window")) {
        if (!sw->is_number()) r.wrong_type("sliding_window", "a number or null", *sw);
        c.sliding_window = sw->is_number_integer() ? r.integer(*sw, "sliding_window") : int64_t(sw->get<double>());
    }
    return c;
}

ModelConfig load_config(const std::string& path) {
    std::ifstream in(path);
    if (!in) fail("[config] {}: cannot open ({})", path, std::strerror(errno));
    json j;
    try {
        j = json::parse(in);
    } catch (const json::exception& e) {
        fail("[config] {}: {}", path, e.what());
    }
    return config_from_json(j, path);
}

json config_to_json(const ModelConfig& c) {
    // nlohmann::json keeps keys sorted, as transformers writes them (json.dumps sort_keys=True).
    json j;
    j["architectures"] = json::array({c.architecture});
    j["model_type"] = c.model_type;
    j["vocab_size"] = c.vocab_size;
    j["hidden_size"] = c.hidden_size;
    j["intermediate_size"] = c.intermediate_size;
    j["num_hidden_layers"] = c.num_layers;
    j["num_attention_heads"] = c.num_heads;
    j["num_key_value_heads"] = c.num_kv_heads;
    j["head_dim"] = c.head_dim;
    j["max_position_embeddings"] = c.max_position_embeddings;
    j["rms_norm_eps"] = c.rms_norm_eps;
    j["rope_theta"] = c.rope_theta;
    switch (c.rope_scaling.type) {
        case RopeScalingType::None: j["rope_scaling"] = nullptr; break;
        case RopeScalingType::Linear:
            j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", c.rope_scaling.factor}};
            break;
        case RopeScalingType::Llama3:
            j["rope_scaling"] = {{"rope_type", "llama3"},
                                 {"factor", c.rope_scaling.factor},
                                 {"low_freq_factor", c.rope_scaling.low_freq_factor},
                                 {"high_freq_factor", c.rope_scaling.high_freq_factor},
                                 {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings}};
            break;
    }
    j["tie_word_embeddings"] = c.tie_word_embeddings;
    j["hidden_act"] = c.hidden_act;
    j["bos_token_id"] = c.bos_token_id >= 0 ? json(c.bos_token_id) : json(nullptr);
    j["eos_token_id"] = c.eos_token_id >= 0 ? json(c.eos_token_id) : json(nullptr);
    j["torch_dtype"] = c.torch_dtype;
    j["attention_dropout"] = 0.0;
    j["initializer_range"] = 0.02;
    j["use_cache"] = true;
    if (c.architecture == "LlamaForCausalLM") {
        j["attention_bias"] = c.attention_bias;
        j["mlp_bias"] = c.mlp_bias;
        j["pretraining_tp"] = 1;
    } else if (c.architecture == "MistralForCausalLM") {
        j["sliding_window"] = c.sliding_window >= 0 ? json(c.sliding_window) : json(nullptr);
    } else if (c.architecture == "Qwen2ForCausalLM") {
        j["use_sliding_window"] = false;
        j["sliding_window"] = c.sliding_window >= 0 ? json(c.sliding_window) : json(nullptr);
        j["max_window_layers"] = c.num_layers;
    }
    return j;
}

}  // namespace tuner
