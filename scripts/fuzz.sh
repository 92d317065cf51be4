#!/usr/bin/env bash
# Builds the libFuzzer targets with clang in build-fuzz/ and runs each for FUZZ_SECONDS
# (default 60) from a small generated seed corpus. Exits non-zero on a finding; the crashing
# input is left in build-fuzz/artifacts/ (replay: build-fuzz/fuzz/TARGET ARTIFACT).
#   FUZZ_SECONDS=10 scripts/fuzz.sh
set -euo pipefail

cd "$(dirname "$0")/.."
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
BUILD=build-fuzz
JOBS=${FUZZ_JOBS:-$(nproc)}

generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
if [[ ! -f $BUILD/CMakeCache.txt ]]; then
    CC=clang CXX=clang++ cmake -S . -B "$BUILD" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DTUNER_FUZZ=ON -DTUNER_TESTS=OFF -DTUNER_CUDA=OFF
fi
targets=(fuzz_safetensors)
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

dict=$BUILD/seeds/safetensors.dict
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

status=0
for t in "${targets[@]}"; do
    echo "== $t: ${FUZZ_SECONDS}s"
    # libFuzzer prints a line per new coverage point: keep that in a log, show the summary.
    log=$BUILD/$t.log
    "$BUILD/fuzz/$t" "$BUILD/corpus/$t" "$seeds" -dict="$dict" -max_total_time="$FUZZ_SECONDS" \
        -artifact_prefix="$BUILD/artifacts/$t-" -print_final_stats=1 >"$log" 2>&1 || status=$?
    if [[ $status -ne 0 ]]; then
        tail -n 60 "$log" >&2
        echo "fuzz.sh: $t found a problem (exit $status); see $BUILD/artifacts/ and $log" >&2
        exit "$status"
    fi
    grep -E "^(Done|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)" "$log" || tail -n 5 "$log"
done
echo "fuzz.sh: no findings"
