"""The CPU emulation of the CUDA kernels, shared by tests/test_cuda.py and
tests/test_sparse_cuda.py: the `needs_gpu` skip marker, the build of an
emulation library, and the ctypes base of the kernel wrappers.

g++ compiles kernel sources from csrc/ with -DMAMEXT_CUDA_EMULATION against
the CUDA emulation header (csrc/ops/cuda/emulation.h: blocks in sequence, the
threads of a block as fibers switched at every barrier and warp shuffle),
together with a small extern "C" wrapper, into a shared library loaded with
ctypes. That checks the kernels' logic, not the GPU toolchain or the hardware.

Libraries are cached by content: the key hashes the compiler, the flags, the
wrapper and every file under csrc/, so an unchanged tree reuses the library
built by an earlier run (build/cuda_emulation/, or $MAMEXT_EMULATION_CACHE).
The translation units of one library compile in parallel.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile

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

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
CSRC = os.path.join(ROOT, "csrc")
# $MAMEXT_EMULATION_CXXFLAGS adds flags, e.g. "-O0 -g" to debug a kernel, "-fsanitize=alignment" (misaligned
# dereferences reported on stderr), or -DMAMEXT_EMU_UCONTEXT (the portable fiber switch).
FLAGS = ["-std=c++20", "-O1", "-fPIC", "-pthread", "-ffp-contract=off", "-Wall", "-Wno-unknown-pragmas",
         "-DMAMEXT_CUDA_EMULATION", *shlex.split(os.environ.get("MAMEXT_EMULATION_CXXFLAGS", ""))]


def _find_source(name):
    """The path of csrc/**/<name> (a kernel source found wherever the tree keeps it)."""
    hits = [os.path.join(d, name) for d, _, files in os.walk(CSRC) if name in files]
    assert len(hits) == 1, f"expected one {name} under {CSRC}, found {hits}"
    return hits[0]


def _tree_digest():
    """Hash of every file under csrc/ (any header a kernel includes is one of them)."""
    h = hashlib.sha256()
    for d, dirs, files in sorted(os.walk(CSRC)):
        dirs.sort()
        for f in sorted(files):
            path = os.path.join(d, f)
            h.update(os.path.relpath(path, CSRC).encode() + b"\0")
            with open(path, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


def _cache_dir():
    path = os.environ.get("MAMEXT_EMULATION_CACHE") or os.path.join(ROOT, "build", "cuda_emulation")
    try:
        os.makedirs(path, exist_ok=True)
        return path
    except OSError:  # a read-only checkout: a per-run directory
        return tempfile.mkdtemp(prefix="mamext_cuda_emulation_")


def _compile(cxx, sources, capi, lib, workdir):
    """Compile each translation unit in parallel, then link `lib`; asserts on a compiler error."""
    capi_path = os.path.join(workdir, "capi.cpp")
    with open(capi_path, "w") as f:
        f.write(capi)
    # "cuda/<file>" includes resolve next to the kernels and next to the emulation header
    cuda_dirs = {os.path.dirname(s) for s in [*sources, _find_source("emulation.h")]}
    includes = sorted({f"-I{CSRC}"} | {f"-I{os.path.dirname(d)}" for d in cuda_dirs})
    jobs = []
    for i, src in enumerate([*sources, capi_path]):
        obj = os.path.join(workdir, f"{i}.o")
        cmd = [cxx, *FLAGS, *includes, "-x", "c++", "-c", src, "-o", obj]
        jobs.append((cmd, obj, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    for cmd, _, proc in jobs:
        _, err = proc.communicate()
        assert proc.returncode == 0, f"emulation build failed:\n{' '.join(cmd)}\n{err[-4000:]}"
    cmd = [cxx, *FLAGS, "-shared", *[obj for _, obj, _ in jobs], "-o", lib]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"emulation link failed:\n{' '.join(cmd)}\n{res.stderr[-4000:]}"


def build_emulation(source_names, capi, name):
    """The library lib<name>.so of the kernel sources `source_names` (file names under csrc/) and the
    C API text `capi`, built or taken from the cache, loaded with ctypes; skips when impossible."""
    cxx = os.environ.get("CXX") or shutil.which("g++")
    if not os.path.isdir(CSRC):
        pytest.skip("csrc/ not found next to tests/ (not a source checkout)")
    if not cxx:
        pytest.skip("no C++ compiler (g++ or $CXX) to build the CPU emulation of the CUDA kernels")
    sources = [_find_source(s) for s in source_names]
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([version, *FLAGS, *source_names, capi, _tree_digest()]).encode()).hexdigest()
    cache = _cache_dir()
    lib = os.path.join(cache, f"lib{name}-{key[:20]}.so")
    if not os.path.exists(lib):
        with tempfile.TemporaryDirectory(dir=cache) as work:
            tmp_lib = os.path.join(work, os.path.basename(lib))
            _compile(cxx, sources, capi, tmp_lib, work)
            os.replace(tmp_lib, lib)  # atomic: a concurrent run sees the whole library or none
        for old in os.listdir(cache):  # libraries of older trees
            if old.startswith(f"lib{name}-") and old != os.path.basename(lib):
                os.remove(os.path.join(cache, old))
    return ctypes.CDLL(lib)


class EmulatedKernels:
    """Base of the ctypes wrappers: `signatures` maps each C function to its argument types."""

    signatures: dict = {}

    def __init__(self, lib):
        for fn, argtypes in self.signatures.items():
            getattr(lib, fn).argtypes = argtypes
        self.lib = lib

    @staticmethod
    def ptr(t):
        return None if t is None else t.data_ptr()
