"""Calibration: min/max observers and the asymmetric int8 activation parameters they give."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch

QMIN, QMAX = -128, 127


@dataclass
class MinMaxObserver:
    """Running minimum and maximum of every value seen (finite values only)."""

    low: float = float("inf")
    high: float = float("-inf")

    def observe(self, values: torch.Tensor, where: str) -> None:
        values = values.detach()
        if values.numel() == 0:
            return
        if not bool(torch.isfinite(values).all()):
            raise ValueError(f"mamext.quant.pack_integer: calibration produced non-finite values at {where}; "
                             "calibrate with finite inputs")
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))

    @property
    def seen(self) -> bool:
        return self.low <= self.high

    def params(self) -> Tuple[float, int]:
        """``(scale, zero_point)`` of the asymmetric int8 grid covering ``[min(low, 0), max(high, 0)]``.

        The range always contains 0, so the real value 0 has an exact code (the
        zero point): a ReLU is then the clamp ``q >= zero_point``, and a pruned
        connection's product is exactly 0 once the zero point is subtracted.
        """
        low, high = min(self.low, 0.0), max(self.high, 0.0)
        if not high > low:
            return 1.0, 0
        # a float32 value: the C header's float literal is then the exact scale
        scale = float(torch.tensor((high - low) / (QMAX - QMIN), dtype=torch.float32))
        zero_point = int(round(QMIN - low / scale))
        return scale, max(QMIN, min(QMAX, zero_point))


def quantize(values: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """int8 codes ``clamp(round(x / scale) + zero_point, -128, 127)`` (round half to even, in float64)."""
    codes = torch.round(values.detach().to(torch.float64) / scale)
    codes = torch.nan_to_num(codes, nan=0.0).clamp(QMIN - 256, QMAX + 256).to(torch.int64) + zero_point
    return codes.clamp(QMIN, QMAX).to(torch.int8)


def dequantize(codes: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """float32 values ``(q - zero_point) * scale``."""
    return ((codes.to(torch.int64) - zero_point).to(torch.float64) * scale).to(torch.float32)
