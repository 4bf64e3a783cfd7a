#!/usr/bin/env bash
# The README's test command: set-up, configure, build and run every test except those labelled `slow`.
# Usage: scripts/test.sh [build-dir]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
JOBS="$(nproc)"

bash scripts/setup.sh
# Benchmarks are not needed by any test: .ci/run compiles them separately.
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DARCLIGHT_BUILD_BENCH=OFF ${ARCLIGHT_CMAKE_ARGS:-}
cmake --build "$BUILD" -j "$JOBS"
ctest --test-dir "$BUILD" -LE slow --output-on-failure -j "$JOBS" --timeout 600
