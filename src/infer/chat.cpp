#include "infer/chat.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"
#include "models/llama.h"
#include "tokenizer/tokenizer.h"

namespace tuner {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Turn layout shared by ChatSession and render_chat (see chat.h).
struct Layout {
    const Tokenizer& tok;
    const ChatOptions& o;
    std::vector<int32_t> sep, suffix;

    Layout(const Tokenizer& t, const ChatOptions& opt) : tok(t), o(opt) {
        if (o.tmpl && !o.tmpl->sep.empty()) sep = tok.encode(o.tmpl->sep, false);
        if (o.tmpl && !o.tmpl->suffix.empty()) suffix = tok.encode(o.tmpl->suffix, false);
    }

    // [BOS] + the prompt of turn `round` (0-based).
    void prompt(std::vector<int32_t>& ids, int round, const std::string& user, bool needs_bos) const {
        std::string text;
        if (o.tmpl) {
            if (needs_bos && o.encode.chat_bos && o.encode.bos_id >= 0) ids.push_back(o.encode.bos_id);
            if (round == 0 && !o.system.empty()) text = template_system(*o.tmpl, o.system);
            text += template_instruction(*o.tmpl, user, round + 1);
        } else {
            if (needs_bos && o.encode.text_bos && o.encode.bos_id >= 0) ids.push_back(o.encode.bos_id);
            if (round == 0 && !o.system.empty()) text = o.system + "\n";
            else if (round > 0 && !needs_bos) text = "\n";
            text += user;
        }
        auto body = tok.encode(text, false);
        ids.insert(ids.end(), body.begin(), body.end());
    }

    // What follows the reply's tokens: SUFFIX [EOS] SEP with a template (suffix only when
    // with_suffix), [EOS] when a plain reply ended with one. Returns whether the next turn starts
    // with BOS.
    bool end(std::vector<int32_t>& ids, bool eos, bool with_suffix) const {
        if (!o.tmpl) {
            if (eos && o.encode.eos_id >= 0) ids.push_back(o.encode.eos_id);
            return eos;
        }
        if (with_suffix) ids.insert(ids.end(), suffix.begin(), suffix.end());
        bool next_bos = false;
        if (!o.tmpl->suffix_as_eos) {
            if (o.encode.eos_id >= 0) ids.push_back(o.encode.eos_id);
            next_bos = true;
        }
        ids.insert(ids.end(), sep.begin(), sep.end());
        return next_bos;
    }
};

// The longest suffix of text[from..] that is a proper prefix of one of the stop words.
size_t stop_prefix_tail(const std::string& text, size_t from, const std::vector<std::string>& stops) {
    size_t hold = 0;
    const size_t avail = text.size() - from;
    for (const auto& s : stops) {
        for (size_t L = std::min(s.size() - 1, avail); L > hold; L--) {
            if (text.compare(text.size() - L, L, s, 0, L) == 0) {
                hold = L;
                break;
            }
        }
    }
    return hold;
}

}  // namespace

const char* chat_stop_name(ChatStop s) {
    switch (s) {
        case ChatStop::Eos: return "eos";
        case ChatStop::StopWord: return "stop word";
        case ChatStop::MaxTokens: return "max tokens";
        case ChatStop::ContextFull: return "context full";
    }
    return "?";
}

ChatSession::ChatSession(LlamaModel& model, const Tokenizer& tok, const ChatOptions& options)
    : model_(model), tok_(tok), opt_(options), sampler_(options.sampling) {
    const int64_t max_pos = model.config.max_position_embeddings;
    if (opt_.context < 0) fail("[chat] the context length must be positive, got {}", opt_.context);
    if (opt_.context > max_pos)
        fail("[chat] a context of {} tokens is longer than the model's max_position_embeddings ({})", opt_.context, max_pos);
    context_ = opt_.context > 0 ? opt_.context : int(std::min<int64_t>(max_pos, 4096));
    if (context_ < 2) fail("[chat] the context must hold at least 2 tokens, got {}", context_);
    if (opt_.max_new_tokens < 1) fail("[chat] max_new_tokens must be at least 1, got {}", opt_.max_new_tokens);
    auto add_stop = [&](const std::string& s) {
        if (!s.empty() && std::find(stops_.begin(), stops_.end(), s) == stops_.end()) stops_.push_back(s);
    };
    for (const auto& s : opt_.stop_words) add_stop(s);
    if (opt_.tmpl) {
        for (const auto& s : opt_.tmpl->stop_words) add_stop(s);
        add_stop(opt_.tmpl->suffix);
    }
    Layout layout(tok_, opt_);
    sep_ids_ = layout.sep;
    suffix_ids_ = layout.suffix;
    cache_ = std::make_unique<KVCache>(model_, context_);
}

