// Choosing the next token from logits, with the knobs users know from HF generate / llama.cpp:
// repetition penalty (CTRL-style, as HF: divide positive logits of seen tokens, multiply
// negative ones), temperature, top-k, then top-p (nucleus) over what top-k left, then a draw from
// a seeded generator. temperature <= 0 means greedy (argmax after the penalty).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace tuner {

struct SamplingParams {
    double temperature = 0.1;  // the reference chat's defaults: 0.1, top-k 40, top-p 0.75
    int top_k = 40;            // 0 = off
    double top_p = 0.75;       // 1 = off
    double repetition_penalty = 1.0;
    uint64_t seed = 0;
};

class Sampler {
  public:
    explicit Sampler(const SamplingParams& params) : p_(params), rng_(params.seed) {}
    // logits (V) are modified in place. `history`: tokens generated and in the prompt, for the
    // repetition penalty.
    int32_t sample(std::vector<float>& logits, const std::vector<int32_t>& history);
    const SamplingParams& params() const { return p_; }

  private:
    SamplingParams p_;
    std::mt19937_64 rng_;
    std::vector<std::pair<float, int32_t>> cand_;
};

}  // namespace tuner
