// The model and the trainer's pieces on Device::CUDA against the same run on the CPU: forward
// (logits, loss, packed rows), training steps (full fine-tuning, LoRA with dropout over f32 /
// bf16 / NF4 bases, activation checkpointing), KV-cache decoding, adapters and checkpoints moving
// between devices, and the GPU memory plan against the arenas the model allocates.
//
// Built twice (tests/CMakeLists.txt): test_cuda_model runs on a real GPU (skips without one,
// fails under TUNER_REQUIRE_CUDA=1), test_cuda_model_emu runs the same CUDA code on the CPU
// emulator of the CUDA execution model (docs/cuda.md), which checks the logic but not speed.
//
// Tolerances: with cuda_matmul f32 the GPU computes what the CPU does up to summation order:
// logits, losses and the first step's gradients within 1e-4 relative. Later steps drift apart
// a little more: AdamW's update is m / sqrt(v) per element, about lr in size whatever the
// gradient's size, so a last-bit difference in a near-zero gradient element becomes a
// difference of up to lr in that parameter. After 5 steps of lr 1e-2 the parameters are
// compared within 5e-3 (worst element) and 2e-4 (mean), the losses within 1e-3 relative. With
// bf16 operands (the default) products carry ~2^-8 relative error: 2e-2 on the loss of
// stories260K after 5 steps.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/device_ops.h"
#include "backend/kernels.h"
#include "infer/generate.h"
#include "models/gguf_export.h"
#include "train/metrics.h"
#include "io/peft.h"
#include "models/llama.h"
#include "nn/device_copy.h"
#include "testing.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/memory_plan.h"

using namespace tuner;
using tuner::testing::host_f32;
namespace fs = std::filesystem;

namespace {

// Sets the CUDA matmul precision for one test and restores the default after it.
struct ComputeMode {
    cuda::Config saved;
    explicit ComputeMode(cuda::MatmulCompute c) : saved(cuda::config()) {
        cuda::Config k = saved;
        k.compute = c;
        cuda::set_config(k);
    }
    ~ComputeMode() { cuda::set_config(saved); }
};

ModelConfig tiny_config(bool bias) {
    ModelConfig c;
    c.architecture = bias ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
    c.model_type = bias ? "qwen2" : "llama";
    c.vocab_size = 96, c.hidden_size = 64, c.intermediate_size = 96, c.num_layers = 2;
    c.num_heads = 4, c.num_kv_heads = 2, c.head_dim = 16;
    c.rms_norm_eps = 1e-5, c.rope_theta = 10000.0, c.tie_word_embeddings = !bias, c.attention_bias = bias;
    c.max_position_embeddings = 128;
    return c;
}

// Full fine-tuning models start from normal(0, 0.02); spread the weights out so every path
// carries signal, identically on both devices.
void spread_weights(LlamaModel& cpu, LlamaModel& gpu, uint64_t seed) {
    std::mt19937 rng{uint32_t(seed)};
    std::normal_distribution<float> d(0.0f, 0.25f);
    std::vector<Param*> a = cpu.params(), b = gpu.params();
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); i++) {
        std::vector<float> v(size_t(a[i]->value.numel()));
        const bool norm = a[i]->name.find("norm") != std::string::npos;
        for (float& x : v) x = norm ? 1.0f + 0.2f * d(rng) : d(rng);
        tensor_from_host(a[i]->value, v.data());
        tensor_from_host(b[i]->value, v.data());
    }
}

struct Tokens {
    std::vector<int32_t> tokens, targets, positions, seg;
    Batch batch(int B, int T, bool packed) const {
        Batch b;
        b.B = B, b.T = T, b.tokens = tokens.data(), b.targets = targets.data();
        if (packed) b.positions = positions.data(), b.seg_start = seg.data();
        return b;
    }
};

// Random tokens; rows packed from two samples (the second starting at T/3) for packed batches.
Tokens make_tokens(int B, int T, int64_t V, uint64_t seed) {
    Tokens t;
    std::mt19937 rng{uint32_t(seed)};
    std::uniform_int_distribution<int32_t> d(0, int32_t(V - 1));
    const size_t N = size_t(B) * size_t(T);
    t.tokens.resize(N), t.targets.resize(N), t.positions.resize(N), t.seg.resize(N);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < T; i++) {
            const size_t k = size_t(b) * size_t(T) + size_t(i);
            const int start = i < T / 3 ? 0 : T / 3;
            t.tokens[k] = d(rng);
            t.targets[k] = (i % 5 == 4) ? -100 : d(rng);
            t.positions[k] = i - start;
            t.seg[k] = start;  // index within the row where this token's sample starts
        }
    return t;
}

