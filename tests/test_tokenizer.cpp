// Tokenizers: the llama.cpp reference vectors (ids produced by Hugging Face tokenizers) for every
// shipped tokenizer, tokenizer.model against tokenizer.json of the same vocabulary, round trips,
// streaming decode, BOS/EOS rules, hand-made tokenizer.json files for the finer semantics, error
// messages, and `tuner tokenize`.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>
#include <sentencepiece_processor.h>

#include "core/error.h"
#include "testing.h"
#include "tokenizer/internal.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

using namespace tuner;
using tuner::testing::check_vectors;
using tuner::testing::error_of;
using tuner::testing::escape;
using tuner::testing::read_file;
using tuner::testing::read_vectors;
using tuner::testing::TokenizerVector;
namespace fs = std::filesystem;

namespace {

void write_all(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
}

// Tokenizers are loaded once per test binary (the big JSON files take a while to parse).
const Tokenizer& tokenizer(const std::string& path) {
    static std::mutex mu;
    static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
    std::lock_guard<std::mutex> lock(mu);
    auto& t = cache[path];
    if (!t) t = Tokenizer::load(path);
    return *t;
}

struct Shipped {
    const char* vectors;
    const char* tokenizer;  // relative to the data folder
};
const Shipped kShipped[] = {
    {"gpt-2", "tokenizers/gpt2"},
    {"llama-spm", "tokenizers/llama2-sentencepiece"},
    {"phi-3", "tokenizers/phi3-mini-hf-llama2vocab"},
    {"llama-bpe", "tokenizers/llama3-hf"},
    {"qwen2", "tokenizers/qwen2.5-hf"},
    {"qwen2", "tokenizers/qwen2.5-hf-pairmerges"},
};

}  // namespace

// ---- reference vectors ------------------------------------------------------------------------

TEST(TokenizerVectors, AllShippedTokenizersMatchHuggingFace) {
    TUNER_REQUIRE_SHARED_DATA(data);
    for (const Shipped& s : kShipped) {
        const Tokenizer& tok = tokenizer(data + "/" + s.tokenizer);
        auto vectors = read_vectors(data, s.vectors);
        ASSERT_EQ(vectors.size(), 46u) << s.vectors;
        EXPECT_EQ(check_vectors(tok, vectors, std::string(s.vectors) + " with " + s.tokenizer), vectors.size());
    }
}


// The same Llama 2 vocabulary as a SentencePiece model and as Phi-3's tokenizer.json (ids 0..31999
// are identical): both paths must give the same ids, and the SentencePiece path must give what
// the library itself gives on whole texts (it encodes word by word through a cache, see
// sp_tokenizer.cpp).
TEST(TokenizerVectors, SentencePieceModelMatchesTokenizerJson) {
    TUNER_REQUIRE_SHARED_DATA(data);
    const Tokenizer& sp = tokenizer(data + "/tokenizers/llama2-sentencepiece");
    const Tokenizer& hf = tokenizer(data + "/tokenizers/phi3-mini-hf-llama2vocab");
    sentencepiece::SentencePieceProcessor lib;
    ASSERT_TRUE(lib.Load(data + "/tokenizers/llama2-sentencepiece/tokenizer.model").ok());
    std::vector<std::string> texts;
    for (const TokenizerVector& v : read_vectors(data, "llama-spm")) texts.push_back(v.text);
    texts.push_back(read_file(data + "/text/input.txt"));
    texts.push_back("Hello\xC2\xA0world  \xE4\xBD\xA0\xE5\xA5\xBD\t \n\n  x  ");
    size_t compared = 0;
    for (const std::string& t : texts) {
        // Phi-3's added chat tokens are not in the Llama 2 vocabulary; no test string has one.
        bool has_added = false;
        for (int32_t id = 32000; id < hf.vocab_size(); id++) has_added |= t.find(hf.id_to_piece(id)) != std::string::npos;
        if (has_added) continue;
        std::vector<int32_t> a = sp.encode(t, false), b = hf.encode(t, false);
        std::vector<int> c = lib.EncodeAsIds(t);
        EXPECT_EQ(a, b) << "\"" << escape(t.substr(0, 200)) << "\"";
        EXPECT_EQ(a, std::vector<int32_t>(c.begin(), c.end())) << "\"" << escape(t.substr(0, 200)) << "\"";
        // Decoding mirrors the library's DecodeIds.
        EXPECT_EQ(sp.decode(a), lib.DecodeIds(c)) << "\"" << escape(t.substr(0, 200)) << "\"";
        compared++;
    }
    EXPECT_EQ(compared, texts.size());
    for (int32_t id = 0; id < 32000; id += 97) EXPECT_EQ(sp.id_to_piece(id), hf.id_to_piece(id)) << id;
    EXPECT_EQ(sp.vocab_size(), 32000);
    EXPECT_EQ(hf.vocab_size(), 32011);  // + Phi-3's added tokens (its model's embedding has 32064 rows)
}

