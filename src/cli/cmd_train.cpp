// tuner train CONFIG.yaml [--set key=value ...] [--resume DIR|auto] [--dry-run]
#include <memory>

#include "cli/commands.h"
#include "train/trainer.h"

namespace tuner::cli {

Command add_train(CLI::App& app) {
    struct Opts {
        std::string config, resume;
        std::vector<std::string> sets;
        bool dry_run = false;
        int threads = -1;
        std::string device;
    };
    auto o = std::make_shared<Opts>();
    auto* sub = app.add_subcommand("train", "fine-tune a model (full or LoRA) from a YAML config");
    sub->add_option("config", o->config, "training config (YAML; see docs/config.md)")->required();
    sub->add_option("--set", o->sets, "override a config key: --set train.lr=1e-4 (repeatable)");
    sub->add_option("--resume", o->resume, "continue from a checkpoint folder, or 'auto' for the latest");
    sub->add_flag("--dry-run", o->dry_run, "read the data, print the memory plan and whether it fits; load no weights");
    sub->add_option("--threads", o->threads, "worker threads (default: the config's, else all cores)");
    sub->add_option("--device", o->device, "cpu or cuda (overrides the config's device)")
        ->check(CLI::IsMember({"cpu", "cuda"}));
    return {sub, [o]() {
                TrainConfig cfg = load_train_config(o->config, o->sets);
                if (o->threads >= 0) cfg.threads = o->threads;
                if (!o->device.empty()) cfg.device = o->device;
                apply_device_defaults(cfg);
                TrainOptions opts;
                opts.resume = o->resume;
                opts.dry_run = o->dry_run;
                run_training(cfg, opts);
                return 0;
            }};
}

}  // namespace tuner::cli