float max_abs(const std::vector<float>& v) {
    float m = 0;
    for (float x : v) m = std::max(m, std::fabs(x));
    return m;
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, double rel, const std::string& what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    const double scale = std::max<double>(max_abs(want), 1e-6);
    double worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < got.size(); i++) {
        const double e = std::fabs(double(got[i]) - double(want[i]));
        if (!(e <= worst)) worst = e, at = i;  // NaN counts as worst
    }
    EXPECT_LE(worst, rel * scale) << what << ": worst |cuda - cpu| " << worst << " at " << at << " (cuda "
                                  << got[at] << ", cpu " << want[at] << "), max|cpu| " << scale;
}

ModelOptions options_for(Device d, bool trainable, DType base = DType::F32) {
    ModelOptions o;
    o.device = d;
    o.trainable = trainable;
    o.weight_dtype = base;
    return o;
}

// Parameters after several AdamW steps (see the tolerances above): worst and mean |cuda - cpu|.
void expect_params_close(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    double worst = 0, sum = 0;
    for (size_t i = 0; i < got.size(); i++) {
        const double e = std::fabs(double(got[i]) - double(want[i]));
        worst = std::isnan(e) ? INFINITY : std::max(worst, e);
        sum += e;
    }
    EXPECT_LE(worst, 5e-3) << what << ": worst |cuda - cpu| after the steps";
    EXPECT_LE(sum / double(std::max<size_t>(got.size(), 1)), 2e-4) << what << ": mean |cuda - cpu| after the steps";
}

// One optimizer step as tuner train takes it: zero, forward + backward, clip 1.0, AdamW. With
// grads_before_clip, the gradients as backward left them (host copies, before clipping).
double train_step(LlamaModel& m, AdamW& opt, const Batch& b, double* grad_norm,
                  std::vector<std::vector<float>>* grads_before_clip = nullptr, double lr = 1e-2) {
    m.zero_grad();
    int64_t count = 0;
    for (int64_t i = 0; i < int64_t(b.B) * b.T; i++) count += b.targets[i] != -100;
    const double loss = m.forward_backward(b, 1.0f / float(std::max<int64_t>(count, 1)), &count);
    if (grads_before_clip)
        for (Param* p : opt.params()) grads_before_clip->push_back(host_f32(p->grad));
    *grad_norm = clip_grad_norm(opt.params(), 1.0);
    opt.step(lr);
    return loss / double(count);
}

// The first step from identical weights: losses, gradient norms and every gradient tensor
// within 1e-4 relative; then four more steps within the drift tolerances.
void expect_steps_match(LlamaModel& cpu, LlamaModel& gpu, AdamW& oc, AdamW& og, int64_t V, int B, int T,
                        uint64_t seed, const std::string& what) {
    for (int step = 0; step < 5; step++) {
        const Tokens tk = make_tokens(B, T, V, seed + uint64_t(step));
        const Batch b = tk.batch(B, T, step % 2 == 1);
        cpu.set_lora_dropout_counter(uint64_t(step));
        gpu.set_lora_dropout_counter(uint64_t(step));
        double gc = 0, gg = 0;
        std::vector<std::vector<float>> grads_c, grads_g;
        const bool first = step == 0;
        const double lc = train_step(cpu, oc, b, &gc, first ? &grads_c : nullptr);
        const double lg = train_step(gpu, og, b, &gg, first ? &grads_g : nullptr);
        const double rel = first ? 1e-4 : 1e-3;
        EXPECT_NEAR(lg, lc, rel * std::fabs(lc)) << what << ": loss, step " << step;
        EXPECT_NEAR(gg, gc, rel * gc + 1e-9) << what << ": grad norm, step " << step;
        for (size_t i = 0; i < grads_c.size(); i++)
            expect_close(grads_g[i], grads_c[i], 1e-4, what + ": first step's gradient of " + oc.params()[i]->name);
    }
}

}  // namespace

TEST(CudaModel, ForwardLogitsAndLossMatchCpu) {
    TUNER_REQUIRE_CUDA();
    ComputeMode f32(cuda::MatmulCompute::F32);
    for (bool bias : {false, true}) {
        const ModelConfig c = tiny_config(bias);
        auto cpu = LlamaModel::random(c, options_for(Device::CPU, true), 7);
        auto gpu = LlamaModel::random(c, options_for(Device::CUDA, true), 7);
        spread_weights(*cpu, *gpu, 11);
        const int B = 2, T = 24;
        cpu->prepare(B, T, false);
        gpu->prepare(B, T, false);
        const Tokens tk = make_tokens(B, T, c.vocab_size, 3);
        for (bool packed : {false, true}) {
            const std::string what = fmt::format("bias {} packed {}", bias, packed);
            const Batch b = tk.batch(B, T, packed);
            std::vector<float> lc(size_t(B * T * c.vocab_size)), lg(lc.size());
            cpu->logits(b, lc.data());
            gpu->logits(b, lg.data());
            expect_close(lg, lc, 1e-4, what + " logits");
            int64_t nc = 0, ng = 0;
            const double sc = cpu->forward_loss(b, &nc), sg = gpu->forward_loss(b, &ng);
            EXPECT_EQ(nc, ng) << what;
            EXPECT_NEAR(sg / double(ng), sc / double(nc), 1e-4 * std::fabs(sc / double(nc))) << what;
        }
    }
}

