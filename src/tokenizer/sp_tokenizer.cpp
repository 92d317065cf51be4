// SentencePiece tokenizer.model through Debian's libsentencepiece.
//
// Encoding: control and unknown pieces written in the text (<s>, </s>, <unk>) are matched first,
// as transformers' LlamaTokenizer does with its special tokens; each stretch of text between them
// goes to SentencePieceProcessor::Encode (so each gets the dummy-prefix "▁", the legacy
// behaviour). add_special_tokens prepends BOS as Llama's tokenizer does (add_bos_token, default
// true; add_eos_token, default false; both from tokenizer_config.json when it is there).
//
// Speed: SentencePiece runs its BPE over the whole text at once (under 1 MB/s on long texts).
// When the model is one where that cannot matter -- it adds the dummy prefix, keeps spaces as
// they are ("▁" for each), normalizes nothing else, and no piece has "▁" right after another
// character -- each word with its leading space encodes the same on its own (no piece can span
// the boundary in front of it, and BPE's choices inside one stretch never depend on another).
// The text is then encoded word by word through a per-thread cache; the probes in the
// constructor check those conditions against the library itself, and the tests compare with
// the library's EncodeAsIds on whole texts.
//
// Decoding mirrors SentencePieceProcessor::DecodeIds piece by piece (so that it can stream):
// "▁" becomes a space, the first piece that is not a control piece loses its leading "▁", byte
// pieces <0xNN> contribute their byte. Control and unknown pieces are special: dropped with
// skip_special (DecodeIds shows <unk> as " ⁇ "), else shown as their piece text ("<s>", "<unk>")
// as transformers shows them, and then the piece after "<s>" keeps its space: "<s> Hello".
#include <sentencepiece_processor.h>

#include <algorithm>

#include "core/error.h"
#include "tokenizer/internal.h"
#include "tokenizer/utf8.h"
#include "tokenizer/word_cache.h"

#include <unordered_set>

namespace tuner {

namespace {

const char* const kSpace = "\xE2\x96\x81";  // ▁

class SpTokenizer final : public Tokenizer {
  public:
    SpTokenizer(const std::string& path, const TokenizerConfig& config);

    std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override;
    void decode_append(DecodeState& state, int32_t id, bool skip_special, std::string& bytes) const override;
    int64_t vocab_size() const override { return int64_t(pieces_.size()); }
    std::string id_to_piece(int32_t id) const override {
        return id >= 0 && size_t(id) < pieces_.size() ? pieces_[size_t(id)] : std::string();
    }
    int32_t piece_to_id(std::string_view piece) const override {
        int id = sp_.PieceToId(piece);
        return id >= 0 && size_t(id) < pieces_.size() && pieces_[size_t(id)] == piece ? id : -1;
    }
    bool is_special(int32_t id) const override {
        return id >= 0 && size_t(id) < kind_.size() && (kind_[size_t(id)] == kControl || kind_[size_t(id)] == kUnknown);
    }
    std::string describe() const override {
        return fmt::format("{} (SentencePiece, {} pieces)", path_, pieces_.size());
    }

  private:
    enum Kind : uint8_t { kNormal, kControl, kUnknown, kByte };
    void encode_text(std::string_view text, std::vector<int32_t>& ids) const;
    void encode_library(std::string_view text, std::vector<int32_t>& ids) const;
    void encode_word_cached(std::string_view word, std::vector<int32_t>& ids) const;
    // The bytes the ids stand for ("▁" kept, byte pieces as their byte).
    std::string pieces_text(const std::vector<int32_t>& ids) const;
    void probe_word_split();

