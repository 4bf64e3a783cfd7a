#!/usr/bin/env bash
# The device script: on a machine with an NVIDIA GPU it configures arclight with the CUDA backend for that GPU's
# architecture, builds only the `cuda` tests (every executable tests/cuda defines: cuda_host, cuda_kernels,
# cuda_search, cuda_dnn when present) and the device benches (bench_device_kernels, bench_device_dnn when
# bench/device/CMakeLists.txt defines it), runs the tests, runs compute-sanitizer memcheck on a small subset
# (when compute-sanitizer exists), runs the benches and prints a short table — in well under 8 minutes, every
# step under its own timeout, then the efficientnet_b0 training step beside PyTorch (bench/torch_train_step.py) when
# the machine's python has torch with CUDA (fp32 and bf16), and, with what is left of the budget, a device-time
# profile of the bf16 step per op type and the fp16 pair. Logs and results go to $OUT when it is set (summary.txt,
# build.log, tests.log, sanitizer.log, bench.log, bench_dnn.log, train_step.log, train_profile.log, bench.md), else
# to <build>/logs. Without a GPU it says so and exits 0.
#
#   bash bench/device/run.sh               # the device run
#   bash bench/device/run.sh --force       # build + run anyway without a GPU (checks the script on a CPU box)
#   bash bench/device/run.sh --train-only  # build only train_step_cuda and repeat the train-step pairs (arclight,
#                                          # then PyTorch; fp32, bf16, fp16) ARCLIGHT_TS_ROUNDS times (default 2)
#   bash bench/device/run.sh --pack-deps   # on the dev machine: pack gtest/OpenBLAS/zlib into
#                                          # build-device-deps/deps.tar.gz, for a GPU image that lacks them
#                                          # (carry `build-device-deps` with the run)
# Environment: ARCLIGHT_DEVICE_BUILD (build dir, default build-device), ARCLIGHT_DEVICE_JOBS (default 16),
# CUDNN_ROOT, CUDACXX (nvcc), ARCLIGHT_DEVICE_BUDGET_S (total seconds, default 450).
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${ARCLIGHT_DEVICE_BUILD:-$REPO/build-device}"
JOBS="${ARCLIGHT_DEVICE_JOBS:-16}"
BUDGET="${ARCLIGHT_DEVICE_BUDGET_S:-450}"
DEPS_TAR="$REPO/build-device-deps/deps.tar.gz"
T0=$(date +%s)
FORCE=0
TRAIN_ONLY=0

say() { printf '[device %3ds] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }

pack_deps() {
  # Stage headers + libraries in a relocatable prefix laid out as on Debian (lib/<multiarch>), so CMake's
  # GTest config files (which locate their prefix relative to themselves), FindBLAS and FindZLIB all work.
  local arch=x86_64-linux-gnu stage
  stage="$(mktemp -d)"
  mkdir -p "$stage/include" "$stage/lib/$arch/cmake"
  cp -r /usr/include/gtest /usr/include/gmock "$stage/include/" || return 1
  cp /usr/include/$arch/cblas.h /usr/include/$arch/openblas_config.h "$stage/include/" || return 1
  cp /usr/include/zlib.h /usr/include/zconf.h "$stage/include/" 2>/dev/null || cp /usr/include/$arch/zconf.h "$stage/include/"
  cp -r /usr/lib/$arch/cmake/GTest "$stage/lib/$arch/cmake/" || return 1
  cp /usr/lib/$arch/libgtest.a /usr/lib/$arch/libgtest_main.a /usr/lib/$arch/libgmock.a /usr/lib/$arch/libgmock_main.a \
     "$stage/lib/$arch/" || return 1
  cp -L /usr/lib/$arch/libopenblas.so.0 "$stage/lib/$arch/libopenblas.so.0" || return 1
  ln -s libopenblas.so.0 "$stage/lib/$arch/libopenblas.so"
  cp -L /lib/$arch/libgfortran.so.5 /lib/$arch/libquadmath.so.0 "$stage/lib/$arch/" || return 1
  cp -L /usr/lib/$arch/libz.so.1 "$stage/lib/$arch/libz.so.1" && ln -s libz.so.1 "$stage/lib/$arch/libz.so"
  mkdir -p "$(dirname "$DEPS_TAR")"
  tar -C "$stage" -czf "$DEPS_TAR" . && rm -rf "$stage"
  say "packed $(du -h "$DEPS_TAR" | cut -f1) into $DEPS_TAR (carry 'build-device-deps' with the device run)"
}

case "${1:-}" in
  --pack-deps) pack_deps; exit $? ;;
  --force) FORCE=1 ;;
  --train-only) TRAIN_ONLY=1 ;;
  "") ;;
  *) echo "usage: $0 [--force | --train-only | --pack-deps]" >&2; exit 2 ;;