TEST(CudaModel, FullFineTuningStepsMatchCpu) {
    TUNER_REQUIRE_CUDA();
    ComputeMode f32(cuda::MatmulCompute::F32);
    const ModelConfig c = tiny_config(true);
    auto cpu = LlamaModel::random(c, options_for(Device::CPU, true), 5);
    auto gpu = LlamaModel::random(c, options_for(Device::CUDA, true), 5);
    spread_weights(*cpu, *gpu, 12);
    const int B = 2, T = 16;
    cpu->prepare(B, T, true);
    gpu->prepare(B, T, true);
    AdamW oc(cpu->trainable_params(), {}), og(gpu->trainable_params(), {});
    expect_steps_match(*cpu, *gpu, oc, og, c.vocab_size, B, T, 100, "full");
    std::vector<Param*> pc = cpu->params(), pg = gpu->params();
    for (size_t i = 0; i < pc.size(); i++) {
        expect_params_close(host_f32(pg[i]->value), host_f32(pc[i]->value), pc[i]->name);
        expect_close(host_f32(og.exp_avg_tensor(i)), host_f32(oc.exp_avg_tensor(i)), 1e-2, pc[i]->name + " exp_avg");
    }
}

TEST(CudaModel, LoraStepsMatchCpuOnEveryBase) {
    TUNER_REQUIRE_CUDA();
    ComputeMode f32(cuda::MatmulCompute::F32);
    for (DType base : {DType::F32, DType::BF16, DType::NF4}) {
        for (bool ckpt : {false, true}) {
            const std::string what = fmt::format("base {} checkpointing {}", dtype_name(base), ckpt);
            const ModelConfig c = tiny_config(false);
            LoraConfig lc;
            lc.r = 4, lc.lora_alpha = 8, lc.lora_dropout = 0.1, lc.seed = 9;
            ModelOptions oc = options_for(Device::CPU, false, base), og = options_for(Device::CUDA, false, base);
            oc.lora = lc, og.lora = lc;
            oc.gradient_checkpointing = og.gradient_checkpointing = ckpt;
            auto cpu = LlamaModel::random(c, oc, 21);
            auto gpu = LlamaModel::random(c, og, 21);
            const int B = 2, T = 16;
            cpu->prepare(B, T, true);
            gpu->prepare(B, T, true);
            AdamW ac(cpu->trainable_params(), {}), ag(gpu->trainable_params(), {});
            expect_steps_match(*cpu, *gpu, ac, ag, c.vocab_size, B, T, 200, what);
            std::vector<Param*> pc = cpu->adapter_params(), pg = gpu->adapter_params();
            ASSERT_EQ(pc.size(), pg.size());
            for (size_t i = 0; i < pc.size(); i++)
                expect_params_close(host_f32(pg[i]->value), host_f32(pc[i]->value), what + " " + pc[i]->name);
        }
    }
}

// bf16 activations (ModelOptions::activation_dtype) with bf16 matmuls, the CUDA default, against
// the CPU storing the same activations in bf16 (act_f32.h: widen on load, round on store) over
// the same bf16 (or NF4) base. They differ where the GPU's bf16 GEMMs also round the f32 operands (LoRA's
// A and B, the f32 gradients) and by the order of sums, each about one bf16 rounding (2^-9) per
// product: the first step's loss within 1e-2 and each gradient within 4e-2 of its max, then 5
// steps within 2e-2 of the loss.
TEST(CudaModel, Bf16ActivationsMatchCpuBf16Activations) {
    TUNER_REQUIRE_CUDA();
    ComputeMode bf16(cuda::MatmulCompute::BF16);
    // LoRA over a bf16 base with and without checkpointing, and QLoRA (NF4 base, checkpointing on).
    const std::pair<DType, bool> cases[] = {{DType::BF16, false}, {DType::BF16, true}, {DType::NF4, true}};
    for (const auto& [base, ckpt] : cases) {
        const std::string what = fmt::format("bf16 activations, base {}, checkpointing {}", dtype_name(base), ckpt);
        const ModelConfig c = tiny_config(true);
        LoraConfig lc;
        lc.r = 4, lc.lora_alpha = 8, lc.lora_dropout = 0.1, lc.seed = 9;
        ModelOptions oc = options_for(Device::CPU, false, base), og = options_for(Device::CUDA, false, base);
        oc.lora = lc, og.lora = lc;
        oc.activation_dtype = og.activation_dtype = DType::BF16;
        oc.gradient_checkpointing = og.gradient_checkpointing = ckpt;
        auto cpu = LlamaModel::random(c, oc, 31);
        auto gpu = LlamaModel::random(c, og, 31);
        const int B = 2, T = 24;
        cpu->prepare(B, T, true);
        gpu->prepare(B, T, true);
        AdamW ac(cpu->trainable_params(), {}), ag(gpu->trainable_params(), {});
        for (int step = 0; step < 5; step++) {
            const Tokens tk = make_tokens(B, T, c.vocab_size, 400 + uint64_t(step));
            const Batch b = tk.batch(B, T, step % 2 == 1);
            cpu->set_lora_dropout_counter(uint64_t(step));
            gpu->set_lora_dropout_counter(uint64_t(step));
            double gc = 0, gg = 0;
            std::vector<std::vector<float>> grads_c, grads_g;
            const bool first = step == 0;
            const double l1 = train_step(*cpu, ac, b, &gc, first ? &grads_c : nullptr);
            const double l2 = train_step(*gpu, ag, b, &gg, first ? &grads_g : nullptr);
            EXPECT_NEAR(l2, l1, (first ? 1e-2 : 2e-2) * std::fabs(l1)) << what << ": loss, step " << step;
            for (size_t i = 0; i < grads_c.size(); i++)
                expect_close(grads_g[i], grads_c[i], 4e-2, what + ": first step's gradient of " + ac.params()[i]->name);
        }
    }
}

