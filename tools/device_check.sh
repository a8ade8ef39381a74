#!/usr/bin/env bash
# One call on a machine with an NVIDIA GPU (a Jetson or a discrete GPU): every check that needs the GPU, each
# step's output under OUT (default benchmarks/results/device/), ready to commit.
#
#   tools/device_check.sh [--dry-run] [--out DIR] [--only STEP[,STEP...]] [--python PY]
#
# Steps (each with its own time limit, all run even when one fails; OUT/summary.tsv says which passed):
#   env           GPU, driver, JetPack / L4T, nvpmodel, CUDA, TensorRT, torch, onnxruntime versions
#   gpu_tests     pytest -m "gpu or tensorrt": the GPU and TensorRT tests (JUnit XML beside the log)
#   doctor        edgeseg doctor --json: tiny-model engines on this GPU against ONNX Runtime
#   amp_resume    an AMP training step on CUDA and the GradScaler state restored on resume
#   cuda_kernels  the native CUDA kernels built for this GPU, ctest cuda_vs_cpu (bit-exact vs the CPU code),
#                 cuobjdump's list of kernel images
#   native_trt    the native runtime's ctest suite with the TensorRT backend built against this TensorRT
# Exit: 0 all steps passed, 1 a step failed, 2 bad arguments, 77 no NVIDIA GPU here (nothing run).
# Step limits (seconds) add up to 560, so one call fits a 10-minute slot; change one with STEP_LIMIT_<STEP>=N,
# e.g. STEP_LIMIT_GPU_TESTS=300. CUDA_ARCH=90-real builds the kernels for one architecture only (faster).
# shellcheck disable=SC2317  # the step_* functions run through `timeout bash -c`, which shellcheck cannot see
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/benchmarks/results/device"
PYTHON="${PYTHON:-python3}"
DRY_RUN=0
ONLY=""
STEPS=(env gpu_tests doctor amp_resume cuda_kernels native_trt)
declare -A LIMIT=([env]=20 [gpu_tests]=180 [doctor]=120 [amp_resume]=60 [cuda_kernels]=120 [native_trt]=60)
declare -A ABOUT=(
  [env]="GPU, driver, JetPack / L4T, nvpmodel, CUDA, TensorRT, torch, onnxruntime versions"
  [gpu_tests]="pytest -m 'gpu or tensorrt' (JUnit XML: gpu_tests.xml)"
  [doctor]="edgeseg doctor --json > doctor.json"
  [amp_resume]="pytest test_amp_training_on_cuda + test_gradscaler_state_is_restored_on_resume"
  [cuda_kernels]="cmake build (default CUDA architectures), ctest -R cuda_vs_cpu, cuobjdump --list-elf/--list-ptx"
  [native_trt]="ctest of the native runtime with the TensorRT backend (same build)"
)

usage() {
  sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --out) OUT="${2:?--out needs a folder}"; shift ;;
    --only) ONLY="${2:?--only needs step names}"; shift ;;
    --python) PYTHON="${2:?--python needs an interpreter}"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "device_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

selected=()
for step in "${STEPS[@]}"; do
  if [[ -z "$ONLY" || ",$ONLY," == *",$step,"* ]]; then
    selected+=("$step")
  fi
done
if [[ -n "$ONLY" ]]; then
  IFS=',' read -r -a asked <<< "$ONLY"
  for step in "${asked[@]}"; do
    if [[ -z "${LIMIT[$step]+x}" ]]; then
      echo "device_check: unknown step '$step'; steps: ${STEPS[*]}" >&2
      exit 2
    fi
  done
fi

limit_of() {
  local var="STEP_LIMIT_${1^^}"
  echo "${!var:-${LIMIT[$1]}}"
}

if [[ "$DRY_RUN" == 1 ]]; then
  echo "device_check: dry run, nothing is executed; results would go to $OUT"
  n=0
  for step in "${selected[@]}"; do
    n=$((n + 1))
    printf '%d. %-13s (limit %4ss) %s\n' "$n" "$step" "$(limit_of "$step")" "${ABOUT[$step]}"
  done
  exit 0
fi

if ! command -v nvidia-smi > /dev/null 2>&1 && [[ ! -e /etc/nv_tegra_release ]]; then
  echo "device_check: no NVIDIA GPU here (no nvidia-smi, not a Jetson): nothing run" >&2
  exit 77
fi

