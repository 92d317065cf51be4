// The training memory plan (train/memory_plan.h): its model rows equal the arenas of a prepared
// model byte for byte (random tiny models in every mode, and the real stories260K folder), the
// optimizer row equals AdamW's arena, `tuner train --dry-run` prints the plan without loading any
// weight, a plan over train.memory_limit is refused before loading with the sizes named, and on
// a real run the measured peak RSS is within 15% of the plan.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "io/hf_config.h"
#include "models/llama.h"
#include "testing.h"
#include "train/adamw.h"
#include "train/memory_plan.h"
#include "train/train_config.h"

using namespace tuner;
namespace fs = std::filesystem;

namespace {

ModelConfig tiny(bool tied) {
    ModelConfig c;
    c.architecture = "LlamaForCausalLM", c.model_type = "llama";
    c.vocab_size = 100, c.hidden_size = 48, c.intermediate_size = 88, c.num_layers = 3;
    c.num_heads = 6, c.num_kv_heads = 2, c.head_dim = 8;
    c.rms_norm_eps = 1e-5, c.rope_theta = 10000.0, c.tie_word_embeddings = tied;
    c.max_position_embeddings = 256;
    return c;
}

struct Mode {
    std::string method;
    DType base;
    bool checkpointing;
    bool tied;
};

// The plan for `mode` against a model built and prepared the way the trainer does it.
void expect_plan_equals_arenas(const Mode& mode, int B, int T) {
    SCOPED_TRACE(mode.method + (mode.base == DType::BF16 ? " bf16" : " f32") +
                 (mode.checkpointing ? " checkpointing" : "") + (mode.tied ? " tied" : ""));
    MemoryPlanRequest r;
    r.model = tiny(mode.tied);
    r.method = mode.method;
    r.base_dtype = mode.base;
    LoraConfig lc;
    lc.r = 4, lc.lora_dropout = 0.1, lc.target_modules = {"q_proj", "k_proj", "o_proj", "up_proj"};
    if (mode.method != "full") r.lora = lc;
    r.B = B, r.T = T;
    r.gradient_checkpointing = mode.checkpointing;
    const TrainMemoryPlan p = plan_training_memory(r);

    ModelOptions o;
    o.trainable = mode.method == "full";
    o.weight_dtype = mode.method == "full" ? DType::F32 : mode.base;
    o.gradient_checkpointing = mode.checkpointing;
    auto m = LlamaModel::random(r.model, o, 1);
    if (mode.method != "full") m->enable_lora(lc);
    m->prepare(B, T, true);
    AdamW opt(m->trainable_params(), AdamWConfig{});
    const LlamaModel::ArenaBytes a = m->arena_bytes();
    EXPECT_EQ(p.weights, a.weights);
    EXPECT_EQ(p.adapters, a.adapters);
    EXPECT_EQ(p.grads, a.grads + a.adapter_grads);
    EXPECT_EQ(p.activations, a.activations);
    EXPECT_EQ(p.optimizer, opt.state_bytes());
    EXPECT_GT(p.activations_other, 0u);
    if (mode.checkpointing) EXPECT_LT(p.activations, p.activations_other);
    else EXPECT_GT(p.activations, p.activations_other);
}

std::string stories_dir() {
    std::string d = tuner::testing::shared_data_dir();
    return d.empty() ? "" : d + "/stories260K/hf";
}

// An alpaca dataset and a LoRA config over `model` in a fresh folder; returns the config path.
std::string write_run(const std::string& dir, const std::string& model, const std::string& extra) {
    {
        std::ofstream f(dir + "/data.jsonl");
        for (int i = 0; i < 24; i++)
            f << "{\"instruction\": \"Count to " << i << ".\", \"input\": \"\", \"output\": \"Once upon a time "
              << i << ".\"}\n";
    }
    std::ofstream f(dir + "/train.yaml");
    f << "model: " << model << "\noutput_dir: " << dir << "/out\n"
      << "data:\n  train: [{path: " << dir << "/data.jsonl, format: alpaca}]\n  template: default\n"
      << "  max_length: 64\n  pack: true\n"
      << "lora: {r: 8, lora_dropout: 0.1}\n"
      << "train: {batch_size: 2, grad_accum: 2, max_steps: 3, warmup_steps: 0, log_every: 1}\n"
      << "save: {every: 0}\n"
      << extra;
    return dir + "/train.yaml";
}

}  // namespace

TEST(MemoryPlan, ModelRowsEqualArenasOfAPreparedModel) {
    for (bool tied : {false, true})
        for (bool ck : {false, true}) {
            expect_plan_equals_arenas({"full", DType::F32, ck, tied}, 2, 19);
            expect_plan_equals_arenas({"lora", DType::F32, ck, tied}, 3, 11);
            expect_plan_equals_arenas({"lora", DType::BF16, ck, tied}, 1, 40);
        }
}

