// The data pipeline with the real tokenizers shipped in ../shared/data: exact token ids and
// labels of chat samples (Qwen2.5, Llama 3), template: auto for each tokenizer, mismatches, and
// the whole alpaca demo set prepared (tokenize, mask, pack) in well under a few seconds.
#include <gtest/gtest.h>

#include <chrono>

#include "core/error.h"
#include "data/dataset.h"
#include "testing.h"
#include "tokenizer/tokenizer.h"

using namespace tuner;

namespace {

std::vector<int32_t> mask_until(const std::vector<int32_t>& tokens, size_t first_trained, size_t end_trained) {
    std::vector<int32_t> l(tokens.size(), -100);
    for (size_t i = first_trained; i < end_trained; i++) l[i] = tokens[i];
    return l;
}

Record hi_hello() {
    Record r;
    r.turns = {Turn{"", "Hi", "Hello", true}};
    return r;
}

}  // namespace

TEST(DataReal, QwenChatExactIds) {
    TUNER_REQUIRE_SHARED_DATA(data);
    auto tok = Tokenizer::load(data + "/tokenizers/qwen2.5-hf");
    std::vector<int32_t> tokens, labels;
    EncodeOptions o = encode_options_for(*tok, -1);
    EXPECT_FALSE(o.chat_bos);  // Qwen has no BOS
    encode_chat(hi_hello(), get_chat_template("qwen_chat"), *tok, o, &tokens, &labels);
    // <|im_start|> user \n Hi <|im_end|> \n <|im_start|> assistant \n | Hello <|im_end|> | \n
    std::vector<int32_t> want = {151644, 872, 198, 13048, 151645, 198, 151644, 77091, 198, 9707, 151645, 198};
    EXPECT_EQ(tokens, want);
    EXPECT_EQ(labels, mask_until(want, 9, 11));
    EXPECT_EQ(render_sample(tokens.data(), labels.data(), int64_t(tokens.size()), *tok, RenderStyle::Markers),
              "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n[[Hello<|im_end|>]]\n");
}

TEST(DataReal, Llama3ChatExactIds) {
    TUNER_REQUIRE_SHARED_DATA(data);
    auto tok = Tokenizer::load(data + "/tokenizers/llama3-hf");
    std::vector<int32_t> tokens, labels;
    Record r = hi_hello();
    r.turns[0].system = "Be brief.";
    encode_chat(r, get_chat_template("llama3_chat"), *tok, encode_options_for(*tok, -1), &tokens, &labels);
    // <|begin_of_text|> <|start_header_id|> system <|end_header_id|> \n\n ... <|eot_id|> ... assistant ... \n\n |Hello <|eot_id|>|
    std::vector<int32_t> system = tok->encode("Be brief.", false);
    std::vector<int32_t> want = {128000, 128006, 9125, 128007, 271};
    want.insert(want.end(), system.begin(), system.end());
    for (int32_t id : {128009, 128006, 882, 128007, 271, 13347, 128009, 128006, 78191, 128007, 271, 9906, 128009})
        want.push_back(id);
    EXPECT_EQ(tokens, want);
    EXPECT_EQ(labels, mask_until(want, want.size() - 2, want.size()));
}

TEST(DataReal, AutoTemplatePerTokenizer) {
    TUNER_REQUIRE_SHARED_DATA(data);
    struct Case {
        std::string model, tokenizer, expect;
    };
    std::vector<Case> cases = {
        {"", data + "/tokenizers/qwen2.5-hf", "qwen_chat"},
        {"", data + "/tokenizers/qwen2.5-hf-pairmerges", "chatml"},  // no tokenizer_config: vocabulary hint
        {"", data + "/tokenizers/llama3-hf", "llama3_chat"},
        {"", data + "/tokenizers/phi3-mini-hf-llama2vocab", "phi3_chat"},
        {"", data + "/tokenizers/gpt2", "default"},
        {data + "/stories260K/hf", data + "/stories260K/hf", "default"},
    };
    for (const auto& c : cases) {
        auto tok = Tokenizer::load(c.tokenizer);
        TemplateChoice t = auto_chat_template(c.model, c.tokenizer, *tok);
        ASSERT_NE(t.tmpl, nullptr);
        EXPECT_EQ(t.tmpl->name, c.expect) << c.tokenizer << ": " << t.reason;
        EXPECT_NO_THROW(check_template(*t.tmpl, *tok, c.tokenizer)) << c.tokenizer;
    }
}

