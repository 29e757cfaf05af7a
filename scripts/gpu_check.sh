#!/usr/bin/env bash
# First run on a GPU, in one go: build mamext with CUDA for this device's
# architecture only, run the CUDA tests, run compute-sanitizer on tiny cases,
# run the dense and packed benchmarks at 4096^3 and 256x4096x1024, and write one
# report ($OUT/gpu_report.md when $OUT is set, else ./gpu_report.md).
# Documented in docs/gpu_check.md.
#
# Usage: bash scripts/gpu_check.sh [--no-gpu | --self-test]
#   (none)       everything; stages that need a GPU are skipped (with the
#                reason) when none is visible.
#   --no-gpu     the CPU-side part only: the CUDA build (MAMEXT_WITH_CUDA=1)
#                against $PYTHON (default: the CI's CUDA venv when present,
#                else python3); every GPU stage marked skipped.
#   --self-test  fast check of the script itself for CI: the stage list, the
#                time-boxing and the report, with every stage stubbed out and
#                the helper scripts byte-compiled; builds and runs nothing.
# Environment: PYTHON, OUT, JOBS (default: all cores), TORCH_CUDA_ARCH_LIST
# (default: the device's compute capability, else 9.0),
# MAMEXT_GPU_CHECK_BUDGET (seconds for all stages, default 450),
# MAMEXT_GPU_CHECK_BUILD_TIMEOUT (the build stage's cap, default 240).
#
# Every stage runs under `timeout` with at most its own cap and what is left of
# the budget; a failing or hanging stage is recorded and the next one runs.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
mode=full
case "${1:-}" in
  "") ;;
  --no-gpu) mode=no-gpu ;;
  --self-test) mode=self-test ;;
  -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
  *) echo "gpu_check: unknown option '$1' (use --no-gpu, --self-test or nothing)" >&2; exit 2 ;;
esac

budget=${MAMEXT_GPU_CHECK_BUDGET:-450}
t0=$(date +%s)
jobs=${JOBS:-$(nproc 2>/dev/null || echo 4)}
work=${MAMEXT_GPU_CHECK_DIR:-$repo/build/gpu-check}
if [ "$mode" = self-test ]; then work=$(mktemp -d); fi
logs=$work/logs
mkdir -p "$logs"
report=${OUT:+$OUT/gpu_report.md}
report=${report:-$repo/gpu_report.md}
if [ "$mode" = self-test ]; then report=$work/gpu_report.md; fi

cuda_venv=${XDG_CACHE_HOME:-$HOME/.cache}/mamext/venv-cuda-torch2.14.1/bin/python
if [ -n "${PYTHON:-}" ]; then py=$PYTHON
elif [ "$mode" = no-gpu ] && [ -x "$cuda_venv" ]; then py=$cuda_venv
else py=$(command -v python3 || command -v python); fi
export PATH="$(dirname "$py"):$PATH"  # a venv's cmake (>= 3.26) and ninja first

# Stage table: name | cap (s) | needs (build, gpu) | command (a function below).
# Order is priority: when the budget runs short, the last ones are skipped.
STAGES=(
  "env|20|-|st_env"
  "build|${MAMEXT_GPU_CHECK_BUILD_TIMEOUT:-240}|-|st_build"
  "tests_cuda|180|gpu|st_tests_cuda"
  "sanitize_memcheck|60|gpu|st_sanitize memcheck"
  "bench_dense|60|gpu|st_bench_dense"
  "bench_packed|45|gpu|st_bench_packed"
  "sanitize_racecheck|45|gpu|st_sanitize racecheck"
  "sanitize_synccheck|30|gpu|st_sanitize synccheck"
  "sanitize_initcheck|30|gpu|st_sanitize initcheck"
  "tests_device_param|60|gpu|st_tests_device_param"
)

pkg=$work/pkg  # the built package: python/mamext + the CUDA _C module
run_py() { PYTHONPATH="$pkg${PYTHONPATH:+:$PYTHONPATH}" "$py" "$@"; }

st_env() {
  echo "date: $(date -u +%FT%TZ)  host: $(hostname)  cores: $(nproc)  mode: $mode"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo n/a) $(git status --porcelain 2>/dev/null | wc -l) changed files"
  nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv 2>&1 || true
  command -v nvcc >/dev/null && nvcc --version | tail -n 2
  command -v cmake >/dev/null && cmake --version | head -n 1
  find_sanitizer >/dev/null && "$(find_sanitizer)" --version | head -n 2
  "$py" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| CUDA', torch.version.cuda, '| GPUs', torch.cuda.device_count())"
}

