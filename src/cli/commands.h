// Subcommands of the `tuner` program. Each registers its options on the CLI11 app and returns
// the subcommand with the function that runs it (exit code; tuner::Error is caught once in main).
#pragma once

#include <functional>
#include <utility>

#include <CLI/CLI.hpp>

namespace tuner::cli {

using Command = std::pair<CLI::App*, std::function<int()>>;

Command add_init_model(CLI::App& app);
Command add_perplexity(CLI::App& app);
Command add_bench(CLI::App& app);
Command add_generate(CLI::App& app);
Command add_info(CLI::App& app);
Command add_tokenize(CLI::App& app);   // cmd_tokenize.cpp
Command add_data(CLI::App& app);       // cmd_data.cpp
Command add_templates(CLI::App& app);  // cmd_data.cpp
Command add_merge(CLI::App& app);      // cmd_merge.cpp
Command add_train(CLI::App& app);      // cmd_train.cpp

// Adds --threads N to a subcommand (default 0: all cores).
void add_threads_option(CLI::App* sub, int* threads);

}  // namespace tuner::cli
