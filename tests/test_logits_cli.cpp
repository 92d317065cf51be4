// `tuner logits` (the .npy of every position's logits), the ecosystem check tests/ref/hf_check.py
// in its --backend ref mode (our independent PyTorch reference instead of transformers + PEFT:
// the same comparison code the GPU machine runs against the real libraries), and
// `tuner init-model --config-only`.
//
// On ../shared/data/stories260K (skipped when the folder is absent). The Python parts need
// $TUNER_PYTHON or /usr/bin/python3 with torch and numpy (skipped with the reason otherwise).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "io/hf_config.h"
#include "models/llama.h"
#include "testing.h"

namespace fs = std::filesystem;
using tuner::testing::make_temp_dir;
using tuner::testing::run_command;
using tuner::testing::tuner_exe;

namespace {

const char* kIds = "1,403,407,261,378,1,29,100,200,300,400,500,511,0,2";

std::vector<int32_t> ids_vector() {
    std::vector<int32_t> v;
    std::string s = kIds;
    for (size_t i = 0; i < s.size();) {
        size_t j = s.find(',', i);
        if (j == std::string::npos) j = s.size();
        v.push_back(std::stoi(s.substr(i, j - i)));
        i = j + 1;
    }
    return v;
}

std::string python() {
    const char* env = std::getenv("TUNER_PYTHON");
    return env && *env ? env : "/usr/bin/python3";
}

// Why the Python checks cannot run here ("" when they can).
std::string python_skip_reason() {
    std::string out;
    if (run_command(python() + " -c 'import torch, numpy'", &out) != 0)
        return python() + " cannot import torch and numpy (apt install python3-torch python3-numpy): " + out;
    return "";
}

std::string hf_check() { return python() + " " TUNER_SOURCE_DIR "/tests/ref/hf_check.py"; }

struct Npy {
    std::vector<int64_t> shape;
    std::string descr;
    bool fortran = true;
    size_t header_bytes = 0;
    std::vector<float> data;
};

// A minimal reader for what `tuner logits` writes (format 1.0, '<f4'): checks the magic, the
// version, the 64-byte alignment numpy's writer uses, and parses descr / fortran_order / shape.
Npy read_npy(const std::string& path) {
    Npy n;
    const std::string bytes = tuner::testing::read_file(path);
    EXPECT_GE(bytes.size(), 10u);
    if (bytes.size() < 10) return n;
    EXPECT_EQ(bytes.substr(0, 6), std::string("\x93NUMPY"));
    EXPECT_EQ(bytes[6], 1);
    EXPECT_EQ(bytes[7], 0);
    const size_t hlen = size_t(uint8_t(bytes[8])) | size_t(uint8_t(bytes[9])) << 8;
    n.header_bytes = 10 + hlen;
    EXPECT_EQ(n.header_bytes % 64, 0u) << "numpy aligns the data to 64 bytes";
    const std::string h = bytes.substr(10, hlen);
    EXPECT_EQ(h.back(), '\n');
    auto value_of = [&](const std::string& key) {
        size_t p = h.find("'" + key + "': ");
        EXPECT_NE(p, std::string::npos) << key << " in " << h;
        return p == std::string::npos ? std::string() : h.substr(p + key.size() + 4);
    };
    std::string d = value_of("descr");
    n.descr = d.substr(1, d.find('\'', 1) - 1);
    n.fortran = value_of("fortran_order").rfind("True", 0) == 0;
    std::string s = value_of("shape");
    s = s.substr(1, s.find(')') - 1);
    for (size_t i = 0; i < s.size();) {
        size_t j = s.find(',', i);
        if (j == std::string::npos) j = s.size();
        std::string w = s.substr(i, j - i);
        if (w.find_first_not_of(' ') != std::string::npos) n.shape.push_back(std::stoll(w));
        i = j + 1;
    }
    const size_t count = (bytes.size() - n.header_bytes) / sizeof(float);
    n.data.resize(count);
    std::memcpy(n.data.data(), bytes.data() + n.header_bytes, count * sizeof(float));
    EXPECT_EQ((bytes.size() - n.header_bytes) % sizeof(float), 0u);
    return n;
}

int run_tuner(const std::string& args, std::string* out) { return run_command(tuner_exe() + " " + args + " 2>&1", out); }

}  // namespace

TEST(LogitsCli, WritesTheModelsLogitsAsNpy) {
    TUNER_REQUIRE_SHARED_DATA(data);
    const std::string model = data + "/stories260K/hf";
    const std::string dir = make_temp_dir("logits-npy");
    std::string out;
    ASSERT_EQ(0, run_tuner("logits " + model + " --ids " + kIds + " --out " + dir + "/l.npy", &out)) << out;
    EXPECT_CONTAINS(out, "logits (15, 512) float32");
    const Npy n = read_npy(dir + "/l.npy");
    EXPECT_EQ(n.descr, "<f4");
    EXPECT_FALSE(n.fortran);
    ASSERT_EQ(n.shape, (std::vector<int64_t>{15, 512}));
    ASSERT_EQ(n.data.size(), 15u * 512u);

    // The same numbers as the model computes in-process (the file is the logits, row-major).
    tuner::ModelOptions mo;
    mo.trainable = false;
    auto m = tuner::LlamaModel::load(model, mo);
    const std::vector<float> expect = tuner::testing::logits_of(*m, ids_vector());
    EXPECT_EQ(tuner::testing::max_abs_diff(n.data, expect), 0.0f);
}

