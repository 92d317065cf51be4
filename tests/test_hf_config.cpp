// config.json parsing: defaults, every error message, rope scaling, Qwen2 bias, num_params,
// and the round trip through config_to_json.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/hf_config.h"
#include "testing.h"

using namespace tuner;
using tuner::testing::error_of;
using json = nlohmann::json;

namespace {


// SmolLM-135M's config.json (HuggingFaceTB/SmolLM-135M), abridged to the keys we read.
json smollm() {
    return json::parse(R"({
      "architectures": ["LlamaForCausalLM"],
      "attention_bias": false,
      "attention_dropout": 0.0,
      "bos_token_id": 0,
      "eos_token_id": 0,
      "hidden_act": "silu",
      "hidden_size": 576,
      "initializer_range": 0.02,
      "intermediate_size": 1536,
      "max_position_embeddings": 2048,
      "model_type": "llama",
      "num_attention_heads": 9,
      "num_hidden_layers": 30,
      "num_key_value_heads": 3,
      "pretraining_tp": 1,
      "rms_norm_eps": 1e-05,
      "rope_scaling": null,
      "rope_theta": 10000.0,
      "tie_word_embeddings": true,
      "torch_dtype": "float32",
      "transformers_version": "4.40.1",
      "use_cache": true,
      "vocab_size": 49152
    })");
}

json minimal(const char* arch = "LlamaForCausalLM") {
    return json{{"architectures", {arch}},
                {"vocab_size", 100},
                {"hidden_size", 64},
                {"intermediate_size", 128},
                {"num_hidden_layers", 2},
                {"num_attention_heads", 4}};
}

std::string config_error(const json& j) {
    return error_of([&] { config_from_json(j, "m/config.json"); });
}

}  // namespace

TEST(HfConfig, SmolLM) {
    ModelConfig c = config_from_json(smollm(), "smollm/config.json");
    EXPECT_EQ(c.architecture, "LlamaForCausalLM");
    EXPECT_EQ(c.model_type, "llama");
    EXPECT_EQ(c.vocab_size, 49152);
    EXPECT_EQ(c.hidden_size, 576);
    EXPECT_EQ(c.intermediate_size, 1536);
    EXPECT_EQ(c.num_layers, 30);
    EXPECT_EQ(c.num_heads, 9);
    EXPECT_EQ(c.num_kv_heads, 3);
    EXPECT_EQ(c.head_dim, 64);
    EXPECT_EQ(c.max_position_embeddings, 2048);
    EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
    EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
    EXPECT_EQ(c.rope_scaling.type, RopeScalingType::None);
    EXPECT_TRUE(c.tie_word_embeddings);
    EXPECT_FALSE(c.attention_bias);
    EXPECT_EQ(c.bos_token_id, 0);
    EXPECT_EQ(c.eos_token_id, 0);
    EXPECT_EQ(c.torch_dtype, "float32");
    // The published parameter count of SmolLM-135M (model.num_parameters() in transformers).
    EXPECT_EQ(c.num_params(), 134515008);
    c.tie_word_embeddings = false;
    EXPECT_EQ(c.num_params(), 134515008 + 49152 * 576);
}

TEST(HfConfig, Defaults) {
    ModelConfig c = config_from_json(minimal(), "m/config.json");
    EXPECT_EQ(c.model_type, "llama");
    EXPECT_EQ(c.num_kv_heads, 4);
    EXPECT_EQ(c.head_dim, 16);
    EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
    EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
    EXPECT_FALSE(c.tie_word_embeddings);
    EXPECT_FALSE(c.attention_bias);
    EXPECT_EQ(c.bos_token_id, -1);
    EXPECT_EQ(c.eos_token_id, -1);
    EXPECT_EQ(c.hidden_act, "silu");
    EXPECT_EQ(c.max_position_embeddings, 2048);
    EXPECT_EQ(c.sliding_window, -1);

    // null means "the default" for optional keys.
    json j = minimal();
    j["num_key_value_heads"] = nullptr;
    j["head_dim"] = nullptr;
    j["bos_token_id"] = nullptr;
    j["torch_dtype"] = nullptr;
    c = config_from_json(j, "m/config.json");
    EXPECT_EQ(c.num_kv_heads, 4);
    EXPECT_EQ(c.head_dim, 16);
    EXPECT_EQ(c.bos_token_id, -1);
    EXPECT_EQ(c.torch_dtype, "float32");

    // head_dim may differ from hidden_size / num_heads.
    j["head_dim"] = 32;
    EXPECT_EQ(config_from_json(j, "m/config.json").head_dim, 32);
}

