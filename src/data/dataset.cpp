#include "data/dataset.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>

#include <omp.h>

#include "core/error.h"
#include "data/sampler.h"
#include "tokenizer/tokenizer.h"

namespace tuner {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Tokens and labels of every record, encoded in parallel (Tokenizer::encode is const).
struct Encoded {
    std::vector<std::vector<int32_t>> tokens, labels;
};

Encoded encode_records(const ReadResult& rr, const ChatTemplate* tmpl, const Tokenizer& tok, const EncodeOptions& eo) {
    Encoded e;
    int64_t n = int64_t(rr.records.size());
    e.tokens.resize(size_t(n));
    e.labels.resize(size_t(n));
    std::string error;
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t i = 0; i < n; i++) {
        const Record& r = rr.records[size_t(i)];
        try {
            if (r.is_text) {
                encode_text(r, tok, eo, &e.tokens[size_t(i)], &e.labels[size_t(i)]);
            } else if (!r.turns.empty()) {
                encode_chat(r, *tmpl, tok, eo, &e.tokens[size_t(i)], &e.labels[size_t(i)]);
            }
        } catch (const std::exception& ex) {
#pragma omp critical(tuner_data_encode_error)
            if (error.empty())
                error = fmt::format("{}:{}: {}", rr.files[size_t(r.file)], r.line, ex.what());
        }
    }
    if (!error.empty()) fail("[data] {}", error);
    return e;
}

// Turns encoded records into samples: drops the ones with nothing to train, truncates chat
// samples at max_length and splits long texts into max_length pieces.
void collect_samples(const ReadResult& rr, Encoded& enc, int64_t T, SampleSet* out, std::vector<int64_t>* ids,
                     DataStats* st) {
    for (size_t i = 0; i < rr.records.size(); i++) {
        const Record& r = rr.records[i];
        auto& toks = enc.tokens[i];
        auto& labs = enc.labels[i];
        auto where = [&]() { return fmt::format("{}:{}", rr.files[size_t(r.file)], r.line); };
        SampleInfo si;
        si.source = r.source;
        si.file = r.file;
        si.line = r.line;
        si.turns = int32_t(r.turns.size());
        if (!r.is_text && r.turns.empty()) {
            st->dropped_no_answer++;
            if (st->dropped_example.empty()) st->dropped_example = where() + ": no assistant turn";
            continue;
        }
        if (r.is_text && r.text.empty()) {
            st->dropped_untrained++;
            if (st->dropped_example.empty()) st->dropped_example = where() + ": empty text";
            continue;
        }
        int64_t len = int64_t(toks.size());
        if (r.is_text && len > T) {
            st->text_split++;
            for (int64_t c = 0; c * T < len; c++) {
                int64_t b = c * T, e = std::min(len, b + T);
                if (e - b < 2) break;  // a lone last token: nothing to predict
                si.chunk = int32_t(c);
                ids->push_back(out->size());
                out->add(toks.data() + b, labs.data() + b, e - b, si);
            }
            toks.clear(), toks.shrink_to_fit(), labs.clear(), labs.shrink_to_fit();
            continue;
        }
        si.truncated = len > T;
        int64_t n = std::min(len, T);
        int64_t trained = 0;
        for (int64_t k = 1; k < n; k++) trained += labs[size_t(k)] != kIgnoreLabel;
        if (trained == 0) {
            st->dropped_untrained++;
            if (st->dropped_example.empty())
                st->dropped_example = where() + (si.truncated ? ": nothing trained within max_length"
                                                              : ": nothing trained (loss: false on every answer)");
            continue;
        }
        st->truncated += si.truncated;
        st->turns += si.turns;
        ids->push_back(out->size());
        out->add(toks.data(), labs.data(), n, si);
        toks.clear(), toks.shrink_to_fit(), labs.clear(), labs.shrink_to_fit();
    }
}

void count_tokens(const SampleSet& s, const std::vector<int64_t>& ids, int64_t* tokens, int64_t* trained) {
    *tokens = 0, *trained = 0;
    for (int64_t i : ids) {
        *tokens += s.length(i);
        *trained += s.trained(i);
    }
}

std::string empty_reason(const DataStats& st, const char* which) {
    std::string why = fmt::format("{} records read", st.records);
    if (st.bad) why += fmt::format(", {} bad ones skipped", st.bad);
    if (st.dropped_no_answer) why += fmt::format(", {} without an assistant turn", st.dropped_no_answer);
    if (st.dropped_untrained) why += fmt::format(", {} with nothing to train", st.dropped_untrained);
    if (!st.dropped_example.empty()) why += "; e.g. " + st.dropped_example;
    return fmt::format("[data] the {} data gives no samples ({})", which, why);
}

}  // namespace

