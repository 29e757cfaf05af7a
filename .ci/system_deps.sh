#!/usr/bin/env bash
# System packages the test suite needs beyond Python: the Arm cross compiler
# with newlib and QEMU for the Cortex-M firmware tests (tests/test_mcu.py), and
# the aarch64 cross compiler and qemu-user for the NEON kernel check
# (tests/test_aarch64.py, .ci/aarch64_check.sh).
# Installs them with apt-get unless all are present already.
set -euo pipefail
packages=(gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm g++-aarch64-linux-gnu qemu-user)
missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages present: ${packages[*]}"
  exit 0
fi
echo "installing system packages: ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
