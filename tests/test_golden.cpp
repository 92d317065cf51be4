// Golden tests: the Llama-family model against an independent PyTorch reference.
//
// tests/ref/llama_ref.py builds tiny models (Llama GQA, tied MHA, Qwen2 with q/k/v biases,
// Llama 3 rope scaling, Mistral with linear rope scaling, packed samples, bf16 weights), runs
// them in float64 with torch autograd and writes, per case, an HF folder (config.json,
// model.safetensors) and golden.safetensors (tokens, targets, [positions, seg_start], logits,
// mean loss, grad.<param> of the mean loss, and logits/loss with bf16-rounded matrices). Here each
// folder is loaded with LlamaModel::load and every logit, the loss and every parameter gradient is
// compared with the golden; then again with the model planned for a larger batch, and once more
// with frozen bf16 matrices (forward only). A failure lists every tensor out of tolerance with
// its worst element, and the worst passing ones.
//
// The script needs /usr/bin/python3 with torch and numpy (Debian's python3-torch); without them
// every test here is skipped with a message. TUNER_PYTHON overrides the interpreter. Its output is
// cached in BUILD/golden-ref/<hash of the script>/ (delete it to regenerate).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "io/safetensors.h"
#include "models/llama.h"
#include "testing.h"

namespace {

using namespace tuner;

// ---- tolerances ---------------------------------------------------------------------------
// Errors are measured as max|got - want| over a tensor, against the tensor's max|want|.
//
// The C++ model computes in f32 and the reference in f64, so the expected error is f32 rounding
// accumulated through 2 layers forward and back. llama_ref.py measures exactly that (it reruns
// every case in f32 torch and prints the worst relative error): 1.5e-6 .. 3e-6 over all logits
// and gradients. 1e-4 leaves a 30x margin for other summation orders (blocked matmuls,
// chunked cross-entropy, online softmax) while any real bug (a wrong rope pair, a missing mask
// entry, an off-by-one in the label shift, a dropped gradient term) shows up at 1e-2 .. 1.
//
// bf16 weights: the reference computed with the bf16-rounded values that the file holds, and the
// model converts them to f32 exactly (on load, or tile by tile in the kernels for a frozen bf16
// weight; activations stay f32), so the same tolerance applies.
constexpr double kRelTol = 1e-4;
constexpr double kAbsTol = 1e-7;  // floor for tensors whose max is tiny
// The loss is one f32 sum of ~30 token losses divided by their count.
constexpr double kLossRelTol = 1e-5;

const char* const kCases[] = {"llama_gqa",           "llama_tied_mha", "qwen2_bias", "llama3_rope",
                              "mistral_linear_rope", "packed",         "bf16_weights"};

// ---- generating the goldens once ------------------------------------------------------------
// Cached in BUILD/golden-ref/<hash of the script>/ (tuner::testing::run_ref_script).
const tuner::testing::RefOutput& golden_root() {
    static const tuner::testing::RefOutput root =
        tuner::testing::run_ref_script(tuner::testing::source_dir() + "/tests/ref/llama_ref.py", {},
                                       tuner::testing::binary_dir() + "/golden-ref", "the golden tests", "golden");
    return root;
}

// ---- reading the golden file ----------------------------------------------------------------
struct GoldenTensor {
    std::vector<int64_t> shape;
    std::vector<float> data;
};

struct Golden {
    int B = 0, T = 0;
    int64_t V = 0;
    std::vector<int32_t> tokens, targets, positions, seg_start;
    std::vector<float> logits;       // (B*T, V)
    double loss = 0;                 // mean over trained tokens
    std::vector<float> logits_bf16;  // with every 2-D weight rounded to bf16
    double loss_bf16 = 0;
    int64_t trained = 0;        // targets != -100
    std::map<std::string, GoldenTensor> grads;  // by parameter name

