// `tuner train` end to end on the real stories260K model: LoRA and full fine-tuning lower the
// validation loss; resuming from a checkpoint reproduces the uninterrupted run bit for bit;
// k micro-batches of 1 row equal one batch of k rows; Ctrl-C leaves a loadable checkpoint; bad
// input gets clear messages.
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "testing.h"
#include "train/checkpoint.h"
#include "train/metrics.h"
#include "train/signals.h"
#include "train/trainer.h"

using namespace tuner;
namespace fs = std::filesystem;

// The learnable task: an animal's colour (tests/testing.h write_colour_dataset).
using tuner::testing::write_colour_dataset;

static std::string write_config(const std::string& dir, const std::string& model, const std::string& extra) {
    std::string train = write_colour_dataset(dir, 48, 1), eval = write_colour_dataset(dir, 16, 3);
    std::string path = dir + "/train.yaml";
    std::ofstream f(path);
    f << "model: " << model << "\n"
      << "output_dir: " << dir << "/out\n"
      << "data:\n  train: [{path: " << train << ", format: alpaca}]\n"
      << "  eval: [{path: " << eval << ", format: alpaca}]\n"
      << "  template: default\n  max_length: 64\n  pack: true\n"
      << "train: {lr: 3.0e-3, batch_size: 2, grad_accum: 2, max_steps: 8, warmup_steps: 1, seed: 1}\n"
      << "save: {every: 4, keep: 3}\n"
      << extra;
    return path;
}

#define REQUIRE_STORIES(model)                                                     \
    TUNER_REQUIRE_SHARED_DATA(shared_);                                            \
    const std::string model = shared_ + "/stories260K/hf"

static TrainResult train(const std::string& config, std::vector<std::string> sets = {}, const std::string& resume = "") {
    TrainOptions o;
    o.install_signals = false;
    o.resume = resume;
    clear_stop_request();
    return run_training(load_train_config(config, sets), o);
}

static std::string read_bytes(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(f)), {});
}

TEST(Train, LoraLowersValidationLossAndWritesResults) {
    REQUIRE_STORIES(model);
    std::string dir = tuner::testing::make_temp_dir("train-lora");
    std::string cfg = write_config(dir, model,
                                   "method: lora\nlora: {r: 8, lora_alpha: 16, lora_dropout: 0.0}\n"
                                   "eval: {every: 20, prompts: ['What colour is the cat?'], max_new_tokens: 12}\n");
    TrainResult r = train(cfg, {"train.max_steps=40", "save.every=20"});
    EXPECT_EQ(r.steps_done, 40);
    ASSERT_GT(r.eval_loss_before, 0);
    EXPECT_LT(r.eval_loss_after, r.eval_loss_before * 0.8) << r.eval_loss_before << " -> " << r.eval_loss_after;
    EXPECT_TRUE(fs::exists(dir + "/out/adapter/adapter_config.json"));
    EXPECT_TRUE(fs::exists(dir + "/out/adapter/adapter_model.safetensors"));
    EXPECT_TRUE(fs::exists(dir + "/out/loss.svg"));
    EXPECT_TRUE(fs::exists(dir + "/out/checkpoint-20/trainer_state.json"));
    auto recs = read_metrics(dir + "/out/metrics.jsonl");
    ASSERT_EQ(recs.size(), 40u);
    for (const char* k : {"step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s"}) EXPECT_TRUE(recs[0].contains(k)) << k;
    EXPECT_TRUE(recs.back().contains("eval_loss"));
    std::string samples = read_bytes(dir + "/out/samples.md");
    EXPECT_NE(samples.find("## step 20"), std::string::npos) << samples;
    EXPECT_NE(samples.find("## step 40"), std::string::npos) << samples;

    // The adapter loads for generation, and answers the held-out questions better than the base.
    std::string out, gen = tuner::testing::tuner_exe() + " generate " + model + " --template default --max-new-tokens 12 ";
    ASSERT_EQ(0, tuner::testing::run_command(gen + "--adapter " + dir + "/out/adapter --prompt 'What colour is the dog?'", &out)) << out;
    EXPECT_NE(out.find("dog"), std::string::npos) << out;
    std::string acc_before, acc_after;
    ASSERT_EQ(0, tuner::testing::run_command(gen + "--eval " + dir + "/data-3.jsonl", &acc_before)) << acc_before;
    ASSERT_EQ(0, tuner::testing::run_command(gen + "--adapter " + dir + "/out/adapter --eval " + dir + "/data-3.jsonl", &acc_after))
        << acc_after;
    auto before = nlohmann::json::parse(acc_before), after = nlohmann::json::parse(acc_after);
    EXPECT_EQ(before["accuracy"].get<double>(), 0.0) << acc_before;  // the base model cannot know the colours
    // 40 steps see each animal about 20 times: most held-out answers must be right.
    EXPECT_GE(after["accuracy"].get<double>(), 0.5) << acc_before << " -> " << acc_after;
}