TEST(DataReal, TemplateThatDoesNotFitTheTokenizer) {
    TUNER_REQUIRE_SHARED_DATA(data);
    auto qwen = Tokenizer::load(data + "/tokenizers/qwen2.5-hf");
    try {
        check_template(get_chat_template("llama3_chat"), *qwen, "in qwen2.5-hf");
        FAIL() << "expected an error";
    } catch (const Error& e) {
        std::string m = e.what();
        EXPECT_NE(m.find("template 'llama3_chat' needs '<|start_header_id|>' to be one token"), std::string::npos) << m;
        EXPECT_NE(m.find("qwen2.5-hf"), std::string::npos) << m;
    }
    auto stories = Tokenizer::load(data + "/stories260K/hf");
    EXPECT_THROW(check_template(get_chat_template("qwen_chat"), *stories, "stories"), Error);
    EXPECT_THROW(check_template(get_chat_template("phi3_chat"), *qwen, "qwen"), Error);
}

// The timing the issue asks for: the whole alpaca demo set (999 records) tokenized, masked and
// packed. The figure is printed; the bound is loose so a loaded CI machine still passes.
TEST(DataReal, PrepareAlpacaDemoQuickly) {
    TUNER_REQUIRE_SHARED_DATA(data);
    for (const char* tokenizer : {"/tokenizers/qwen2.5-hf", "/stories260K/hf"}) {
        auto tok = Tokenizer::load(data + tokenizer);
        DataConfig cfg;
        DataSource s;
        s.path = data + "/datasets/llamafactory-demo/alpaca_en_demo.json";
        s.format = DataFormat::Alpaca;
        cfg.train = {s};
        cfg.max_length = 2048;
        auto t0 = std::chrono::steady_clock::now();
        Datasets d = build_datasets(cfg, *tok, {.model_dir = "", .tokenizer_dir = data + tokenizer});
        double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::printf("[ timing   ] alpaca_en_demo with %s: %.3f s (read %.3f, tokenize+mask %.3f, pack %.3f), %lld "
                    "tokens, %lld rows\n",
                    tokenizer, seconds, d.train.stats.read_s, d.train.stats.encode_s, d.train.stats.pack_s,
                    (long long)d.train.stats.tokens, (long long)d.train.num_rows());
        EXPECT_LT(seconds, 5.0);
        EXPECT_EQ(d.train.stats.records, 999);
        EXPECT_EQ(d.train.stats.samples, 999);
        EXPECT_GT(d.train.stats.trained_tokens, d.train.stats.tokens / 2);
        EXPECT_GT(d.train.efficiency(1), 0.95);
        // Every packed row is a valid batch.
        DataLoader loader(d.train, 2);
        BatchData b;
        for (int i = 0; i < 5; i++) {
            loader.next(&b);
            EXPECT_EQ(b.T, 2048);
            for (size_t t = 0; t + 1 < b.tokens.size(); t++)
                if (b.seg_start[t + 1] != b.seg_start[t]) ASSERT_EQ(b.targets[t], -100);
        }
    }
}

// Continued pre-training on tiny Shakespeare: BOS (the stories tokenizer adds one) + text + EOS,
// split into max_length pieces, every token trained.
TEST(DataReal, PlainTextPretraining) {
    TUNER_REQUIRE_SHARED_DATA(data);
    auto tok = Tokenizer::load(data + "/stories260K/hf");
    DataConfig cfg;
    DataSource s;
    s.path = data + "/text/input.txt";
    cfg.train = {s};
    cfg.max_length = 256;
    Datasets d = build_datasets(cfg, *tok, {});
    EXPECT_EQ(d.train.stats.records, 1);
    EXPECT_EQ(d.train.stats.text_split, 1);
    const SampleSet& ss = *d.train.samples;
    EXPECT_EQ(ss.tokens_of(0)[0], tok->bos_id());
    EXPECT_EQ(ss.tokens_of(ss.size() - 1)[ss.length(ss.size() - 1) - 1], tok->eos_id());
    EXPECT_EQ(d.train.stats.trained_tokens, d.train.stats.tokens - ss.size());
    EXPECT_GT(d.train.efficiency(1), 0.99);
}
