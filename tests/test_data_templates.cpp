// Chat templates and label masking: golden rendered samples for every template (a byte-per-token
// fake tokenizer, so the rendered text fixes the token sequence and [[...]] fixes the label mask),
// exact token/label sequences for a few, per-turn masking, and template/tokenizer mismatches.
#include <gtest/gtest.h>

#include "core/error.h"
#include "data/samples.h"
#include "data/templates.h"
#include "test_data_fake.h"

using namespace tuner;
using tuner::testing::FakeTokenizer;

namespace {

Record two_turns() {
    Record r;
    r.turns = {Turn{"S", "Q1", "A1", true}, Turn{"", "Q2", "A2", true}};
    return r;
}

std::string render(const Record& r, const std::string& tmpl, const Tokenizer& tok, int add_bos = -1) {
    std::vector<int32_t> tokens, labels;
    encode_chat(r, get_chat_template(tmpl), tok, encode_options_for(tok, add_bos), &tokens, &labels);
    EXPECT_EQ(tokens.size(), labels.size());
    return render_sample(tokens.data(), labels.data(), int64_t(tokens.size()), tok, RenderStyle::Markers);
}

const FakeTokenizer& fake() {
    static FakeTokenizer tok(tuner::testing::all_template_specials());
    return tok;
}

}  // namespace

// Golden renders. BOS: the fake tokenizer defines <s>, so (as the reference) every sample starts
// with it and, for templates that append EOS, every turn after an EOS starts with it again.
TEST(DataTemplates, GoldenRenders) {
    const std::string llama2_sys =
        "[INST] <<SYS>>\n You are a helpful, respectful and honest assistant. Always answer as helpfully as "
        "possible, while being safe. Your answers should not include any harmful, unethical, racist, sexist, toxic, "
        "dangerous, or illegal content. Please ensure that your responses are socially unbiased and positive in "
        "nature.\nS\n<</SYS>>\n [/INST] ";
    const std::string im =
        "<s><|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\n[[A1<|im_end|>]]\n"
        "<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n[[A2<|im_end|>]]\n";
    std::vector<std::pair<std::string, std::string>> golden = {
        {"default", "<s><|System|>:S\n<|User|>:Q1\n<|Bot|>:[[A1</s>]]\n<s><|User|>:Q2\n<|Bot|>:[[A2</s>]]\n"},
        {"internlm2_chat", im},
        {"qwen_chat", im},
        {"chatml", im},
        {"llama3_chat",
         "<s><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nQ1"
         "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n[[A1<|eot_id|>]]<|start_header_id|>user"
         "<|end_header_id|>\n\nQ2<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n[[A2<|eot_id|>]]"},
        {"llama2_chat", "<s>" + llama2_sys + "[INST] Q1 [/INST][[A1</s>]]\n<s>[INST] Q2 [/INST][[A2</s>]]\n"},
        {"mistral", "<s>[INST] S [/INST]\n[INST] Q1 [/INST][[A1</s>]]\n<s>[INST] Q2 [/INST][[A2</s>]]\n"},
        {"gemma",
         "<s><start_of_turn>system\nS<end_of_turn>\n<start_of_turn>user\nQ1<end_of_turn>\n<start_of_turn>model\n"
         "[[A1<end_of_turn></s>]]\n<s><start_of_turn>user\nQ2<end_of_turn>\n<start_of_turn>model\n"
         "[[A2<end_of_turn></s>]]\n"},
        {"phi3_chat",
         "<s><|system|>\nS<|end|>\n<|user|>\nQ1<|end|>\n<|assistant|>\n[[A1<|end|>]]\n<|user|>\nQ2<|end|>\n"
         "<|assistant|>\n[[A2<|end|>]]\n"},
        {"zephyr", "<s><|system|>\nS\n<|user|>\nQ1\n<|assistant|>\n[[A1</s>]]\n<s><|user|>\nQ2\n<|assistant|>\n[[A2</s>]]\n"},
        {"chatglm2",
         "<s>S\n[Round 1]\n\n\xE9\x97\xAE\xEF\xBC\x9AQ1\n\n\xE7\xAD\x94\xEF\xBC\x9A[[A1</s>]]\n\n<s>[Round 2]\n\n"
         "\xE9\x97\xAE\xEF\xBC\x9AQ2\n\n\xE7\xAD\x94\xEF\xBC\x9A[[A2</s>]]\n\n"},
        {"code_llama_chat", "<s>S\n[INST] Q1 [/INST][[A1</s>]]<s>[INST] Q2 [/INST][[A2</s>]]"},
        {"cohere_chat",
         "<s><|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>S<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Q1"
         "<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>[[A1<|END_OF_TURN_TOKEN|>]]"
         "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>Q2<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"
         "[[A2<|END_OF_TURN_TOKEN|>]]"},
    };
    for (const auto& [name, expected] : golden) EXPECT_EQ(render(two_turns(), name, fake()), expected) << name;
}