int64_t Dataset::row_length(int64_t r) const {
    int64_t n = 0;
    for (int64_t k = row_offsets[size_t(r)]; k < row_offsets[size_t(r) + 1]; k++) n += samples->length(row_items[size_t(k)]);
    return n;
}

std::vector<int64_t> Dataset::epoch_order(int64_t epoch, int64_t batch_size) const {
    if (group_by_length && !packed && shuffle) {
        std::vector<int64_t> lengths(static_cast<size_t>(num_rows()));
        for (int64_t r = 0; r < num_rows(); r++) lengths[size_t(r)] = row_length(r);
        return length_grouped_order(lengths, batch_size, seed, epoch);
    }
    return tuner::epoch_order(num_rows(), seed, epoch, shuffle);
}

void Dataset::make_batch(const int64_t* rows, int64_t n, BatchData* out) const {
    int64_t T = max_length;
    if (!packed && !pad_to_max_length) {
        T = 1;
        for (int64_t i = 0; i < n; i++) T = std::max(T, row_length(rows[i]));
    }
    out->B = int(n);
    out->T = int(T);
    size_t N = size_t(n * T);
    out->tokens.resize(N);
    out->targets.resize(N);
    out->positions.resize(N);
    out->seg_start.resize(N);
    out->rows.assign(rows, rows + n);
    out->trained_tokens = 0;
    out->real_tokens = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t r = rows[i];
        int64_t b = row_offsets[size_t(r)], e = row_offsets[size_t(r) + 1];
        size_t o = size_t(i * T);
        fill_row(*samples, row_items.data() + b, e - b, T, pad_id, out->tokens.data() + o, out->targets.data() + o,
                 out->positions.data() + o, out->seg_start.data() + o);
        out->real_tokens += row_length(r);
    }
    for (int32_t t : out->targets) out->trained_tokens += t != kIgnoreLabel;
}

double Dataset::efficiency(int64_t batch_size) const {
    if (empty()) return 0.0;
    if (packed || pad_to_max_length) {
        int64_t real = 0;
        for (int64_t r = 0; r < num_rows(); r++) real += row_length(r);
        return double(real) / double(num_rows() * max_length);
    }
    std::vector<int64_t> order = epoch_order(0, batch_size);
    int64_t B = std::max<int64_t>(1, batch_size), real = 0, capacity = 0;
    for (size_t i = 0; i < order.size(); i += size_t(B)) {
        int64_t longest = 0, n = std::min<int64_t>(B, int64_t(order.size() - i));
        for (int64_t k = 0; k < n; k++) {
            int64_t len = row_length(order[i + size_t(k)]);
            real += len;
            longest = std::max(longest, len);
        }
        capacity += longest * n;
    }
    return capacity ? double(real) / double(capacity) : 0.0;
}

void Dataset::make_rows() {
    row_offsets.assign(1, 0);
    row_items.clear();
    if (!packed) {
        row_items = items;
        for (size_t i = 0; i < items.size(); i++) row_offsets.push_back(int64_t(i) + 1);
        return;
    }
    std::vector<int64_t> order = items;
    if (shuffle) seeded_shuffle(order, derive_seed(seed, 2));
    std::vector<int64_t> lengths(order.size());
    for (size_t i = 0; i < order.size(); i++) lengths[i] = samples->length(order[i]);
    PackedRows p = pack_rows(lengths, max_length, keep_order);
    row_items.resize(p.items.size());
    for (size_t i = 0; i < p.items.size(); i++) row_items[i] = order[size_t(p.items[i])];
    row_offsets = p.offsets;
}

std::string tokenizer_path_for(const DataConfig& config, const std::string& model_dir) {
    if (!config.tokenizer.empty()) {
        namespace fs = std::filesystem;
        std::error_code ec;
        if (!fs::exists(config.tokenizer, ec) && fs::path(config.tokenizer).is_relative() && !config.config_dir.empty()) {
            fs::path alt = fs::path(config.config_dir) / config.tokenizer;
            if (fs::exists(alt, ec)) return alt.string();
        }
        return config.tokenizer;
    }
    if (model_dir.empty()) fail("[data] no tokenizer: set model: (a model folder) or data.tokenizer: (a tokenizer folder)");
    return model_dir;
}

