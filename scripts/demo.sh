#!/usr/bin/env bash
# The first command of the README: installs what is missing, builds, and runs tuner on a model
# and data it makes itself (no downloads). Until training lands it shows: a random model written
# in Hugging Face format, its memory plan, its perplexity on a token file, and a fwd+bwd benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
out=runs/demo
mkdir -p "$out"
echo
echo "== 1. a random 'tiny' Llama model in Hugging Face format"
build/tuner init-model tiny "$out/tiny" --seed 1
echo
echo "== 2. its shape and the memory plan of a training step"
build/tuner info "$out/tiny" --seq 256
echo
echo "== 3. perplexity on 4096 random token ids (a random model is near the vocabulary size, 512)"
awk 'BEGIN { srand(7); for (i = 0; i < 4096; i++) printf "%d ", int(rand() * 512); print "" }' > "$out/ids.txt"
build/tuner perplexity "$out/tiny" --ids "$out/ids.txt" --ctx 256
echo
echo "== 4. forward + backward benchmark (tokens/s and MFU against this machine's measured GEMM peak)"
build/tuner bench "$out/tiny" --seq 256 --steps 3
stories=../shared/data/stories260K/hf
if [ -f "$stories/config.json" ]; then
  echo
  echo "== 5. a real trained model (stories260K): greedy decoding from BOS, as token ids"
  build/tuner generate "$stories" --max-new-tokens 40
fi
