// The dataset pipeline the trainer uses: config -> records -> token samples -> rows -> batches.
//
//   DataConfig cfg = data_config_from_yaml(ConfigView(file).child("data"));
//   auto tok = Tokenizer::load(tokenizer_path_for(cfg, model_dir));
//   Datasets data = build_datasets(cfg, *tok, {.model_dir = model_dir, .seed = train_seed});
//   DataLoader loader(data.train, /*batch_size=*/B, saved_position);   // {0, 0} for a fresh run
//   BatchData b;
//   for (step ...) {
//       loader.next(&b);                   // B rows (fewer at the end of an epoch)
//       model->forward(b.batch(), ...);    // b.trained_tokens: the loss's denominator
//       checkpoint.data_position = loader.position();
//   }
//   int64_t steps_per_epoch = ceil(loader.batches_per_epoch() / grad_accum);
//
// Rows: with pack (the default) every row holds whole samples packed into exactly max_length
// tokens, positions restarting at 0 in each sample and seg_start marking each sample's first
// token, so attention never crosses samples; the unused tail of a row is padding (targets -100, a
// segment of its own). Packing happens once per run (after a seeded shuffle of the samples), and
// the rows are shuffled again every epoch, so rows per epoch are fixed. Without pack each sample
// is a row, padded to the longest row of its batch (or to max_length with pad: max_length);
// group_by_length batches rows of similar length. Targets are shifted next-token labels: -100
// wherever the next token is not trained, at every sample's last token, and on padding.
// Epoch e's row order depends only on (seed, e), so a DataPosition {epoch, row} resumes exactly.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset_config.h"
#include "data/packing.h"
#include "data/readers.h"
#include "data/samples.h"
#include "data/templates.h"
#include "models/llama.h"

namespace tuner {

class Tokenizer;

struct SourceStats {
    std::string path;
    std::string format;  // as read ("alpaca", or "auto" when no record could be read)
    int64_t records = 0;
    int64_t samples = 0;        // unique samples from this source (after drops, before repeats)
    double repeat = 1.0;        // effective repeat (from repeat or weight)
    int64_t epoch_samples = 0;  // samples per epoch from this source
};

struct DataStats {
    std::vector<SourceStats> sources;
    int64_t files = 0;
    int64_t records = 0;  // records read (good ones)
    int64_t bad = 0;      // bad records skipped (on_error: skip)
    std::vector<std::string> bad_messages;
    int64_t turns = 0;                // turns of the kept chat samples
    int64_t samples = 0;              // unique samples kept
    int64_t dropped_no_answer = 0;    // chat records with no assistant turn
    int64_t dropped_untrained = 0;    // nothing left to train (loss: false, empty, cut by truncation)
    std::string dropped_example;      // "file:line: why" of the first dropped record
    int64_t truncated = 0;            // chat samples cut at max_length
    int64_t text_split = 0;           // text records longer than max_length, split into pieces
    int64_t tokens = 0, trained_tokens = 0;  // over unique samples
    int64_t epoch_samples = 0, epoch_tokens = 0, epoch_trained_tokens = 0;  // repeats included
    int64_t rows = 0;
    double read_s = 0, encode_s = 0, pack_s = 0;
};

// One batch of rows, owning the arrays a Batch points into.
struct BatchData {
    int B = 0, T = 0;
    std::vector<int32_t> tokens, targets, positions, seg_start;
    int64_t trained_tokens = 0;  // targets != -100 (the loss is the mean over these)
    int64_t real_tokens = 0;     // tokens that are not padding
    std::vector<int64_t> rows;   // the dataset rows in the batch

    Batch batch() const { return Batch{B, T, tokens.data(), targets.data(), positions.data(), seg_start.data()}; }
};

class Dataset {
  public:
    std::shared_ptr<const SampleSet> samples;  // unique samples (shared by train and eval)
    std::vector<int64_t> items;        // sample ids of one epoch, repeats included, before shuffling
    std::vector<int64_t> row_offsets{0};  // row r holds samples row_items[row_offsets[r], row_offsets[r+1])
    std::vector<int64_t> row_items;
    int64_t max_length = 0;
    bool packed = true;
    bool shuffle = true;            // rows reshuffled every epoch (samples shuffled before packing)
    bool keep_order = false;        // pack next-fit in sample order (shuffle: false); else best fit
    bool group_by_length = false;
    bool pad_to_max_length = false;
    uint64_t seed = 0;
    int32_t pad_id = 0;
    DataStats stats;

    int64_t num_rows() const { return int64_t(row_offsets.size()) - 1; }
    bool empty() const { return num_rows() == 0; }
    // Tokens of real samples in row r.
    int64_t row_length(int64_t r) const;
    // Row order of an epoch (batch_size matters for group_by_length only).
    std::vector<int64_t> epoch_order(int64_t epoch, int64_t batch_size) const;
    // Writes rows[0..n) as one batch.
    void make_batch(const int64_t* rows, int64_t n, BatchData* out) const;
    // Real tokens / (rows x T) of epoch 0 in batches of batch_size: the share of compute that is
    // not padding.
    double efficiency(int64_t batch_size) const;

    // Groups `items` into rows (packing or one sample per row); build_datasets calls it.
    void make_rows();
};

struct DataBuildOptions {
    std::string model_dir;       // for template: auto (config.json, tokenizer_config.json)
    std::string tokenizer_dir;   // "" = model_dir
    std::string tokenizer_name;  // how messages name the tokenizer ("" = tokenizer_dir)
    uint64_t seed = 0;           // used when data.seed is not set (train.seed)
};

struct Datasets {
    Dataset train;
    Dataset eval;                  // empty() when there is no validation data
    TemplateChoice chat_template;  // tmpl is null when every record is text
    EncodeOptions encode;
    std::vector<std::string> files;  // every file read (train and eval)
};

// Reads, tokenizes (in parallel over records), masks and packs. Errors are tuner::Error with a
// one-line message (bad records name file:line; an empty dataset says why it is empty).
Datasets build_datasets(const DataConfig& config, const Tokenizer& tok, const DataBuildOptions& opts);

// Where to load the tokenizer from: data.tokenizer when set, else the model folder.
std::string tokenizer_path_for(const DataConfig& config, const std::string& model_dir);

// Where the trainer is in the data: the epoch and the index of the next row in that epoch's order.
struct DataPosition {
    int64_t epoch = 0;
    int64_t row = 0;
};

class DataLoader {
  public:
    DataLoader(const Dataset& ds, int64_t batch_size, DataPosition start = {});
    // The next batch: up to batch_size rows of the current epoch (the last batch of an epoch may
    // be smaller); then moves on, into the next epoch when this one is done.
    void next(BatchData* out);
    DataPosition position() const { return pos_; }
    int64_t batches_per_epoch() const;

  private:
    const Dataset& ds_;
    int64_t B_;
    DataPosition pos_;
    std::vector<int64_t> order_;
    int64_t order_epoch_ = -1;
};

}  // namespace tuner
