#include "train/signals.h"

#include <atomic>
#include <csignal>
#include <unistd.h>

namespace tuner {

static std::atomic<int> g_signals{0};

static void on_signal(int) {
    if (g_signals.fetch_add(1) >= 1) {
        static const char msg[] = "\ntuner: second interrupt, exiting now (no checkpoint written)\n";
        ssize_t n = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)n;
        _exit(130);
    }
    static const char msg[] = "\ntuner: interrupt: finishing this step, then saving a checkpoint (Ctrl-C again to quit now)\n";
    ssize_t n = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)n;
}

void install_stop_handlers() {
    struct sigaction sa = {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
}

bool stop_requested() { return g_signals.load() > 0; }
void clear_stop_request() { g_signals.store(0); }
void request_stop() { g_signals.store(1); }

}  // namespace tuner
