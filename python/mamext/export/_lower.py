"""Layer lowering: each supported layer becomes constant arrays and statements of a :class:`Network`.

One function per layer kind (no-op, Flatten, Unflatten, ReLU, Linear/MAMLinear/packed;
convolutions, pooling and batch norms in :mod:`._lower_conv`);
each appends its constant arrays and the statements of ``<name>_infer``, and
moves the current activation between the input and two static buffers.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Tuple

import torch
from torch import nn

from ..nn.modules import MAMLinear
from ..sparse import PackedLayer, _pack_one, effective_weight
from ._args import check_c_size
from ._c_text import CArray
from ._lower_conv import folded_linear, lower_batchnorm, lower_conv, lower_pool
from ._network import Network
from ._walk import walk

_WHERE = "mamext.export.to_c"
_C_INDEX = {torch.uint8: ("uint8_t", "u8"), torch.int16: ("int16_t", "i16"), torch.int32: ("int32_t", "i32")}


def lower(model: nn.Module, shape: Tuple[int, ...], int8: bool) -> Network:
    net = Network(shape=shape, int8=int8, largest=math.prod(shape))
    steps = walk(model)
    skip = set()
    for index, (qual, module, kind) in enumerate(steps):
        if index in skip:
            continue
        if int8 and kind in ("conv", "batchnorm"):
            raise ValueError(f"{_WHERE}: '{qual}' ({type(module).__name__}): dtype=torch.int8 (per-sample input "
                             "scales) supports linear layers and pooling only; export convolutions and batch norms in "
                             "float32, or integer-only through mamext.quant.pack_integer")
        follower = steps[index + 1] if index + 1 < len(steps) else None
        bn = (follower[0], follower[1]) if follower is not None and follower[2] == "batchnorm" else None
        prefix = f"L{index}"
        if kind == "conv":
            folded = lower_conv(net, prefix, qual, module, bn)
        elif kind == "linear" and bn is not None and (merged := folded_linear(qual, module, bn, net.shape)):
            _lower_linear(net, prefix, f"{qual} + {bn[0]} folded", merged)
            folded = True
        else:
            _LOWER[kind](net, prefix, qual, module)
            folded = False
        if folded:
            skip.add(index + 1)
    return net


# --------------------------------------------------------------------------- element-wise layers

def _lower_noop(net: Network, prefix: str, qual: str, module: nn.Module) -> None:
    """Identity, and Dropout (inactive in inference)."""


def _lower_flatten(net: Network, prefix: str, qual: str, module: nn.Flatten) -> None:
    flatten_shape(net, qual, module)


def flatten_shape(net: Network, qual: str, module: nn.Flatten) -> None:
    """Apply ``module`` to the shape of the activations (a per-sample Flatten is a no-op in C)."""
    sample = torch.empty((1, *net.shape), device="meta")
    try:
        new = tuple(sample.flatten(module.start_dim, module.end_dim).shape)
    except (IndexError, RuntimeError, TypeError) as e:
        raise ValueError(f"{_WHERE}: '{qual}' ({module}) cannot flatten activations of shape {net.shape}: "
                         f"{e}") from None
    if new[0] != 1:
        raise ValueError(f"{_WHERE}: '{qual}' ({module}) flattens the batch dimension; only start_dim >= 1 "
                         "is supported")
    net.shape = new[1:]
    net.layers.append((qual, f"Flatten -> {net.shape}"))


def _lower_unflatten(net: Network, prefix: str, qual: str, module: nn.Unflatten) -> None:
    unflatten_shape(net, qual, module)


def unflatten_shape(net: Network, qual: str, module: nn.Unflatten) -> None:
    """Apply ``module`` to the shape of the activations (a per-sample Unflatten is a no-op in C)."""
    dim, rank = module.dim, len(net.shape) + 1
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise ValueError(f"{_WHERE}: '{qual}' ({module}) names its dimension ({dim!r}); only an int dim is "
                         "supported")
    if dim in (0, -rank):
        raise ValueError(f"{_WHERE}: '{qual}' ({module}) unflattens the batch dimension (dim={dim} of activations "
                         f"of shape (batch, {', '.join(map(str, net.shape))})); only the per-sample dimensions "
                         "(dim >= 1) can be unflattened")
    sample = torch.empty((1, *net.shape), device="meta")
    try:
        new = tuple(module(sample).shape)
    except (IndexError, RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"{_WHERE}: '{qual}' ({module}) cannot unflatten activations of shape {net.shape}: "
                         f"{e}") from None
    net.shape = new[1:]
    net.layers.append((qual, f"Unflatten -> {net.shape}"))


def _lower_relu(net: Network, prefix: str, qual: str, module: nn.ReLU) -> None:
    src = net.current
    dst = src if src != "input" else net.spare_buffer()
    net.write(dst, net.shape, f"the activation of '{qual}'")
    net.statements.append(f"    for (i = 0; i < {net.size}; ++i) {dst}[i] = {src}[i] < 0.0f ? 0.0f : {src}[i];")
    net.layers.append((qual, "ReLU"))


# --------------------------------------------------------------------------- linear layers

def _dims(qual: str, module: nn.Module) -> Tuple[int, int]:
    """(in_features K, out_features N) from the data the layer computes with, checked for C."""
    if isinstance(module, PackedLayer):
        K, N = module.in_features, int(module.offsets.numel()) - 1
        if not isinstance(K, int) or isinstance(K, bool):
            raise TypeError(f"{_WHERE}: packed layer '{qual}' has in_features={K!r}; expected an int")
    else:
        N, K = effective_weight(module).shape
    if K <= 0 or N <= 0:
        raise ValueError(f"{_WHERE}: layer '{qual}' ({type(module).__name__}) has in_features={K}, "
                         f"out_features={N}; the exported C needs both positive (C has no empty arrays)")
    if not isinstance(module, PackedLayer):
        check_c_size(N * K, f"the dense weight of layer '{qual}' ({N} x {K})")
    return K, N


def _check_finite(qual: str, module: nn.Module, int8: bool) -> None:
    """C constants must be finite, and int8 quantisation of inf/NaN weights is meaningless: refuse both."""
    if isinstance(module, PackedLayer):
        tensors = {"values": module.values, "weight_scale": module.weight_scale, "bias": module.bias}
    else:
        tensors = {"weight": effective_weight(module), "bias": module.bias}
    for what, t in tensors.items():
        if t is not None and t.is_floating_point() and not bool(torch.isfinite(t.detach()).all()):
            use = "int8 quantisation" if int8 else "C constants"
            raise ValueError(f"{_WHERE}: layer '{qual}' ({type(module).__name__}) has non-finite (inf or NaN) "
                             f"{what} entries; {use} need finite values")


def _validate_packed(qual: str, layer: PackedLayer) -> None:
    """A packed layer's buffers are user-editable tensors: run the operator's own structure check."""
    if layer.indices.dtype not in _C_INDEX:
        raise ValueError(f"{_WHERE}: packed layer '{qual}' has {layer.indices.dtype} indices; expected uint8, "
                         "int16 or int32")
    try:
        with torch.no_grad():  # forward itself, not __call__: the user's hooks do not run
            layer.forward(torch.zeros(1, layer.in_features, device=layer.values.device))
    except (RuntimeError, ValueError, TypeError) as e:
        raise ValueError(f"{_WHERE}: packed layer '{qual}' has inconsistent buffers: {e}") from None


def _packed_or_dense(qual: str, module: nn.Module, int8: bool) -> nn.Module:
    """The layer to emit: packed (pruned layers, every layer for int8) or the dense module itself."""
    if isinstance(module, PackedLayer):
        _validate_packed(qual, module)
        if module.is_int8 and not int8:
            raise ValueError(f"{_WHERE}: layer '{qual}' is packed as int8; export with dtype=torch.int8")
    elif isinstance(module, MAMLinear) and bool(module.beta.item() != 0):
        raise ValueError(f"{_WHERE}: MAMLinear '{qual}' still blends in the MAC layer (beta="
                         f"{float(module.beta):g}); finish the transition (beta=0) before exporting")
    with torch.no_grad():
        packed = _pack_one(module, torch.int8 if int8 else torch.float32, int8, qual)
    return module if packed is None else packed


def _lower_linear(net: Network, prefix: str, qual: str, module: nn.Module) -> None:
    K, N = _dims(qual, module)
    if net.shape[-1] != K:
        raise ValueError(f"{_WHERE}: layer '{qual}' ({type(module).__name__}) expects inputs with last "
                         f"dimension {K}, but gets activations of shape {net.shape} (input_shape wrong?)")
    _check_finite(qual, module, net.int8)
    layer = _packed_or_dense(qual, module, net.int8)
    mam = layer.mam if isinstance(layer, PackedLayer) else isinstance(layer, MAMLinear)
    src, dst, rows = net.current, net.spare_buffer(), net.size // K
    net.write(dst, (*net.shape[:-1], N), f"the output of layer '{qual}'")
    bias = "(const float *)0"
    if layer.bias is not None:
        net.arrays.append(CArray("float", f"{prefix}_bias", layer.bias.detach().to(torch.float32).tolist()))
        bias = f"{prefix}_bias"
    head = f"{src}, {dst}, {rows}, {K}, {N}"
    kind = "mam" if mam else "lin"
    if isinstance(layer, PackedLayer):
        _emit_packed(net, prefix, qual, layer, f"mamrt_{kind}_csr", head, bias)
    else:
        weight = effective_weight(layer).to(torch.float32).reshape(-1).tolist()
        net.arrays.append(CArray("float", f"{prefix}_w", weight))
        net.statements.append(f"    mamrt_{kind}_dense_f32({head}, {prefix}_w, {bias});")
        net.layers.append((qual, f"dense {'MAM' if mam else 'Linear'} {K}->{N}, float32"))


def _emit_packed(net: Network, prefix: str, qual: str, layer: PackedLayer, kernel: str, head: str,
                 bias: str) -> None:
    """Arrays and call of a packed layer: values, indices, int32 row offsets (and int8 scales)."""
    nnz = check_c_size(layer.kept, f"the kept connections of layer '{qual}'")
    idx_type, suffix = _C_INDEX[layer.indices.dtype]
    values = layer.values.tolist() if layer.is_int8 else layer.values.to(torch.float32).tolist()
    net.arrays.append(CArray("int8_t" if layer.is_int8 else "float", f"{prefix}_val", values))
    net.arrays.append(CArray(idx_type, f"{prefix}_idx", layer.indices.tolist()))
    net.arrays.append(CArray("int32_t", f"{prefix}_off", layer.offsets.tolist()))
    arrays = f"{prefix}_val, {prefix}_idx, {prefix}_off"
    if layer.is_int8:
        net.arrays.append(CArray("float", f"{prefix}_ws", layer.weight_scale.tolist()))
        net.qbuf = max(net.qbuf, layer.in_features)
        net.statements.append(f"    {kernel}_i8_{suffix}({head}, {arrays}, {prefix}_ws, {bias}, mam_qbuf);")
        if not layer.mam:
            longest = int((layer.offsets[1:] - layer.offsets[:-1]).max())
            net.checks.append(f"typedef char {prefix}_int8_sum_fits_int32[{longest} <= MAMEXT_INT8_SUM_MAX_TERMS "
                              "? 1 : -1];")
    else:
        net.statements.append(f"    {kernel}_f32_{suffix}({head}, {arrays}, {bias});")
    kind = "MAM" if layer.mam else "Linear"
    net.layers.append((qual, f"packed {kind} {layer.in_features}->{layer.out_features}, kept {nnz}/{layer.total}, "
                             f"{'int8' if layer.is_int8 else 'float32'}"))


_LOWER: Dict[str, Callable[[Network, str, str, nn.Module], None]] = {
    "noop": _lower_noop, "flatten": _lower_flatten, "unflatten": _lower_unflatten, "relu": _lower_relu,
    "linear": _lower_linear, "maxpool": lower_pool, "avgpool": lower_pool, "batchnorm": lower_batchnorm}
