// tuner data CONFIG.yaml [--show N]; tuner templates
#include "cli/commands.h"
#include "core/error.h"

namespace tuner::cli {

Command add_data(CLI::App& app) {
    auto* sub = app.add_subcommand("data", "check a dataset (not built yet)");
    return {sub, []() -> int { fail("[data] not implemented yet"); }};
}

Command add_templates(CLI::App& app) {
    auto* sub = app.add_subcommand("templates", "list chat templates (not built yet)");
    return {sub, []() -> int { fail("[templates] not implemented yet"); }};
}

}  // namespace tuner::cli