device_arch() {
  local cap
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' ')
  [ -n "$cap" ] || cap=$("$py" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>/dev/null)
  echo "${cap:-9.0}"
}

st_build() {
  local arch=${TORCH_CUDA_ARCH_LIST:-$(device_arch)}
  local cmake_bin
  cmake_bin=$(command -v cmake)
  echo "TORCH_CUDA_ARCH_LIST=$arch, $jobs jobs, $cmake_bin, $py"
  local s=$SECONDS
  "$cmake_bin" -S "$repo" -B "$work/cmake" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMAMEXT_WITH_CUDA=1 \
    -DTORCH_CUDA_ARCH_LIST="$arch" -DPython_EXECUTABLE="$py" -DSKBUILD_PROJECT_VERSION=0.1.0-gpucheck || return 1
  echo "configure: $((SECONDS - s)) s"
  s=$SECONDS
  "$cmake_bin" --build "$work/cmake" -j "$jobs" 2>&1 | tee "$logs/build_compile.log" | tail -n 30
  local rc=${PIPESTATUS[0]}
  echo "compile: $((SECONDS - s)) s (rc $rc)"
  [ "$rc" = 0 ] || return "$rc"
  if grep -E "ptxas (warning|info) *:.*(spill|Local memory)|bytes spill (stores|loads)" "$logs/build_compile.log" \
      | grep -v " 0 bytes spill stores, 0 bytes spill loads" | grep -v "^$" ; then
    echo "register spills / local memory above"
  fi
  rm -rf "$pkg" && mkdir -p "$pkg"
  cp -r "$repo/python/mamext" "$pkg/"
  rm -f "$pkg"/mamext/_C*.so
  cp "$work"/cmake/_C*.so "$pkg/mamext/"
  run_py -c "import mamext; assert mamext._C.build_info['cuda'], mamext._C.build_info; print('built', mamext._C.build_info)"
}

pytest_args=(-q -rfEs -p no:cacheprovider --maxfail=30)
st_tests_cuda() {
  run_py -m pytest "${pytest_args[@]}" tests/test_cuda.py tests/test_sparse_cuda.py tests/test_cuda_readiness.py \
    -k "not emulated"
}
st_tests_device_param() {
  run_py -m pytest "${pytest_args[@]}" tests -k "cuda and not emulated" \
    --ignore=tests/test_cuda.py --ignore=tests/test_sparse_cuda.py --ignore=tests/test_cuda_readiness.py
}
find_sanitizer() {  # PATH, the toolkit of $CUDA_HOME / $CUDA_PATH / nvcc, /usr/local/cuda
  local nvcc_dir="" d
  command -v nvcc >/dev/null && nvcc_dir=$(dirname "$(readlink -f "$(command -v nvcc)")")
  command -v compute-sanitizer && return
  for d in "${CUDA_HOME:-}/bin" "${CUDA_PATH:-}/bin" "$nvcc_dir" "$nvcc_dir/../compute-sanitizer" /usr/local/cuda/bin \
      /usr/local/cuda/compute-sanitizer; do
    [ -x "$d/compute-sanitizer" ] && { echo "$d/compute-sanitizer"; return; }
  done
  return 1
}
st_sanitize() {
  local tool=$1 sanitizer
  sanitizer=$(find_sanitizer) || { echo "compute-sanitizer not found (PATH, \$CUDA_HOME, /usr/local/cuda)"; return 3; }
  # no caching allocator: every tensor is its own allocation, so memcheck sees
  # an access past a tensor's end
  PYTHONPATH="$pkg" PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$sanitizer" --tool "$tool" --error-exitcode 9 --print-limit 30 \
    "$py" scripts/gpu/sanitize_cases.py all
}
st_bench_dense() {
  run_py benchmarks/bench_dense_cuda.py --shapes 4096x4096x4096,256x4096x1024 --dtypes float32,bfloat16 --reps 10 \
    --no-naive
}
st_bench_packed() {
  run_py benchmarks/bench_packed_cuda.py --shapes 4096x4096x4096,256x4096x1024 --pruned 0.9,0.99 --reps 10 --budget 8
}

