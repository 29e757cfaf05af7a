"""Integer-only convolution and pooling on int8 codes of (C, H, W) samples: the reference of the C export.

A convolution is the integer layer of :class:`~mamext.quant.IntLinear` applied
to every patch (``F.unfold`` order: channel, kernel row, kernel column): int8
weight codes with one scale per output channel, products
``w_q * (x_q - x_zp)`` in int32, MAM ``max + min`` or MAC sum, bias, and the
same requantisation. Zero padding is the real value 0, i.e. the code
``x_zp``, whose product is 0: a candidate of the max and the min exactly as a
pruned connection's. The weight is stored dense (a pruned weight is the code 0).

Pooling keeps the scale and zero point: max pooling takes the largest code
(padding never wins); average pooling divides ``s = sum(x_q - x_zp)`` over the
window (padding adds 0) by the divisor and rounds half away from zero:
``y = x_zp + sign(s) * ((|s| + d // 2) // d)``, clamped to int8.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.utils import _pair

from ._fixed_point import requantize
from ._layers import IntLinear, set_requantization
from ._observer import QMAX, QMIN

# products of one chunk of samples at a time (int64 elements)
_CHUNK_ELEMENTS = 1 << 22


def explicit_padding(padding, kernel, dilation) -> Tuple[int, int, int, int]:
    """(top, left, bottom, right) of a convolution's ``padding`` (ints, a pair, ``"valid"`` or ``"same"``)."""
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":   # as F.conv2d: the odd extra row/column goes to the end
        totals = [d * (k - 1) for d, k in zip(_pair(dilation), _pair(kernel))]
        return totals[0] // 2, totals[1] // 2, totals[0] - totals[0] // 2, totals[1] - totals[1] // 2
    p_h, p_w = _pair(padding)
    return p_h, p_w, p_h, p_w


def _windows(x: torch.Tensor, kernel, stride, padding4, dilation, fill: int) -> torch.Tensor:
    """(B, C, H_out, W_out, k_h, k_w) windows of int64 ``x`` padded with ``fill`` (top, left, bottom, right)."""
    top, left, bottom, right = padding4
    if any(padding4):
        x = F.pad(x, (left, right, top, bottom), value=fill)
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    view = x.unfold(2, spans[0], stride[0]).unfold(3, spans[1], stride[1])
    return view[..., ::dilation[0], ::dilation[1]]


