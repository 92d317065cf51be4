#!/usr/bin/env bash
# QLoRA and memory benchmarks (issue 5): one training step (forward + backward + clip + AdamW)
# with activation checkpointing, peak RSS against the memory plan's prediction, step time.
#   bench/bench_qlora.sh [7b|1b|all]   (default all)
#   7b: llama-7b preset written in bf16 (13.5 GB on disk; made once under runs/bench/), T=512,
#       QLoRA r=16 and r=64 on every linear layer.
#   1b: llama-1b preset in bf16, T=256, LoRA r=64: qlora (NF4 base), lora with a bf16 base and
#       lora with an f32 base, side by side.
# Runs one configuration at a time (each is its own process, so each peak RSS is its own).
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-all}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
tuner=build/tuner
make_model() {  # PRESET DIR
  [ -f "$2/config.json" ] || $tuner init-model "$1" "$2" --dtype bf16 --seed 0
}
run() {  # LABEL ARGS...
  local label=$1; shift
  local json
  json=$($tuner bench "$@" --optimizer --steps 1 --json)
  /usr/bin/python3 - "$label" "$json" <<'PY'
import json, sys
label, r = sys.argv[1], json.loads(sys.argv[2])
print(f"{label:34} step {r['step_s']:8.1f} s  {r['tokens_per_s']:8.1f} tok/s  MFU {100*r['mfu']:5.1f}%  "
      f"peak RSS {r['peak_rss_mb']/1024:6.2f} GiB  plan {r['plan_peak_mb']/1024:6.2f} GiB ({r['plan_peak_phase']})  "
      f"ratio {r['peak_rss_mb']/r['plan_peak_mb']:.3f}  load {r['load_s']:.0f} s  trained {r['trainable_params']/1e6:.1f}M")
PY
}
if [ "$which" = 7b ] || [ "$which" = all ]; then
  m=runs/bench/llama-7b-bf16
  make_model llama-7b $m
  echo "== llama-7b (bf16 on disk), T=512, checkpointing, all linear layers"
  run "qlora r=16 (nf4, double quant)" $m --seq 512 --lora-r 16 --base-dtype nf4 --checkpointing
  run "qlora r=64 (nf4, double quant)" $m --seq 512 --lora-r 64 --base-dtype nf4 --checkpointing
fi
if [ "$which" = 1b ] || [ "$which" = all ]; then
  m=runs/bench/llama-1b-bf16
  make_model llama-1b $m
  echo "== llama-1b (bf16 on disk), T=256, LoRA r=64 on all linear layers, checkpointing"
  run "qlora (nf4 base)" $m --seq 256 --lora-r 64 --base-dtype nf4 --checkpointing
  run "lora, bf16 base" $m --seq 256 --lora-r 64 --base-dtype bf16 --checkpointing
  run "lora, f32 base" $m --seq 256 --lora-r 64 --base-dtype f32 --checkpointing
fi