esac
if ! [[ "${ARCLIGHT_TS_ROUNDS:-2}" =~ ^[1-9][0-9]*$ ]]; then
  echo "$0: ARCLIGHT_TS_ROUNDS must be a positive integer, got '${ARCLIGHT_TS_ROUNDS}'" >&2
  exit 2
fi

LOG="${OUT:-$BUILD/logs}"
mkdir -p "$LOG" "$BUILD"
SUMMARY="$LOG/summary.txt"
: >"$SUMMARY"
for f in build.log tests.log tests.xml sanitizer.log bench.log bench_dnn.log train_step.log train_profile.log bench.md; do
  rm -f "$LOG/$f"
done
STEPS=()

# run_step NAME TIMEOUT LOGFILE CMD...: runs under `timeout` (capped by what is left of the budget), appends to
# LOGFILE, records "NAME status seconds".
run_step() {
  local name="$1" limit="$2" logfile="$3"
  shift 3
  local left=$(( BUDGET - ($(date +%s) - T0) ))
  if (( left < 15 )); then
    STEPS+=("$name|skipped (budget spent)|0")
    say "$name: skipped, the ${BUDGET}s budget is spent"
    return 124
  fi
  (( limit > left - 5 )) && limit=$(( left - 5 ))
  say "$name (timeout ${limit}s) -> $(basename "$logfile")"
  local s=$(date +%s) rc
  { echo "==== $name: $*"; } >>"$logfile"
  timeout --kill-after=10 "$limit" "$@" >>"$logfile" 2>&1
  rc=$?
  local d=$(( $(date +%s) - s )) status="ok"
  (( rc == 124 || rc == 137 )) && status="TIMEOUT"
  (( rc != 0 && rc != 124 && rc != 137 )) && status="FAILED (rc $rc)"
  STEPS+=("$name|$status|$d")
  say "$name: $status in ${d}s"
  return $rc
}

finish() {
  {
    echo "arclight device script — $(date -u +%Y-%m-%dT%H:%M:%SZ), total $(( $(date +%s) - T0 ))s"
    echo "GPU: ${GPU_NAME:-none}"
    printf '%-28s %-24s %6s\n' step status seconds
    for s in "${STEPS[@]}"; do IFS='|' read -r a b c <<<"$s"; printf '%-28s %-24s %6s\n' "$a" "$b" "$c"; done
    [ -f "$LOG/tests.log" ] && { echo; echo "cuda tests:"; grep -E '^==== |^\[==========\] [0-9]+ tests? from [0-9]+ test suites? ran|^\[  PASSED  \]|^\[  SKIPPED \] [0-9]+ tests?,|^\[  FAILED  \]' "$LOG/tests.log" | sed 's/^==== \(tests [^:]*\):.*/\1:/' | head -60; }
    [ -f "$LOG/bench.md" ] && { echo; cat "$LOG/bench.md"; }
  } >>"$SUMMARY"
  echo
  cat "$SUMMARY"
}

# ---- 1. the GPU ---------------------------------------------------------------------------------------
GPU_NAME=""
if command -v nvidia-smi >/dev/null 2>&1; then
  GPU_NAME="$(timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>/dev/null | head -1)"
