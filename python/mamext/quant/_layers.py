"""Integer-only layers: a packed MAM or MAC layer with int8 weights and requantised int8 outputs."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ._fixed_point import INT32_MAX, quantize_multiplier, requantize, round_half_even
from ._observer import QMAX, QMIN

WEIGHT_QMAX = 127
# |w_q * (x_q - x_zp)| <= 127 * 255: the largest product magnitude
PRODUCT_BOUND = WEIGHT_QMAX * (QMAX - QMIN)
# a MAC row keeps at most this many connections, so its int32 sum is exact
SUM_MAX_TERMS = (INT32_MAX // 2) // PRODUCT_BOUND
# the forward works on row chunks of at most this many products (int64) at a time
_CHUNK_ELEMENTS = 1 << 22


def set_requantization(layer: nn.Module, bias: torch.Tensor, multiplier: torch.Tensor, right_shift: torch.Tensor,
                       zero_points, clamp, scales) -> None:
    """The integer layer's requantisation state: int32 ``bias``, ``multiplier`` and ``right_shift`` buffers per
    output, ``(input, output)`` zero points and scales, and the output ``clamp`` (low, high)."""
    layer.input_zero_point, layer.output_zero_point = int(zero_points[0]), int(zero_points[1])
    layer.low, layer.high = int(clamp[0]), int(clamp[1])
    layer.input_scale, layer.output_scale = float(scales[0]), float(scales[1])
    layer.register_buffer("bias", bias.to(torch.int32).contiguous())
    layer.register_buffer("multiplier", multiplier.to(torch.int32).contiguous())
    layer.register_buffer("right_shift", right_shift.to(torch.int32).contiguous())


class IntLinear(nn.Module):
    """A packed (CSR) MAM (``mam=True``) or MAC layer computing only with integers.

    Buffers: ``values`` (int8, the kept non-zero weight codes, row by row),
    ``indices`` (int32 input index of each), ``counts`` (int32 kept connections per
    neuron), ``bias`` (int32, at scale ``weight_scale[n] * input_scale``),
    ``multiplier`` (int32 Q31) and ``right_shift`` (int32) of the requantisation.

    For one row ``x`` of int8 codes, neuron ``n`` computes in int32 (products
    ``p_j = values[j] * (x[indices[j]] - input_zero_point)``)::

        acc = max_j p_j + min_j p_j + bias[n]          (MAM; the candidate 0 joins when
                                                        counts[n] < candidate_width)
        acc = sum_j p_j + bias[n]                      (MAC)
        y   = clamp(((acc * multiplier[n] + 2**(r - 1)) >> r) + output_zero_point, low, high)

    ``candidate_width`` is the input width of the layer the row was pruned in:
    compaction may remove inputs whose products are 0 without removing the
    zero candidate they stand for. ``low``/``high`` are -128/127, or the ReLU
    clamp ``low = output_zero_point``.
    """

    def __init__(self, in_features: int, out_features: int, values: torch.Tensor, indices: torch.Tensor,
                 counts: torch.Tensor, bias: torch.Tensor, multiplier: torch.Tensor, right_shift: torch.Tensor, *,
                 mam: bool, input_zero_point: int, output_zero_point: int, low: int = QMIN, high: int = QMAX,
                 candidate_width: Optional[int] = None, input_scale: float = 1.0, output_scale: float = 1.0,
                 weight_scale: Optional[torch.Tensor] = None):
        super().__init__()
        self.in_features, self.out_features, self.mam = int(in_features), int(out_features), bool(mam)
        self.candidate_width = int(in_features if candidate_width is None else candidate_width)
        self.register_buffer("values", values.to(torch.int8).contiguous())
        self.register_buffer("indices", indices.to(torch.int32).contiguous())
        self.register_buffer("counts", counts.to(torch.int32).contiguous())
        set_requantization(self, bias, multiplier, right_shift, (input_zero_point, output_zero_point), (low, high),
                           (input_scale, output_scale))
        self.register_buffer("weight_scale", None if weight_scale is None else weight_scale.to(torch.float64))
        self._check()

    def _check(self) -> None:
        name = type(self).__name__
        if self.counts.numel() != self.out_features or int(self.counts.sum()) != self.values.numel():
            raise ValueError(f"{name}: counts must hold out_features={self.out_features} entries summing to the "
                             f"{self.values.numel()} kept weights")
        if self.indices.numel() != self.values.numel():
            raise ValueError(f"{name}: indices and values must have the same length")
        if self.indices.numel() and not (0 <= int(self.indices.min()) and int(self.indices.max()) < self.in_features):
            raise ValueError(f"{name}: indices must lie in [0, in_features={self.in_features})")
        if not QMIN <= self.low <= self.high <= QMAX:
            raise ValueError(f"{name}: clamp [{self.low}, {self.high}] must lie within [-128, 127]")
        if not self.mam and self.out_features and int(self.counts.max()) > SUM_MAX_TERMS:
            raise ValueError(f"{name}: a MAC row keeps {int(self.counts.max())} connections; int32 sums are exact "
                             f"for at most {SUM_MAX_TERMS}")

    # -- construction
    @classmethod
    def from_float(cls, weight: torch.Tensor, bias: Optional[torch.Tensor], *, mam: bool, input_scale: float,
                   input_zero_point: int, output_scale: float, output_zero_point: int, relu: bool) -> "IntLinear":
        """Quantise a dense float weight (N, K) (zeros are pruned connections) and its bias."""
        w = weight.detach().cpu().to(torch.float64)
        N, K = w.shape
        weight_scale = w.abs().amax(1) / WEIGHT_QMAX
        weight_scale = torch.where(weight_scale > 0, weight_scale, torch.ones_like(weight_scale))
        codes = round_half_even(w / weight_scale[:, None]).clamp(-WEIGHT_QMAX, WEIGHT_QMAX)
        keep = codes != 0              # a weight rounding to 0 is a zero candidate, like a pruned one
        rows_cols = keep.nonzero()
        counts = keep.sum(1)
        acc_scale = weight_scale * input_scale
        acc_bound = torch.full((N,), 2 * PRODUCT_BOUND) if mam else counts * PRODUCT_BOUND
        limit = (INT32_MAX - acc_bound).to(torch.float64)   # acc + bias stays within int32
        b = torch.zeros(N, dtype=torch.float64) if bias is None else bias.detach().cpu().to(torch.float64)
        bias_q = round_half_even(torch.clamp(b / acc_scale, -limit, limit))
        mult, shift = zip(*(quantize_multiplier(float(s) / output_scale) for s in acc_scale)) if N else ((), ())
        low = output_zero_point if relu else QMIN
        return cls(K, N, codes[keep], rows_cols[:, 1], counts, bias_q, torch.tensor(mult, dtype=torch.int64),
                   torch.tensor(shift, dtype=torch.int64), mam=mam, input_zero_point=input_zero_point,
                   output_zero_point=output_zero_point, low=low, input_scale=input_scale,
                   output_scale=output_scale, weight_scale=weight_scale)

    def dense_codes(self) -> torch.Tensor:
        """The (N, K) int64 weight codes, 0 where no connection is kept."""
        w = torch.zeros(self.out_features, self.in_features, dtype=torch.int64)
        w[self.rows(), self.indices.to(torch.int64)] = self.values.to(torch.int64)
        return w

    def rows(self) -> torch.Tensor:
        """The neuron of each kept connection."""
        return torch.repeat_interleave(torch.arange(self.out_features), self.counts.to(torch.int64))

    @property
    def kept(self) -> int:
        return int(self.values.numel())

    # -- forward
    def accumulate(self, codes: torch.Tensor) -> torch.Tensor:
        """int32-valued (int64 dtype) accumulators ``acc`` (B, N) of int8 codes (B, K), bias included."""
        x = codes.to(torch.int64) - self.input_zero_point
        products = self.values.to(torch.int64)[None, :] * x[:, self.indices.to(torch.int64)]
        B = x.shape[0]
        rows = self.rows()[None, :].expand(B, -1)
        zeros = torch.zeros(B, self.out_features, dtype=torch.int64)
        if self.mam:
            mx = zeros.scatter_reduce(1, rows, products, "amax", include_self=False)
            mn = zeros.scatter_reduce(1, rows, products, "amin", include_self=False)
            zero_candidate = (self.counts < self.candidate_width)[None, :]
            mx = torch.where(zero_candidate, mx.clamp(min=0), mx)
            mn = torch.where(zero_candidate, mn.clamp(max=0), mn)
            acc = mx + mn
        else:
            acc = zeros.index_add(1, self.rows(), products)
        return acc + self.bias.to(torch.int64)[None, :]

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.dtype != torch.int8:
            raise TypeError(f"{type(self).__name__}: expected int8 codes, got {codes.dtype}")
        if codes.dim() < 1 or codes.shape[-1] != self.in_features:
            raise ValueError(f"{type(self).__name__}: expected input of shape (*, {self.in_features}), "
                             f"got {tuple(codes.shape)}")
        flat = codes.reshape(-1, self.in_features)
        rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(self.kept, self.out_features, 1))
        outputs = [self._requantize(self.accumulate(chunk)) for chunk in flat.split(rows_per_chunk)]
        y = torch.cat(outputs) if outputs else torch.empty(0, self.out_features, dtype=torch.int8)
        return y.reshape(*codes.shape[:-1], self.out_features)

    def _requantize(self, acc: torch.Tensor) -> torch.Tensor:
        y = requantize(acc, self.multiplier[None, :], self.right_shift[None, :])
        return (y + self.output_zero_point).clamp(self.low, self.high).to(torch.int8)

    def extra_repr(self) -> str:
        kind = "MAM" if self.mam else "MAC"
        return (f"{kind}, in_features={self.in_features}, out_features={self.out_features}, "
                f"kept={self.kept}, zero_points=({self.input_zero_point}, {self.output_zero_point}), "
                f"clamp=[{self.low}, {self.high}]")


class IntClamp(nn.Module):
    """A ReLU on int8 codes that no linear layer absorbs: ``max(q, zero_point)``."""

    def __init__(self, zero_point: int):
        super().__init__()
        self.zero_point = int(zero_point)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return codes.clamp(min=self.zero_point)

    def extra_repr(self) -> str:
        return f"zero_point={self.zero_point}"
