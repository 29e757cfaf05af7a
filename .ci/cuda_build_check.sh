#!/usr/bin/env bash
# CUDA build check: proves on every submission that the CUDA kernels compile and
# link, on a machine without a GPU.
#  1. a second virtual environment with the CUDA build of torch (torch==2.14.1,
#     CUDA 13.0) and the build tools (pip's cmake >= 3.26, scikit-build-core,
#     pybind11, ninja) plus the test dependencies from pyproject.toml;
#  2. mamext built and installed into it with MAMEXT_WITH_CUDA=1 (a failure to
#     find nvcc or the CUDA torch is an error, never a silent CPU-only build);
#  3. imported from outside the source tree: build_info["cuda"] must be True and
#     the CUDA kernels must be registered for the CUDA dispatch key;
#  4. no register spills or local memory in any kernel: cmake/cuda.cmake passes
#     -Xptxas=-warn-spills,-warn-lmem-usage, and any such ptxas warning in the
#     build log fails the check;
#  5. the first-GPU script's self-test (scripts/gpu_check.sh --self-test);
#  6. the test suite run against that build (the CPU tests; the CUDA tests skip
#     with a reason when no GPU is present).
# Self-contained and idempotent; run from anywhere (it cd's to the repo root).
# Environment:
#   MAMEXT_CUDA_VENV        venv location (default: ~/.cache/mamext/venv-cuda-torch<ver>,
#                           reused across runs when healthy)
#   MAMEXT_CUDA_TORCH       torch version (default 2.14.1)
#   MAMEXT_CUDA_BUILD_DIR   scikit-build-core build dir (default build/cuda-check)
#   TORCH_CUDA_ARCH_LIST    default "7.5;8.0;9.0+PTX" (set by cmake/cuda.cmake)
#   JOBS                    parallel compile jobs (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
start=$(date +%s)
stamp() { echo "=== [cuda build check, $(( $(date +%s) - start ))s] $*"; }

torch_version=${MAMEXT_CUDA_TORCH:-2.14.1}
venv=${MAMEXT_CUDA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mamext/venv-cuda-torch$torch_version}
build_dir=${MAMEXT_CUDA_BUILD_DIR:-build/cuda-check}
python=${PYTHON:-python3}
unset PYTHONPATH  # test the installed package, never the source tree

# nvcc: PATH, else the usual toolkit locations (cmake/cuda.cmake looks there too).
if ! command -v nvcc >/dev/null 2>&1; then
  for d in "${CUDA_PATH:-}" "${CUDA_HOME:-}" /usr/local/cuda; do
    if [ -n "$d" ] && [ -x "$d/bin/nvcc" ]; then export PATH="$d/bin:$PATH"; break; fi
  done
fi
command -v nvcc >/dev/null 2>&1 || { echo "cuda build check: nvcc not found (PATH, CUDA_PATH, /usr/local/cuda)" >&2; exit 1; }
stamp "nvcc: $(command -v nvcc) ($(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'))"

healthy() {
  "$venv/bin/python" - "$torch_version" <<'PY' 2>/dev/null
import sys
import torch
sys.exit(0 if torch.__version__.split("+")[0] == sys.argv[1] and torch.version.cuda else 1)
PY
}
if [ -x "$venv/bin/python" ] && healthy; then
  stamp "reusing $venv"
else
  stamp "creating $venv"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
mapfile -t test_deps < <("$venv/bin/python" - <<'PY'
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["optional-dependencies"]["test"]))
PY
)
stamp "installing torch==$torch_version (CUDA build), build tools, test deps"
"${pip[@]}" "torch==$torch_version" "cmake>=3.26" "scikit-build-core>=0.10" "pybind11>=2.12" ninja "${test_deps[@]}"
"$venv/bin/python" -c "import torch; assert torch.version.cuda, 'torch has no CUDA'; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"

stamp "building mamext with MAMEXT_WITH_CUDA=1 into $build_dir"
mkdir -p "$build_dir"
log="$build_dir/pip-install.log"
# pip's cmake (>= 3.26, needed for CUDA with C++20) first on PATH.
if ! PATH="$venv/bin:$PATH" MAMEXT_WITH_CUDA=1 CMAKE_BUILD_PARALLEL_LEVEL="${JOBS:-2}" \
  "$venv/bin/python" -m pip install -v --disable-pip-version-check --no-build-isolation --no-deps \
  --config-settings=build-dir="$build_dir" --config-settings=cmake.version=">=3.26" . >"$log" 2>&1; then
  tail -n 150 "$log"
  echo "cuda build check: building mamext with CUDA failed (full log: $log)" >&2
  exit 1
fi
grep -E "mamext: CUDA|Added CUDA NVCC flags|Successfully installed" "$log" || true

stamp "register spills / local memory (ptxas warnings)"
if grep -iE "ptxas warning.*(spill|local memory)" "$log"; then
  echo "cuda build check: a kernel spills registers or uses local memory (ptxas warnings above; full log: $log)" >&2
  exit 1
fi
grep -qs -- "-warn-spills,-warn-lmem-usage" "$build_dir/build.ninja" ||
  { echo "cuda build check: nvcc was not given -Xptxas=-warn-spills,-warn-lmem-usage ($build_dir/build.ninja)" >&2; exit 1; }

stamp "first-GPU script self-test"
PYTHON="$venv/bin/python" bash scripts/gpu_check.sh --self-test

stamp "import check"
(cd / && "$venv/bin/python" - "$repo" <<'PY'
import os
import sys

import torch

import mamext

repo = os.path.realpath(sys.argv[1])
assert not os.path.realpath(mamext.__file__).startswith(repo + os.sep), f"imported the source tree: {mamext.__file__}"
info = mamext._C.build_info
assert info["cuda"] is True, f"mamext was built without CUDA: {info}"
for op in ("mam_linear_forward", "mam_linear_inference", "mam_linear_backward"):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"mamext::{op}", "CUDA"), f"no CUDA kernel for {op}"
print("mamext", mamext.__version__, "from", os.path.dirname(mamext.__file__), "build_info", info,
      "| GPU present:", torch.cuda.is_available())
PY
)

stamp "test suite against the CUDA build"
MAMEXT_EXPECT_CUDA_BUILD=1 "$venv/bin/python" -m pytest tests -q -x -p no:cacheprovider
stamp "CUDA build check passed"
