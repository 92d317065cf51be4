#include "train/schedule.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace tuner {

double Schedule::lr_at(int64_t step) const {
    step = std::clamp<int64_t>(step, 0, std::max<int64_t>(total_steps - 1, 0));
    if (step < warmup_steps) {
        double t = double(step) / double(warmup_steps);
        return lr * (warmup_start_factor + (1.0 - warmup_start_factor) * t);
    }
    if (type == ScheduleType::Constant) return lr;
    // Decay over the steps after warm-up, as mmengine's CosineAnnealingLR (T_max = those steps)
    // and HF's get_cosine_schedule_with_warmup do: min_lr would be reached one step after the last.
    int64_t span = std::max<int64_t>(total_steps - warmup_steps, 1);
    double s = double(step - warmup_steps) / double(span);
    double factor = type == ScheduleType::Linear ? 1.0 - s : 0.5 * (1.0 + std::cos(M_PI * s));
    return min_lr + (lr - min_lr) * factor;
}

ScheduleType schedule_type_from_name(const std::string& name) {
    if (name == "constant") return ScheduleType::Constant;
    if (name == "linear") return ScheduleType::Linear;
    if (name == "cosine") return ScheduleType::Cosine;
    fail("[config] train.schedule: unknown schedule '{}' (constant, linear, cosine)", name);
}

}  // namespace tuner
