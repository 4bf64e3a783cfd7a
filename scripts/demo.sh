#!/usr/bin/env bash
# The README's main job: set-up, build, then the product-retrieval demo on Fashion-MNIST.
# Usage: scripts/demo.sh [extra demo flags, e.g. --quick]   (writes runs/demo/metrics.json and report.html)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${ARCLIGHT_CMAKE_ARGS:-}
cmake --build build -j "$(nproc)" --target arclight-retrieval
./build/examples/product_retrieval/arclight-retrieval demo --run runs/demo "$@"
