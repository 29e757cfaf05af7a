"""Float lowering of convolutions, pooling and batch norms on per-sample (C, H, W) activations.

A 1-d convolution on (C, L) activations runs as a height-1 2-d one on
(C, 1, L), the same memory.

Convolutions are exported from the weight they compute with: dense (a pruned
weight is a stored 0, whose product is a candidate exactly as in PyTorch), or,
for a pruned one where that takes fewer bytes, packed (CSR over the patch, each
kept weight with its input's offset, so an output reads only its kept inputs;
a pruned row's zero candidate stands for the pruned weights' products).
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
from torch.nn.modules.utils import _pair

from ..quant._batchnorm import batchnorm_affine, check_batchnorm_channels, fold_batchnorm
from ..quant._conv import explicit_padding
from ..sparse import effective_weight
from ..sparse_conv import MAM_CONV_KINDS, PackedConvNd
from ._args import check_c_size
from ._c_text import C_SIZEOF, CArray
from ._network import Network
from ._window import Window, window

_WHERE = "mamext.export.to_c"

BatchNormStep = Tuple[str, nn.Module]   # (qualified name, module)
_C_INDEX = {torch.uint8: ("uint8_t", "u8"), torch.int16: ("int16_t", "i16"), torch.int32: ("int32_t", "i32")}


def check_conv(qual: str, module: nn.Module, weight: torch.Tensor) -> None:
    """What the export of a convolution refuses: other padding modes, an unfinished MAM transition,
    non-finite constants (``weight``: the one it computes with, see :func:`conv_weight`)."""
    if module.padding_mode != "zeros":
        raise ValueError(f"{_WHERE}: convolution '{qual}' has padding_mode={module.padding_mode!r}; only 'zeros' "
                         "is supported")
    if isinstance(module, MAM_CONV_KINDS) and bool(module.beta.item() != 0):
        raise ValueError(f"{_WHERE}: {type(module).__name__} '{qual}' still blends in the MAC convolution (beta="
                         f"{float(module.beta):g}); finish the transition (beta=0) before exporting")
    for what, t in (("weight", weight), ("bias", module.bias)):
        if t is not None and not bool(torch.isfinite(t.detach()).all()):
            raise ValueError(f"{_WHERE}: convolution '{qual}' has non-finite (inf or NaN) {what} entries; C "
                             "constants need finite values")


def is_mam_conv(module: nn.Module) -> bool:
    return isinstance(module, MAM_CONV_KINDS) or (isinstance(module, PackedConvNd) and module.mam)


def conv_weight(qual: str, module: nn.Module, shape) -> torch.Tensor:
    """The dense weight a convolution computes with. A packed one's is its kept connections with the pruned
    ones as zeros: exact, since a pruned connection and a zero weight both contribute a zero product (a zero
    candidate of a MAM output, nothing to a sum). ``shape``: its per-sample input, to check the buffers on."""
    if not isinstance(module, PackedConvNd):
        return effective_weight(module)
    if module.is_int8:
        raise ValueError(f"{_WHERE}: convolution '{qual}' is packed as int8 (per-patch input scales), which the C "
                         "export does not implement; export the float model (or one packed in float32), or "
                         "integer-only through mamext.quant.pack_integer of the float model")
    if module.indices.dtype not in _C_INDEX:
        raise ValueError(f"{_WHERE}: packed convolution '{qual}' has {module.indices.dtype} indices; expected "
                         "uint8, int16 or int32")
    try:
        with torch.no_grad():  # forward itself, not __call__: the user's hooks do not run
            module.forward(torch.zeros((1, *shape), dtype=module.values.dtype, device=module.values.device))
        weight = module.to_dense_weight()
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        raise ValueError(f"{_WHERE}: packed convolution '{qual}' has inconsistent buffers: {e}") from None
    return weight.detach().cpu()


def conv_window(qual: str, module: nn.Module, shape) -> Window:
    """The window of a convolution on per-sample ``shape``; a 1-d one on (C, L) is a height-1 2-d one on
    (C, 1, L) (the same memory)."""
    kernel, stride, dilation, padding = module.kernel_size, module.stride, module.dilation, module.padding
    if len(kernel) == 1:
        if len(shape) != 2:
            raise ValueError(f"{_WHERE}: 1-d convolution '{qual}' needs per-sample activations of shape (C, L), "
                             f"got {tuple(shape)} (input_shape wrong?)")
        shape = (shape[0], 1, shape[1])
        kernel, stride, dilation = (1, *kernel), (1, *stride), (1, *dilation)
        padding = padding if isinstance(padding, str) else (0, *padding)
    if len(shape) == 3 and shape[0] != module.in_channels:
        raise ValueError(f"{_WHERE}: convolution '{qual}' expects {module.in_channels} input channels, but gets "
                         f"activations of shape {tuple(shape)} (input_shape wrong?)")
    win = window(qual, shape, module.out_channels, kernel, stride, explicit_padding(padding, kernel, dilation),
                 dilation, module.groups)
    check_c_size(module.out_channels * win.patch, f"the weight of convolution '{qual}'")
    return win


def conv_out_shape(module: nn.Module, win: Window) -> Tuple[int, ...]:
    """The per-sample output shape: (C, H, W), or (C, L) for a 1-d convolution."""
    return (win.c_out, win.w_out) if len(module.kernel_size) == 1 else win.out_shape


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
    p_h, p_w = _pair(module.padding)
    win = window(qual, shape, shape[0], module.kernel_size, stride, (p_h, p_w, p_h, p_w), dilation, shape[0])
    if win.out_shape != tuple(expect.shape[1:]):
        raise ValueError(f"{_WHERE}: {name} '{qual}': pooling geometry {win.out_shape} differs from PyTorch's "
                         f"{tuple(expect.shape[1:])}")
    return win


def lower_conv(net: Network, prefix: str, qual: str, module: nn.Module, bn: Optional[BatchNormStep]) -> bool:
    """A float convolution (dense, pruned or packed; emitted dense or packed, whichever takes fewer bytes);
    returns whether it folded the batch norm ``bn`` that follows it."""
    win = conv_window(qual, module, net.shape)
    weight, bias = conv_weight(qual, module, net.shape), module.bias
    check_conv(qual, module, weight)
    mam = is_mam_conv(module)
    fold = bn is not None and not mam
    out_shape = conv_out_shape(module, win)
    if fold:
        check_batchnorm_channels(bn[1], bn[0], out_shape, _WHERE)
        weight, bias = fold_batchnorm(weight, bias, *batchnorm_affine(bn[1], bn[0], _WHERE))
    src, dst = net.current, net.spare_buffer()
    net.write(dst, out_shape, f"the output of convolution '{qual}'")
    net.arrays.append(win.struct(f"{prefix}_win"))
    bias_name = None
    if bias is not None:
        net.arrays.append(CArray("float", f"{prefix}_bias", bias.detach().to(torch.float32).tolist()))
        bias_name = f"{prefix}_bias"
    net.conv = True
    rows = weight.to(torch.float32).reshape(win.c_out, win.patch)
    kind = "mam" if mam else "lin"
    packed = _emit_packed_conv(net, prefix, win, rows, kind, bias_name, src, dst)
    if not packed:
        net.patch = max(net.patch, win.patch)
        net.arrays.append(CArray("float", f"{prefix}_w", rows.reshape(-1).tolist()))
        net.statements.append(f"    mamrt_{kind}_conv2d_f32({src}, {dst}, &{prefix}_win, {prefix}_w, "
                              f"{bias_name or '(const float *)0'}, mam_patch);")
    kept = int((rows != 0).sum())
    geometry = f"conv1d {win.c_in}->{win.c_out} k{win.k_w} s{win.s_w}" if len(out_shape) == 2 else \
        f"conv {win.c_in}->{win.c_out} k{win.k_h}x{win.k_w} s{win.s_h}x{win.s_w}"
    net.layers.append((qual, f"{'packed' if packed else 'dense'} {'MAM' if mam else 'MAC'} {geometry} -> "
                             f"{out_shape}, kept {kept}/{rows.numel()}, float32"
                             + (f", {bn[0]} folded" if fold else "")))
    return fold


def position_loop(win: Window, body) -> list:
    """Statements running ``body`` (lines using ``g_``, ``oh_``, ``ow_``) for every group and output position."""
    head = ["    {", "        int32_t g_, oh_, ow_;", f"        for (g_ = 0; g_ < {win.groups}; ++g_) {{",
            f"            for (oh_ = 0; oh_ < {win.h_out}; ++oh_) {{",
            f"                for (ow_ = 0; ow_ < {win.w_out}; ++ow_) {{"]
    tail = ["                }", "            }", "        }", "    }"]
    return head + ["                    " + line for line in body] + tail


def input_offsets(win: Window, columns: torch.Tensor) -> Optional[torch.Tensor]:
    """The offset in the input of each patch position in ``columns`` from its window's first input:
    ``(c * h + i * d_h) * w + j * d_w`` (channel c of the group, kernel row i, column j), or None where the
    dilated kernel is larger than the input (an offset would not tell its row and column)."""
    if (win.k_h - 1) * win.d_h >= win.h or (win.k_w - 1) * win.d_w >= win.w:
        return None
    c, rest = columns // (win.k_h * win.k_w), columns % (win.k_h * win.k_w)
    return (c * win.h + rest // win.k_w * win.d_h) * win.w + rest % win.k_w * win.d_w


def _emit_packed_conv(net: Network, prefix: str, win: Window, rows: torch.Tensor, kind: str, bias_name, src: str,
                      dst: str) -> bool:
    """A pruned convolution's weight as CSR rows over the patch, with each kept connection's input offset,
    when that takes fewer bytes than dense: each output reads the inputs of its kept connections only.
    Returns whether it was emitted."""
    keep = rows != 0
    kept, total = int(keep.sum()), rows.numel()
    offsets = input_offsets(win, keep.nonzero()[:, 1])
    if offsets is None or kept == total:
        return False
    offset_type = "int16_t" if win.c_in // win.groups * win.h * win.w <= 1 << 15 else "int32_t"
    if (4 + C_SIZEOF[offset_type]) * kept + 4 * (win.c_out + 1) >= 4 * total:
        return False
    net.arrays += [CArray("float", f"{prefix}_val", rows[keep].tolist()),
                   CArray(offset_type, f"{prefix}_at", offsets.tolist()),
                   CArray("int32_t", f"{prefix}_off", [0] + keep.sum(1).cumsum(0).tolist())]
    at16, at32 = (f"{prefix}_at", "(const int32_t *)0") if offset_type == "int16_t" else \
        ("(const int16_t *)0", f"{prefix}_at")
    net.statements.append(f"    mamrt_packed_conv2d_f32({src}, {dst}, &{prefix}_win, {prefix}_val, {at16}, {at32}, "
                          f"{prefix}_off, {bias_name or '(const float *)0'}, {int(kind == 'mam')});")
    return True


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
