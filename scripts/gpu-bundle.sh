#!/usr/bin/env bash
# Builds tuner with CUDA here and packs what a lent GPU machine needs to run
# scripts/gpu-check.sh without building there: that machine's image has the CUDA toolkit and a
# Python with torch, transformers and peft, but none of the Debian packages our build links
# (oneDNN, OpenBLAS, yaml-cpp, sentencepiece, ICU, PCRE2, fmt, GoogleTest), and nothing can be
# installed there. So:
#   - the binaries gpu-check runs (tuner and the CUDA, model and golden tests) are built here for
#     sm_90 with an RPATH of $ORIGIN/lib (old-style DT_RPATH, which also serves the libraries'
#     own dependencies) and the CUDA toolkit's library folders;
#   - every shared library they load that is not glibc or CUDA's own is copied into lib/;
#   - the test data they read (stories260K, the text file, INDEX.md) goes into data/.
# Result: gpu-bundle.tar.xz in the checkout (git-ignored; ~26 MB, under the device tool's 64 MiB
# carry limit). On the GPU machine, from the checkout:
#   GPU_CHECK_BUNDLE=gpu-bundle.tar.xz scripts/gpu-check.sh
# which unpacks it into build-gpu/ and skips the build (docs/gpu-check.md).
#
#   scripts/gpu-bundle.sh               # CUDA arch 90 (H100/H200); CUDA_ARCH=80 for an A100
#   DATA=path/to/shared/data scripts/gpu-bundle.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build-gpu-bundle}
ARCH=${CUDA_ARCH:-90}
DATA=${DATA:-../shared/data}
OUT=${OUT:-gpu-bundle.tar.xz}
TARGETS=(tuner test_cuda_ops test_cuda_attention_mma test_cuda_model test_golden test_train_golden test_cuda_bench test_cuda_stubs)

[ -x /usr/local/cuda/bin/nvcc ] || command -v nvcc >/dev/null || { echo "gpu-bundle: nvcc not found"; exit 1; }
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
echo "== configure $BUILD (CUDA on, sm_$ARCH, Release)"
mkdir -p "$BUILD"
cmake -S . -B "$BUILD" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DTUNER_CUDA=ON -DTUNER_CUDA_EMU=OFF \
  -DCMAKE_CUDA_ARCHITECTURES="$ARCH" \
  -DCMAKE_EXE_LINKER_FLAGS="-Wl,--disable-new-dtags" \
  -DCMAKE_BUILD_RPATH='$ORIGIN/lib;$ORIGIN/../lib;/usr/local/cuda/lib64;/usr/local/cuda/lib' >"$BUILD/configure.log"
grep -q "tuner: CUDA backend ON" "$BUILD/configure.log" || { echo "gpu-bundle: CMake did not enable CUDA"; exit 1; }
echo "== build ${TARGETS[*]}"
cmake --build "$BUILD" -j "$(nproc)" --target "${TARGETS[@]}"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/build-gpu"
mkdir -p "$root/tests" "$root/lib" "$root/data"
cp "$BUILD/tuner" "$root/"
for t in "${TARGETS[@]}"; do
  [ "$t" = tuner ] || cp "$BUILD/tests/$t" "$root/tests/"
done

# Shared libraries: everything ldd resolves except glibc's own libraries, the dynamic loader and
# CUDA's (the GPU image has those, matching its driver).
declare -A seen=()
for bin in "$root/tuner" "$root"/tests/*; do
  while read -r path; do
    [ -n "$path" ] && [ -f "$path" ] || continue
    name=$(basename "$path")
    case "$name" in
      libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|ld-linux*|libcuda.so*|libcudart.so*|libcublas*) continue ;;
    esac
    [ -n "${seen[$name]:-}" ] && continue
    seen[$name]=1
    cp -L "$path" "$root/lib/$name"
  done < <(ldd "$bin" | awk '$2 == "=>" {print $3}')
done
echo "== libraries: ${!seen[*]}"

if [ -f "$DATA/INDEX.md" ]; then
  cp "$DATA/INDEX.md" "$root/data/"
  mkdir -p "$root/data/stories260K" "$root/data/text"
  cp -r "$DATA/stories260K/hf" "$root/data/stories260K/"
  cp "$DATA/text/input.txt" "$root/data/text/"
else
  echo "gpu-bundle: no test data at $DATA (set DATA=...): the data tests will skip on the GPU"
fi
echo "built $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(date -u +%FT%TZ) sm_$ARCH" >"$root/BUNDLE"

tar -C "$stage" -cJf "$OUT.tmp" build-gpu
mv "$OUT.tmp" "$OUT"
echo "wrote $OUT ($(du -h "$OUT" | cut -f1)): carry it to the GPU machine and run"
echo "  GPU_CHECK_BUNDLE=$OUT scripts/gpu-check.sh"
