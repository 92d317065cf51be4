// tuner merge MODEL_DIR ADAPTER_DIR OUT_DIR
#include "cli/commands.h"
#include "core/error.h"

namespace tuner::cli {

Command add_merge(CLI::App& app) {
    auto* sub = app.add_subcommand("merge", "merge a LoRA adapter into its base model (not built yet)");
    return {sub, []() -> int { fail("[merge] not implemented yet"); }};
}

}  // namespace tuner::cli