// AdamW on the GPU updates runs of neighbouring tensors as one flat range (a LoRA model's adapters:
// one launch per step), and clipping scales the gradient ranges likewise: given the same gradients
// the parameters and moments equal the CPU's bit for bit (alignment gaps stay zero), and the
// clipped gradients and the norm agree.
TEST(CudaModel, AdamWRunsOfTensorsMatchCpuBitForBit) {
    TUNER_REQUIRE_CUDA();
    ModelConfig c = tiny_config(true);
    // Sizes that leave alignment gaps between the adapters (A (3, 40): 480 bytes; 64-byte arenas).
    c.hidden_size = 40, c.num_heads = 5, c.num_kv_heads = 5, c.head_dim = 8, c.intermediate_size = 72;
    LoraConfig lc;
    lc.r = 3, lc.lora_alpha = 8, lc.seed = 9;
    ModelOptions oc = options_for(Device::CPU, false), og = options_for(Device::CUDA, false);
    oc.lora = lc, og.lora = lc;
    auto cpu = LlamaModel::random(c, oc, 41);
    auto gpu = LlamaModel::random(c, og, 41);
    AdamWConfig cfg;
    cfg.weight_decay = 0.1;
    AdamW ac(cpu->trainable_params(), cfg), ag(gpu->trainable_params(), cfg);
    EXPECT_EQ(ag.device_launches(), 1u) << "the adapters are contiguous in their arenas";
    for (int step = 1; step <= 3; step++) {
        for (size_t i = 0; i < ac.params().size(); i++) {
            const std::vector<float> g =
                tuner::testing::random_floats(size_t(ac.params()[i]->grad.numel()), uint64_t(100 * step + i), 3.0f);
            tensor_from_host(ac.params()[i]->grad, g.data());
            tensor_from_host(ag.params()[i]->grad, g.data());
        }
        const double nc = clip_grad_norm(ac.params(), 1.0), ng = clip_grad_norm(ag.params(), 1.0);
        EXPECT_NEAR(ng, nc, 1e-12 * nc) << "step " << step;
        for (size_t i = 0; i < ac.params().size(); i++)
            expect_close(host_f32(ag.params()[i]->grad), host_f32(ac.params()[i]->grad), 1e-6,
                         "clipped gradient of " + ac.params()[i]->name);
        // From here on the same (CPU-clipped) gradients on both sides, for a bit-exact step.
        for (size_t i = 0; i < ac.params().size(); i++)
            tensor_from_host(ag.params()[i]->grad, host_f32(ac.params()[i]->grad).data());
        ac.step(1e-2);
        ag.step(1e-2);
        for (size_t i = 0; i < ac.params().size(); i++) {
            const std::string& name = ac.params()[i]->name;
            EXPECT_EQ(host_f32(ag.params()[i]->value), host_f32(ac.params()[i]->value)) << name << ", step " << step;
            EXPECT_EQ(host_f32(ag.exp_avg_tensor(i)), host_f32(ac.exp_avg_tensor(i))) << name << " exp_avg";
            EXPECT_EQ(host_f32(ag.exp_avg_sq_tensor(i)), host_f32(ac.exp_avg_sq_tensor(i))) << name << " exp_avg_sq";
        }
    }
}