    Batch batch() const {
        Batch b;
        b.B = B;
        b.T = T;
        b.tokens = tokens.data();
        b.targets = targets.data();
        b.positions = positions.empty() ? nullptr : positions.data();
        b.seg_start = seg_start.empty() ? nullptr : seg_start.data();
        return b;
    }
};

const SafetensorsTensor& need(const SafetensorsFile& f, const std::string& name, DType dtype) {
    const SafetensorsTensor* t = f.find(name);
    if (!t) throw std::runtime_error(f.path() + ": no tensor '" + name + "'");
    if (t->dtype != dtype) throw std::runtime_error(f.path() + ": tensor '" + name + "' has an unexpected dtype");
    return *t;
}

std::vector<int32_t> read_i32(const SafetensorsFile& f, const std::string& name) {
    const SafetensorsTensor& t = need(f, name, DType::I32);
    std::vector<int32_t> v(t.nbytes / 4);
    std::memcpy(v.data(), t.data, t.nbytes);
    return v;
}

GoldenTensor read_f32(const SafetensorsFile& f, const std::string& name) {
    const SafetensorsTensor& t = need(f, name, DType::F32);
    GoldenTensor g;
    g.shape = t.shape;
    g.data.resize(t.nbytes / 4);
    std::memcpy(g.data.data(), t.data, t.nbytes);
    return g;
}

Golden load_golden(const std::string& case_dir) {
    SafetensorsFile f(case_dir + "/golden.safetensors");
    Golden g;
    const SafetensorsTensor& tok = need(f, "tokens", DType::I32);
    g.B = int(tok.shape.at(0));
    g.T = int(tok.shape.at(1));
    g.tokens = read_i32(f, "tokens");
    g.targets = read_i32(f, "targets");
    if (f.find("positions")) g.positions = read_i32(f, "positions");
    if (f.find("seg_start")) g.seg_start = read_i32(f, "seg_start");
    GoldenTensor logits = read_f32(f, "logits");
    g.V = logits.shape.at(1);
    g.logits = std::move(logits.data);
    g.loss = read_f32(f, "loss").data.at(0);
    g.logits_bf16 = read_f32(f, "logits_bf16_matrices").data;
    g.loss_bf16 = read_f32(f, "loss_bf16_matrices").data.at(0);
    for (int32_t t : g.targets) g.trained += t != -100;
    const std::string prefix = "grad.";
    for (const SafetensorsTensor& t : f.tensors()) {
        if (t.name.rfind(prefix, 0) == 0) g.grads[t.name.substr(prefix.size())] = read_f32(f, t.name);
    }
    return g;
}

// ---- comparing ------------------------------------------------------------------------------
struct Diff {
    double max_err = 0;  // max |got - want| (inf when got has a NaN/inf)
    double max_ref = 0;  // max |want|
    size_t where = 0;    // index of max_err
    double got = 0, want = 0;
    double rel() const { return max_ref > 0 ? max_err / max_ref : max_err; }
};

Diff compare(const float* got, const float* want, size_t n) {
    Diff d;
    for (size_t i = 0; i < n; i++) {
        d.max_ref = std::max(d.max_ref, double(std::fabs(want[i])));
        double e = std::isfinite(got[i]) ? std::fabs(double(got[i]) - double(want[i])) : INFINITY;
        if (i == 0 || e > d.max_err) {
            d.max_err = e;
            d.where = i;
            d.got = got[i];
            d.want = want[i];
        }
    }
    return d;
}

// Collects every comparison of one run; fails with the worst tensors listed.
class Report {
  public:
    explicit Report(std::string what) : what_(std::move(what)) {}

    void tensor(const std::string& name, const float* got, const float* want, size_t n, double scale = 1.0) {
        std::vector<float> scaled;
        if (scale != 1.0) {
            scaled.assign(want, want + n);
            for (float& x : scaled) x = float(x * scale);
            want = scaled.data();
        }
        Diff d = compare(got, want, n);
        bool ok = d.max_err <= kRelTol * d.max_ref + kAbsTol;
        std::string line = fmt::format("{:<52} rel {:.2e}  max|err| {:.3e} at [{}] got {:.7g} want {:.7g} (max|want| {:.4g})",
                                       name, d.rel(), d.max_err, d.where, d.got, d.want, d.max_ref);
        rows_.push_back({ok ? d.rel() : INFINITY, line});
        if (!ok) failures_.push_back(line);
    }
    void passed(const std::string& line) { rows_.push_back({0.0, line}); }
    void failure(const std::string& line) {
        failures_.push_back(line);
        rows_.push_back({INFINITY, line});
    }