// decode(encode(s)) == s on every reference string. No exceptions hold on these strings: the
// SentencePiece path drops the "▁" of the first piece only (DecodeIds), so " Hello" ->
// [29871 "▁", 15043 "▁Hello"] -> " Hello"; tokenizer.json's Strip decoder removes one space.
// (A text that is not in NFC does not round-trip through Qwen2's NFC normalizer, by design.)
TEST(TokenizerRoundTrip, ReferenceStrings) {
    TUNER_REQUIRE_SHARED_DATA(data);
    for (const Shipped& s : kShipped) {
        const Tokenizer& tok = tokenizer(data + "/" + s.tokenizer);
        for (const TokenizerVector& v : read_vectors(data, s.vectors))
            EXPECT_EQ(tok.decode(tok.encode(v.text, false)), v.text) << s.tokenizer << ": \"" << escape(v.text) << "\"";
        // Special tokens: kept by default, dropped with skip_special.
        std::vector<int32_t> ids = tok.encode("Hi", true);
        if (tok.adds_bos()) {
            EXPECT_EQ(tok.decode(ids, true), "Hi") << s.tokenizer;
            EXPECT_EQ(tok.decode(ids, false).find(tok.id_to_piece(tok.bos_id())), 0u) << s.tokenizer;
        }
    }
}

// ---- streaming ----------------------------------------------------------------------------------

namespace {

// Pushes ids one by one; checks every piece is valid UTF-8 and the whole equals decode().
void check_stream(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special, const std::string& label) {
    StreamingDecoder sd(tok, skip_special);
    std::string all;
    for (int32_t id : ids) {
        std::string piece = sd.push(id);
        EXPECT_TRUE(utf8::is_valid(piece)) << label << ": push(" << id << ") returned invalid UTF-8";
        all += piece;
    }
    std::string rest = sd.flush();
    EXPECT_TRUE(utf8::is_valid(rest)) << label;
    all += rest;
    EXPECT_EQ(all, tok.decode(ids, skip_special)) << label;
}

const char* const kMultiByte[] = {
    "\xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x8C\xE4\xB8\x96\xE7\x95\x8C",  // 你好，世界
    "emoji \xF0\x9F\xA6\x99\xF0\x9F\x98\x81 and \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7 family",
    " leading space, \xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4 \xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82 \xE1\x9E\x80",
    "\xE6\x88\x91\xE6\x83\xB3\xE5\x9C\xA8" "apple\xE5\xB7\xA5\xE4\xBD\x9C" "1314151\xE5\xA4\xA9\xEF\xBD\x9E\n\n",
    "\xF0\x9F\x98\x80",
};

}  // namespace

TEST(TokenizerStreaming, MultiByteCharactersNeverSplit) {
    TUNER_REQUIRE_SHARED_DATA(data);
    for (const char* dir : {"tokenizers/gpt2", "tokenizers/llama2-sentencepiece", "tokenizers/phi3-mini-hf-llama2vocab",
                            "tokenizers/llama3-hf", "tokenizers/qwen2.5-hf", "stories260K/hf"}) {
        const Tokenizer& tok = tokenizer(data + "/" + dir);
        for (const char* text : kMultiByte) {
            std::vector<int32_t> ids = tok.encode(text, true);
            check_stream(tok, ids, false, std::string(dir) + ": " + text);
            check_stream(tok, ids, true, std::string(dir) + " (skip special): " + text);
            // Byte-level and byte-fallback tokenizers do cut these characters into several tokens.
            EXPECT_EQ(tok.decode(ids, true), text) << dir;
        }
    }
}

// Random ids make invalid byte sequences too: the stream must still agree with decode(), which
// turns them into U+FFFD.
TEST(TokenizerStreaming, RandomIdsAgreeWithDecode) {
    TUNER_REQUIRE_SHARED_DATA(data);
    std::mt19937 rng(7);
    for (const char* dir : {"tokenizers/gpt2", "tokenizers/llama2-sentencepiece", "tokenizers/phi3-mini-hf-llama2vocab",
                            "tokenizers/qwen2.5-hf"}) {
        const Tokenizer& tok = tokenizer(data + "/" + dir);
        // Byte-fallback tokens (ids 3..258 in the Llama 2 vocabulary) and single-byte byte-level
        // tokens (the first 256 ids of GPT-2 and Qwen2) are the interesting ones.
        std::uniform_int_distribution<int32_t> low(0, 300), any(0, int32_t(tok.vocab_size()) - 1);
        for (int round = 0; round < 200; round++) {
            std::vector<int32_t> ids;
            int n = 1 + int(rng() % 12);
            for (int i = 0; i < n; i++) ids.push_back(rng() % 4 ? low(rng) : any(rng));
            check_stream(tok, ids, round % 2 == 0, std::string(dir) + " round " + std::to_string(round));
        }
    }
}

// ---- BOS / EOS ----------------------------------------------------------------------------------

