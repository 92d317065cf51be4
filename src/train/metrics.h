// What a training run writes besides checkpoints:
//   metrics.jsonl  one JSON object per optimizer step (step, loss, lr, grad_norm, tokens,
//                  tokens_per_s, elapsed_s, and eval_loss when evaluated), flushed per line so
//                  it can be tailed and survives a crash;
//   loss.svg       the training (and validation) loss curve, drawn at the end.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tuner {

class MetricsLog {
  public:
    // append: keep earlier lines (a resumed run); otherwise start a new file.
    MetricsLog(const std::string& path, bool append);
    ~MetricsLog();
    void write(const nlohmann::json& record);
    const std::string& path() const { return path_; }

  private:
    std::string path_;
    FILE* f_ = nullptr;
};

// Reads metrics.jsonl (skipping lines that do not parse, e.g. one cut by a crash).
std::vector<nlohmann::json> read_metrics(const std::string& path);

// Writes an SVG line chart of `loss` (and `eval_loss` where present) against `step`.
void write_loss_svg(const std::string& path, const std::vector<nlohmann::json>& records, const std::string& title);

}  // namespace tuner
