"""Kernel-level checks outside the extension (tests/native): every ISA build of
the CPU kernels against a scalar reference, bit for bit (values with the sign of
a zero, NaN, indices), natively and cross-compiled for aarch64 (portable and
NEON kernels) under qemu-aarch64.

The aarch64 check needs Debian's g++-aarch64-linux-gnu and qemu-user: skipped
without them, except in CI (CI=true), where a missing tool is a failure
(.ci/aarch64_check.sh installs them).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "native" / "kernel_check.sh"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _require(tools, hint):
    missing = [t for t in tools if shutil.which(t) is None]
    if not missing:
        return
    message = f"missing {', '.join(missing)} ({hint})"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def _run_check(target):
    proc = subprocess.run(["bash", str(SCRIPT), target], capture_output=True, text=True, cwd=ROOT)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"kernel check ({target}) failed:\n{output[-6000:]}"
    assert " 0 failed" in output, output[-6000:]
    isas = next(line for line in output.splitlines() if line.startswith("ISAs checked:")).split(":")[1].split()
    return isas


def test_kernels_native():
    _require(["cmake", "c++"], "a C++ compiler and cmake")
    isas = _run_check("native")
    assert isas[0] == "default"
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert set(isas) <= {"default", "avx2", "avx512"}
    elif platform.machine().lower() in ("aarch64", "arm64"):
        assert isas == ["default", "neon"]


def test_kernels_aarch64_under_qemu():
    _require(
        ["cmake", "aarch64-linux-gnu-g++", "qemu-aarch64"],
        "Debian packages g++-aarch64-linux-gnu and qemu-user; .ci/aarch64_check.sh installs them",
    )
    assert _run_check("aarch64") == ["default", "neon"]
