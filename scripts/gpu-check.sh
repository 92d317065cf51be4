#!/usr/bin/env bash
# One command for a GPU machine: builds tuner with CUDA (Release, in build-gpu/), runs every CUDA
# test with TUNER_REQUIRE_CUDA=1 (a missing device fails instead of skipping), runs the GPU
# benchmarks, then the ecosystem check (tuner's LoRA, merge and logits against transformers +
# PEFT on stories260K) and the tuner-vs-PEFT benchmark (bench/compare_gpu.sh), and prints a short
# table. Each step is guarded: a failure is recorded and the next step still runs. Exits non-zero
# on any build or test failure, after the table. Needs no network. About 8 minutes on one H200:
# build ~3 min, CUDA tests + benchmarks ~1 min, ecosystem check ~1 min, compare_gpu ~3 min.
# What each step prints and how to read the table: docs/gpu-check.md.
#
#   scripts/gpu-check.sh                    # everything
#   GPU_CHECK_BENCH=0 scripts/gpu-check.sh  # tests only
#   CUDA_ARCH=80 scripts/gpu-check.sh       # another GPU generation (default 90: H100/H200)
#   BUILD=build-x scripts/gpu-check.sh      # another build folder
#   GPU_CHECK_SKIP_BUILD=1 scripts/gpu-check.sh  # rerun the tests and benchmarks of the last build
#   GPU_CHECK_LAB=1 scripts/gpu-check.sh    # also build and run the kernel lab (dev/cuda), ~2 more minutes
#   GPU_CHECK_ECOSYSTEM=0 scripts/gpu-check.sh  # skip the transformers + PEFT check
#   GPU_CHECK_COMPARE_PRESETS="llama-1b llama-7b" scripts/gpu-check.sh  # tuner vs PEFT on 7B too
#   GPU_CHECK_DATA=path/to/data             # the shared test data (default ../shared/data)
#   PYTHON=python3.11 scripts/gpu-check.sh  # the Python with torch (CUDA), transformers, peft
#   GPU_CHECK_SANITIZE=1 scripts/gpu-check.sh  # also compute-sanitizer memcheck + racecheck on the op tests
#   TUNER_CUDA_ATTENTION=wmma scripts/gpu-check.sh  # the WMMA attention kernels instead of mma.sync (the
#                                           # script switches by itself after a failed mma test)
#   GPU_CHECK_BUNDLE=gpu-bundle.tar.xz scripts/gpu-check.sh  # binaries built elsewhere (scripts/gpu-bundle.sh):
#                                           # a GPU image without our build's Debian packages
set -uo pipefail
cd "$(dirname "$0")/.."

if [ -n "${GPU_CHECK_BUNDLE:-}" ]; then
  # Prebuilt binaries, their libraries and the test data, unpacked into build-gpu/; the tests
  # find the checkout, the build folder, tuner and the data through these variables.
  [ -f "$GPU_CHECK_BUNDLE" ] || { echo "gpu-check: FAILED: $GPU_CHECK_BUNDLE not found"; exit 1; }
  rm -rf build-gpu && tar -xJf "$GPU_CHECK_BUNDLE" || { echo "gpu-check: FAILED: cannot unpack $GPU_CHECK_BUNDLE"; exit 1; }
  BUILD=build-gpu
  GPU_CHECK_SKIP_BUILD=1
  export TUNER_SOURCE_DIR=$PWD TUNER_BINARY_DIR=$PWD/build-gpu TUNER_EXE=$PWD/build-gpu/tuner
  [ -f build-gpu/data/INDEX.md ] && export TUNER_SHARED_DATA=$PWD/build-gpu/data GPU_CHECK_DATA=$PWD/build-gpu/data
fi
BUILD=${BUILD:-build-gpu}
ARCH=${CUDA_ARCH:-90}
JOBS=${JOBS:-$(nproc)}
# GPU_CHECK_LOG_DIR=$OUT/gpu-check keeps the logs even if the whole command is stopped at a time limit.
LOG_DIR=${GPU_CHECK_LOG_DIR:-"$BUILD/gpu-check"}
status=0
summary=()

say() { printf '\n==== %s\n' "$*"; }
mkdir -p "$LOG_DIR" && : >"$LOG_DIR/summary.txt"
note() { summary+=("$1"); echo "$1" >>"$LOG_DIR/summary.txt"; }  # the table, also as it grows

if command -v nvidia-smi >/dev/null 2>&1; then
  say "device"
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader || true
elif compgen -G "/dev/nvidia[0-9]*" >/dev/null; then
  say "device: nvidia-smi not found (the tests will say whether CUDA sees a device)"
