"""Shared by the CUDA tests (tests/test_cuda.py, tests/test_sparse_cuda.py): the
`needs_gpu` skip marker, and the build helper for the CPU emulation of the CUDA
kernels.

g++ compiles kernel sources from csrc/ops/cuda/ with -DMAMEXT_CUDA_EMULATION
against csrc/ops/cuda/emulation.h (blocks in sequence, each thread a std::thread,
real barriers and warp shuffles), together with a small extern "C" wrapper,
into a shared library loaded with ctypes. That checks the kernels' logic, not
the GPU toolchain or the hardware.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess

import pytest
import torch

import mamext

BUILT_WITH_CUDA = bool(mamext._C.build_info["cuda"])
HAS_GPU = torch.cuda.is_available()
if not BUILT_WITH_CUDA:
    _SKIP_REASON = "mamext was built without CUDA (MAMEXT_WITH_CUDA=0, or no CUDA torch / nvcc at build time)"
elif not HAS_GPU:
    _SKIP_REASON = "no CUDA GPU available (the CUDA kernels are compiled but cannot run here)"
else:
    _SKIP_REASON = ""
needs_gpu = pytest.mark.skipif(bool(_SKIP_REASON), reason=_SKIP_REASON or "n/a")

CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "csrc")
CUDA_SRC = os.path.join(CSRC, "ops", "cuda")


def build_emulation(tmp_dir, sources, capi, name):
    """Compile csrc/ops/cuda/<sources> + the C API text `capi` into tmp_dir/lib<name>.so; skip when impossible."""
    cxx = os.environ.get("CXX") or shutil.which("g++")
    if not os.path.isdir(CUDA_SRC):
        pytest.skip("csrc/ops/cuda not found next to tests/ (not a source checkout)")
    if not cxx:
        pytest.skip("no C++ compiler (g++ or $CXX) to build the CPU emulation of the CUDA kernels")
    capi_path = os.path.join(str(tmp_dir), "capi.cpp")
    with open(capi_path, "w") as f:
        f.write(capi)
    lib = os.path.join(str(tmp_dir), f"lib{name}.so")
    cmd = [cxx, "-std=c++20", "-O1", "-fPIC", "-shared", "-pthread", "-ffp-contract=off", "-Wall",
           "-Wno-unknown-pragmas", "-DMAMEXT_CUDA_EMULATION", f"-I{CSRC}", "-x", "c++",
           *[os.path.join(CUDA_SRC, s) for s in sources], capi_path, "-o", lib]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"emulation build failed:\n{' '.join(cmd)}\n{res.stderr[-4000:]}"
    return ctypes.CDLL(lib)
