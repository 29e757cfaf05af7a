"""torch.library.opcheck on every mamext operator (schema, fake kernel, autograd
registration, AOT dispatch) on every device, from the sample arguments in
op_testing.opcheck_cases; an operator without cases fails the suite."""

from __future__ import annotations

import pytest
import torch

import mamext  # noqa: F401  (registers the operators)
from op_testing import DEVICES, mamext_ops, opcheck_cases

_OPS = sorted(opcheck_cases("cpu"))


def test_every_op_has_opcheck_cases():
    assert mamext_ops() == _OPS, "add sample arguments for new operators to op_testing.opcheck_cases"


@pytest.mark.parametrize("op", _OPS)
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device, op):
    for args, test_utils in opcheck_cases(device)[op]:
        kwargs = {} if test_utils is None else {"test_utils": test_utils}
        torch.library.opcheck(getattr(torch.ops.mamext, op).default, args, **kwargs)