Datasets build_datasets(const DataConfig& cfg, const Tokenizer& tok, const DataBuildOptions& opts) {
    Datasets out;
    uint64_t seed = cfg.seed >= 0 ? uint64_t(cfg.seed) : opts.seed;
    const int64_t T = cfg.max_length;

    auto t0 = std::chrono::steady_clock::now();
    ReaderOptions ro;
    ro.skip_bad = cfg.skip_bad;
    ro.default_system = cfg.system;
    ro.config_dir = cfg.config_dir;
    ReadResult train_read, eval_read;
    for (size_t i = 0; i < cfg.train.size(); i++) read_source(cfg.train[i], int32_t(i), ro, &train_read);
    for (size_t i = 0; i < cfg.eval.size(); i++) read_source(cfg.eval[i], int32_t(i), ro, &eval_read);
    double read_s = seconds_since(t0);
    out.files = train_read.files;
    out.files.insert(out.files.end(), eval_read.files.begin(), eval_read.files.end());

    bool any_chat = false;
    for (const ReadResult* rr : {&train_read, &eval_read})
        for (const Record& r : rr->records) any_chat |= !r.is_text;
    std::string tok_dir = opts.tokenizer_dir.empty() ? opts.model_dir : opts.tokenizer_dir;
    std::string tok_name = opts.tokenizer_name.empty() ? tok_dir : opts.tokenizer_name;
    if (any_chat) {
        out.chat_template = choose_chat_template(cfg.template_name, opts.model_dir, tok_dir, tok);
        check_template(*out.chat_template.tmpl, tok, tok_name.empty() ? "in use" : "in " + tok_name);
    } else if (cfg.template_name != "auto") {
        get_chat_template(cfg.template_name);  // a typo is still an error
    }
    out.encode = encode_options_for(tok, cfg.add_bos);

    auto t1 = std::chrono::steady_clock::now();
    auto samples = std::make_shared<SampleSet>();
    DataStats train_st, eval_st;
    std::vector<int64_t> train_ids, eval_ids;
    {
        Encoded enc = encode_records(train_read, out.chat_template.tmpl, tok, out.encode);
        collect_samples(train_read, enc, T, samples.get(), &train_ids, &train_st);
    }
    if (!eval_read.records.empty()) {
        Encoded enc = encode_records(eval_read, out.chat_template.tmpl, tok, out.encode);
        collect_samples(eval_read, enc, T, samples.get(), &eval_ids, &eval_st);
    }
    double encode_s = seconds_since(t1);

    auto fill_read_stats = [](const ReadResult& rr, const std::vector<DataSource>& sources, DataStats* st) {
        st->files = int64_t(rr.files.size());
        st->records = int64_t(rr.records.size());
        st->bad = rr.bad;
        st->bad_messages = rr.bad_messages;
        st->sources.resize(sources.size());
        for (size_t s = 0; s < sources.size(); s++) {
            st->sources[s].path = sources[s].path;
            st->sources[s].format = format_name(sources[s].format);
        }
        for (const Record& r : rr.records) st->sources[size_t(r.source)].records++;
    };
    fill_read_stats(train_read, cfg.train, &train_st);
    fill_read_stats(eval_read, cfg.eval, &eval_st);
    // The format each source was read as (the first file's, after auto-detection).
    {
        std::vector<bool> seen(cfg.train.size(), false);
        for (const Record& r : train_read.records) {
            if (seen[size_t(r.source)]) continue;
            seen[size_t(r.source)] = true;
            train_st.sources[size_t(r.source)].format = format_name(train_read.file_formats[size_t(r.file)]);
        }
    }

    if (train_ids.empty()) fail("{}", empty_reason(train_st, "training"));
    if (!cfg.eval.empty() && eval_ids.empty()) fail("{}", empty_reason(eval_st, "validation (data.eval)"));

    // Validation split by ratio: a seeded choice of unique training samples.
    if (cfg.eval_ratio > 0.0) {
        int64_t n = int64_t(train_ids.size());
        int64_t k = std::max<int64_t>(1, std::llround(cfg.eval_ratio * double(n)));
        if (k >= n)
            fail("[data] data.eval_ratio {} leaves no training samples ({} samples); lower it or add data",
                 cfg.eval_ratio, n);
        std::vector<int64_t> pick = train_ids;
        seeded_shuffle(pick, derive_seed(seed, 7));
        pick.resize(size_t(k));
        std::sort(pick.begin(), pick.end());
        std::vector<int64_t> rest;
        rest.reserve(size_t(n - k));
        std::set_difference(train_ids.begin(), train_ids.end(), pick.begin(), pick.end(), std::back_inserter(rest));
        eval_ids = pick;
        train_ids = rest;
        eval_st.records = k;
        eval_st.samples = k;
    }

    // Samples per source, and the epoch's items with repeats (or weights).
    std::vector<std::vector<int64_t>> by_source(cfg.train.size());
    for (int64_t id : train_ids) by_source[size_t(samples->info[size_t(id)].source)].push_back(id);
    bool weighted = !cfg.train.empty() && cfg.train[0].weight > 0;
    double wsum = 0;
    for (const auto& s : cfg.train) wsum += std::max(0.0, s.weight);
    std::vector<int64_t> items;
    for (size_t s = 0; s < cfg.train.size(); s++) {
        const auto& ids = by_source[s];
        double r = cfg.train[s].repeat;
        if (weighted) r = ids.empty() ? 0.0 : cfg.train[s].weight / wsum * double(train_ids.size()) / double(ids.size());
        int64_t full = int64_t(std::floor(r));
        for (int64_t k = 0; k < full; k++) items.insert(items.end(), ids.begin(), ids.end());
        int64_t part = std::llround((r - double(full)) * double(ids.size()));
        if (part > 0) {
            std::vector<int64_t> pick = ids;
            seeded_shuffle(pick, derive_seed(seed, 100 + s));
            pick.resize(size_t(std::min<int64_t>(part, int64_t(pick.size()))));
            std::sort(pick.begin(), pick.end());
            items.insert(items.end(), pick.begin(), pick.end());
        }
        train_st.sources[s].samples = int64_t(ids.size());
        train_st.sources[s].repeat = r;
        train_st.sources[s].epoch_samples = full * int64_t(ids.size()) + std::max<int64_t>(0, part);
    }
    if (items.empty())
        fail("[data] the training data gives no samples per epoch: every source has repeat 0 ({} samples read)",
             train_ids.size());

    auto t2 = std::chrono::steady_clock::now();
    auto setup = [&](Dataset& d, std::vector<int64_t> its, bool shuffle, bool keep_order, DataStats st) {
        d.samples = samples;
        d.items = std::move(its);
        d.max_length = T;
        d.packed = cfg.pack;
        d.shuffle = shuffle;
        d.keep_order = keep_order;
        d.group_by_length = cfg.group_by_length;
        d.pad_to_max_length = cfg.pad_to_max_length;
        d.seed = seed;
        d.pad_id = tok.eos_id() >= 0 ? tok.eos_id() : 0;
        d.make_rows();
        d.stats = std::move(st);
        d.stats.epoch_samples = int64_t(d.items.size());
        count_tokens(*samples, d.items, &d.stats.epoch_tokens, &d.stats.epoch_trained_tokens);
        d.stats.rows = d.num_rows();
    };
    // Unique-sample counts.
    train_st.samples = int64_t(train_ids.size());
    count_tokens(*samples, train_ids, &train_st.tokens, &train_st.trained_tokens);
    if (!eval_ids.empty()) {
        eval_st.samples = int64_t(eval_ids.size());
        count_tokens(*samples, eval_ids, &eval_st.tokens, &eval_st.trained_tokens);
        if (cfg.eval_ratio > 0.0) {
            eval_st.turns = 0;
            for (int64_t id : eval_ids) eval_st.turns += samples->info[size_t(id)].turns;
            train_st.turns -= eval_st.turns;
        }
    }
    setup(out.train, std::move(items), cfg.shuffle, !cfg.shuffle, train_st);
    // The validation set is read in a fixed order but packed best-fit: its order does not matter.
    if (!eval_ids.empty()) setup(out.eval, eval_ids, false, false, eval_st);
    double pack_s = seconds_since(t2);
    for (Dataset* d : {&out.train, &out.eval}) {
        d->stats.read_s = read_s;
        d->stats.encode_s = encode_s;
        d->stats.pack_s = pack_s;
    }
    return out;
}

DataLoader::DataLoader(const Dataset& ds, int64_t batch_size, DataPosition start)
    : ds_(ds), B_(std::max<int64_t>(1, batch_size)), pos_(start) {
    TUNER_ASSERT(!ds.empty());
    if (pos_.row >= ds_.num_rows()) pos_ = DataPosition{pos_.epoch + 1, 0};
}

int64_t DataLoader::batches_per_epoch() const { return (ds_.num_rows() + B_ - 1) / B_; }

void DataLoader::next(BatchData* out) {
    if (order_epoch_ != pos_.epoch) {
        order_ = ds_.epoch_order(pos_.epoch, B_);
        order_epoch_ = pos_.epoch;
    }
    int64_t n = std::min(B_, ds_.num_rows() - pos_.row);
    ds_.make_batch(order_.data() + pos_.row, n, out);
    pos_.row += n;
    if (pos_.row >= ds_.num_rows()) pos_ = DataPosition{pos_.epoch + 1, 0};
}

}  // namespace tuner
