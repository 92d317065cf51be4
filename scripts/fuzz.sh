#!/usr/bin/env bash
# Builds the libFuzzer targets with clang in build-fuzz/ and runs each for FUZZ_SECONDS
# (default 60) from a small generated seed corpus. Exits non-zero on a finding; the crashing
# input is left in build-fuzz/artifacts/ (replay: build-fuzz/fuzz/TARGET ARTIFACT).
#   FUZZ_SECONDS=10 scripts/fuzz.sh
#   FUZZ_TARGETS=fuzz_gguf FUZZ_BUILD=/tmp/build-fuzz scripts/fuzz.sh   # one target, another folder
set -euo pipefail

cd "$(dirname "$0")/.."
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
BUILD=${FUZZ_BUILD:-build-fuzz}
JOBS=${FUZZ_JOBS:-$(nproc)}

generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
if [[ ! -f $BUILD/CMakeCache.txt ]]; then
    CC=clang CXX=clang++ cmake -S . -B "$BUILD" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DTUNER_FUZZ=ON -DTUNER_TESTS=OFF -DTUNER_CUDA=OFF
fi
read -r -a targets <<<"${FUZZ_TARGETS:-fuzz_safetensors fuzz_tokenizer_json fuzz_jsonl fuzz_gguf}"
cmake --build "$BUILD" --target "${targets[@]}" -j "$JOBS"

# 8-byte little-endian integer as printf escapes.
le64() {
    local n=$1 out="" i
    for i in 0 1 2 3 4 5 6 7; do
        out+=$(printf '\\x%02x' $(((n >> (8 * i)) & 255)))
    done
    printf '%s' "$out"
}
# seed FILE DATA_SIZE JSON: one fuzz_safetensors input (data size, then header text).
seed() {
    printf "$(le64 "$2")" >"$1"
    printf '%s' "$3" >>"$1"
}

seeds=$BUILD/seeds/fuzz_safetensors
rm -rf "$seeds"
mkdir -p "$seeds" "$BUILD/corpus/fuzz_safetensors" "$BUILD/artifacts"
seed "$seeds/tiny" 24 '{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}'
seed "$seeds/two" 40 '{"a":{"dtype":"BF16","shape":[4],"data_offsets":[0,8]},"b":{"dtype":"I32","shape":[2,4],"data_offsets":[8,40]}}    '
seed "$seeds/empty" 0 '{}'
seed "$seeds/zero" 8 '{"z":{"dtype":"F16","shape":[0,7],"data_offsets":[4,4]},"x":{"dtype":"U8","shape":[],"data_offsets":[0,1]}}'
seed "$seeds/overlap" 16 '{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}'
seed "$seeds/dup" 8 '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'
seed "$seeds/big" 16 '{"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,18446744073709551615]}}'

dict=$BUILD/seeds/fuzz_safetensors.dict
cat >"$dict" <<'DICT'
"\"dtype\""
"\"shape\""
"\"data_offsets\""
"\"__metadata__\""
"\"format\""
"\"F32\""
"\"F16\""
"\"BF16\""
"\"F64\""
"\"I32\""
"\"I64\""
"\"U8\""
"\"I8\""
"\"BOOL\""
"18446744073709551615"
"9223372036854775807"
"-1"
"null"
"true"
"[]"
"{}"
DICT