// Every template renders, checks against a tokenizer that has all their specials, and keeps its
// placeholders.
TEST(DataTemplates, EveryTemplateRendersAndChecks) {
    for (const auto& t : chat_templates()) {
        EXPECT_NE(t.system.find("{system}"), std::string::npos) << t.name;
        EXPECT_NE(t.instruction.find("{input}"), std::string::npos) << t.name;
        EXPECT_NO_THROW(check_template(t, fake(), "fake")) << t.name;
        std::string r = render(two_turns(), t.name, fake());
        EXPECT_NE(r.find("[[A1"), std::string::npos) << t.name << ": " << r;
        EXPECT_NE(r.find("[[A2"), std::string::npos) << t.name << ": " << r;
        EXPECT_EQ(r.find("{input}"), std::string::npos) << t.name;
    }
    for (const char* name : {"default", "internlm2_chat", "qwen_chat", "llama3_chat", "llama2_chat", "mistral", "gemma",
                             "phi3_chat", "chatml"})
        EXPECT_NE(find_chat_template(name), nullptr) << name;
}

// Exact tokens and labels for a one-turn chatml sample with a tokenizer that has no BOS.
TEST(DataTemplates, ExactTokensAndLabels) {
    FakeTokenizer tok({"<|im_start|>", "<|im_end|>"}, "", "<|endoftext|>", false);
    Record r;
    r.turns = {Turn{"", "hi", "yo", true}};
    std::vector<int32_t> tokens, labels;
    encode_chat(r, get_chat_template("chatml"), tok, encode_options_for(tok, -1), &tokens, &labels);
    const int32_t S = tok.id("<|im_start|>"), E = tok.id("<|im_end|>"), X = -100;
    std::vector<int32_t> expect_tokens = {S, 'u', 's', 'e', 'r', '\n', 'h', 'i', E, '\n', S, 'a', 's', 's', 'i',
                                          's', 't', 'a', 'n', 't', '\n', 'y', 'o', E, '\n'};
    std::vector<int32_t> expect_labels(expect_tokens.size(), X);
    expect_labels[21] = 'y', expect_labels[22] = 'o', expect_labels[23] = E;
    EXPECT_EQ(tokens, expect_tokens);
    EXPECT_EQ(labels, expect_labels);
}

// A Llama-2 style tokenizer (adds BOS) with the default template: BOS and EOS per turn, EOS trained.
TEST(DataTemplates, ExactTokensDefaultTemplate) {
    FakeTokenizer tok;
    Record r;
    r.turns = {Turn{"", "a", "b", true}, Turn{"", "c", "d", false}};
    std::vector<int32_t> tokens, labels;
    encode_chat(r, get_chat_template("default"), tok, encode_options_for(tok, -1), &tokens, &labels);
    const int32_t B = tok.bos_id(), E = tok.eos_id(), X = -100;
    auto bytes = [](const std::string& s) { return std::vector<int32_t>(s.begin(), s.end()); };
    std::vector<int32_t> want, want_labels;
    auto add = [&](const std::vector<int32_t>& ids, bool trained) {
        want.insert(want.end(), ids.begin(), ids.end());
        for (int32_t id : ids) want_labels.push_back(trained ? id : X);
    };
    add({B}, false);
    add(bytes("<|User|>:a\n<|Bot|>:"), false);
    add(bytes("b"), true);
    add({E}, true);
    add(bytes("\n"), false);
    add({B}, false);
    add(bytes("<|User|>:c\n<|Bot|>:"), false);
    add(bytes("d"), false);  // loss: false
    add({E}, false);
    add(bytes("\n"), false);
    EXPECT_EQ(tokens, want);
    EXPECT_EQ(labels, want_labels);
}

