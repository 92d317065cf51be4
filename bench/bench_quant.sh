#!/usr/bin/env bash
# Block-quantised weights on the CPU: dequantisation speed (GB/s) for NF4 (with and without
# double quantisation) and the GGUF block types, and matmul GFLOP/s with a quantised weight
# against f32 and bf16 at smol-135m's MLP shapes (N=512 tokens, 576x1536 and 1536x576).
#   bench/bench_quant.sh [BUILD_DIR]      (default: build; needs tests/test_quant built)
# On a shared machine the GEMM figures move with the load; compare rows of one run.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
exe=$build/tests/test_quant
if [[ ! -x $exe ]]; then
    echo "bench_quant.sh: $exe not found (ninja -C $build test_quant)" >&2
    exit 1
fi
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} "$exe" --gtest_also_run_disabled_tests \
    --gtest_filter='QuantPerf.*' | grep -v '^\[\|^Running main\|^Note: Google'
