""":func:`pack_integer`: calibrate a float network and convert it to an :class:`IntegerNetwork`."""

from __future__ import annotations

from typing import Iterable, List, Tuple

import torch
from torch import nn

from ..nn.conv import MAMConv1d, MAMConv2d
from ..nn.modules import MAMLinear
from ..sparse import PackedLayer, effective_weight
from ..sparse_conv import PackedConvNd
from ._batchnorm import batchnorm_affine, fold_batchnorm
from ._conv import IntAvgPool2d, IntConv2d, IntMaxPool2d, explicit_padding
from ._layers import IntClamp, IntLinear
from ._network import IntegerNetwork
from ._observer import MinMaxObserver

_WHERE = "mamext.quant.pack_integer"
_SUPPORTED = "nn.Sequential, MAMLinear, nn.Linear, PackedMAMLinear, PackedLinear, MAMConv2d, nn.Conv2d, " \
             "MAMConv1d, nn.Conv1d (and their float-packed versions), nn.MaxPool2d, nn.AvgPool2d, " \
             "nn.BatchNorm1d/2d (after a layer), nn.ReLU, nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout"


def _kind(module: nn.Module, name: str) -> str:
    bases = ((PackedConvNd, "conv"), (nn.Identity, "noop"), (nn.Dropout, "noop"), (nn.Flatten, "flatten"),
             (nn.Unflatten, "unflatten"), (nn.ReLU, "relu"), (MAMLinear, "linear"), (PackedLayer, "linear"),
             (nn.Linear, "linear"), (MAMConv2d, "conv"), (MAMConv1d, "conv"), (nn.Conv2d, "conv"),
             (nn.Conv1d, "conv"), (nn.MaxPool2d, "maxpool"), (nn.AvgPool2d, "avgpool"),
             (nn.BatchNorm1d, "batchnorm"), (nn.BatchNorm2d, "batchnorm"))
    for base, kind in bases:
        if isinstance(module, base):
            if type(module).forward is base.forward:
                return kind
            break
    raise ValueError(f"{_WHERE}: unsupported module '{name}' ({type(module).__name__}); supported: {_SUPPORTED}")


def _steps(module: nn.Module, prefix: str = "") -> List[Tuple[str, nn.Module, str]]:
    """(name, module, kind) of every layer in execution order, nested nn.Sequential unrolled."""
    if type(module) is nn.Sequential:
        out = []
        for name, child in module.named_children():
            out += _steps(child, f"{prefix}.{name}" if prefix else name)
        return out
    name = prefix or "<model>"
    return [(name, module, _kind(module, name))]


def _float_weight(name: str, module: nn.Module) -> torch.Tensor:
    """The float weight a layer computes with; a packed layer's kept connections with the pruned ones as zeros
    (exact: both are a zero product, a zero candidate of a MAM output)."""
    if getattr(module, "padding_mode", "zeros") != "zeros":
        raise ValueError(f"{_WHERE}: convolution '{name}' has padding_mode={module.padding_mode!r}; only "
                         "'zeros' is supported")
    if isinstance(module, PackedLayer):
        if module.is_int8:
            raise ValueError(f"{_WHERE}: layer '{name}' is packed as int8 with per-sample input scales; "
                             "pack_integer needs the float model (or a float-packed one)")
        weight = module.to_dense_weight()
    else:
        if isinstance(module, (MAMLinear, MAMConv2d, MAMConv1d)) and bool(module.beta.item() != 0):
            raise ValueError(f"{_WHERE}: {type(module).__name__} '{name}' still blends in the MAC layer (beta="
                             f"{float(module.beta):g}); finish the transition (beta=0) first")
        weight = effective_weight(module)
    for what, t in (("weight", weight), ("bias", module.bias)):
        if t is not None and not bool(torch.isfinite(t.detach()).all()):
            raise ValueError(f"{_WHERE}: layer '{name}' has non-finite {what} entries")
    return weight.detach().cpu()


def _is_mam(module: nn.Module) -> bool:
    """Whether a linear layer or convolution (dense, pruned or packed) computes MAM outputs."""
    return module.mam if isinstance(module, PackedLayer) else isinstance(module, (MAMLinear, MAMConv2d, MAMConv1d))


