"""Integer lowering of :class:`~mamext.quant.IntConv2d` and the int8 pooling layers (``mam_runtime_conv_int.h``)."""

from __future__ import annotations

from torch import nn

from ..quant import IntConv2d, IntMaxPool2d
from ..quant._layers import SUM_MAX_TERMS
from ._args import check_c_size
from ._c_text import CArray
from ._lower_conv import pool_window
from ._network import Network
from ._window import window

_WHERE = "mamext.export.to_c"


def lower_int_conv(net: Network, prefix: str, qual: str, layer: IntConv2d) -> None:
    if len(net.shape) == 3 and net.shape[0] != layer.in_channels:
        raise ValueError(f"{_WHERE}: convolution '{qual}' expects {layer.in_channels} input channels, but gets "
                         f"activations of shape {net.shape} (input_shape wrong?)")
    win = window(qual, net.shape, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                 layer.dilation, layer.groups)
    check_c_size(layer.weight.numel(), f"the weight of convolution '{qual}'")
    kept = int((layer.weight != 0).sum())
    longest = int((layer.weight != 0).reshape(layer.out_channels, -1).sum(1).max())
    if not layer.mam and longest > SUM_MAX_TERMS:     # every padded or pruned product adds 0
        raise ValueError(f"{_WHERE}: MAC convolution '{qual}' keeps {longest} weights in one output channel; "
                         f"int32 sums are exact for at most {SUM_MAX_TERMS}")
    src, dst = net.current, net.spare_buffer()
    net.write(dst, win.out_shape, f"the output of convolution '{qual}'")
    net.arrays += [win.struct(f"{prefix}_win"),
                   CArray("int8_t", f"{prefix}_w", layer.weight.reshape(-1).tolist()),
                   CArray("int32_t", f"{prefix}_bias", layer.bias.tolist()),
                   CArray("int32_t", f"{prefix}_mult", layer.multiplier.tolist()),
                   CArray("uint8_t", f"{prefix}_rsh", layer.right_shift.tolist())]
    net.patch, net.conv = max(net.patch, win.patch), True
    kind = "mam" if layer.mam else "lin"
    net.statements.append(
        f"    mamrt_q_{kind}_conv2d({src}, {dst}, &{prefix}_win, {prefix}_w, {prefix}_bias, {prefix}_mult, "
        f"{prefix}_rsh, {layer.input_zero_point}, {layer.output_zero_point}, {layer.low}, {layer.high}, mam_qpatch);")
    net.layers.append((qual, f"integer {'MAM' if layer.mam else 'MAC'} conv {win.c_in}->{win.c_out} "
                             f"k{win.k_h}x{win.k_w} s{win.s_h}x{win.s_w} -> {win.out_shape}, dense int8 weight, "
                             f"kept {kept}/{layer.weight.numel()}"))


def lower_int_pool(net: Network, prefix: str, qual: str, layer: nn.Module) -> None:
    win = pool_window(qual, _as_torch_pool(layer), net.shape)
    src, dst = net.current, net.spare_buffer()
    net.write(dst, win.out_shape, f"the output of '{qual}'")
    net.arrays.append(win.struct(f"{prefix}_win"))
    net.conv = True
    if isinstance(layer, IntMaxPool2d):
        net.statements.append(f"    mamrt_q_maxpool2d({src}, {dst}, &{prefix}_win);")
        net.layers.append((qual, f"integer MaxPool2d k{win.k_h}x{win.k_w} s{win.s_h}x{win.s_w} -> {win.out_shape}"))
    else:
        net.statements.append(f"    mamrt_q_avgpool2d({src}, {dst}, &{prefix}_win, {int(layer.count_include_pad)}, "
                              f"{layer.divisor_override or 0}, {layer.zero_point});")
        net.layers.append((qual, f"integer AvgPool2d k{win.k_h}x{win.k_w} s{win.s_h}x{win.s_w} -> {win.out_shape}"))


def _as_torch_pool(layer: nn.Module) -> nn.Module:
    """The PyTorch pooling module of the same geometry (whose checks :func:`pool_window` runs)."""
    if isinstance(layer, IntMaxPool2d):
        return nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    return nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding, count_include_pad=layer.count_include_pad,
                        divisor_override=layer.divisor_override)
