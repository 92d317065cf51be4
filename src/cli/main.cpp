// The `tuner` program: parses the command line and runs one subcommand.
#include <cstdio>

#include "core/error.h"

int main(int argc, char** argv) {
    (void)argc;
    (void)argv;
    std::printf("tuner\n");
    return 0;
}