ChatSession::~ChatSession() = default;

void ChatSession::reset() {
    cache_->clear();
    cached_.clear();
    history_.clear();
    turns_.clear();
    needs_bos_ = true;
    sampler_ = Sampler(opt_.sampling);
}

void ChatSession::note(const std::string& s) const {
    if (on_note) on_note(s);
}

void ChatSession::append_prompt(std::vector<int32_t>& ids, int round, const std::string& user, bool needs_bos) const {
    Layout(tok_, opt_).prompt(ids, round, user, needs_bos);
}

bool ChatSession::append_reply(std::vector<int32_t>& ids, const std::vector<int32_t>& reply, bool eos) const {
    ids.insert(ids.end(), reply.begin(), reply.end());
    return Layout(tok_, opt_).end(ids, eos, /*with_suffix=*/true);
}

void ChatSession::rebuild_history() {
    history_.clear();
    bool needs_bos = true;
    for (size_t j = 0; j < turns_.size(); j++) {
        append_prompt(history_, int(j), turns_[j].user, needs_bos);
        needs_bos = append_reply(history_, turns_[j].reply, turns_[j].eos);
    }
    needs_bos_ = needs_bos;
}

int ChatSession::sync_cache(const std::vector<int32_t>& ids, float* logits, bool* reprefilled) {
    TUNER_ASSERT(!ids.empty() && int(ids.size()) <= context_);
    size_t p = 0;
    while (p < cached_.size() && p < ids.size() && cached_[p] == ids[p]) p++;
    // The cache can only grow (KVCache has no truncate): when ids leave its contents, or add
    // nothing to them (the logits of the last token are needed), read everything again.
    if (p < cached_.size() || p == ids.size()) {
        *reprefilled = !cached_.empty();
        cache_->clear();
        cached_.clear();
    }
    const int n = int(ids.size() - cached_.size());
    model_.decode_step(ids.data() + cached_.size(), n, *cache_, logits);
    cached_ = ids;
    return n;
}

