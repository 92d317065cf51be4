// Turning a user prompt into token ids the way training saw them: [BOS when the template needs
// it] + SYSTEM block (when a system text is given) + INSTRUCTION block of round 1, or the raw text
// (with the tokenizer's BOS) when there is no template. Used by `tuner generate`, `tuner chat` and
// the trainer's eval.prompts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/samples.h"
#include "data/templates.h"

namespace tuner {

class Tokenizer;
class LlamaModel;
class NextTokenLogits;
struct SamplingParams;

std::vector<int32_t> render_prompt(const Tokenizer& tok, const ChatTemplate* tmpl, const EncodeOptions& enc,
                                   const std::string& system, const std::string& prompt);

// Generates up to max_new tokens after `ids` (greedy when params.temperature <= 0), stopping at
// the tokenizer's EOS or a stop string of the template; returns the decoded continuation without
// the stop token/string.
std::string generate_text(LlamaModel& model, const Tokenizer& tok, const std::vector<int32_t>& ids,
                          const SamplingParams& params, int max_new, const std::vector<std::string>& stop_words);
// The same with a KV cache made beforehand (reset here): the trainer's eval prompts reuse one
// cache, planned and allocated before the step loop. Generation stops at its max_T positions.
std::string generate_text(NextTokenLogits& next_logits, const Tokenizer& tok, const std::vector<int32_t>& ids,
                          const SamplingParams& params, int max_new, const std::vector<std::string>& stop_words);

}  // namespace tuner