mkdir -p "$OUT"
BUILD="$(mktemp -d "${TMPDIR:-/tmp}/edgeseg-device-build.XXXXXX")"
trap 'rm -rf "$BUILD"' EXIT

# ----------------------------------------------------------------------------- steps

step_env() {
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "host: $(uname -srm)"
  if command -v nvidia-smi > /dev/null 2>&1; then
    nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total,clocks.max.sm --format=csv
  fi
  for f in /etc/nv_tegra_release /sys/firmware/devicetree/base/model; do
    [[ -r "$f" ]] && echo "$f: $(tr -d '\0' < "$f")"
  done
  if command -v nvpmodel > /dev/null 2>&1; then nvpmodel -q 2> /dev/null | head -n 2; fi
  if command -v nvcc > /dev/null 2>&1; then nvcc --version | tail -n 2; fi
  "$PYTHON" - << 'EOF'
import importlib
for name in ("torch", "tensorrt", "onnxruntime", "onnx", "pycuda", "edgeseg"):
    try:
        mod = importlib.import_module(name)
        print(f"{name}: {getattr(mod, '__version__', '?')}")
    except Exception as e:  # a missing package is a fact to record, not a failure
        print(f"{name}: not importable ({type(e).__name__})")
import torch
print("torch.cuda:", torch.version.cuda, "available:", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
}

step_gpu_tests() {
  (cd "$ROOT" && "$PYTHON" -m pytest -m "gpu or tensorrt" -q -rA -p no:cacheprovider \
    --junitxml="$OUT/gpu_tests.xml" tests)
}

step_doctor() {
  (cd "$ROOT" && "$PYTHON" -m edgeseg doctor --json > "$OUT/doctor.json")
  local rc=$?
  cat "$OUT/doctor.json"
  return "$rc"
}

step_amp_resume() {
  (cd "$ROOT" && "$PYTHON" -m pytest -q -rA -p no:cacheprovider \
    tests/train/test_train.py::test_amp_training_on_cuda \
    tests/train/test_ddp.py::test_gradscaler_state_is_restored_on_resume)
}

native_build() {  # configure + build once for both native steps
  [[ -f "$BUILD/edgeseg_features.json" ]] && return 0
  local cmake_args=(-S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release "-DPython3_EXECUTABLE=$(command -v "$PYTHON")")
  if command -v ninja > /dev/null 2>&1; then cmake_args+=(-G Ninja); fi
  if [[ -n "${CUDA_ARCH:-}" ]]; then cmake_args+=("-DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCH"); fi
  cmake "${cmake_args[@]}" && cmake --build "$BUILD" -j "$(nproc)"
}

step_cuda_kernels() {
  native_build || return 1
  cat "$BUILD/edgeseg_features.json"
  ctest --test-dir "$BUILD" -R cuda_vs_cpu --output-on-failure || return 1
  local lib
  lib="$(find "$BUILD" -name 'libedgeseg_cuda.a' -print -quit)"
  if command -v cuobjdump > /dev/null 2>&1 && [[ -n "$lib" ]]; then
    cuobjdump --list-elf "$lib"
    cuobjdump --list-ptx "$lib"
  fi
}

step_native_trt() {
  native_build || return 1
  grep -q '"backend tensorrt"' "$BUILD/edgeseg_features.json" || {
    echo "the TensorRT backend was not built:"
    cat "$BUILD/edgeseg_features.json"
    return 1
  }
  ctest --test-dir "$BUILD" --output-on-failure
}

# ----------------------------------------------------------------------------- run

printf 'step\tstatus\tseconds\tlimit\n' > "$OUT/summary.tsv"
failed=0
for step in "${selected[@]}"; do
  limit="$(limit_of "$step")"
  echo "== $step (limit ${limit}s): ${ABOUT[$step]}"
  start=$SECONDS
  export -f "step_$step" native_build
  export ROOT OUT PYTHON BUILD
  timeout --kill-after=10 "$limit" bash -c "step_$step" > "$OUT/$step.log" 2>&1
  rc=$?
  case "$rc" in
    0) status=pass ;;
    124 | 137) status=timeout ;;
    *) status="fail($rc)" ;;
  esac
  [[ "$status" == pass ]] || failed=1
  printf '%s\t%s\t%s\t%s\n' "$step" "$status" "$((SECONDS - start))" "$limit" >> "$OUT/summary.tsv"
  echo "   $status in $((SECONDS - start))s -> $OUT/$step.log"
done
cat "$OUT/summary.tsv"
exit "$failed"
