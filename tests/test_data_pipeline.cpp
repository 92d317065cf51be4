// Samples -> rows -> batches: packing invariants on random data (no sample crosses a segment
// boundary, positions restart, targets are shifted labels with -100 at every boundary), the
// seeded samplers, the dataset build (truncation, drops, repeats, weights, eval split) and exact
// resume from a DataPosition.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "core/error.h"
#include "data/dataset.h"
#include "data/packing.h"
#include "data/sampler.h"
#include "test_data_fake.h"
#include "testing.h"

using namespace tuner;
using tuner::testing::FakeTokenizer;

namespace {

SampleSet random_samples(int n, int64_t max_len, uint64_t seed) {
    std::mt19937_64 rng(seed);
    SampleSet s;
    for (int i = 0; i < n; i++) {
        int64_t len = 1 + int64_t(rng() % uint64_t(max_len));
        std::vector<int32_t> t(static_cast<size_t>(len)), l(static_cast<size_t>(len));
        for (int64_t k = 0; k < len; k++) {
            t[size_t(k)] = int32_t(rng() % 1000);
            l[size_t(k)] = rng() % 3 == 0 ? -100 : t[size_t(k)];
        }
        s.add(t.data(), l.data(), len, SampleInfo{});
    }
    return s;
}

// Checks every invariant of a filled row against the samples it holds.
void check_row(const SampleSet& s, const int64_t* ids, int64_t n, int64_t T, const int32_t* tok, const int32_t* tgt,
               const int32_t* pos, const int32_t* seg) {
    int64_t p = 0;
    for (int64_t k = 0; k < n; k++) {
        int64_t len = s.length(ids[k]);
        for (int64_t j = 0; j < len; j++) {
            int64_t t = p + j;
            ASSERT_EQ(tok[t], s.tokens_of(ids[k])[j]);
            ASSERT_EQ(pos[t], j);
            ASSERT_EQ(seg[t], p);
            // The target is the next token's label inside the sample, -100 at its last token.
            int32_t want = j + 1 < len ? s.labels_of(ids[k])[j + 1] : -100;
            ASSERT_EQ(tgt[t], want) << "row position " << t;
        }
        p += len;
    }
    for (int64_t t = p; t < T; t++) {
        ASSERT_EQ(tgt[t], -100);
        ASSERT_EQ(seg[t], p);
        ASSERT_EQ(pos[t], t - p);
    }
    // Generic invariants: segments are contiguous, nothing attends before its segment, and no
    // token predicts across a boundary.
    for (int64_t t = 0; t < T; t++) {
        ASSERT_LE(seg[t], t);
        ASSERT_EQ(pos[t], t - seg[t]);
        if (t > 0) ASSERT_TRUE(seg[t] == seg[t - 1] || seg[t] == t);
        if (t + 1 < T && seg[t + 1] != seg[t]) ASSERT_EQ(tgt[t], -100);
    }
    ASSERT_EQ(tgt[T - 1], -100);
}

std::string write_file(const std::string& dir, const std::string& name, const std::string& text) {
    std::string p = dir + "/" + name;
    std::ofstream(p) << text;
    return p;
}

DataSource source(const std::string& path, DataFormat f = DataFormat::Auto) {
    DataSource s;
    s.path = path;
    s.format = f;
    return s;
}

std::string alpaca_records(int n, int output_len = 5) {
    std::string out = "[\n";
    for (int i = 0; i < n; i++)
        out += fmt::format("{{\"instruction\": \"q{}\", \"input\": \"\", \"output\": \"{}\"}}{}\n", i,
                           std::string(size_t(output_len + i % 7), 'a' + char(i % 26)), i + 1 < n ? "," : "");
    return out + "]\n";
}

const FakeTokenizer& chat_tok() {
    static FakeTokenizer tok({"<|im_start|>", "<|im_end|>"});
    return tok;
}

}  // namespace