ChatReply ChatSession::send(const std::string& user, const std::function<void(std::string_view)>& on_text) {
    ChatReply r;
    const auto t0 = Clock::now();
    // A message that cannot fit even as the only turn is refused before anything changes.
    std::vector<int32_t> alone;
    append_prompt(alone, 0, user, true);
    if (alone.empty()) fail("[chat] the message is empty and there is nothing to continue");
    if (int(alone.size()) + 1 > context_)
        fail("[chat] the message is {} tokens; the context holds {} (a longer --ctx, or a shorter message)", alone.size(),
             context_);
    std::vector<int32_t> prompt;
    append_prompt(prompt, turns(), user, needs_bos_);
    // Room for the prompt and a reply (up to a quarter of the context): drop the oldest turns.
    const size_t reserve = size_t(std::max(1, std::min(opt_.max_new_tokens, context_ / 4)));
    const size_t before = history_.size(), prompt_before = prompt.size();
    while (!turns_.empty() && history_.size() + prompt.size() + reserve > size_t(context_)) {
        turns_.erase(turns_.begin());
        r.dropped_turns++;
        rebuild_history();
        prompt.clear();
        append_prompt(prompt, turns(), user, needs_bos_);
    }
    if (r.dropped_turns > 0)
        note(fmt::format("[chat] the context ({} tokens) cannot hold the conversation ({}), the message ({}) and a "
                         "reply ({}): dropped the oldest {} turn{}, {} left",
                         context_, before, prompt_before, reserve, r.dropped_turns, r.dropped_turns == 1 ? "" : "s",
                         turns()));

    std::vector<int32_t> seq = history_;  // history + prompt + sampled tokens
    seq.insert(seq.end(), prompt.begin(), prompt.end());
    const size_t prompt_end = seq.size();
    std::vector<float> logits(size_t(model_.config.vocab_size));
    r.prompt_tokens = sync_cache(seq, logits.data(), &r.reprefilled);
    r.prefill_s = seconds_since(t0);
    const auto t1 = Clock::now();

    // Sample, stream, and look for stop words. The decoded text skips special tokens; a special
    // token whose text is a stop word stops on its own. len_after[i] is the length of the text
    // after sampled token i.
    StreamingDecoder sd(tok_, /*skip_special=*/true);
    std::string text;
    size_t shown = 0, cut = std::string::npos;
    std::vector<int32_t> gen;
    std::vector<size_t> len_after;
    bool eos = false;
    auto emit = [&](size_t upto) {
        if (upto > shown && on_text) on_text(std::string_view(text).substr(shown, upto - shown));
        shown = std::max(shown, upto);
    };
    r.stop = ChatStop::MaxTokens;
    for (int step = 0; step < opt_.max_new_tokens; step++) {
        const int32_t next = sampler_.sample(logits, seq);
        r.generated++;
        if (next == tok_.eos_id()) {
            r.stop = ChatStop::Eos;
            eos = true;
            break;
        }
        if (tok_.is_special(next)) {
            std::string piece = tok_.id_to_piece(next);
            if (std::find(stops_.begin(), stops_.end(), piece) != stops_.end()) {
                r.stop = ChatStop::StopWord, r.stop_word = piece;
                break;
            }
        }
        gen.push_back(next);
        seq.push_back(next);
        text += sd.push(next);
        len_after.push_back(text.size());
        for (const auto& s : stops_) {
            size_t at = text.find(s, shown);
            if (at != std::string::npos && (cut == std::string::npos || at < cut)) cut = at, r.stop_word = s;
        }
        if (cut != std::string::npos) {
            r.stop = ChatStop::StopWord;
            break;
        }
        emit(text.size() - stop_prefix_tail(text, shown, stops_));
        if (cached_.size() >= size_t(context_)) {
            r.stop = ChatStop::ContextFull;
            break;
        }
        if (step + 1 == opt_.max_new_tokens) break;  // the last token is not run (the next turn will)
        model_.decode_step(&next, 1, *cache_, logits.data());
        cached_.push_back(next);
    }
    if (cut == std::string::npos) {
        text += sd.flush();
        emit(text.size());
        r.text = text;
        r.tokens = gen;
    } else {
        // The stop word began at byte `cut`: keep the tokens whose text ends before it, plus the
        // encoding of any text between them and the stop word; if that does not decode back to
        // the shown text (tokenizers that add a leading space), the shown text re-encoded.
        emit(cut);
        r.text = text.substr(0, cut);
        size_t k = 0;
        while (k < len_after.size() && len_after[k] <= cut) k++;
        r.tokens.assign(gen.begin(), gen.begin() + long(k));
        const size_t kept_len = k > 0 ? len_after[k - 1] : 0;
        if (kept_len < cut) {
            auto frag = tok_.encode(std::string_view(text).substr(kept_len, cut - kept_len), false);
            r.tokens.insert(r.tokens.end(), frag.begin(), frag.end());
        }
        if (tok_.decode(r.tokens, true) != r.text) r.tokens = tok_.encode(r.text, false);
    }
    r.generate_s = seconds_since(t1);
    if (r.stop == ChatStop::ContextFull)
        note(fmt::format("[chat] context full ({} tokens): the reply was cut; older turns will be dropped", context_));

    history_.insert(history_.end(), prompt.begin(), prompt.end());
    TUNER_ASSERT(history_.size() == prompt_end);
    turns_.push_back(Turn{user, r.tokens, eos});
    needs_bos_ = append_reply(history_, r.tokens, eos);
    return r;
}

std::vector<int32_t> render_chat(const Tokenizer& tok, const ChatOptions& options, const std::vector<ChatTurn>& turns,
                                 const std::string& next_user) {
    Layout layout(tok, options);
    std::vector<int32_t> ids;
    bool needs_bos = true;
    for (size_t j = 0; j < turns.size(); j++) {
        layout.prompt(ids, int(j), turns[j].user, needs_bos);
        // As training encodes an output: the reply and the suffix in one call.
        auto out = tok.encode(turns[j].reply + (options.tmpl ? options.tmpl->suffix : ""), false);
        ids.insert(ids.end(), out.begin(), out.end());
        needs_bos = layout.end(ids, false, /*with_suffix=*/false);
    }
    if (!next_user.empty()) layout.prompt(ids, int(turns.size()), next_user, needs_bos);
    return ids;
}

}  // namespace tuner
