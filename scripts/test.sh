#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite (ctest), then the fuzzers
# for ${FUZZ_SECONDS:-60} s each under AddressSanitizer (TUNER_SKIP_FUZZ=1 skips them).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
(cd build && ctest --output-on-failure -j "$(nproc)" --timeout 900)
if [ "${TUNER_SKIP_FUZZ:-0}" != "1" ]; then
  scripts/fuzz.sh
fi
