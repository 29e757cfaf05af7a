"""Shared by the operator tests: what to run on (ISA levels, devices), sample
inputs, the reference checks, and bit-exact comparisons.

* ISA_LEVELS / available_isas(): the CPU kernel levels (the `isa` fixture in
  conftest.py forces each in turn); DEVICES: "cpu", and "cuda" when a GPU and
  a CUDA build are present. The third axis, the CPU emulation of the CUDA
  kernels, is tests/_cuda_emulation.py; its dense wrapper is a DenseOps like
  the device ones, so one check serves all three.
* sample(): random and adversarial inputs (ties, all-negative products,
  zeros of both signs, NaN / inf, overflow); huge_k_problem(): K past 65,536.
* assert_same(): values (NaN where the reference has NaN, signed zeros);
  assert_bitwise(): identical bits except NaN payloads; assert_indices().
* check_dense_forward(): both dense forwards (training forward with indices,
  inference) against mamext.reference.
"""

from __future__ import annotations

import pytest
import torch

import mamext
from mamext.reference import mam_linear_reference

ISA_LEVELS = tuple(mamext._C.build_info["isa_levels"])
FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
HAS_CUDA = torch.cuda.is_available() and bool(mamext._C.build_info["cuda"])
DEVICES = ("cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not HAS_CUDA, reason="needs a CUDA GPU and mamext built with CUDA")))


def available_isas():
    """The ISA levels this CPU runs, lowest first."""
    best = mamext._C.detected_cpu_capability()
    return list(ISA_LEVELS[: ISA_LEVELS.index(best) + 1])


# ------------------------------------------------------------ sample inputs ---

_SPECIALS = (0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e30, -1e-30)


def sample(shape, kind, gen, dtype=torch.float32):
    """A float32 tensor of `kind`, converted to dtype:
    normal: standard normal; ints: integers in [-3, 3] (many exact ties and zeros);
    negative: in (-1.1, -0.1] (all products of a positive row are negative);
    sparse: normal with 70% zeros; special: normal with 10% zeros of both signs,
    infinities, NaN and extreme magnitudes."""
    if kind == "normal":
        t = torch.randn(shape, generator=gen)
    elif kind == "ints":
        t = torch.randint(-3, 4, shape, generator=gen).float()
    elif kind == "negative":
        t = -torch.rand(shape, generator=gen) - 0.1
    elif kind == "sparse":
        t = torch.randn(shape, generator=gen) * (torch.rand(shape, generator=gen) < 0.3)
    elif kind == "special":
        t = torch.randn(shape, generator=gen)
        pick = torch.rand(shape, generator=gen) < 0.1
        values = torch.tensor(_SPECIALS)
        t[pick] = values[torch.randint(0, len(values), (int(pick.sum()),), generator=gen)]
    else:
        raise ValueError(f"unknown sample kind {kind!r}")
    return t.to(dtype)


HUGE_K = 70_000  # past 65,536: indices must not wrap at 16 bits


def huge_k_problem(rows, neurons):
    """x (rows, HUGE_K) and w (neurons, HUGE_K) with the extremes planted at known indices;
    assert_huge_k_indices checks them."""
    g = torch.Generator().manual_seed(11)
    x = torch.rand(rows, HUGE_K, generator=g) + 0.5
    w = torch.rand(neurons, HUGE_K, generator=g) * 0.1
    w[0, 69_999] = 5.0
    w[1, 65_536] = 5.0
    w[2, 40_000] = -5.0
    w[3, 66_000] = -3.0
    w[3, 65_537] = 4.0
    return x, w


def assert_huge_k_indices(amax, amin):
    assert (amax[:, 0] == 69_999).all() and (amax[:, 1] == 65_536).all()
    assert (amin[:, 2] == 40_000).all() and (amin[:, 3] == 66_000).all() and (amax[:, 3] == 65_537).all()


# -------------------------------------------------------------- comparisons ---

def assert_same(out, ref, signs="non_nan"):
    """Equal values, NaN exactly where the reference has NaN, and equal sign bits:
    signs="non_nan" of every non-NaN value (so of zeros), "all" of NaNs too, None not checked."""
    assert out.dtype == ref.dtype and out.shape == ref.shape, (out.dtype, ref.dtype, out.shape, ref.shape)
    torch.testing.assert_close(out, ref, rtol=0, atol=0, equal_nan=True)
    if signs == "all":
        assert torch.equal(torch.signbit(out), torch.signbit(ref)), "sign bits differ"
    elif signs == "non_nan":
        finite = ~torch.isnan(ref)
        assert torch.equal(torch.signbit(out[finite]), torch.signbit(ref[finite])), "sign of zero differs"
    else:
        assert signs is None, f"unknown signs mode {signs!r}"


_INT_OF_SIZE = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def assert_bitwise(a, b):
    """Identical bits (signed zeros included), NaN at the same places (payloads aside: the GPU
    makes canonical NaNs)."""
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    nan_a, nan_b = torch.isnan(a), torch.isnan(b)
    assert torch.equal(nan_a, nan_b), f"NaN at different places, first {(nan_a != nan_b).nonzero()[:5].tolist()}"
    as_int = _INT_OF_SIZE[a.element_size()]
    ia = a.masked_fill(nan_a, 0).contiguous().view(as_int)
    ib = b.masked_fill(nan_b, 0).contiguous().view(as_int)
    bad = (ia != ib).nonzero()
    assert bad.numel() == 0, (f"{bad.shape[0]} elements differ in bits, first at {bad[:5].tolist()}: "
                              f"{a[tuple(bad[0])]} vs {b[tuple(bad[0])]}")


def assert_indices(got, want):
    """Equal int32 index tensors."""
    assert got.dtype == torch.int32 and want.dtype == torch.int32, (got.dtype, want.dtype)
    assert torch.equal(got, want), f"indices differ at {(got != want).nonzero()[:5].tolist()}"


def assert_same_forward(got, want):
    """A training forward's (out, argmax, argmin) against the reference's: the output as
    :func:`assert_same`, both index maps equal."""
    assert_same(got[0], want[0])
    assert_indices(got[1], want[1])
    assert_indices(got[2], want[2])


# ------------------------------------------------------ dense forward check ---

class DenseOps:
    """The dense forwards on a device, CPU tensors in and out (the emulated kernels offer the same)."""

    def __init__(self, device):
        self.device = device

    def _to(self, t):
        return None if t is None else t.to(self.device)

    def forward(self, x, w, b=None):
        out = mamext.mam_linear(self._to(x), self._to(w), self._to(b), return_indices=True)
        return tuple(t.cpu() for t in out)

    def inference(self, x, w, b=None):
        return torch.ops.mamext.mam_linear_inference(self._to(x), self._to(w), self._to(b)).cpu()


def check_dense_forward(ops, x, w, b=None, *, inference=True, signs="non_nan"):
    """Both forwards of `ops` (a DenseOps or the emulated kernels) against the reference: values,
    NaN places and signs (assert_same) and the argmax / argmin indices; returns the training
    forward's (out, amax, amin)."""
    out, amax, amin = ops.forward(x, w, b)
    rout, ramax, ramin = mam_linear_reference(x, w, b, return_indices=True)
    assert_same(out, rout, signs)
    assert_indices(amax, ramax)
    assert_indices(amin, ramin)
    if inference:
        assert_same(ops.inference(x, w, b), rout, signs)
    return out, amax, amin


# ------------------------------------------------------------ opcheck cases ---

def mamext_ops():
    """Names of every operator registered in the mamext namespace."""
    return sorted(n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("mamext::"))


# opcheck's checks that hold for an inference-only op called on inputs that require grad (its
# backward raises by design, so the autograd-running checks do not apply).
INFERENCE_ONLY_GRAD_CHECKS = ("test_schema", "test_autograd_registration", "test_faketensor")


def _dense_opcheck_cases(x, w, b, gout, grad):
    """mam_linear_* cases for one dtype (x, w, b, gout on the device)."""
    _, amax, amin = torch.ops.mamext.mam_linear_forward(x, w, b)
    return {
        "mam_linear_forward": [((grad(x), grad(w), grad(b)), None), ((x, w, None), None), ((x[0], w, b), None)],
        "mam_linear_inference": [((x, w, b), None), ((x, w, None), None), ((x[0], w, b), None),
                                 ((grad(x), grad(w), grad(b)), INFERENCE_ONLY_GRAD_CHECKS)],
        "mam_linear_backward": [((gout, x, w, amax, amin, [True, True]), None),
                                ((gout, x, w, amax, amin, [False, True]), None)],
    }


def opcheck_cases(device):
    """{op name: [(args, test_utils)]}: sample arguments of every mamext op for torch.library.opcheck
    (test_utils None: all of opcheck's checks). A new op must add its cases here."""
    g = torch.Generator().manual_seed(4)
    x, w, b = torch.randn(5, 3, 12, generator=g), torch.randn(9, 12, generator=g), torch.randn(9, generator=g)
    gout = torch.randn(5, 3, 9, generator=g)
    keep = torch.rand(9, 12, generator=g) < 0.4
    values = w[keep]
    indices = keep.nonzero()[:, 1].to(torch.uint8)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int32), keep.sum(1).cumsum(0).to(torch.int32)])
    x, w, b, gout, values, indices, offsets = (t.to(device) for t in (x, w, b, gout, values, indices, offsets))

    def grad(t):
        return t.detach().clone().requires_grad_()

    cases = {}
    for dtype in (torch.float32, torch.float16):
        for op, op_cases in _dense_opcheck_cases(*(t.to(dtype) for t in (x, w, b, gout)), grad).items():
            cases.setdefault(op, []).extend(op_cases)
    x2, packed = x.reshape(15, 12), (values, indices, offsets)
    cases["packed_linear"] = [((x2, *packed, b, None, 12, True), None),
                              ((x2.t().contiguous().t(), *packed, None, None, 12, False), None),  # column-major
                              ((grad(x), *packed, None, None, 12, True), INFERENCE_ONLY_GRAD_CHECKS)]
    return cases
