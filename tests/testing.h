// Helpers shared by the tests.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

#include <gtest/gtest.h>

#include "core/error.h"

namespace tuner {
class LlamaModel;
class Tokenizer;
}  // namespace tuner

namespace tuner::testing {

// ../shared/data beside the checkout, or "" when it is absent (the test should GTEST_SKIP).
std::string shared_data_dir();
// Path to the built `tuner` program ($TUNER_EXE overrides the build's).
std::string tuner_exe();
// The checkout (for tests/ref/*.py) and the build folder (for cached references); $TUNER_SOURCE_DIR
// and $TUNER_BINARY_DIR override the paths compiled in, so test binaries built on one machine
// run on another (scripts/gpu-bundle.sh).
std::string source_dir();
std::string binary_dir();
// A fresh empty temporary directory (removed by the OS's tmp cleaning, not by the test).
std::string make_temp_dir(const std::string& prefix);
// The device model tests run on: CUDA in the *_emu test builds (the CUDA emulator, docs/cuda.md)
// and when TUNER_TEST_DEVICE=cuda is set (scripts/gpu-check.sh runs the golden tests that way),
// else the CPU. On CUDA it also sets the matmuls to f32 (cuda::MatmulCompute::F32) so that the
// tests' f32 tolerances apply. Tests that call it must GTEST_SKIP when *why is set (CUDA wanted
// but not available: the reason).
Device test_device(std::string* why = nullptr);
// cuda::available(why) (for TUNER_REQUIRE_CUDA), and whether TUNER_REQUIRE_CUDA=1 is set.
bool cuda_device(std::string* why);
bool cuda_device_required();
// A tensor's values as f32 on the host (F32/BF16/F16 tensors on either device).
std::vector<float> host_f32(const Tensor& t);
// Runs a shell command, returns its exit status and captures stdout+stderr into *output.
int run_command(const std::string& command, std::string* output);
// Deterministic pseudo-random floats in [-scale, scale).
std::vector<float> random_floats(size_t n, uint64_t seed, float scale = 1.0f);
// Deterministic integers (splitmix64), for token ids, shapes and segment lengths.
struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed) {}
    uint64_t next() {
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    int below(int n) { return int(next() % uint64_t(n)); }
};
// An alpaca .jsonl of n records whose answer is a fixed function of the question (the colour of
// a named animal: "What colour is the dog?" -> "The dog is blue."), a skill small models learn
// in a few steps; records start at animal `seed`. Returns DIR/data-SEED.jsonl.
std::string write_colour_dataset(const std::string& dir, int n, int seed);
// The whole file as bytes ("" when it cannot be read).
std::string read_file(const std::string& path);
// The fastest of `reps` timed calls of f, in seconds, after one untimed warm-up call (primitive
// creation, scratch growth); for the DISABLED_ perf tests.
template <class F>
double best_seconds(F&& f, int reps) {
    f();
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        const auto t0 = std::chrono::steady_clock::now();
        f();
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
}

// ---- models -----------------------------------------------------------------------------------
// Logits (T x V, row-major) of one sequence.
std::vector<float> logits_of(LlamaModel& m, const std::vector<int32_t>& tokens);
// max |a[i] - b[i]| (a test failure when the sizes differ).
float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b);

// ---- llama.cpp tokenizer vectors ----------------------------------------------------------------
// llama.cpp's test-tokenizer-0 format, in DATA/vectors/ggml-vocab-NAME.gguf.{inp,out}: the .inp
// file holds the strings, each followed by "\n__ggml_vocab_test__\n" (so a string's own trailing
// newlines are kept and the separator's leading newline is not part of it); the .out file has one
// line of space-separated ids per string (ids produced by Hugging Face tokenizers).
struct TokenizerVector {
    std::string text;
    std::vector<int32_t> ids;
};
// The .inp strings alone.
std::vector<std::string> read_vector_texts(const std::string& data, const std::string& name);
// The strings with their ids (a test failure when .inp and .out disagree on the count).
std::vector<TokenizerVector> read_vectors(const std::string& data, const std::string& name);
// " 1 2 3": ids for a failure message.
std::string show_ids(const std::vector<int32_t>& ids);
// `s` with newlines, tabs and other control bytes escaped, for a failure message.
std::string escape(const std::string& s);
// Encodes every vector string without special tokens and returns how many give the expected ids;
// each other one is a test failure that shows the string, the expected and the produced ids.
// Prints "[ vectors  ] LABEL: OK/N strings match NOTE".
size_t check_vectors(const Tokenizer& tok, const std::vector<TokenizerVector>& vectors, const std::string& label,
                     const std::string& note = "");

// ---- PyTorch reference scripts (tests/ref/*.py) -------------------------------------------------
// A reference script's output folder. ctest runs every test in its own process, so the output is
// cached in the build folder under a hash of the script (and of the scripts it imports):
// CACHE_PARENT/<hash>/. A process that finds no cache runs `PYTHON SCRIPT --out TMP` into a fresh
// temporary folder beside it and renames that into place; when several race, one rename wins and
// the others use the winner's folder (the scripts are deterministic, so all copies are identical).
// PYTHON is $TUNER_PYTHON or /usr/bin/python3; without it, or without torch and numpy, `skip`
// says why and the tests should GTEST_SKIP.
struct RefOutput {
    std::string dir;    // the script's output folder
    std::string skip;   // non-empty: why the tests are skipped
    std::string error;  // non-empty: the script failed (a test failure, not a skip)
};
// `imports`: the other scripts SCRIPT imports (their text is part of the hash); `tests` names the
// tests in the skip message ("the LoRA golden tests"); `tag` prefixes the script's printed output.
//   static const RefOutput ref = run_ref_script(TUNER_SOURCE_DIR "/tests/ref/lora_ref.py",
//       {TUNER_SOURCE_DIR "/tests/ref/llama_ref.py"}, TUNER_BINARY_DIR "/lora-ref", "the LoRA golden tests", "lora-ref");
RefOutput run_ref_script(const std::string& script, const std::vector<std::string>& imports,
                         const std::string& cache_parent, const std::string& tests, const std::string& tag);

// Runs f, which must throw tuner::Error, and returns the message ("" and a test failure if
// it does not throw).
template <typename F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const ::tuner::Error& e) {
        return e.what();
    }
    ADD_FAILURE() << "expected a tuner::Error";
    return "";
}

}  // namespace tuner::testing

#define EXPECT_CONTAINS(haystack, needle)                                                         \
    EXPECT_NE(std::string(haystack).find(needle), std::string::npos)                             \
        << "message: " << (haystack) << "\n  should contain: " << (needle)

// Skips the test without a CUDA device (saying why), or fails it when TUNER_REQUIRE_CUDA=1 is
// set (scripts/gpu-check.sh: on a GPU machine a missing device is an error). Top of a TEST only.
#define TUNER_REQUIRE_CUDA()                                                                       \
    do {                                                                                           \
        std::string why_;                                                                          \
        if (!::tuner::testing::cuda_device(&why_)) {                                               \
            if (::tuner::testing::cuda_device_required())                                          \
                FAIL() << "no CUDA device: " << why_ << " (TUNER_REQUIRE_CUDA=1)";                 \
            GTEST_SKIP() << "no CUDA device: " << why_;                                            \
        }                                                                                          \
    } while (0)

#define TUNER_REQUIRE_SHARED_DATA(dir_var)                                                      \
    std::string dir_var = ::tuner::testing::shared_data_dir();                                  \
    if (dir_var.empty()) GTEST_SKIP() << "../shared/data is not beside this checkout; skipping"
