#!/usr/bin/env bash
# Tokenizer throughput on one thread (MB/s) for every shipped tokenizer on tiny Shakespeare
# (../shared/data/text/input.txt, 1.1 MB), encoded as one text without special tokens.
#   bench/bench_tokenizer.sh [TUNER_BINARY] [SECONDS]     (default: build/tuner 2)
set -euo pipefail
cd "$(dirname "$0")/.."
tuner=${1:-build/tuner}
seconds=${2:-2}
data=../shared/data
if [[ ! -f $data/text/input.txt ]]; then
    echo "bench_tokenizer.sh: $data is not beside this checkout" >&2
    exit 1
fi
for t in gpt2 llama3-hf qwen2.5-hf phi3-mini-hf-llama2vocab llama2-sentencepiece; do
    echo "== $t"
    "$tuner" tokenize "$data/tokenizers/$t" --file "$data/text/input.txt" --no-special --bench --seconds "$seconds"
done