TEST(CudaModel, DecodingWithKvCacheMatchesCpu) {
    TUNER_REQUIRE_CUDA();
    ComputeMode f32(cuda::MatmulCompute::F32);
    const ModelConfig c = tiny_config(true);
    auto cpu = LlamaModel::random(c, options_for(Device::CPU, false), 4);
    auto gpu = LlamaModel::random(c, options_for(Device::CUDA, false), 4);
    spread_weights(*cpu, *gpu, 13);
    KVCache kc(*cpu, 64, 8), kg(*gpu, 64, 8);
    const std::vector<int32_t> prompt = {1, 5, 9, 33, 2, 80, 17, 4, 60, 11, 3};  // > one chunk of 8
    std::vector<float> a(size_t(c.vocab_size)), b(a.size());
    cpu->decode_step(prompt.data(), int(prompt.size()), kc, a.data());
    gpu->decode_step(prompt.data(), int(prompt.size()), kg, b.data());
    expect_close(b, a, 1e-4, "prompt logits");
    for (int32_t next : {7, 70, 21}) {
        cpu->decode_step(&next, 1, kc, a.data());
        gpu->decode_step(&next, 1, kg, b.data());
        expect_close(b, a, 1e-4, fmt::format("logits after token {}", next));
    }
    EXPECT_EQ(greedy_generate(*gpu, prompt, 12, -1), greedy_generate(*cpu, prompt, 12, -1));

    // A context longer than one 64-key chunk of the decoding kernel.
    KVCache kc2(*cpu, 128, 32), kg2(*gpu, 128, 32);
    std::vector<int32_t> longer(100);
    for (size_t i = 0; i < longer.size(); i++) longer[i] = int32_t((i * 37 + 5) % size_t(c.vocab_size));
    cpu->decode_step(longer.data(), int(longer.size()), kc2, a.data());
    gpu->decode_step(longer.data(), int(longer.size()), kg2, b.data());
    expect_close(b, a, 1e-4, "logits after a 100-token prompt");
}

TEST(CudaModel, AdaptersAndCheckpointsMoveBetweenDevices) {
    TUNER_REQUIRE_CUDA();
    ComputeMode f32(cuda::MatmulCompute::F32);
    const ModelConfig c = tiny_config(false);
    const std::string dir = ::tuner::testing::make_temp_dir("cuda_model_io");
    LoraConfig lc;
    lc.r = 4, lc.lora_alpha = 8, lc.lora_dropout = 0.0, lc.seed = 3;
    ModelOptions og = options_for(Device::CUDA, false);
    og.lora = lc;
    auto gpu = LlamaModel::random(c, og, 8);
    const int B = 1, T = 16;
    gpu->prepare(B, T, true);
    AdamW opt(gpu->trainable_params(), {});
    const Tokens tk = make_tokens(B, T, c.vocab_size, 5);
    const Batch b = tk.batch(B, T, false);
    double gn = 0;
    for (int s = 0; s < 3; s++) train_step(*gpu, opt, b, &gn);

    // The adapter written from the GPU, applied to the same base on the CPU: the same logits.
    gpu->save(dir + "/base", DType::F32);
    save_peft_adapter(*gpu, dir + "/adapter", dir + "/base");
    auto cpu = LlamaModel::load(dir + "/base", options_for(Device::CPU, false));
    load_peft_adapter(*cpu, dir + "/adapter");
    cpu->prepare(B, T, false);
    std::vector<float> lc_(size_t(T * c.vocab_size)), lg(lc_.size());
    cpu->logits(b, lc_.data());
    gpu->prepare(B, T, false);
    gpu->logits(b, lg.data());
    expect_close(lg, lc_, 1e-4, "logits of the adapter saved from the GPU");

    // A checkpoint of the GPU run resumes on the GPU bit for bit, and on the CPU too.
    gpu->prepare(B, T, true);
    const std::string ck = save_checkpoint(dir, 3, gpu->trainable_params(), opt, {}, "");
    auto gpu2 = LlamaModel::random(c, og, 99);
    AdamW opt2(gpu2->trainable_params(), {});
    load_checkpoint(ck, gpu2->trainable_params(), opt2);
    std::vector<Param*> p1 = gpu->trainable_params(), p2 = gpu2->trainable_params();
    for (size_t i = 0; i < p1.size(); i++) {
        EXPECT_EQ(host_f32(p1[i]->value), host_f32(p2[i]->value)) << p1[i]->name;
        EXPECT_EQ(host_f32(opt.exp_avg_tensor(i)), host_f32(opt2.exp_avg_tensor(i))) << p1[i]->name;
    }
    ModelOptions oc = options_for(Device::CPU, false);
    oc.lora = lc;
    auto cpu2 = LlamaModel::random(c, oc, 99);
    AdamW opt3(cpu2->trainable_params(), {});
    load_checkpoint(ck, cpu2->trainable_params(), opt3);
    std::vector<Param*> p3 = cpu2->trainable_params();
    for (size_t i = 0; i < p1.size(); i++) EXPECT_EQ(host_f32(p1[i]->value), host_f32(p3[i]->value)) << p1[i]->name;
    fs::remove_all(dir);
}

