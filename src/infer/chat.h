// A multi-turn chat with a model, rendered the way training renders a conversation (templates.h,
// samples.h encode_chat) and decoded with one KV cache that lives as long as the conversation.
//
// The conversation is a growing list of token ids (history()). Turn i adds
//
//   [BOS at the start and after an EOS]  SYSTEM(system, first turn only)  INSTRUCTION(user, i+1)
//   reply tokens  SUFFIX  [EOS when the suffix does not act as EOS]  SEP
//
// exactly as encode_chat lays out a chat record (the reply's tokens are the ones the model
// sampled, so the cache never has to be recomputed for them). Without a template (plain text
// continuation) turn i adds [BOS at the start or after an EOS] ["\n" between turns] user text,
// then the reply tokens [EOS when the reply ended with one].
//
// Only tokens the KV cache has not seen run through the model: a new turn costs its prompt and
// its reply, not the whole conversation. The cache mirrors a prefix of the history; when the
// history changes behind what the cache holds (old turns dropped because the context is full, or
// a stop word that ended inside the sampled tokens), the cache is cleared and the history is read
// again (re-prefill), once, at the next turn.
//
// A reply ends at the tokenizer's EOS, at a stop word (the options' stop words, the template's
// stop words and its suffix; a special token whose text is a stop word, or the string anywhere in
// the decoded text, also across tokens), at max_new_tokens, or when the context is full. The stop
// word itself is never shown and never enters the history: the history holds the reply up to it,
// then the template's suffix as training would have it.
//
//   ChatOptions o;
//   o.tmpl = choose_chat_template("auto", model_dir, "", *tok).tmpl;
//   o.encode = encode_options_for(*tok, -1);
//   ChatSession chat(*model, *tok, o);
//   ChatReply r = chat.send("Hi!", [](std::string_view s) { fwrite(s.data(), 1, s.size(), stdout); });
//   chat.send("And then?");          // reuses the cache: only the new turn runs
//   chat.reset();                    // forget everything (the next reply equals a fresh session's)
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "data/samples.h"
#include "data/templates.h"
#include "infer/sampling.h"

namespace tuner {

class LlamaModel;
class KVCache;
class Tokenizer;

struct ChatOptions {
    const ChatTemplate* tmpl = nullptr;  // null: plain text continuation
    EncodeOptions encode;                // BOS/EOS rules: encode_options_for(tok, -1) as training uses
    std::string system;                  // system text of the first turn ("" for none)
    SamplingParams sampling;             // greedy when temperature <= 0
    int max_new_tokens = 512;            // per reply
    std::vector<std::string> stop_words; // besides the template's stop words and suffix, and EOS
    int context = 0;                     // KV cache length in tokens; 0: max_position_embeddings up to 4096
};

enum class ChatStop { Eos, StopWord, MaxTokens, ContextFull };
const char* chat_stop_name(ChatStop s);  // "eos", "stop word", "max tokens", "context full"

struct ChatReply {
    std::string text;             // the reply as shown (stop word cut, special tokens skipped)
    std::vector<int32_t> tokens;  // the reply's tokens as kept in the history (without the stop)
    ChatStop stop = ChatStop::MaxTokens;
    std::string stop_word;        // the stop word that ended it (StopWord)
    int generated = 0;            // tokens sampled (the stop token included)
    int prompt_tokens = 0;        // tokens run through the model before the first sample
    bool reprefilled = false;     // the cache was cleared and the history read again
    int dropped_turns = 0;        // oldest turns dropped to make room
    double prefill_s = 0, generate_s = 0;
};

// A turn as text, for render_chat.
struct ChatTurn {
    std::string user;
    std::string reply;
};

class ChatSession {
  public:
    // model and tok must outlive the session. The model must be on the CPU (decode_step).
    ChatSession(LlamaModel& model, const Tokenizer& tok, const ChatOptions& options);
    ~ChatSession();

    // Adds the user's turn and generates the reply. on_text receives the reply text as it
    // becomes final (valid UTF-8, never a part of a stop word), for streaming. A message that
    // does not fit the context even alone is a tuner::Error (the session is unchanged).
    ChatReply send(const std::string& user, const std::function<void(std::string_view)>& on_text = {});
    // Forgets the conversation and the cache; sampling restarts from the seed.
    void reset();

    // Token ids of the conversation so far: every turn with its reply and its end (suffix, EOS,
    // SEP). The next send() appends its turn to these.
    const std::vector<int32_t>& history() const { return history_; }
    int turns() const { return int(turns_.size()); }
    int cached_tokens() const { return int(cached_.size()); }  // tokens the KV cache holds
    int context() const { return context_; }
    const ChatOptions& options() const { return opt_; }
    // The stop words in force (options', template's stop words and suffix), without duplicates.
    const std::vector<std::string>& stop_words() const { return stops_; }

    // Notes for the user (turns dropped, context full); the CLI prints them on stderr.
    std::function<void(const std::string&)> on_note;

  private:
    struct Turn {
        std::string user;
        std::vector<int32_t> reply;
        bool eos = false;  // plain text: the reply ended with EOS
    };
    // Appends turn `round` (0-based) of user text to ids; needs_bos is updated for the next turn.
    void append_prompt(std::vector<int32_t>& ids, int round, const std::string& user, bool needs_bos) const;
    // Appends the reply and the turn's end; returns whether the next turn starts with BOS.
    bool append_reply(std::vector<int32_t>& ids, const std::vector<int32_t>& reply, bool eos) const;
    void rebuild_history();
    // Runs the tokens of ids the cache lacks (clearing it first when ids leave its prefix) and
    // writes the logits of the last one. Returns the number of tokens run.
    int sync_cache(const std::vector<int32_t>& ids, float* logits, bool* reprefilled);
    void note(const std::string& s) const;

    LlamaModel& model_;
    const Tokenizer& tok_;
    ChatOptions opt_;
    int context_ = 0;
    std::unique_ptr<KVCache> cache_;
    std::vector<int32_t> cached_;  // the ids the cache holds, in order
    std::vector<int32_t> history_;
    std::vector<Turn> turns_;
    bool needs_bos_ = true;
    std::vector<std::string> stops_;
    std::vector<int32_t> sep_ids_, suffix_ids_;
    Sampler sampler_;
};

// The token ids a conversation renders to when every reply is text (re-encoded the way training
// encodes an output), followed by the prompt of `next_user` (skipped when empty). Equals
// ChatSession::history() + the next prompt whenever the sampled reply tokens are the
// tokenizer's own encoding of their text.
std::vector<int32_t> render_chat(const Tokenizer& tok, const ChatOptions& options, const std::vector<ChatTurn>& turns,
                                 const std::string& next_user);

}  // namespace tuner
