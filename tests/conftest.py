"""Shared fixtures: the ISA level to run the CPU kernels at (levels and devices: op_testing.py)."""

from __future__ import annotations

import pytest

import mamext
from op_testing import ISA_LEVELS, available_isas


@pytest.fixture(params=ISA_LEVELS)
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