TEST(HfConfig, TokenIds) {
    json j = minimal();
    j["bos_token_id"] = 128000;
    j["eos_token_id"] = {128001, 128008, 128009};  // Llama 3.1 instruct
    ModelConfig c = config_from_json(j, "m/config.json");
    EXPECT_EQ(c.bos_token_id, 128000);
    EXPECT_EQ(c.eos_token_id, 128001);
    j["eos_token_id"] = json::array();
    EXPECT_EQ(config_from_json(j, "m/config.json").eos_token_id, -1);
    j["eos_token_id"] = "2";
    EXPECT_CONTAINS(config_error(j), "key 'eos_token_id' should be an integer or a list of integers, got string");
    j["eos_token_id"] = {"2"};
    EXPECT_CONTAINS(config_error(j), "key 'eos_token_id' should be an integer, got string");
}

TEST(HfConfig, ArchitectureErrors) {
    json j = minimal("GPT2LMHeadModel");
    EXPECT_EQ(config_error(j),
              "[config] m/config.json: unknown architecture 'GPT2LMHeadModel' (supported: LlamaForCausalLM, "
              "MistralForCausalLM, Qwen2ForCausalLM)");
    j["architectures"] = "LlamaForCausalLM";
    EXPECT_CONTAINS(config_error(j), "key 'architectures' should be a non-empty list of strings");
    j.erase("architectures");
    EXPECT_EQ(config_error(j), "[config] m/config.json: missing key 'architectures'");
    j["model_type"] = "gpt2";
    EXPECT_CONTAINS(config_error(j), "unknown model_type 'gpt2'");
    // Without architectures, a known model_type is enough.
    j["model_type"] = "qwen2";
    EXPECT_EQ(config_from_json(j, "m/config.json").architecture, "Qwen2ForCausalLM");
    EXPECT_CONTAINS(config_error(json::array()), "[config] m/config.json: should be a JSON object, got array");
}

TEST(HfConfig, MissingAndIllTypedKeys) {
    for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"}) {
        json j = minimal();
        j.erase(key);
        EXPECT_EQ(config_error(j), std::string("[config] m/config.json: missing key '") + key + "'");
        j[key] = "64";
        EXPECT_EQ(config_error(j), std::string("[config] m/config.json: key '") + key +
                                       "' should be an integer, got string");
        j[key] = 64.0;
        EXPECT_CONTAINS(config_error(j), "should be an integer, got float");
        j[key] = nullptr;
        EXPECT_CONTAINS(config_error(j), "should be an integer, got null");
        j[key] = 0;
        EXPECT_CONTAINS(config_error(j), std::string("key '") + key + "' must be positive, got 0");
    }
    json j = minimal();
    j["rms_norm_eps"] = "1e-5";
    EXPECT_CONTAINS(config_error(j), "key 'rms_norm_eps' should be a number, got string");
    j = minimal();
    j["tie_word_embeddings"] = 1;
    EXPECT_CONTAINS(config_error(j), "key 'tie_word_embeddings' should be a boolean, got integer");
    j = minimal();
    j["num_key_value_heads"] = -2;
    EXPECT_CONTAINS(config_error(j), "key 'num_key_value_heads' must be positive, got -2");
    j = minimal();
    j["model_type"] = 3;
    EXPECT_CONTAINS(config_error(j), "key 'model_type' should be a string, got integer");
}

TEST(HfConfig, ShapeChecks) {
    json j = minimal();
    j["num_key_value_heads"] = 3;
    EXPECT_CONTAINS(config_error(j), "num_attention_heads (4) is not a multiple of num_key_value_heads (3)");
    j = minimal();
    j["num_attention_heads"] = 5;
    EXPECT_CONTAINS(config_error(j), "hidden_size (64) is not a multiple of num_attention_heads (5)");
    j["head_dim"] = 16;  // an explicit head_dim makes it fine
    EXPECT_EQ(config_from_json(j, "m/config.json").head_dim, 16);
}

