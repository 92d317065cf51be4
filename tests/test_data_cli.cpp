// `tuner data` and `tuner templates` end to end: a sensible summary of the alpaca demo set with a
// shipped tokenizer, rendered samples with [[...]] markers when not on a terminal, and every kind
// of bad input ending with one line that says where and what, and a non-zero exit.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "testing.h"

using tuner::testing::make_temp_dir;
using tuner::testing::run_command;
using tuner::testing::tuner_exe;

namespace {

std::string write(const std::string& path, const std::string& text) {
    std::ofstream(path) << text;
    return path;
}

void expect_has(const std::string& out, const std::vector<std::string>& needles) {
    for (const auto& n : needles) EXPECT_NE(out.find(n), std::string::npos) << "missing '" << n << "' in:\n" << out;
}

// Runs tuner, expects failure with exactly one line of output containing each needle.
void expect_one_line_error(const std::string& args, const std::vector<std::string>& needles) {
    std::string out;
    int rc = run_command(tuner_exe() + " " + args, &out);
    EXPECT_EQ(rc, 1) << out;
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
    expect_has(out, needles);
}

}  // namespace

TEST(DataCli, AlpacaDemoSummary) {
    TUNER_REQUIRE_SHARED_DATA(data);
    std::string dir = make_temp_dir("datacli");
    std::string cfg = write(dir + "/t.yaml", "model: " + data + "/stories260K/hf\n" +
                                                 "data:\n  train:\n    - {path: " + data +
                                                 "/datasets/llamafactory-demo/alpaca_en_demo.json, format: alpaca}\n"
                                                 "  max_length: 512\n  eval_ratio: 0.02\n");
    std::string out;
    ASSERT_EQ(0, run_command(tuner_exe() + " data " + cfg + " --show 2", &out)) << out;
    expect_has(out, {"template      default (auto:", "alpaca, 999 records", "records       999", "samples       979", "truncated",
                     "tokens        ", "lengths       min", "packing       ", "efficiency 9", "eval (data.eval_ratio",
                     "records       20", "prepared in", "--- sample 1 (", "alpaca_en_demo.json:2, 1 turn",
                     "--- sample 2 (", "<|User|>:Describe a process of making crepes.", "[[Making crepes"});
    EXPECT_EQ(out.find("\x1b["), std::string::npos) << "no colour when stdout is not a terminal";
    // The example config in configs/ works from the source folder.
    if (std::ifstream(std::string(TUNER_SOURCE_DIR) + "/../shared/data/INDEX.md")) {
        ASSERT_EQ(0, run_command("cd " + std::string(TUNER_SOURCE_DIR) + " && " + tuner_exe() +
                                     " data configs/data-alpaca-stories.yaml --show 0",
                                 &out))
            << out;
        expect_has(out, {"samples       979", "packing"});
    }
}

TEST(DataCli, OverridesAndTokenizerFolder) {
    TUNER_REQUIRE_SHARED_DATA(data);
    std::string dir = make_temp_dir("datacli");
    std::string cfg = write(dir + "/t.yaml", "data:\n  tokenizer: " + data + "/tokenizers/qwen2.5-hf\n" +
                                                 "  train: [" + data + "/datasets/llamafactory-demo/identity.json]\n");
    std::string out;
    ASSERT_EQ(0, run_command(tuner_exe() + " data " + cfg +
                                 " --set data.max_length=64 --set data.pack=false --show 1 --ids",
                             &out))
        << out;
    expect_has(out, {"template      qwen_chat", "records       91", "rows          91, one sample each",
                     "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n[[Hello! I am {{name}}",
                     "input_ids: 151644", "labels:    -100"});
}

