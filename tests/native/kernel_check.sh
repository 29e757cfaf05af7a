#!/usr/bin/env bash
# Build and run the kernel-level check (tests/native/kernel_check.cpp): every
# ISA build of the CPU kernels against a scalar reference, bit for bit.
# Usage: tests/native/kernel_check.sh native|aarch64 [build dir] [seed]
#   native   the host's ISA list (x86-64: default, avx2, avx512 where the CPU
#            runs them);
#   aarch64  cross-compiled with aarch64-linux-gnu-g++ (default, neon) and run
#            under qemu-aarch64 with the cross sysroot.
# Needs cmake (ninja if present) and, for aarch64, Debian's g++-aarch64-linux-gnu
# and qemu-user. Build directories are reused (incremental).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
target=${1:?usage: kernel_check.sh native|aarch64 [build dir] [seed]}
build=${2:-$root/build/kernel-check-$target}
generator=()
if [ ! -f "$build/CMakeCache.txt" ] && command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
case "$target" in
  native)
    configure=()
    run=()
    ;;
  aarch64)
    configure=(-DCMAKE_TOOLCHAIN_FILE="$root/cmake/aarch64-toolchain.cmake")
    run=(qemu-aarch64 -L "${MAMEXT_AARCH64_SYSROOT:-/usr/aarch64-linux-gnu}")
    ;;
  *)
    echo "kernel_check.sh: unknown target '$target' (native or aarch64)" >&2
    exit 2
    ;;
esac
mkdir -p "$build"
log="$build/build.log"  # quiet on success, the whole log on failure (ninja reports errors on stdout)
if ! { cmake -S "$root/tests/native" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "${configure[@]}" &&
       cmake --build "$build" -j "${JOBS:-2}"; } >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
exec "${run[@]}" "$build/kernel_check" ${3:+"$3"}
