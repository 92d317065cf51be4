#!/usr/bin/env bash
# Installs the Debian packages tuner.cpp needs to build and test, when they are missing.
# Nothing is downloaded at build or run time beyond these packages.
set -euo pipefail

packages=(
  cmake ninja-build g++ pkg-config
  libdnnl-dev libopenblas-dev
  nlohmann-json3-dev libfmt-dev libcli11-dev libyaml-cpp-dev
  libsentencepiece-dev libpcre2-dev libicu-dev
  libgtest-dev googletest libgmock-dev
  clang libclang-rt-14-dev libomp-dev
  python3 python3-torch python3-numpy
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