elif [ "${GPU_CHECK_FORCE:-0}" != "1" ]; then
  # Without a GPU the CUDA build alone takes long and every check would fail: stop here.
  say "device: no GPU (no nvidia-smi, no /dev/nvidia*)"
  echo "gpu-check: FAILED: this machine has no NVIDIA GPU; run it on one (GPU_CHECK_FORCE=1 runs every step anyway)"
  exit 1
else
  say "device: no GPU found; GPU_CHECK_FORCE=1: running every step anyway (each will say what failed)"
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
  cmake --build "$BUILD" -j "$JOBS" --target test_cuda_ops test_cuda_attention_mma test_cuda_model test_golden \
    test_train_golden test_cuda_bench test_cuda_stubs tuner >"$BUILD/build.log" 2>&1
  local brc=$?
  if [ "$brc" != 0 ] || [ ! -x "$BUILD/tests/test_cuda_ops" ] || [ ! -x "$BUILD/tuner" ]; then
    grep -E "error|FAILED" "$BUILD/build.log" | head -40
    echo "gpu-check: FAILED: build (exit $brc; see $BUILD/build.log)"
    exit 1
  fi
  note "build: ok ($(($(date +%s) - t0)) s)"
}
if [ -n "${GPU_CHECK_BUNDLE:-}" ]; then
  note "build: from $GPU_CHECK_BUNDLE ($(cat "$BUILD/BUNDLE" 2>/dev/null))"
  "$BUILD/tuner" --version >/dev/null 2>&1 || { ldd "$BUILD/tuner" | grep "not found"; note "bundle: tuner does not start (missing libraries above)"; status=1; }
elif [ "${GPU_CHECK_SKIP_BUILD:-0}" = "1" ]; then
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
  failed=$(grep -cE "^\[ +FAILED +\] [^ ]+ \(" "$LOG_DIR/$name.log")
  skipped=$(grep -cE "^\[ +SKIPPED +\] [^ ]+ \(" "$LOG_DIR/$name.log")
  if [ "$rc" != 0 ] || [ "$failed" != 0 ] || { [ "$passed" = 0 ] && [ "$name" != test_cuda_stubs ]; }; then
    # Nothing passing is a failure too (every test skipped: no device, or no reference data);
    # test_cuda_stubs skips by design when a device is present.
    status=1
    note "$name: FAILED ($passed passed, $failed failed, $skipped skipped, exit $rc; log $LOG_DIR/$name.log)"
    return 1
  else
    note "$name: ok ($passed passed, $skipped skipped, $(($(date +%s) - t)) s)"
  fi
}
# The mma.sync flash attention (the default bf16 kernels) in detail: head dims, GQA splits, tails.
# If it fails, everything after runs on the WMMA kernels (TUNER_CUDA_ATTENTION=wmma, no rebuild),
# so one GPU session still measures the rest.
if ! run_tests test_cuda_attention_mma "$BUILD/tests/test_cuda_attention_mma"; then
  export TUNER_CUDA_ATTENTION=wmma
  note "attention: the mma.sync kernels failed; the runs below use TUNER_CUDA_ATTENTION=wmma"
fi
run_tests test_cuda_ops "$BUILD/tests/test_cuda_ops"
# The model and trainer on the GPU against the CPU (forward, first-step gradients, 5 steps of
# full/LoRA/QLoRA, decoding, adapters and checkpoints across devices, the GPU memory plan,
# stories260K 5 steps in bf16), then the PyTorch golden tests with the model on the GPU
# (TUNER_TEST_DEVICE=cuda; their references need a python3 with torch: TUNER_PYTHON).
run_tests test_cuda_model "$BUILD/tests/test_cuda_model"
export TUNER_PYTHON=${TUNER_PYTHON:-${PYTHON:-python3}}
TUNER_TEST_DEVICE=cuda run_tests test_golden_cuda "$BUILD/tests/test_golden"
TUNER_TEST_DEVICE=cuda run_tests test_train_golden_cuda "$BUILD/tests/test_train_golden"
# With a device present the stub test skips by design (the op tests cover the build).
run_tests test_cuda_stubs "$BUILD/tests/test_cuda_stubs"

# ---- compute-sanitizer (optional: GPU_CHECK_SANITIZE=1) --------------------------------------------
# What the CPU emulator cannot see: races inside a block's shared memory across warps as the
# hardware schedules them (racecheck) and out-of-bounds device accesses (memcheck), on the op tests.
if [ "${GPU_CHECK_SANITIZE:-0}" = "1" ]; then
  if command -v compute-sanitizer >/dev/null 2>&1; then
    for tool in memcheck racecheck; do
      say "compute-sanitizer --tool $tool (test_cuda_ops)"
      if TUNER_REQUIRE_CUDA=1 timeout 300 compute-sanitizer --tool "$tool" --error-exitcode 9 \
          "$BUILD/tests/test_cuda_ops" --gtest_color=no >"$LOG_DIR/sanitize-$tool.log" 2>&1; then
        note "compute-sanitizer $tool: ok"
      else
        status=1
        note "compute-sanitizer $tool: FAILED (log $LOG_DIR/sanitize-$tool.log)"
        grep -E "=========|Failure" "$LOG_DIR/sanitize-$tool.log" | head -20
      fi
    done
  else
    note "compute-sanitizer: not found (skipped)"
  fi