TEST(DataCli, Templates) {
    std::string out;
    ASSERT_EQ(0, run_command(tuner_exe() + " templates", &out)) << out;
    for (const char* name : {"\ndefault\n", "\ninternlm2_chat\n", "\nqwen_chat\n", "\nllama3_chat\n", "\nllama2_chat\n",
                             "\nmistral\n", "\ngemma\n", "\nphi3_chat\n", "\nchatml\n"})
        EXPECT_NE(out.find(name), std::string::npos) << name;
    expect_has(out, {"instruction  \"<|im_start|>user\\n{input}<|im_end|>\\n<|im_start|>assistant\\n\""});
    ASSERT_EQ(0, run_command(tuner_exe() + " templates llama3_chat", &out)) << out;
    expect_has(out, {"example", "[[Hello!<|eot_id|>]]"});
    expect_one_line_error("templates qwen", {"unknown chat template 'qwen'"});
}

TEST(DataCli, BadInputIsOneLine) {
    TUNER_REQUIRE_SHARED_DATA(data);
    std::string dir = make_temp_dir("datacli");
    std::string tok = "  tokenizer: " + data + "/stories260K/hf\n";  // small: loads fast
    auto config = [&](const std::string& name, const std::string& body) { return write(dir + "/" + name, body); };
    std::string jsonl = write(dir + "/bad.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\",}\n");
    std::string missing = write(dir + "/missing.json", "[{\"instruction\": \"a\"}]");
    std::string utf8 = write(dir + "/utf8.jsonl", "{\"text\": \"caf\xe9\"}\n");
    std::string wrong = write(dir + "/wrong.json", "[{\"instruction\": \"a\", \"output\": [1]}]");
    std::string empty = write(dir + "/empty.jsonl", "\n");
    std::string good = write(dir + "/good.json", "[{\"instruction\": \"a\", \"output\": \"b\"}]");

    expect_one_line_error("data " + config("1.yaml", "data:\n" + tok + "  train: [" + jsonl + "]\n"),
                          {"error: [data] " + jsonl + ":2: invalid JSON"});
    expect_one_line_error("data " + config("2.yaml", "data:\n" + tok + "  train: [{path: " + missing + ", format: alpaca}]\n"),
                          {missing + ":1: alpaca record has no 'output' field"});
    expect_one_line_error("data " + config("3.yaml", "data:\n" + tok + "  train: [" + utf8 + "]\n"),
                          {utf8 + ":1: invalid UTF-8 at byte offset 13"});
    expect_one_line_error("data " + config("4.yaml", "data:\n" + tok + "  train: [" + wrong + "]\n"),
                          {wrong + ":1: 'output' should be a string, got a list"});
    expect_one_line_error("data " + config("5.yaml", "data:\n" + tok + "  train: [" + empty + "]\n"),
                          {"the training data gives no samples"});
    expect_one_line_error("data " + config("6.yaml", "data:\n" + tok + "  train: [" + good + "]\n  template: llama3_chat\n"),
                          {"template 'llama3_chat' needs '<|start_header_id|>' to be one token"});
    expect_one_line_error("data " + config("7.yaml", "data:\n" + tok + "  train: [" + good + "]\n  max_lenght: 5\n"),
                          {"7.yaml:4: unknown key 'data.max_lenght' (did you mean 'max_length'?)"});
    expect_one_line_error("data " + config("8.yaml", "data:\n" + tok + "  train: [" + dir + "/nope.json]\n"),
                          {dir + "/nope.json: no such file"});
    expect_one_line_error("data " + config("9.yaml", "data:\n" + tok + "  train: [" + good + "]\n") +
                              " --set data.max_length=huge",
                          {"--set data.max_length: data.max_length should be an integer, got 'huge'"});
    expect_one_line_error("data " + config("10.yaml", "data:\n  train: [" + good + "]\n"), {"no tokenizer"});
    expect_one_line_error("data " + config("11.yaml", "data: [\n"), {"11.yaml:"});
    expect_one_line_error("data " + dir + "/none.yaml", {"none.yaml: cannot open"});

    // on_error: skip counts the bad record and goes on.
    std::string out;
    ASSERT_EQ(0, run_command(tuner_exe() + " data " +
                                 config("12.yaml", "data:\n" + tok + "  train: [" + jsonl + "]\n  on_error: skip\n") +
                                 " --show 0",
                             &out))
        << out;
    expect_has(out, {"records       1 (+1 bad ones skipped)", "skipped: " + jsonl + ":2: invalid JSON"});
}
