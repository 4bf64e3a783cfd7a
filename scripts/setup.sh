#!/usr/bin/env bash
# Installs every Debian package arclight needs to build, test and run its demo. Idempotent: when all
# packages are present it only checks (no apt-get update, a second or so).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libopenblas-dev          # GEMM on the CPU (cblas)
  zlib1g-dev               # gzip-compressed IDX files
  libstb-dev               # stb_image / stb_image_write (compiled in our own wrapper)
  libgtest-dev googletest  # tests
  libbenchmark-dev libfaiss-dev  # benchmarks
  libcli11-dev nlohmann-json3-dev  # example apps' CLI and JSON (never in the core headers)
  dataset-fashion-mnist    # the default data set
  clang libclang-rt-dev    # libFuzzer targets
  chromium                 # headless rendering checks of the generated HTML pages (report, ArcFace geometry)
  python3                  # tests/cuda_emu rewrites the CUDA kernels' launches for the CPU emulation
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#PACKAGES[@]} packages present"
fi