def _group(steps):
    """Integer-network stages ``(kind, name, module, relu, bn)``: a linear or conv layer with the batch norm
    right after it (``(name, module)``, folded) and its fused ReLUs; relu, flatten and pooling stages."""
    stages, i = [], 0
    while i < len(steps):
        name, module, kind = steps[i]
        i += 1
        bn = None
        if kind in ("linear", "conv"):
            if i < len(steps) and steps[i][2] == "batchnorm":
                bn = steps[i][:2]
                i += 1
            relu = False
            while i < len(steps) and steps[i][2] in ("noop", "relu"):
                relu |= steps[i][2] == "relu"
                i += 1
            stages.append((kind, name, module, relu, bn))
        elif kind == "batchnorm":
            raise ValueError(f"{_WHERE}: batch norm '{name}' must directly follow a linear layer or convolution, "
                             "which absorbs it in the integer network")
        elif kind != "noop":
            stages.append((kind, name, module, False, None))
    return stages


def _batches(calibration) -> Iterable[torch.Tensor]:
    for index, item in enumerate(calibration):
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not torch.is_tensor(x) or not x.is_floating_point():
            raise TypeError(f"{_WHERE}: calibration item {index} must be a float tensor or an (input, target) "
                            f"pair, got {type(x).__name__ if not torch.is_tensor(x) else x.dtype}")
        yield x.detach().cpu()


def _calibrate(stages, calibration) -> List[MinMaxObserver]:
    """Observers of the input and of every linear or conv stage's output (after its batch norm and ReLUs)."""
    observers = [MinMaxObserver()] + [MinMaxObserver() for s in stages if s[0] in ("linear", "conv")]
    batches = 0
    for x in _batches(calibration):
        batches += 1
        observers[0].observe(x, "the input")
        k = 0
        for kind, name, module, relu, bn in stages:
            x = module(x) if kind != "relu" else torch.relu(x)
            if bn is not None:
                if kind == "linear" and x.dim() != 2:
                    raise ValueError(f"{_WHERE}: batch norm '{bn[0]}' after linear layer '{name}' normalises "
                                     f"dim 1 of its {x.dim()}-d output; it folds only into (batch, features) "
                                     "outputs")
                x = bn[1](x)
            if kind in ("linear", "conv"):
                x = torch.relu(x) if relu else x
                k += 1
                observers[k].observe(x, f"the output of '{name}'")
    if batches == 0:
        raise ValueError(f"{_WHERE}: calibration is empty; give at least one batch of inputs")
    return observers


def pack_integer(model: nn.Module, calibration) -> IntegerNetwork:
    """The integer-only int8 version of ``model`` (see :mod:`mamext.quant` for the scheme).

    Args:
        model: an ``nn.Sequential`` (nested allowed) or single layer of
            ``MAMLinear``/``nn.Linear`` (dense, pruned with masks or zeros,
            or float-packed), ``MAMConv2d``/``nn.Conv2d`` (dense, pruned or
            float-packed as ``PackedMAMConv2d``/``PackedConv2d``; zero padding),
            ``MAMConv1d``/``nn.Conv1d`` (likewise; a height-1 ``IntConv2d``
            between an ``nn.Unflatten`` and an ``nn.Flatten``),
            ``nn.MaxPool2d``, ``nn.AvgPool2d``, a ``nn.BatchNorm1d``/
            ``BatchNorm2d`` right after a linear layer or convolution (folded
            into it, running statistics), ``nn.ReLU``, ``nn.Flatten``,
            ``nn.Unflatten``, ``nn.Identity``, ``nn.Dropout``. It is left
            unchanged (mode included).
        calibration: an iterable of float input batches, or of ``(input,
            target)`` pairs; the activation ranges are their min/max.

    Returns:
        An :class:`IntegerNetwork` on the CPU.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"{_WHERE}: model must be an nn.Module, got {type(model).__name__}")
    stages = _group(_steps(model))
    was_training = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            weights = {name: _layer_parameters(name, module, bn) for kind, name, module, _, bn in stages
                       if kind in ("linear", "conv")}
            observers = _calibrate(stages, calibration)
    finally:
        for module, mode in was_training:
            module.training = mode
    return _build(stages, weights, [o.params() for o in observers])


def _layer_parameters(name: str, module: nn.Module, bn):
    """(weight, bias) the integer layer quantises: the layer's own, or float64 with the batch norm folded in."""
    weight = _float_weight(name, module)
    if bn is None:
        return weight, module.bias
    if bn[1].num_features != weight.shape[0]:
        raise ValueError(f"{_WHERE}: batch norm '{bn[0]}' ({type(bn[1]).__name__}({bn[1].num_features})) does not "
                         f"match the {weight.shape[0]} outputs of '{name}'")
    return fold_batchnorm(weight, module.bias, *batchnorm_affine(bn[1], bn[0], _WHERE))


