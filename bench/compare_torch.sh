#!/usr/bin/env bash
# Side-by-side: `tuner bench` and the same forward + backward in PyTorch (Debian python3-torch),
# same model shape, sequence length and thread count, in one run so machine noise hits both.
#   bench/compare_torch.sh [PRESET] [SEQ] [THREADS] [STEPS]     (default: smol-135m 512 2 3)
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-smol-135m}
seq=${2:-512}
threads=${3:-2}
steps=${4:-3}
model=runs/bench/$preset
if [ ! -f "$model/model.safetensors" ]; then
  build/tuner init-model "$preset" "$model" --seed 0
fi
echo "== tuner bench ($preset, T=$seq, $threads threads, $steps steps)"
ours=$(build/tuner bench "$model" --seq "$seq" --steps "$steps" --threads "$threads" --json)
echo "$ours"
echo "== PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)') (same shape and threads)"
theirs=$(/usr/bin/python3 bench/bench_torch.py --config "$model/config.json" --seq "$seq" --steps "$steps" \
         --threads "$threads" --json)
echo "$theirs"
/usr/bin/python3 - "$ours" "$theirs" <<'PY'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
r = ours["tokens_per_s"] / theirs["tokens_per_s"]
print(f"tuner {ours['tokens_per_s']:.1f} tokens/s (MFU {100*ours['mfu']:.1f}% of {ours['peak_gflops']:.0f} GFLOP/s, "
      f"peak RSS {ours['peak_rss_mb']:.0f} MiB, plan {ours['plan_mb']:.0f} MiB + scratch {ours['scratch_mb']:.0f} MiB)")
print(f"torch {theirs['tokens_per_s']:.1f} tokens/s")
print(f"ratio tuner/torch: {r:.2f}x")
PY