TEST(CudaModel, GpuMemoryPlanIsWhatTheModelAllocates) {
    TUNER_REQUIRE_CUDA();
    for (const char* method : {"full", "lora", "qlora", "lora bf16 activations"}) {
        const ModelConfig c = tiny_config(false);
        MemoryPlanRequest r;
        r.model = c;
        const bool bf16_acts = std::string(method) == "lora bf16 activations";
        r.method = bf16_acts ? "lora" : method;
        r.device = Device::CUDA;
        r.B = 2, r.T = 16;
        ModelOptions o = options_for(Device::CUDA, r.method == "full");
        if (bf16_acts) r.activation_dtype = o.activation_dtype = DType::BF16;
        if (r.method != "full") {
            LoraConfig lc;
            lc.r = 4;
            r.lora = lc;
            o.lora = lc;
            r.base_dtype = o.weight_dtype = r.method == "qlora" ? DType::NF4 : DType::BF16;
        }
        const TrainMemoryPlan plan = plan_training_memory(r);
        size_t free0 = 0, free1 = 0, total = 0;
        cuda::memory_info(&free0, &total);
        auto m = LlamaModel::random(c, o, 1);
        m->prepare(r.B, r.T, true);
        AdamW opt(m->trainable_params(), {});
        cuda::memory_info(&free1, &total);
        // What the model and the optimizer took from the device: at least their planned arenas, at
        // most the plan's peak less cuBLASLt and eval (the workspace is reserved once per process
        // and only grows; each cudaMalloc rounds up to 256 bytes, and RoPE's table is a few KiB).
        // Exact on the emulator, whose used memory is its live cudaMalloc bytes; on a GPU other
        // work on the device could move free memory, so only the emulator checks it.
#if defined(TUNER_CUDA_EMU)
        const size_t took = free0 - free1;
        const size_t arenas = plan.weights + plan.grads + plan.adapters + plan.optimizer + plan.activations;
        EXPECT_GE(took, arenas) << method;
        EXPECT_LE(took, plan.gpu_peak - plan.gpu_cublas - plan.gpu_eval + 64 * 1024) << method;
#endif
        const LlamaModel::ArenaBytes a = m->arena_bytes();
        EXPECT_EQ(plan.weights, a.weights) << method;
        EXPECT_EQ(plan.grads, a.grads + a.adapter_grads) << method;
        EXPECT_EQ(plan.adapters, a.adapters) << method;
        EXPECT_EQ(plan.activations, a.activations) << method;
        EXPECT_EQ(plan.optimizer, opt.state_bytes()) << method;
        EXPECT_EQ(plan.gpu_workspace, m->cuda_workspace_bytes(r.B, r.T)) << method;
        EXPECT_GE(cuda::workspace_bytes(), plan.gpu_workspace) << method;  // prepare reserved it
        EXPECT_EQ(plan.gpu_peak, plan.weights + plan.grads + plan.adapters + plan.optimizer + plan.activations +
                                     plan.gpu_workspace + plan.gpu_cublas + plan.gpu_eval)
            << method;
    }
}

// The check: 5 training steps of stories260K on the GPU with bf16 matmuls, bf16
// tensor-core attention and bf16 activations (the defaults) agree with the CPU run (f32) within bf16 tolerance, for
// LoRA and full fine-tuning, at a learning rate where training is stable (1e-3: at 1e-2 full
// fine-tuning of this model diverges and amplifies any rounding difference).
TEST(CudaModel, Stories260KFiveStepsBf16MatchCpu) {
    TUNER_REQUIRE_CUDA();
    TUNER_REQUIRE_SHARED_DATA(data);
    const std::string model_dir = data + "/stories260K/hf";
    if (!fs::exists(model_dir + "/config.json")) GTEST_SKIP() << model_dir << " not found";
    ComputeMode bf16(cuda::MatmulCompute::BF16);
    for (bool full : {false, true}) {
        ModelOptions oc = options_for(Device::CPU, full), og = options_for(Device::CUDA, full);
        og.activation_dtype = default_activation_dtype(Device::CUDA);  // bf16, as tuner train runs it
        ASSERT_EQ(og.activation_dtype, DType::BF16);
        if (!full) {
            LoraConfig lc;
            lc.r = 8, lc.lora_alpha = 16, lc.lora_dropout = 0.1, lc.seed = 1;
            oc.lora = lc, og.lora = lc;
        }
        auto cpu = LlamaModel::load(model_dir, oc);
        auto gpu = LlamaModel::load(model_dir, og);
        const int B = 2, T = 64;
        cpu->prepare(B, T, true);
        gpu->prepare(B, T, true);
        AdamW ac(cpu->trainable_params(), {}), ag(gpu->trainable_params(), {});
        for (int step = 0; step < 5; step++) {
            const Tokens tk = make_tokens(B, T, cpu->config.vocab_size, 300 + uint64_t(step));
            const Batch b = tk.batch(B, T, false);
            cpu->set_lora_dropout_counter(uint64_t(step));
            gpu->set_lora_dropout_counter(uint64_t(step));
            double gc = 0, gg = 0;
            const double l1 = train_step(*cpu, ac, b, &gc, nullptr, 1e-3);
            const double l2 = train_step(*gpu, ag, b, &gg, nullptr, 1e-3);
            EXPECT_NEAR(l2, l1, 2e-2 * std::fabs(l1)) << (full ? "full" : "lora") << " step " << step;
            EXPECT_NEAR(gg, gc, 0.1 * gc) << (full ? "full" : "lora") << " grad norm, step " << step;
        }
    }
}