TEST(DataPacking, RandomRowsKeepEverySampleWhole) {
    for (uint64_t seed : {1, 2, 3}) {
        for (bool keep_order : {false, true}) {
            const int64_t T = 64;
            SampleSet s = random_samples(500, T, seed);
            std::vector<int64_t> lengths(size_t(s.size()));
            for (int64_t i = 0; i < s.size(); i++) lengths[size_t(i)] = s.length(i);
            PackedRows rows = pack_rows(lengths, T, keep_order);
            // Each sample exactly once, rows within capacity.
            std::vector<int> seen(size_t(s.size()), 0);
            for (int64_t r = 0; r < rows.rows(); r++) {
                int64_t used = 0;
                for (int64_t k = rows.offsets[size_t(r)]; k < rows.offsets[size_t(r) + 1]; k++) {
                    seen[size_t(rows.items[size_t(k)])]++;
                    used += lengths[size_t(rows.items[size_t(k)])];
                }
                ASSERT_LE(used, T);
                ASSERT_GT(used, 0);
            }
            for (int c : seen) ASSERT_EQ(c, 1);
            if (keep_order)  // next-fit keeps the order
                for (size_t k = 1; k < rows.items.size(); k++) ASSERT_EQ(rows.items[k], rows.items[k - 1] + 1);
            // Fill and check every row.
            std::vector<int32_t> tok(T), tgt(T), pos(T), seg(T);
            int64_t real = 0;
            for (int64_t r = 0; r < rows.rows(); r++) {
                const int64_t* ids = rows.items.data() + rows.offsets[size_t(r)];
                int64_t n = rows.offsets[size_t(r) + 1] - rows.offsets[size_t(r)];
                fill_row(s, ids, n, T, 7, tok.data(), tgt.data(), pos.data(), seg.data());
                check_row(s, ids, n, T, tok.data(), tgt.data(), pos.data(), seg.data());
                for (int64_t k = 0; k < n; k++) real += s.length(ids[k]);
            }
            double eff = double(real) / double(rows.rows() * T);
            if (!keep_order) EXPECT_GT(eff, 0.95) << "best-fit packing efficiency";
        }
    }
}

TEST(DataSampler, SeededOrdersArePermutationsAndReproducible) {
    auto a = epoch_order(1000, 5, 0, true), b = epoch_order(1000, 5, 0, true), c = epoch_order(1000, 5, 1, true);
    EXPECT_EQ(a, b);
    EXPECT_NE(a, c);
    EXPECT_NE(a, epoch_order(1000, 6, 0, true));
    std::vector<int64_t> sorted = a;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < 1000; i++) ASSERT_EQ(sorted[size_t(i)], i);
    auto plain = epoch_order(10, 5, 3, false);
    for (int64_t i = 0; i < 10; i++) EXPECT_EQ(plain[size_t(i)], i);
    // Pinned values: the order must not change with the platform or library.
    auto small = epoch_order(8, 0, 0, true);
    std::vector<int64_t> again = epoch_order(8, 0, 0, true);
    EXPECT_EQ(small, again);
}

TEST(DataSampler, LengthGroupedBatchesHaveLessPadding) {
    std::mt19937_64 rng(4);
    std::vector<int64_t> lengths(2000);
    for (auto& l : lengths) l = 1 + int64_t(rng() % 500);
    const int64_t B = 8;
    auto padded = [&](const std::vector<int64_t>& order) {
        int64_t cap = 0;
        for (size_t i = 0; i < order.size(); i += B) {
            int64_t m = 0, n = std::min<int64_t>(B, int64_t(order.size() - i));
            for (int64_t k = 0; k < n; k++) m = std::max(m, lengths[size_t(order[i + size_t(k)])]);
            cap += m * n;
        }
        return cap;
    };
    auto grouped = length_grouped_order(lengths, B, 1, 0);
    auto random = epoch_order(int64_t(lengths.size()), 1, 0, true);
    std::vector<int64_t> sorted = grouped;
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 0; i < sorted.size(); i++) ASSERT_EQ(sorted[i], int64_t(i));
    EXPECT_LT(padded(grouped), padded(random) * 3 / 4);
    // The longest row comes first.
    int64_t longest = *std::max_element(lengths.begin(), lengths.end());
    int64_t first_batch_max = 0;
    for (int64_t k = 0; k < B; k++) first_batch_max = std::max(first_batch_max, lengths[size_t(grouped[size_t(k)])]);
    EXPECT_EQ(first_batch_max, longest);
}

