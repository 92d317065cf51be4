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

    virtual std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const = 0;
    // Concatenated text of ids; skip_special drops special (control) tokens such as <s>.
    virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const = 0;

    virtual int64_t vocab_size() const = 0;         // largest id + 1, added tokens included
    virtual std::string id_to_piece(int32_t id) const = 0;  // the vocabulary string ("▁the", "Ġthe", "<s>")
    virtual int32_t piece_to_id(std::string_view piece) const = 0;  // -1 if absent (added tokens included)
    virtual bool is_special(int32_t id) const = 0;  // a special added token (control token)

    int32_t bos_id() const { return bos_id_; }  // -1 when the tokenizer has none
    int32_t eos_id() const { return eos_id_; }
    bool adds_bos() const { return add_bos_; }  // the post-processor prepends BOS
    bool adds_eos() const { return add_eos_; }

  protected:
    int32_t bos_id_ = -1, eos_id_ = -1;
    bool add_bos_ = false, add_eos_ = false;
};

// Decodes token by token for streaming output without ever emitting half a UTF-8 character:
// bytes of an incomplete sequence are held back until the sequence completes.
class StreamingDecoder {
  public:
    explicit StreamingDecoder(const Tokenizer& tokenizer) : tok_(tokenizer) {}
    // Returns the text that became complete with this token (possibly empty).
    std::string push(int32_t id);
    // Returns whatever is held back (invalid bytes become U+FFFD).
    std::string flush();

  private:
    const Tokenizer& tok_;
    std::vector<int32_t> ids_;
    size_t emitted_ = 0;  // bytes of decode(ids_) already returned
};

}  // namespace tuner
