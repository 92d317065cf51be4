// Ctrl-C / SIGTERM during training: the first signal asks the trainer to stop after the current
// step (it then writes a checkpoint, prints its path and exits 0); a second one exits at once
// with status 130. Exiting at once is safe because every file tuner writes goes to a temporary
// name first and is renamed only when complete.
#pragma once

namespace tuner {

void install_stop_handlers();    // SIGINT and SIGTERM
bool stop_requested();           // true after the first signal
void clear_stop_request();       // for tests
void request_stop();             // as if a signal arrived (tests, --max-time limits)

}  // namespace tuner
