""":func:`pack_integer`: calibrate a float network and convert it to an :class:`IntegerNetwork`."""

from __future__ import annotations

from typing import Iterable, List, Tuple

import torch
from torch import nn

from ..nn.modules import MAMLinear
from ..sparse import PackedLayer, effective_weight
from ._layers import IntClamp, IntLinear
from ._network import IntegerNetwork
from ._observer import MinMaxObserver

_WHERE = "mamext.quant.pack_integer"
_SUPPORTED = "nn.Sequential, MAMLinear, nn.Linear, PackedMAMLinear, PackedLinear, nn.ReLU, nn.Flatten, nn.Identity, " \
             "nn.Dropout"


def _kind(module: nn.Module, name: str) -> str:
    bases = ((nn.Identity, "noop"), (nn.Dropout, "noop"), (nn.Flatten, "flatten"), (nn.ReLU, "relu"),
             (MAMLinear, "linear"), (PackedLayer, "linear"), (nn.Linear, "linear"))
    for base, kind in bases:
        if isinstance(module, base) and type(module).forward is base.forward:
            return kind
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
    if isinstance(module, PackedLayer):
        if module.is_int8:
            raise ValueError(f"{_WHERE}: layer '{name}' is packed as int8 with per-sample input scales; "
                             "pack_integer needs the float model (or a float-packed one)")
        weight = module.to_dense_weight()
    else:
        if isinstance(module, MAMLinear) and bool(module.beta.item() != 0):
            raise ValueError(f"{_WHERE}: MAMLinear '{name}' still blends in the MAC layer (beta="
                             f"{float(module.beta):g}); finish the transition (beta=0) first")
        weight = effective_weight(module)
    for what, t in (("weight", weight), ("bias", module.bias)):
        if t is not None and not bool(torch.isfinite(t.detach()).all()):
            raise ValueError(f"{_WHERE}: layer '{name}' has non-finite {what} entries")
    return weight.detach().cpu()


def _group(steps):
    """Integer-network stages: ('linear', name, module, relu) with its fused ReLUs, ('relu',), ('flatten', m)."""
    stages, i = [], 0
    while i < len(steps):
        name, module, kind = steps[i]
        i += 1
        if kind == "linear":
            relu = False
            while i < len(steps) and steps[i][2] in ("noop", "relu"):
                relu |= steps[i][2] == "relu"
                i += 1
            stages.append(("linear", name, module, relu))
        elif kind in ("relu", "flatten"):
            stages.append((kind, name, module, False))
    return stages


def _batches(calibration) -> Iterable[torch.Tensor]:
    for index, item in enumerate(calibration):
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not torch.is_tensor(x) or not x.is_floating_point():
            raise TypeError(f"{_WHERE}: calibration item {index} must be a float tensor or an (input, target) "
                            f"pair, got {type(x).__name__ if not torch.is_tensor(x) else x.dtype}")
        yield x.detach().cpu()


def _calibrate(stages, calibration) -> List[MinMaxObserver]:
    """Observers of the input and of every linear stage's output (after its fused ReLUs)."""
    observers = [MinMaxObserver()] + [MinMaxObserver() for s in stages if s[0] == "linear"]
    batches = 0
    for x in _batches(calibration):
        batches += 1
        observers[0].observe(x, "the input")
        k = 0
        for kind, name, module, relu in stages:
            x = module(x) if kind != "relu" else torch.relu(x)
            if kind == "linear":
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
            or float-packed), ``nn.ReLU``, ``nn.Flatten``, ``nn.Identity``,
            ``nn.Dropout``. It is left unchanged (mode included).
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
            weights = {name: _float_weight(name, module) for kind, name, module, _ in stages if kind == "linear"}
            observers = _calibrate(stages, calibration)
    finally:
        for module, mode in was_training:
            module.training = mode
    return _build(stages, weights, [o.params() for o in observers])


def _build(stages, weights, params) -> IntegerNetwork:
    (scale, zero_point), k, layers = params[0], 0, []
    input_scale, input_zero_point = scale, zero_point
    for kind, name, module, relu in stages:
        if kind == "linear":
            k += 1
            out_scale, out_zero_point = params[k]
            layers.append(IntLinear.from_float(
                weights[name], module.bias, mam=bool(getattr(module, "mam", isinstance(module, MAMLinear))),
                input_scale=scale, input_zero_point=zero_point, output_scale=out_scale,
                output_zero_point=out_zero_point, relu=relu))
            scale, zero_point = out_scale, out_zero_point
        elif kind == "relu":
            layers.append(IntClamp(zero_point))
        else:
            layers.append(nn.Flatten(module.start_dim, module.end_dim))
    return IntegerNetwork(layers, input_scale=input_scale, input_zero_point=input_zero_point,
                          output_scale=scale, output_zero_point=zero_point)
