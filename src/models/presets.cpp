#include "models/presets.h"

#include "core/error.h"

namespace tuner {

static ModelConfig llama_base() {
    ModelConfig c;
    c.architecture = "LlamaForCausalLM";
    c.model_type = "llama";
    c.rms_norm_eps = 1e-5;
    c.rope_theta = 10000.0;
    c.torch_dtype = "float32";
    return c;
}

ModelConfig preset_config(const std::string& name) {
    ModelConfig c = llama_base();
    if (name == "tiny") {
        c.vocab_size = 512, c.hidden_size = 128, c.intermediate_size = 384, c.num_layers = 4;
        c.num_heads = 4, c.num_kv_heads = 2, c.head_dim = 32, c.max_position_embeddings = 1024;
        c.tie_word_embeddings = true, c.bos_token_id = 1, c.eos_token_id = 2;
    } else if (name == "smol-135m") {
        c.vocab_size = 49152, c.hidden_size = 576, c.intermediate_size = 1536, c.num_layers = 30;
        c.num_heads = 9, c.num_kv_heads = 3, c.head_dim = 64, c.max_position_embeddings = 2048;
        c.tie_word_embeddings = true, c.bos_token_id = 0, c.eos_token_id = 0;
    } else if (name == "qwen2-0.5b") {
        c.architecture = "Qwen2ForCausalLM", c.model_type = "qwen2";
        c.vocab_size = 151936, c.hidden_size = 896, c.intermediate_size = 4864, c.num_layers = 24;
        c.num_heads = 14, c.num_kv_heads = 2, c.head_dim = 64, c.max_position_embeddings = 32768;
        c.rope_theta = 1000000.0, c.rms_norm_eps = 1e-6, c.attention_bias = true;
        c.tie_word_embeddings = true, c.bos_token_id = 151643, c.eos_token_id = 151643;
    } else if (name == "llama-1b") {
        c.vocab_size = 128256, c.hidden_size = 2048, c.intermediate_size = 8192, c.num_layers = 16;
        c.num_heads = 32, c.num_kv_heads = 8, c.head_dim = 64, c.max_position_embeddings = 131072;
        c.rope_theta = 500000.0;
        c.rope_scaling.type = RopeScalingType::Llama3;
        c.rope_scaling.factor = 32.0, c.rope_scaling.low_freq_factor = 1.0, c.rope_scaling.high_freq_factor = 4.0;
        c.rope_scaling.original_max_position_embeddings = 8192;
        c.tie_word_embeddings = true, c.bos_token_id = 128000, c.eos_token_id = 128001;
    } else if (name == "llama-7b") {
        c.vocab_size = 32000, c.hidden_size = 4096, c.intermediate_size = 11008, c.num_layers = 32;
        c.num_heads = 32, c.num_kv_heads = 32, c.head_dim = 128, c.max_position_embeddings = 4096;
        c.tie_word_embeddings = false, c.bos_token_id = 1, c.eos_token_id = 2;
    } else {
        std::string known;
        for (const auto& n : preset_names()) known += (known.empty() ? "" : ", ") + n;
        fail("[init-model] unknown preset '{}' (known: {})", name, known);
    }
    return c;
}

std::vector<std::string> preset_names() { return {"tiny", "smol-135m", "qwen2-0.5b", "llama-1b", "llama-7b"}; }

}  // namespace tuner
