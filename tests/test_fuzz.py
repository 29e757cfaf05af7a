"""Property-based fuzzing of the dense MAM operator against the reference."""

from __future__ import annotations

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

import mamext  # noqa: E402
from mamext.reference import mam_linear_reference  # noqa: E402

from conftest import available_isas  # noqa: E402


@st.composite
def problems(draw):
    M = draw(st.integers(0, 9))
    K = draw(st.integers(1, 70))
    N = draw(st.integers(1, 60))
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]))
    kind = draw(st.sampled_from(["normal", "ints", "sparse", "special"]))
    seed = draw(st.integers(0, 2**31 - 1))
    isa = draw(st.sampled_from(available_isas()))
    bias = draw(st.booleans())
    return M, K, N, dtype, kind, seed, isa, bias


def _values(shape, kind, g):
    if kind == "normal":
        return torch.randn(shape, generator=g)
    if kind == "ints":
        return torch.randint(-3, 4, shape, generator=g).float()
    if kind == "sparse":
        return torch.randn(shape, generator=g) * (torch.rand(shape, generator=g) < 0.3)
    t = torch.randn(shape, generator=g)
    specials = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e30, -1e-30])
    pick = torch.rand(shape, generator=g) < 0.1
    t[pick] = specials[torch.randint(0, len(specials), (int(pick.sum()),), generator=g)]
    return t


@settings(max_examples=150, deadline=None)
@given(problems())
def test_fuzz_against_reference(p):
    M, K, N, dtype, kind, seed, isa, bias = p
    g = torch.Generator().manual_seed(seed)
    x = _values((M, K), kind, g).to(dtype)
    w = _values((N, K), kind, g).to(dtype)
    b = torch.randn(N, generator=g).to(dtype) if bias else None
    previous = mamext.cpu_capability()
    mamext._C._set_cpu_capability(isa)
    try:
        out, amax, amin = mamext.mam_linear(x, w, b, return_indices=True)
        inf = torch.ops.mamext.mam_linear_inference(x, w, b)
    finally:
        mamext._C._set_cpu_capability(previous)
    rout, ramax, ramin = mam_linear_reference(x, w, b, return_indices=True)
    torch.testing.assert_close(out, rout, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(inf, rout, rtol=0, atol=0, equal_nan=True)
    finite = ~torch.isnan(rout)
    assert torch.equal(torch.signbit(out[finite]), torch.signbit(rout[finite]))
    assert torch.equal(torch.signbit(inf[finite]), torch.signbit(rout[finite]))
    assert torch.equal(amax, ramax)
    assert torch.equal(amin, ramin)