TEST(TokenizerSpecial, BosEosAsHuggingFaceAddsThem) {
    TUNER_REQUIRE_SHARED_DATA(data);
    struct Case {
        const char* dir;
        int32_t bos, eos;
        std::vector<int32_t> prefix, suffix;
    };
    const Case cases[] = {
        // Llama 3: TemplateProcessing "<|begin_of_text|> $A"; eos from tokenizer_config.json.
        {"tokenizers/llama3-hf", 128000, 128001, {128000}, {}},
        // Llama 2 tokenizer.model: BOS like LlamaTokenizer (add_bos_token defaults to true).
        {"tokenizers/llama2-sentencepiece", 1, 2, {1}, {}},
        // stories260K: LlamaTokenizer, add_bos_token true.
        {"stories260K/hf", 1, 2, {1}, {}},
        // Phi-3's files add nothing: its post-processor is "$A" and add_bos_token is false.
        {"tokenizers/phi3-mini-hf-llama2vocab", 1, 32000, {}, {}},
        // GPT-2 and Qwen2 add nothing.
        {"tokenizers/gpt2", 50256, 50256, {}, {}},
        {"tokenizers/qwen2.5-hf", -1, 151643, {}, {}},
        {"tokenizers/qwen2.5-hf/instruct", -1, 151645, {}, {}},
    };
    for (const Case& c : cases) {
        std::string dir = data + "/" + c.dir;
        if (std::string(c.dir).find("instruct") != std::string::npos) {
            // instruct/ holds only tokenizer_config.json: pair it with the base tokenizer.json.
            std::string tmp = tuner::testing::make_temp_dir("tok-instruct");
            fs::copy_file(data + "/tokenizers/qwen2.5-hf/tokenizer.json", tmp + "/tokenizer.json");
            fs::copy_file(dir + "/tokenizer_config.json", tmp + "/tokenizer_config.json");
            dir = tmp;
        }
        const Tokenizer& tok = tokenizer(dir);
        EXPECT_EQ(tok.bos_id(), c.bos) << c.dir;
        EXPECT_EQ(tok.eos_id(), c.eos) << c.dir;
        EXPECT_EQ(tok.prefix_ids(), c.prefix) << c.dir;
        EXPECT_EQ(tok.suffix_ids(), c.suffix) << c.dir;
        EXPECT_EQ(tok.adds_bos(), !c.prefix.empty()) << c.dir;
        EXPECT_FALSE(tok.adds_eos()) << c.dir;
        std::vector<int32_t> plain = tok.encode("Hello world", false), with = tok.encode("Hello world", true);
        std::vector<int32_t> expect = c.prefix;
        expect.insert(expect.end(), plain.begin(), plain.end());
        EXPECT_EQ(with, expect) << c.dir;
    }
    const Tokenizer& llama3 = tokenizer(data + "/tokenizers/llama3-hf");
    EXPECT_EQ(llama3.encode("Hello", true).front(), 128000);
    EXPECT_TRUE(llama3.is_special(128000));
    EXPECT_TRUE(llama3.is_special(128009));
    EXPECT_FALSE(llama3.is_special(9906));
    const Tokenizer& qwen = tokenizer(data + "/tokenizers/qwen2.5-hf");
    EXPECT_TRUE(qwen.is_special(151644));   // <|im_start|>
    EXPECT_FALSE(qwen.is_special(151657));  // <tool_call>: an added token, not special
    const Tokenizer& sp = tokenizer(data + "/tokenizers/llama2-sentencepiece");
    EXPECT_TRUE(sp.is_special(1));
    EXPECT_TRUE(sp.is_special(0));  // <unk>, special as in transformers
    EXPECT_FALSE(sp.is_special(3));  // <0x00>
}

// Special tokens written in the text are matched before the model, with or without
// add_special_tokens (Hugging Face's default split_special_tokens=False).
TEST(TokenizerSpecial, AddedTokensInText) {
    TUNER_REQUIRE_SHARED_DATA(data);
    const Tokenizer& qwen = tokenizer(data + "/tokenizers/qwen2.5-hf");
    std::vector<int32_t> ids = qwen.encode("<|im_start|>user\nHi<|im_end|>\n<tool_call>", false);
    ASSERT_GE(ids.size(), 5u);
    EXPECT_EQ(ids.front(), 151644);
    EXPECT_EQ(ids.back(), 151657);
    EXPECT_EQ(qwen.decode(ids), "<|im_start|>user\nHi<|im_end|>\n<tool_call>");
    EXPECT_EQ(qwen.decode(ids, true), "user\nHi\n<tool_call>");  // <tool_call> is not special
    EXPECT_EQ(qwen.piece_to_id("<|im_end|>"), 151645);
    EXPECT_EQ(qwen.piece_to_id("Hello"), 9707);
    EXPECT_EQ(qwen.piece_to_id("no such piece"), -1);
    EXPECT_EQ(qwen.id_to_piece(9707), "Hello");

    // GPT-2's <|endoftext|> (normalized=true) is matched too; Qwen2 normalizes to NFC first.
    const Tokenizer& gpt2 = tokenizer(data + "/tokenizers/gpt2/tokenizer.json");  // the file itself
    EXPECT_EQ(gpt2.encode("Hello<|endoftext|>", false), (std::vector<int32_t>{15496, 50256}));
    EXPECT_EQ(qwen.encode("Cafe\xCC\x81", false), qwen.encode("Caf\xC3\xA9", false));

    // Phi-3's chat tokens have rstrip: the whitespace after them belongs to the token.
    const Tokenizer& phi3 = tokenizer(data + "/tokenizers/phi3-mini-hf-llama2vocab");
    int32_t user = phi3.piece_to_id("<|user|>"), end = phi3.piece_to_id("<|end|>");
    ASSERT_GE(user, 32000);
    EXPECT_EQ(phi3.encode("<|user|>\nHello<|end|>\n", false),
              (std::vector<int32_t>{user, 15043, end}));  // "▁Hello": Prepend applies to each segment

    // The SentencePiece model: <s> and </s> in the text are the control tokens.
    const Tokenizer& sp = tokenizer(data + "/tokenizers/llama2-sentencepiece");
    std::vector<int32_t> s = sp.encode("<s>Hello</s>", false);
    EXPECT_EQ(s, (std::vector<int32_t>{1, 15043, 2}));
    EXPECT_EQ(sp.decode(s, true), "Hello");
    EXPECT_EQ(sp.decode(s), "<s> Hello</s>");  // shown control tokens count as output, as in transformers
}