// A llama.cpp GGUF base with Q8_0 blocks (exported from stories260K) stays in its blocks on the
// GPU as on the CPU: LoRA over it matches the CPU run.
TEST(CudaModel, GgufQ8_0BaseLoraMatchesCpu) {
    TUNER_REQUIRE_CUDA();
    TUNER_REQUIRE_SHARED_DATA(data);
    const std::string model_dir = data + "/stories260K/hf";
    ComputeMode f32(cuda::MatmulCompute::F32);
    const std::string dir = ::tuner::testing::make_temp_dir("cuda_gguf");
    GgufExportOptions eo;
    eo.type = DType::Q8_0;
    export_gguf(model_dir, dir + "/q8.gguf", eo);
    LoraConfig lc;
    lc.r = 4, lc.lora_alpha = 8, lc.lora_dropout = 0.1, lc.seed = 2;
    ModelOptions oc = options_for(Device::CPU, false), og = options_for(Device::CUDA, false);
    oc.lora = lc, og.lora = lc;
    auto cpu = LlamaModel::load(dir + "/q8.gguf", oc);
    auto gpu = LlamaModel::load(dir + "/q8.gguf", og);
    bool quantised = false;
    for (Param* p : gpu->params()) quantised |= p->value.dtype == DType::Q8_0;
    EXPECT_TRUE(quantised) << "the GGUF base should keep Q8_0 matrices";
    const int B = 2, T = 32;
    cpu->prepare(B, T, true);
    gpu->prepare(B, T, true);
    AdamW ac(cpu->trainable_params(), {}), ag(gpu->trainable_params(), {});
    expect_steps_match(*cpu, *gpu, ac, ag, cpu->config.vocab_size, B, T, 400, "gguf q8_0");
    fs::remove_all(dir);
}

// The program with the CUDA backend this test was built against: tuner on a GPU build,
// tuner_emu (same directory) in the emulator build.
static std::string cuda_tuner_exe() {
#if defined(TUNER_CUDA_EMU)
    return ::tuner::testing::tuner_exe() + "_emu";
#else
    return ::tuner::testing::tuner_exe();
#endif
}

// `tuner train --device cuda` end to end against the same run on the CPU: per-step losses,
// the adapter, a checkpoint written from the GPU resumed on the GPU (the resumed step repeats
// the same loss: the same device, the same kernels), and perplexity with the adapter.
TEST(CudaModel, CliTrainResumePerplexityOnCuda) {
    TUNER_REQUIRE_CUDA();
    TUNER_REQUIRE_SHARED_DATA(data);
    const std::string dir = ::tuner::testing::make_temp_dir("cuda_cli");
    {
        std::ifstream in(data + "/text/input.txt");
        std::string text(20000, '\0');
        in.read(text.data(), std::streamsize(text.size()));
        text.resize(size_t(in.gcount()));
        std::ofstream(dir + "/train.txt") << text;
        std::ofstream(dir + "/eval.txt") << text.substr(0, 3000);
    }
    std::ofstream(dir + "/cfg.yaml") << "model: " << data << "/stories260K/hf\n"
                                     << "method: lora\noutput_dir: " << dir << "/unused\n"
                                     << "data:\n  train:\n    - {path: " << dir
                                     << "/train.txt, format: text, split: paragraph}\n"
                                        "  max_length: 64\n  pack: true\n"
                                        "lora: {r: 8, lora_alpha: 16, lora_dropout: 0.1}\n"
                                        "train: {lr: 1.0e-3, batch_size: 2, grad_accum: 1, max_steps: 3, "
                                        "warmup_steps: 0, seed: 0}\n"
                                        "save: {every: 2, keep: 2}\n";
    const std::string exe = cuda_tuner_exe();
    std::string out;
    auto run = [&](const std::string& args) {
        const int rc = ::tuner::testing::run_command(exe + " " + args + " 2>&1", &out);
        EXPECT_EQ(rc, 0) << args << "\n" << out;
        return rc == 0;
    };
    ASSERT_TRUE(run("train " + dir + "/cfg.yaml --device cuda --set output_dir=" + dir + "/gpu"));
    EXPECT_NE(out.find("GPU memory plan"), std::string::npos) << out;
    ASSERT_TRUE(run("train " + dir + "/cfg.yaml --device cpu --set output_dir=" + dir + "/cpu"));
    const auto g = read_metrics(dir + "/gpu/metrics.jsonl"), c = read_metrics(dir + "/cpu/metrics.jsonl");
    ASSERT_EQ(g.size(), 3u);
    ASSERT_EQ(c.size(), 3u);
    for (size_t i = 0; i < 3; i++) {
        const double lg = g[i]["loss"].get<double>(), lc = c[i]["loss"].get<double>();
        EXPECT_NEAR(lg, lc, 2e-2 * lc) << "step " << i + 1 << " (bf16 matmuls on the GPU)";
    }
    EXPECT_TRUE(fs::exists(dir + "/gpu/adapter/adapter_model.safetensors"));

    // Resume from the GPU run's checkpoint-2: step 3 again, with the loss it had.
    ASSERT_TRUE(run("train " + dir + "/cfg.yaml --device cuda --set output_dir=" + dir + "/gpu --resume " + dir +
                    "/gpu/checkpoint-2"));
    const auto r = read_metrics(dir + "/gpu/metrics.jsonl");
    ASSERT_EQ(r.size(), 3u);
    EXPECT_NEAR(r[2]["loss"].get<double>(), g[2]["loss"].get<double>(), 1e-6 * g[2]["loss"].get<double>());

    // Perplexity with the GPU-trained adapter, on both devices.
    auto ppl = [&](const std::string& device) {
        run("perplexity " + data + "/stories260K/hf --adapter " + dir + "/gpu/adapter --text " + dir +
            "/eval.txt --ctx 64 --json --device " + device);
        const size_t at = out.find('{');
        return at == std::string::npos ? -1.0 : nlohmann::json::parse(out.substr(at)).value("loss", -1.0);
    };
    const double pg = ppl("cuda"), pc = ppl("cpu");
    EXPECT_GT(pc, 0);
    EXPECT_NEAR(pg, pc, 1e-2 * pc);
    fs::remove_all(dir);
}