TEST(MemoryPlan, RealModelFolderLoadsAsPlanned) {
    const std::string dir = stories_dir();
    if (dir.empty()) GTEST_SKIP() << "../shared/data is not beside this checkout";
    for (DType base : {DType::F32, DType::BF16}) {
        MemoryPlanRequest r;
        r.model = load_config(dir + "/config.json");
        r.method = "lora";
        r.base_dtype = base;
        r.lora = LoraConfig{};
        r.B = 2, r.T = 128;
        const TrainMemoryPlan p = plan_training_memory(r);
        ModelOptions o;
        o.trainable = false;
        o.weight_dtype = base;
        auto m = LlamaModel::load(dir, o);
        m->enable_lora(*r.lora);
        m->prepare(r.B, r.T, true);
        const auto a = m->arena_bytes();
        EXPECT_EQ(p.weights, a.weights);
        EXPECT_EQ(p.adapters, a.adapters);
        EXPECT_EQ(p.activations, a.activations);
    }
}

TEST(MemoryPlan, PeakIsTheLargestPhase) {
    MemoryPlanRequest r;
    r.model = tiny(false);
    r.method = "lora";
    r.lora = LoraConfig{};
    r.base_rss = 10 << 20;
    r.model_file_bytes = size_t(1) << 30;  // a huge file makes loading the peak
    TrainMemoryPlan p = plan_training_memory(r);
    EXPECT_EQ(p.peak_phase, "load");
    EXPECT_EQ(p.peak, p.base + p.weights + p.model_files);
    r.model_file_bytes = 0;
    r.resume_file_bytes = size_t(2) << 30;
    p = plan_training_memory(r);
    EXPECT_EQ(p.peak_phase, "resume");
    r.resume_file_bytes = 0;
    p = plan_training_memory(r);
    EXPECT_EQ(p.peak_phase, "train");
    EXPECT_EQ(p.peak, p.base + p.weights + p.grads + p.adapters + p.activations + p.optimizer + p.scratch +
                          p.batches + p.eval + p.runtime);
    // NF4 (the qlora hook): n/2 bytes of codes + one f32 absmax per 64 for every frozen matrix.
    r.method = "qlora";
    r.base_dtype = DType::NF4;
    TrainMemoryPlan q = plan_training_memory(r);
    EXPECT_LT(q.weights, p.weights / 4);
}

TEST(MemoryPlan, OverTheLimitNamesTheSizesAndRemedies) {
    MemoryPlanRequest r;
    r.model = tiny(false);
    r.method = "full";
    r.B = 4, r.T = 128;
    const TrainMemoryPlan p = plan_training_memory(r);
    std::string msg = tuner::testing::error_of([&] { check_memory_fits(p, p.peak - 1, "train.memory_limit"); });
    EXPECT_CONTAINS(msg, "[memory]");
    EXPECT_CONTAINS(msg, "weights " + format_bytes(p.weights));
    EXPECT_CONTAINS(msg, "= peak " + format_bytes(p.peak));
    EXPECT_CONTAINS(msg, "> available " + format_bytes(p.peak - 1) + " (train.memory_limit)");
    EXPECT_CONTAINS(msg, "method: lora");
    EXPECT_CONTAINS(msg, "train.gradient_checkpointing: true");
    EXPECT_CONTAINS(msg, "train.batch_size");
    check_memory_fits(p, p.peak, "x");  // fits exactly: no error
    check_memory_fits(p, 0, "unknown");  // unknown: no check
}

TEST(MemoryPlan, ByteSizes) {
    size_t b = 0;
    EXPECT_TRUE(parse_byte_size("8GiB", &b));
    EXPECT_EQ(b, size_t(8) << 30);
    EXPECT_TRUE(parse_byte_size("512 MiB", &b));
    EXPECT_EQ(b, size_t(512) << 20);
    EXPECT_TRUE(parse_byte_size("1.5G", &b));
    EXPECT_EQ(b, size_t(3) << 29);
    EXPECT_TRUE(parse_byte_size("2GB", &b));
    EXPECT_EQ(b, size_t(2000000000));
    EXPECT_TRUE(parse_byte_size("8e9", &b));
    EXPECT_EQ(b, size_t(8000000000));
    EXPECT_TRUE(parse_byte_size("4096", &b));
    EXPECT_EQ(b, size_t(4096));
    EXPECT_FALSE(parse_byte_size("lots", &b));
    EXPECT_FALSE(parse_byte_size("8 parsecs", &b));
    EXPECT_FALSE(parse_byte_size("", &b));
    EXPECT_GT(memory_available_bytes(), size_t(0));
}

TEST(MemoryPlan, ConfigKeys) {
    auto parse = [](const std::string& yaml) {
        return parse_train_config(config_parse(yaml, "t.yaml"));
    };
    const std::string base = "model: m\noutput_dir: o\ndata: {train: [{path: x}]}\n";
    EXPECT_FALSE(parse(base).train.gradient_checkpointing);
    EXPECT_FALSE(parse(base + "method: full\n").train.gradient_checkpointing);
    EXPECT_TRUE(parse(base + "train: {gradient_checkpointing: true}\n").train.gradient_checkpointing);
    EXPECT_TRUE(default_gradient_checkpointing("qlora"));
    EXPECT_FALSE(default_gradient_checkpointing("lora"));
    EXPECT_EQ(parse(base + "train: {memory_limit: 6GiB}\n").train.memory_limit, size_t(6) << 30);
    EXPECT_FALSE(parse(base + "train: {memory_limit: off}\n").train.memory_check);
    EXPECT_CONTAINS(tuner::testing::error_of([&] { parse(base + "train: {memory_limit: huge}\n"); }),
                    "train.memory_limit should be a size");
}

