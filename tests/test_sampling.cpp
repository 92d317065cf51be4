// Sampling: greedy at temperature 0, top-k and top-p cut the distribution as HF's warpers do,
// the repetition penalty, and a fixed seed gives a fixed draw.
#include <gtest/gtest.h>

#include <map>

#include "infer/sampling.h"

using namespace tuner;

TEST(Sampling, GreedyAtZeroTemperature) {
    SamplingParams p;
    p.temperature = 0;
    Sampler s(p);
    std::vector<float> logits = {0.1f, 2.0f, 1.9f, -1.0f};
    EXPECT_EQ(s.sample(logits, {}), 1);
}

TEST(Sampling, TopKAndTopPLimitTheChoices) {
    std::vector<float> base = {3.0f, 2.9f, 2.8f, 0.0f, -1.0f, 2.7f};
    SamplingParams p;
    p.temperature = 1.0, p.top_k = 2, p.top_p = 1.0, p.seed = 1;
    Sampler s(p);
    std::map<int, int> hits;
    for (int i = 0; i < 2000; i++) {
        auto l = base;
        hits[s.sample(l, {})]++;
    }
    EXPECT_EQ(hits.size(), 2u);  // only ids 0 and 1
    EXPECT_GT(hits[0], hits[1]);
    // top_p small: only the most likely token survives
    p.top_k = 0, p.top_p = 0.1;
    Sampler s2(p);
    for (int i = 0; i < 100; i++) {
        auto l = base;
        EXPECT_EQ(s2.sample(l, {}), 0);
    }
    // top_p covering the first three: never ids 3 or 4
    p.top_p = 0.7;
    Sampler s3(p);
    for (int i = 0; i < 500; i++) {
        auto l = base;
        int id = s3.sample(l, {});
        EXPECT_TRUE(id == 0 || id == 1 || id == 2 || id == 5) << id;
        EXPECT_NE(id, 4);
    }
}

TEST(Sampling, RepetitionPenaltyAndSeed) {
    SamplingParams p;
    p.temperature = 0, p.repetition_penalty = 2.0;
    Sampler s(p);
    std::vector<float> logits = {2.0f, 1.5f, -1.0f};
    EXPECT_EQ(s.sample(logits, {0}), 1);  // 2.0 / 2 = 1.0 < 1.5
    EXPECT_FLOAT_EQ(logits[0], 1.0f);
    std::vector<float> neg = {-1.0f, -1.5f};
    s.sample(neg, {0});
    EXPECT_FLOAT_EQ(neg[0], -2.0f);  // negative logits are multiplied

    SamplingParams q;
    q.temperature = 1.0, q.top_k = 0, q.top_p = 1.0, q.seed = 42;
    Sampler a(q), b(q);
    std::vector<float> flat(50, 0.0f);
    for (int i = 0; i < 20; i++) {
        auto l1 = flat, l2 = flat;
        EXPECT_EQ(a.sample(l1, {}), b.sample(l2, {}));
    }
}
