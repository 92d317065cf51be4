#include "tokenizer/bpe_model.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <unordered_set>

#include "core/error.h"
#include "tokenizer/utf8.h"
#include "tokenizer/word_cache.h"

namespace tuner {

namespace {

constexpr uint64_t kEmptyKey = ~uint64_t(0);

inline uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

inline uint64_t pair_key(uint32_t a, uint32_t b) { return uint64_t(a) << 32 | b; }

size_t table_size_for(size_t n) {
    size_t cap = 16;
    while (cap < n * 2 + 1) cap <<= 1;
    return cap;
}

// Words up to this many bytes are cached (tokenizers uses the same bound).
constexpr size_t kMaxCachedWord = 256;


// Scratch buffers reused across calls on one thread.
struct MergeScratch {
    std::vector<int32_t> ids, prev, next;
    std::vector<uint8_t> alive;
    struct Entry {
        uint32_t rank, pos;
        int32_t new_id;
    };
    std::vector<Entry> heap;
};
thread_local MergeScratch t_scratch;


}  // namespace

WordCache& thread_word_cache(uint64_t uid) {
    thread_local ThreadCaches caches;
    return caches.get(uid);
}

uint64_t new_word_cache_owner() {
    static std::atomic<uint64_t> next{1};
    return next.fetch_add(1);
}

uint64_t word_hash(std::string_view s) { return StringViewHash()(s); }

size_t StringViewHash::operator()(std::string_view s) const noexcept {
    // FNV-1a over 8-byte words, then a final mix: fast for the short keys tokenizers look up.
    uint64_t h = 0xcbf29ce484222325ull ^ s.size();
    size_t i = 0;
    for (; i + 8 <= s.size(); i += 8) {
        uint64_t w;
        std::memcpy(&w, s.data() + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    uint64_t w = 0;
    std::memcpy(&w, s.data() + i, s.size() - i);
    h = (h ^ w) * 0x100000001b3ull;
    return size_t(mix64(h));
}

void PieceIndex::build(const PieceMap& map) {
    size_t cap = table_size_for(map.size());
    slots_.assign(cap, Slot{});
    mask_ = cap - 1;
    pool_.clear();
    for (const auto& [piece, id] : map) {
        uint64_t h = StringViewHash()(piece);
        size_t i = h & mask_;
        while (slots_[i].id >= 0) i = (i + 1) & mask_;
        slots_[i] = Slot{h, uint32_t(pool_.size()), uint32_t(piece.size()), id};
        pool_ += piece;
    }
}

int32_t PieceIndex::find(std::string_view piece) const {
    if (slots_.empty()) return -1;
    uint64_t h = StringViewHash()(piece);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
        const Slot& s = slots_[i];
        if (s.id < 0) return -1;
        if (s.hash == h && s.len == piece.size() && std::memcmp(pool_.data() + s.off, piece.data(), piece.size()) == 0)
            return s.id;
    }
}

BpeModel::BpeModel(PieceMap vocab, const std::vector<std::pair<std::string, std::string>>& merges, BpeOptions options,
                   const std::string& where)
    : vocab_(std::move(vocab)), opt_(std::move(options)), uid_(new_word_cache_owner()) {
    if (vocab_.size() >= (size_t(1) << 31)) fail("[tokenizer] {}: vocabulary too large", where);
    index_.build(vocab_);
    if (opt_.unk_token) unk_id_ = token_to_id(*opt_.unk_token);  // not in the vocabulary: chars are dropped
    for (int b = 0; b < 256; b++) {
        char name[8];
        std::snprintf(name, sizeof(name), "<0x%02X>", b);
        byte_ids_[b] = opt_.byte_fallback ? token_to_id(name) : -1;
    }
    small_char_ids_.assign(2048, -1);
    for (char32_t c = 0; c < 2048; c++) small_char_ids_[c] = token_to_id(utf8::encode(c));

    // Merges: (a, b) -> a + b without the continuing prefix of b. A pair listed twice keeps its
    // last rank, as tokenizers' HashMap does.
    size_t prefix_len = opt_.continuing_subword_prefix.size();
    size_t cap = table_size_for(merges.size());
    merge_keys_.assign(cap, kEmptyKey);
    merge_values_.assign(cap, MergeValue{0, -1});
    merge_mask_ = cap - 1;
    bool merges_touch_isolated = false;
    std::unordered_set<int32_t> isolated_ids;  // unknown and byte-fallback tokens
    if (unk_id_ >= 0) isolated_ids.insert(unk_id_);
    for (int32_t id : byte_ids_)
        if (id >= 0) isolated_ids.insert(id);
    std::vector<uint64_t> char_pairs;
    char_pairs.reserve(merges.size());
    for (size_t rank = 0; rank < merges.size(); rank++) {
        const auto& [a, b] = merges[rank];
        int32_t ia = token_to_id(a), ib = token_to_id(b);
        if (ia < 0) fail("[tokenizer] {}: merge {} ('{} {}') uses '{}', which is not in the vocabulary", where, rank, a, b, a);
        if (ib < 0) fail("[tokenizer] {}: merge {} ('{} {}') uses '{}', which is not in the vocabulary", where, rank, a, b, b);
        std::string merged = a;
        if (prefix_len && b.size() >= prefix_len && b.compare(0, prefix_len, opt_.continuing_subword_prefix) == 0)
            merged.append(b, prefix_len, std::string::npos);
        else
            merged += b;
        int32_t im = token_to_id(merged);
        if (im < 0)
            fail("[tokenizer] {}: merge {} ('{} {}') makes '{}', which is not in the vocabulary", where, rank, a, b, merged);
        uint64_t key = pair_key(uint32_t(ia), uint32_t(ib));
        uint64_t slot = mix64(key) & merge_mask_;
        while (merge_keys_[slot] != kEmptyKey && merge_keys_[slot] != key) slot = (slot + 1) & merge_mask_;
        if (merge_keys_[slot] == kEmptyKey) merge_count_++;
        merge_keys_[slot] = key;
        merge_values_[slot] = MergeValue{uint32_t(rank), im};

        if (isolated_ids.count(ia) || isolated_ids.count(ib)) merges_touch_isolated = true;
        if (!a.empty() && !b.empty()) {
            size_t la = a.size() - 1;
            while (la > 0 && (uint8_t(a[la]) & 0xC0) == 0x80) la--;
            size_t na = utf8::valid_sequence_length(a, la), nb = utf8::valid_sequence_length(b, 0);
            if (na && nb) char_pairs.push_back(pair_key(utf8::decode_at(a, la, na), utf8::decode_at(b, 0, nb)));
        }
    }

    // Chunking is exact only when every symbol is one character of the word.
    chunking_ = !merges_touch_isolated && opt_.continuing_subword_prefix.empty() && opt_.end_of_word_suffix.empty();
    if (chunking_) {
        size_t pcap = table_size_for(char_pairs.size());
        pair_keys_.assign(pcap, kEmptyKey);
        pair_mask_ = pcap - 1;
        for (uint64_t key : char_pairs) {
            uint64_t slot = mix64(key) & pair_mask_;
            while (pair_keys_[slot] != kEmptyKey && pair_keys_[slot] != key) slot = (slot + 1) & pair_mask_;
            pair_keys_[slot] = key;
        }
    }
}

int32_t BpeModel::token_to_id(std::string_view piece) const { return index_.find(piece); }

const BpeModel::MergeValue* BpeModel::find_merge(int32_t a, int32_t b) const {
    uint64_t key = pair_key(uint32_t(a), uint32_t(b));
    uint64_t slot = mix64(key) & merge_mask_;
    while (true) {
        uint64_t k = merge_keys_[slot];
        if (k == key) return &merge_values_[slot];
        if (k == kEmptyKey) return nullptr;
        slot = (slot + 1) & merge_mask_;
    }
}

bool BpeModel::pair_may_merge(char32_t a, char32_t b) const {
    uint64_t key = pair_key(a, b);
    uint64_t slot = mix64(key) & pair_mask_;
    while (true) {
        uint64_t k = pair_keys_[slot];
        if (k == key) return true;
        if (k == kEmptyKey) return false;
        slot = (slot + 1) & pair_mask_;
    }
}

int32_t BpeModel::char_id(std::string_view ch, char32_t c) const {
    if (c < 2048) return small_char_ids_[c];
    return token_to_id(ch);
}

void BpeModel::initial_symbols(std::string_view word, std::vector<Symbol>& syms) const {
    syms.clear();
    bool plain = opt_.continuing_subword_prefix.empty() && opt_.end_of_word_suffix.empty();
    std::string tmp;
    // A pending (possibly fused) unknown symbol.
    bool have_unk = false;
    Symbol unk{};
    size_t i = 0;
    while (i < word.size()) {
        size_t len = utf8::valid_sequence_length(word, i);
        if (len == 0) len = 1;  // cannot happen on valid input; keeps going on bad input
        char32_t c = utf8::decode_at(word, i, len);
        std::string_view ch = word.substr(i, len);
        int32_t id;
        if (plain) {
            id = char_id(ch, c);
        } else {
            tmp.clear();
            if (i > 0) tmp += opt_.continuing_subword_prefix;
            tmp += ch;
            if (i + len == word.size()) tmp += opt_.end_of_word_suffix;
            id = token_to_id(tmp);
        }
        uint32_t b = uint32_t(i), e = uint32_t(i + len);
        if (id >= 0) {
            if (have_unk) {
                syms.push_back(unk);
                have_unk = false;
            }
            syms.push_back(Symbol{id, b, e, c, c, false});
        } else {
            bool done = false;
            if (opt_.byte_fallback) {
                // All bytes of the (prefixed) piece must have a <0xNN> token, else unknown.
                std::string_view bytes = plain ? ch : std::string_view(tmp);
                bool all = true;
                for (char x : bytes) all = all && byte_ids_[uint8_t(x)] >= 0;
                if (all) {
                    if (have_unk) {
                        syms.push_back(unk);
                        have_unk = false;
                    }
                    for (char x : bytes) syms.push_back(Symbol{byte_ids_[uint8_t(x)], b, e, c, c, true});
                    done = true;
                }
            }
            if (!done && unk_id_ >= 0) {
                if (have_unk && opt_.fuse_unk) {
                    unk.end = e;
                    unk.last = c;
                } else {
                    if (have_unk) syms.push_back(unk);
                    unk = Symbol{unk_id_, b, e, c, c, true};
                    have_unk = true;
                }
            }
            // Neither byte fallback nor an unknown token: the character is dropped (tokenizers too).
        }
        i += len;
    }
    if (have_unk) syms.push_back(unk);
}

void BpeModel::merge_symbols(const Symbol* syms, size_t n, std::vector<int32_t>& out) const {
    if (n == 1) {
        out.push_back(syms[0].id);
        return;
    }
    MergeScratch& s = t_scratch;
    s.ids.resize(n);
    s.prev.resize(n);
    s.next.resize(n);
    s.alive.assign(n, 1);
    s.heap.clear();
    for (size_t i = 0; i < n; i++) {
        s.ids[i] = syms[i].id;
        s.prev[i] = int32_t(i) - 1;
        s.next[i] = i + 1 < n ? int32_t(i + 1) : -1;
    }
    // Min-heap on (rank, pos): the lowest rank first, the leftmost on ties.
    auto later = [](const MergeScratch::Entry& x, const MergeScratch::Entry& y) {
        return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos;
    };
    auto push = [&](uint32_t pos, const MergeValue* m) {
        s.heap.push_back({m->rank, pos, m->new_id});
        std::push_heap(s.heap.begin(), s.heap.end(), later);
    };
    for (size_t i = 0; i + 1 < n; i++)
        if (const MergeValue* m = find_merge(s.ids[i], s.ids[i + 1])) s.heap.push_back({m->rank, uint32_t(i), m->new_id});
    std::make_heap(s.heap.begin(), s.heap.end(), later);
    while (!s.heap.empty()) {
        std::pop_heap(s.heap.begin(), s.heap.end(), later);
        MergeScratch::Entry top = s.heap.back();
        s.heap.pop_back();
        uint32_t pos = top.pos;
        if (!s.alive[pos]) continue;
        int32_t nx = s.next[pos];
        if (nx < 0) continue;
        // Skip entries that went stale when a neighbour merged first.
        const MergeValue* m = find_merge(s.ids[pos], s.ids[size_t(nx)]);
        if (!m || m->new_id != top.new_id) continue;
        s.ids[pos] = top.new_id;
        s.alive[size_t(nx)] = 0;
        int32_t nn = s.next[size_t(nx)];
        s.next[pos] = nn;
        if (nn >= 0) s.prev[size_t(nn)] = int32_t(pos);
        int32_t pv = s.prev[pos];
        if (pv >= 0)
            if (const MergeValue* mp = find_merge(s.ids[size_t(pv)], s.ids[pos])) push(uint32_t(pv), mp);
        if (nn >= 0)
            if (const MergeValue* mn = find_merge(s.ids[pos], s.ids[size_t(nn)])) push(pos, mn);
    }
    for (int32_t i = 0; i >= 0; i = s.next[size_t(i)]) out.push_back(s.ids[size_t(i)]);
}

void BpeModel::encode_chunk(std::string_view key, const Symbol* syms, size_t n, std::vector<int32_t>& out) const {
    if (n == 1) {
        out.push_back(syms[0].id);
        return;
    }
    if (key.size() > kMaxCachedWord) {
        merge_symbols(syms, n, out);
        return;
    }
    WordCache& cache = thread_word_cache(uid_);
    uint64_t h = StringViewHash()(key);
    size_t cn;
    if (const int32_t* hit = cache.find(key, h, &cn)) {
        out.insert(out.end(), hit, hit + cn);
        return;
    }
    size_t start = out.size();
    merge_symbols(syms, n, out);
    cache.insert(key, h, out.data() + start, out.size() - start);
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
    if (word.empty()) return;
    if (opt_.ignore_merges) {
        int32_t id = token_to_id(word);
        if (id >= 0) {
            out.push_back(id);
            return;
        }
    }
    // Short words: look the whole word up before splitting it into characters.
    if (word.size() <= kMaxCachedWord) {
        size_t cn;
        if (const int32_t* hit = thread_word_cache(uid_).find(word, StringViewHash()(word), &cn)) {
            out.insert(out.end(), hit, hit + cn);
            return;
        }
    }
    thread_local std::vector<Symbol> syms;
    initial_symbols(word, syms);
    if (syms.empty()) return;
    if (!chunking_ || word.size() <= 32) {
        encode_chunk(word, syms.data(), syms.size(), out);
        return;
    }
    size_t begin = 0;
    for (size_t i = 1; i <= syms.size(); i++) {
        bool cut = i == syms.size() || syms[i - 1].isolated || syms[i].isolated ||
                   !pair_may_merge(syms[i - 1].last, syms[i].first);
        if (!cut) continue;
        // Chunking implies one symbol per character, so the chunk's bytes determine its symbols.
        std::string_view key = word.substr(syms[begin].begin, syms[i - 1].end - syms[begin].begin);
        encode_chunk(key, syms.data() + begin, i - begin, out);
        begin = i;
    }
}

}  // namespace tuner