fi
if [ -z "$GPU_NAME" ]; then
  if (( FORCE == 0 )); then
    say "no NVIDIA GPU found (nvidia-smi missing or reports no device): nothing to do on this machine; exiting 0."
    say "(run with --force to check the build steps anyway)"
    exit 0
  fi
  say "no GPU, continuing because of --force (the GPU tests will skip, the benches will say so)"
else
  say "GPU: $GPU_NAME"
fi
CC_MAJOR_MINOR="$(echo "$GPU_NAME" | awk -F', ' '{print $4}' | tr -d ' .')"
ARCH="${CC_MAJOR_MINOR:-90}"
[[ "$ARCH" =~ ^[0-9]+$ ]] || ARCH=90

# ---- 2. nvcc, cuBLAS, cuDNN ---------------------------------------------------------------------------
PY="$(command -v python3 || true)"
py_pkg_dir() {  # directory of a (namespace) python package, or nothing
  [ -n "$PY" ] || return 0
  timeout 60 "$PY" -c "import importlib,sys
try:
    m = importlib.import_module('$1'); print(list(m.__path__)[0])
except Exception: pass" 2>/dev/null
}
NVCC="${CUDACXX:-}"
[ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ] && NVCC=/usr/local/cuda/bin/nvcc
[ -z "$NVCC" ] && NVCC="$(command -v nvcc || true)"
if [ -z "$NVCC" ]; then
  say "ERROR: nvcc not found (looked at \$CUDACXX, /usr/local/cuda/bin, PATH)"
  STEPS+=("locate nvcc|FAILED|0"); finish; exit 1
fi
CUDA_ROOT="$(cd "$(dirname "$NVCC")/.." && pwd)"
say "nvcc: $NVCC ($("$NVCC" --version | tail -1))"

CMAKE_EXTRA=()
LIBDIRS=()
# cuBLAS: the toolkit's, else the nvidia-cublas wheel's.
if ! ls "$CUDA_ROOT"/lib64/libcublas.so* "$CUDA_ROOT"/targets/*/lib/libcublas.so* >/dev/null 2>&1; then
  d="$(py_pkg_dir nvidia.cublas)"
  cub="$(ls "$d"/lib/libcublas.so* 2>/dev/null | head -1)"
  cubl="$(ls "$d"/lib/libcublasLt.so* 2>/dev/null | head -1)"
  if [ -n "$cub" ]; then
    say "cuBLAS from python: $cub"
    CMAKE_EXTRA+=(-DCUDA_cublas_LIBRARY="$cub" -DCUDA_cublasLt_LIBRARY="$cubl")
    LIBDIRS+=("$d/lib")
  else
    say "WARNING: no cuBLAS found next to nvcc or in python's nvidia.cublas"
  fi
fi
# cuDNN: $CUDNN_ROOT, the toolkit, system dirs, the nvidia-cudnn wheel, torch/lib (library only).
CUDNN_INC=""; CUDNN_LIB=""
cands=("${CUDNN_ROOT:-}" "$CUDA_ROOT" /usr /usr/local/cudnn "$(py_pkg_dir nvidia.cudnn)")
for r in "${cands[@]}"; do
  [ -n "$r" ] && [ -d "$r" ] || continue
  [ -z "$CUDNN_INC" ] && CUDNN_INC="$(dirname "$(ls "$r"/include/cudnn.h "$r"/include/*/cudnn.h 2>/dev/null | head -1)" 2>/dev/null)"
  [ "$CUDNN_INC" = "." ] && CUDNN_INC=""
  [ -z "$CUDNN_LIB" ] && CUDNN_LIB="$(ls "$r"/lib64/libcudnn.so "$r"/lib/libcudnn.so "$r"/lib/x86_64-linux-gnu/libcudnn.so \
       "$r"/lib64/libcudnn.so.[0-9] "$r"/lib/libcudnn.so.[0-9] "$r"/lib/x86_64-linux-gnu/libcudnn.so.[0-9] 2>/dev/null | head -1)"