TEST(HfConfig, UnsupportedFeatures) {
    json j = minimal();
    j["hidden_act"] = "gelu";
    EXPECT_EQ(config_error(j), "[config] m/config.json: hidden_act 'gelu' is not supported (only 'silu')");
    j = minimal();
    j["mlp_bias"] = true;
    EXPECT_EQ(config_error(j), "[config] m/config.json: mlp_bias: true is not supported");
    j = minimal("Qwen2ForCausalLM");
    j["use_sliding_window"] = true;
    EXPECT_CONTAINS(config_error(j), "sliding window attention is not supported");
    j["use_sliding_window"] = false;
    j["sliding_window"] = 131072;
    EXPECT_EQ(config_from_json(j, "m/config.json").sliding_window, 131072);
}

TEST(HfConfig, RopeScaling) {
    // Llama 3.2 1B.
    json j = minimal();
    j["rope_theta"] = 500000.0;
    j["rope_scaling"] = {{"factor", 32.0},
                         {"high_freq_factor", 4.0},
                         {"low_freq_factor", 1.0},
                         {"original_max_position_embeddings", 8192},
                         {"rope_type", "llama3"}};
    ModelConfig c = config_from_json(j, "m/config.json");
    EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
    EXPECT_EQ(c.rope_scaling.type, RopeScalingType::Llama3);
    EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 32.0);
    EXPECT_DOUBLE_EQ(c.rope_scaling.low_freq_factor, 1.0);
    EXPECT_DOUBLE_EQ(c.rope_scaling.high_freq_factor, 4.0);
    EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);

    j["rope_scaling"].erase("low_freq_factor");
    EXPECT_EQ(config_error(j), "[config] m/config.json: missing key 'rope_scaling.low_freq_factor'");

    // Legacy "type" spelling.
    j["rope_scaling"] = {{"type", "linear"}, {"factor", 2}};
    c = config_from_json(j, "m/config.json");
    EXPECT_EQ(c.rope_scaling.type, RopeScalingType::Linear);
    EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 2.0);
    j["rope_scaling"] = {{"rope_type", "linear"}};
    EXPECT_CONTAINS(config_error(j), "missing key 'rope_scaling.factor'");
    j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", "2"}};
    EXPECT_CONTAINS(config_error(j), "key 'rope_scaling.factor' should be a number, got string");

    j["rope_scaling"] = {{"rope_type", "default"}};
    EXPECT_EQ(config_from_json(j, "m/config.json").rope_scaling.type, RopeScalingType::None);
    j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
    EXPECT_EQ(config_error(j),
              "[config] m/config.json: rope_scaling type 'yarn' is not supported (supported: default, linear, llama3)");
    j["rope_scaling"] = {{"factor", 4.0}};
    EXPECT_CONTAINS(config_error(j), "rope_scaling has no 'rope_type'");
    j["rope_scaling"] = 2.0;
    EXPECT_CONTAINS(config_error(j), "key 'rope_scaling' should be an object or null, got float");
}

TEST(HfConfig, Qwen2AlwaysHasAttentionBias) {
    // Qwen2.5-0.5B.
    json j = json::parse(R"({
      "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
      "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896, "initializer_range": 0.02,
      "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 24,
      "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24,
      "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
      "sliding_window": 32768, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
      "use_cache": true, "use_sliding_window": false, "vocab_size": 151936})");
    ModelConfig c = config_from_json(j, "qwen/config.json");
    EXPECT_EQ(c.model_type, "qwen2");
    EXPECT_TRUE(c.attention_bias);
    EXPECT_EQ(c.head_dim, 64);
    EXPECT_EQ(c.torch_dtype, "bfloat16");
    // 494,032,768: the count transformers reports for Qwen2.5-0.5B.
    EXPECT_EQ(c.num_params(), 494032768);
    // A Qwen2 file with "attention_bias": false still has the biases (the architecture fixes it).
    j["attention_bias"] = false;
    EXPECT_TRUE(config_from_json(j, "qwen/config.json").attention_bias);
}

