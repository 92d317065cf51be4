// config.json of a Hugging Face causal-LM folder, mapped onto the Llama-family model.
//
// Supported architectures: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM (q/k/v bias).
// Every missing required key or wrong type is a tuner::Error naming the file and the key:
//   [config] models/x/config.json: missing key 'hidden_size'
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace tuner {

enum class RopeScalingType { None, Linear, Llama3 };

struct RopeScaling {
    RopeScalingType type = RopeScalingType::None;
    double factor = 1.0;
    // llama3 only:
    double low_freq_factor = 1.0;
    double high_freq_factor = 4.0;
    int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
    std::string architecture;  // "LlamaForCausalLM", ...
    std::string model_type;    // "llama", "mistral", "qwen2"
    int64_t vocab_size = 0;
    int64_t hidden_size = 0;        // C
    int64_t intermediate_size = 0;  // F
    int64_t num_layers = 0;         // L
    int64_t num_heads = 0;          // NH
    int64_t num_kv_heads = 0;       // NKV (defaults to NH)
    int64_t head_dim = 0;           // HD (defaults to C / NH)
    int64_t max_position_embeddings = 2048;
    double rms_norm_eps = 1e-6;
    double rope_theta = 10000.0;
    RopeScaling rope_scaling;
    bool tie_word_embeddings = false;
    bool attention_bias = false;  // q/k/v biases (Qwen2 always; Llama when attention_bias: true)
    bool mlp_bias = false;        // not supported yet: an error if true
    int64_t bos_token_id = -1;    // -1: none
    int64_t eos_token_id = -1;
    std::string torch_dtype = "float32";
    std::string hidden_act = "silu";
    // sliding_window of Mistral/Qwen2 (-1: null/absent), recorded so config_to_json writes it
    // back. Our attention is always full causal, which equals Mistral's sliding-window attention
    // for sequences up to this length (4096 for Mistral 7B v0.1); beyond it the two differ.
    int64_t sliding_window = -1;

    // Number of parameters (embedding and head counted once when tied).
    int64_t num_params() const;
};

// Parses a config.json object; `where` names the file in error messages.
ModelConfig config_from_json(const nlohmann::json& j, const std::string& where);
ModelConfig load_config(const std::string& path);  // reads and parses path (a config.json file)

// The config.json that Hugging Face transformers writes for this config.
nlohmann::json config_to_json(const ModelConfig& c);

}  // namespace tuner
