"""Fixed-point arithmetic of the integer-only path: quantised multipliers, rounding, requantisation.

A positive real multiplier ``M`` is stored as a Q31 integer ``m`` in
``[2**30, 2**31)`` and a right shift ``r`` in ``[1, 62]`` with
``M ~= m * 2**-r``. Requantising an int32 accumulator is then one exact
64-bit product and one rounding right shift::

    requantize(acc) = (acc * m + 2**(r - 1)) >> r        (arithmetic shift: round half up)

The product of two int32 values fits int64, and so does the rounding term, so
this is exact integer arithmetic on every target (the C runtime computes the
same expression in ``int64_t``).
"""

from __future__ import annotations

import math
from typing import Tuple

import torch

Q31_ONE = 1 << 31
MAX_RIGHT_SHIFT = 62
INT32_MAX = 2 ** 31 - 1


def quantize_multiplier(multiplier: float) -> Tuple[int, int]:
    """``(m, r)`` with ``m`` in ``[2**30, 2**31)`` and ``r`` in ``[1, 62]`` (tiny multipliers: see below).

    ``m * 2**-r`` is ``multiplier`` rounded to 31 significant bits (round half
    to even). Below ``2**-31`` the shift stops at 62 and ``m = round(multiplier
    * 2**62)`` keeps fewer bits (0 below ``2**-63``: the layer output is then
    the output zero point); a multiplier of ``2**30`` or more is refused.
    """
    if not (math.isfinite(multiplier) and multiplier > 0.0):
        raise ValueError(f"mamext.quant: requantisation multiplier must be positive and finite, got {multiplier!r}")
    fraction, exponent = math.frexp(multiplier)       # multiplier = fraction * 2**exponent, fraction in [0.5, 1)
    m = round(fraction * Q31_ONE)                      # exact float product, round half to even
    if m == Q31_ONE:
        m, exponent = m // 2, exponent + 1
    r = 31 - exponent
    if r < 1:
        raise ValueError(f"mamext.quant: requantisation multiplier {multiplier:g} is too large (at most 2**30); "
                         "the calibration ranges of consecutive layers are inconsistent")
    if r > MAX_RIGHT_SHIFT:
        m, r = round(multiplier * 2.0 ** MAX_RIGHT_SHIFT), MAX_RIGHT_SHIFT
    return int(m), int(r)


def requantize(acc: torch.Tensor, multiplier: torch.Tensor, right_shift: torch.Tensor) -> torch.Tensor:
    """``(acc * m + 2**(r - 1)) >> r`` elementwise in int64 (``acc`` int32-valued, broadcast over neurons)."""
    acc = acc.to(torch.int64)
    m = multiplier.to(torch.int64)
    r = right_shift.to(torch.int64)
    return (acc * m + (torch.ones_like(r) << (r - 1))) >> r


def round_half_even(values: torch.Tensor) -> torch.Tensor:
    """Round float64 values to the nearest integer, ties to even (``torch.round``), as int64."""
    return torch.round(values.to(torch.float64)).to(torch.int64)
