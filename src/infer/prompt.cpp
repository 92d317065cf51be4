#include "infer/prompt.h"

#include <algorithm>

#include "infer/generate.h"
#include "infer/sampling.h"
#include "models/llama.h"
#include "tokenizer/tokenizer.h"

namespace tuner {

std::vector<int32_t> render_prompt(const Tokenizer& tok, const ChatTemplate* tmpl, const EncodeOptions& enc,
                                   const std::string& system, const std::string& prompt) {
    std::vector<int32_t> ids;
    std::string text;
    if (tmpl) {
        if (enc.chat_bos && enc.bos_id >= 0) ids.push_back(enc.bos_id);
        if (!system.empty()) text += template_system(*tmpl, system);
        text += template_instruction(*tmpl, prompt, 1);
    } else {
        if (enc.text_bos && enc.bos_id >= 0) ids.push_back(enc.bos_id);
        text = prompt;
    }
    auto body = tok.encode(text, false);
    ids.insert(ids.end(), body.begin(), body.end());
    return ids;
}

std::string generate_text(LlamaModel& model, const Tokenizer& tok, const std::vector<int32_t>& prompt,
                          const SamplingParams& params, int max_new, const std::vector<std::string>& stop_words) {
    const int max_T = int(std::min<int64_t>(int64_t(prompt.size()) + max_new, model.config.max_position_embeddings));
    if (int(prompt.size()) >= max_T || max_new <= 0) return "";
    NextTokenLogits next_logits(model, max_T);  // a KV cache on the model's device
    return generate_text(next_logits, tok, prompt, params, max_new, stop_words);
}

std::string generate_text(NextTokenLogits& next_logits, const Tokenizer& tok, const std::vector<int32_t>& prompt,
                          const SamplingParams& params, int max_new, const std::vector<std::string>& stop_words) {
    std::vector<int32_t> ids = prompt;
    const int max_T = next_logits.max_T();
    std::vector<int32_t> out;
    if (int(ids.size()) >= max_T || max_new <= 0) return "";
    next_logits.reset();
    Sampler sampler(params);
    std::vector<float> logits(size_t(next_logits.vocab_size()));
    std::string text;
    for (int step = 0; step < max_new && int(ids.size()) < max_T; step++) {
        next_logits.compute(ids, logits.data());
        int32_t next = sampler.sample(logits, ids);
        if (next == tok.eos_id()) break;
        ids.push_back(next);
        out.push_back(next);
        // Stop strings are often special tokens (<|im_end|>): look for them with specials kept.
        text = tok.decode(out, false);
        for (const auto& s : stop_words) {
            size_t at = s.empty() ? std::string::npos : text.find(s);
            if (at != std::string::npos) return text.substr(0, at);
        }
    }
    return tok.decode(out, true);
}

}  // namespace tuner
