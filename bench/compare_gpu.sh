#!/usr/bin/env bash
# Side-by-side on one GPU: `tuner bench PRESET --device cuda` and the same training step in
# PyTorch + transformers + PEFT (bench/bench_peft_gpu.py), same shape, sequence length and rank,
# for LoRA, QLoRA and full fine-tuning, in one call so the machine's state hits both. Prints one
# line per run and a table with the ratio tuner/PEFT of tokens/s.
#
#   bench/compare_gpu.sh [PRESET] [SEQ] [RANK]        (default: llama-1b 2048 64)
#
# Rows (every step is forward + backward + clip_grad_norm 1.0 + AdamW, batch 1, random tokens):
#   lora   tuner --lora-r R --base-dtype bf16            PEFT LoRA r=R over a bf16 base
#   qlora  tuner --lora-r R --base-dtype nf4 --checkpointing
#                                                        PEFT + bitsandbytes NF4 (double quant) + checkpointing
#   full   tuner (f32 master weights, bf16 compute)      HF f32 weights + autocast bf16
# Environment: TUNER (default build-gpu/tuner), PYTHON (python3), STEPS (timed steps, 5),
# ROWS ("lora qlora full"), TIMEOUT (seconds per run, 240), OUT (runs/compare-gpu/PRESET).
# Exit status: 0 when every run that could run ran (a PEFT side that cannot run here, exit 2:
# no CUDA / transformers / bitsandbytes, is "skipped"); 1 when a run failed; 2 when nothing can run.
set -uo pipefail
cd "$(dirname "$0")/.."
preset=${1:-llama-1b}
seq=${2:-2048}
rank=${3:-64}
TUNER=${TUNER:-build-gpu/tuner}
PY=${PYTHON:-python3}
steps=${STEPS:-5}
rows=${ROWS:-lora qlora full}
limit=${TIMEOUT:-240}
out=${OUT:-runs/compare-gpu/$preset}

if [ ! -x "$TUNER" ]; then
  echo "compare_gpu: $TUNER is not an executable (build it: scripts/gpu-check.sh, or set TUNER=path/to/tuner)"
  exit 2
fi
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "compare_gpu: $PY not found (set PYTHON=...)"
  exit 2
fi
mkdir -p "$out"
# config.json only: the PEFT side builds the same shape itself (no weights written).
if ! "$TUNER" init-model "$preset" "$out/config" --config-only >"$out/init.log" 2>&1; then
  cat "$out/init.log"
  echo "compare_gpu: FAILED: tuner init-model $preset --config-only (see $out/init.log)"
  exit 2
fi

status=0
results=()  # "row|tuner json or ERR:msg|peft json or ERR:msg or SKIP:msg"

# Runs a command with the time limit; prints its last JSON line, or "ERR:...", or "SKIP:..." when
# skip_ok is 1 and it exited 2 (bench_peft_gpu.py: cannot run here).
run_json() {  # log, skip_ok, command...
  local log=$1 skip_ok=$2
  shift 2
  timeout "$limit" "$@" >"$log.out" 2>"$log.err"
  local rc=$?
  local line
  line=$(grep '^{' "$log.out" | tail -1)
  if [ "$rc" = 0 ] && [ -n "$line" ]; then
    echo "$line"
  elif [ "$rc" = 2 ] && [ "$skip_ok" = 1 ]; then
    echo "SKIP:$(cat "$log.err" "$log.out" | grep -v '^$' | tail -1 | cut -c1-160)"
  elif [ "$rc" = 124 ]; then
    echo "ERR:timed out after ${limit} s"
  else
    echo "ERR:exit $rc: $(cat "$log.err" "$log.out" | grep -v '^$' | tail -1 | cut -c1-160)"
  fi
}

for row in $rows; do
  case $row in
    lora)  targs=(--lora-r "$rank" --base-dtype bf16); pargs=(--lora-r "$rank") ;;
    qlora) targs=(--lora-r "$rank" --base-dtype nf4 --checkpointing); pargs=(--qlora --lora-r "$rank" --checkpointing) ;;
    full)  targs=(); pargs=(--full) ;;
    *) echo "compare_gpu: unknown row '$row' (lora, qlora, full)"; exit 2 ;;
  esac
  echo "== $row: tuner bench $preset --device cuda --seq $seq --steps $steps --optimizer ${targs[*]}"
  t=$(run_json "$out/$row-tuner" 0 "$TUNER" bench "$preset" --device cuda --seq "$seq" --steps "$steps" --optimizer \
      --json "${targs[@]}")
  echo "$t"
  echo "== $row: bench_peft_gpu.py --seq $seq --steps $steps ${pargs[*]}"
  p=$(run_json "$out/$row-peft" 1 "$PY" bench/bench_peft_gpu.py --config "$out/config/config.json" --seq "$seq" \
      --steps "$steps" --json "${pargs[@]}")
  echo "$p"
  case $t in ERR:*|SKIP:*) status=1 ;; esac
  case $p in ERR:*) status=1 ;; esac
  results+=("$row"$'\t'"$t"$'\t'"$p")  # tabs: JSON escapes them, so they separate safely
done

# The table (the JSON parsing needs only the standard library).
"$PY" - "$preset" "$seq" "$rank" "$steps" "${results[@]}" <<'PY' || { echo "compare_gpu: could not print the table"; status=1; }
import json, sys
preset, seq, rank, steps = sys.argv[1:5]
print(f"\ncompare_gpu: {preset}, T={seq}, B=1, r={rank}, {steps} timed steps (tokens/s: higher is better)")
print(f"  {'method':<6} {'tuner tok/s':>12} {'PEFT tok/s':>11} {'tuner/PEFT':>10} {'tuner MiB':>10} {'PEFT MiB':>9}  notes")
def parse(s):
    if s.startswith("{"):
        try:
            return json.loads(s), ""
        except ValueError as e:
            return None, f"bad JSON ({e})"
    return None, s
for item in sys.argv[5:]:
    row, t, p = item.split("\t", 2)
    tj, terr = parse(t)
    pj, perr = parse(p)
    tt = tj["tokens_per_s"] if tj else None
    pt = pj["tokens_per_s"] if pj else None
    ratio = f"{tt / pt:.2f}x" if tt and pt else "-"
    # tuner's device memory: its GPU arenas as planned and allocated (gpu_plan_mb: weights,
    # adapters, gradients, optimizer, activations, workspace), the figure comparable to PyTorch's
    # max_memory_allocated; gpu_used_mb (cudaMemGetInfo, CUDA context included) is in the JSON.
    tm = None
    if tj:
        for k in ("gpu_plan_mb", "peak_gpu_mib"):
            if k in tj:
                tm = f"{tj[k]:.0f}"
                break
    pm = f"{pj['peak_gpu_mib']:.0f}" if pj else "-"
    notes = []
    if tj and tj.get("gpu_kernels"):
        notes.append(f"tuner {tj['gpu_kernels']}")
    if pj:
        notes.append(f"PEFT attention {pj.get('attn_implementation')}")
    if terr:
        notes.append(f"tuner: {terr}")
    if perr:
        notes.append(f"PEFT: {perr}")
    fmt = lambda x: f"{x:.0f}" if x else "-"
    print(f"  {row:<6} {fmt(tt):>12} {fmt(pt):>11} {ratio:>10} {tm or '-':>10} {pm:>9}  {'; '.join(notes)}")
    # One machine-readable line per row (scripts/gpu-check.sh records these).
    print(f"COMPARE|{row}|{ratio}|{fmt(tt)}|{fmt(pt)}")
PY
exit $status
