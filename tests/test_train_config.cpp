// The training config: defaults from the reference, --set overrides, and clear errors for typos
// and wrong types; metrics.jsonl and the loss curve.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "testing.h"
#include "train/metrics.h"
#include "train/train_config.h"

using namespace tuner;

static const char* kMinimal = R"(model: models/tiny
output_dir: runs/x
data:
  train: [{path: a.jsonl, format: alpaca}]
)";

static std::string config_error(const std::string& yaml, std::vector<std::string> sets = {}) {
    try {
        ConfigFile f = config_parse(yaml, "train.yaml");
        for (auto& s : sets) config_apply_set(f, s);
        parse_train_config(f);
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

TEST(TrainConfig, DefaultsFollowTheReference) {
    TrainConfig c = parse_train_config(config_parse(kMinimal, "train.yaml"));
    EXPECT_EQ(c.method, "lora");
    EXPECT_EQ(c.lora.r, 64);
    EXPECT_EQ(c.lora.lora_alpha, 16);
    EXPECT_DOUBLE_EQ(c.lora.lora_dropout, 0.1);
    EXPECT_DOUBLE_EQ(c.train.lr, 2e-4);
    EXPECT_EQ(c.train.grad_accum, 16);
    EXPECT_EQ(c.train.epochs, 3);
    EXPECT_DOUBLE_EQ(c.train.max_grad_norm, 1.0);
    EXPECT_DOUBLE_EQ(c.train.warmup_ratio, 0.03);
    EXPECT_EQ(c.save_every, 500);
    EXPECT_EQ(c.save_keep, 2);
    ConfigFile full = config_parse(std::string(kMinimal) + "method: full\n", "train.yaml");
    EXPECT_DOUBLE_EQ(parse_train_config(full).train.lr, 2e-5);
}

// device: cuda changes one default: LoRA's frozen base is stored in bf16 (what bf16 matmuls read
// anyway) unless base_dtype or cuda_matmul says otherwise; a --device override re-applies it.
TEST(TrainConfig, DeviceDefaults) {
    auto parse = [](const std::string& extra) {
        return parse_train_config(config_parse(std::string(kMinimal) + extra, "train.yaml"));
    };
    EXPECT_EQ(parse("").device, "cpu");
    EXPECT_EQ(parse("").base_dtype, "f32");
    EXPECT_EQ(parse("device: cuda\n").base_dtype, "bf16");
    EXPECT_EQ(parse("device: cuda\nbase_dtype: f32\n").base_dtype, "f32");
    EXPECT_EQ(parse("device: cuda\ncuda_matmul: f32\n").base_dtype, "f32");
    EXPECT_EQ(parse("device: cuda\nmethod: qlora\n").base_dtype, "nf4");
    EXPECT_EQ(parse("device: cuda\nmethod: full\n").base_dtype, "f32");
    TrainConfig c = parse("");
    c.device = "cuda";  // as `tuner train --device cuda` does
    apply_device_defaults(c);
    EXPECT_EQ(c.base_dtype, "bf16");
    EXPECT_CONTAINS(config_error(std::string(kMinimal) + "device: tpu\n"), "device");
    EXPECT_CONTAINS(config_error(std::string(kMinimal) + "cuda_matmul: f32\n"), "cuda_matmul applies to device: cuda");
}

// activation_dtype: bf16 by default on CUDA with bf16 matmuls, f32 elsewhere; bf16 elsewhere is
// refused with the key's location; --device cpu over a bf16 config falls back to f32.
TEST(TrainConfig, ActivationDtype) {
    auto parse = [](const std::string& extra) {
        return parse_train_config(config_parse(std::string(kMinimal) + extra, "train.yaml"));
    };
    EXPECT_EQ(parse("").activation_dtype, "f32");
    EXPECT_EQ(parse("device: cuda\n").activation_dtype, "bf16");
    EXPECT_EQ(parse("device: cuda\nmethod: full\n").activation_dtype, "bf16");
    EXPECT_EQ(parse("device: cuda\ncuda_matmul: tf32\n").activation_dtype, "f32");
    EXPECT_EQ(parse("device: cuda\nactivation_dtype: f32\n").activation_dtype, "f32");
    EXPECT_EQ(parse("device: cuda\nactivation_dtype: bf16\n").activation_dtype, "bf16");
    const std::string cpu_err = config_error(std::string(kMinimal) + "activation_dtype: bf16\n");
    EXPECT_CONTAINS(cpu_err, "activation_dtype: bf16 needs device: cuda with cuda_matmul: bf16");
    EXPECT_CONTAINS(cpu_err, "train.yaml");
    EXPECT_CONTAINS(config_error(std::string(kMinimal) + "device: cuda\ncuda_matmul: f32\nactivation_dtype: bf16\n"),
                    "activation_dtype: bf16 needs");
    EXPECT_CONTAINS(config_error(std::string(kMinimal) + "activation_dtype: f8\n"), "activation_dtype");
    TrainConfig c = parse("device: cuda\nactivation_dtype: bf16\n");
    c.device = "cpu";  // as `tuner train --device cpu` does
    apply_device_defaults(c);
    EXPECT_EQ(c.activation_dtype, "f32");
    c = parse("");
    c.device = "cuda";
    apply_device_defaults(c);
    EXPECT_EQ(c.activation_dtype, "bf16");
    EXPECT_NE(parse("device: cuda\n").resolved_yaml().find("activation_dtype: bf16"), std::string::npos);
    EXPECT_EQ(parse("").resolved_yaml().find("activation_dtype"), std::string::npos);
}

TEST(TrainConfig, SetOverrides) {
    ConfigFile f = config_parse(kMinimal, "train.yaml");
    config_apply_set(f, "train.lr=1e-3");
    config_apply_set(f, "lora.target_modules=[q_proj, v_proj]");
    TrainConfig c = parse_train_config(f);
    EXPECT_DOUBLE_EQ(c.train.lr, 1e-3);
    ASSERT_EQ(c.lora.target_modules.size(), 2u);
    EXPECT_EQ(c.lora.target_modules[1], "v_proj");
    EXPECT_NE(c.resolved_yaml().find("lr: 0.001"), std::string::npos) << c.resolved_yaml();
}

TEST(TrainConfig, TyposNameTheClosestKey) {
    std::string e = config_error(std::string(kMinimal) + "train: {lerning_rate: 1}\n");
    EXPECT_NE(e.find("lerning_rate"), std::string::npos) << e;
    e = config_error(std::string(kMinimal) + "train: {grad_acum: 4}\n");
    EXPECT_NE(e.find("grad_accum"), std::string::npos) << e;
    e = config_error(std::string(kMinimal) + "lora: {lora_alpah: 4}\n");
    EXPECT_NE(e.find("lora_alpha"), std::string::npos) << e;
    e = config_error(std::string(kMinimal) + "metod: full\n");
    EXPECT_NE(e.find("method"), std::string::npos) << e;
}

TEST(TrainConfig, WrongTypesAndValues) {
    std::string e = config_error(std::string(kMinimal) + "train: {batch_size: many}\n");
    EXPECT_NE(e.find("train.batch_size"), std::string::npos) << e;
    EXPECT_NE(e.find("train.yaml"), std::string::npos) << e;
    e = config_error(std::string(kMinimal) + "method: qlora2\n");
    EXPECT_NE(e.find("qlora2"), std::string::npos) << e;
    e = config_error("output_dir: x\ndata: {train: []}\n");
    EXPECT_NE(e.find("model"), std::string::npos) << e;
    e = config_error(kMinimal, {"lora.lora_dropout=1.5"});
    EXPECT_NE(e.find("lora_dropout"), std::string::npos) << e;
}

TEST(Metrics, JsonlAndSvg) {
    std::string dir = tuner::testing::make_temp_dir("metrics");
    {
        MetricsLog log(dir + "/metrics.jsonl", false);
        for (int s = 1; s <= 20; s++) {
            nlohmann::json r = {{"step", s}, {"loss", 3.0 / s}, {"lr", 1e-3}};
            if (s % 5 == 0) r["eval_loss"] = 3.2 / s;
            log.write(r);
        }
    }
    std::ofstream(dir + "/metrics.jsonl", std::ios::app) << "{\"step\": 21, \"lo";  // a line cut by a crash
    auto recs = read_metrics(dir + "/metrics.jsonl");
    ASSERT_EQ(recs.size(), 20u);
    write_loss_svg(dir + "/loss.svg", recs, "test run");
    std::ifstream f(dir + "/loss.svg");
    std::string svg((std::istreambuf_iterator<char>(f)), {});
    EXPECT_NE(svg.find("<svg"), std::string::npos);
    EXPECT_NE(svg.find("validation loss"), std::string::npos);
    EXPECT_EQ(std::count(svg.begin(), svg.end(), '\n') > 10, true);
}
