"""Checks of MAMLinear's ``beta`` buffer and a sync-free read of its value.

``beta`` is a public buffer: it may be written by :meth:`MAMLinear.set_beta`,
in place (``fill_``, ``copy_``, ``+=``), by ``load_state_dict`` or by
assignment. The forward must follow every such write without reading a GPU
tensor on each call, so the layer keeps a *mirror* of the value together with
a key of the tensor it was taken from (the tensor object, its version counter
and its data pointer; every in-place write bumps the version). While the key
matches, the mirror is current. Where reading is free (a plain CPU tensor)
the value is read on every forward anyway, which also sees writes that bypass
the version counter (through ``beta.data``). Elsewhere a changed key makes
the value unknown and the forward blends with the tensor itself, which is
exact for every beta.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

BetaKey = Tuple[object, int, int]


def beta_problem(value) -> Optional[str]:
    """Why ``value`` cannot be a MAMLinear ``beta`` (a scalar in [0, 1]), or None."""
    if not isinstance(value, torch.Tensor):
        return f"must be a tensor, got {type(value).__name__}"
    if value.shape != ():
        return f"must be a scalar tensor (shape ()), got shape {tuple(value.shape)}"
    if value.is_complex() or value.dtype == torch.bool:
        return f"must be a real number, got dtype {value.dtype}"
    if value.device.type == "meta":
        return None
    number = float(value)
    if not (math.isfinite(number) and 0.0 <= number <= 1.0):
        return f"must be in [0, 1], got {number}"
    return None


def beta_key(beta: torch.Tensor) -> Optional[BetaKey]:
    """What identifies the current contents of ``beta`` without reading it; None if not trackable
    (inference tensors have no version counter; fake and functorch tensors no storage)."""
    try:
        return (beta, beta._version, beta.data_ptr())
    except RuntimeError:
        return None


def same_key(a: Optional[BetaKey], b: Optional[BetaKey]) -> bool:
    return a is not None and b is not None and a[0] is b[0] and a[1:] == b[1:]


def free_to_read(beta: torch.Tensor) -> bool:
    """Reading ``beta`` costs no device sync: a plain CPU tensor."""
    return (type(beta) is torch.Tensor and beta.is_cpu
            and not torch._C._functorch.is_functorch_wrapped_tensor(beta))


def read_if_free(beta: torch.Tensor, where: str) -> Optional[float]:
    """The value of ``beta`` when :func:`free_to_read`, else None.

    Raises ``ValueError`` naming ``where`` if the value read is not a valid beta.
    """
    if not free_to_read(beta):
        return None
    problem = beta_problem(beta)
    if problem is not None:
        raise ValueError(f"{where}: beta {problem}")
    return float(beta)


def read_any(beta: torch.Tensor) -> Optional[float]:
    """The value of ``beta`` on any device (a device sync on GPUs); None where it has no data."""
    if beta.device.type == "meta" or beta.shape != ():
        return None
    try:
        return float(beta)
    except RuntimeError:
        return None
