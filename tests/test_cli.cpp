// The `tuner` program end to end: init-model -> info/perplexity/bench/generate work, and bad
// input ends with a one-line message naming the file and the problem and a non-zero exit.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "testing.h"

namespace fs = std::filesystem;
using tuner::testing::make_temp_dir;
using tuner::testing::run_command;
using tuner::testing::tuner_exe;

static std::string tiny_model() {
    static std::string dir;
    if (dir.empty()) {
        dir = make_temp_dir("cli") + "/tiny";
        std::string out;
        int rc = run_command(tuner_exe() + " init-model tiny " + dir + " --seed 3", &out);
        EXPECT_EQ(rc, 0) << out;
    }
    return dir;
}

static std::string copy_model(const std::string& name) {
    std::string dst = make_temp_dir(name) + "/m";
    fs::copy(tiny_model(), dst, fs::copy_options::recursive);
    return dst;
}

// Runs tuner, expects failure with exactly one line of output containing each needle.
static void expect_one_line_error(const std::string& args, const std::vector<std::string>& needles) {
    std::string out;
    int rc = run_command(tuner_exe() + " " + args, &out);
    EXPECT_NE(rc, 0) << out;
    EXPECT_LT(rc, 128) << "killed by a signal: " << out;
    size_t lines = std::count(out.begin(), out.end(), '\n');
    EXPECT_EQ(lines, 1u) << out;
    for (const auto& n : needles) EXPECT_NE(out.find(n), std::string::npos) << "missing '" << n << "' in: " << out;
}

TEST(Cli, InitModelThenPerplexityOfRandomModelIsNearVocab) {
    std::string dir = tiny_model();
    std::string ids = make_temp_dir("ids") + "/ids.txt";
    {
        std::ofstream f(ids);
        for (int i = 0; i < 600; i++) f << (i * 37 + 11) % 512 << (i % 20 == 19 ? "\n" : " ");
    }
    std::string out;
    ASSERT_EQ(0, run_command(tuner_exe() + " perplexity " + dir + " --ids " + ids + " --ctx 128 --json", &out)) << out;
    auto j = nlohmann::json::parse(out);
    // 600 tokens in windows of 128: 4 full windows (127 scored each) + one of 88 (87 scored).
    EXPECT_EQ(j["tokens"].get<int>(), 4 * 127 + 87);
    // A random init (std 0.02) gives nearly uniform predictions: ppl close to the vocab size 512.
    EXPECT_GT(j["ppl"].get<double>(), 400.0);
    EXPECT_LT(j["ppl"].get<double>(), 650.0);
}

TEST(Cli, BenchJsonHasTheFields) {
    std::string out;
    ASSERT_EQ(0, run_command(tuner_exe() + " bench " + tiny_model() + " --seq 64 --steps 1 --threads 2 --json", &out))
        << out;
    auto j = nlohmann::json::parse(out);
    for (const char* k : {"tokens_per_s", "gflops", "peak_gflops", "mfu", "peak_rss_mb"})
        EXPECT_TRUE(j.contains(k)) << k;
    EXPECT_GT(j["tokens_per_s"].get<double>(), 0.0);
    EXPECT_GT(j["mfu"].get<double>(), 0.0);
}

TEST(Cli, MissingConfigKey) {
    std::string dir = copy_model("nokey");
    auto j = nlohmann::json::parse(std::ifstream(dir + "/config.json"));
    j.erase("hidden_size");
    std::ofstream(dir + "/config.json") << j.dump(2);
    expect_one_line_error("info " + dir, {"config.json", "hidden_size"});
}

TEST(Cli, UnknownArchitecture) {
    std::string dir = copy_model("arch");
    auto j = nlohmann::json::parse(std::ifstream(dir + "/config.json"));
    j["architectures"] = {"GPTNeoXForCausalLM"};
    std::ofstream(dir + "/config.json") << j.dump(2);
    expect_one_line_error("info " + dir, {"config.json", "GPTNeoXForCausalLM"});
}

TEST(Cli, TruncatedSafetensors) {
    std::string dir = copy_model("trunc");
    fs::resize_file(dir + "/model.safetensors", fs::file_size(dir + "/model.safetensors") - 1000);
    expect_one_line_error("info " + dir, {"model.safetensors"});
}

