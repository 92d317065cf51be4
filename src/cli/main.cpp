// The `tuner` program: parses the command line and runs one subcommand. User errors
// (tuner::Error) are caught here, printed on one line, and turn into exit code 1.
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"

namespace tuner::cli {
void add_threads_option(CLI::App* sub, int* threads) {
    sub->add_option("--threads", *threads, "worker threads (default: all cores)");
}
}  // namespace tuner::cli

int main(int argc, char** argv) {
    // A write past the file-size limit (ulimit -f) then fails with EFBIG, which the writers report
    // with the file's name, instead of killing the process with SIGXFSZ mid-save.
    std::signal(SIGXFSZ, SIG_IGN);
    CLI::App app{"tuner: fine-tune large language models from one C++ program"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "tuner 0.1.0");
    std::vector<tuner::cli::Command> commands = {
        tuner::cli::add_train(app),
        tuner::cli::add_init_model(app), tuner::cli::add_perplexity(app), tuner::cli::add_bench(app),
        tuner::cli::add_generate(app),   tuner::cli::add_info(app),       tuner::cli::add_tokenize(app),
        tuner::cli::add_data(app),       tuner::cli::add_templates(app),  tuner::cli::add_merge(app),
        tuner::cli::add_chat(app),       tuner::cli::add_eval(app),       tuner::cli::add_export(app),
        tuner::cli::add_logits(app),
    };
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    try {
        for (auto& [sub, run] : commands)
            if (sub->parsed()) return run();
        return 2;
    } catch (const tuner::Error& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    } catch (const std::filesystem::filesystem_error& e) {
        std::fprintf(stderr, "error: [file] %s\n", e.what());
        return 1;
    } catch (const std::bad_alloc&) {
        std::fprintf(stderr, "error: [memory] out of memory\n");
        return 1;
    }
}
