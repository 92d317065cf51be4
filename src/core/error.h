// Errors in tuner.cpp come in two kinds (see STYLE.md):
//
//  * Broken invariants (a bug in tuner.cpp): TUNER_ASSERT prints the expression, file and line
//    and aborts. Never used for anything a user could cause.
//  * User and data errors (bad config, a file whose header lies, a missing key): throw
//    tuner::Error with a message that starts with where it happened, e.g.
//      [safetensors] model.safetensors: tensor 'x' ends at byte 812 past the file end (640)
//    The CLI catches it once, prints the message and exits non-zero.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace tuner {

// A user-facing error. The message is complete: "[module] where: what (hint)".
class Error : public std::runtime_error {
  public:
    explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Throws tuner::Error with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
    throw Error(fmt::format(format, std::forward<Args>(args)...));
}

[[noreturn]] inline void assert_failed(const char* expr, const char* file, int line, const char* msg) {
    std::fprintf(stderr, "tuner: internal error: %s:%d: assertion failed: %s%s%s\n", file, line, expr,
                 msg[0] ? " -- " : "", msg);
    std::fflush(stderr);
    std::abort();
}

}  // namespace tuner

// Invariant check that stays on in Release builds (the cost is negligible next to the kernels).
#define TUNER_ASSERT(cond)                                                                 \
    do {                                                                                   \
        if (!(cond)) ::tuner::assert_failed(#cond, __FILE__, __LINE__, "");                 \
    } while (0)
#define TUNER_ASSERT_MSG(cond, msg)                                                        \
    do {                                                                                   \
        if (!(cond)) ::tuner::assert_failed(#cond, __FILE__, __LINE__, (msg));              \
    } while (0)
