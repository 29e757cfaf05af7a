"""Integer lowering of :class:`~mamext.quant.IntConv2d` and the int8 pooling layers (``mam_runtime_conv_int.h``).

A convolution's int8 weight codes are stored dense, or, for a pruned layer:

* keeping at most half its weights (and ``"offsets"`` allowed): packed with
  each kept code's input offset from the window's first input (int16, int32
  past 32,768 inputs per group); each output reads its kept inputs only, with
  no patch gathered. Measured on a Cortex-M4 this executes fewer instructions
  than the dense kernel up to well past half the weights kept, and far fewer
  than the index encodings, whose patch gather dominates; above half, the dense
  products are cheaper per weight than the offset reads;
* otherwise, when it takes fewer bytes than dense, in the cheapest index
  encoding of the linear layers (patch positions as columns; a bitmap only
  where each group's bits start on a byte), run patch by patch through the
  linear layer kernels.
"""

from __future__ import annotations

from typing import FrozenSet, Optional

import torch
from torch import nn

from ..quant import IntConv2d, IntMaxPool2d
from ..quant._layers import SUM_MAX_TERMS
from ._args import check_c_size
from ._c_text import C_SIZEOF, CArray
from ._index_encoding import choose_encoding, delta_stream
from ._lower_conv import input_offsets, pool_window, position_loop
from ._network import Network
from ._window import window

_WHERE = "mamext.export.to_c"


def lower_int_conv(net: Network, prefix: str, qual: str, layer: IntConv2d, encodings: FrozenSet[str]) -> None:
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
                   CArray("int32_t", f"{prefix}_bias", layer.bias.tolist()),
                   CArray("int32_t", f"{prefix}_mult", layer.multiplier.tolist()),
                   CArray("uint8_t", f"{prefix}_rsh", layer.right_shift.tolist())]
    net.conv = True
    layout = _emit_offset_conv(net, prefix, win, layer, encodings, src, dst)
    if layout is None:
        layout = _emit_encoded_conv(net, prefix, win, layer, encodings, src, dst)
    if layout is None:
        net.patch = max(net.patch, win.patch)
        net.arrays.append(CArray("int8_t", f"{prefix}_w", layer.weight.reshape(-1).tolist()))
        net.statements.append(
            f"    mamrt_q_{'mam' if layer.mam else 'lin'}_conv2d({src}, {dst}, &{prefix}_win, {prefix}_w, "
            f"{prefix}_bias, {prefix}_mult, {prefix}_rsh, {layer.input_zero_point}, {layer.output_zero_point}, "
            f"{layer.low}, {layer.high}, mam_qpatch);")
        layout = f"dense int8 weight: {layer.weight.numel()} B"
    net.layers.append((qual, f"integer {'MAM' if layer.mam else 'MAC'} conv {win.c_in}->{win.c_out} "
                             f"k{win.k_h}x{win.k_w} s{win.s_h}x{win.s_w} -> {win.out_shape}, kept "
                             f"{kept}/{layer.weight.numel()}, {layout}"))


def _emit_offset_conv(net: Network, prefix: str, win, layer: IntConv2d, encodings: FrozenSet[str], src: str,
                      dst: str) -> Optional[str]:
    """A convolution keeping at most half its weights, packed with its kept connections' input offsets (row by
    row in patch order, int32 row starts), when ``"offsets"`` is allowed and the dilated kernel fits the input.
    Returns its layout description, or None (nothing emitted)."""
    rows = layer.weight.reshape(win.c_out, win.patch)
    keep = rows != 0
    kept, total = int(keep.sum()), rows.numel()
    if "offsets" not in encodings or 2 * kept > total:
        return None
    offsets = input_offsets(win, keep.nonzero()[:, 1])
    if offsets is None:
        return None
    offset_type = "int16_t" if win.c_in // win.groups * win.h * win.w <= 1 << 15 else "int32_t"
    net.arrays += [CArray("int8_t", f"{prefix}_val", rows[keep].tolist()),
                   CArray(offset_type, f"{prefix}_at", offsets.tolist()),
                   CArray("int32_t", f"{prefix}_off", [0] + keep.sum(1).cumsum(0).tolist())]
    at16, at32 = (f"{prefix}_at", "(const int32_t *)0") if offset_type == "int16_t" else \
        ("(const int16_t *)0", f"{prefix}_at")
    net.statements += [
        f"    mamrt_q_packed_conv2d({src}, {dst}, &{prefix}_win, {prefix}_val, {at16}, {at32}, {prefix}_off,",
        f"        {prefix}_bias, {prefix}_mult, {prefix}_rsh, {layer.input_zero_point}, {layer.output_zero_point}, "
        f"{layer.low}, {layer.high}, {int(layer.mam)});"]
    nbytes = kept * (1 + C_SIZEOF[offset_type]) + 4 * (win.c_out + 1)
    return f"input offsets {offset_type[:-2]}: {nbytes} B (dense: {total} B)"