// QLoRA: LoRA over the NF4-quantised stories260K (checkpointing on by default), then the adapter
// (with tuner_base.json saying nf4) merges through the CLI and generates.
TEST(Train, QloraLowersValidationLossAndMerges) {
    REQUIRE_STORIES(model);
    std::string dir = tuner::testing::make_temp_dir("train-qlora");
    std::string cfg = write_config(dir, model, "method: qlora\nlora: {r: 8, lora_alpha: 16}\n");
    TrainResult r = train(cfg);
    EXPECT_LT(r.eval_loss_after, r.eval_loss_before * 0.8) << r.eval_loss_before << " -> " << r.eval_loss_after;
    EXPECT_TRUE(fs::exists(dir + "/out/adapter/adapter_model.safetensors"));
    EXPECT_CONTAINS(read_bytes(dir + "/out/adapter/tuner_base.json"), "nf4");
    EXPECT_CONTAINS(read_bytes(dir + "/out/config.yaml"), "gradient_checkpointing: true");
    std::string out;
    const std::string exe = tuner::testing::tuner_exe();
    ASSERT_EQ(0, tuner::testing::run_command(exe + " merge " + model + " " + dir + "/out/adapter " + dir + "/merged 2>&1", &out))
        << out;
    ASSERT_EQ(0, tuner::testing::run_command(exe + " generate " + dir + "/merged --template default --max-new-tokens 8 "
                                             "--prompt 'What colour is the dog?' 2>&1", &out))
        << out;
    EXPECT_CONTAINS(out, "dog");
}

TEST(Train, FullFineTuningLowersValidationLoss) {
    REQUIRE_STORIES(model);
    std::string dir = tuner::testing::make_temp_dir("train-full");
    std::string cfg = write_config(dir, model, "method: full\n");
    TrainResult r = train(cfg, {"train.lr=2e-3"});
    EXPECT_LT(r.eval_loss_after, r.eval_loss_before * 0.8) << r.eval_loss_before << " -> " << r.eval_loss_after;
    EXPECT_TRUE(fs::exists(dir + "/out/model/model.safetensors"));
    EXPECT_TRUE(fs::exists(dir + "/out/model/tokenizer.json"));
}

TEST(Train, ResumeEqualsUninterruptedRunBitForBit) {
    REQUIRE_STORIES(model);
    std::string dir = tuner::testing::make_temp_dir("train-resume");
    // lora_dropout > 0 so that the dropout masks must be regenerated identically after resume.
    std::string cfg = write_config(dir, model, "method: lora\nlora: {r: 4, lora_dropout: 0.1}\n");
    train(cfg);
    std::string second = dir + "/second";
    train(cfg, {"output_dir=" + second}, dir + "/out/checkpoint-4");
    EXPECT_EQ(read_bytes(dir + "/out/adapter/adapter_model.safetensors"),
              read_bytes(second + "/adapter/adapter_model.safetensors"));
    auto a = read_metrics(dir + "/out/metrics.jsonl"), b = read_metrics(second + "/metrics.jsonl");
    ASSERT_EQ(b.size(), 4u);
    for (size_t i = 0; i < 4; i++) {
        EXPECT_EQ(a[i + 4]["step"], b[i]["step"]);
        EXPECT_EQ(a[i + 4]["loss"].get<double>(), b[i]["loss"].get<double>()) << "step " << b[i]["step"];
        EXPECT_EQ(a[i + 4]["grad_norm"].get<double>(), b[i]["grad_norm"].get<double>());
    }
}