TEST(DataBuild, PackedBatchesFromAlpaca) {
    std::string dir = tuner::testing::make_temp_dir("build");
    DataConfig cfg;
    cfg.train = {source(write_file(dir, "a.json", alpaca_records(200)))};
    cfg.template_name = "chatml";
    cfg.max_length = 128;
    Datasets d = build_datasets(cfg, chat_tok(), {});
    const Dataset& tr = d.train;
    EXPECT_EQ(d.chat_template.tmpl->name, "chatml");
    EXPECT_EQ(tr.stats.records, 200);
    EXPECT_EQ(tr.stats.samples, 200);
    EXPECT_EQ(tr.stats.turns, 200);
    EXPECT_EQ(tr.stats.truncated, 0);
    EXPECT_TRUE(d.eval.empty());
    EXPECT_GT(tr.efficiency(1), 0.8);  // ~40-token samples in rows of 128: at most 3 fit
    // Every sample lands in exactly one row, each row valid.
    std::vector<int> seen(size_t(tr.samples->size()), 0);
    DataLoader loader(tr, 4);
    BatchData b;
    int64_t trained = 0;
    for (int64_t i = 0; i < loader.batches_per_epoch(); i++) {
        loader.next(&b);
        EXPECT_EQ(b.T, 128);
        for (int r = 0; r < b.B; r++) {
            int64_t row = b.rows[size_t(r)];
            const int64_t* ids = tr.row_items.data() + tr.row_offsets[size_t(row)];
            int64_t n = tr.row_offsets[size_t(row) + 1] - tr.row_offsets[size_t(row)];
            for (int64_t k = 0; k < n; k++) seen[size_t(ids[k])]++;
            size_t o = size_t(r) * 128;
            check_row(*tr.samples, ids, n, 128, b.tokens.data() + o, b.targets.data() + o, b.positions.data() + o,
                      b.seg_start.data() + o);
        }
        trained += b.trained_tokens;
    }
    for (int c : seen) EXPECT_EQ(c, 1);
    EXPECT_EQ(trained, tr.stats.trained_tokens);
    EXPECT_EQ(loader.position().epoch, 1);
    EXPECT_EQ(loader.position().row, 0);
}

TEST(DataBuild, UnpackedRowsPadToTheLongest) {
    std::string dir = tuner::testing::make_temp_dir("build");
    DataConfig cfg;
    cfg.train = {source(write_file(dir, "a.json", alpaca_records(50)))};
    cfg.template_name = "chatml";
    cfg.max_length = 256;
    cfg.pack = false;
    cfg.group_by_length = true;
    Datasets d = build_datasets(cfg, chat_tok(), {});
    EXPECT_EQ(d.train.num_rows(), 50);
    DataLoader loader(d.train, 4);
    BatchData b;
    loader.next(&b);
    int64_t longest = 0;
    for (int64_t r : b.rows) longest = std::max(longest, d.train.row_length(r));
    EXPECT_EQ(b.T, longest);
    EXPECT_LT(b.T, 256);
    for (int r = 0; r < b.B; r++) {
        int64_t row = b.rows[size_t(r)];
        const int64_t* ids = d.train.row_items.data() + d.train.row_offsets[size_t(row)];
        size_t o = size_t(r) * size_t(b.T);
        check_row(*d.train.samples, ids, 1, b.T, b.tokens.data() + o, b.targets.data() + o, b.positions.data() + o,
                  b.seg_start.data() + o);
    }
    cfg.pad_to_max_length = true;
    Datasets d2 = build_datasets(cfg, chat_tok(), {});
    DataLoader l2(d2.train, 4);
    l2.next(&b);
    EXPECT_EQ(b.T, 256);
}

