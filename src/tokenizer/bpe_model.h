// The BPE model of Hugging Face tokenizers (internal): vocabulary, ranked merges, unknown token,
// byte fallback, ignore_merges and continuing_subword_prefix / end_of_word_suffix.
//
// encode_word applies the merges exactly as tokenizers' Word::merge_all does: repeatedly the
// adjacent pair with the lowest merge rank, the leftmost one on ties, with a binary heap. Two
// things make it fast without changing any result:
//  * a per-thread cache of merged words (a word is cut into chunks first, see below), and
//  * chunking: when no merge involves a byte-fallback or unknown token, a merge can only join
//    two symbols whose boundary characters (last char of the left, first char of the right)
//    appear as such a pair in some merge. Words are cut wherever the pair of adjacent characters
//    appears in no merge, and the chunks are merged independently. SentencePiece-style
//    tokenizers without a pre-tokenizer hand the model whole lines; this cuts them into words.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tuner {

// Hash for heterogeneous lookup of std::string keys by std::string_view.
struct StringViewHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept;
};
using PieceMap = std::unordered_map<std::string, int32_t, StringViewHash, std::equal_to<>>;

// A read-only open-addressing index from pieces to ids: one probe sequence over a flat array,
// the hot lookup of encoding (whole words with ignore_merges, characters, merged pieces).
class PieceIndex {
  public:
    void build(const PieceMap& map);
    int32_t find(std::string_view piece) const;

  private:
    struct Slot {
        uint64_t hash = 0;
        uint32_t off = 0, len = 0;
        int32_t id = -1;  // -1: free
    };
    std::vector<Slot> slots_;
    std::string pool_;
    uint64_t mask_ = 0;
};

struct BpeOptions {
    std::optional<std::string> unk_token;
    std::string continuing_subword_prefix, end_of_word_suffix;
    bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
};

class BpeModel {
  public:
    // vocab maps pieces to ids; merges are pairs of pieces, rank = position. where: for messages.
    BpeModel(PieceMap vocab, const std::vector<std::pair<std::string, std::string>>& merges, BpeOptions options,
             const std::string& where);

    // Appends the ids of one pre-tokenized word (valid UTF-8).
    void encode_word(std::string_view word, std::vector<int32_t>& out) const;

    int32_t token_to_id(std::string_view piece) const;  // -1 if absent
    const PieceMap& vocab() const { return vocab_; }
    int32_t unk_id() const { return unk_id_; }
    int32_t byte_token(uint8_t b) const { return byte_ids_[b]; }  // <0xNN>, -1 if absent
    bool byte_fallback() const { return opt_.byte_fallback; }
    size_t num_merges() const { return merge_count_; }

  private:
    struct Symbol {
        int32_t id;
        uint32_t begin, end;         // bytes of the word
        char32_t first, last;        // first and last character (for chunking)
        bool isolated;               // byte-fallback or unknown symbol: never merged
    };
    struct MergeValue {
        uint32_t rank;
        int32_t new_id;
    };

    void initial_symbols(std::string_view word, std::vector<Symbol>& syms) const;
    void merge_symbols(const Symbol* syms, size_t n, std::vector<int32_t>& out) const;
    void encode_chunk(std::string_view key, const Symbol* syms, size_t n, std::vector<int32_t>& out) const;
    const MergeValue* find_merge(int32_t a, int32_t b) const;
    bool pair_may_merge(char32_t a, char32_t b) const;
    int32_t char_id(std::string_view ch, char32_t c) const;

    PieceMap vocab_;
    PieceIndex index_;
    BpeOptions opt_;
    int32_t unk_id_ = -1;
    int32_t byte_ids_[256];
    std::vector<int32_t> small_char_ids_;  // id of the piece for code points < 2048 (-1 absent)

    // Open-addressing table (left id, right id) -> (rank, new id).
    std::vector<uint64_t> merge_keys_;
    std::vector<MergeValue> merge_values_;
    uint64_t merge_mask_ = 0;
    size_t merge_count_ = 0;

    // Character pairs (last of left, first of right) over all merges, when chunking is safe.
    bool chunking_ = false;
    std::vector<uint64_t> pair_keys_;
    uint64_t pair_mask_ = 0;

    uint64_t uid_;  // identifies this model's entries in the per-thread caches
};

}  // namespace tuner
