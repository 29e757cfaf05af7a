"""Lowering of a :class:`mamext.quant.IntegerNetwork` to integer-only C (``<name>_infer_int8``)."""

from __future__ import annotations

import math
from typing import FrozenSet, Tuple

from torch import nn

from ..quant import IntAvgPool2d, IntClamp, IntConv2d, IntegerNetwork, IntLinear, IntMaxPool2d
from ._args import check_c_size
from ._c_text import CArray
from ._index_encoding import choose_encoding
from ._lower import flatten_shape, unflatten_shape
from ._lower_conv_int import lower_int_conv, lower_int_pool
from ._network import Network

_WHERE = "mamext.export.to_c"


def lower_int(model: IntegerNetwork, shape: Tuple[int, ...], encodings: FrozenSet[str]) -> Network:
    """Arrays and statements of the integer network; the activation buffers hold int8 codes."""
    net = Network(shape=shape, int8=True, largest=math.prod(shape))
    for index, (name, layer) in enumerate(model.layers.named_children()):
        qual = f"layers.{name}"
        if isinstance(layer, IntLinear):
            _lower_linear(net, f"L{index}", qual, layer, encodings)
        elif isinstance(layer, IntClamp):
            _lower_clamp(net, qual, layer)
        elif isinstance(layer, nn.Flatten):
            flatten_shape(net, qual, layer)
        elif isinstance(layer, nn.Unflatten):
            unflatten_shape(net, qual, layer)
        elif isinstance(layer, IntConv2d):
            lower_int_conv(net, f"L{index}", qual, layer, encodings)
        elif isinstance(layer, (IntMaxPool2d, IntAvgPool2d)):
            lower_int_pool(net, f"L{index}", qual, layer)
        else:
            raise ValueError(f"{_WHERE}: unsupported layer '{qual}' ({type(layer).__name__}) in the integer network")
    return net


def _lower_clamp(net: Network, qual: str, layer: IntClamp) -> None:
    src = net.current
    dst = src if src != "input" else net.spare_buffer()
    net.write(dst, net.shape, f"the activation of '{qual}'")
    net.statements.append(f"    mamrt_q_clamp({src}, {dst}, {net.size}, {layer.zero_point});")
    net.layers.append((qual, f"ReLU (clamp at zero point {layer.zero_point})"))


def _lower_linear(net: Network, prefix: str, qual: str, layer: IntLinear, encodings: FrozenSet[str]) -> None:
    K, N = layer.in_features, layer.out_features
    if K <= 0 or N <= 0:
        raise ValueError(f"{_WHERE}: layer '{qual}' has in_features={K}, out_features={N}; the exported C "
                         "needs both positive")
    if net.shape[-1] != K:
        raise ValueError(f"{_WHERE}: layer '{qual}' expects inputs with last dimension {K}, but gets "
                         f"activations of shape {net.shape} (input_shape wrong?)")
    check_c_size(layer.kept, f"the kept connections of layer '{qual}'")
    encoding = choose_encoding(layer.indices, layer.counts, K, encodings)
    src, dst, rows = net.current, net.spare_buffer(), net.size // K
    net.write(dst, (*net.shape[:-1], N), f"the output of layer '{qual}'")
    net.arrays += [CArray("int8_t", f"{prefix}_val", layer.values.tolist()),
                   CArray(encoding.idx_type, f"{prefix}_idx", encoding.idx_values)]
    counts = ""
    if encoding.cnt_type is not None:
        net.arrays.append(CArray(encoding.cnt_type, f"{prefix}_cnt", encoding.cnt_values))
        counts = f"{prefix}_cnt, "
    net.arrays += [CArray("int32_t", f"{prefix}_bias", layer.bias.tolist()),
                   CArray("int32_t", f"{prefix}_mult", layer.multiplier.tolist()),
                   CArray("uint8_t", f"{prefix}_rsh", layer.right_shift.tolist())]
    kind = "mam" if layer.mam else "lin"
    net.statements.append(
        f"    mamrt_q_{kind}_{encoding.kernel_suffix}({src}, {dst}, {rows}, {K}, {N}, {prefix}_val, {prefix}_idx, "
        f"{counts}{layer.candidate_width}, {prefix}_bias, {prefix}_mult, {prefix}_rsh, {layer.input_zero_point}, "
        f"{layer.output_zero_point}, {layer.low}, {layer.high});")
    layout = "bitmap" if encoding.cnt_type is None else f"indices {encoding.idx_name} + counts {encoding.cnt_name}"
    net.layers.append((qual, f"integer {'MAM' if layer.mam else 'MAC'} {K}->{N}, kept {layer.kept}/{K * N}, "
                             f"{layout}: {encoding.nbytes} B (int32-offset CSR: {encoding.csr_bytes} B)"))
