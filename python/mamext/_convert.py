"""Turn a multiply-and-accumulate model into a MAM model: ``mamext.convert``."""

from __future__ import annotations

import fnmatch
from typing import Callable, Dict, List, Optional, Union

import torch
from torch import nn

from .nn.modules import MAMLinear

__all__ = ["convert"]

Selector = Union[None, str, Callable[[str, nn.Module], bool], List[Union[str, Callable[[str, nn.Module], bool]]]]


def _normalize(selector, arg: str):
    """Returns a list of patterns (str) and predicates (callables), or None."""
    if selector is None:
        return None
    items = [selector] if isinstance(selector, str) or callable(selector) else selector
    try:
        items = list(items)
    except TypeError:
        raise TypeError(f"convert: {arg} must be None, a name pattern (str), a predicate (name, module) -> bool "
                        f"or a list of these, got {type(selector).__name__}") from None
    for item in items:
        if not (isinstance(item, str) or callable(item)):
            raise TypeError(f"convert: {arg} entries must be name patterns (str) or predicates, "
                            f"got {type(item).__name__}")
    return items


def _pattern_matches(pattern: str, name: str) -> bool:
    """``pattern`` (fnmatch syntax) matches ``name`` or one of its dotted ancestors."""
    if fnmatch.fnmatchcase(name, pattern):
        return True
    parts = name.split(".") if name else []
    return any(fnmatch.fnmatchcase(".".join(parts[:i]), pattern) for i in range(1, len(parts)))


def _selected(items, name: str, module: nn.Module) -> bool:
    return any(_pattern_matches(item, name) if isinstance(item, str) else bool(item(name, module))
               for item in items)


def _to_mam(linear: nn.Linear, name: str) -> MAMLinear:
    if isinstance(linear.weight, nn.parameter.UninitializedParameter):
        raise ValueError(f"convert: {name or 'the model'} is an uninitialized nn.LazyLinear; "
                         f"run one forward pass before converting")
    if torch.nn.utils.parametrize.is_parametrized(linear):
        raise ValueError(f"convert: {name or 'the model'} is parametrized (torch.nn.utils.parametrize, e.g. "
                         f"torch.ao.pruning); remove the parametrizations before converting")
    w = linear.weight
    has_bias = linear.bias is not None
    mam = MAMLinear(linear.in_features, linear.out_features, bias=has_bias, device="meta", dtype=w.dtype)
    mam.beta = torch.zeros((), dtype=torch.float32, device=w.device)
    # Move every parameter and buffer over as the same objects, so that the
    # MAM layer *shares* them with the old layer: an optimizer built before
    # the conversion keeps working. This also carries torch.nn.utils.prune's
    # reparametrization (weight_orig + weight_mask + its forward pre-hook).
    for key in list(mam._parameters):
        del mam._parameters[key]
    for key, value in linear._parameters.items():
        mam._parameters[key] = value
    for key, value in linear._buffers.items():
        if key == "beta":
            raise ValueError(f"convert: {name or 'the model'} already has a buffer named 'beta'")
        mam._buffers[key] = value
    mam._non_persistent_buffers_set.update(linear._non_persistent_buffers_set)
    if "weight" not in mam._parameters:  # pruned by torch.nn.utils.prune: `weight` is a plain attribute
        object.__setattr__(mam, "weight", linear.weight)
    if "bias" not in mam._parameters and has_bias:
        object.__setattr__(mam, "bias", linear.bias)
    for hook_id, hook in linear._forward_pre_hooks.items():
        mam._forward_pre_hooks[hook_id] = hook
        if hook_id in linear._forward_pre_hooks_with_kwargs:
            mam._forward_pre_hooks_with_kwargs[hook_id] = True
    for hook_id, hook in linear._forward_hooks.items():
        mam._forward_hooks[hook_id] = hook
        if hook_id in linear._forward_hooks_with_kwargs:
            mam._forward_hooks_with_kwargs[hook_id] = True
        if hook_id in linear._forward_hooks_always_called:
            mam._forward_hooks_always_called[hook_id] = True
    mam.train(linear.training)
    return mam


def convert(model: nn.Module, include: Selector = None, exclude: Selector = None) -> nn.Module:
    """Replace ``nn.Linear`` submodules of ``model`` by :class:`~mamext.nn.MAMLinear`, in place.

    The new layers carry the very same ``weight`` and ``bias`` parameters (the
    same tensor objects, so an existing optimizer keeps working) and start
    with ``beta = 0`` (pure MAM); use :class:`mamext.nn.VanishingContribution`
    to blend from MAC to MAM while fine-tuning. A layer already pruned with
    ``torch.nn.utils.prune`` keeps its mask (``weight_orig``, ``weight_mask``
    and the pruning hook move over); forward hooks move over too.

    Args:
        model: the model to convert. If ``model`` itself is an ``nn.Linear``
            (and selected) the new ``MAMLinear`` is returned, since a module
            cannot replace itself in place.
        include: which ``nn.Linear`` layers to convert; ``None`` (default)
            means all. A qualified name pattern as in ``model.named_modules()``
            (``fnmatch`` syntax: ``"encoder.*"``, ``"*.fc2"``; a pattern that
            matches a parent module, e.g. ``"encoder"``, selects every linear
            layer under it), a predicate ``fn(name, module) -> bool``, or a
            list of these (a layer is selected if any entry matches).
        exclude: same forms; matching layers are not converted (wins over
            ``include``).

    Returns:
        ``model`` (converted in place).

    Raises:
        TypeError: ``model`` is not a module, or a selector has a wrong type.
        ValueError: an ``include`` or ``exclude`` name pattern matches no module
            (a typo), or a selected layer cannot be converted (uninitialized
            ``nn.LazyLinear``, ``torch.nn.utils.parametrize``-d layer).

    ``nn.MultiheadAttention``'s ``out_proj`` is never converted: that module
    reads the weights directly instead of calling the layer.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert: model must be an nn.Module, got {type(model).__name__}")
    inc = _normalize(include, "include")
    exc = _normalize(exclude, "exclude")

    all_names = [name for name, _ in model.named_modules(remove_duplicate=False)]
    for arg, items in (("include", inc), ("exclude", exc)):
        for item in items or ():
            if isinstance(item, str) and not any(_pattern_matches(item, n) for n in all_names):
                raise ValueError(f"convert: {arg} pattern {item!r} matches no module of the model; "
                                 f"module names look like {all_names[1:4] or ['']}")

    def wanted(name: str, module: nn.Module, parent: Optional[nn.Module]) -> bool:
        if not isinstance(module, nn.Linear) or isinstance(parent, nn.MultiheadAttention):
            return False
        if inc is not None and not _selected(inc, name, module):
            return False
        return not (exc is not None and _selected(exc, name, module))

    if wanted("", model, None):
        return _to_mam(model, "")

    memo: Dict[int, MAMLinear] = {}  # a shared layer becomes one shared MAM layer
    for parent_name, parent in list(model.named_modules(remove_duplicate=False)):
        for child_name, child in list(parent._modules.items()):
            if child is None:
                continue
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if wanted(name, child, parent):
                if id(child) not in memo:
                    memo[id(child)] = _to_mam(child, name)
                parent._modules[child_name] = memo[id(child)]
    return model