TEST(Train, MicroBatchesEqualOneLargerBatch) {
    REQUIRE_STORIES(model);
    std::string dir = tuner::testing::make_temp_dir("train-accum");
    std::string cfg = write_config(dir, model, "method: full\n");
    // Same rows per optimizer step (4): 4 micro-batches of 1 row vs 1 batch of 4 rows.
    train(cfg, {"train.batch_size=1", "train.grad_accum=4", "train.max_steps=3", "output_dir=" + dir + "/a"});
    train(cfg, {"train.batch_size=4", "train.grad_accum=1", "train.max_steps=3", "output_dir=" + dir + "/b"});
    auto a = read_metrics(dir + "/a/metrics.jsonl"), b = read_metrics(dir + "/b/metrics.jsonl");
    ASSERT_EQ(a.size(), 3u);
    ASSERT_EQ(b.size(), 3u);
    for (size_t i = 0; i < 3; i++) {
        // Different GEMM shapes sum in a different order: equal up to f32 rounding.
        EXPECT_NEAR(a[i]["loss"].get<double>(), b[i]["loss"].get<double>(), 1e-4 * b[i]["loss"].get<double>());
        EXPECT_NEAR(a[i]["grad_norm"].get<double>(), b[i]["grad_norm"].get<double>(),
                    1e-3 * b[i]["grad_norm"].get<double>());
        EXPECT_EQ(a[i]["trained_tokens"], b[i]["trained_tokens"]);
    }
}

TEST(Train, CtrlCWritesALoadableCheckpoint) {
    REQUIRE_STORIES(model);
    std::string dir = tuner::testing::make_temp_dir("train-sigint");
    std::string cfg = write_config(dir, model, "method: lora\nlora: {r: 4}\n");
    // A long run in the real binary; SIGINT once a step is logged.
    std::string log = dir + "/log.txt";
    std::string cmd = tuner::testing::tuner_exe() + " train " + cfg +
                      " --set train.max_steps=100000 --set save.every=0 > " + log + " 2>&1 & echo $!";
    std::string out;
    ASSERT_EQ(0, tuner::testing::run_command(cmd, &out));
    int pid = std::stoi(out);
    // Wait for the first logged step (up to 5 minutes: a loaded CI machine can be very slow).
    for (int i = 0; i < 6000 && read_bytes(log).find("step 1/") == std::string::npos; i++)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_NE(read_bytes(log).find("step 1/"), std::string::npos) << read_bytes(log);
    kill(pid, SIGINT);
    std::string status;
    tuner::testing::run_command("while kill -0 " + std::to_string(pid) + " 2>/dev/null; do sleep 0.05; done", &status);
    std::string text = read_bytes(log);
    EXPECT_NE(text.find("interrupted: resume with"), std::string::npos) << text;
    auto cps = list_checkpoints(dir + "/out");
    ASSERT_EQ(cps.size(), 1u) << text;
    // It resumes: two more steps from there.
    TrainResult r = train(cfg, {"train.max_steps=" + std::to_string(std::stoi(cps[0].substr(cps[0].rfind('-') + 1)) + 2)},
                          cps[0]);
    EXPECT_FALSE(r.interrupted);
    EXPECT_TRUE(fs::exists(dir + "/out/adapter/adapter_model.safetensors"));
}