# --- runner -------------------------------------------------------------------
declare -A status seconds
built=0
gpu=0
if [ "$mode" = full ] && nvidia-smi -L >/dev/null 2>&1; then gpu=1; fi

run_stage() {  # name cap needs cmd...
  local name=$1 cap=$2 needs=$3
  shift 3
  local left=$((budget - ($(date +%s) - t0) - 5))
  local limit=$((cap < left ? cap : left))
  if [ "$mode" = self-test ]; then
    status[$name]="skipped (self-test)"; seconds[$name]=0; echo "stub $name: $*" >"$logs/$name.log"; return
  fi
  if [ "$needs" = gpu ] && [ "$gpu" = 0 ]; then
    status[$name]="skipped ($([ "$mode" = no-gpu ] && echo "--no-gpu" || echo "no GPU visible"))"
    seconds[$name]=0; return
  fi
  if [ "$needs" = gpu ] && [ "$built" = 0 ]; then status[$name]="skipped (build failed)"; seconds[$name]=0; return; fi
  if [ "$limit" -lt 5 ]; then status[$name]="skipped (budget spent)"; seconds[$name]=0; return; fi
  echo "=== [gpu_check $(( $(date +%s) - t0 ))s] $name (limit ${limit}s)"
  local s=$SECONDS rc
  # the stage runs in a subshell under timeout; functions are exported to it
  timeout --kill-after=5 "$limit" bash -c "$(declare -f); $(declare -p py pkg work logs repo jobs mode pytest_args); $*" \
    >"$logs/$name.log" 2>&1
  rc=$?
  seconds[$name]=$((SECONDS - s))
  case $rc in
    0) status[$name]=ok ;;
    124|137) status[$name]="TIMEOUT (${limit}s)" ;;
    *) status[$name]="FAILED (rc $rc)" ;;
  esac
  [ "$name" = build ] && [ "$rc" = 0 ] && built=1
  echo "    ${status[$name]} in ${seconds[$name]}s"
}

for entry in "${STAGES[@]}"; do
  IFS='|' read -r name cap needs cmd <<<"$entry"
  # shellcheck disable=SC2086
  run_stage "$name" "$cap" "$needs" $cmd
done
total=$(( $(date +%s) - t0 ))

{
  echo "# mamext GPU check"
  echo
  echo "mode: $mode; total ${total}s of a ${budget}s budget; python: $py"
  echo
  echo "| stage | status | seconds |"
  echo "|---|---|---|"
  for entry in "${STAGES[@]}"; do
    IFS='|' read -r name _ _ _ <<<"$entry"
    echo "| $name | ${status[$name]} | ${seconds[$name]} |"
  done
  for entry in "${STAGES[@]}"; do
    IFS='|' read -r name _ _ _ <<<"$entry"
    [ -f "$logs/$name.log" ] || continue
    echo
    echo "## $name: ${status[$name]}"
    echo
    echo '```'
    case $name in bench_*|env) cat "$logs/$name.log" ;; *) tail -n 80 "$logs/$name.log" ;; esac
    echo '```'
  done
} >"$report"
echo "gpu_check: report in $report (${total}s)"

if [ "$mode" = self-test ]; then
  ok=1
  bash -n "$0" || ok=0
  "$py" -m py_compile scripts/gpu/sanitize_cases.py benchmarks/bench_packed_cuda.py benchmarks/bench_dense_cuda.py \
    || ok=0
  for entry in "${STAGES[@]}"; do
    IFS='|' read -r name _ _ _ <<<"$entry"
    grep -q "^| $name | skipped (self-test) | 0 |$" "$report" || { echo "self-test: stage $name missing"; ok=0; }
    grep -q "^## $name: skipped (self-test)" "$report" || { echo "self-test: log of $name missing"; ok=0; }
  done
  [ "${#STAGES[@]}" -eq 10 ] || { echo "self-test: expected 10 stages"; ok=0; }
  rm -rf "$work"
  [ "$ok" = 1 ] && echo "gpu_check self-test passed" || { echo "gpu_check self-test FAILED"; exit 1; }
fi
for entry in "${STAGES[@]}"; do
  IFS='|' read -r name _ _ _ <<<"$entry"
  case ${status[$name]} in ok|skipped*) ;; *) exit 1 ;; esac
done
exit 0