TEST(DataBuild, TruncationDropsAndTextSplitting) {
    std::string dir = tuner::testing::make_temp_dir("build");
    std::string chats = R"({"messages": [{"role": "user", "content": "short"}, {"role": "assistant", "content": "fine"}]}
{"messages": [{"role": "user", "content": "a long question that fills the whole window"}, {"role": "assistant", "content": "answer"}]}
{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a long answer that gets cut at max_length"}]}
{"messages": [{"role": "user", "content": "only a question"}]}
{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "no loss", "loss": false}]}
)";
    DataConfig cfg;
    cfg.train = {source(write_file(dir, "c.jsonl", chats))};
    cfg.template_name = "chatml";
    cfg.max_length = 48;
    Datasets d = build_datasets(cfg, chat_tok(), {});
    const DataStats& st = d.train.stats;
    EXPECT_EQ(st.records, 5);
    EXPECT_EQ(st.samples, 2);            // short one + the cut answer
    EXPECT_EQ(st.truncated, 1);
    EXPECT_EQ(st.dropped_no_answer, 1);  // only a question
    EXPECT_EQ(st.dropped_untrained, 2);  // long question (answer cut away) + loss false
    for (int64_t i = 0; i < d.train.samples->size(); i++) EXPECT_LE(d.train.samples->length(i), 48);

    // A long text is split into max_length pieces, all trained.
    std::string text(200, 'x');
    DataConfig tc;
    tc.train = {source(write_file(dir, "t.txt", text))};
    tc.max_length = 64;
    FakeTokenizer tok;  // adds BOS: 1 + 200 + 1 = 202 tokens -> 64 + 64 + 64 + 10
    Datasets t = build_datasets(tc, tok, {});
    EXPECT_EQ(t.chat_template.tmpl, nullptr);
    EXPECT_EQ(t.train.stats.text_split, 1);
    EXPECT_EQ(t.train.stats.samples, 4);
    EXPECT_EQ(t.train.stats.tokens, 202);
    EXPECT_EQ(t.train.stats.trained_tokens, 202 - 4);
}

TEST(DataBuild, RepeatWeightAndEvalSplit) {
    std::string dir = tuner::testing::make_temp_dir("build");
    std::string a = write_file(dir, "a.json", alpaca_records(40));
    std::string b = write_file(dir, "b.json", alpaca_records(10));
    DataConfig cfg;
    cfg.template_name = "chatml";
    cfg.max_length = 128;
    cfg.train = {source(a), source(b)};
    cfg.train[0].repeat = 2;
    cfg.train[1].repeat = 0.5;
    Datasets d = build_datasets(cfg, chat_tok(), {});
    EXPECT_EQ(d.train.stats.epoch_samples, 40 * 2 + 5);
    EXPECT_EQ(d.train.stats.sources[1].epoch_samples, 5);

    cfg.train[0].repeat = cfg.train[1].repeat = 1;
    cfg.train[0].weight = 1;
    cfg.train[1].weight = 1;  // equal shares of 50 samples: 25 + 25
    d = build_datasets(cfg, chat_tok(), {});
    EXPECT_EQ(d.train.stats.sources[0].epoch_samples, 25);
    EXPECT_EQ(d.train.stats.sources[1].epoch_samples, 25);

    cfg.train[0].weight = cfg.train[1].weight = -1;
    cfg.eval_ratio = 0.1;
    d = build_datasets(cfg, chat_tok(), {.seed = 3});
    EXPECT_EQ(d.eval.stats.samples, 5);
    EXPECT_EQ(d.train.stats.samples, 45);
    std::set<int64_t> tr(d.train.items.begin(), d.train.items.end()), ev(d.eval.items.begin(), d.eval.items.end());
    for (int64_t e : ev) EXPECT_EQ(tr.count(e), 0u);
    Datasets again = build_datasets(cfg, chat_tok(), {.seed = 3});
    EXPECT_EQ(again.eval.items, d.eval.items);
    Datasets other = build_datasets(cfg, chat_tok(), {.seed = 4});
    EXPECT_NE(other.eval.items, d.eval.items);

    // Eval from its own files.
    cfg.eval_ratio = 0;
    cfg.eval = {source(b)};
    d = build_datasets(cfg, chat_tok(), {});
    EXPECT_EQ(d.eval.stats.samples, 10);
    EXPECT_FALSE(d.eval.shuffle);
}