static std::string train_error(const std::string& config, std::vector<std::string> sets, const std::string& resume = "") {
    try {
        train(config, sets, resume);
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

TEST(Train, BadInputMessages) {
    REQUIRE_STORIES(model);
    std::string dir = tuner::testing::make_temp_dir("train-bad");
    std::string cfg = write_config(dir, model, "method: lora\nlora: {r: 4}\n");
    std::string e = train_error(cfg, {"model=" + dir + "/no-such-model"});
    EXPECT_NE(e.find("no-such-model"), std::string::npos) << e;
    e = train_error(cfg, {"train.lerning_rate=1"});
    EXPECT_NE(e.find("lerning_rate"), std::string::npos) << e;
    // A --resume folder from another model (here: another LoRA rank).
    train(cfg, {"train.max_steps=5"});
    e = train_error(cfg, {"lora.r=8", "output_dir=" + dir + "/other"}, dir + "/out/checkpoint-4");
    EXPECT_NE(e.find("different trained tensors"), std::string::npos) << e;
    // A dataset where nothing is trained: the only assistant message has "loss": false.
    std::ofstream(dir + "/untrained.jsonl")
        << R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x", "loss": false}]})"
        << "\n";
    e = train_error(cfg, {"data.train=[{path: " + dir + "/untrained.jsonl, format: openai}]", "data.eval=[]",
                          "output_dir=" + dir + "/e"});
    EXPECT_NE(e.find("untrained.jsonl"), std::string::npos) << e;
}

TEST(Train, InitAdapterStartsFromATrainedAdapter) {
    REQUIRE_STORIES(model);
    std::string dir = tuner::testing::make_temp_dir("train-init");
    std::string cfg = write_config(dir, model, "method: lora\nlora: {r: 8, lora_dropout: 0.0}\n");
    TrainResult first = train(cfg);
    TrainResult second = train(cfg, {"lora.init_adapter=" + dir + "/out/adapter", "output_dir=" + dir + "/more",
                                     "train.max_steps=2"});
    // The second run starts where the first ended, not from the base model.
    EXPECT_NEAR(second.eval_loss_before, first.eval_loss_after, 1e-6 * first.eval_loss_after);
    EXPECT_LT(second.eval_loss_before, first.eval_loss_before * 0.8);
}

// A full disk while saving, simulated with a file-size limit (ulimit -f: writes past it fail with
// EFBIG once tuner ignores SIGXFSZ): the run stops with a message naming the checkpoint, the
// earlier checkpoint is byte-for-byte untouched and still resumes, and no half-written folder
// is left behind.
TEST(Train, FullDiskWhileSavingKeepsEarlierCheckpoints) {
    REQUIRE_STORIES(model);
    std::string dir = tuner::testing::make_temp_dir("train-full-disk");
    // Full fine-tuning: optimizer.safetensors holds 2 x 260K f32 moments (~2 MiB), more than the
    // 1 MiB limit below; the first run (no limit) writes checkpoint-4 (the last step writes the
    // result, not a checkpoint: hence 5 steps).
    std::string cfg = write_config(dir, model, "method: full\n");
    train(cfg, {"train.max_steps=5"});
    const std::string ckpt = dir + "/out/checkpoint-4";
    ASSERT_TRUE(fs::exists(ckpt + "/optimizer.safetensors"));
    std::map<std::string, std::string> before;
    for (const auto& e : fs::directory_iterator(ckpt)) before[e.path().filename()] = read_bytes(e.path());

    std::string out;
    const std::string cmd = "ulimit -f 1024; " + tuner::testing::tuner_exe() + " train " + cfg +
                            " --set train.max_steps=12 --resume " + ckpt + " 2>&1";
    int rc = tuner::testing::run_command("bash -c '" + cmd + "'", &out);
    EXPECT_EQ(rc, 1) << out;
    EXPECT_CONTAINS(out, "checkpoint-8");
    EXPECT_CONTAINS(out, "File too large");
    EXPECT_CONTAINS(out, "earlier checkpoints are untouched");
    EXPECT_FALSE(fs::exists(dir + "/out/checkpoint-8"));
    EXPECT_FALSE(fs::exists(dir + "/out/checkpoint-8.tmp"));
    std::map<std::string, std::string> after;
    for (const auto& e : fs::directory_iterator(ckpt)) after[e.path().filename()] = read_bytes(e.path());
    EXPECT_TRUE(before == after) << "checkpoint-4 changed";
    // ... and it still resumes to the end once there is room again.
    TrainResult r = train(cfg, {"output_dir=" + dir + "/again"}, ckpt);
    EXPECT_EQ(r.steps_done, 8);
}
