// WordPiece (BERT) tokenizer (internal): what Hugging Face tokenizers builds for BERT-style
// tokenizer.json files -- BertNormalizer, BertPreTokenizer, the WordPiece model -- over a
// vocabulary spelled the way llama.cpp's GGUF converter spells it (tokenizer.ggml.model "bert"):
//
//   word-initial piece   "the"   -> "▁the"  (U+2581 prefix)
//   continuation piece   "##ing" -> "ing"   (no "##")
//   bracketed token      "[CLS]" -> "[CLS]" (kept as it is, as are "[unused0]" and the like)
//
// Encoding, as tokenizers does it with add_special_tokens=false:
//  1. special tokens (`special` ids, e.g. [CLS], [SEP], [MASK]) are matched in the raw text,
//     leftmost-longest, and become their ids;
//  2. each remaining stretch is normalized (BertNormalizer): NUL, U+FFFD and control/format
//     characters (Cc, Cf, Cs, Co, Cn but not \t \n \r) removed, whitespace turned into spaces, CJK
//     ideographs surrounded by spaces; when `lowercase`, NFD + removal of nonspacing marks (Mn)
//     and then lowercasing (BERT uncased: "Äpfel" -> "apfel");
//  3. pre-tokenized (BertPreTokenizer): split at whitespace (dropped) and around every
//     punctuation character (Unicode P* and ASCII punctuation, each its own word);
//  4. each word through WordPiece: greedy longest-match-first from the left, the first piece
//     word-initial and the rest continuations; a word with a position no piece matches, or one
//     longer than max_input_chars_per_word characters, becomes the single unknown id.
// add_special_tokens puts `prefix` / `suffix` around the ids (BERT: [CLS] ... [SEP]).
//
// Decoding: a word-initial piece starts a new word (a space before it unless it is the first
// output), a continuation piece is glued to the previous one, special tokens are words of their
// own ("[CLS] hello world [SEP]"); no further clean-up of spaces before punctuation.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace tuner {

struct WordPieceVocab {
    std::string where;                // for messages and describe(): the file
    std::vector<std::string> pieces;  // by id, in the GGUF spelling above
    std::vector<uint8_t> special;     // by id: matched in the text first, skipped by skip_special
    int32_t unk_id = -1;              // required
    int32_t bos_id = -1, eos_id = -1;  // what bos_id() / eos_id() report (BERT: [CLS], [SEP])
    std::vector<int32_t> prefix, suffix;  // what add_special_tokens adds
    bool lowercase = true;            // BERT uncased: lowercase and strip accents
    size_t max_input_chars_per_word = 100;  // tokenizers' default
};

// Checks ids (unknown, BOS/EOS, prefix/suffix in range); errors start with "[tokenizer] WHERE:".
std::unique_ptr<Tokenizer> make_wordpiece_tokenizer(WordPieceVocab vocab);

}  // namespace tuner