fi

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

# ---- ecosystem check: tuner's files and logits against transformers + PEFT (~1 min) ---------------
# On stories260K: a 5-step LoRA with `tuner train --device cuda` (tests/data/lora-stories-check.yaml),
# `tuner merge`, `tuner logits` of base+adapter and of the merged folder (on the CPU, the reference
# backend, and on CUDA), each compared by tests/ref/hf_check.py with transformers + PEFT in float32.
PY=${PYTHON:-python3}
DATA=${GPU_CHECK_DATA:-../shared/data}
ECO_IDS=1,403,407,261,378,1,29,100,200,300,400,500,511,0,2
eco_lines=()
ecosystem() {
  local dir="$LOG_DIR/ecosystem" model="$DATA/stories260K/hf" tuner="$BUILD/tuner" t0 rc backend=hf
  t0=$(date +%s)
  say "ecosystem check (stories260K: tuner train --device cuda, merge, logits vs transformers + PEFT)"
  if [ ! -d "$model" ]; then
    note "ecosystem: skipped ($model not found; set GPU_CHECK_DATA=path/to/shared/data)"
    return
  fi
  if [ ! -x "$tuner" ]; then
    status=1
    note "ecosystem: FAILED ($tuner was not built)"
    return
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  # The config with its ../shared/data paths pointed at $DATA.
  sed "s#\.\./shared/data#$DATA#g" tests/data/lora-stories-check.yaml >"$dir/train.yaml"
  local train_dev=cuda
  if ! timeout 180 "$tuner" train "$dir/train.yaml" --device cuda --set output_dir="$dir/run" >"$dir/train.log" 2>&1; then
    status=1
    eco_lines+=("train --device cuda: FAILED ($(grep -v '^$' "$dir/train.log" | tail -1 | cut -c1-120)); trained on the CPU instead")
    train_dev=cpu
    rm -rf "$dir/run"
    if ! timeout 180 "$tuner" train "$dir/train.yaml" --set output_dir="$dir/run" >"$dir/train-cpu.log" 2>&1; then
      note "ecosystem: FAILED (tuner train failed on cuda and cpu; logs $dir/train.log, $dir/train-cpu.log)"
      tail -5 "$dir/train-cpu.log"
      return
    fi
  else
    eco_lines+=("train --device cuda: ok ($(grep -E '^step 5/5' "$dir/train.log" | cut -d'|' -f2 | xargs))")
  fi
  cat "$dir/train.log" "$dir/train-cpu.log" 2>/dev/null | grep -E "^step|^wrote" | tail -6
  if ! "$tuner" merge "$model" "$dir/run/adapter" "$dir/merged" >"$dir/merge.log" 2>&1; then
    status=1
    note "ecosystem: FAILED (tuner merge: $(tail -1 "$dir/merge.log"))"
    return
  fi
  # Logits on the CPU (the reference backend) and on CUDA; a failure of one still lets the other run.
  local dev ok_devs=()
  for dev in cpu cuda; do
    if "$tuner" logits "$model" --adapter "$dir/run/adapter" --ids "$ECO_IDS" --device "$dev" --out "$dir/adapter-$dev.npy" \
          >"$dir/logits-$dev.log" 2>&1 &&
       "$tuner" logits "$dir/merged" --ids "$ECO_IDS" --device "$dev" --out "$dir/merged-$dev.npy" >>"$dir/logits-$dev.log" 2>&1; then
      ok_devs+=("$dev")
    else
      status=1
      eco_lines+=("logits --device $dev: FAILED ($(grep -v '^$' "$dir/logits-$dev.log" | tail -1 | cut -c1-120))")
    fi
  done
  # transformers + PEFT; when this Python lacks them (exit 2), our own float64 reference instead, so
  # the CUDA logits are still checked (and the table says which reference was used).
  for dev in "${ok_devs[@]}"; do
    local tol=1e-3 min_argmax=0.95
    # bf16 compute on the GPU: ~1e-2 of max|logit| at most, and a near-tie may flip one argmax.
    [ "$dev" = cuda ] && tol=2e-2 && min_argmax=0.9
    "$PY" tests/ref/hf_check.py --backend "$backend" --base "$model" --adapter "$dir/run/adapter" --merged "$dir/merged" \
      --ids "$ECO_IDS" --logits "$dir/adapter-$dev.npy" --merged-logits "$dir/merged-$dev.npy" --tol "$tol" \
      --min-argmax "$min_argmax" >"$dir/hf_check-$dev.log" 2>&1
    rc=$?
    if [ "$rc" = 2 ] && [ "$backend" = hf ]; then
      eco_lines+=("hf_check: cannot run with transformers + PEFT ($(tail -1 "$dir/hf_check-$dev.log" | cut -c1-120)); using --backend ref")
      status=1
      backend=ref
      "$PY" tests/ref/hf_check.py --backend ref --base "$model" --adapter "$dir/run/adapter" --merged "$dir/merged" \
        --ids "$ECO_IDS" --logits "$dir/adapter-$dev.npy" --merged-logits "$dir/merged-$dev.npy" --tol "$tol" \
        --min-argmax "$min_argmax" >"$dir/hf_check-$dev.log" 2>&1
      rc=$?
    fi
    cat "$dir/hf_check-$dev.log"
    local worst
    worst=$(grep -oE "worst rel [0-9.e+-]+" "$dir/hf_check-$dev.log" | cut -d' ' -f3)
    if [ "$rc" = 0 ]; then
      eco_lines+=("tuner logits ($dev) vs $backend: ok (worst rel ${worst}, tol $tol)")
    else
      status=1
      eco_lines+=("tuner logits ($dev) vs $backend: FAILED (exit $rc; $dir/hf_check-$dev.log)")
    fi
  done
  local failed=0 line
  for line in "${eco_lines[@]}"; do [[ $line == *FAILED* || $line == *"cannot run"* ]] && failed=1; done
  if [ "$failed" = 0 ] && [ ${#ok_devs[@]} = 2 ]; then
    note "ecosystem: ok (train $train_dev, merge, logits cpu+cuda vs $backend; $(($(date +%s) - t0)) s)"
  else
    note "ecosystem: FAILED (details below; logs $dir/)"
  fi
}
if [ "${GPU_CHECK_ECOSYSTEM:-1}" != "0" ]; then
  ecosystem
fi

# ---- tuner vs PyTorch + transformers + PEFT on the GPU (~3 min per preset) -------------------------
# T=2048, r=64: LoRA, QLoRA and full fine-tuning (bench/compare_gpu.sh; 3 timed steps per run, each
# run at most 150 s), on llama-1b; GPU_CHECK_COMPARE_PRESETS="llama-1b llama-7b" adds the 7B rows
# (several more minutes: its weights are made on the host first).
compare_lines=()
if [ "${GPU_CHECK_BENCH:-1}" != "0" ]; then
  for preset in ${GPU_CHECK_COMPARE_PRESETS:-llama-1b}; do
    say "tuner vs PEFT (bench/compare_gpu.sh $preset 2048 64)"
    t0=$(date +%s)
    TUNER="$BUILD/tuner" PYTHON="$PY" STEPS=${GPU_CHECK_COMPARE_STEPS:-3} TIMEOUT=150 OUT="$LOG_DIR/compare-gpu/$preset" \
      bench/compare_gpu.sh "$preset" 2048 64 2>&1 | tee "$LOG_DIR/compare-gpu-$preset.log"
    crc=${PIPESTATUS[0]}
    mapfile -t rows < <(grep '^COMPARE|' "$LOG_DIR/compare-gpu-$preset.log" | sed "s/^COMPARE|/COMPARE|$preset /")
    compare_lines+=("${rows[@]}")
    if [ "$crc" != 0 ] || [ ${#rows[@]} = 0 ]; then
      status=1
      note "tuner vs PEFT ($preset): FAILED (exit $crc; log $LOG_DIR/compare-gpu-$preset.log)"
    else
      note "tuner vs PEFT ($preset): ok (${#rows[@]} rows, $(($(date +%s) - t0)) s)"
    fi
  done
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
if [ ${#eco_lines[@]} -gt 0 ]; then
  echo
  echo "  ecosystem check (stories260K)"
  for line in "${eco_lines[@]}"; do echo "    $line"; done
fi
if [ ${#compare_lines[@]} -gt 0 ]; then
  echo
  printf '  %-36s %12s %12s %10s\n' "tuner vs PEFT (T=2048, r=64)" "tuner tok/s" "PEFT tok/s" "tuner/PEFT"
  for line in "${compare_lines[@]}"; do
    IFS='|' read -r _ row ratio ttps ptps <<<"$line"
    printf '  %-36s %12s %12s %10s\n' "$row" "$ttps" "$ptps" "$ratio"
  done
fi
echo
if [ "$status" != 0 ]; then
  echo "gpu-check: FAILED (see the lines above and $LOG_DIR/)"
  exit 1
fi
echo "gpu-check: all CUDA tests and checks passed"
