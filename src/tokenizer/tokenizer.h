// Tokenizers: Hugging Face tokenizer.json (byte-level BPE as in GPT-2 / Llama 3 / Qwen2, and
// SentencePiece-style BPE with byte fallback as in Llama 2 / Phi-3) and SentencePiece
// tokenizer.model (through libsentencepiece), behind one interface.
//
//   auto tok = Tokenizer::load("models/qwen");          // a folder, tokenizer.json or tokenizer.model
//   std::vector<int32_t> ids = tok->encode("Hello", /*add_special_tokens=*/false);
//   std::string text = tok->decode(ids);
//
// encode() matches added/special tokens in the text before running the model (as HF does, with
// or without add_special_tokens); add_special_tokens applies the post-processor's BOS/EOS rules
// (HF's `add_special_tokens=True`). truncation/padding sections of tokenizer.json are ignored.
//
// What is followed, and where (see each .cpp's header comment for the details):
//  * tokenizer.json (hf_tokenizer.cpp, bpe_model.cpp): the tokenizers library's pipeline --
//    added tokens (special, lstrip, rstrip, single_word, normalized), normalizers (Sequence,
//    NFC/NFD/NFKC/NFKD via ICU, Lowercase, StripAccents, Prepend, Append, Replace, Strip),
//    pre-tokenizers (Sequence, Split with regex or string and every behavior and invert,
//    ByteLevel, Metaspace with prepend_scheme and split, Digits, Whitespace, WhitespaceSplit,
//    Punctuation, BertPreTokenizer), the BPE model (ranked merges in either spelling,
//    ignore_merges, byte_fallback, unk_token, fuse_unk, continuing_subword_prefix,
//    end_of_word_suffix), post-processors (TemplateProcessing, ByteLevel, Sequence,
//    RobertaProcessing, BertProcessing) and decoders (ByteLevel, Metaspace, Replace,
//    ByteFallback, Fuse, Strip, Sequence). Regexes run on PCRE2 with Unicode properties and the
//    JIT. Other model types (WordPiece, Unigram, WordLevel) and components are load errors.
//  * tokenizer.model (sp_tokenizer.cpp): libsentencepiece's Encode; decoding as DecodeIds.
//  * BOS/EOS: tokenizer_config.json's bos_token / eos_token when the folder has one, else the
//    post-processor's template, else a token named like one (<s>, <|begin_of_text|>, </s>, ...).
//    Llama-class tokenizer_config.json files (LlamaTokenizer[Fast]) rebuild the template from
//    add_bos_token (default true) / add_eos_token (default false), as transformers does.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tuner {

class Tokenizer {
  public:
    virtual ~Tokenizer() = default;

    // path: a folder (tokenizer.json preferred, else tokenizer.model), or either file itself.
    // Errors name the file and what is wrong.
    static std::unique_ptr<Tokenizer> load(const std::string& path);

    // Text that is not valid UTF-8 is cleaned first (each ill-formed subsequence becomes U+FFFD).
    // Thread-safe: one tokenizer may encode from many threads at once.
    virtual std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const = 0;
    // Concatenated text of ids; skip_special drops special (control) tokens such as <s>. Always
    // valid UTF-8: bytes that do not form a character (ids that end inside one, or byte-fallback
    // tokens that never form one) become U+FFFD. Ids the tokenizer does not know are skipped.
    virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;

    virtual int64_t vocab_size() const = 0;         // largest id + 1, added tokens included
    virtual std::string id_to_piece(int32_t id) const = 0;  // the vocabulary string ("▁the", "Ġthe", "<s>")
    virtual int32_t piece_to_id(std::string_view piece) const = 0;  // -1 if absent (added tokens included)
    virtual bool is_special(int32_t id) const = 0;  // a special added token (control token)

    int32_t bos_id() const { return bos_id_; }  // -1 when the tokenizer has none
    int32_t eos_id() const { return eos_id_; }
    bool adds_bos() const { return add_bos_; }  // the post-processor prepends BOS
    bool adds_eos() const { return add_eos_; }

    // The ids add_special_tokens=true puts before and after the text (the post-processor's
    // template for a single sequence: Llama 3 [128000] and [], GPT-2 [] and []).
    const std::vector<int32_t>& prefix_ids() const { return prefix_ids_; }
    const std::vector<int32_t>& suffix_ids() const { return suffix_ids_; }
    // "tokenizer.json (byte-level BPE)", "tokenizer.model (SentencePiece BPE)", ...
    virtual std::string describe() const = 0;

    // Incremental decoding, shared by decode() and StreamingDecoder. decode_append appends the
    // raw bytes that token id contributes after the tokens already seen by state (possibly part
    // of a UTF-8 sequence; leading-space stripping and similar rules depend on state);
    // decode_finish appends what is still held back at the end. decode() cleans the
    // concatenation to valid UTF-8.
    struct DecodeState {
        int64_t tokens = 0;             // tokens that produced output so far (after skipping)
        std::vector<int64_t> counters;  // the tokenizer's own per-stream state
    };
    virtual void decode_append(DecodeState& state, int32_t id, bool skip_special, std::string& bytes) const = 0;
    virtual void decode_finish(DecodeState& /*state*/, std::string& /*bytes*/) const {}

  protected:
    int32_t bos_id_ = -1, eos_id_ = -1;
    bool add_bos_ = false, add_eos_ = false;
    std::vector<int32_t> prefix_ids_, suffix_ids_;
};

class Gguf;
// A tokenizer from the metadata of a llama.cpp GGUF file (tokenizer.ggml.*): `llama`
// (SentencePiece BPE with byte fallback), `gpt2` (byte-level BPE, pre-tokenized with
// llama.cpp's regexes for tokenizer.ggml.pre) and `bert` (WordPiece, tokenizer/wordpiece.h);
// see gguf_tokenizer.cpp. Errors name the file.
std::unique_ptr<Tokenizer> load_gguf_tokenizer(const std::string& path);
std::unique_ptr<Tokenizer> load_gguf_tokenizer(const Gguf& gguf);  // an open file (io/gguf.h)

// Decodes token by token for streaming output without ever emitting half a UTF-8 character:
// bytes of an incomplete sequence are held back until the sequence completes.
// The concatenation of everything push() and flush() return equals tok.decode(all ids), and each
// returned string is valid UTF-8. Costs O(1) per token (no re-decoding of the whole prefix).
//
//   StreamingDecoder sd(*tok);
//   for (int32_t id : generated) fputs(sd.push(id).c_str(), stdout);
//   fputs(sd.flush().c_str(), stdout);
class StreamingDecoder {
  public:
    explicit StreamingDecoder(const Tokenizer& tokenizer) : tok_(tokenizer) {}
    StreamingDecoder(const Tokenizer& tokenizer, bool skip_special) : tok_(tokenizer), skip_special_(skip_special) {}
    // Returns the text that became complete with this token (possibly empty).
    std::string push(int32_t id);
    // Returns whatever is held back (invalid bytes become U+FFFD) and starts a new stream.
    std::string flush();

  private:
    const Tokenizer& tok_;
    bool skip_special_ = false;
    Tokenizer::DecodeState state_;
    std::string pending_;  // raw bytes not returned yet: an incomplete UTF-8 sequence
};

}  // namespace tuner
