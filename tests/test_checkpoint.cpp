// Checkpoints: save -> load restores parameters and AdamW moments exactly; a checkpoint of other
// tensors is refused with a clear message; a write that fails half-way (file size limit, as on a
// full disk) leaves no checkpoint under the final name and the earlier checkpoint intact.
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <sys/resource.h>

#include "models/llama.h"
#include "testing.h"
#include "train/adamw.h"
#include "train/checkpoint.h"

using namespace tuner;
namespace fs = std::filesystem;

struct Toy {
    std::vector<std::vector<float>> v, g;
    std::vector<Param> p;
    std::vector<Param*> ptrs;
    Toy(std::vector<std::vector<int64_t>> shapes, uint64_t seed) {
        for (auto& s : shapes) {
            int64_t n = 1;
            for (auto d : s) n *= d;
            v.push_back(tuner::testing::random_floats(size_t(n), seed++));
            g.push_back(tuner::testing::random_floats(size_t(n), seed++));
        }
        p.resize(shapes.size());
        for (size_t i = 0; i < shapes.size(); i++) {
            p[i].name = "layer." + std::to_string(i) + ".weight";
            p[i].value = Tensor::view(v[i].data(), DType::F32, shapes[i]);
            p[i].grad = Tensor::view(g[i].data(), DType::F32, shapes[i]);
            ptrs.push_back(&p[i]);
        }
    }
};

TEST(Checkpoint, RoundTripIsExact) {
    Toy a({{4, 3}, {5}}, 1);
    AdamW opt(a.ptrs, {});
    opt.step(1e-3);
    opt.step(1e-3);
    std::string out = tuner::testing::make_temp_dir("ckpt");
    std::string dir = save_checkpoint(out, 2, a.ptrs, opt, {{"epoch", 1}}, "model: x\n");
    EXPECT_TRUE(fs::exists(dir + "/trainer_state.json"));
    EXPECT_FALSE(fs::exists(dir + ".tmp"));

    Toy b({{4, 3}, {5}}, 100);  // different values, same names and shapes
    AdamW opt2(b.ptrs, {});
    auto state = load_checkpoint(dir, b.ptrs, opt2);
    EXPECT_EQ(state["step"], 2);
    EXPECT_EQ(state["epoch"], 1);
    EXPECT_EQ(opt2.steps_taken(), 2);
    for (size_t i = 0; i < 2; i++) {
        EXPECT_EQ(a.v[i], b.v[i]);
        size_t n = a.v[i].size();
        EXPECT_EQ(0, std::memcmp(opt.exp_avg(i), opt2.exp_avg(i), n * 4));
        EXPECT_EQ(0, std::memcmp(opt.exp_avg_sq(i), opt2.exp_avg_sq(i), n * 4));
    }
    // Both continue identically (given the same gradients).
    std::copy(a.g[0].begin(), a.g[0].end(), b.g[0].begin());
    std::copy(a.g[1].begin(), a.g[1].end(), b.g[1].begin());
    opt.step(5e-4);
    opt2.step(5e-4);
    EXPECT_EQ(a.v[0], b.v[0]);
}

TEST(Checkpoint, OtherModelIsRefused) {
    Toy a({{4, 3}}, 1);
    AdamW opt(a.ptrs, {});
    std::string out = tuner::testing::make_temp_dir("ckpt-other");
    std::string dir = save_checkpoint(out, 1, a.ptrs, opt, {}, "");
    Toy b({{4, 4}}, 1);
    AdamW opt2(b.ptrs, {});
    try {
        load_checkpoint(dir, b.ptrs, opt2);
        FAIL() << "expected an error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("different trained tensors"), std::string::npos) << e.what();
    }
    EXPECT_THROW(load_checkpoint(out + "/nope", b.ptrs, opt2), Error);
}

TEST(Checkpoint, PruneKeepsNewest) {
    Toy a({{2}}, 1);
    AdamW opt(a.ptrs, {});
    std::string out = tuner::testing::make_temp_dir("ckpt-prune");
    for (int s : {5, 10, 15, 20}) save_checkpoint(out, s, a.ptrs, opt, {}, "");
    fs::create_directories(out + "/checkpoint-25.tmp");  // a crashed write: never listed
    prune_checkpoints(out, 2);
    auto left = list_checkpoints(out);
    ASSERT_EQ(left.size(), 2u);
    EXPECT_NE(left[0].find("checkpoint-15"), std::string::npos);
    EXPECT_NE(left[1].find("checkpoint-20"), std::string::npos);
}

// Runs in a death-test child: the write must fail with a tuner::Error and leave nothing behind.
[[noreturn]] static void save_under_file_size_limit(const std::string& out, Toy& big, AdamW& opt) {
    std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim;
    lim.rlim_cur = lim.rlim_max = 256 * 1024;
    setrlimit(RLIMIT_FSIZE, &lim);
    try {
        save_checkpoint(out, 2, big.ptrs, opt, {}, "");
    } catch (const Error& e) {
        std::fprintf(stderr, "%s\n", e.what());
        std::exit(fs::exists(out + "/checkpoint-2") || fs::exists(out + "/checkpoint-2.tmp") ? 3 : 0);
    }
    std::exit(4);
}

TEST(Checkpoint, FailedWriteLeavesEarlierCheckpointIntact) {
    std::string out = tuner::testing::make_temp_dir("ckpt-full");
    Toy a({{64, 64}}, 1);
    AdamW opt(a.ptrs, {});
    std::string first = save_checkpoint(out, 1, a.ptrs, opt, {}, "");
    Toy big({{512, 512}}, 2);  // same name, larger: the write below runs into the size limit
    big.p[0].name = a.p[0].name;
    AdamW opt_big(big.ptrs, {});
    // A file size limit makes write() fail with EFBIG, like a full disk makes it fail with ENOSPC.
    EXPECT_EXIT(save_under_file_size_limit(out, big, opt_big),
        ::testing::ExitedWithCode(0), "checkpoint|safetensors");
    AdamW opt2(a.ptrs, {});
    EXPECT_NO_THROW(load_checkpoint(first, a.ptrs, opt2));
    EXPECT_EQ(list_checkpoints(out).size(), 1u);
}
