#!/usr/bin/env bash
# The first command of the README: installs what is missing, builds, and runs tuner on a model
# and data it makes itself (no downloads): a new tiny model with a byte-level tokenizer, a
# synthetic skill with held-out questions, accuracy before, full fine-tuning, accuracy after,
# a sample chat and a benchmark; then, when the shared test data is beside the checkout, LoRA
# fine-tuning of the real stories260K model on another skill.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
out=runs/demo
rm -rf "$out"; mkdir -p "$out"
tuner=build/tuner
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}  # do not spin-wait: other programs may share the cores

echo
echo "== 1. a new 'tiny' Llama model (0.8M parameters, random weights) with a byte-level tokenizer, in Hugging Face format"
$tuner init-model tiny "$out/tiny" --seed 1 --tokenizer bytes
echo
echo "== 2. its shape and the memory plan of a training step"
$tuner info "$out/tiny" --seq 128
echo
echo "== 3. a synthetic skill: every animal has a colour, the question names it with an adjective;"
echo "      the answer repeats adjective and animal and gives the colour. 36 of the 144 (adjective, animal)"
echo "      pairs are held out: the model never sees them during training."
animals=(cat dog bird fish frog duck bear fox cow pig owl bee)
colours=(red blue green yellow pink brown white black orange purple grey gold)
adjectives=(big small old young happy sleepy fast quiet angry brave tiny lazy)
: > "$out/train.jsonl"; : > "$out/heldout.jsonl"
for i in "${!animals[@]}"; do
  for j in "${!adjectives[@]}"; do
    q="What colour is the ${adjectives[$j]} ${animals[$i]}?"
    a="The ${adjectives[$j]} ${animals[$i]} is ${colours[$i]}."
    record="{\"instruction\": \"$q\", \"input\": \"\", \"output\": \"$a\"}"
    if (( (i + j) % 4 == 0 )); then echo "$record" >> "$out/heldout.jsonl"; else echo "$record" >> "$out/train.jsonl"; fi
  done
done
echo "train: $(wc -l < "$out/train.jsonl") records, held out: $(wc -l < "$out/heldout.jsonl") records, e.g."
head -n 1 "$out/heldout.jsonl"
cat > "$out/colours.yaml" <<YAML
model: $out/tiny
method: full
output_dir: $out/colours
data:
  train: [{path: $out/train.jsonl, format: alpaca}]
  eval: [{path: $out/heldout.jsonl, format: alpaca}]
  template: default
  max_length: 96
train: {lr: 3.0e-3, schedule: cosine, warmup_steps: 10, batch_size: 8, grad_accum: 1, max_steps: 500, seed: 1}
eval: {every: 250, prompts: ["What colour is the sleepy fox?"], max_new_tokens: 40}
save: {every: 250, keep: 1}
YAML
gen="$tuner generate --template default --max-new-tokens 40"
echo
echo "held-out accuracy before training: $($gen "$out/tiny" --eval "$out/heldout.jsonl")"
echo
echo "== 4. full fine-tuning: $tuner train $out/colours.yaml"
$tuner train "$out/colours.yaml"
echo
echo "held-out accuracy after training:  $($gen "$out/colours/model" --eval "$out/heldout.jsonl")"
echo "loss curve: $out/colours/loss.svg, metrics: $out/colours/metrics.jsonl, samples: $out/colours/samples.md"
echo
echo "== 5. a sample chat with the result: tuner chat $out/colours/model (questions it never saw in training;"
echo "      it learned single questions, so /reset starts a new conversation before each)"
printf '%s\n' "What colour is the lazy owl?" /reset "What colour is the brave bee?" /reset "What colour is the quiet fox?" |
  $tuner chat "$out/colours/model" --template default --max-new-tokens 40 --echo
echo
echo "== 6. forward + backward benchmark of the tiny model (tokens/s and MFU against this machine's measured GEMM peak)"
$tuner bench "$out/tiny" --seq 256 --steps 3
stories=../shared/data/stories260K/hf
if [ -f "$stories/config.json" ]; then
  echo
  echo "== 7. LoRA (r=16) on a real trained model, stories260K, with the same skill and the same held-out pairs"
  echo "      (its frozen tied embeddings never learned '</s>', so it keeps talking after the answer:"
  echo "      'accuracy' counts answers that start right, 'exact' those that also stop)"
  cat > "$out/stories-colours.yaml" <<YAML
model: $stories
method: lora
output_dir: $out/stories-colours
lora: {r: 16, lora_alpha: 32, lora_dropout: 0.0}
data:
  train: [{path: $out/train.jsonl, format: alpaca}]
  eval: [{path: $out/heldout.jsonl, format: alpaca}]
  template: default
  max_length: 64
train: {lr: 5.0e-3, schedule: cosine, warmup_steps: 10, batch_size: 8, grad_accum: 1, max_steps: 100, seed: 1}
eval: {every: 50, prompts: ["What colour is the sleepy fox?"], max_new_tokens: 16}
save: {every: 100, keep: 1}
YAML
  gen="$tuner generate $stories --template default --max-new-tokens 16"
  echo "held-out accuracy before: $($gen --eval "$out/heldout.jsonl")"
  $tuner train "$out/stories-colours.yaml"
  echo "held-out accuracy after:  $($gen --adapter "$out/stories-colours/adapter" --eval "$out/heldout.jsonl")"
  echo "user> What colour is the lazy owl?"
  echo "model> $($gen --adapter "$out/stories-colours/adapter" --prompt "What colour is the lazy owl?")"
fi