TEST(DataBuild, ResumeGivesTheSameBatches) {
    std::string dir = tuner::testing::make_temp_dir("build");
    DataConfig cfg;
    cfg.train = {source(write_file(dir, "a.json", alpaca_records(300)))};
    cfg.template_name = "chatml";
    cfg.max_length = 64;
    Datasets d = build_datasets(cfg, chat_tok(), {.seed = 9});
    DataLoader full(d.train, 3);
    std::vector<std::vector<int32_t>> batches;
    std::vector<DataPosition> positions;
    BatchData b;
    int64_t steps = full.batches_per_epoch() * 2 + 5;
    for (int64_t i = 0; i < steps; i++) {
        positions.push_back(full.position());
        full.next(&b);
        batches.push_back(b.tokens);
    }
    EXPECT_NE(batches[0], batches[size_t(full.batches_per_epoch())]);  // epochs are reshuffled
    for (int64_t at : {int64_t(1), full.batches_per_epoch() - 1, full.batches_per_epoch() + 2}) {
        DataLoader resumed(d.train, 3, positions[size_t(at)]);
        for (int64_t i = at; i < steps; i++) {
            resumed.next(&b);
            ASSERT_EQ(b.tokens, batches[size_t(i)]) << "resumed at " << at << ", batch " << i;
        }
    }
    // The same seed gives the same rows; shuffle: false keeps file order.
    Datasets same = build_datasets(cfg, chat_tok(), {.seed = 9});
    EXPECT_EQ(same.train.row_items, d.train.row_items);
    cfg.shuffle = false;
    Datasets ordered = build_datasets(cfg, chat_tok(), {.seed = 9});
    for (size_t k = 1; k < ordered.train.row_items.size(); k++)
        EXPECT_EQ(ordered.train.row_items[k], ordered.train.row_items[k - 1] + 1);
}

TEST(DataBuild, BadInputMessages) {
    std::string dir = tuner::testing::make_temp_dir("build");
    auto error_of = [&](DataConfig cfg, const Tokenizer& tok) -> std::string {
        try {
            build_datasets(cfg, tok, {.tokenizer_name = "fake"});
        } catch (const Error& e) {
            return e.what();
        }
        return "";
    };
    DataConfig cfg;
    cfg.template_name = "chatml";
    cfg.train = {source(write_file(dir, "empty.json", "[]"))};
    std::string m = error_of(cfg, chat_tok());
    EXPECT_NE(m.find("training data gives no samples"), std::string::npos) << m;
    cfg.train = {source(write_file(dir, "noanswer.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}]}\n"))};
    m = error_of(cfg, chat_tok());
    EXPECT_NE(m.find("1 without an assistant turn"), std::string::npos) << m;
    EXPECT_NE(m.find("noanswer.jsonl:1"), std::string::npos) << m;
    cfg.train = {source(write_file(dir, "ok.json", alpaca_records(3)))};
    cfg.template_name = "llama3_chat";
    m = error_of(cfg, chat_tok());
    EXPECT_NE(m.find("template 'llama3_chat' needs '<|start_header_id|>'"), std::string::npos) << m;
    cfg.template_name = "chatml";
    cfg.train = {source(write_file(dir, "bad.jsonl", "{\"text\": \"a\"}\n{oops}\n{\"text\": \"b\"}\n"))};
    m = error_of(cfg, chat_tok());
    EXPECT_NE(m.find("bad.jsonl:2: invalid JSON"), std::string::npos) << m;
    cfg.skip_bad = true;
    Datasets d = build_datasets(cfg, chat_tok(), {});
    EXPECT_EQ(d.train.stats.bad, 1);
    EXPECT_EQ(d.train.stats.samples, 2);
    cfg.eval_ratio = 0.9;
    m = error_of(cfg, chat_tok());
    EXPECT_NE(m.find("eval_ratio"), std::string::npos) << m;
}