TEST(HfConfig, MistralSlidingWindowIsAccepted) {
    // Mistral 7B v0.1.
    json j = json::parse(R"({
      "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
      "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
      "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral",
      "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
      "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096,
      "tie_word_embeddings": false, "torch_dtype": "bfloat16", "use_cache": true, "vocab_size": 32000})");
    ModelConfig c = config_from_json(j, "mistral/config.json");
    EXPECT_EQ(c.sliding_window, 4096);
    EXPECT_FALSE(c.attention_bias);
    EXPECT_EQ(c.head_dim, 128);
    EXPECT_EQ(c.num_params(), 7241732096);  // Mistral-7B-v0.1's published count
    j["sliding_window"] = nullptr;
    EXPECT_EQ(config_from_json(j, "mistral/config.json").sliding_window, -1);
    j["sliding_window"] = "4096";
    EXPECT_CONTAINS(config_error(j), "key 'sliding_window' should be a number or null, got string");
}

TEST(HfConfig, LlamaAttentionBias) {
    json j = minimal();
    j["attention_bias"] = true;
    j["num_key_value_heads"] = 2;
    ModelConfig c = config_from_json(j, "m/config.json");
    EXPECT_TRUE(c.attention_bias);
    ModelConfig nobias = c;
    nobias.attention_bias = false;
    // q bias NH*HD + k, v biases NKV*HD each, per layer.
    EXPECT_EQ(c.num_params() - nobias.num_params(), 2 * (4 * 16 + 2 * 2 * 16));
}

TEST(HfConfig, NumParamsByHand) {
    ModelConfig c;
    c.vocab_size = 10;
    c.hidden_size = 4;
    c.intermediate_size = 6;
    c.num_layers = 2;
    c.num_heads = 2;
    c.num_kv_heads = 1;
    c.head_dim = 3;  // not C / NH on purpose
    c.tie_word_embeddings = false;
    // per layer: norms 8, q 4*6=24, k,v 4*3=12 each, o 6*4=24, mlp 3*4*6=72 -> 152
    EXPECT_EQ(c.num_params(), 10 * 4 + 2 * 152 + 4 + 10 * 4);
}