# fuzz_tokenizer_json: small tokenizer.json files covering the byte-level and SentencePiece
# styles, plus the real stories260K one when the shared data is there.
tokseeds=$BUILD/seeds/fuzz_tokenizer_json
rm -rf "$tokseeds"
mkdir -p "$tokseeds" "$BUILD/corpus/fuzz_tokenizer_json"
cat >"$tokseeds/bytelevel.json" <<'JSON'
{"version":"1.0","added_tokens":[{"id":9,"content":"<|endoftext|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],
"normalizer":{"type":"NFC"},
"pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"(?i:'s|'t)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},"behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":false}]},
"post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<|endoftext|>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],"special_tokens":{"<|endoftext|>":{"id":"<|endoftext|>","ids":[9],"tokens":["<|endoftext|>"]}}},
"decoder":{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true},
"model":{"type":"BPE","dropout":null,"unk_token":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":true,
"vocab":{"H":0,"e":1,"l":2,"o":3,"Ġ":4,"He":5,"ll":6,"Hell":7,"Hello":8,"w":10,"Ġw":11},"merges":["H e","l l","He ll","Hell o",["Ġ","w"]]}}
JSON
cat >"$tokseeds/sentencepiece.json" <<'JSON'
{"version":"1.0","added_tokens":[{"id":0,"content":"<unk>","special":true,"normalized":false},{"id":1,"content":"<s>","special":true,"normalized":false},{"id":2,"content":"</s>","special":false,"normalized":false,"rstrip":true}],
"normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},{"type":"Replace","pattern":{"String":" "},"content":"▁"}]},
"pre_tokenizer":null,
"post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],"special_tokens":{"<s>":{"id":"<s>","ids":[1],"tokens":["<s>"]}}},
"decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]},
"model":{"type":"BPE","unk_token":"<unk>","fuse_unk":true,"byte_fallback":true,
"vocab":{"<unk>":0,"<s>":1,"</s>":2,"<0x0A>":3,"<0xE4>":4,"<0xB8>":5,"<0x96>":6,"▁":7,"a":8,"b":9,"▁a":10,"ab":11,"▁ab":12,"▁▁":13},"merges":["▁ a","a b","▁a b","▁ ▁"]}}
JSON
cat >"$tokseeds/metaspace.json" <<'JSON'
{"added_tokens":[{"id":5,"content":"<mask>","single_word":true,"lstrip":true,"rstrip":true,"normalized":true,"special":true}],
"normalizer":{"type":"Sequence","normalizers":[{"type":"NFKC"},{"type":"Lowercase"},{"type":"Strip","strip_left":true,"strip_right":false}]},
"pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Digits","individual_digits":true},{"type":"Metaspace","replacement":"▁","prepend_scheme":"first","split":true},{"type":"Split","pattern":{"String":"x"},"behavior":"MergedWithNext","invert":true}]},
"post_processor":{"type":"RobertaProcessing","sep":["</s>",4],"cls":["<s>",3]},
"decoder":{"type":"Metaspace","replacement":"▁","add_prefix_space":true},
"model":{"type":"BPE","unk_token":"<unk>","continuing_subword_prefix":"##","end_of_word_suffix":"</w>",
"vocab":{"<unk>":0,"▁":1,"a":2,"<s>":3,"</s>":4,"##a":6,"a</w>":7,"##a</w>":8,"aa</w>":9},"merges":[["a","##a</w>"]]}}
JSON
if [[ -f ../shared/data/stories260K/hf/tokenizer.json ]]; then
    cp ../shared/data/stories260K/hf/tokenizer.json "$tokseeds/stories260k.json"
fi
cat >"$tokseeds.dict" <<'DICT'
"\"type\""
"\"BPE\""
"\"Unigram\""
"\"vocab\""
"\"merges\""
"\"added_tokens\""
"\"content\""
"\"special\""
"\"normalized\""
"\"lstrip\""
"\"rstrip\""
"\"single_word\""
"\"normalizer\""
"\"normalizers\""
"\"pre_tokenizer\""
"\"pretokenizers\""
"\"post_processor\""
"\"processors\""
"\"decoder\""
"\"decoders\""
"\"Sequence\""
"\"Split\""
"\"Regex\""
"\"String\""
"\"pattern\""
"\"behavior\""
"\"Isolated\""
"\"Removed\""
"\"MergedWithPrevious\""
"\"MergedWithNext\""
"\"Contiguous\""
"\"invert\""
"\"ByteLevel\""
"\"use_regex\""
"\"add_prefix_space\""
"\"Metaspace\""
"\"replacement\""
"\"prepend_scheme\""
"\"first\""
"\"never\""
"\"ByteFallback\""
"\"byte_fallback\""
"\"Fuse\""
"\"Strip\""
"\"Replace\""
"\"Prepend\""
"\"NFC\""
"\"NFKD\""
"\"Lowercase\""
"\"TemplateProcessing\""
"\"SpecialToken\""
"\"special_tokens\""
"\"ids\""
"\"unk_token\""
"\"fuse_unk\""
"\"ignore_merges\""
"\"continuing_subword_prefix\""
"\"end_of_word_suffix\""
"\"<0x41>\""
"\"\\u2581\""
"\"\\u0120\""
"\\p{L}+"
"(?!\\S)"
"null"
"true"
"[]"
"{}"
DICT

