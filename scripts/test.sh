#!/usr/bin/env bash
# Installs what is missing, builds, runs the fuzzers for ${FUZZ_SECONDS:-60} s each under
# AddressSanitizer (TUNER_SKIP_FUZZ=1 skips them), then the whole test suite (ctest), last so
# that its summary closes the output.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
if [ "${TUNER_SKIP_FUZZ:-0}" != "1" ]; then
  scripts/fuzz.sh
fi
(cd build && ctest --output-on-failure -j "$(nproc)" --timeout 900)