// ---- hand-made tokenizer.json files: the finer semantics -----------------------------------------

namespace {

using json = nlohmann::json;

json bpe_json(json vocab, json merges) {
    return json{{"version", "1.0"},         {"truncation", nullptr},   {"padding", nullptr},
                {"added_tokens", json::array()}, {"normalizer", nullptr}, {"pre_tokenizer", nullptr},
                {"post_processor", nullptr}, {"decoder", nullptr},
                {"model", {{"type", "BPE"}, {"vocab", std::move(vocab)}, {"merges", std::move(merges)}}}};
}

std::unique_ptr<Tokenizer> from_json(const json& j, const TokenizerConfig& config = {}) {
    return load_hf_tokenizer(j.dump(), "test/tokenizer.json", config);
}

json added(const std::string& content, int id, bool special = true, bool normalized = false) {
    return json{{"id", id},          {"content", content}, {"single_word", false}, {"lstrip", false},
                {"rstrip", false}, {"normalized", normalized}, {"special", special}};
}

using Ids = std::vector<int32_t>;

}  // namespace

TEST(TokenizerJson, MergesByRankInEitherSpelling) {
    json vocab = {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"bc", 4}, {"abc", 5}};
    // (b, c) has the lower rank, so "abc" goes a + bc -> abc even though (a, b) also exists.
    auto t1 = from_json(bpe_json(vocab, {"b c", "a b", "a bc"}));
    auto t2 = from_json(bpe_json(vocab, json::array({json::array({"b", "c"}), json::array({"a", "b"}), json::array({"a", "bc"})})));
    EXPECT_EQ(t1->encode("abc", false), Ids{5});
    EXPECT_EQ(t2->encode("abc", false), Ids{5});
    // Without the a + bc merge it stops at a, bc.
    auto t3 = from_json(bpe_json(vocab, {"b c", "a b"}));
    EXPECT_EQ(t3->encode("abc", false), (Ids{0, 4}));
    // Ties go to the leftmost pair: "abab" with only (a, b) -> ab ab.
    EXPECT_EQ(t3->encode("abab", false), (Ids{3, 3}));
    EXPECT_EQ(t1->vocab_size(), 6);
    EXPECT_EQ(t1->piece_to_id("bc"), 4);
    EXPECT_EQ(t1->id_to_piece(5), "abc");
    EXPECT_EQ(t1->id_to_piece(99), "");
}

TEST(TokenizerJson, IgnoreMergesTakesWholeWordsFromTheVocabulary) {
    json j = bpe_json({{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"abc", 4}}, {"a b"});
    EXPECT_EQ(from_json(j)->encode("abc", false), (Ids{3, 2}));
    j["model"]["ignore_merges"] = true;
    EXPECT_EQ(from_json(j)->encode("abc", false), Ids{4});
    EXPECT_EQ(from_json(j)->encode("abcab", false), (Ids{3, 2, 3}));  // not in the vocabulary: merged
}

TEST(TokenizerJson, UnknownTokenFuseAndByteFallback) {
    json j = bpe_json({{"<unk>", 0}, {"a", 1}, {"<0x78>", 2}}, json::array());
    EXPECT_EQ(from_json(j)->encode("axya", false), (Ids{1, 1}));  // no unk_token: unknown chars dropped
    j["model"]["unk_token"] = "<unk>";
    EXPECT_EQ(from_json(j)->encode("axya", false), (Ids{1, 0, 0, 1}));
    j["model"]["fuse_unk"] = true;
    EXPECT_EQ(from_json(j)->encode("axya", false), (Ids{1, 0, 1}));
    j["model"]["byte_fallback"] = true;
    // 'x' has a byte token, 'y' has not: <0x78>, then <unk>.
    EXPECT_EQ(from_json(j)->encode("axya", false), (Ids{1, 2, 0, 1}));
    j["decoder"] = {{"type", "ByteFallback"}};
    EXPECT_EQ(from_json(j)->decode({1, 2, 1}), "axa");
}

TEST(TokenizerJson, ContinuingSubwordPrefix) {
    json j = bpe_json({{"a", 0}, {"##b", 1}, {"ab", 2}, {"b", 3}}, json::array({json::array({"a", "##b"})}));
    j["model"]["continuing_subword_prefix"] = "##";
    auto t = from_json(j);
    EXPECT_EQ(t->encode("ab", false), Ids{2});
    EXPECT_EQ(t->encode("b", false), Ids{3});
}