# fuzz_jsonl: option bytes (see fuzz/fuzz_jsonl.cpp) then a small dataset file of each format.
jseeds=$BUILD/seeds/fuzz_jsonl
rm -rf "$jseeds"
mkdir -p "$jseeds" "$BUILD/corpus/fuzz_jsonl"
jseed() { printf "$2" >"$jseeds/$1"; printf '%s' "$3" >>"$jseeds/$1"; }
jseed alpaca '\x00\x00' '{"instruction":"a","input":"b","output":"c","system":"s","history":[["q","r"]]}
{"instruction":"x","output":"y"}
'
jseed openai '\x08\x04' '{"messages":[{"role":"assistant","content":"skip"},{"role":"system","content":"s"},{"role":"user","content":"u"},{"role":"user","content":"v"},{"role":"assistant","content":"a","loss":false},{"role":"tool","content":[{"type":"text","text":"t"}]},{"role":"assistant","content":null,"tool_calls":[{"function":{"name":"f","arguments":"{}"}}]}],"tools":[{"name":"f"}]}
'
jseed sharegpt '\x2d\x00' '[
  {"conversations":[{"from":"human","value":"h"},{"from":"function_call","value":"{}"},{"from":"observation","value":"o"},{"from":"gpt","value":"g"}],"system":"s","tools":"[]"},
  {"conversations":[]},
  {"conversations":[{"from":"gpt","value":"x"}]}
]'
jseed text '\x10\x00' '{"text":"hello \u00e9 \ud83d\ude00"}
{"text":""}
'
jseed plain '\x42\x00' 'para one
line two

para three
'
jseed lines '\xc2\x00' 'a
b

c'
jseed columns '\x00\x03' '{"i":"q","o":"a"}
{"m":[{"r":"user","x":"q"},{"r":"bot","x":"a"}]}
'
jseed bad '\x20\x00' '{"text":"a"}
not json
{"text":5}
{"messages":"x"}
[1, 2]
{"text":"b"}
'
jseed badlist '\x21\x00' '[{"text":"a"}, {"text" 1}, {"instruction":"i"}, 3, {"text":"c"}]'
cat >"$jseeds.dict" <<'DICT'
"\"instruction\""
"\"input\""
"\"output\""
"\"system\""
"\"history\""
"\"messages\""
"\"role\""
"\"content\""
"\"loss\""
"\"user\""
"\"assistant\""
"\"tool\""
"\"tool_calls\""
"\"function\""
"\"conversations\""
"\"from\""
"\"value\""
"\"human\""
"\"gpt\""
"\"function_call\""
"\"observation\""
"\"tools\""
"\"text\""
"\"type\""
"\\u0000"
"\\ud800"
"\\udc00"
"\xef\xbb\xbf"
"\xc3\xa9"
"\xff"
"null"
"true"
"false"
"[]"
"{}"
DICT

