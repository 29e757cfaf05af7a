"""Property-based fuzzing of the dense MAM operator against the reference."""

from __future__ import annotations

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

import mamext  # noqa: E402
from op_testing import DenseOps, FLOAT_DTYPES, available_isas, check_dense_forward, sample  # noqa: E402


@st.composite
def problems(draw):
    M = draw(st.integers(0, 9))
    K = draw(st.integers(1, 70))
    N = draw(st.integers(1, 60))
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    kind = draw(st.sampled_from(["normal", "ints", "sparse", "special"]))
    seed = draw(st.integers(0, 2**31 - 1))
    isa = draw(st.sampled_from(available_isas()))
    bias = draw(st.booleans())
    return M, K, N, dtype, kind, seed, isa, bias


@settings(max_examples=150, deadline=None)
@given(problems())
def test_fuzz_against_reference(p):
    M, K, N, dtype, kind, seed, isa, bias = p
    g = torch.Generator().manual_seed(seed)
    x = sample((M, K), kind, g, dtype)
    w = sample((N, K), kind, g, dtype)
    b = torch.randn(N, generator=g).to(dtype) if bias else None
    previous = mamext.cpu_capability()
    mamext._C._set_cpu_capability(isa)
    try:
        check_dense_forward(DenseOps("cpu"), x, w, b)
    finally:
        mamext._C._set_cpu_capability(previous)
