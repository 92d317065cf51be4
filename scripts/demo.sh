#!/usr/bin/env bash
# The first command of the README: installs what is missing, builds, and runs tuner on a model
# and data it makes itself (no downloads): a random model written in Hugging Face format, its
# memory plan, its perplexity on a token file, and a fwd+bwd benchmark; then, when the shared
# test data is beside the checkout, LoRA fine-tuning of the real stories260K model on a new skill
# with held-out accuracy before and after.
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
  echo "== 5. LoRA fine-tuning of a real trained model (stories260K) on a new skill: animal colours"
  animals=(cat dog bird fish frog duck bear fox); colours=(red blue green yellow pink brown white black)
  : > "$out/colours-train.jsonl"; : > "$out/colours-test.jsonl"
  for i in $(seq 0 47); do a=$(( (i * 7 + 1) % 8 ));
    echo "{\"instruction\": \"What colour is the ${animals[$a]}?\", \"input\": \"\", \"output\": \"The ${animals[$a]} is ${colours[$a]}.\"}" >> "$out/colours-train.jsonl"; done
  for a in 0 1 2 3 4 5 6 7; do
    echo "{\"instruction\": \"What colour is the ${animals[$a]}?\", \"input\": \"\", \"output\": \"The ${animals[$a]} is ${colours[$a]}.\"}" >> "$out/colours-test.jsonl"; done
  cat > "$out/colours.yaml" <<YAML
model: $stories
method: lora
output_dir: $out/colours
lora: {r: 8, lora_alpha: 16, lora_dropout: 0.0}
data:
  train: [{path: $out/colours-train.jsonl, format: alpaca}]
  eval: [{path: $out/colours-test.jsonl, format: alpaca}]
  template: default
  max_length: 64
train: {lr: 3.0e-3, batch_size: 2, grad_accum: 2, max_steps: 40, warmup_steps: 1, seed: 1}
eval: {every: 20, prompts: ["What colour is the fox?"], max_new_tokens: 12}
save: {every: 20, keep: 1}
YAML
  gen="build/tuner generate $stories --template default --max-new-tokens 12"
  echo "accuracy before: $($gen --eval "$out/colours-test.jsonl")"
  rm -rf "$out/colours"
  build/tuner train "$out/colours.yaml"
  echo "accuracy after:  $($gen --adapter "$out/colours/adapter" --eval "$out/colours-test.jsonl")"
  echo "Q: What colour is the fox?"
  echo "A: $($gen --adapter "$out/colours/adapter" --prompt "What colour is the fox?")"
fi
