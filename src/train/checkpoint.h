// Training checkpoints: everything needed to continue a run so that its losses and final
// weights equal those of a run that was never interrupted.
//
// OUTPUT_DIR/checkpoint-STEP/
//   trainable.safetensors   every trained parameter (f32), by Hugging Face / PEFT name
//   optimizer.safetensors   exp_avg.<name>, exp_avg_sq.<name> (f32)
//   trainer_state.json      step, optimizer steps, data position, RNG state, model fingerprint,
//                           and whatever the trainer adds (loss history, ...)
//   config.yaml             the resolved training config
// A checkpoint is written into checkpoint-STEP.tmp/ and renamed when complete, so a crash, a
// full disk or a second Ctrl-C never leaves a half-written checkpoint under the final name;
// older checkpoints are removed only after the new one is in place.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tuner {

struct Param;
class AdamW;

// A short description of the trained tensors (names and shapes) that must match on resume.
std::string params_fingerprint(const std::vector<Param*>& params);

// Writes OUTPUT_DIR/checkpoint-STEP atomically and returns its path. `state` gets "step" and
// "fingerprint" added.
std::string save_checkpoint(const std::string& output_dir, int64_t step, const std::vector<Param*>& params,
                            const AdamW& optimizer, nlohmann::json state, const std::string& config_text);

// Loads parameter values and optimizer moments from a checkpoint folder into params/optimizer
// (names and shapes must match: a checkpoint of another model is a clear error) and returns
// trainer_state.json.
nlohmann::json load_checkpoint(const std::string& dir, const std::vector<Param*>& params, AdamW& optimizer);

// Checkpoint folders in output_dir, sorted by step (oldest first).
std::vector<std::string> list_checkpoints(const std::string& output_dir);
// Removes all but the newest `keep` checkpoints (keep <= 0 keeps all).
void prune_checkpoints(const std::string& output_dir, int keep);

}  // namespace tuner