// tuner bench on the GPU with a preset (random weights, no files): one JSON line with the step's
// speed, the measured GEMM peak, the device, the GPU plan and the kernels it ran on.
TEST(CudaModel, CliBenchPresetOnCuda) {
    TUNER_REQUIRE_CUDA();
    std::string out;
    const int rc = ::tuner::testing::run_command(
        cuda_tuner_exe() + " bench tiny --device cuda --seq 32 --steps 1 --lora-r 8 --optimizer --peak-size 256 --json",
        &out);
    ASSERT_EQ(rc, 0) << out;
    const size_t at = out.rfind("{\"tokens_per_s\"");
    ASSERT_NE(at, std::string::npos) << out;
    const nlohmann::json j = nlohmann::json::parse(out.substr(at));
    EXPECT_GT(j.value("tokens_per_s", 0.0), 0.0);
    EXPECT_GT(j.value("peak_gflops", 0.0), 0.0);
    EXPECT_GT(j.value("gpu_plan_mb", 0.0), 0.0);
    EXPECT_NE(j.value("device", std::string("cpu")), "cpu");
    EXPECT_TRUE(std::isfinite(j.value("loss", NAN)));
    // The defaults it ran on (TUNER_CUDA_ATTENTION may have picked the WMMA kernels).
    const std::string kernels = j.value("gpu_kernels", std::string());
    EXPECT_NE(kernels.find("matmul bf16, activations bf16, attention "), std::string::npos) << kernels;
}

// tuner chat --device cuda through a pipe: KV-cache decoding on the GPU, /reset, two turns.
TEST(CudaModel, CliChatOnCuda) {
    TUNER_REQUIRE_CUDA();
    TUNER_REQUIRE_SHARED_DATA(data);
    const std::string cmd = " chat " + data + "/stories260K/hf --template none --max-new-tokens 12 --echo";
    std::string gpu, cpu;
    ASSERT_EQ(::tuner::testing::run_command("printf 'Once upon a time\\n/reset\\nThe cat\\n' | " + cuda_tuner_exe() +
                                                cmd + " --device cuda 2>/dev/null",
                                            &gpu),
              0)
        << gpu;
    ASSERT_EQ(::tuner::testing::run_command("printf 'Once upon a time\\n/reset\\nThe cat\\n' | " + cuda_tuner_exe() +
                                                cmd + " 2>/dev/null",
                                            &cpu),
              0)
        << cpu;
    const size_t device_line = gpu.find("device: ");  // resolve_device's note on stderr
    if (device_line != std::string::npos) gpu.erase(device_line, gpu.find('\n', device_line) + 1 - device_line);
    EXPECT_CONTAINS(gpu, "user> The cat\nmodel> ");
#if defined(TUNER_CUDA_EMU)
    // The emulator is deterministic and its bf16 products happen not to change a greedy choice
    // here; on a GPU bf16 rounding may, so there only the transcript's shape is checked.
    EXPECT_EQ(gpu, cpu);
#endif
}