    std::string path_;
    sentencepiece::SentencePieceProcessor sp_;
    std::vector<std::string> pieces_;
    std::vector<uint8_t> kind_, byte_;
    std::vector<int32_t> specials_;  // control and unknown ids, longest piece first
    bool strip_leading_space_ = true;
    bool word_split_ = false;                  // encode word by word (see the top of the file)
    std::unordered_set<char32_t> space_glue_;  // characters some piece has right before "▁"
    uint64_t cache_uid_ = new_word_cache_owner();
};

SpTokenizer::SpTokenizer(const std::string& path, const TokenizerConfig& config) : path_(path) {
    // Load from bytes: libsentencepiece's own file errors are terse.
    std::string bytes = read_file_bytes(path);
    auto status = sp_.LoadFromSerializedProto(bytes);
    if (!status.ok())
        fail("[tokenizer] {}: not a SentencePiece model ({})", path, status.ToString());
    int n = sp_.GetPieceSize();
    if (n <= 0) fail("[tokenizer] {}: the SentencePiece model has no pieces", path);
    pieces_.resize(size_t(n));
    kind_.assign(size_t(n), kNormal);
    byte_.assign(size_t(n), 0);
    for (int i = 0; i < n; i++) {
        pieces_[size_t(i)] = sp_.IdToPiece(i);
        if (sp_.IsControl(i)) {
            kind_[size_t(i)] = kControl;
        } else if (sp_.IsUnknown(i)) {
            kind_[size_t(i)] = kUnknown;
        } else if (sp_.IsByte(i)) {
            const std::string& p = pieces_[size_t(i)];  // <0xNN>
            if (p.size() != 6) fail("[tokenizer] {}: byte piece {} is '{}', expected <0xNN>", path, i, p);
            kind_[size_t(i)] = kByte;
            byte_[size_t(i)] = uint8_t(std::stoi(p.substr(3, 2), nullptr, 16));
        }
        if ((kind_[size_t(i)] == kControl || kind_[size_t(i)] == kUnknown) && !pieces_[size_t(i)].empty())
            specials_.push_back(i);
    }
    std::sort(specials_.begin(), specials_.end(),
              [&](int32_t a, int32_t b) { return pieces_[size_t(a)].size() > pieces_[size_t(b)].size(); });

    // Whether DecodeIds drops the leading "▁" of the first piece (it does when the model adds a
    // dummy prefix; some library versions always do): ask the library once.
    for (int i = 0; i < n; i++) {
        const std::string& p = pieces_[size_t(i)];
        if (kind_[size_t(i)] == kNormal && p.size() > 3 && p.compare(0, 3, kSpace) == 0 &&
            p.find(kSpace, 3) == std::string::npos) {
            strip_leading_space_ = sp_.DecodeIds({i}).compare(0, 1, " ") != 0;
            break;
        }
    }

    probe_word_split();

    bos_id_ = sp_.bos_id();
    eos_id_ = sp_.eos_id();
    if (config.bos_token.present) bos_id_ = config.bos_token.is_null ? -1 : piece_to_id(config.bos_token.content);
    if (config.eos_token.present) eos_id_ = config.eos_token.is_null ? -1 : piece_to_id(config.eos_token.content);
    if (config.add_bos_token.value_or(true) && bos_id_ >= 0) prefix_ids_.push_back(bos_id_);
    if (config.add_eos_token.value_or(false) && eos_id_ >= 0) suffix_ids_.push_back(eos_id_);
    add_bos_ = !prefix_ids_.empty();
    add_eos_ = !suffix_ids_.empty();
}

std::string SpTokenizer::pieces_text(const std::vector<int32_t>& ids) const {
    std::string s;
    for (int32_t id : ids) {
        if (id < 0 || size_t(id) >= pieces_.size()) return "\xFF";  // never equal to a probe
        if (kind_[size_t(id)] == kByte)
            s.push_back(char(byte_[size_t(id)]));
        else
            s += pieces_[size_t(id)];
    }
    return s;
}

void SpTokenizer::probe_word_split() {
    for (size_t i = 0; i < pieces_.size(); i++) {
        if (kind_[i] != kNormal) continue;
        const std::string& p = pieces_[i];
        for (size_t k = p.find(kSpace, 1); k != std::string::npos; k = p.find(kSpace, k + 1)) {
            size_t b = k - 1;
            while (b > 0 && (uint8_t(p[b]) & 0xC0) == 0x80) b--;
            size_t len = utf8::valid_sequence_length(p, b);
            char32_t c = len ? utf8::decode_at(p, b, len) : 0;
            if (c != 0x2581) space_glue_.insert(c);
        }
    }
    // Text that any other normalization (NFKC, whitespace folding, ...) would change.
    const char* probes[] = {"a", "a  b", " a", "a ", "  Hello,  world!\n\n  x\t y ",
                            "\xEF\xAC\x81 \xEF\xBC\xA1\xEF\xBC\xA2 e\xCC\x81 \xE2\x91\xA0 \xE3\x80\x80"};
    for (const char* probe : probes) {
        std::vector<int32_t> ids;
        encode_library(probe, ids);
        std::string expect = kSpace;
        for (const char* q = probe; *q; q++) {
            if (*q == ' ')
                expect += kSpace;
            else
                expect.push_back(*q);
        }
        if (pieces_text(ids) != expect) return;
    }
    word_split_ = true;
}

void SpTokenizer::encode_word_cached(std::string_view word, std::vector<int32_t>& ids) const {
    WordCache& cache = thread_word_cache(cache_uid_);
    uint64_t h = word_hash(word);
    size_t n;
    if (const int32_t* hit = cache.find(word, h, &n)) {
        ids.insert(ids.end(), hit, hit + n);
        return;
    }
    size_t start = ids.size();
    // A word after the first starts with its space, which the dummy prefix stands for.
    encode_library(word[0] == ' ' ? word.substr(1) : word, ids);
    if (word.size() <= 256) cache.insert(word, h, ids.data() + start, ids.size() - start);
}

void SpTokenizer::encode_text(std::string_view text, std::vector<int32_t>& ids) const {
    if (text.empty()) return;
    if (!word_split_) {
        encode_library(text, ids);
        return;
    }
    // Cut in front of a space that follows a non-space character no piece glues to "▁", unless
    // the space is the last byte (a lone " " would encode to nothing on its own).
    size_t start = 0;
    for (size_t i = 1; i + 1 < text.size(); i++) {
        if (text[i] != ' ' || text[i - 1] == ' ') continue;
        if (!space_glue_.empty()) {
            size_t b = i - 1;
            while (b > 0 && (uint8_t(text[b]) & 0xC0) == 0x80) b--;
            size_t len = utf8::valid_sequence_length(text, b);
            if (len && space_glue_.count(utf8::decode_at(text, b, len))) continue;
        }
        if (start == 0)
            encode_library(text.substr(0, i), ids);  // the first word gets the dummy prefix as it is
        else
            encode_word_cached(text.substr(start, i - start), ids);
        start = i;
    }
    if (start == 0)
        encode_library(text, ids);
    else
        encode_word_cached(text.substr(start), ids);
}

void SpTokenizer::encode_library(std::string_view text, std::vector<int32_t>& ids) const {
    if (text.empty()) return;
    std::vector<int> out;
    auto status = sp_.Encode(text, &out);
    if (!status.ok()) fail("[tokenizer] {}: SentencePiece could not encode the text ({})", path_, status.ToString());
    ids.insert(ids.end(), out.begin(), out.end());
}

std::vector<int32_t> SpTokenizer::encode(std::string_view text, bool add_special_tokens) const {
    std::string cleaned;
    if (!utf8::is_valid(text)) {
        cleaned = utf8::sanitize(text);
        text = cleaned;
    }
    std::vector<int32_t> ids;
    if (add_special_tokens) ids.insert(ids.end(), prefix_ids_.begin(), prefix_ids_.end());
    size_t start = 0;
    for (size_t i = 0; i < text.size(); i++) {
        if (text[i] != '<') continue;  // every control piece of a real model starts with '<'
        for (int32_t id : specials_) {
            const std::string& p = pieces_[size_t(id)];
            if (text.compare(i, p.size(), p) == 0) {
                encode_text(text.substr(start, i - start), ids);
                ids.push_back(id);
                i += p.size() - 1;
                start = i + 1;
                break;
            }
        }
    }
    // Pieces not starting with '<' (unusual models) are left to SentencePiece itself.
    encode_text(text.substr(start), ids);
    if (add_special_tokens) ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
    return ids;
}

void SpTokenizer::decode_append(DecodeState& state, int32_t id, bool skip_special, std::string& bytes) const {
    if (id < 0 || size_t(id) >= pieces_.size()) return;
    if (state.counters.empty()) state.counters.assign(1, 1);  // counters[0]: no piece decoded yet
    int64_t& first = state.counters[0];
    const std::string& piece = pieces_[size_t(id)];
    switch (kind_[size_t(id)]) {
        case kControl:
        case kUnknown:
            if (skip_special) return;
            bytes += piece;
            first = 0;
            break;
        case kByte:
            bytes.push_back(char(byte_[size_t(id)]));
            first = 0;
            break;
        default:
            // DecodeIds drops the leading "▁" of the first piece that is not a control piece,
            // whether or not anything remains of it.
            for (size_t p = first && strip_leading_space_ && piece.compare(0, 3, kSpace) == 0 ? 3 : 0; p < piece.size();) {
                if (piece.compare(p, 3, kSpace) == 0) {
                    bytes.push_back(' ');
                    p += 3;
                } else {
                    bytes.push_back(piece[p++]);
                }
            }
            first = 0;
    }
    state.tokens++;
}

}  // namespace

std::unique_ptr<Tokenizer> load_sp_tokenizer(const std::string& path, const TokenizerConfig& config) {
    return std::make_unique<SpTokenizer>(path, config);
}

}  // namespace tuner