TEST(TokenizerJson, SplitBehaviours) {
    // Merges a+- and -+a reveal where the pre-tokenizer cut "a-a".
    json j = bpe_json({{"a", 0}, {"-", 1}, {"a-", 2}, {"-a", 3}}, {"a -", "- a"});
    auto with = [&](const char* behavior, bool invert) {
        j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", behavior}, {"invert", invert}};
        return from_json(j)->encode("a-a", false);
    };
    EXPECT_EQ(with("Isolated", false), (Ids{0, 1, 0}));
    EXPECT_EQ(with("Removed", false), (Ids{0, 0}));
    EXPECT_EQ(with("MergedWithPrevious", false), (Ids{2, 0}));
    EXPECT_EQ(with("MergedWithNext", false), (Ids{0, 3}));
    EXPECT_EQ(with("Contiguous", false), (Ids{0, 1, 0}));
    EXPECT_EQ(with("Removed", true), (Ids{1}));  // invert: the matches are what is kept
    // A regex pattern and a Sequence.
    j["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers", {{{"type", "Split"}, {"pattern", {{"Regex", "a+"}}}, {"behavior", "Isolated"}}}}};
    EXPECT_EQ(from_json(j)->encode("a-a", false), (Ids{0, 1, 0}));
}

TEST(TokenizerJson, MetaspacePrependSchemes) {
    const std::string m = "\xE2\x96\x81";
    json j = bpe_json({{"a", 0}, {m, 1}, {m + "a", 2}, {"<x>", 3}}, {m + " a"});
    j["added_tokens"] = {added("<x>", 3)};
    j["decoder"] = {{"type", "Metaspace"}, {"replacement", m}, {"prepend_scheme", "always"}};
    auto with = [&](const char* scheme) {
        j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", m}, {"prepend_scheme", scheme}, {"split", true}};
        return from_json(j)->encode("a<x>a a", false);
    };
    EXPECT_EQ(with("always"), (Ids{2, 3, 2, 2}));
    EXPECT_EQ(with("first"), (Ids{2, 3, 0, 2}));
    EXPECT_EQ(with("never"), (Ids{0, 3, 0, 2}));
    // The legacy add_prefix_space spelling.
    j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", m}, {"add_prefix_space", true}};
    EXPECT_EQ(from_json(j)->encode("a a", false), (Ids{2, 2}));
    // The decoder drops the replacement of the first token only.
    EXPECT_EQ(from_json(j)->decode({2, 2, 1}), "a a ");
}

TEST(TokenizerJson, AddedTokenOptions) {
    json j = bpe_json({{"a", 0}, {" ", 1}, {"b", 2}}, json::array());
    json t = added("<m>", 10, false);
    // Longest match first: "<m><m>" is one token when it exists.
    j["added_tokens"] = {t, added("<m><m>", 11, false)};
    EXPECT_EQ(from_json(j)->encode("a<m><m>a<m>", false), (Ids{0, 11, 0, 10}));
    j["added_tokens"] = {t};
    EXPECT_EQ(from_json(j)->encode("a <m> a", false), (Ids{0, 1, 10, 1, 0}));
    j["added_tokens"][0]["lstrip"] = true;
    EXPECT_EQ(from_json(j)->encode("a <m> a", false), (Ids{0, 10, 1, 0}));
    j["added_tokens"][0]["rstrip"] = true;
    EXPECT_EQ(from_json(j)->encode("a <m> a", false), (Ids{0, 10, 0}));
    j["added_tokens"][0]["lstrip"] = j["added_tokens"][0]["rstrip"] = false;
    j["added_tokens"][0]["single_word"] = true;
    EXPECT_EQ(from_json(j)->encode("a<m> <m> b", false), (Ids{0, 1, 10, 1, 2}));  // "a<m>" touches a word
    // normalized=true tokens match the normalized text (here lowercased).
    j["added_tokens"] = {added("<M>", 10, false, true)};
    j["normalizer"] = {{"type", "Lowercase"}};
    auto t2 = from_json(j);
    EXPECT_EQ(t2->encode("A<M>A", false), (Ids{0, 10, 0}));
    EXPECT_EQ(t2->is_special(10), false);
    // Special tokens are dropped by decode(skip_special).
    j["added_tokens"] = {added("<s>", 9, true)};
    j["normalizer"] = nullptr;
    auto t3 = from_json(j);
    EXPECT_EQ(t3->decode({9, 0}, true), "a");
    EXPECT_EQ(t3->decode({9, 0}), "<s> a");  // no decoder: tokens joined by spaces, as tokenizers does
}

TEST(TokenizerJson, Normalizers) {
    json vocab = {{"e", 0}, {"\xC3\xA9", 1}, {"f", 2}, {"i", 3}, {"x", 4}, {"\xE2\x96\x81", 5}, {"\xCC\x81", 6}};
    json j = bpe_json(vocab, json::array());
    EXPECT_EQ(from_json(j)->encode("e\xCC\x81", false), (Ids{0, 6}));
    j["normalizer"] = {{"type", "NFC"}};
    EXPECT_EQ(from_json(j)->encode("e\xCC\x81", false), (Ids{1}));  // e + combining acute -> é
    j["normalizer"] = {{"type", "NFKC"}};
    EXPECT_EQ(from_json(j)->encode("\xEF\xAC\x81", false), (Ids{2, 3}));  // the ligature ﬁ -> f i
    j["normalizer"] = {{"type", "Sequence"},
                       {"normalizers", {{{"type", "NFD"}}, {{"type", "StripAccents"}}, {{"type", "Lowercase"}}}}};
    EXPECT_EQ(from_json(j)->encode("\xC3\x89X", false), (Ids{0, 4}));  // É -> e, X -> x
    j["normalizer"] = {{"type", "Sequence"},
                       {"normalizers",
                        {{{"type", "Strip"}, {"strip_left", true}, {"strip_right", true}},
                         {{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}},
                         {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}}}};
    EXPECT_EQ(from_json(j)->encode("  x x\t", false), (Ids{5, 4, 5, 4}));
}

