#!/usr/bin/env bash
# Builds tuner.cpp (Release) into build/; the program is build/tuner.
# The CUDA backend is compiled whenever nvcc is found (set TUNER_CUDA=OFF to skip it).
# Extra arguments go to cmake's configure step.
set -euo pipefail
cd "$(dirname "$0")/.."
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [ ! -f build/CMakeCache.txt ]; then
  cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DTUNER_CUDA="${TUNER_CUDA:-ON}" "$@"
elif [ $# -gt 0 ]; then
  cmake -S . -B build "$@"
fi
cmake --build build -j "$(nproc)"
