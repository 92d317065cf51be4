#include "nn/lora.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/act_f32.h"
#include "core/error.h"
#include "core/random.h"
#include "nn/device_copy.h"

namespace tuner {

const std::array<const char*, kLoraModules> kLoraModuleNames = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                                "gate_proj", "up_proj", "down_proj"};

const char* lora_module_parent(int module) { return module <= int(LoraModule::o_proj) ? "self_attn" : "mlp"; }

int lora_module_index(const std::string& name) {
    for (int m = 0; m < kLoraModules; m++)
        if (name == kLoraModuleNames[size_t(m)]) return m;
    return -1;
}

float LoraConfig::scale() const {
    return float(use_rslora ? lora_alpha / std::sqrt(double(r)) : lora_alpha / double(r));
}

void LoraConfig::validate(const std::string& where) const {
    if (r <= 0) fail("[lora] {}: r must be a positive integer (got {})", where, r);
    if (!std::isfinite(lora_alpha)) fail("[lora] {}: lora_alpha must be a finite number", where);
    if (!(lora_dropout >= 0.0 && lora_dropout < 1.0))
        fail("[lora] {}: lora_dropout must be in [0, 1) (got {})", where, lora_dropout);
    (void)targets(where);
}

std::array<bool, kLoraModules> LoraConfig::targets(const std::string& where) const {
    std::array<bool, kLoraModules> on{};
    if (target_modules.empty())
        fail("[lora] {}: target_modules is empty (use all-linear, or names among q_proj, k_proj, v_proj, o_proj, "
             "gate_proj, up_proj, down_proj)",
             where);
    for (const std::string& name : target_modules) {
        if (name == "all-linear") {
            on.fill(true);
            continue;
        }
        if (name == "lm_head")
            fail("[lora] {}: target_modules: lm_head cannot be adapted (PEFT's all-linear excludes it too)", where);
        int m = lora_module_index(name);
        if (m < 0)
            fail("[lora] {}: target_modules: unknown module '{}' (known: all-linear, q_proj, k_proj, v_proj, o_proj, "
                 "gate_proj, up_proj, down_proj)",
                 where, name);
        on[size_t(m)] = true;
    }
    return on;
}

std::vector<std::string> LoraConfig::target_names() const {
    std::array<bool, kLoraModules> on = targets("target_modules");
    std::vector<std::string> out;
    for (int m = 0; m < kLoraModules; m++)
        if (on[size_t(m)]) out.push_back(kLoraModuleNames[size_t(m)]);
    return out;
}

std::string lora_module_path(int layer, int module) {
    return fmt::format("model.layers.{}.{}.{}", layer, lora_module_parent(module), kLoraModuleNames[size_t(module)]);
}

std::string lora_tensor_name(int layer, int module, char which) {
    return fmt::format("base_model.model.{}.lora_{}.weight", lora_module_path(layer, module), which);
}

void lora_init(LoraAdapter& a, uint64_t seed) {
    TUNER_ASSERT(a.active());
    const int64_t in = a.A.value.shape[1];
    // kaiming_uniform_(a=sqrt(5)) on a (r, in) weight: fan_in = in, gain = sqrt(2/(1+5)),
    // bound = gain * sqrt(3/fan_in) = 1/sqrt(in).
    const float bound = float(1.0 / std::sqrt(double(in)));
    // Values are made on the host (the same numbers for either device) and copied in.
    std::vector<float> values(size_t(a.A.value.numel()));
    fill_uniform(values.data(), values.size(), seed, stream_id(a.A.name.c_str()), -bound, bound);
    tensor_from_host(a.A.value, values.data());
    tensor_zero(a.B.value);
}

// ---- dropout --------------------------------------------------------------------------------
uint64_t lora_dropout_key(uint64_t seed, uint64_t counter, int layer, int module) {
    // A distinct stream from A's init (which hashes tensor names), then chained mixing so that
    // nearby (counter, layer, module) triples give unrelated keys.
    uint64_t k = splitmix64(seed ^ 0x6c6f72615f64726full);  // "lora_dro"
    k = splitmix64(k ^ counter);
    k = splitmix64(k ^ (uint64_t(uint32_t(layer)) << 8) ^ uint64_t(uint32_t(module)));
    return k;
}

uint32_t lora_dropout_threshold(float p) {
    // p * 2^32, saturated (p < 1 is validated by LoraConfig).
    double t = double(p) * 4294967296.0;
    return t >= 4294967295.0 ? 0xffffffffu : uint32_t(t);
}

// Element i uses the high 32 bits of splitmix64(key + i): one hash per element, in straight-line
// code that the compiler vectorises (8 lanes of 64-bit multiplies with AVX-512), which made the
// masks ~8x cheaper than a scalar loop sharing one hash between two elements.
static inline uint32_t element_bits(uint64_t key, int64_t i) { return uint32_t(splitmix64(key + uint64_t(i)) >> 32); }

bool lora_dropout_keep(uint64_t key, int64_t i, float p) { return element_bits(key, i) >= lora_dropout_threshold(p); }

// Blocks of elements per thread; each block's loop is branch-free so it vectorises.
static constexpr int64_t kDropoutBlock = 4096;

void lora_dropout_forward(ActOut out_act, ActIn x_act, int64_t n, uint64_t key, float p) {
    const cpu::F32In x_f32(x_act, n);
    cpu::F32Out out_f32(out_act, n);
    float* out = out_f32.get();
    const float* x = x_f32.get();
    const uint32_t thr = lora_dropout_threshold(p);
    const float s = 1.0f / (1.0f - p);
    const int64_t nblocks = (n + kDropoutBlock - 1) / kDropoutBlock;
#pragma omp parallel for schedule(static) if (n > 32768)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        const int64_t i0 = blk * kDropoutBlock, i1 = std::min(n, i0 + kDropoutBlock);
#pragma omp simd
        for (int64_t i = i0; i < i1; i++) out[i] = element_bits(key, i) >= thr ? x[i] * s : 0.0f;
    }
}

void lora_dropout_backward_add(float* dx, const float* g, int64_t n, uint64_t key, float p) {
    const uint32_t thr = lora_dropout_threshold(p);
    const float s = 1.0f / (1.0f - p);
    const int64_t nblocks = (n + kDropoutBlock - 1) / kDropoutBlock;
#pragma omp parallel for schedule(static) if (n > 32768)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        const int64_t i0 = blk * kDropoutBlock, i1 = std::min(n, i0 + kDropoutBlock);
#pragma omp simd
        for (int64_t i = i0; i < i1; i++) dx[i] += element_bits(key, i) >= thr ? g[i] * s : 0.0f;
    }
}

}  // namespace tuner
