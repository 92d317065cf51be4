// Training on GGUF files (`model: x.gguf` in a training config): LoRA over a Q8_0 and a Q4_K base
// kept in its block type (dequantised tile by tile inside the matmul) lowers the validation loss,
// the adapter then applies to the same GGUF for generation, and the memory plan counts each
// tensor in its own GGUF type. The bases are written by our exporter from an HF folder the test
// makes (256-wide rows, so that Q4_K is really Q4_K and not its Q8_0 fallback).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "io/gguf.h"
#include "models/gguf_export.h"
#include "models/llama.h"
#include "testing.h"
#include "tokenizer/byte_tokenizer_files.h"
#include "train/memory_plan.h"
#include "train/signals.h"
#include "train/train_config.h"
#include "train/trainer.h"

using namespace tuner;
namespace fs = std::filesystem;

namespace {

// A random Llama with a byte-level tokenizer, rows of 256 (hidden) and 512 (MLP) values.
std::string make_hf_model(const std::string& dir) {
    ModelConfig c;
    c.architecture = "LlamaForCausalLM", c.model_type = "llama";
    c.vocab_size = 260, c.hidden_size = 256, c.intermediate_size = 512, c.num_layers = 2;
    c.num_heads = 4, c.num_kv_heads = 2, c.head_dim = 64;
    c.rms_norm_eps = 1e-5, c.rope_theta = 10000.0, c.tie_word_embeddings = false;
    c.max_position_embeddings = 256, c.bos_token_id = 1, c.eos_token_id = 2;
    ModelOptions o;
    o.trainable = false;
    const std::string path = dir + "/hf";
    LlamaModel::random(c, o, 7)->save(path, DType::F32);
    write_byte_tokenizer(path);
    return path;
}

TrainResult train_lora_on(const std::string& gguf, const std::string& dir) {
    const std::string cfg = dir + "/train.yaml";
    std::ofstream(cfg) << "model: " << gguf << "\nmethod: lora\noutput_dir: " << dir << "/out\n"
                       << "lora: {r: 8, lora_alpha: 16, lora_dropout: 0.0}\n"
                       << "data:\n  train: [{path: " << tuner::testing::write_colour_dataset(dir, 48, 1) << ", format: alpaca}]\n"
                       << "  eval: [{path: " << tuner::testing::write_colour_dataset(dir, 16, 3) << ", format: alpaca}]\n"
                       << "  template: default\n  max_length: 96\n  pack: true\n"
                       << "train: {lr: 1.0e-2, batch_size: 4, max_steps: 12, warmup_steps: 1, seed: 1}\n"
                       << "save: {every: 100, keep: 1}\n";
    TrainOptions o;
    o.install_signals = false;
    clear_stop_request();
    return run_training(load_train_config(cfg, {}), o);
}

}  // namespace

TEST(GgufTrain, LoraOnQ8_0AndQ4_KBasesLowersTheLoss) {
    const std::string dir = tuner::testing::make_temp_dir("gguf-train");
    const std::string hf = make_hf_model(dir);
    for (DType t : {DType::Q8_0, DType::Q4_K}) {
        SCOPED_TRACE(dtype_name(t));
        const std::string gguf = dir + "/base-" + dtype_name(t) + ".gguf";
        GgufExportOptions eo;
        eo.type = t;
        export_gguf(hf, gguf, eo);
        // The projections are stored in the requested type (the output matrix may be Q6_K).
        GgufFile g(gguf);
        ASSERT_NE(g.find_tensor("blk.0.attn_q.weight"), nullptr);
        EXPECT_EQ(g.find_tensor("blk.0.attn_q.weight")->dtype(gguf), t);
        EXPECT_EQ(g.find_tensor("blk.1.ffn_down.weight")->dtype(gguf), t);

        // A frozen model keeps the blocks; the plan counts them at their own size.
        ModelOptions mo;
        mo.trainable = false;
        auto m = LlamaModel::load(gguf, mo);
        EXPECT_EQ(m->layers[0].q_proj.value.dtype, t);
        MemoryPlanRequest req;
        req.gguf_path = gguf;
        req.model = m->config;
        req.method = "lora";
        req.lora = LoraConfig{};
        TrainMemoryPlan plan = plan_training_memory(req);
        EXPECT_EQ(plan.weights, m->memory_plan().role_bytes("weights"));

        const std::string run = dir + "/run-" + dtype_name(t);
        fs::create_directories(run);
        TrainResult r = train_lora_on(gguf, run);
        EXPECT_LT(r.eval_loss_after, r.eval_loss_before * 0.8) << r.eval_loss_before << " -> " << r.eval_loss_after;
        ASSERT_TRUE(fs::exists(run + "/out/adapter/adapter_model.safetensors"));

        // The adapter applies to the GGUF for generation.
        std::string out;
        ASSERT_EQ(0, tuner::testing::run_command(tuner::testing::tuner_exe() + " generate " + gguf + " --adapter " +
                                                     run + "/out/adapter --template default --max-new-tokens 4 "
                                                     "--prompt 'What colour is the dog?' 2>&1",
                                                 &out))
            << out;
    }
}
