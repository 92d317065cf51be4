// Export to llama.cpp's GGUF (a model, a LoRA adapter) and from GGUF back to a Hugging Face
// folder. Key names, tensor names and conventions follow llama.cpp's convert_hf_to_gguf.py,
// convert_lora_to_gguf.py, llama-quantize and llama-adapter.cpp; the file layout is
// io/gguf_writer.h.
//
// Model (export_gguf): a Hugging Face folder (LlamaForCausalLM, MistralForCausalLM ->
// general.architecture `llama`; Qwen2ForCausalLM -> `qwen2`), optionally with a PEFT adapter
// merged in f32 first (W + scale * B A, the same arithmetic as io/peft.h's merge), written as:
//   general.architecture, general.type "model", general.name, general.file_type (llama_ftype),
//   general.quantization_version 2 (when any tensor is block-quantised);
//   {arch}.context_length, embedding_length, block_count, feed_forward_length,
//   attention.head_count, attention.head_count_kv, attention.key_length, attention.value_length,
//   attention.layer_norm_rms_epsilon, rope.freq_base, rope.dimension_count, vocab_size,
//   rope.scaling.type "linear" + rope.scaling.factor (linear scaling), or for llama3 scaling
//   the F32 tensor rope_freqs.weight (HD/2 frequency divisors, as the converter makes);
//   the tokenizer (see gguf_add_tokenizer);
//   tensors under llama.cpp's names (models/gguf_model.h's table), the rows of Q and K (and of
//   their biases) permuted for `llama` as the converter does (rotate-half -> interleaved RoPE;
//   `qwen2` is not permuted).
// Tensor types for a requested type T (gguf_export_tensor_type):
//   norms, biases, rope_freqs (1-D): F32 always (as the converter and llama-quantize).
//   f32 / f16 / bf16 / q8_0: every matrix in T, token_embd and output included (as
//     convert_hf_to_gguf.py --outtype).
//   q4_0 / q4_k / q6_k: matrices in T; the output matrix (token_embd when the head is tied,
//     since it then serves as the output) in Q6_K, as llama-quantize does for these types
//     (its "output.weight -> Q6_K" rule). token_embd of an untied model stays in T.
//   A matrix whose rows are not whole blocks of T (cols % 32 for Q8_0/Q4_0, % 256 for the K
//     types): the K types fall back to Q8_0 (llama-quantize uses Q5_0 for Q4_K and Q8_0 for
//     Q6_K; tuner has no Q5_0 quantiser, so Q8_0, one step more precise), and Q8_0/Q4_0 (or a
//     K type whose rows are not even 32-wide) to F16, as the converter falls back to F16.
//   general.file_type: f32 0, f16 1, q4_0 2, q8_0 7, q4_k 14 (MOSTLY_Q4_K_S: llama-quantize's
//     Q4_K_S also puts a few attn_v/ffn_down tensors in Q5_K; ours keeps them in Q4_K), q6_k 18,
//     bf16 32.
// Tensors are converted and written a block of rows at a time (adapted weights whole, to
// merge them exactly as `tuner merge`): memory stays at one tensor, never the model.
//
// LoRA adapter (export_gguf_lora): llama.cpp's adapter GGUF (convert_lora_to_gguf.py, loaded
// by llama-adapter.cpp): general.type "adapter", general.architecture of the base,
// adapter.type "lora", adapter.lora.alpha (f32), and per adapted linear two F32 tensors
// "<base GGUF name>.lora_a" = PEFT's lora_A (r, in), ggml ne {in, r}, and ".lora_b" = lora_B
// (out, r), ne {r, out} (llama.cpp checks a.ne[0] == W.ne[0], b.ne[1] == W.ne[1], a.ne[1] ==
// b.ne[0]). For `llama` the rows of lora_b of q_proj/k_proj get the same permutation as the
// base Q/K rows (B A is then permuted like W). llama.cpp scales by alpha / r; an rsLoRA adapter
// (PEFT scale alpha / sqrt(r)) is written with alpha * sqrt(r) so the scale stays the same.
//
// Back to Hugging Face (export_hf_from_gguf): config.json, model.safetensors (f32/bf16/f16,
// Q/K rows un-permuted, quantised tensors dequantised) and, when the GGUF has a tokenizer,
// tokenizer.json + tokenizer_config.json (write_hf_tokenizer_from_gguf).
//
//   GgufExportOptions o;  o.type = DType::Q8_0;  o.adapter_dir = "runs/x/adapter";
//   GgufExportReport r = export_gguf("models/smol", "smol-q8_0.gguf", o);
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "io/hf_config.h"
#include "models/llama_tensors.h"

