// Generation. Greedy decoding with a KV cache: the prompt runs through the model once, then one
// token per step (LlamaModel::decode_step). Sampling (temperature, top-k, top-p) is in
// infer/sampling.h; text generation with stop strings in infer/prompt.h.
#pragma once

#include <cstdint>
#include <vector>

namespace tuner {

class LlamaModel;
class KVCache;

// Greedy continuation of `prompt` by up to max_new tokens, stopping after `eos` (when >= 0) or
// at max_position_embeddings. Returns only the new tokens. Decodes with a KV cache on the
// model's device.
std::vector<int32_t> greedy_generate(LlamaModel& model, std::vector<int32_t> prompt, int max_new, int64_t eos);

// Next-token logits for a growing sequence: feeds the tokens of `ids` not yet seen (all of them
// at the first call) and writes the logits (V) of the last one. Only the new tokens run, against
// a KV cache of max_T positions on the model's device.
class NextTokenLogits {
  public:
    NextTokenLogits(LlamaModel& model, int max_T);
    ~NextTokenLogits();
    // ids must extend the ids of the previous call (or be a fresh sequence after reset()).
    void compute(const std::vector<int32_t>& ids, float* logits);
    void reset();
    int max_T() const { return max_T_; }
    int64_t vocab_size() const;  // the model's (logits per call)

  private:
    LlamaModel& model_;
    int max_T_;
    KVCache* cache_ = nullptr;  // owned
};

}  // namespace tuner