def _group_starts(encoding, counts: torch.Tensor, indices: torch.Tensor, groups: int, cout_g: int, K: int):
    """(first weight, first index element) of each group's neurons in the layer's arrays."""
    per_neuron = counts.tolist()
    values = [sum(per_neuron[:g * cout_g]) for g in range(groups)]
    if encoding.idx_name == "bm":
        return values, [g * cout_g * K // 8 for g in range(groups)]
    if encoding.idx_name == "d8":
        column_lists = indices.tolist()
        lengths = [len(delta_stream(column_lists[values[g]:values[g] + sum(per_neuron[g * cout_g:(g + 1) * cout_g])],
                                    per_neuron[g * cout_g:(g + 1) * cout_g])) for g in range(groups)]
        return values, [sum(lengths[:g]) for g in range(groups)]
    return values, values


def _emit_encoded_conv(net: Network, prefix: str, win, layer: IntConv2d, encodings: FrozenSet[str], src: str,
                       dst: str) -> Optional[str]:
    """A pruned convolution in the cheapest index encoding, when that takes fewer bytes than the dense codes:
    each patch, gathered as codes, is one row of the layer kernels of mam_runtime_int.h. Returns its layout
    description, or None (nothing emitted)."""
    rows = layer.weight.reshape(win.c_out, win.patch)
    keep = rows != 0
    cout_g = win.c_out // win.groups
    if win.groups > 1 and cout_g * win.patch % 8:     # each group's bitmap must start on a byte
        encodings = encodings - {"bitmap"}
    if bool(keep.all()) or not encodings:
        return None
    counts, indices = keep.sum(1), keep.nonzero()[:, 1]
    encoding = choose_encoding(indices, counts, win.patch, encodings)
    value_starts, index_starts = _group_starts(encoding, counts, indices, win.groups, cout_g, win.patch)
    grouped = win.groups > 1
    nbytes = int(keep.sum()) + encoding.nbytes + (8 * win.groups if grouped else 0)
    if nbytes >= rows.numel():
        return None
    net.arrays += [CArray("int8_t", f"{prefix}_val", rows[keep].tolist()),
                   CArray(encoding.idx_type, f"{prefix}_idx", encoding.idx_values)]
    counts_arg = ""
    if encoding.cnt_type is not None:
        net.arrays.append(CArray(encoding.cnt_type, f"{prefix}_cnt", encoding.cnt_values))
        counts_arg = f"{prefix}_cnt + g_ * {cout_g}, "
    val, idx = f"{prefix}_val", f"{prefix}_idx"
    if grouped:
        net.arrays += [CArray("int32_t", f"{prefix}_vs", value_starts), CArray("int32_t", f"{prefix}_is", index_starts)]
        val, idx = f"{val} + {prefix}_vs[g_]", f"{idx} + {prefix}_is[g_]"
    net.qpatch, net.col = max(net.qpatch, win.patch), max(net.col, cout_g)
    kind = "mam" if layer.mam else "lin"
    per_group = f"g_ * {cout_g}"
    net.statements += position_loop(win, [
        f"mamrt_q_patch_codes({src}, &{prefix}_win, g_, oh_, ow_, {layer.input_zero_point}, mam_qcodes);",
        f"mamrt_q_{kind}_{encoding.kernel_suffix}(mam_qcodes, mam_qcol, 1, {win.patch}, {cout_g}, {val}, {idx},",
        f"    {counts_arg}{win.patch}, {prefix}_bias + {per_group}, {prefix}_mult + {per_group}, "
        f"{prefix}_rsh + {per_group},",
        f"    {layer.input_zero_point}, {layer.output_zero_point}, {layer.low}, {layer.high});",
        f"mamrt_q_scatter(mam_qcol, {dst}, &{prefix}_win, g_, oh_, ow_);"])
    what = "bitmap" if encoding.cnt_type is None else f"indices {encoding.idx_name} + counts {encoding.cnt_name}"
    return f"{what}: {nbytes} B (dense: {rows.numel()} B)"


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
