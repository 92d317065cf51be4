#!/usr/bin/env bash
# LoRA over GGUF bases (issue 7): the llama-1b preset written in bf16, exported by tuner's own
# exporter to Q4_K, Q8_0 and BF16 GGUF files, then one LoRA training step each (r=64 on every
# linear layer, T=256, checkpointing, fwd + bwd + clip + AdamW): tokens/s, peak RSS, the plan.
# The quantised bases stay in their block types and are dequantised tile by tile in the matmul.
#   bench/bench_gguf.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
tuner=build/tuner
hf=runs/bench/llama-1b-bf16
[ -f "$hf/config.json" ] || $tuner init-model llama-1b "$hf" --dtype bf16 --seed 0
for t in q4_k q8_0 bf16; do
  [ -f runs/bench/llama-1b-$t.gguf ] || $tuner export "$hf" --format gguf --type $t runs/bench/llama-1b-$t.gguf
done
echo "== llama-1b, LoRA r=64 all linear, T=256, checkpointing; GGUF files written by tuner export"
for t in q4_k q8_0 bf16; do
  json=$($tuner bench runs/bench/llama-1b-$t.gguf --seq 256 --lora-r 64 --base-dtype bf16 --checkpointing \
         --optimizer --steps 1 --json)
  /usr/bin/python3 - "$t" "$(stat -c %s runs/bench/llama-1b-$t.gguf)" "$json" <<'PY'
import json, sys
t, size, r = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
print(f"{t:5} file {size/2**30:5.2f} GiB  step {r['step_s']:6.1f} s  {r['tokens_per_s']:6.1f} tok/s "
      f"({r['tokens_per_cpu_s']:6.1f} per CPU-s)  peak RSS {r['peak_rss_mb']/1024:5.2f} GiB  "
      f"plan {r['plan_peak_mb']/1024:5.2f} GiB  load {r['load_s']:.0f} s")
PY
done
