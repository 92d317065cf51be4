// A per-thread cache of tokenized words (internal), shared by the BPE model and the
// SentencePiece wrapper: an open-addressing table whose keys and values live in two flat arrays,
// cleared wholesale when full (no per-entry allocation, no node chasing). Each tokenizer owns
// the entries tagged with its uid; a thread keeps a few caches so that alternating between two
// tokenizers does not thrash.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace tuner {

class WordCache {
  public:
    uint64_t owner = 0;  // the BpeModel uid this cache belongs to

    // Ids of `key`, or nullptr; *n gets their count.
    const int32_t* find(std::string_view key, uint64_t hash, size_t* n) const {
        if (slots_.empty()) return nullptr;
        for (size_t i = hash & mask_;; i = (i + 1) & mask_) {
            const Slot& s = slots_[i];
            if (s.key_len == kFree) return nullptr;
            if (s.hash == hash && s.key_len == key.size() && std::memcmp(keys_.data() + s.key_off, key.data(), key.size()) == 0) {
                *n = s.ids_len;
                return ids_.data() + s.ids_off;
            }
        }
    }
    void insert(std::string_view key, uint64_t hash, const int32_t* ids, size_t n) {
        if (slots_.empty() || keys_.size() > (8u << 20)) reset();
        if (used_ * 2 >= slots_.size()) {
            if (slots_.size() >= kMaxSlots) {
                reset();
            } else {
                grow();
            }
        }
        size_t i = hash & mask_;
        while (slots_[i].key_len != kFree) i = (i + 1) & mask_;
        slots_[i] = Slot{hash, uint32_t(keys_.size()), uint32_t(key.size()), uint32_t(ids_.size()), uint32_t(n)};
        keys_.append(key);
        ids_.insert(ids_.end(), ids, ids + n);
        used_++;
    }
    void reset() {
        slots_.assign(size_t(1) << 12, Slot{});
        mask_ = slots_.size() - 1;
        keys_.clear();
        ids_.clear();
        used_ = 0;
    }

  private:
    static constexpr uint32_t kFree = ~uint32_t(0);
    static constexpr size_t kMaxSlots = size_t(1) << 17;
    void grow() {
        std::vector<Slot> old = std::move(slots_);
        slots_.assign(old.size() * 2, Slot{});
        mask_ = slots_.size() - 1;
        for (const Slot& s : old) {
            if (s.key_len == kFree) continue;
            size_t i = s.hash & mask_;
            while (slots_[i].key_len != kFree) i = (i + 1) & mask_;
            slots_[i] = s;
        }
    }
    struct Slot {
        uint64_t hash = 0;
        uint32_t key_off = 0, key_len = kFree, ids_off = 0, ids_len = 0;
    };
    std::vector<Slot> slots_;
    size_t mask_ = 0, used_ = 0;
    std::string keys_;
    std::vector<int32_t> ids_;
};
// A few slots so that a thread alternating between two tokenizers does not thrash; each slot
// belongs to one model (by uid, never reused).
struct ThreadCaches {
    WordCache slots[4];
    unsigned next = 0;
    WordCache& get(uint64_t uid) {
        for (auto& s : slots)
            if (s.owner == uid) return s;
        WordCache& s = slots[next++ % 4];
        s.owner = uid;
        s.reset();
        return s;
    }
};

// The calling thread's cache for the tokenizer with this uid.
WordCache& thread_word_cache(uint64_t uid);
// A fresh uid (never reused, so a new tokenizer at an old address finds no stale entries).
uint64_t new_word_cache_owner();
// Hash used for the keys (the same as StringViewHash).
uint64_t word_hash(std::string_view s);

}  // namespace tuner