    // Prints one summary line; on failure, an EXPECT failure with every failed tensor and the
    // worst of the rest.
    void finish() {
        std::sort(rows_.begin(), rows_.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
        if (failures_.empty()) {
            std::printf("[golden] %s: %zu checks passed (rel %.0e); worst: %s\n", what_.c_str(), rows_.size(),
                        kRelTol, rows_.empty() ? "-" : rows_[0].second.c_str());
            return;
        }
        std::string msg = fmt::format("{}: {} of {} checks out of tolerance (rel {:.0e} of max|want| + {:.0e}):\n",
                                      what_, failures_.size(), rows_.size(), kRelTol, kAbsTol);
        for (const std::string& f : failures_) msg += "  FAIL " + f + "\n";
        msg += "worst passing:\n";
        int shown = 0;
        for (const auto& r : rows_) {
            if (std::isinf(r.first)) continue;
            if (shown++ == 5) break;
            msg += "  ok   " + r.second + "\n";
        }
        ADD_FAILURE() << msg;
    }

  private:
    std::string what_;
    std::vector<std::pair<double, std::string>> rows_;
    std::vector<std::string> failures_;
};

void check_loss(Report& r, const std::string& what, double sum, int64_t count, const Golden& g) {
    if (count != g.trained) {
        r.failure(fmt::format("{}: count {} but {} targets are not -100", what, count, g.trained));
        return;
    }
    double mean = sum / double(count);
    double err = std::fabs(mean - g.loss);
    std::string line = fmt::format("{:<52} rel {:.2e}  got {:.9g} want {:.9g}", what, err / std::fabs(g.loss), mean, g.loss);
    if (!(err <= kLossRelTol * std::fabs(g.loss))) {
        r.failure(line);
    } else {
        r.passed(line);
    }
}

// Compares grads of every trainable parameter with `scale` x the golden, and checks that the
// model's parameter names are exactly the golden's (tied models: no lm_head).
void check_grads(Report& r, LlamaModel& m, const Golden& g, double scale, const std::string& suffix) {
    std::set<std::string> seen;
    for (Param* p : m.params()) {
        seen.insert(p->name);
        auto it = g.grads.find(p->name);
        if (it == g.grads.end()) {
            r.failure("model parameter " + p->name + " has no golden gradient (wrong name, or lm_head of a tied model?)");
            continue;
        }
        if (!p->trainable()) {
            r.failure("parameter " + p->name + " has no gradient");
            continue;
        }
        const GoldenTensor& want = it->second;
        if (p->grad.dims() != want.shape) {
            r.failure(fmt::format("grad.{}: shape {} but the golden is ({})", p->name, p->grad.shape_str(),
                                  fmt::join(want.shape, ", ")));
            continue;
        }
        const std::vector<float> grad = tuner::testing::host_f32(p->grad);
        r.tensor("grad." + p->name + suffix, grad.data(), want.data.data(), want.data.size(), scale);
    }
    for (const auto& [name, t] : g.grads) {
        if (!seen.count(name)) r.failure("golden gradient " + name + " has no model parameter");
    }
}

std::string case_dir(const std::string& name) { return golden_root().dir + "/" + name; }

// The model's device (tests/testing.h test_device: the CPU, or CUDA in test_golden_emu and under
// TUNER_TEST_DEVICE=cuda, with f32 matmuls so the same tolerances apply).
ModelOptions golden_options() {
    ModelOptions o;
    o.device = tuner::testing::test_device();
    return o;
}

#define GOLDEN_PRECONDITIONS()                                                   \
    do {                                                                         \
        const tuner::testing::RefOutput& root = golden_root();                   \
        if (!root.skip.empty()) GTEST_SKIP() << root.skip;                       \
        ASSERT_TRUE(root.error.empty()) << root.error;                           \
        std::string why_;                                                        \
        tuner::testing::test_device(&why_);                                      \
        if (!why_.empty()) GTEST_SKIP() << why_;                                 \
    } while (0)

// ---- tests ----------------------------------------------------------------------------------
class GoldenTest : public ::testing::TestWithParam<const char*> {};

// Full fine-tuning: logits, forward_loss, forward_backward's loss and every gradient; then a
// second forward_backward, which must add the same gradients again (grads accumulate).
TEST_P(GoldenTest, LogitsLossGrads) {
    GOLDEN_PRECONDITIONS();
    const std::string name = GetParam();
    Golden g = load_golden(case_dir(name));
    std::unique_ptr<LlamaModel> m = LlamaModel::load(case_dir(name), golden_options());
    ASSERT_EQ(m->config.vocab_size, g.V);
    m->prepare(g.B, g.T, /*training=*/true);
    Batch batch = g.batch();
    Report r(name);

    std::vector<float> logits(size_t(g.B) * g.T * g.V);
    m->logits(batch, logits.data());
    r.tensor("logits", logits.data(), g.logits.data(), logits.size());

    int64_t count = 0;
    double sum = m->forward_loss(batch, &count);
    check_loss(r, "forward_loss", sum, count, g);

    m->zero_grad();
    count = 0;
    sum = m->forward_backward(batch, float(1.0 / double(g.trained)), &count);
    check_loss(r, "forward_backward loss", sum, count, g);
    check_grads(r, *m, g, 1.0, "");

    count = 0;
    sum = m->forward_backward(batch, float(1.0 / double(g.trained)), &count);
    check_loss(r, "second forward_backward loss", sum, count, g);
    check_grads(r, *m, g, 2.0, " (accumulated x2)");
    r.finish();
}

// Activations planned for a larger batch than the one run: strides must follow batch.B/T.
TEST_P(GoldenTest, PreparedForLargerBatch) {
    GOLDEN_PRECONDITIONS();
    const std::string name = GetParam();
    Golden g = load_golden(case_dir(name));
    std::unique_ptr<LlamaModel> m = LlamaModel::load(case_dir(name), golden_options());
    m->prepare(g.B + 1, g.T + 5, /*training=*/true);
    Batch batch = g.batch();
    Report r(name + " (prepared for larger batches)");

    std::vector<float> logits(size_t(g.B) * g.T * g.V);
    m->logits(batch, logits.data());
    r.tensor("logits", logits.data(), g.logits.data(), logits.size());
    m->zero_grad();
    int64_t count = 0;
    double sum = m->forward_backward(batch, float(1.0 / double(g.trained)), &count);
    check_loss(r, "forward_backward loss", sum, count, g);
    check_grads(r, *m, g, 1.0, "");
    r.finish();
}

// Frozen bf16 weights (the LoRA / inference path): ModelOptions{weight_dtype = BF16, trainable =
// false} keeps every matrix (embedding, projections, head) in bf16 and converts it inside the
// kernels; norms and biases stay F32. The reference computed logits_bf16_matrices with exactly
// those rounded values (for bf16_weights the file already holds them, so they equal `logits`),
// and activations stay f32, so the f32 tolerance applies.
TEST_P(GoldenTest, FrozenBF16Forward) {
    GOLDEN_PRECONDITIONS();
    const std::string name = GetParam();
    Golden g = load_golden(case_dir(name));
    ModelOptions opt = golden_options();
    opt.weight_dtype = DType::BF16;
    opt.trainable = false;
    std::unique_ptr<LlamaModel> m = LlamaModel::load(case_dir(name), opt);
    for (Param* p : m->params()) {
        EXPECT_FALSE(p->trainable()) << p->name << " has a gradient although trainable = false";
        if (p->value.ndim == 2) {
            EXPECT_EQ(p->value.dtype, DType::BF16) << p->name << " is not stored as bf16";
        }
    }
    m->prepare(g.B, g.T, /*training=*/false);
    Batch batch = g.batch();
    Report r(name + " (frozen bf16 matrices)");
    std::vector<float> logits(size_t(g.B) * g.T * g.V);
    m->logits(batch, logits.data());
    r.tensor("logits", logits.data(), g.logits_bf16.data(), logits.size());
    int64_t count = 0;
    double sum = m->forward_loss(batch, &count);
    Golden gb = g;
    gb.loss = g.loss_bf16;
    check_loss(r, "forward_loss", sum, count, gb);
    r.finish();
}

INSTANTIATE_TEST_SUITE_P(Cases, GoldenTest, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<const char*>& info) { return std::string(info.param); });

}  // namespace
