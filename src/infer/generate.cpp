#include "infer/generate.h"

#include <algorithm>

#include "core/error.h"
#include "models/llama.h"

namespace tuner {

// The KV cache lives on the model's device (CPU or CUDA), so decoding is incremental on both.
NextTokenLogits::NextTokenLogits(LlamaModel& model, int max_T) : model_(model), max_T_(max_T) {
    cache_ = new KVCache(model, max_T);
}

NextTokenLogits::~NextTokenLogits() { delete cache_; }

int64_t NextTokenLogits::vocab_size() const { return model_.config.vocab_size; }

void NextTokenLogits::reset() {
    if (cache_) cache_->clear();
}

void NextTokenLogits::compute(const std::vector<int32_t>& ids, float* logits) {
    TUNER_ASSERT(!ids.empty() && int(ids.size()) <= max_T_);
    const int past = cache_->len();
    TUNER_ASSERT_MSG(past < int(ids.size()), "ids must extend the previous sequence");
    model_.decode_step(ids.data() + past, int(ids.size()) - past, *cache_, logits);
}

std::vector<int32_t> greedy_generate(LlamaModel& model, std::vector<int32_t> tokens, int max_new, int64_t eos) {
    int max_T = int(std::min<int64_t>(int64_t(tokens.size()) + max_new, model.config.max_position_embeddings));
    std::vector<int32_t> out;
    if (max_new <= 0 || int(tokens.size()) >= max_T) return out;
    NextTokenLogits next(model, max_T);
    std::vector<float> logits(size_t(model.config.vocab_size));
    for (int step = 0; step < max_new && int(tokens.size()) < max_T; step++) {
        next.compute(tokens, logits.data());
        int32_t best = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
        tokens.push_back(best);
        out.push_back(best);
        if (best == eos) break;
    }
    return out;
}

}  // namespace tuner