TEST(Cli, HeaderLiesAboutSizes) {
    std::string dir = copy_model("lies");
    std::string path = dir + "/model.safetensors";
    std::string bytes;
    {
        std::ifstream f(path, std::ios::binary);
        bytes.assign(std::istreambuf_iterator<char>(f), {});
    }
    // Make the first tensor claim a shape 4x larger than its byte range, keeping the header length.
    size_t at = bytes.find("\"shape\":[");
    ASSERT_NE(at, std::string::npos);
    size_t digit = at + 9;
    ASSERT_TRUE(bytes[digit] >= '1' && bytes[digit] <= '9');
    bytes[digit] = bytes[digit] == '9' ? '8' : char(bytes[digit] + 1);
    std::ofstream(path, std::ios::binary) << bytes;
    expect_one_line_error("info " + dir, {"model.safetensors"});
}

TEST(Cli, MissingModelFolder) { expect_one_line_error("info /nonexistent/model", {"/nonexistent/model"}); }

TEST(Cli, TokenIdOutsideVocabulary) {
    std::string ids = make_temp_dir("badids") + "/ids.txt";
    std::ofstream(ids) << "1 2 3 9999 4\n";
    expect_one_line_error("perplexity " + tiny_model() + " --ids " + ids, {ids, "9999"});
}

TEST(Cli, GenerateProducesTokens) {
    std::string out;
    ASSERT_EQ(0, run_command(tuner_exe() + " generate " + tiny_model() + " --prompt-ids '1 5 7' --max-new-tokens 5", &out))
        << out;
    std::istringstream in(out);
    int v, n = 0;
    while (in >> v) n++;
    EXPECT_EQ(n, 5) << out;
}

TEST(Cli, InitModelTakesVocabularyFromTokenizer) {
    TUNER_REQUIRE_SHARED_DATA(data);
    struct Case {
        std::string tokenizer_dir;
        int64_t vocab, bos, eos;
        const char* file;
    } cases[] = {
        {data + "/stories260K/hf", 512, 1, 2, "tokenizer.json"},
        {data + "/tokenizers/llama2-sentencepiece", 32000, 1, 2, "tokenizer.model"},
        {data + "/tokenizers/llama3-hf", 128256, 128000, 128001, "tokenizer.json"},
    };
    for (const auto& c : cases) {
        std::string dir = make_temp_dir("tok") + "/m";
        std::string out;
        ASSERT_EQ(0, run_command(tuner_exe() + " init-model tiny " + dir + " --tokenizer " + c.tokenizer_dir, &out)) << out;
        auto j = nlohmann::json::parse(std::ifstream(dir + "/config.json"));
        EXPECT_EQ(j["vocab_size"].get<int64_t>(), c.vocab) << c.tokenizer_dir;
        EXPECT_EQ(j["bos_token_id"].get<int64_t>(), c.bos) << c.tokenizer_dir;
        EXPECT_EQ(j["eos_token_id"].get<int64_t>(), c.eos) << c.tokenizer_dir;
        EXPECT_TRUE(fs::exists(dir + "/" + c.file)) << c.tokenizer_dir;
    }
}

TEST(Cli, InitModelBf16IsHalfTheSizeAndLoads) {
    std::string dir = make_temp_dir("bf16") + "/m";
    std::string out;
    ASSERT_EQ(0, run_command(tuner_exe() + " init-model tiny " + dir + " --dtype bf16 --seed 3", &out)) << out;
    auto f32 = fs::file_size(tiny_model() + "/model.safetensors"), bf16 = fs::file_size(dir + "/model.safetensors");
    EXPECT_LT(bf16, f32 / 2 + 8192);
    EXPECT_EQ(nlohmann::json::parse(std::ifstream(dir + "/config.json"))["torch_dtype"], "bfloat16");
    ASSERT_EQ(0, run_command(tuner_exe() + " info " + dir, &out)) << out;
}

TEST(Cli, UnknownPresetListsTheKnownOnes) {
    expect_one_line_error("init-model huge-99b " + make_temp_dir("preset") + "/m", {"huge-99b", "smol-135m"});
}

TEST(Cli, InitModelWithTheProjectsByteTokenizer) {
    std::string dir = make_temp_dir("bytes") + "/m";
    std::string out;
    ASSERT_EQ(0, run_command(tuner_exe() + " init-model tiny " + dir + " --tokenizer bytes", &out)) << out;
    auto j = nlohmann::json::parse(std::ifstream(dir + "/config.json"));
    EXPECT_EQ(j["vocab_size"].get<int>(), 260);
    EXPECT_EQ(j["eos_token_id"].get<int>(), 257);
    // One token per byte (UTF-8 bytes included), specials matched whole.
    ASSERT_EQ(0, run_command(tuner_exe() + " tokenize " + dir + " --text \"$(printf 'h\\303\\251<|im_end|>')\"", &out))
        << out;
    EXPECT_EQ(out, "104 195 169 259\n");
}