TEST(MemoryPlanCli, DryRunPrintsThePlanWithoutLoadingWeights) {
    const std::string stories = stories_dir();
    if (stories.empty()) GTEST_SKIP() << "../shared/data is not beside this checkout";
    // A model folder with config.json and the tokenizer but no weights at all: a dry run works,
    // a real run fails at loading.
    const std::string dir = tuner::testing::make_temp_dir("mem-dry");
    const std::string model = dir + "/model";
    fs::create_directories(model);
    for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"})
        if (fs::exists(stories + "/" + f)) fs::copy_file(stories + "/" + f, model + "/" + f);
    const std::string cfg = write_run(dir, model, "");
    std::string out;
    int rc = tuner::testing::run_command(tuner::testing::tuner_exe() + " train " + cfg + " --dry-run --threads 1", &out);
    ASSERT_EQ(rc, 0) << out;
    EXPECT_CONTAINS(out, "memory plan: lora, 2 x 64 tokens, gradient checkpointing off, 1 thread");
    for (const char* row : {"weights", "adapters", "gradients", "optimizer", "activations", "kernel scratch",
                            "program + data", "expected peak"})
        EXPECT_CONTAINS(out, row);
    EXPECT_CONTAINS(out, "fits: peak");
    EXPECT_CONTAINS(out, "dry run: stopping before loading the weights");
    EXPECT_FALSE(fs::exists(dir + "/out")) << "a dry run writes nothing";
    rc = tuner::testing::run_command(tuner::testing::tuner_exe() + " train " + cfg + " --threads 1", &out);
    EXPECT_NE(rc, 0) << out;
    EXPECT_CONTAINS(out, "model.safetensors");

    // Checkpointing shows up in the plan and shrinks the activations row.
    rc = tuner::testing::run_command(tuner::testing::tuner_exe() + " train " + cfg +
                                         " --dry-run --threads 1 --set train.gradient_checkpointing=true",
                                     &out);
    ASSERT_EQ(rc, 0) << out;
    EXPECT_CONTAINS(out, "gradient checkpointing on");
    EXPECT_CONTAINS(out, "checkpointing off would need");
}

TEST(MemoryPlanCli, OverTheLimitFailsBeforeLoading) {
    const std::string stories = stories_dir();
    if (stories.empty()) GTEST_SKIP() << "../shared/data is not beside this checkout";
    const std::string dir = tuner::testing::make_temp_dir("mem-limit");
    const std::string cfg = write_run(dir, stories, "method: full\n");
    std::string out;
    int rc = tuner::testing::run_command(
        tuner::testing::tuner_exe() + " train " + cfg + " --threads 1 --set train.memory_limit=2MiB", &out);
    EXPECT_NE(rc, 0) << out;
    EXPECT_CONTAINS(out, "[memory] this run needs more memory than there is: program and data");
    EXPECT_CONTAINS(out, "> available 2.00 MiB (train.memory_limit)");
    EXPECT_CONTAINS(out, "method: lora");
    EXPECT_EQ(out.find("model: "), std::string::npos) << "the model was loaded:\n" << out;
    // The dry run says the same without failing.
    rc = tuner::testing::run_command(
        tuner::testing::tuner_exe() + " train " + cfg + " --threads 1 --dry-run --set train.memory_limit=2MiB", &out);
    EXPECT_EQ(rc, 0) << out;
    EXPECT_CONTAINS(out, "does not fit: [memory]");
}

// The prediction against the measured peak RSS of real runs (stories260K: the program and data
// dominate; the model is tiny). Within 15% either way.
TEST(MemoryPlanCli, MeasuredPeakIsWithin15PercentOfThePlan) {
    const std::string stories = stories_dir();
    if (stories.empty()) GTEST_SKIP() << "../shared/data is not beside this checkout";
    const std::pair<const char*, const char*> runs[] = {{"method: lora\n", ""},
                                                        {"method: full\n", " --set train.gradient_checkpointing=true"}};
    for (const auto& [extra, sets] : runs) {
        const std::string dir = tuner::testing::make_temp_dir("mem-real");
        const std::string cfg = write_run(dir, stories, extra);
        std::string out;
        // 8 steps: oneDNN generates most of its kernels (the runtime row) in the first few.
        int rc = tuner::testing::run_command(
            tuner::testing::tuner_exe() + " train " + cfg + " --threads 2 --set train.max_steps=8" + sets, &out);
        ASSERT_EQ(rc, 0) << out;
        std::smatch m;
        ASSERT_TRUE(std::regex_search(out, m, std::regex("measured / planned = ([0-9.]+)"))) << out;
        const double ratio = std::stod(m[1]);
        EXPECT_GT(ratio, 0.85) << out;
        EXPECT_LT(ratio, 1.15) << out;
    }
}