TEST(HfConfig, RoundTripThroughJson) {
    for (const char* arch : {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"}) {
        json j = minimal(arch);
        j["num_key_value_heads"] = 2;
        j["head_dim"] = 24;
        j["rope_theta"] = 500000.0;
        j["rms_norm_eps"] = 1e-5;
        j["bos_token_id"] = 1;
        j["eos_token_id"] = 2;
        j["tie_word_embeddings"] = true;
        j["torch_dtype"] = "bfloat16";
        j["max_position_embeddings"] = 4096;
        j["rope_scaling"] = {{"rope_type", "llama3"},
                             {"factor", 8.0},
                             {"low_freq_factor", 1.0},
                             {"high_freq_factor", 4.0},
                             {"original_max_position_embeddings", 8192}};
        if (std::string(arch) == "MistralForCausalLM") j["sliding_window"] = 4096;
        ModelConfig a = config_from_json(j, "a");
        json out = config_to_json(a);
        EXPECT_EQ(out["architectures"], json::array({arch}));
        EXPECT_EQ(out["use_cache"], true);
        EXPECT_DOUBLE_EQ(out["initializer_range"].get<double>(), 0.02);
        EXPECT_EQ(out["rope_scaling"]["rope_type"], "llama3");
        EXPECT_EQ(out["hidden_act"], "silu");
        ModelConfig b = config_from_json(out, "b");
        EXPECT_EQ(b.architecture, a.architecture);
        EXPECT_EQ(b.model_type, a.model_type);
        EXPECT_EQ(b.vocab_size, a.vocab_size);
        EXPECT_EQ(b.hidden_size, a.hidden_size);
        EXPECT_EQ(b.intermediate_size, a.intermediate_size);
        EXPECT_EQ(b.num_layers, a.num_layers);
        EXPECT_EQ(b.num_heads, a.num_heads);
        EXPECT_EQ(b.num_kv_heads, 2);
        EXPECT_EQ(b.head_dim, 24);
        EXPECT_EQ(b.max_position_embeddings, 4096);
        EXPECT_EQ(b.rms_norm_eps, a.rms_norm_eps);
        EXPECT_EQ(b.rope_theta, a.rope_theta);
        EXPECT_EQ(b.rope_scaling.type, RopeScalingType::Llama3);
        EXPECT_EQ(b.rope_scaling.factor, 8.0);
        EXPECT_EQ(b.rope_scaling.original_max_position_embeddings, 8192);
        EXPECT_EQ(b.tie_word_embeddings, true);
        EXPECT_EQ(b.attention_bias, a.attention_bias);
        EXPECT_EQ(b.bos_token_id, 1);
        EXPECT_EQ(b.eos_token_id, 2);
        EXPECT_EQ(b.torch_dtype, "bfloat16");
        EXPECT_EQ(b.sliding_window, a.sliding_window);
        EXPECT_EQ(b.num_params(), a.num_params());
    }
    ModelConfig c = config_from_json(minimal(), "m");
    json out = config_to_json(c);
    EXPECT_TRUE(out["rope_scaling"].is_null());
    EXPECT_TRUE(out["bos_token_id"].is_null());
    EXPECT_EQ(out["attention_bias"], false);
    EXPECT_EQ(out["mlp_bias"], false);
    c.rope_scaling.type = RopeScalingType::Linear;
    c.rope_scaling.factor = 4.0;
    out = config_to_json(c);
    EXPECT_EQ(out["rope_scaling"], (json{{"rope_type", "linear"}, {"factor", 4.0}}));
}

TEST(HfConfig, LoadConfigFileErrors) {
    std::string dir = tuner::testing::make_temp_dir("hf-config");
    std::string missing = dir + "/nope/config.json";
    EXPECT_EQ(error_of([&] { load_config(missing); }),
              "[config] " + missing + ": cannot open (No such file or directory)");

    std::string path = dir + "/config.json";
    {
        std::ofstream out(path);
        out << "{\n  \"hidden_size\": 64,\n  \"vocab_size\": ,\n}\n";
    }
    std::string msg = error_of([&] { load_config(path); });
    EXPECT_CONTAINS(msg, "[config] " + path + ": ");
    EXPECT_CONTAINS(msg, "parse error at line 3");

    {
        std::ofstream out(path);
        out << minimal().dump(2);
    }
    EXPECT_EQ(load_config(path).hidden_size, 64);
    {
        std::ofstream out(path);
        json j = minimal();
        j.erase("hidden_size");
        out << j.dump(2);
    }
    EXPECT_EQ(error_of([&] { load_config(path); }), "[config] " + path + ": missing key 'hidden_size'");
}

TEST(HfConfig, Stories260K) {
    TUNER_REQUIRE_SHARED_DATA(data);
    ModelConfig c = load_config(data + "/stories260K/hf/config.json");
    EXPECT_EQ(c.architecture, "LlamaForCausalLM");
    EXPECT_EQ(c.hidden_size, 64);
    EXPECT_EQ(c.num_layers, 5);
    EXPECT_EQ(c.num_heads, 8);
    EXPECT_EQ(c.num_kv_heads, 4);
    EXPECT_EQ(c.head_dim, 8);
    EXPECT_EQ(c.vocab_size, 512);
    EXPECT_EQ(c.intermediate_size, 172);
    EXPECT_EQ(c.max_position_embeddings, 512);
    EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
    EXPECT_TRUE(c.tie_word_embeddings);
    EXPECT_EQ(c.bos_token_id, 1);
    EXPECT_EQ(c.eos_token_id, 2);
    // The file's tensors: 512*64 embedding + 5 * (2*64 + 64*64*2 + 32*64*2 + 3*64*172) + 64.
    EXPECT_EQ(c.num_params(), 512 * 64 + 5 * (2 * 64 + 2 * 64 * 64 + 2 * 32 * 64 + 3 * 64 * 172) + 64);
    EXPECT_EQ(c.num_params(), 1040128 / 4);  // the data size of model.safetensors in floats
}
