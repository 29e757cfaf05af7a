"""Shared fixtures: ISA levels and devices to run every kernel on."""

from __future__ import annotations

import pytest
import torch

import mamext

# The kernel levels of this build, lowest first (x86-64: default, avx2, avx512;
# aarch64: default, neon).
_LEVELS = list(mamext._C.build_info["cpu_kernels"])


def available_isas():
    best = mamext._C.detected_cpu_capability()
    return _LEVELS[: _LEVELS.index(best) + 1]


@pytest.fixture(params=_LEVELS)
def isa(request):
    """Run the test with the CPU kernels forced to one ISA level."""
    level = request.param
    if level not in available_isas():
        pytest.skip(f"this CPU does not support {level}")
    previous = mamext.cpu_capability()
    mamext._C._set_cpu_capability(level)
    try:
        yield level
    finally:
        mamext._C._set_cpu_capability(previous)


def devices():
    out = ["cpu"]
    out.append(pytest.param("cuda", marks=pytest.mark.skipif(
        not (torch.cuda.is_available() and mamext._C.build_info["cuda"]),
        reason="needs a CUDA GPU and mamext built with CUDA")))
    return out
