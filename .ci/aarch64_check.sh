#!/usr/bin/env bash
# aarch64 check, on an x86-64 machine without ARM hardware:
#  tools    installs Debian's g++-aarch64-linux-gnu and qemu-user when missing
#           (apt-get; run this before the test suite so that
#           tests/test_aarch64.py runs instead of failing under CI=true);
#  kernels  cross-compiles the CPU kernels (portable and NEON) with the kernel
#           check program and runs it under qemu-aarch64
#           (tests/native/kernel_check.sh aarch64);
#  build    cross-builds the whole extension (_C) for aarch64 against the
#           headers and libraries of PyPI's aarch64 torch wheel and checks the
#           result: an ARM aarch64 shared object holding the NEON kernel tables
#           and no x86 ones. Needs the host Python of the test suite (.venv,
#           with torch and pybind11): CMakeLists.txt queries it.
# Usage: .ci/aarch64_check.sh [tools|kernels|build ...]   (no argument: all three)
# Environment:
#   PYTHON                    host Python (default .venv/bin/python)
#   MAMEXT_AARCH64_TORCH      torch version of the aarch64 wheel (default 2.13.0)
#   MAMEXT_AARCH64_CACHE      where the wheel is downloaded and unpacked
#                             (default ~/.cache/mamext/aarch64-torch<version>)
#   MAMEXT_AARCH64_BUILD_DIR  default build/aarch64-ext
#   JOBS                      parallel compile jobs (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
start=$(date +%s)
stamp() { echo "=== [aarch64 check, $(( $(date +%s) - start ))s] $*"; }

install_tools() {
  local need=()
  command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 || need+=(g++-aarch64-linux-gnu)
  command -v qemu-aarch64 >/dev/null 2>&1 || need+=(qemu-user)
  command -v cmake >/dev/null 2>&1 || need+=(cmake)
  if [ ${#need[@]} -eq 0 ]; then
    stamp "cross tools present: $(command -v aarch64-linux-gnu-g++), $(command -v qemu-aarch64)"
    return
  fi
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  stamp "installing ${need[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
}

check_kernels() {
  stamp "kernel check: portable and NEON kernels under qemu-aarch64"
  bash tests/native/kernel_check.sh aarch64 | tail -n 3
}

# The aarch64 torch wheel, unpacked (headers, CMake package, libraries only).
torch_wheel_dir() {
  local version=${MAMEXT_AARCH64_TORCH:-2.13.0}
  local cache=${MAMEXT_AARCH64_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mamext/aarch64-torch$version}
  if [ ! -f "$cache/unpacked" ]; then
    rm -rf "$cache"
    mkdir -p "$cache"
    "$python" -m pip download --disable-pip-version-check -q "torch==$version" --platform manylinux_2_28_aarch64 \
      --only-binary=:all: --no-deps -d "$cache/dl" >&2
    "$python" - "$cache"/dl/torch-*.whl "$cache/wheel" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    wheel.extractall(sys.argv[2], [n for n in wheel.namelist() if n.startswith(("torch/include/", "torch/share/", "torch/lib/"))])
PY
    rm -rf "$cache/dl"
    touch "$cache/unpacked"
  fi
  echo "$cache/wheel/torch"
}

cross_build() {
  python=${PYTHON:-.venv/bin/python}
  "$python" -c "import torch, pybind11" || { echo "aarch64 build: $python needs torch and pybind11" >&2; exit 1; }
  stamp "aarch64 torch wheel"
  local torch_dir; torch_dir=$(torch_wheel_dir)
  local build=${MAMEXT_AARCH64_BUILD_DIR:-build/aarch64-ext}
  local soabi; soabi=$("$python" -c "import sys; print(f'cpython-{sys.version_info[0]}{sys.version_info[1]}-aarch64-linux-gnu')")
  local generator=()
  if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
  stamp "configure ($torch_dir)"
  # --fresh: cached library paths from another wheel location never survive.
  # Python headers: the host's (same version); pybind11 needs nothing else and
  # the module leaves libpython unresolved, as every extension module does.
  cmake --fresh -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_TOOLCHAIN_FILE="$repo/cmake/aarch64-toolchain.cmake" \
    -DCMAKE_PROJECT_INCLUDE="$repo/cmake/aarch64-cross-torch.cmake" \
    -DTorch_DIR="$torch_dir/share/cmake/Torch" \
    -Dpybind11_DIR="$("$python" -c 'import pybind11; print(pybind11.get_cmake_dir())')" \
    -DPython_EXECUTABLE="$("$python" -c 'import sys; print(sys.executable)')" \
    -DPython_INCLUDE_DIR="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \
    -DPYTHON_MODULE_EXTENSION=".$soabi.so" \
    -DMAMEXT_WITH_CUDA=0 -DSKBUILD_PROJECT_VERSION=0.0.0-aarch64-check >/dev/null
  stamp "build"
  local t0; t0=$(date +%s)
  cmake --build "$build" -j "${JOBS:-2}" >/dev/null
  stamp "built in $(( $(date +%s) - t0 ))s"
  local so; so=$(ls "$build"/_C*.so)
  aarch64-linux-gnu-readelf -h "$so" | grep -E "Class|Type|Machine"
  aarch64-linux-gnu-readelf -h "$so" | grep -q "Machine:.*AArch64" || { echo "aarch64 build: $so is not an aarch64 object" >&2; exit 1; }
  # The module is stripped: the kernel tables are checked in the per-ISA
  # objects that were linked into it (one object library per ISA).
  local objects; objects=$(find "$build/CMakeFiles" -name '*.o' -path '*neon*')
  local symbols; symbols=$([ -n "$objects" ] && aarch64-linux-gnu-nm -C $objects || true)
  grep -q "mamext::cpu::neon::kernel_table()" <<<"$symbols" || { echo "aarch64 build: NEON kernels missing" >&2; exit 1; }
  grep -q "mamext::cpu::neon::packed_kernel_table()" <<<"$symbols" || { echo "aarch64 build: NEON packed kernels missing" >&2; exit 1; }
  if [ -n "$(find "$build/CMakeFiles" -name '*.o' -path '*avx*')" ]; then echo "aarch64 build: x86 kernels in an aarch64 build" >&2; exit 1; fi
  stamp "aarch64 extension OK: $so (default and neon kernels)"
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(tools kernels build)
for step in "${steps[@]}"; do
  case "$step" in
    tools) install_tools ;;
    kernels) check_kernels ;;
    build) cross_build ;;
    *) echo "aarch64_check.sh: unknown step '$step' (tools, kernels, build)" >&2; exit 2 ;;
  esac
done
stamp "done"
