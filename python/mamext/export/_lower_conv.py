"""Float lowering of convolutions, pooling and batch norms on per-sample (C, H, W) activations.

Convolutions are exported dense from the weight they compute with (a pruned
weight is a stored 0, whose product is a candidate exactly as in PyTorch).
A batch norm right after a MAC layer is folded into its weight and bias;
after a MAM layer (or anywhere else) it stays a per-channel affine step: the
MAM's products then round exactly as PyTorch's, and the step costs one
multiply-add per output.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..nn.conv import MAMConv2d
from ..quant._batchnorm import batchnorm_affine, check_batchnorm_channels, fold_batchnorm
from ..sparse import effective_weight
from ._args import check_c_size
from ._c_text import CArray
from ._network import Network
from ._window import Window, explicit_padding, window

_WHERE = "mamext.export.to_c"

BatchNormStep = Tuple[str, nn.Module]   # (qualified name, module)


def check_conv(qual: str, module: nn.Module) -> None:
    """What the export of a convolution refuses: other padding modes, an unfinished MAM transition."""
    if module.padding_mode != "zeros":
        raise ValueError(f"{_WHERE}: convolution '{qual}' has padding_mode={module.padding_mode!r}; only 'zeros' "
                         "is supported")
    if isinstance(module, MAMConv2d) and bool(module.beta.item() != 0):
        raise ValueError(f"{_WHERE}: MAMConv2d '{qual}' still blends in the MAC convolution (beta="
                         f"{float(module.beta):g}); finish the transition (beta=0) before exporting")
    for what, t in (("weight", effective_weight(module)), ("bias", module.bias)):
        if t is not None and not bool(torch.isfinite(t.detach()).all()):
            raise ValueError(f"{_WHERE}: convolution '{qual}' has non-finite (inf or NaN) {what} entries; C "
                             "constants need finite values")


def conv_window(qual: str, module: nn.Module, shape) -> Window:
    if len(shape) == 3 and shape[0] != module.in_channels:
        raise ValueError(f"{_WHERE}: convolution '{qual}' expects {module.in_channels} input channels, but gets "
                         f"activations of shape {tuple(shape)} (input_shape wrong?)")
    padding = explicit_padding(module.padding, module.kernel_size, module.dilation)
    win = window(qual, shape, module.out_channels, module.kernel_size, module.stride, padding, module.dilation,
                 module.groups)
    check_c_size(module.weight.numel(), f"the weight of convolution '{qual}'")
    return win


def pool_window(qual: str, module: nn.Module, shape) -> Window:
    """The window of a MaxPool2d/AvgPool2d, refusing what the runtime does not implement."""
    name = type(module).__name__
    if module.ceil_mode:
        raise ValueError(f"{_WHERE}: {name} '{qual}' has ceil_mode=True; only ceil_mode=False is supported")
    if getattr(module, "return_indices", False):
        raise ValueError(f"{_WHERE}: {name} '{qual}' returns indices; only the pooled values can be exported")
    if len(shape) != 3:
        raise ValueError(f"{_WHERE}: {name} '{qual}' needs per-sample activations of shape (C, H, W), got "
                         f"{tuple(shape)}")
    dilation = getattr(module, "dilation", 1)
    stride = module.stride if module.stride is not None else module.kernel_size
    try:
        if isinstance(module, nn.MaxPool2d):
            expect = F.max_pool2d(torch.empty((1, *shape), device="meta"), module.kernel_size, stride,
                                  module.padding, dilation)
        else:
            expect = F.avg_pool2d(torch.empty((1, *shape), device="meta"), module.kernel_size, stride,
                                  module.padding, False, module.count_include_pad, module.divisor_override)
    except (RuntimeError, ValueError, TypeError) as e:
        raise ValueError(f"{_WHERE}: {name} '{qual}' cannot pool activations of shape {tuple(shape)}: {e}") from None
    p_h, p_w = torch.nn.modules.utils._pair(module.padding)
    win = window(qual, shape, shape[0], module.kernel_size, stride, (p_h, p_w, p_h, p_w), dilation, shape[0])
    if win.out_shape != tuple(expect.shape[1:]):
        raise ValueError(f"{_WHERE}: {name} '{qual}': pooling geometry {win.out_shape} differs from PyTorch's "
                         f"{tuple(expect.shape[1:])}")
    return win


def lower_conv(net: Network, prefix: str, qual: str, module: nn.Module, bn: Optional[BatchNormStep]) -> bool:
    """A dense float convolution; returns whether it folded the batch norm ``bn`` that follows it."""
    check_conv(qual, module)
    win = conv_window(qual, module, net.shape)
    mam = isinstance(module, MAMConv2d)
    weight, bias = effective_weight(module), module.bias
    fold = bn is not None and not mam
    if fold:
        check_batchnorm_channels(bn[1], bn[0], win.out_shape, _WHERE)
        weight, bias = fold_batchnorm(weight, bias, *batchnorm_affine(bn[1], bn[0], _WHERE))
    src, dst = net.current, net.spare_buffer()
    net.write(dst, win.out_shape, f"the output of convolution '{qual}'")
    net.arrays += [win.struct(f"{prefix}_win"),
                   CArray("float", f"{prefix}_w", weight.to(torch.float32).reshape(-1).tolist())]
    bias_name = "(const float *)0"
    if bias is not None:
        net.arrays.append(CArray("float", f"{prefix}_bias", bias.detach().to(torch.float32).tolist()))
        bias_name = f"{prefix}_bias"
    net.patch, net.conv = max(net.patch, win.patch), True
    kind = "mam" if mam else "lin"
    net.statements.append(f"    mamrt_{kind}_conv2d_f32({src}, {dst}, &{prefix}_win, {prefix}_w, {bias_name}, "
                          "mam_patch);")
    kept = int((weight != 0).sum())
    net.layers.append((qual, f"dense {'MAM' if mam else 'MAC'} conv {win.c_in}->{win.c_out} k{win.k_h}x{win.k_w} "
                             f"s{win.s_h}x{win.s_w} -> {win.out_shape}, kept {kept}/{weight.numel()}, float32"
                             + (f", {bn[0]} folded" if fold else "")))
    return fold


def lower_pool(net: Network, prefix: str, qual: str, module: nn.Module) -> None:
    win = pool_window(qual, module, net.shape)
    src, dst = net.current, net.spare_buffer()
    net.write(dst, win.out_shape, f"the output of '{qual}'")
    net.arrays.append(win.struct(f"{prefix}_win"))
    net.conv = True
    if isinstance(module, nn.MaxPool2d):
        net.statements.append(f"    mamrt_maxpool2d_f32({src}, {dst}, &{prefix}_win);")
        net.layers.append((qual, f"MaxPool2d k{win.k_h}x{win.k_w} s{win.s_h}x{win.s_w} -> {win.out_shape}"))
    else:
        divisor = module.divisor_override or 0
        net.statements.append(f"    mamrt_avgpool2d_f32({src}, {dst}, &{prefix}_win, "
                              f"{int(bool(module.count_include_pad))}, {divisor});")
        net.layers.append((qual, f"AvgPool2d k{win.k_h}x{win.k_w} s{win.s_h}x{win.s_w} -> {win.out_shape}"))


def lower_batchnorm(net: Network, prefix: str, qual: str, module: nn.Module) -> None:
    """A batch norm that no MAC layer absorbs: ``y = x * scale[c] + shift[c]`` per channel (dim 0)."""
    check_batchnorm_channels(module, qual, net.shape, _WHERE)
    scale, shift = batchnorm_affine(module, qual, _WHERE)
    src = net.current
    dst = src if src != "input" else net.spare_buffer()
    net.write(dst, net.shape, f"the output of '{qual}'")
    net.arrays += [CArray("float", f"{prefix}_scale", scale.to(torch.float32).tolist()),
                   CArray("float", f"{prefix}_shift", shift.to(torch.float32).tolist())]
    net.conv = True
    channels = net.shape[0]
    net.statements.append(f"    mamrt_affine_f32({src}, {dst}, {channels}, {math.prod(net.shape[1:])}, "
                          f"{prefix}_scale, {prefix}_shift);")
    net.layers.append((qual, f"batch norm (per-channel affine) over {channels} channels"))


def folded_linear(qual: str, module: nn.Module, bn: BatchNormStep, shape) -> Optional[nn.Linear]:
    """An ``nn.Linear`` computing a MAC linear layer followed by ``bn``, or None where folding does not apply
    (a MAM or packed layer, or activations with more than one dimension)."""
    if type(module) is not nn.Linear or len(shape) != 1:
        return None
    N, K = effective_weight(module).shape
    check_batchnorm_channels(bn[1], bn[0], (N,), _WHERE)
    weight, bias = fold_batchnorm(effective_weight(module), module.bias, *batchnorm_affine(bn[1], bn[0], _WHERE))
    layer = nn.Linear(K, N)
    with torch.no_grad():
        layer.weight.copy_(weight.to(torch.float32))
        layer.bias.copy_(bias.to(torch.float32))
    return layer.eval()