TEST(TokenizerJson, PostProcessorsAndConfig) {
    json j = bpe_json({{"<s>", 0}, {"</s>", 1}, {"a", 2}, {"<cls>", 3}}, json::array());
    j["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                    {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}}},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {0}}, {"tokens", {"<s>"}}}}}}};
    auto t = from_json(j);
    EXPECT_EQ(t->encode("a", true), (Ids{0, 2, 1}));
    EXPECT_EQ(t->encode("a", false), (Ids{2}));
    EXPECT_EQ(t->bos_id(), 0);
    EXPECT_EQ(t->eos_id(), 1);
    EXPECT_TRUE(t->adds_bos());
    EXPECT_TRUE(t->adds_eos());
    // tokenizer_config.json's tokens win, in either spelling.
    TokenizerConfig config = parse_tokenizer_config(
        R"({"bos_token": {"__type": "AddedToken", "content": "<cls>"}, "eos_token": null})", "test/tokenizer_config.json");
    auto t2 = from_json(j, config);
    EXPECT_EQ(t2->bos_id(), 3);
    EXPECT_EQ(t2->eos_id(), -1);
    EXPECT_FALSE(t2->adds_bos());
    EXPECT_EQ(t2->encode("a", true), (Ids{0, 2, 1}));  // the template still applies
    // Llama-class tokenizers: add_bos_token / add_eos_token rebuild the template.
    config = parse_tokenizer_config(
        R"({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "add_eos_token": true, "add_bos_token": false})",
        "test/tokenizer_config.json");
    EXPECT_EQ(from_json(j, config)->encode("a", true), (Ids{2, 1}));
    j["post_processor"] = {{"type", "RobertaProcessing"}, {"sep", {"</s>", 1}}, {"cls", {"<cls>", 3}}};
    EXPECT_EQ(from_json(j)->encode("a", true), (Ids{3, 2, 1}));
}

TEST(TokenizerJson, InvalidUtf8IsCleanedFirst) {
    TUNER_REQUIRE_SHARED_DATA(data);
    const Tokenizer& gpt2 = tokenizer(data + "/tokenizers/gpt2");
    EXPECT_EQ(gpt2.encode("a\xFF" "b\xE4\xB8", false), gpt2.encode("a\xEF\xBF\xBD" "b\xEF\xBF\xBD", false));
    const Tokenizer& sp = tokenizer(data + "/tokenizers/llama2-sentencepiece");
    EXPECT_EQ(sp.encode("a\xFF", false), sp.encode("a\xEF\xBF\xBD", false));
}

TEST(TokenizerUtf8, SanitizeAndIncompleteTail) {
    EXPECT_EQ(utf8::sanitize("ok"), "ok");
    EXPECT_EQ(utf8::sanitize("a\xFF" "b"), "a\xEF\xBF\xBD" "b");
    // Maximal subparts: E4 B8 is one bad sequence (one U+FFFD), ED A0 80 is three.
    EXPECT_EQ(utf8::sanitize("\xE4\xB8" "a"), "\xEF\xBF\xBD" "a");
    EXPECT_EQ(utf8::sanitize("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
    EXPECT_EQ(utf8::incomplete_tail("a\xE4\xB8"), 2u);
    EXPECT_EQ(utf8::incomplete_tail("a\xF0\x9F\x98"), 3u);
    EXPECT_EQ(utf8::incomplete_tail("a\xF0\x9F\x98\x80"), 0u);
    EXPECT_EQ(utf8::incomplete_tail("a\xED\xA0"), 0u);  // can never complete
    EXPECT_EQ(utf8::incomplete_tail("a\x80"), 0u);
    EXPECT_EQ(utf8::incomplete_tail(""), 0u);
    // Cleaning in pieces cut outside incomplete tails equals cleaning at once.
    std::mt19937 rng(3);
    for (int round = 0; round < 2000; round++) {
        std::string s;
        int n = int(rng() % 12);
        for (int i = 0; i < n; i++) {
            const uint8_t interesting[] = {0x41, 0x80, 0xBF, 0xC2, 0xE0, 0xE4, 0xED, 0xF0, 0xF4, 0xFF, 0xA0, 0x9F, 0x90};
            s.push_back(char(rng() % 2 ? interesting[rng() % sizeof(interesting)] : uint8_t(rng())));
        }
        std::string pending, out;
        for (char ch : s) {
            pending.push_back(ch);
            size_t hold = utf8::incomplete_tail(pending);
            out += utf8::sanitize(pending.substr(0, pending.size() - hold));
            pending.erase(0, pending.size() - hold);
        }
        out += utf8::sanitize(pending);
        ASSERT_EQ(out, utf8::sanitize(s)) << round;
        ASSERT_TRUE(utf8::is_valid(out));
    }
}

// Many threads encoding with one tokenizer (per-thread caches, shared compiled regexes).
TEST(TokenizerThreads, ConcurrentEncodeGivesTheSameIds) {
    TUNER_REQUIRE_SHARED_DATA(data);
    std::string text = read_file(data + "/text/input.txt").substr(0, 200000);
    for (const char* dir : {"tokenizers/gpt2", "tokenizers/llama2-sentencepiece", "tokenizers/phi3-mini-hf-llama2vocab"}) {
        const Tokenizer& tok = tokenizer(data + "/" + dir);
        std::vector<int32_t> expect = tok.encode(text, true);
        std::vector<std::vector<int32_t>> got(4);
        std::vector<std::thread> threads;
        for (int i = 0; i < 4; i++)
            threads.emplace_back([&, i] {
                for (int r = 0; r < 2; r++) got[size_t(i)] = tok.encode(text, true);
            });
        for (auto& th : threads) th.join();
        for (const auto& g : got) EXPECT_EQ(g, expect) << dir;
    }
}

// ---- errors -------------------------------------------------------------------------------------

TEST(TokenizerErrors, ClearMessagesNamingTheFile) {
    std::string dir = tuner::testing::make_temp_dir("tok-errors");
    EXPECT_CONTAINS(error_of([&] { Tokenizer::load(dir + "/missing"); }), "missing: no such file or folder");
    EXPECT_CONTAINS(error_of([&] { Tokenizer::load(dir); }), "no tokenizer.json or tokenizer.model in this folder");

    auto load_text = [&](const std::string& text) {
        write_all(dir + "/tokenizer.json", text);
        return error_of([&] { Tokenizer::load(dir); });
    };
    std::string file = dir + "/tokenizer.json";
    EXPECT_CONTAINS(load_text("{\"model\": "), file + ": not valid JSON");
    json j = bpe_json({{"a", 0}, {"b", 1}, {"ab", 2}}, {"a b"});
    json bad = j;
    bad["model"] = {{"type", "Unigram"}, {"vocab", json::array()}};
    EXPECT_EQ(load_text(bad.dump()), "[tokenizer] " + file + ": model type 'Unigram' is not supported yet");
    bad["model"] = {{"type", "WordPiece"}, {"vocab", json::object()}};
    EXPECT_EQ(load_text(bad.dump()), "[tokenizer] " + file + ": model type 'WordPiece' is not supported yet");
    bad = j;
    bad["model"]["merges"] = {"a x"};
    EXPECT_CONTAINS(load_text(bad.dump()), file + ": merge 0 ('a x') uses 'x', which is not in the vocabulary");
    bad["model"]["merges"] = {"b a"};
    EXPECT_CONTAINS(load_text(bad.dump()), "merge 0 ('b a') makes 'ba', which is not in the vocabulary");
    bad["model"]["merges"] = {"ab"};
    EXPECT_CONTAINS(load_text(bad.dump()), "model.merges[0]: merge 'ab' is not two tokens separated by one space");
    bad = j;
    bad["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(a"}}}, {"behavior", "Isolated"}};
    EXPECT_CONTAINS(load_text(bad.dump()), "bad regex '(a'");
    bad["pre_tokenizer"] = {{"type", "UnicodeScripts"}};
    EXPECT_CONTAINS(load_text(bad.dump()), "pre_tokenizer: pre-tokenizer type 'UnicodeScripts' is not supported yet");
    bad = j;
    bad["model"]["vocab"] = json::array();
    EXPECT_CONTAINS(load_text(bad.dump()), "model.vocab: expected an object");
    bad = j;
    bad["model"]["vocab"]["zz"] = 2000000000;
    EXPECT_CONTAINS(load_text(bad.dump()), "token ids go up to 2000000000 for 4 tokens");
    bad = j;
    bad["added_tokens"] = {{{"content", "<x>"}, {"id", "7"}}};
    EXPECT_CONTAINS(load_text(bad.dump()), "added_tokens[0].id: expected an integer");
    bad = j;
    bad["decoder"] = {{"type", "CTC"}};
    EXPECT_CONTAINS(load_text(bad.dump()), "decoder type 'CTC' is not supported yet");
    bad = j;
    bad["normalizer"] = {{"type", "Precompiled"}, {"precompiled_charsmap", "AAAA"}};
    EXPECT_CONTAINS(load_text(bad.dump()), "normalizer type 'Precompiled' is not supported yet");
    EXPECT_CONTAINS(load_text("[1, 2]"), "top level: expected an object");

    // tokenizer_config.json beside it is read too, and named when broken.
    write_all(dir + "/tokenizer.json", j.dump());
    write_all(dir + "/tokenizer_config.json", "{\"bos_token\": 5}");
    EXPECT_CONTAINS(error_of([&] { Tokenizer::load(dir); }), "tokenizer_config.json: 'bos_token' must be a string");
    fs::remove(dir + "/tokenizer_config.json");

    // A tokenizer.model that is not one.
    fs::remove(dir + "/tokenizer.json");
    write_all(dir + "/tokenizer.model", "\x0a\x03not a model");
    EXPECT_CONTAINS(error_of([&] { Tokenizer::load(dir); }), dir + "/tokenizer.model: not a SentencePiece model");
}

