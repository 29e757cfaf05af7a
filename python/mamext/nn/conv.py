"""MAM convolutions: ``mam_conv2d``/``mam_conv1d`` and the ``MAMConv2d``/``MAMConv1d`` modules.

Each output of a MAM convolution is the MAM neuron of its receptive field:
``y[b, o, i, j] = max_k(W[o, k] * patch[k]) + min_k(W[o, k] * patch[k]) + bias[o]``
over the patch ``k`` of the input group of ``o``, in ``F.unfold``'s order
(channel, kernel row, kernel column). Zero padding is part of the patch: a
padded position contributes a zero product (as a pruned connection does), so
it can win the max or the min.

On the CPU it is the operator ``torch.ops.mamext.mam_conv2d_*``
(:mod:`mamext.ops.mam_conv2d`), a direct kernel that never builds the patch
matrix. Elsewhere (CUDA) the patches are rows of the dense operator
:func:`mamext.mam_linear`, one call for ``groups == 1`` and one call per group
otherwise, built with ``Tensor.unfold`` views and one copy straight into
``(rows, patch)`` layout. Both give the same bits.
"""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
from torch.nn import functional as F
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.utils import _pair, _single

from ..ops import mam_linear
from ..ops.mam_conv2d import mam_conv2d_op
from ._blend import BetaBlended

__all__ = ["mam_conv2d", "mam_conv1d", "MAMConv2d", "MAMConv1d"]

IntPair = Union[int, Sequence[int]]


def _pair_arg(value, name: str, fn: str, minimum: int) -> Tuple[int, int]:
    """``value`` as two ints, each at least ``minimum``; a clear error otherwise."""
    pair = _pair(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"{fn}: {name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{fn}: {name} must be at least {minimum}, got {value!r}")
    return tuple(pair)


def _check_shapes(input: torch.Tensor, weight: torch.Tensor, bias, groups, fn: str) -> None:
    if not isinstance(input, torch.Tensor) or input.dim() != 4:
        got = tuple(input.shape) if isinstance(input, torch.Tensor) else type(input).__name__
        raise ValueError(f"{fn}: input must have shape (N, C_in, H, W) or (C_in, H, W), got {got}")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"{fn}: weight must have shape (C_out, C_in / groups, kH, kW), got {got}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{fn}: groups must be a positive int, got {groups!r}")
    c_out, c_group = weight.shape[:2]
    if c_out % groups:
        raise ValueError(f"{fn}: weight's C_out ({c_out}) must be divisible by groups ({groups})")
    if input.shape[1] != c_group * groups:
        raise ValueError(f"{fn}: input has {input.shape[1]} channels, but weight of shape "
                         f"{tuple(weight.shape)} with groups={groups} expects {c_group * groups}")
    if bias is not None and (not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (c_out,)):
        got = tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__
        raise ValueError(f"{fn}: bias must be None or have shape ({c_out},), got {got}")


