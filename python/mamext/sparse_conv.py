"""Packed convolutions: the pruned ``MAMConv2d``/``MAMConv1d`` and ``nn.Conv2d``/``nn.Conv1d``.

A packed convolution stores its kept connections exactly as a packed linear
layer does (:mod:`mamext.sparse`): one CSR row per output channel over
``weight[o].flatten()``, i.e. over the channel's patch in ``F.unfold``'s order
(channel of its group, kernel row, kernel column). It computes by building the
patch rows of the input (the code :mod:`mamext.nn.conv` uses) and running the
packed operator ``torch.ops.mamext.packed_linear`` on them, one call per group.
A MAM output is therefore the packed MAM neuron of its patch: equal, bit for
bit up to the sign of a zero, to the dense ``MAMConv2d`` whose pruned weights
are zeros (a pruned connection and a zero-padded position both contribute a
zero product). A MAC output is the sum over the kept connections (equal to
``nn.Conv2d`` to within float rounding).

int8 (``dtype=torch.int8``): weights are quantised per output channel, and
each patch is quantised as one input vector of the packed linear layer (its
own symmetric scale ``max|patch| / 127``), so an output never depends on the
rest of the image or the batch.

Import these classes from :mod:`mamext.sparse`; use the public entry points
there (:func:`mamext.sparse.pack` with ``layers=``, :func:`mamext.sparse.load_packed`).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from .nn.conv import MAMConv1d, MAMConv2d, _explicit_padding, _output_size, _patch_rows
from .sparse import PackedLayer, _packed_buffers, _packed_linear, effective_weight, index_dtype

__all__ = ["PackedConvNd", "PackedMAMConv2d", "PackedMAMConv1d", "PackedConv2d", "PackedConv1d"]

MAM_CONV_KINDS = (MAMConv2d, MAMConv1d)
_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def is_packable_conv(module: nn.Module) -> bool:
    """A convolution :func:`mamext.sparse.pack` can pack (subclasses of ``nn.ConvNd`` may compute otherwise)."""
    return isinstance(module, MAM_CONV_KINDS) or type(module) in (nn.Conv2d, nn.Conv1d)


def packed_conv_class(module: nn.Module) -> type:
    """The packed class of a packable (or packed) convolution."""
    if isinstance(module, PackedConvNd):
        mam, dims = module.mam, len(module.kernel_size)
    else:
        mam, dims = isinstance(module, MAM_CONV_KINDS), len(module.kernel_size)
    return {(True, 2): PackedMAMConv2d, (True, 1): PackedMAMConv1d,
            (False, 2): PackedConv2d, (False, 1): PackedConv1d}[(mam, dims)]


def _ints(value, dims: int, name: str, minimum: int, where: str) -> Tuple[int, ...]:
    """``value`` (an int or ``dims`` ints) as a tuple of ``dims`` ints, each at least ``minimum``."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims
    if len(items) != dims or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise TypeError(f"{where}: {name} must be an int or {dims} ints, got {value!r}")
    if min(items) < minimum:
        raise ValueError(f"{where}: {name} must be at least {minimum}, got {value!r}")
    return items