class IntConv2d(nn.Module):
    """A MAM (``mam=True``) or MAC convolution computing only with integers.

    Buffers: ``weight`` (int8 codes, ``(C_out, C_in / groups, k_h, k_w)``),
    ``bias`` (int32), ``multiplier`` (int32 Q31) and ``right_shift`` (int32);
    ``padding`` is ``(top, left, bottom, right)``. Per output channel ``o``
    and position, over the patch ``k``, in int32::

        acc = max_k p_k + min_k p_k + bias[o]     (MAM)     p_k = weight[o, k] * (x_k - input_zero_point)
        acc = sum_k p_k + bias[o]                 (MAC)
        y   = clamp(((acc * multiplier[o] + 2**(r - 1)) >> r) + output_zero_point, low, high)
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, multiplier: torch.Tensor,
                 right_shift: torch.Tensor, *, mam: bool, stride, padding: Sequence[int], dilation, groups: int,
                 input_zero_point: int, output_zero_point: int, low: int = QMIN, high: int = QMAX,
                 input_scale: float = 1.0, output_scale: float = 1.0):
        super().__init__()
        self.mam, self.groups = bool(mam), int(groups)
        self.stride, self.dilation = tuple(_pair(stride)), tuple(_pair(dilation))
        self.padding = tuple(int(p) for p in padding)
        self.register_buffer("weight", weight.to(torch.int8).contiguous())
        set_requantization(self, bias, multiplier, right_shift, (input_zero_point, output_zero_point), (low, high),
                           (input_scale, output_scale))
        if self.weight.dim() != 4 or self.groups < 1 or self.weight.shape[0] % self.groups:
            raise ValueError("IntConv2d: expected a (C_out, C_in / groups, k_h, k_w) weight with C_out divisible by "
                             f"groups, got {tuple(self.weight.shape)} and groups={self.groups}")
        if len(self.padding) != 4 or min(self.padding) < 0 or min(self.stride + self.dilation) < 1:
            raise ValueError(f"IntConv2d: expected padding (top, left, bottom, right) >= 0 and stride, dilation >= 1, "
                             f"got padding={self.padding}, stride={self.stride}, dilation={self.dilation}")
        for what, t in (("bias", self.bias), ("multiplier", self.multiplier), ("right_shift", self.right_shift)):
            if tuple(t.shape) != (self.weight.shape[0],):
                raise ValueError(f"IntConv2d: {what} must hold one entry per output channel ({self.weight.shape[0]})")

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1] * self.groups

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    @property
    def kernel_size(self) -> Tuple[int, int]:
        return tuple(self.weight.shape[2:])

    @classmethod
    def from_float(cls, weight: torch.Tensor, bias: Optional[torch.Tensor], *, mam: bool, stride,
                   padding: Sequence[int], dilation, groups: int, input_scale: float, input_zero_point: int,
                   output_scale: float, output_zero_point: int, relu: bool) -> "IntConv2d":
        """Quantise a dense float weight (a pruned weight is 0) exactly as :meth:`IntLinear.from_float`
        quantises the rows ``weight[o].flatten()`` (codes, per-channel scales, bias, int32 checks)."""
        rows = IntLinear.from_float(weight.reshape(weight.shape[0], -1), bias, mam=mam, input_scale=input_scale,
                                    input_zero_point=input_zero_point, output_scale=output_scale,
                                    output_zero_point=output_zero_point, relu=relu)
        return cls(rows.dense_codes().reshape(weight.shape), rows.bias, rows.multiplier, rows.right_shift,
                   mam=mam, stride=stride, padding=padding, dilation=dilation, groups=groups,
                   input_zero_point=input_zero_point, output_zero_point=output_zero_point, low=rows.low,
                   high=rows.high, input_scale=input_scale, output_scale=output_scale)

    def accumulate(self, codes: torch.Tensor) -> torch.Tensor:
        """int32-valued (int64 dtype) accumulators (B, C_out, H_out, W_out), bias included."""
        x = codes.to(torch.int64) - self.input_zero_point
        view = _windows(x, self.kernel_size, self.stride, self.padding, self.dilation, 0)
        B, C, h_out, w_out = view.shape[:4]
        g = self.groups
        patches = view.reshape(B, g, C // g, h_out, w_out, *self.kernel_size).permute(0, 1, 3, 4, 2, 5, 6)
        patches = patches.reshape(B, g, h_out * w_out, 1, -1)                  # (B, g, L, 1, K)
        w = self.weight.to(torch.int64).reshape(g, 1, self.out_channels // g, -1)  # (g, 1, C_out / g, K)
        products = patches * w[None]                                          # (B, g, L, C_out / g, K)
        acc = products.amax(-1) + products.amin(-1) if self.mam else products.sum(-1)
        acc = acc.permute(0, 1, 3, 2).reshape(B, self.out_channels, h_out, w_out)
        return acc + self.bias.to(torch.int64)[None, :, None, None]

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.dtype != torch.int8:
            raise TypeError(f"IntConv2d: expected int8 codes, got {codes.dtype}")
        if codes.dim() != 4 or codes.shape[1] != self.in_channels:
            raise ValueError(f"IntConv2d: expected codes of shape (B, {self.in_channels}, H, W), got "
                             f"{tuple(codes.shape)}")
        per_sample = max(1, self.weight.numel() * codes.shape[2] * codes.shape[3] // self.groups)
        outputs = []
        for chunk in codes.split(max(1, _CHUNK_ELEMENTS // per_sample)):
            y = requantize(self.accumulate(chunk), self.multiplier[None, :, None, None],
                           self.right_shift[None, :, None, None])
            outputs.append((y + self.output_zero_point).clamp(self.low, self.high).to(torch.int8))
        return torch.cat(outputs)

    def extra_repr(self) -> str:
        return (f"{'MAM' if self.mam else 'MAC'}, {self.in_channels}, {self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, groups={self.groups}, "
                f"zero_points=({self.input_zero_point}, {self.output_zero_point}), clamp=[{self.low}, {self.high}]")


def _check_codes(layer: nn.Module, codes: torch.Tensor) -> None:
    if not torch.is_tensor(codes) or codes.dtype != torch.int8 or codes.dim() != 4:
        got = f"{codes.dtype} {tuple(codes.shape)}" if torch.is_tensor(codes) else type(codes).__name__
        raise TypeError(f"{type(layer).__name__}: expected int8 codes of shape (B, C, H, W), got {got}")


class IntMaxPool2d(nn.Module):
    """Max pooling of int8 codes (the scale is positive, so the largest code is the largest value)."""

    def __init__(self, kernel_size, stride, padding, dilation=1):
        super().__init__()
        self.kernel_size, self.stride = tuple(_pair(kernel_size)), tuple(_pair(stride))
        self.padding, self.dilation = tuple(_pair(padding)), tuple(_pair(dilation))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        _check_codes(self, codes)
        p_h, p_w = self.padding
        view = _windows(codes.to(torch.int64), self.kernel_size, self.stride, (p_h, p_w, p_h, p_w),
                        self.dilation, QMIN - 1)
        return view.amax((-2, -1)).to(torch.int8)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, " \
               f"dilation={self.dilation}"


class IntAvgPool2d(nn.Module):
    """Average pooling of int8 codes at one scale and ``zero_point`` (rounding: see the module docstring)."""

    def __init__(self, kernel_size, stride, padding, *, zero_point: int, count_include_pad: bool = True,
                 divisor_override: Optional[int] = None):
        super().__init__()
        self.kernel_size, self.stride, self.padding = tuple(_pair(kernel_size)), tuple(_pair(stride)), \
            tuple(_pair(padding))
        self.zero_point, self.count_include_pad = int(zero_point), bool(count_include_pad)
        self.divisor_override = None if divisor_override is None else int(divisor_override)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        _check_codes(self, codes)
        p_h, p_w = self.padding
        pad = (p_h, p_w, p_h, p_w)
        x = codes.to(torch.int64) - self.zero_point
        sums = _windows(x, self.kernel_size, self.stride, pad, (1, 1), 0).sum((-2, -1))
        if self.divisor_override is not None:
            d = torch.full_like(sums, self.divisor_override)
        elif self.count_include_pad:
            d = torch.full_like(sums, self.kernel_size[0] * self.kernel_size[1])
        else:
            ones = torch.ones_like(x[:1, :1])
            d = _windows(ones, self.kernel_size, self.stride, pad, (1, 1), 0).sum((-2, -1)).expand_as(sums)
        half = d // 2
        q = torch.where(sums >= 0, (sums + half) // d, -((half - sums) // d)) + self.zero_point
        return q.clamp(QMIN, QMAX).to(torch.int8)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"zero_point={self.zero_point}, count_include_pad={self.count_include_pad}, "
                f"divisor_override={self.divisor_override}")