// ---- tuner tokenize -----------------------------------------------------------------------------

namespace {

using tuner::testing::run_command;
using tuner::testing::tuner_exe;

std::string quote(const std::string& s) {
    std::string q = "'";
    for (char ch : s) q += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
    return q + "'";
}

std::string ids_line(const std::vector<int32_t>& ids) {
    std::string s;
    for (size_t i = 0; i < ids.size(); i++) s += (i ? " " : "") + std::to_string(ids[i]);
    return s + "\n";
}

}  // namespace

TEST(TokenizerCli, TokenizeTextAndFile) {
    TUNER_REQUIRE_SHARED_DATA(data);
    std::string out;
    std::string llama3 = data + "/tokenizers/llama3-hf";
    ASSERT_EQ(0, run_command(tuner_exe() + " tokenize " + llama3 + " --text 'Hello world'", &out)) << out;
    EXPECT_EQ(out, "128000 9906 1917\n");
    ASSERT_EQ(0, run_command(tuner_exe() + " tokenize " + llama3 + " --text 'Hello world' --no-special", &out)) << out;
    EXPECT_EQ(out, "9906 1917\n");
    ASSERT_EQ(0, run_command(tuner_exe() + " tokenize " + data + "/tokenizers/gpt2 --text 'Hello world' --pieces", &out))
        << out;
    EXPECT_EQ(out, "15496 995\n\"Hello\" \"\xC4\xA0world\"\n");

    // --file: the whole file, byte for byte (trailing newline and non-ASCII bytes included).
    std::string dir = tuner::testing::make_temp_dir("tok-cli");
    std::string text = "Gr\xC3\xBC\xC3\x9F" "e, \xE4\xB8\x96\xE7\x95\x8C! \xF0\x9F\xA6\x99\n  indented line\n";
    write_all(dir + "/in.txt", text);
    for (const char* t : {"tokenizers/qwen2.5-hf", "tokenizers/llama2-sentencepiece", "tokenizers/phi3-mini-hf-llama2vocab"}) {
        const Tokenizer& tok = tokenizer(data + "/" + t);
        ASSERT_EQ(0, run_command(tuner_exe() + " tokenize " + data + "/" + t + " --file " + dir + "/in.txt", &out)) << out;
        EXPECT_EQ(out, ids_line(tok.encode(text, true))) << t;
        EXPECT_EQ(tok.decode(tok.encode(text, false)), text) << t;
    }
    // A tokenizer file given directly.
    ASSERT_EQ(0, run_command(tuner_exe() + " tokenize " + data + "/tokenizers/llama2-sentencepiece/tokenizer.model" +
                                 " --text " + quote("it's <s> here") + " --no-special --pieces", &out))
        << out;
    EXPECT_EQ(out.substr(0, out.find('\n') + 1), ids_line(tokenizer(data + "/tokenizers/llama2-sentencepiece").encode("it's <s> here", false)));
    EXPECT_CONTAINS(out, "\"<s>\"");

    // Bad invocations are messages, not crashes.
    EXPECT_EQ(1, run_command(tuner_exe() + " tokenize " + llama3, &out));
    EXPECT_CONTAINS(out, "give the text with --text or --file");
    EXPECT_EQ(1, run_command(tuner_exe() + " tokenize " + dir + "/nothing --text x", &out));
    EXPECT_CONTAINS(out, "no such file or folder");
    EXPECT_EQ(1, run_command(tuner_exe() + " tokenize " + llama3 + " --file " + dir + "/absent.txt", &out));
    EXPECT_CONTAINS(out, "absent.txt: cannot read");
    EXPECT_NE(0, run_command(tuner_exe() + " tokenize " + llama3 + " --text a --file " + dir + "/in.txt", &out));
}

