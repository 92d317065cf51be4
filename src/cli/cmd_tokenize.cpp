// tuner tokenize MODEL_OR_TOKENIZER_DIR (--text S | --file F) [--no-special] [--pieces]
#include "cli/commands.h"
#include "core/error.h"

namespace tuner::cli {

Command add_tokenize(CLI::App& app) {
    auto* sub = app.add_subcommand("tokenize", "encode text and print the token ids (not built yet)");
    return {sub, []() -> int { fail("[tokenize] not implemented yet"); }};
}

}  // namespace tuner::cli