def _reversed_padding(padding, kernel, dilation) -> Tuple[int, ...]:
    """``F.pad``'s argument for the padding (last dimension first), as ``nn.ConvNd`` computes it."""
    if padding == "valid":
        return (0,) * (2 * len(kernel))
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return tuple(p for t in reversed(totals) for p in (t // 2, t - t // 2))
    return tuple(p for p in reversed(padding) for _ in range(2))


class PackedConvNd(PackedLayer):
    """Packed inference version of a pruned convolution (see :mod:`mamext.sparse_conv`).

    Geometry (as on ``nn.Conv2d``; tuples of 2 ints, of 1 int for the 1-d
    classes): ``in_channels``, ``out_channels``, ``kernel_size``, ``stride``,
    ``padding`` (a tuple, or ``"same"``/``"valid"``), ``dilation``,
    ``groups``, ``padding_mode`` (``"zeros"``, ``"reflect"``, ``"replicate"``
    or ``"circular"``) and ``_reversed_padding_repeated_twice`` (the padding
    in numbers, ``"same"`` resolved, as ``F.pad``'s argument: last dimension
    first, before and after; the zeros mode pads with zeros, the others with
    real values). ``mam``: True for the MAM classes, False for the sums.

    Buffers, as :class:`~mamext.sparse.PackedLayer`'s with ``N = out_channels``
    and ``K = in_features = in_channels / groups * prod(kernel_size)`` (the
    patch of one group): ``values`` (nnz), ``indices`` (nnz, the position in
    ``weight[o].flatten()``), ``offsets`` (out_channels + 1; output channel
    ``o`` keeps ``[offsets[o], offsets[o + 1])``), ``bias`` (out_channels, or
    None), ``weight_scale`` (out_channels, int8 only). Output channel ``o``
    belongs to group ``o // (out_channels / groups)`` and reads that group's
    input channels. ``to_dense_weight()`` gives the dense weight
    ``(out_channels, in_channels / groups, *kernel_size)``.
    """

    _dims: int = 2  # spatial dimensions

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride, padding: Union[str, tuple],
                 dilation, groups: int, padding_mode: str, values: torch.Tensor, indices: torch.Tensor,
                 offsets: torch.Tensor, bias: Optional[torch.Tensor] = None,
                 weight_scale: Optional[torch.Tensor] = None):
        where = type(self).__name__
        dims = self._dims
        kernel_size = _ints(kernel_size, dims, "kernel_size", 1, where)
        for name, count in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"{where}: {name} must be a positive int, got {count!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{where}: in_channels ({in_channels}) and out_channels ({out_channels}) must be "
                             f"divisible by groups ({groups})")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"{where}: padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
        if isinstance(padding, str) and padding not in ("same", "valid"):
            raise ValueError(f"{where}: padding must be ints, 'same' or 'valid', got {padding!r}")
        super().__init__(in_channels // groups * math.prod(kernel_size), out_channels, values, indices, offsets,
                         bias, weight_scale)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = kernel_size
        self.stride = _ints(stride, dims, "stride", 1, where)
        self.dilation = _ints(dilation, dims, "dilation", 1, where)
        self.padding = padding if isinstance(padding, str) else _ints(padding, dims, "padding", 0, where)
        if self.padding == "same" and self.stride != (1,) * dims:
            raise ValueError(f"{where}: padding='same' needs stride 1, got stride={self.stride}")
        self.padding_mode = padding_mode
        self._reversed_padding_repeated_twice = _reversed_padding(self.padding, kernel_size, self.dilation)
        self._group_bounds = self._bounds()

    # -- construction
    @classmethod
    def from_weight(cls, *args, **kwargs):
        raise TypeError(f"{cls.__name__}.from_weight: a packed convolution needs its geometry; use "
                        f"{cls.__name__}.from_conv_weight(conv, weight, bias, dtype) or from_module(conv)")

    @classmethod
    def from_module(cls, module: nn.Module, dtype: torch.dtype = torch.float32, *,
                    name: Optional[str] = None) -> "PackedConvNd":
        """Pack a (pruned) convolution: its zero effective weights are pruned connections."""
        return cls.from_conv_weight(module, effective_weight(module), module.bias, dtype, name=name)

    @classmethod
    def from_conv_weight(cls, geometry, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                         dtype: torch.dtype = torch.float32, *, name: Optional[str] = None) -> "PackedConvNd":
        """Pack ``weight`` (out_channels, in_channels / groups, *kernel_size) with the geometry
        (``in_channels``, ``kernel_size``, ``stride``, ...) of the convolution ``geometry``."""
        where = f"{cls.__name__}.from_conv_weight" + (f" (layer '{name}')" if name else "")
        expected = (geometry.out_channels, geometry.in_channels // geometry.groups, *geometry.kernel_size)
        if tuple(weight.shape) != expected:
            raise ValueError(f"{where}: weight must have shape {expected}, got {tuple(weight.shape)}")
        buffers = _packed_buffers(weight.reshape(weight.shape[0], -1), bias, dtype, cls.mam, where)
        return cls(*_geometry(geometry), *buffers)

    @classmethod
    def empty_like(cls, geometry, dtype: torch.dtype, bias: bool) -> "PackedConvNd":
        """A layer with the geometry of the convolution ``geometry`` and no kept connection, to load a
        ``state_dict`` into (buffers resize on load)."""
        out_channels = geometry.out_channels
        float_dtype = torch.float32 if dtype == torch.int8 else dtype
        patch = geometry.in_channels // geometry.groups * math.prod(geometry.kernel_size)
        return cls(*_geometry(geometry), torch.empty(0, dtype=dtype), torch.empty(0, dtype=index_dtype(patch)),
                   torch.zeros(out_channels + 1, dtype=torch.int32),
                   torch.zeros(out_channels, dtype=float_dtype) if bias else None,
                   torch.ones(out_channels) if dtype == torch.int8 else None)

    def repacked(self, dtype: torch.dtype, *, name: Optional[str] = None) -> "PackedConvNd":
        return type(self).from_conv_weight(self, self.to_dense_weight(), self.bias, dtype, name=name)

    def to_dense_weight(self) -> torch.Tensor:
        """The dense weight (out_channels, in_channels / groups, *kernel_size), dequantised for int8."""
        flat = super().to_dense_weight()
        return flat.reshape(self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def _bounds(self) -> list:
        """Where each group's connections start in ``values``, and the end: ``groups + 1`` ints."""
        return self.offsets[::self.out_channels // self.groups].tolist()

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._group_bounds = self._bounds()

    # -- forward
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(f"mamext.sparse: {type(self).__name__} is inference only (no gradients); "
                               "run it under torch.no_grad()/torch.inference_mode() or train the dense "
                               "model and pack it afterwards")
        dims = self._dims
        if input.dim() not in (dims + 1, dims + 2) or input.shape[-dims - 1] != self.in_channels:
            spatial = ", ".join("HW"[:dims]) if dims == 2 else "L"
            raise ValueError(f"{type(self).__name__}: expected input of shape (N, {self.in_channels}, {spatial}) "
                             f"or ({self.in_channels}, {spatial}), got {tuple(input.shape)}")
        unbatched = input.dim() == dims + 1
        x = input.unsqueeze(0) if unbatched else input
        channels_last = dims == 2 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        padding = self.padding
        if self.padding_mode != "zeros":
            x, padding = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode), (0,) * dims
        kernel, stride, dilation = self.kernel_size, self.stride, self.dilation
        if dims == 1:  # a height-1 image
            x = x.unsqueeze(-2)
            kernel, stride, dilation = (1, *kernel), (1, *stride), (1, *dilation)
            padding = padding if isinstance(padding, str) else (0, *padding)
        x, padding = _explicit_padding(x, padding, kernel, stride, dilation, type(self).__name__)
        h_out, w_out = _output_size(x.shape[2:], kernel, stride, padding, dilation, type(self).__name__)
        out = self._packed_rows(_patch_rows(x, kernel, stride, padding, dilation, self.groups))
        out = out.reshape(x.shape[0], h_out, w_out, self.out_channels).permute(0, 3, 1, 2)
        if dims == 1:
            out = out.squeeze(-2)
        out = out.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        return out.squeeze(0) if unbatched else out

    def _packed_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The packed operator on each group's patch rows (groups, R, K): (R, out_channels)."""
        b = self._buffers
        values, indices, offsets, bias, scale = (b[n] for n in ("values", "indices", "offsets", "bias",
                                                                "weight_scale"))
        try:
            if self.groups == 1:
                return _packed_linear(rows[0], values, indices, offsets, bias, scale, self.in_features, self.mam)
            n, bounds, parts = self.out_channels // self.groups, self._group_bounds, []
            for g, group_rows in enumerate(rows.unbind(0)):
                lo, hi, neurons = bounds[g], bounds[g + 1], slice(g * n, (g + 1) * n)
                parts.append(_packed_linear(group_rows, values[lo:hi], indices[lo:hi],
                                            offsets[g * n:(g + 1) * n + 1] - lo,
                                            None if bias is None else bias[neurons],
                                            None if scale is None else scale[neurons], self.in_features, self.mam))
            return torch.cat(parts, -1)
        except RuntimeError as e:
            raise RuntimeError(f"{type(self).__name__} ({self.in_channels}, {self.out_channels}, kernel_size="
                               f"{self.kernel_size}, groups={self.groups}): its packed buffers do not fit: {e}") from e

    def extra_repr(self) -> str:
        geometry = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * self._dims:
            geometry += f", padding={self.padding!r}"
        if self.dilation != (1,) * self._dims:
            geometry += f", dilation={self.dilation}"
        if self.groups != 1:
            geometry += f", groups={self.groups}"
        if self.padding_mode != "zeros":
            geometry += f", padding_mode={self.padding_mode!r}"
        return f"{geometry}, {self._storage_repr()}"


def _geometry(conv) -> tuple:
    """The geometry arguments of :class:`PackedConvNd` from a convolution (dense or packed)."""
    return (conv.in_channels, conv.out_channels, tuple(conv.kernel_size), tuple(conv.stride),
            conv.padding if isinstance(conv.padding, str) else tuple(conv.padding), tuple(conv.dilation),
            conv.groups, conv.padding_mode)


class PackedMAMConv2d(PackedConvNd):
    """Packed inference version of a pruned :class:`mamext.nn.MAMConv2d` (see :class:`PackedConvNd`)."""

    mam = True
    _dims = 2


class PackedMAMConv1d(PackedConvNd):
    """Packed inference version of a pruned :class:`mamext.nn.MAMConv1d` (see :class:`PackedConvNd`)."""

    mam = True
    _dims = 1


class PackedConv2d(PackedConvNd):
    """Packed inference version of a pruned ``nn.Conv2d`` (ordinary sums; see :class:`PackedConvNd`)."""

    mam = False
    _dims = 2


class PackedConv1d(PackedConvNd):
    """Packed inference version of a pruned ``nn.Conv1d`` (ordinary sums; see :class:`PackedConvNd`)."""

    mam = False
    _dims = 1


# Their state is tensors, ints, strings and tuples: safe for torch.load(weights_only=True).
torch.serialization.add_safe_globals([PackedMAMConv2d, PackedMAMConv1d, PackedConv2d, PackedConv1d])
