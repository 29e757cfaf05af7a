"""torch.library.opcheck on every mamext operator (schema, fake kernel, autograd
registration, AOT dispatch) on every device, from the sample arguments in
op_testing.opcheck_cases and, for the CPU-only convolution operators, below; an
operator without cases fails the suite."""

from __future__ import annotations

import pytest
import torch

import mamext  # noqa: F401  (registers the operators)
from op_testing import DEVICES, INFERENCE_ONLY_GRAD_CHECKS, mamext_ops, opcheck_cases

# Operators with a CPU kernel only (on CUDA, mamext.mam_conv2d takes the patch-row route).
CPU_ONLY = ("mam_conv2d_forward", "mam_conv2d_inference", "mam_conv2d_backward")


def conv_opcheck_cases():
    """mam_conv2d_* cases on the CPU: direct and dense paths, groups, stride, padding, dilation, float16."""
    g = torch.Generator().manual_seed(5)

    def grad(t):
        return t.detach().clone().requires_grad_()

    cases = {op: [] for op in CPU_ONLY}
    for first, (c_out, groups, args, dtype) in enumerate(((2, 1, ([1, 2], [2, 0], [2, 1]), torch.float32),
                                                         (32, 2, ([2, 1], [0, 1], [1, 2]), torch.float16))):
        x = torch.randn(2, 4, 7, 6, generator=g).to(dtype)
        w = torch.randn(c_out, 4 // groups, 3, 2, generator=g).to(dtype)
        b = torch.randn(c_out, generator=g).to(dtype)
        conv = (*args, groups)
        out, amax, amin = torch.ops.mamext.mam_conv2d_forward(x, w, b, *conv)
        gout = torch.randn(out.shape, generator=g).to(dtype)
        if first == 0:
            cases["mam_conv2d_forward"].append(((grad(x), grad(w), grad(b), *conv), None))
            cases["mam_conv2d_inference"].append(((grad(x), grad(w), grad(b), *conv), INFERENCE_ONLY_GRAD_CHECKS))
        else:
            cases["mam_conv2d_forward"].append(((x, w, None, *conv), None))
            cases["mam_conv2d_inference"].append(((x, w, b, *conv), None))
        cases["mam_conv2d_backward"].append(((gout, x, w, amax, amin, *conv, [True, first == 0]), None))
    return cases


def all_cases(device):
    cases = opcheck_cases(device)
    if device == "cpu":
        cases.update(conv_opcheck_cases())
    return cases


_OPS = sorted(all_cases("cpu"))


def test_every_op_has_opcheck_cases():
    assert mamext_ops() == _OPS, "add sample arguments for new operators to op_testing.opcheck_cases"


@pytest.mark.parametrize("op", _OPS)
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device, op):
    if device != "cpu" and op in CPU_ONLY:
        pytest.skip(f"{op} has a CPU kernel only")
    for args, test_utils in all_cases(device)[op]:
        kwargs = {} if test_utils is None else {"test_utils": test_utils}
        torch.library.opcheck(getattr(torch.ops.mamext, op).default, args, **kwargs)
