// Generation. For now greedy decoding that re-runs the forward over the whole sequence at each
// step; a KV cache and sampling (temperature, top-k, top-p) come with `tuner chat`.
#pragma once

#include <cstdint>
#include <vector>

namespace tuner {

class LlamaModel;

// Greedy continuation of `prompt` by up to max_new tokens, stopping after `eos` (when >= 0) or
// at max_position_embeddings. Returns only the new tokens.
std::vector<int32_t> greedy_generate(LlamaModel& model, std::vector<int32_t> prompt, int max_new, int64_t eos);

}  // namespace tuner