TEST(LogitsCli, MatchesTheIndependentReference) {
    TUNER_REQUIRE_SHARED_DATA(data);
    const std::string skip = python_skip_reason();
    if (!skip.empty()) GTEST_SKIP() << skip;
    const std::string model = data + "/stories260K/hf";
    const std::string dir = make_temp_dir("logits-ref");
    std::string out;
    ASSERT_EQ(0, run_tuner("logits " + model + " --ids " + kIds + " --out " + dir + "/base.npy", &out)) << out;
    // llama_ref.py in float64 vs our f32: the relative tolerance 1e-4 of max|logit| is ~100x the
    // f32 rounding seen (7e-7) and far below any real error (a wrong RoPE or norm is O(1)).
    ASSERT_EQ(0, run_command(hf_check() + " --backend ref --base " + model + " --ids " + kIds + " --logits " + dir +
                                 "/base.npy --tol 1e-4 --min-argmax 1 2>&1",
                             &out))
        << out;
    EXPECT_CONTAINS(out, "tuner(base)");
    EXPECT_CONTAINS(out, "hf_check: ok");
}

TEST(LogitsCli, TextPrintsTheIds) {
    TUNER_REQUIRE_SHARED_DATA(data);
    const std::string dir = make_temp_dir("logits-text");
    std::string out;
    ASSERT_EQ(0, run_tuner("logits " + data + "/stories260K/hf --text 'Once upon a time' --out " + dir + "/t.npy", &out))
        << out;
    // BOS (the tokenizer adds one) + the text's tokens.
    EXPECT_CONTAINS(out, "ids 1,");
    const Npy n = read_npy(dir + "/t.npy");
    ASSERT_EQ(n.shape.size(), 2u);
    const size_t ids_at = out.find("ids ");
    ASSERT_NE(ids_at, std::string::npos);
    const std::string ids = out.substr(ids_at + 4, out.find('\n', ids_at) - ids_at - 4);
    EXPECT_EQ(n.shape[0], int64_t(std::count(ids.begin(), ids.end(), ',') + 1)) << ids;
    EXPECT_EQ(n.shape[1], 512);
}

TEST(LogitsCli, ErrorsAreMessages) {
    TUNER_REQUIRE_SHARED_DATA(data);
    const std::string model = data + "/stories260K/hf";
    const std::string dir = make_temp_dir("logits-errors");
    const std::string o = " --out " + dir + "/x.npy";
    struct Case {
        std::string args, message;
    };
    const std::vector<Case> cases = {
        {"logits " + model + " --ids 1,x,3" + o, "[logits] --ids: token 2 ('x') is not an integer"},
        {"logits " + model + " --ids 1,512" + o, "[logits] --ids: token 2 is id 512, outside the model's vocabulary [0, 512)"},
        {"logits " + model + " --ids -1" + o, "outside the model's vocabulary"},
        {"logits " + model + " --ids ,," + o, "[logits] --ids: no token ids"},
        {"logits " + model + o, "[logits] give --ids 1,2,3 or --text"},
        {"logits " + dir + "/no-such-model --ids 1" + o, "[logits] " + dir + "/no-such-model: no such model folder or file"},
        {"logits " + model + " --ids 1 --device tpu" + o, "[logits] --device tpu: expected cpu or cuda"},
        {"logits " + model + " --ids 1 --out " + dir + "/no-dir/x.npy", "cannot create"},
        {"logits " + model + " --adapter " + dir + " --ids 1" + o, "adapter_config.json"},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.args);
        std::string out;
        EXPECT_EQ(1, run_tuner(c.args, &out)) << out;
        EXPECT_CONTAINS(out, c.message);
        EXPECT_EQ(out.find("internal error"), std::string::npos) << out;
    }
    EXPECT_FALSE(fs::exists(dir + "/x.npy")) << "nothing is written on an error";
    // --device cuda without a device says why (on a GPU machine it runs instead).
    std::string out;
    const int rc = run_tuner("logits " + model + " --ids 1,2 --device cuda" + o, &out);
    if (rc != 0) EXPECT_CONTAINS(out, "[logits] --device cuda: no CUDA device");
}

