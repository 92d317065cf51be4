// Learning-rate schedules, as the reference (XTuner on mmengine) runs them: a linear warm-up
// from warmup_start_factor * lr (1e-5 in the reference) to lr over the first warmup steps, then
//   constant: lr
//   linear:   lr * (1 - s / S)                    (s = steps after warm-up, S = their total)
//   cosine:   lr * (0.5 * (1 + cos(pi * s / S)))  (S = total - warmup, so the last step is just above 0)
// Steps count optimizer updates from 0; the lr of update `step` is lr_at(step).
#pragma once

#include <cstdint>
#include <string>

namespace tuner {

enum class ScheduleType { Constant, Linear, Cosine };

struct Schedule {
    ScheduleType type = ScheduleType::Cosine;
    double lr = 2e-4;
    int64_t total_steps = 1;
    int64_t warmup_steps = 0;
    double warmup_start_factor = 1e-5;
    double min_lr = 0.0;  // the floor of linear/cosine decay

    double lr_at(int64_t step) const;
};

// "constant" | "linear" | "cosine"; throws tuner::Error naming the value otherwise.
ScheduleType schedule_type_from_name(const std::string& name);

}  // namespace tuner