def _conv_geometry(module: nn.Module):
    """stride, (top, left, bottom, right) padding, dilation and groups of a convolution; a 1-d one's as a
    height-1 2-d one's."""
    kernel, stride, dilation, padding = module.kernel_size, module.stride, module.dilation, module.padding
    if len(kernel) == 1:
        kernel, stride, dilation = (1, *kernel), (1, *stride), (1, *dilation)
        padding = padding if isinstance(padding, str) else (0, *padding)
    return dict(stride=stride, padding=explicit_padding(padding, kernel, dilation), dilation=dilation,
                groups=module.groups)


def _int_conv(module: nn.Module, weight: torch.Tensor, bias, quantisation: dict) -> List[nn.Module]:
    """The integer layers of a convolution: an :class:`IntConv2d`; for a 1-d one, a height-1 one between an
    ``nn.Unflatten`` adding the height and an ``nn.Flatten`` removing it (shape changes only)."""
    one_d = len(module.kernel_size) == 1
    weight = weight.unsqueeze(2) if one_d else weight
    conv = IntConv2d.from_float(weight, bias, mam=_is_mam(module), **_conv_geometry(module), **quantisation)
    return [nn.Unflatten(1, (module.in_channels, 1)), conv, nn.Flatten(2, 3)] if one_d else [conv]


def _pool(module: nn.Module, name: str, zero_point: int) -> nn.Module:
    if module.ceil_mode or getattr(module, "return_indices", False):
        raise ValueError(f"{_WHERE}: {type(module).__name__} '{name}' has ceil_mode=True or return_indices=True; "
                         "neither is supported")
    stride = module.stride if module.stride is not None else module.kernel_size
    if isinstance(module, nn.MaxPool2d):
        return IntMaxPool2d(module.kernel_size, stride, module.padding, module.dilation)
    return IntAvgPool2d(module.kernel_size, stride, module.padding, zero_point=zero_point,
                        count_include_pad=module.count_include_pad, divisor_override=module.divisor_override)


def _build(stages, weights, params) -> IntegerNetwork:
    (scale, zero_point), k, layers = params[0], 0, []
    input_scale, input_zero_point = scale, zero_point
    for kind, name, module, relu, _ in stages:
        if kind in ("linear", "conv"):
            k += 1
            out_scale, out_zero_point = params[k]
            weight, bias = weights[name]
            quantisation = dict(input_scale=scale, input_zero_point=zero_point, output_scale=out_scale,
                                output_zero_point=out_zero_point, relu=relu)
            if kind == "conv":
                layers += _int_conv(module, weight, bias, quantisation)
            else:
                layers.append(IntLinear.from_float(weight, bias, mam=_is_mam(module), **quantisation))
            scale, zero_point = out_scale, out_zero_point
        elif kind == "relu":
            layers.append(IntClamp(zero_point))
        elif kind in ("maxpool", "avgpool"):
            layers.append(_pool(module, name, zero_point))
        elif kind == "unflatten":
            layers.append(nn.Unflatten(module.dim, module.unflattened_size))
        else:
            layers.append(nn.Flatten(module.start_dim, module.end_dim))
    return IntegerNetwork(layers, input_scale=input_scale, input_zero_point=input_zero_point,
                          output_scale=scale, output_zero_point=zero_point)
