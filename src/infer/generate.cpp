#include "infer/generate.h"

#include <algorithm>

#include "models/llama.h"

namespace tuner {

std::vector<int32_t> greedy_generate(LlamaModel& model, std::vector<int32_t> tokens, int max_new, int64_t eos) {
    int max_T = int(std::min<int64_t>(int64_t(tokens.size()) + max_new, model.config.max_position_embeddings));
    model.prepare(1, max_T, false);
    std::vector<float> logits(size_t(model.config.vocab_size));
    std::vector<int32_t> out;
    for (int step = 0; step < max_new && int(tokens.size()) < max_T; step++) {
        Batch b;
        b.B = 1, b.T = int(tokens.size()), b.tokens = tokens.data();
        model.last_logits(b, logits.data());
        int32_t best = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
        tokens.push_back(best);
        out.push_back(best);
        if (best == eos) break;
    }
    return out;
}

}  // namespace tuner
