// Named model shapes for `tuner init-model` and benchmarks.
//   tiny       ~0.9M parameters, for tests
//   smol-135m  SmolLM-135M shape (hidden 576, 30 layers, 9 heads, 3 KV heads, ffn 1536, vocab 49152, tied)
//   qwen2-0.5b Qwen2.5-0.5B shape (hidden 896, 24 layers, 14/2 heads, ffn 4864, vocab 151936, tied, q/k/v bias)
//   llama-1b   Llama-3.2-1B shape (hidden 2048, 16 layers, 32/8 heads, ffn 8192, vocab 128256, tied, llama3 RoPE)
//   llama-7b   Llama-2-7B shape (hidden 4096, 32 layers, 32 heads, ffn 11008, vocab 32000, untied)
#pragma once

#include <string>
#include <vector>

#include "io/hf_config.h"

namespace tuner {

// Throws tuner::Error listing the known names for an unknown one.
ModelConfig preset_config(const std::string& name);
std::vector<std::string> preset_names();

}  // namespace tuner
