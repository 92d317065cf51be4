// `tuner init-model`: a random-initialised Hugging Face model folder, written tensor by tensor
// so that even a 7B model in bf16 needs only one tensor's worth of memory.
#pragma once

#include <cstdint>
#include <string>

#include "core/dtype.h"
#include "io/hf_config.h"

namespace tuner {

struct InitModelOptions {
    uint64_t seed = 0;
    DType dtype = DType::F32;    // F32 or BF16 (F16 also works)
    std::string tokenizer_dir;   // copy its tokenizer files and take vocab_size / bos / eos from it;
                                 // "bytes": write the project's own byte-level tokenizer
    bool config_only = false;    // config.json (+ tokenizer) but no model.safetensors: what another
                                 // framework needs to build the shape itself (llama-7b would be 27 GB)
};

// Initialisation as HF's LlamaPreTrainedModel._init_weights: linear and embedding weights
// ~ N(0, 0.02), norms 1, biases 0. Writes OUT_DIR/config.json and OUT_DIR/model.safetensors.
void init_model(ModelConfig config, const std::string& out_dir, const InitModelOptions& options);

}  // namespace tuner