// Every assistant turn is trained, each on its own; loss false masks only its turn.
TEST(DataTemplates, PerTurnMasking) {
    Record r;
    r.turns = {Turn{"", "q1", "a1", true}, Turn{"", "q2", "a2", false}, Turn{"", "q3", "a3", true}};
    EXPECT_EQ(render(r, "qwen_chat", fake()),
              "<s><|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\n[[a1<|im_end|>]]\n"
              "<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\na2<|im_end|>\n"
              "<|im_start|>user\nq3<|im_end|>\n<|im_start|>assistant\n[[a3<|im_end|>]]\n");
    // The system block appears only for a turn with a non-empty system text.
    Record s;
    s.turns = {Turn{"", "q", "a", true}, Turn{"sys2", "q", "a", true}};
    EXPECT_EQ(render(s, "mistral", fake(), 0),
              "[INST] q [/INST][[a</s>]]\n[INST] sys2 [/INST]\n[INST] q [/INST][[a</s>]]\n");
}

// Text inside the values is not expanded again; {round} counts turns.
TEST(DataTemplates, PlaceholdersAreReplacedOnce) {
    const ChatTemplate& t = get_chat_template("chatglm2");
    EXPECT_EQ(template_instruction(t, "{input} {round}", 3),
              "[Round 3]\n\n\xE9\x97\xAE\xEF\xBC\x9A{input} {round}\n\n\xE7\xAD\x94\xEF\xBC\x9A");
    EXPECT_EQ(template_system(get_chat_template("default"), "{system}"), "<|System|>:{system}\n");
}

TEST(DataTemplates, TextRecordsAreAllTrainedWithEos) {
    FakeTokenizer tok;  // adds BOS
    Record r;
    r.is_text = true;
    r.text = "hey";
    std::vector<int32_t> tokens, labels;
    encode_text(r, tok, encode_options_for(tok, -1), &tokens, &labels);
    EXPECT_EQ(tokens, (std::vector<int32_t>{tok.bos_id(), 'h', 'e', 'y', tok.eos_id()}));
    EXPECT_EQ(labels, tokens);
    FakeTokenizer nobos({}, "<s>", "</s>", /*adds_bos=*/false);
    tokens.clear(), labels.clear();
    encode_text(r, nobos, encode_options_for(nobos, -1), &tokens, &labels);
    EXPECT_EQ(tokens, (std::vector<int32_t>{'h', 'e', 'y', nobos.eos_id()}));
}

TEST(DataTemplates, MismatchedTokenizerIsAClearError) {
    FakeTokenizer plain;  // no chat tokens
    try {
        check_template(get_chat_template("qwen_chat"), plain, "in /models/x");
        FAIL() << "expected an error";
    } catch (const Error& e) {
        std::string m = e.what();
        EXPECT_NE(m.find("template 'qwen_chat'"), std::string::npos) << m;
        EXPECT_NE(m.find("'<|im_start|>'"), std::string::npos) << m;
        EXPECT_NE(m.find("/models/x"), std::string::npos) << m;
    }
    FakeTokenizer noeos({}, "<s>", "", true);
    EXPECT_THROW(check_template(get_chat_template("default"), noeos, "x"), Error);
    try {
        get_chat_template("qwen_caht");
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("did you mean 'qwen_chat'"), std::string::npos) << e.what();
    }
}

TEST(DataTemplates, AutoFromVocabulary) {
    FakeTokenizer llama3({"<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"});
    EXPECT_EQ(auto_chat_template("", "", llama3).tmpl->name, "llama3_chat");
    FakeTokenizer chatml({"<|im_start|>", "<|im_end|>"});
    EXPECT_EQ(auto_chat_template("", "", chatml).tmpl->name, "chatml");
    FakeTokenizer plain;
    EXPECT_EQ(auto_chat_template("", "", plain).tmpl->name, "default");
    EXPECT_EQ(choose_chat_template("gemma", "", "", plain).tmpl->name, "gemma");
}

TEST(DataTemplates, RenderColorMarksTrainedSpans) {
    FakeTokenizer tok;
    std::vector<int32_t> t = {'a', 'b', 'c'}, l = {-100, 'b', -100};
    EXPECT_EQ(render_sample(t.data(), l.data(), 3, tok, RenderStyle::Markers), "a[[b]]c");
    std::string c = render_sample(t.data(), l.data(), 3, tok, RenderStyle::Color);
    EXPECT_NE(c.find("\x1b[32mb\x1b[0m"), std::string::npos);
}
