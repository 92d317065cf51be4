#!/usr/bin/env bash
# One command for a GPU machine: builds tuner with CUDA (Release, in build-gpu/), runs every CUDA
# test with TUNER_REQUIRE_CUDA=1 (a missing device fails instead of skipping), runs the GPU
# benchmarks, and prints a short table. Exits non-zero on any build or test failure, after the
# table. Needs no network. A few minutes on one H100/H200 (most of it the build).
#
#   scripts/gpu-check.sh                    # everything
#   GPU_CHECK_BENCH=0 scripts/gpu-check.sh  # tests only
#   CUDA_ARCH=80 scripts/gpu-check.sh       # another GPU generation (default 90: H100/H200)
#   BUILD=build-x scripts/gpu-check.sh      # another build folder
#   GPU_CHECK_SKIP_BUILD=1 scripts/gpu-check.sh  # rerun the tests and benchmarks of the last build
#   GPU_CHECK_LAB=1 scripts/gpu-check.sh    # also build and run the kernel lab (dev/cuda), ~2 more minutes
set -uo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build-gpu}
ARCH=${CUDA_ARCH:-90}
JOBS=${JOBS:-$(nproc)}
LOG_DIR="$BUILD/gpu-check"
status=0
summary=()

say() { printf '\n==== %s\n' "$*"; }
note() { summary+=("$1"); }

if command -v nvidia-smi >/dev/null 2>&1; then
  say "device"
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader || true
else
  say "device: nvidia-smi not found (the tests will say whether CUDA sees a device)"
fi

# ---- build ---------------------------------------------------------------------------------------
build() {
  say "build ($BUILD, CUDA arch $ARCH, $JOBS jobs)"
  local t0 generator=()
  t0=$(date +%s)
  command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
  mkdir -p "$BUILD"
  if ! cmake -S . -B "$BUILD" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DTUNER_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES="$ARCH" >"$BUILD/configure.log" 2>&1; then
    tail -20 "$BUILD/configure.log"
    echo "gpu-check: FAILED: cmake configure (see $BUILD/configure.log)"
    exit 1
  fi
  if ! grep -q "tuner: CUDA backend ON" "$BUILD/configure.log"; then
    echo "gpu-check: FAILED: CMake did not enable CUDA (nvcc not found? put it on PATH or set CMAKE_CUDA_COMPILER)"
    exit 1
  fi
  cmake --build "$BUILD" -j "$JOBS" --target test_cuda_ops test_cuda_bench test_cuda_stubs >"$BUILD/build.log" 2>&1
  local brc=$?
  if [ "$brc" != 0 ] || [ ! -x "$BUILD/tests/test_cuda_ops" ]; then
    grep -E "error|FAILED" "$BUILD/build.log" | head -40
    echo "gpu-check: FAILED: build (exit $brc; see $BUILD/build.log)"
    exit 1
  fi
  note "build: ok ($(($(date +%s) - t0)) s)"
}
if [ "${GPU_CHECK_SKIP_BUILD:-0}" = "1" ]; then
  note "build: skipped (GPU_CHECK_SKIP_BUILD=1, using $BUILD as it is)"
else
  build
fi

# ---- tests ---------------------------------------------------------------------------------------
mkdir -p "$LOG_DIR"
run_tests() {  # name, binary, args...
  local name=$1 bin=$2
  shift 2
  say "test: $name"
  local t=$(date +%s)
  # Console: one line per test, each failure with a few lines of context, the device line.
  TUNER_REQUIRE_CUDA=1 "$bin" --gtest_color=no "$@" 2>&1 | tee "$LOG_DIR/$name.log" |
    grep -E -A3 "^\[ +(OK|FAILED|SKIPPED) +\] .* \(|Failure|^device:" | grep -vE "^\[ +RUN +\]|^\[-+\]|^--$|^$"
  local rc=${PIPESTATUS[0]}
  local passed failed skipped
  passed=$(grep -cE "^\[ +OK +\]" "$LOG_DIR/$name.log")
  failed=$(grep -cE "^\[ +FAILED +\] [A-Za-z]+\.[A-Za-z0-9_]+ \(" "$LOG_DIR/$name.log")
  skipped=$(grep -cE "^\[ +SKIPPED +\] [A-Za-z]+\.[A-Za-z0-9_]+ \(" "$LOG_DIR/$name.log")
  if [ "$rc" != 0 ] || [ "$failed" != 0 ]; then
    status=1
    note "$name: FAILED ($passed passed, $failed failed, $skipped skipped, exit $rc; log $LOG_DIR/$name.log)"
  else
    note "$name: ok ($passed passed, $skipped skipped, $(($(date +%s) - t)) s)"
  fi
}
run_tests test_cuda_ops "$BUILD/tests/test_cuda_ops"
# With a device present the stub test skips by design (the op tests cover the build).
run_tests test_cuda_stubs "$BUILD/tests/test_cuda_stubs"

# ---- benchmarks ----------------------------------------------------------------------------------
bench_lines=()
if [ "${GPU_CHECK_BENCH:-1}" != "0" ]; then
  say "benchmarks"
  "$BUILD/tests/test_cuda_bench" --gtest_color=no --gtest_also_run_disabled_tests --gtest_filter='CudaBench.*' \
    >"$LOG_DIR/bench.log" 2>&1
  brc=$?
  mapfile -t bench_lines < <(grep '^BENCH|' "$LOG_DIR/bench.log")
  if [ "$brc" != 0 ] || [ ${#bench_lines[@]} = 0 ]; then
    status=1
    note "benchmarks: FAILED (exit $brc, ${#bench_lines[@]} numbers; log $LOG_DIR/bench.log)"
    grep -E "Failure|\[cuda\]|error|no CUDA device" "$LOG_DIR/bench.log" | head -20
  else
    note "benchmarks: ok (${#bench_lines[@]} numbers)"
  fi
fi

# ---- kernel lab (optional: GPU_CHECK_LAB=1) -------------------------------------------------------
if [ "${GPU_CHECK_LAB:-0}" = "1" ]; then
  say "kernel lab (dev/cuda)"
  if make -C dev/cuda ARCH="$ARCH" run >"$LOG_DIR/lab.log" 2>&1; then
    note "kernel lab: ok (every version matched its CPU reference)"
    grep -E "^== |^version|ms," "$LOG_DIR/lab.log"
  else
    status=1
    note "kernel lab: FAILED (log $LOG_DIR/lab.log)"
    tail -20 "$LOG_DIR/lab.log"
  fi
fi

# ---- table ---------------------------------------------------------------------------------------
say "gpu-check summary"
for line in "${summary[@]}"; do echo "  $line"; done
if [ ${#bench_lines[@]} -gt 0 ]; then
  echo
  printf '  %-36s %12s  %s\n' "benchmark" "value" "shape, time"
  for line in "${bench_lines[@]}"; do
    IFS='|' read -r _ name value unit rest <<<"$line"
    printf '  %-36s %8s %-8s %s\n' "$name" "$value" "$unit" "$rest"
  done
fi
echo
if [ "$status" != 0 ]; then
  echo "gpu-check: FAILED (see the lines above and $LOG_DIR/)"
  exit 1
fi
echo "gpu-check: all CUDA tests passed"