// The ecosystem check end to end on our own reference: train a LoRA with `tuner train` (the config
// scripts/gpu-check.sh uses), merge it with `tuner merge`, write both logits with `tuner logits`,
// and compare them with hf_check.py --backend ref (llama_ref.py + lora_ref.py in float64).
TEST(EcosystemCheck, TrainMergeLogitsAgainstTheReference) {
    TUNER_REQUIRE_SHARED_DATA(data);
    const std::string skip = python_skip_reason();
    if (!skip.empty()) GTEST_SKIP() << skip;
    const std::string model = data + "/stories260K/hf";
    const std::string dir = make_temp_dir("ecosystem");
    std::string out;
    // The config's data path is ../shared/data/... relative to the checkout, like the script's.
    ASSERT_EQ(0, run_command("cd " TUNER_SOURCE_DIR " && " + tuner_exe() +
                                 " train tests/data/lora-stories-check.yaml --threads 2 --set model=" + model +
                                 " --set output_dir=" + dir + "/run 2>&1",
                             &out))
        << out;
    const std::string adapter = dir + "/run/adapter";
    ASSERT_TRUE(fs::exists(adapter + "/adapter_model.safetensors")) << out;
    ASSERT_EQ(0, run_tuner("merge " + model + " " + adapter + " " + dir + "/merged", &out)) << out;
    ASSERT_EQ(0, run_tuner("logits " + model + " --adapter " + adapter + " --ids " + kIds + " --out " + dir + "/adapter.npy",
                       &out))
        << out;
    ASSERT_EQ(0, run_tuner("logits " + dir + "/merged --ids " + kIds + " --out " + dir + "/merged.npy", &out)) << out;
    ASSERT_EQ(0, run_tuner("logits " + model + " --ids " + kIds + " --out " + dir + "/base.npy", &out)) << out;

    const std::string inputs = " --base " + model + " --adapter " + adapter + " --merged " + dir + "/merged --ids " + kIds;
    const std::string common = hf_check() + " --backend ref" + inputs;
    const std::string files = " --logits " + dir + "/adapter.npy --merged-logits " + dir + "/merged.npy";
    // Tolerance 1e-4 of max|logit|: f32 vs the float64 reference differ by ~1e-6 (merged weights
    // are rounded to f32 once more); a wrong scale, a transposed B A or a missed module is O(0.1).
    ASSERT_EQ(0, run_command(common + files + " --base-logits " + dir + "/base.npy --tol 1e-4 2>&1", &out)) << out;
    EXPECT_CONTAINS(out, "tuner(base+adapter)");
    EXPECT_CONTAINS(out, "tuner(merged)");
    EXPECT_CONTAINS(out, "adapter effect");
    EXPECT_CONTAINS(out, "hf_check: ok (3 comparisons");

    // A wrong answer fails: the base's logits given as base + adapter's.
    EXPECT_EQ(1, run_command(common + " --logits " + dir + "/base.npy --merged-logits " + dir + "/merged.npy 2>&1", &out))
        << out;
    EXPECT_CONTAINS(out, "FAILED");

    // Inputs that do not fit are "cannot run" (2), not a failed comparison.
    EXPECT_EQ(2, run_command(hf_check() + " --backend ref --base " + model + " --ids 1,2 --logits " + dir +
                                 "/base.npy 2>&1",
                             &out))
        << out;
    EXPECT_CONTAINS(out, "shape (15, 512), expected (T, V) = (2, 512)");

    // The default backend needs transformers + peft: without them it says so and exits 2.
    std::string probe;
    if (run_command(python() + " -c 'import transformers, peft' 2>&1", &probe) != 0) {
        EXPECT_EQ(2, run_command(hf_check() + inputs + files + " 2>&1", &out)) << out;
        EXPECT_CONTAINS(out, "is not installed");
        EXPECT_CONTAINS(out, "--backend ref");
    }
}

TEST(InitModelCli, ConfigOnlyWritesNoWeights) {
    const std::string dir = make_temp_dir("init-config-only");
    std::string out;
    ASSERT_EQ(0, run_tuner("init-model llama-7b " + dir + "/m --config-only --dtype bf16", &out)) << out;
    EXPECT_CONTAINS(out, "no weights");
    EXPECT_TRUE(fs::exists(dir + "/m/config.json"));
    EXPECT_FALSE(fs::exists(dir + "/m/model.safetensors"));
    const tuner::ModelConfig c = tuner::load_config(dir + "/m/config.json");
    EXPECT_EQ(c.hidden_size, 4096);
    EXPECT_EQ(c.num_layers, 32);
    EXPECT_EQ(c.vocab_size, 32000);
    EXPECT_EQ(c.torch_dtype, "bfloat16");

    // With --tokenizer the tokenizer comes along and sets the vocabulary, as without --config-only.
    ASSERT_EQ(0, run_tuner("init-model tiny " + dir + "/t --config-only --tokenizer bytes", &out)) << out;
    EXPECT_TRUE(fs::exists(dir + "/t/tokenizer.json"));
    EXPECT_FALSE(fs::exists(dir + "/t/model.safetensors"));
    EXPECT_EQ(tuner::load_config(dir + "/t/config.json").vocab_size, 260);

    // The same config as a full init-model writes (so a framework builds the same shape).
    ASSERT_EQ(0, run_tuner("init-model tiny " + dir + "/full --tokenizer bytes", &out)) << out;
    EXPECT_EQ(tuner::testing::read_file(dir + "/t/config.json"), tuner::testing::read_file(dir + "/full/config.json"));

    // Into a folder that holds weights: refused (the config would not describe them).
    EXPECT_EQ(1, run_tuner("init-model llama-7b " + dir + "/full --config-only", &out)) << out;
    EXPECT_CONTAINS(out, "holds a model.safetensors");
}