done
if [ -z "$CUDNN_LIB" ]; then
  t="$(py_pkg_dir torch)"
  CUDNN_LIB="$(ls "$t"/lib/libcudnn.so.[0-9] 2>/dev/null | head -1)"
fi
if [ -z "$CUDNN_INC" ] || [ -z "$CUDNN_LIB" ]; then
  say "ERROR: cuDNN not found (header: '${CUDNN_INC}', library: '${CUDNN_LIB}'); set CUDNN_ROOT"
  STEPS+=("locate cuDNN|FAILED|0"); finish; exit 1
fi
say "cuDNN: $CUDNN_INC, $CUDNN_LIB"
LIBDIRS+=("$(dirname "$CUDNN_LIB")")

# ---- 3. host dependencies (system, else the packed prefix) -----------------------------------------------
PREFIX_PATH=""
if [ -f "$DEPS_TAR" ]; then
  mkdir -p "$BUILD/deps" && tar -C "$BUILD/deps" -xzf "$DEPS_TAR"
  PREFIX_PATH="$BUILD/deps"
  LIBDIRS+=("$BUILD/deps/lib/x86_64-linux-gnu")
  say "using the packed host dependencies from $DEPS_TAR"
fi
export LD_LIBRARY_PATH="$(IFS=:; echo "${LIBDIRS[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

GEN=()
command -v ninja >/dev/null 2>&1 && GEN=(-G Ninja)
# ---- 4. configure + build (only the cuda tests and the device benches) ----------------------------------
rm -f "$BUILD/CMakeCache.txt"
run_step "configure" 150 "$LOG/build.log" cmake -S "$REPO/bench/device" -B "$BUILD" "${GEN[@]}" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES="$ARCH" \
  -DARCLIGHT_CUDNN_INCLUDE_DIR="$CUDNN_INC" -DARCLIGHT_CUDNN_LIBRARY="$CUDNN_LIB" \
  ${PREFIX_PATH:+-DCMAKE_PREFIX_PATH="$PREFIX_PATH"} "${CMAKE_EXTRA[@]}"
CONF_RC=$?
BUILD_RC=1
if (( CONF_RC == 0 )); then
  # Everything the device project defines: arclight's CUDA library, the tests/cuda executables, the benches.
  BUILD_TARGETS=()
  (( TRAIN_ONLY )) && BUILD_TARGETS=(--target train_step_cuda)
  run_step "build (sm_$ARCH, -j$JOBS)" 300 "$LOG/build.log" cmake --build "$BUILD" -j "$JOBS" "${BUILD_TARGETS[@]}"
  BUILD_RC=$?
fi
TEST_EXE="$BUILD/tests-cuda/cuda_kernels"
BENCH_EXE="$BUILD/bench_device_kernels"
DNN_BENCH_EXE="$BUILD/bench_device_dnn"

TS_EXE="$BUILD/train_step_cuda"
TS_ARGS=(--img "${ARCLIGHT_TS_IMG:-224}" --batch "${ARCLIGHT_TS_BATCH:-128}" --steps "${ARCLIGHT_TS_STEPS:-10}" \
         --warmup 3 --embed-steps 5 --classes 1000 --threads 4)
# Whether this machine's python has torch with CUDA (asked once: importing torch takes seconds of the budget).
HAVE_TORCH=0
if [ -n "$GPU_NAME" ] && [ -n "$PY" ] && timeout 60 "$PY" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
  HAVE_TORCH=1
fi

# ---- 5a. --train-only: the train-step pairs alone, repeated (the ratio's spread on a shared machine) ---------------
if (( TRAIN_ONLY )); then
  if (( BUILD_RC == 0 )) && [ -n "$GPU_NAME" ]; then
    for round in $(seq 1 "${ARCLIGHT_TS_ROUNDS:-2}"); do
      for amp in off bf16 fp16; do
        run_step "r$round train_step arclight $amp" 120 "$LOG/train_step.log" "$TS_EXE" --device cuda --amp "$amp" \
          "${TS_ARGS[@]}"
        (( HAVE_TORCH )) && run_step "r$round train_step torch $amp" 120 "$LOG/train_step.log" "$PY" \
          "$REPO/bench/torch_train_step.py" --device cuda --amp "$amp" "${TS_ARGS[@]}"
      done
    done
    { echo "train step pairs (efficientnet_b0 embedding + ArcMargin, batch ${ARCLIGHT_TS_BATCH:-128}, images/s, run order):"
      grep -E '^==== |train_images_per_s' "$LOG/train_step.log" | sed 's/^==== \([^:]*\):.*/\1:/'; } >"$LOG/bench.md"
  fi
  finish
  for s in "${STEPS[@]}"; do [[ "$s" == *"|FAILED"* || "$s" == *"|TIMEOUT"* ]] && exit 1; done
  exit 0
fi

# ---- 5. tests, sanitizer, benches -----------------------------------------------------------------------
if (( BUILD_RC == 0 )); then
  for t in cuda_host cuda_kernels cuda_search cuda_dnn cuda_op_kernels cuda_depthwise cuda_ops; do
    [ -x "$BUILD/tests-cuda/$t" ] || continue
    run_step "tests $t" 150 "$LOG/tests.log" "$BUILD/tests-cuda/$t" --gtest_color=no
  done
  run_step "bench kernels" 150 "$LOG/bench.log" "$BENCH_EXE" --reps 20 --markdown "$LOG/bench.md"
  if [ -x "$DNN_BENCH_EXE" ]; then
    run_step "bench dnn" 90 "$LOG/bench_dnn.log" "$DNN_BENCH_EXE"
    { echo; echo "cuDNN / cuBLAS (bench_device_dnn):"; grep -E '^\|' "$LOG/bench_dnn.log"; } >>"$LOG/bench.md" 2>/dev/null
  fi
  # Training step, arclight vs PyTorch eager on this GPU: efficientnet_b0, 224 px, batch 128, fp32 and bf16.
  if [ -x "$TS_EXE" ] && [ -n "$GPU_NAME" ]; then
    for amp in off bf16; do
      run_step "train_step arclight $amp" 120 "$LOG/train_step.log" "$TS_EXE" --device cuda --amp "$amp" "${TS_ARGS[@]}"
      if (( HAVE_TORCH )); then
        run_step "train_step torch $amp" 120 "$LOG/train_step.log" "$PY" "$REPO/bench/torch_train_step.py" \
          --device cuda --amp "$amp" "${TS_ARGS[@]}"
      else
        STEPS+=("train_step torch $amp|skipped (no torch with CUDA)|0")
      fi
    done
    { echo; echo "train step (efficientnet_b0 embedding + ArcMargin, images/s; lines in run order: arclight off, torch off,"
      echo "arclight bf16, torch bf16):"; grep -E 'train_images_per_s|train_step: |torch_train_step: ' "$LOG/train_step.log"; } >>"$LOG/bench.md"
  fi
  SAN="$(command -v compute-sanitizer || true)"
  [ -z "$SAN" ] && [ -x "$CUDA_ROOT/bin/compute-sanitizer" ] && SAN="$CUDA_ROOT/bin/compute-sanitizer"
  [ -z "$SAN" ] && SAN="$(ls /opt/nvidia/*/compute-sanitizer/compute-sanitizer 2>/dev/null | head -1)"
  if [ -n "$SAN" ] && [ -n "$GPU_NAME" ]; then
    run_step "compute-sanitizer memcheck" 120 "$LOG/sanitizer.log" "$SAN" --tool memcheck --error-exitcode 3 \
      --leak-check no "$TEST_EXE" --gtest_color=no \
      --gtest_filter='CudaRuntime.*:Shapes/CudaGem.*/0:Shapes/CudaGem.*/6:Shapes/CudaGem.*/9:Shapes/CudaGem.*/10:Shapes/CudaGem.*/11:Rows/CudaRows.*/*_off*:CudaGemEdge.*:CudaRowsEdge.*:Rows/CudaRows.*/n16_c1000*:Rows/CudaRows.*/n7_c300*:Rows/CudaRows.*/n6_c20000*:CudaSchedule.*:CudaOptim.SgdVariantsMatchCpu:CudaOptim.AgcClip*'
    [ -x "$BUILD/tests-cuda/cuda_search" ] && run_step "memcheck search" 60 "$LOG/sanitizer.log" "$SAN" --tool memcheck \
      --error-exitcode 3 --leak-check no "$BUILD/tests-cuda/cuda_search" --gtest_color=no \
      --gtest_filter='CudaSearch.NanScoresAreNeverSelected:CudaSearch.ExactTies*'
    [ -x "$BUILD/tests-cuda/cuda_op_kernels" ] && run_step "memcheck op kernels" 90 "$LOG/sanitizer.log" "$SAN" --tool memcheck \
      --error-exitcode 3 --leak-check no "$BUILD/tests-cuda/cuda_op_kernels" --gtest_color=no \
      --gtest_filter='*Validation*:*Copy*:*Where*:*Fill*:*SeScale*:*GlobalAvgPool*'
    [ -x "$BUILD/tests-cuda/cuda_ops" ] && run_step "memcheck ops" 90 "$LOG/sanitizer.log" "$SAN" --tool memcheck \
      --error-exitcode 3 --leak-check no "$BUILD/tests-cuda/cuda_ops" --gtest_color=no \
      --gtest_filter='CudaOps.Elementwise*:CudaOps.Autograd*:CudaOps.CosineLogits*'
    [ -x "$BUILD/tests-cuda/cuda_host" ] && run_step "memcheck host" 60 "$LOG/sanitizer.log" "$SAN" --tool memcheck \
      --error-exitcode 3 --leak-check no "$BUILD/tests-cuda/cuda_host" --gtest_color=no \
      --gtest_filter='DeviceTensor.*:AmpUnscale.*:BatchUploader.*'
  else
    STEPS+=("compute-sanitizer memcheck|skipped (${SAN:+no GPU}${SAN:-not installed})|0")
  fi
  # With what is left of the budget: where a bf16 step's device time goes (per op type, forward and backward), then
  # the fp16 pair (autocast + dynamic loss scaling on both sides).
  if [ -x "$TS_EXE" ] && [ -n "$GPU_NAME" ]; then
    run_step "train_step profile bf16" 90 "$LOG/train_profile.log" "$TS_EXE" --device cuda --amp bf16 --profile \
      --img "${ARCLIGHT_TS_IMG:-224}" --batch "${ARCLIGHT_TS_BATCH:-128}" --steps 3 --warmup 2 --embed-steps 1 \
      --classes 1000 --threads 4
    { echo; echo "device time per op type, efficientnet_b0 bf16 train step (train_step --profile):"
      sed -n '/^-- train/,/^(profiled span)/p' "$LOG/train_profile.log"; } >>"$LOG/bench.md" 2>/dev/null
    run_step "train_step arclight fp16" 120 "$LOG/train_step.log" "$TS_EXE" --device cuda --amp fp16 "${TS_ARGS[@]}"
    if (( HAVE_TORCH )); then
      run_step "train_step torch fp16" 120 "$LOG/train_step.log" "$PY" "$REPO/bench/torch_train_step.py" \
        --device cuda --amp fp16 "${TS_ARGS[@]}"
    fi
    { echo; echo "train step fp16 (arclight, torch):"
      grep -E 'train_images_per_s|train_step: |torch_train_step: ' "$LOG/train_step.log" | tail -n 6; } >>"$LOG/bench.md"
  fi
fi
finish
# Exit non-zero when a step failed, so the caller notices.
for s in "${STEPS[@]}"; do [[ "$s" == *"|FAILED"* || "$s" == *"|TIMEOUT"* ]] && exit 1; done
exit 0
