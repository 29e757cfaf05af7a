"""Which layers can be pruned, how a caller names them, and their masked weights.

A prunable layer is an ``nn.Linear`` or a :class:`mamext.nn.MAMLinear` (the
default set), or a convolution (``nn.Conv1d``/``nn.Conv2d``,
:class:`mamext.nn.MAMConv1d`/:class:`mamext.nn.MAMConv2d`) named explicitly in
``layers=``: convolutions never join the default set. Its
mask is the one :mod:`torch.nn.utils.prune` installs: a ``weight_orig``
parameter, a ``weight_mask`` buffer and a forward pre-hook that recomputes
``weight = weight_orig * weight_mask`` before every forward.
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Tuple, Type, Union

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils import prune as torch_prune

from ..nn.conv import MAMConv1d, MAMConv2d
from ..nn.modules import MAMLinear

LayerSpec = Optional[Iterable[Union[str, nn.Module]]]
LayerKinds = Tuple[Type[nn.Module], ...]

#: Every layer kind the pruning functions handle.
PRUNABLE_KINDS: LayerKinds = (nn.Linear, MAMLinear)
#: Convolutions: prunable when named in an explicit ``layers`` list, never by default.
CONV_KINDS: LayerKinds = (nn.Conv2d, nn.Conv1d, MAMConv2d, MAMConv1d)


def check_model(model, fn: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: model must be an nn.Module, got {type(model).__name__}")


def kind_names(kinds: LayerKinds) -> str:
    return " or ".join(k.__name__ for k in kinds)


def default_layers(model: nn.Module, kinds: LayerKinds) -> Dict[str, nn.Module]:
    """All layers of the given kinds, by qualified name; skips
    ``nn.MultiheadAttention.out_proj`` (that module never calls its forward,
    so a pruning hook on it would not be applied)."""
    skip = {id(m.out_proj) for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    return {name: m for name, m in model.named_modules() if isinstance(m, kinds) and id(m) not in skip}


def _as_list(layers, fn: str) -> list:
    if isinstance(layers, (str, nn.Module)):
        return [layers]
    try:
        return list(layers)
    except TypeError:
        raise TypeError(f"{fn}: layers must be None or a list of qualified module names or modules, "
                        f"got {type(layers).__name__}") from None


def _named(model: nn.Module, item, fn: str) -> Tuple[str, nn.Module]:
    """``(qualified name, module)`` of one entry of a ``layers`` list."""
    if isinstance(item, str):
        module = dict(model.named_modules()).get(item)
        if module is None:
            raise ValueError(f"{fn}: the model has no module named {item!r}")
        return item, module
    if isinstance(item, nn.Module):
        for name, module in model.named_modules():
            if module is item:
                return name, module
        raise ValueError(f"{fn}: module {item!r} is not part of the model")
    raise TypeError(f"{fn}: layers entries must be qualified names (str) or modules, got {type(item).__name__}")


def resolve_layers(model: nn.Module, layers: LayerSpec, fn: str, kinds: LayerKinds = PRUNABLE_KINDS,
                   purpose: str = "", explicit_kinds: LayerKinds = ()) -> Dict[str, nn.Module]:
    """The chosen layers by qualified name: every layer of ``kinds`` when
    ``layers`` is None, else the named / given modules, each checked to be one
    of ``kinds`` or ``explicit_kinds`` (kinds chosen only by name).
    ``purpose`` is added to the wrong-kind error (e.g. which score restricts
    the kinds)."""
    if layers is None:
        found = default_layers(model, kinds)
        if not found:
            raise ValueError(f"{fn}: model has no {kind_names(kinds)} layer{purpose}")
        return found
    kinds = kinds + tuple(k for k in explicit_kinds if k not in kinds)
    names = kind_names(kinds)
    items = _as_list(layers, fn)
    if not items:
        raise ValueError(f"{fn}: layers is empty")
    chosen: Dict[str, nn.Module] = {}
    for item in items:
        name, module = _named(model, item, fn)
        if not isinstance(module, kinds):
            raise ValueError(f"{fn}: layer {name!r} is a {type(module).__name__}, expected {names}{purpose}")
        chosen[name] = module
    return chosen


def pruning_hook(module: nn.Module, name: str = "weight"):
    """The ``torch.nn.utils.prune`` hook of ``module.<name>``, or None."""
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, torch_prune.BasePruningMethod) and hook._tensor_name == name:
            return hook
    return None


def leaf_weight(module: nn.Module) -> torch.Tensor:
    """The trainable tensor underlying ``module.weight``."""
    if pruning_hook(module) is not None:
        return module.weight_orig
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


def effective_weight(module: nn.Module) -> torch.Tensor:
    """``module.weight`` as the next forward will see it (not a stale attribute)."""
    if pruning_hook(module) is not None:
        return module.weight_orig * module.weight_mask
    return module.weight


def kept_mask(module: nn.Module) -> torch.Tensor:
    """Bool mask of the connections not pruned by torch.nn.utils.prune."""
    if pruning_hook(module) is not None:
        return module.weight_mask != 0
    return torch.ones(module.weight.shape, dtype=torch.bool, device=module.weight.device)


def install_mask(module: nn.Module, mask: torch.Tensor) -> None:
    """Make ``mask`` (bool, shaped like the weight) the layer's pruning mask,
    replacing any mask it had (``torch.nn.utils.prune.custom_from_mask``)."""
    # Under no_grad the masked `weight` attribute is a graph leaf until the next
    # grad-enabled forward, so the pruned model can be copy.deepcopy-ed.
    with torch.no_grad():
        w = leaf_weight(module)
        torch_prune.custom_from_mask(module, "weight", mask.view(w.shape).to(device=w.device, dtype=w.dtype))