namespace tuner {

class Gguf;
class GgufWriter;

struct GgufExportOptions {
    DType type = DType::F16;   // F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K
    std::string adapter_dir;   // PEFT adapter merged in f32 before export ("" = none)
    std::string name;          // general.name ("" = the model folder's name)
};

struct GgufExportReport {
    std::string arch;                     // "llama" / "qwen2"
    int64_t tensors = 0;
    uint64_t file_bytes = 0;
    std::map<std::string, int> types;     // ggml type name ("Q8_0") -> tensor count
    std::string tokenizer;                // what gguf_add_tokenizer wrote, or why nothing
    std::vector<std::string> notes;       // fallbacks and warnings, one line each
};

// "f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q6_k" (any case) -> DType; false otherwise.
bool gguf_export_type_from_name(const std::string& name, DType* out);
// llama_ftype of a requested type (see the top).
uint32_t gguf_file_type(DType requested);

// The GGUF type of one tensor of `config` for the requested type, by the rules at the top.
DType gguf_export_tensor_type(const TensorSpec& spec, const ModelConfig& config, DType requested);

// llama.cpp's Q/K row order: output row h*HD + 2j + i = input row h*HD + i*HD/2 + j (HD =
// rows / n_head, i in {0, 1}, j < HD/2), the inverse of gguf_unpermute_rows. row_bytes is the
// size of one row in its storage type.
void gguf_permute_rows(const uint8_t* src, uint8_t* dst, int64_t rows, size_t row_bytes, int64_t n_head);

GgufExportReport export_gguf(const std::string& model_dir, const std::string& out_path,
                             const GgufExportOptions& options);

struct GgufLoraExportReport {
    std::string arch;
    int64_t r = 0;
    float alpha = 0;   // as written (alpha * sqrt(r) for rsLoRA)
    int64_t pairs = 0; // adapted linears
    uint64_t file_bytes = 0;
};
// base_dir: the base model's HF folder (config.json is enough) or its .gguf file; "" = the
// adapter's base_model_name_or_path when that is a local folder with a config.json or a .gguf.
GgufLoraExportReport export_gguf_lora(const std::string& adapter_dir, const std::string& base_dir,
                                      const std::string& out_path);

struct HfExportReport {
    DType dtype = DType::F32;  // of the weights written
    bool tokenizer_written = false;
    std::string tokenizer;  // what was written, or why not
};
// dtype: F32, BF16 or F16; none: the GGUF's own precision (general.file_type: ALL_F32 -> F32,
// MOSTLY_BF16 -> BF16, anything else -> F16; without the key, the matrices' float type, else
// F16). Every tensor is written in that dtype, norms too, as Hugging Face checkpoints store them.
// OUT_DIR must not exist (or be empty); it is written into a temporary sibling folder renamed at
// the end, so a failure leaves nothing.
HfExportReport export_hf_from_gguf(const std::string& gguf_path, const std::string& out_dir,
                                   std::optional<DType> dtype = std::nullopt);

// ---- tokenizer (gguf_export_tokenizer.cpp) -----------------------------------------------------
// Adds a tokenizer's metadata from a Hugging Face folder (tokenizer.json, else a SentencePiece
// tokenizer.model; tokenizer_config.json; chat_template.jinja), the keys llama.cpp reads:
//   tokenizer.ggml.model: `gpt2` for byte-level BPE (tokens as the vocabulary spells them,
//     "a b" merges, token_type) with tokenizer.ggml.pre from the pre-tokenizer (Llama 3's regex
//     -> llama-bpe, Qwen2's -> qwen2, GPT-2's byte-level regex -> gpt-2, digits split one by
//     one + GPT-2's -> starcoder, anything else -> default, with a note); `llama` for
//     SentencePiece-style BPE (tokens, scores, token_type, add_space_prefix). From a
//     tokenizer.json the scores are made from the merge order (a piece produced by an earlier
//     merge scores higher; other pieces lower still, in id order), which both llama.cpp's
//     SentencePiece tokenizer and a SentencePieceExtractor-style merge derivation turn back into
//     the same merges; from a tokenizer.model they are the model's own.
//   token types: 1 normal, 2 unknown, 3 control (special added tokens, BOS/EOS/UNK/PAD, and
//     added tokens that look special: <|...|>, <pad>, <mask>, as the converter), 4 user-defined
//     (other added tokens), 5 unused ("[PAD<id>]" filling ids up to config.vocab_size), 6 byte
//     (<0xXX> with byte fallback).
//   tokenizer.ggml.bos_token_id / eos_token_id (the tokenizer's, else config.json's),
//     unknown_token_id, padding_token_id (tokenizer_config.json pad_token, else config.json
//     pad_token_id), add_bos_token / add_eos_token (what add_special_tokens adds),
//     tokenizer.chat_template (tokenizer_config.json's, a named list's "default", or
//     chat_template.jinja).
// A folder without tokenizer files gets tokenizer.ggml.model "none" (llama.cpp's vocabulary-
// less models), config.json's BOS/EOS ids and {arch}.vocab_size only. Returns a one-line description ("gpt2 (pre
// llama-bpe), 128256 tokens, 280147 merges"); notes get warnings.
std::string gguf_add_tokenizer(GgufWriter& w, const std::string& dir, const ModelConfig& config,
                               std::vector<std::string>* notes);

// Writes DIR/tokenizer.json and DIR/tokenizer_config.json describing the tokenizer in a GGUF's
// metadata (`llama` and `gpt2` models), as Hugging Face's LlamaTokenizerFast / a byte-level BPE
// tokenizer.json would: `llama`: Prepend("▁") (when add_space_prefix) + Replace normalizer,
// byte-fallback BPE with merges derived from the scores (every split of a normal piece into
// two pieces, ordered by the piece's score, then by the halves' lengths); `gpt2`: the merges,
// and the pre-tokenizer of tokenizer.ggml.pre for llama-bpe/llama3, qwen2, gpt-2 (and default),
// starcoder/smollm/refact; other pre types get GPT-2's and a note (pre-tokenization then
// differs from llama.cpp's for some texts). Returns false (with *note saying why) when the
// GGUF has no tokenizer or one of another model type; nothing is written then.
bool write_hf_tokenizer_from_gguf(const Gguf& g, const std::string& dir, std::string* note);

}  // namespace tuner