TEST(TokenizerCli, ModelFolderFromInitModel) {
    TUNER_REQUIRE_SHARED_DATA(data);
    std::string dir = tuner::testing::make_temp_dir("tok-model") + "/model";
    std::string out;
    ASSERT_EQ(0, run_command(tuner_exe() + " init-model tiny " + dir + " --tokenizer " + data + "/stories260K/hf", &out))
        << out;
    ASSERT_EQ(0, run_command(tuner_exe() + " tokenize " + dir + " --text 'Once upon a time, there was a little girl.'", &out))
        << out;
    const Tokenizer& ref = tokenizer(data + "/stories260K/hf");
    EXPECT_EQ(out, ids_line(ref.encode("Once upon a time, there was a little girl.", true)));
    EXPECT_EQ(out.substr(0, 2), "1 ");  // BOS, as the model's tokenizer_config.json asks
}

TEST(TokenizerCli, Bench) {
    TUNER_REQUIRE_SHARED_DATA(data);
    std::string out;
    ASSERT_EQ(0, run_command(tuner_exe() + " tokenize " + data + "/tokenizers/gpt2 --file " + data +
                                 "/text/input.txt --bench --seconds 0.2",
                             &out))
        << out;
    EXPECT_CONTAINS(out, "MB/s");
    EXPECT_CONTAINS(out, "338025 tokens");  // with no BOS for GPT-2
}
