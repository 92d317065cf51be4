// `tuner train`: the main job. Loads the tokenizer, builds the datasets, plans memory (and refuses
// a plan larger than the available memory before loading the weights; train/memory_plan.h), loads the model,
// and runs optimizer steps of grad_accum micro-batches each (the loss of a step is the mean over
// all trained tokens of its micro-batches), with gradient clipping, the lr schedule, AdamW,
// metrics.jsonl, validation loss, generations for eval.prompts, checkpoints with exact resume,
// and Ctrl-C handling. At the end it writes the adapter (LoRA) or the model (full), loss.svg and
// samples.md into output_dir.
#pragma once

#include <string>

#include "train/train_config.h"

namespace tuner {

struct TrainOptions {
    std::string resume;       // a checkpoint folder or "auto" (overrides the config's `resume`)
    bool dry_run = false;     // read the data, print the memory plan and whether it fits, stop before loading weights
    bool install_signals = true;
};

struct TrainResult {
    int64_t steps_done = 0;     // optimizer steps completed in total (resumed ones included)
    int64_t total_steps = 0;
    double last_loss = 0;
    double eval_loss_before = -1, eval_loss_after = -1;  // -1 when there is no validation data
    bool interrupted = false;
    std::string checkpoint;     // last checkpoint written ("" if none)
    std::string result_dir;     // output_dir/adapter or output_dir/model ("" if interrupted)
};

TrainResult run_training(const TrainConfig& config, const TrainOptions& options);

}  // namespace tuner