# fuzz_gguf: small GGUF files written field by field (little-endian), plus the first 4 KB of
# two shared vocabulary files when the shared data is there.
gseeds=$BUILD/seeds/fuzz_gguf
rm -rf "$gseeds"
mkdir -p "$gseeds" "$BUILD/corpus/fuzz_gguf"
export LC_ALL=C  # ${#s} below counts bytes
le32() {
    local n=$1 out="" i
    for i in 0 1 2 3; do
        out+=$(printf '\\x%02x' $(((n >> (8 * i)) & 255)))
    done
    printf '%s' "$out"
}
gs() { printf "$(le64 ${#1})"; printf '%s' "$1"; }  # GGUF string: u64 length + bytes
ghead() { printf 'GGUF'; printf "$(le32 3)$(le64 "$1")$(le64 "$2")"; }  # tensors, kvs
kv_str() { gs "$1"; printf "$(le32 8)"; gs "$2"; }
kv_u32() { gs "$1"; printf "$(le32 4)$(le32 "$2")"; }
kv_bool() { gs "$1"; printf "$(le32 7)\\x0$2"; }
kv_strs() { local k=$1; shift; gs "$k"; printf "$(le32 9)$(le32 8)$(le64 $#)"; for x in "$@"; do gs "$x"; done; }
kv_i32s() { local k=$1; shift; gs "$k"; printf "$(le32 9)$(le32 5)$(le64 $#)"; for x in "$@"; do printf "$(le32 "$x")"; done; }
kv_f32s() { local k=$1; shift; gs "$k"; printf "$(le32 9)$(le32 6)$(le64 $#)"; for x in "$@"; do printf "$(le32 "$x")"; done; }
pad32() { local n; n=$(stat -c %s "$1"); while ((n % 32)); do printf '\x00' >>"$1"; n=$((n + 1)); done; }
{
    ghead 2 2
    kv_str general.architecture llama
    kv_u32 general.alignment 32
    gs w; printf "$(le32 2)$(le64 4)$(le64 2)$(le32 0)$(le64 0)"    # F32 (2, 4) at 0
    gs q; printf "$(le32 1)$(le64 32)$(le32 8)$(le64 32)"           # Q8_0 (32) at 32
} >"$gseeds/tensors.gguf"
pad32 "$gseeds/tensors.gguf"
head -c 66 /dev/zero >>"$gseeds/tensors.gguf"
G=$'\xc4\xa0'  # GPT-2's byte-level space
{
    ghead 0 7
    kv_str tokenizer.ggml.model gpt2
    kv_str tokenizer.ggml.pre gpt-2
    kv_strs tokenizer.ggml.tokens a b ab "$G" "${G}ab" '<eos>'
    kv_i32s tokenizer.ggml.token_type 1 1 1 1 1 3
    kv_strs tokenizer.ggml.merges 'a b' "$G ab"
    kv_u32 tokenizer.ggml.eos_token_id 5
    kv_bool tokenizer.ggml.add_eos_token 1
} >"$gseeds/gpt2-vocab.gguf"
S=$'\xe2\x96\x81'  # SentencePiece's space
{
    ghead 0 5
    kv_str tokenizer.ggml.model llama
    kv_strs tokenizer.ggml.tokens '<unk>' '<s>' '</s>' '<0x41>' "$S" a b "${S}a" ab "${S}ab"
    kv_f32s tokenizer.ggml.scores 0 0 0 0 -1082130432 -1073741824 -1069547520 -1065353216 -1063256064 -1061158912
    kv_i32s tokenizer.ggml.token_type 2 3 3 6 1 1 1 1 1 1
    kv_u32 tokenizer.ggml.bos_token_id 1
} >"$gseeds/llama-vocab.gguf"
for v in gpt-2 llama-spm; do
    f=../shared/data/gguf/vocab/ggml-vocab-$v.gguf
    if [[ -f $f ]]; then head -c 4096 "$f" >"$gseeds/head-$v.gguf"; fi
done
cat >"$gseeds.dict" <<'DICT'
"GGUF"
"general.architecture"
"general.alignment"
"tokenizer.ggml.model"
"tokenizer.ggml.pre"
"tokenizer.ggml.tokens"
"tokenizer.ggml.scores"
"tokenizer.ggml.token_type"
"tokenizer.ggml.merges"
"tokenizer.ggml.bos_token_id"
"tokenizer.ggml.add_bos_token"
"gpt2"
"llama"
"llama-bpe"
"qwen2"
"deepseek-llm"
"deepseek-coder"
"falcon"
"starcoder"
"<0x41>"
"\xe2\x96\x81"
"\xc4\xa0"
"\x03\x00\x00\x00"
"\x08\x00\x00\x00"
"\x09\x00\x00\x00"
"\x0c\x00\x00\x00"
"\x1e\x00\x00\x00"
"\x00\x01\x00\x00\x00\x00\x00\x00"
"\xff\xff\xff\xff\xff\xff\xff\xff"
"\xff\xff\xff\xff\xff\xff\xff\x7f"
DICT

status=0
for t in "${targets[@]}"; do
    echo "== $t: ${FUZZ_SECONDS}s"
    # libFuzzer prints a line per new coverage point: keep that in a log, show the summary.
    log=$BUILD/$t.log
    "$BUILD/fuzz/$t" "$BUILD/corpus/$t" "$BUILD/seeds/$t" -dict="$BUILD/seeds/$t.dict" -max_total_time="$FUZZ_SECONDS" \
        -artifact_prefix="$BUILD/artifacts/$t-" -print_final_stats=1 >"$log" 2>&1 || status=$?
    if [[ $status -ne 0 ]]; then
        tail -n 60 "$log" >&2
        echo "fuzz.sh: $t found a problem (exit $status); see $BUILD/artifacts/ and $log" >&2
        exit "$status"
    fi
    grep -E "^(Done|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)" "$log" || tail -n 5 "$log"
done
echo "fuzz.sh: no findings"
