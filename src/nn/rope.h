// RoPE frequencies from a model config, including Hugging Face's rope_scaling types.
//   inv_freq[i] = 1 / theta^(2i / HD), i in [0, HD/2)
//   linear: inv_freq / factor (positions interpolated)
//   llama3: long wavelengths (> original_max / low_freq_factor) divided by factor, short ones
//           (< original_max / high_freq_factor) kept, a smooth blend in between.
#pragma once

#include <vector>

#include "io/hf_config.h"

namespace tuner {

std::vector<float> rope_inv_freq(const ModelConfig& config);

}  // namespace tuner
