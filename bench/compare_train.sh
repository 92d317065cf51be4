#!/usr/bin/env bash
# Training throughput side by side: tuner and PyTorch (Debian python3-torch, bench/bench_torch.py),
# full fine-tuning and LoRA, same model shape, sequence length and thread count, in one run so
# machine noise hits all four alike. A step is forward + backward + gradient clipping + AdamW.
#   bench/compare_train.sh [PRESET] [SEQ] [THREADS] [STEPS] [LORA_R]   (default: smol-135m 512 2 3 64)
# Prints tokens/s per wall second and per CPU second (run with OMP_WAIT_POLICY=passive on a
# shared machine: the CPU-second figure is the stable one), tuner's MFU against the measured GEMM
# peak, and the ratios tuner/torch and LoRA/full.
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-smol-135m}
seq=${2:-512}
threads=${3:-2}
steps=${4:-3}
rank=${5:-64}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
model=runs/bench/$preset
if [ ! -f "$model/model.safetensors" ]; then
  build/tuner init-model "$preset" "$model" --seed 0
fi
common=(--seq "$seq" --steps "$steps" --threads "$threads")
lora=(--lora-r "$rank" --lora-alpha 16 --lora-dropout 0.1)
echo "== $preset, T=$seq, $threads threads, $steps timed steps (+1 warm-up), LoRA r=$rank all-linear" >&2
t_full=$(build/tuner bench "$model" "${common[@]}" --optimizer --json)
echo "tuner full: $t_full" >&2
p_full=$(/usr/bin/python3 bench/bench_torch.py --config "$model/config.json" "${common[@]}" --optimizer --json)
echo "torch full: $p_full" >&2
t_lora=$(build/tuner bench "$model" "${common[@]}" "${lora[@]}" --optimizer --json)
echo "tuner lora: $t_lora" >&2
p_lora=$(/usr/bin/python3 bench/bench_torch.py --config "$model/config.json" "${common[@]}" "${lora[@]}" --optimizer --json)
echo "torch lora: $p_lora" >&2
/usr/bin/python3 - "$t_full" "$p_full" "$t_lora" "$p_lora" <<'PY'
import json, sys
tf, pf, tl, pl = (json.loads(a) for a in sys.argv[1:])
print(f"{'':12} {'tokens/s':>10} {'tok/CPU-s':>10} {'MFU':>7} {'peak RSS':>10}   "
      f"(tuner MFU vs measured f32 GEMM peak {tf['peak_gflops']:.0f} GFLOP/s)")
for name, t, p in (("full", tf, pf), ("lora", tl, pl)):
    print(f"tuner {name:6} {t['tokens_per_s']:10.1f} {t['tokens_per_cpu_s']:10.1f} {100*t['mfu']:6.1f}% "
          f"{t['peak_rss_mb']:8.0f} MiB   {t['flops_formula']}")
    print(f"torch {name:6} {p['tokens_per_s']:10.1f} {p['tokens_per_cpu_s']:10.1f}")
    print(f"  tuner/torch {name}: {t['tokens_per_s'] / p['tokens_per_s']:.2f}x per wall second, "
          f"{t['tokens_per_cpu_s'] / p['tokens_per_cpu_s']:.2f}x per CPU second")
print(f"LoRA/full tokens/s: tuner {tl['tokens_per_s'] / tf['tokens_per_s']:.2f}x, "
      f"torch {pl['tokens_per_s'] / pf['tokens_per_s']:.2f}x; tuner per CPU-second "
      f"{tl['tokens_per_cpu_s'] / tf['tokens_per_cpu_s']:.2f}x")
PY