def _explicit_padding(input, padding, kernel, stride, dilation, fn: str):
    """``(input, padding)`` with ``"same"``/``"valid"`` padding turned into numbers (``"same"``
    may be uneven: the extra row/column goes to the end, as in ``F.conv2d``)."""
    if not isinstance(padding, str):
        return input, _pair_arg(padding, "padding", fn, 0)
    if padding == "valid":
        return input, (0, 0)
    if padding != "same":
        raise ValueError(f"{fn}: padding must be an int, a pair of ints, 'valid' or 'same', got {padding!r}")
    if stride != (1, 1):
        raise ValueError(f"{fn}: padding='same' needs stride 1, got stride={stride}")
    totals = [d * (k - 1) for d, k in zip(dilation, kernel)]
    if totals[0] % 2 == 0 and totals[1] % 2 == 0:
        return input, (totals[0] // 2, totals[1] // 2)
    pads = [totals[1] // 2, totals[1] - totals[1] // 2, totals[0] // 2, totals[0] - totals[0] // 2]
    return F.pad(input, pads), (0, 0)


def _output_size(size, kernel, stride, padding, dilation, fn: str) -> Tuple[int, int]:
    out = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                for n, k, s, p, d in zip(size, kernel, stride, padding, dilation))
    if min(out) < 1:
        raise ValueError(f"{fn}: the (dilated) kernel {tuple(kernel)} does not fit in the padded input of "
                         f"spatial size {tuple(size)} with padding {tuple(padding)}")
    return out


def _patch_rows(x, kernel, stride, padding, dilation, groups: int) -> torch.Tensor:
    """The zero-padded patches of ``x`` as ``(groups, N * H_out * W_out, C_in / groups * kH * kW)``,
    each patch in ``F.unfold``'s order."""
    if padding != (0, 0):
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    view = x.unfold(2, spans[0], stride[0]).unfold(3, spans[1], stride[1])  # (N, C, H_out, W_out, sH, sW)
    view = view[..., ::dilation[0], ::dilation[1]]
    batch, channels, h_out, w_out = view.shape[:4]
    view = view.reshape(batch, groups, channels // groups, h_out, w_out, *kernel)
    patch = channels // groups * kernel[0] * kernel[1]
    return view.permute(1, 0, 3, 4, 2, 5, 6).reshape(groups, batch * h_out * w_out, patch)


def _mam_rows(rows, weight2d, bias, return_indices: bool):
    """``mam_linear`` of each group's rows with its neurons, one call per group; outputs (and
    indices, patch positions within the group) concatenated along the last dim."""
    groups = rows.shape[0]
    if groups == 1:
        return mam_linear(rows[0], weight2d, bias, return_indices=return_indices)
    # unbind/split (not indexing): their backward assembles the gradient once, where each
    # index's backward would write a zero-filled full-size gradient per group
    n = weight2d.shape[0] // groups
    biases = [None] * groups if bias is None else bias.split(n)
    parts = [mam_linear(r, w, b, return_indices=return_indices)
             for r, w, b in zip(rows.unbind(0), weight2d.split(n), biases)]
    if not return_indices:
        return torch.cat(parts, -1)
    return tuple(torch.cat([p[i] for p in parts], -1) for i in range(3))


def mam_conv2d(input: torch.Tensor, weight: torch.Tensor, bias=None, stride: IntPair = 1,
               padding: Union[str, IntPair] = 0, dilation: IntPair = 1, groups: int = 1, *,
               return_indices: bool = False):
    """The MAM counterpart of ``F.conv2d`` (same arguments; zero padding).

    With ``return_indices=True`` also returns ``(argmax, argmin)``, int32 tensors
    shaped like the output: the winning position in the flattened patch of the
    output's group, i.e. in ``weight[o].flatten()`` (ties to the lowest position).
    """
    fn = "mam_conv2d"
    unbatched = isinstance(input, torch.Tensor) and input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    _check_shapes(x, weight, bias, groups, fn)
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    kernel = tuple(weight.shape[2:])
    stride = _pair_arg(stride, "stride", fn, 1)
    dilation = _pair_arg(dilation, "dilation", fn, 1)
    x, padding = _explicit_padding(x, padding, kernel, stride, dilation, fn)
    h_out, w_out = _output_size(x.shape[2:], kernel, stride, padding, dilation, fn)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    if x.device.type == "cpu":  # the direct operator; CUDA has none and takes patch rows below
        result = mam_conv2d_op(x, weight, bias, stride, padding, dilation, groups, return_indices=return_indices)

        def finish(t):  # (N, C_out, H_out, W_out) in the input's layout, unbatched as given
            return t.squeeze(0) if unbatched else t.contiguous(memory_format=layout)

        return tuple(map(finish, result)) if return_indices else finish(result)
    rows = _patch_rows(x, kernel, stride, padding, dilation, groups)
    result = _mam_rows(rows, weight.reshape(weight.shape[0], -1), bias, return_indices)

    def to_image(t):  # (N * H_out * W_out, C_out) -> (N, C_out, H_out, W_out), unbatched as given
        t = t.reshape(x.shape[0], h_out, w_out, weight.shape[0]).permute(0, 3, 1, 2)
        return t.squeeze(0).contiguous() if unbatched else t.contiguous(memory_format=layout)

    return tuple(map(to_image, result)) if return_indices else to_image(result)


def mam_conv1d(input: torch.Tensor, weight: torch.Tensor, bias=None, stride=1, padding=0,
               dilation=1, groups: int = 1, *, return_indices: bool = False):
    """The MAM counterpart of ``F.conv1d``: :func:`mam_conv2d` on a height-1 image."""
    fn = "mam_conv1d"
    if not isinstance(input, torch.Tensor) or input.dim() not in (2, 3):
        got = tuple(input.shape) if isinstance(input, torch.Tensor) else type(input).__name__
        raise ValueError(f"{fn}: input must have shape (N, C_in, L) or (C_in, L), got {got}")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 3:
        got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"{fn}: weight must have shape (C_out, C_in / groups, k), got {got}")
    args = {}
    for name, value, height in (("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1)):
        if isinstance(value, str):
            args[name] = value
            continue
        if len(_single(value)) != 1:
            raise TypeError(f"{fn}: {name} must be an int, got {value!r}")
        args[name] = (height, _single(value)[0])  # the height-1 image: unit stride/dilation, no padding
    result = mam_conv2d(input.unsqueeze(-2), weight.unsqueeze(-2), bias, groups=groups,
                        return_indices=return_indices, **args)
    return tuple(t.squeeze(-2) for t in result) if return_indices else result.squeeze(-2)


class _MAMConvNd(BetaBlended, _ConvNd):
    """A MAM convolution: parameters, init and padding modes of ``nn.ConvNd``, forward through
    the MAM functional, and ``beta`` blending like :class:`~mamext.nn.MAMLinear`."""

    _mam_fn = staticmethod(mam_conv2d)
    _mac_fn = staticmethod(F.conv2d)

    def _padded(self, input: torch.Tensor):
        """The input and padding the functionals take (other modes than zeros pad real values first)."""
        if self.padding_mode != "zeros":
            return F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode), 0
        return input, self.padding

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x, padding = self._padded(input)
        weight, bias = self.weight, self.bias
        out = self._mam_fn(x, weight, bias, self.stride, padding, self.dilation, self.groups)
        return self._blend(out, lambda: self._mac_fn(x, weight, bias, self.stride, padding, self.dilation,
                                                     self.groups))

    def selections(self, input: torch.Tensor):
        """``(argmax, argmin)`` of every output for ``input``, as positions in ``weight[o].flatten()``."""
        x, padding = self._padded(input)
        _, amax, amin = self._mam_fn(x, self.weight, self.bias, self.stride, padding, self.dilation,
                                     self.groups, return_indices=True)
        return amax, amin

    def _describe(self) -> str:
        return f"{type(self).__name__}({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size})"

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, beta={self._beta_repr()}"


class MAMConv2d(_MAMConvNd):
    r"""The MAM counterpart of ``nn.Conv2d``: :func:`mam_conv2d` with ``nn.Conv2d``'s parameters.

    Parameters are named, shaped and initialised exactly as ``nn.Conv2d``'s
    (the same random draws), so ``nn.Conv2d`` checkpoints load into it (as
    pure MAM). ``padding_mode`` other than ``"zeros"`` pads the input with real
    values first, as ``nn.Conv2d`` does. ``beta`` blends in the classic
    convolution exactly as :class:`~mamext.nn.MAMLinear` blends ``nn.Linear``:
    ``y = beta * conv(x) + (1 - beta) * MAM(x)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: Union[str, IntPair] = 0, dilation: IntPair = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, _pair(kernel_size), _pair(stride),
                         padding if isinstance(padding, str) else _pair(padding), _pair(dilation),
                         False, _pair(0), groups, bias, padding_mode, device=device, dtype=dtype)
        self._init_beta(device)


class MAMConv1d(_MAMConvNd):
    r"""The MAM counterpart of ``nn.Conv1d`` (see :class:`MAMConv2d`)."""

    _mam_fn = staticmethod(mam_conv1d)
    _mac_fn = staticmethod(F.conv1d)

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: Union[str, int] = 0, dilation: int = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, _single(kernel_size), _single(stride),
                         padding if isinstance(padding, str) else _single(padding), _single(dilation),
                         False, _single(0), groups, bias, padding_mode, device=device, dtype=dtype)
        self._init_beta(device)
