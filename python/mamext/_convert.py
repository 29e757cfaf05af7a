"""Turn a multiply-and-accumulate model into a MAM model: ``mamext.convert``."""

from __future__ import annotations

import fnmatch
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .nn.conv import MAMConv1d, MAMConv2d
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


#: The classic layer kinds convert can replace, and their MAM counterparts.
_MAM_OF = {nn.Linear: MAMLinear, nn.Conv2d: MAMConv2d, nn.Conv1d: MAMConv1d}
Kinds = Tuple[type, ...]


def _check_types(types) -> Kinds:
    """``types`` as a tuple of keys of _MAM_OF; a clear error otherwise."""
    kinds = tuple(types) if isinstance(types, (tuple, list)) else (types,)
    known = ", ".join(f"nn.{k.__name__}" for k in _MAM_OF)
    if not kinds:
        raise ValueError(f"convert: types is empty; choose among {known}")
    for kind in kinds:
        if kind not in _MAM_OF:
            shown = kind.__name__ if isinstance(kind, type) else repr(kind)
            raise TypeError(f"convert: types entries must be among {known}, got {shown}")
    return kinds


def _kind_of(module: nn.Module, kinds: Kinds) -> Optional[type]:
    """The entry of ``kinds`` that ``module`` is an instance of, or None."""
    return next((k for k in kinds if isinstance(module, k)), None)


def _kind_names(kinds: Kinds) -> str:
    return " or ".join(f"nn.{k.__name__}" for k in kinds)


# State of a classic layer that conversion carries over: its parameters and
# torch.nn.utils.prune's reparametrization of them.
_LINEAR_PARAMETERS = {"weight", "bias", "weight_orig", "bias_orig"}
_LINEAR_BUFFERS = {"weight_mask", "bias_mask"}


def _why_not_exact(module: nn.Module, kind: type) -> Optional[str]:
    """Why replacing ``module`` (an instance of ``kind``) by its MAM counterpart would lose
    something it computes or holds, or None."""
    if type(module) is kind:
        return None
    cls = type(module).__name__
    if type(module).forward is not kind.forward:
        return f"its class {cls} overrides forward"
    extra = sorted(set(module._parameters) - _LINEAR_PARAMETERS) + sorted(set(module._buffers) - _LINEAR_BUFFERS)
    if extra:
        return f"its class {cls} adds parameters or buffers {extra}"
    if module._modules:
        return f"its class {cls} adds submodules {sorted(module._modules)}"
    return None


_STATE_DICT_HOOKS = ("_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
                     "_load_state_dict_post_hooks")


def _unmovable_hooks(module: nn.Module) -> list:
    """Kinds of hooks on ``module`` that conversion cannot carry over (they may hold the old module)."""
    return [kind for kind in _STATE_DICT_HOOKS if getattr(module, kind, None)]


def _keep_off_fused_transformer_paths(model: nn.Module) -> None:
    """Make ``nn.TransformerEncoderLayer``s whose feed-forward layers are no longer ``nn.Linear`` run
    their submodules.

    In eval mode without gradients PyTorch's fused path reads ``linear1.weight``
    and ``linear2.weight`` and computes a classic (MAC) layer, whatever the
    modules are. It is skipped when ``activation_relu_or_gelu`` is false (the
    attribute is read by nothing else), and ``nn.TransformerEncoder`` must not
    pack its input into a nested tensor for such layers.
    """
    rerouted = set()
    for module in model.modules():
        if isinstance(module, nn.TransformerEncoderLayer) and not (
                type(module.linear1) is nn.Linear and type(module.linear2) is nn.Linear):
            module.activation_relu_or_gelu = 0
            rerouted.add(id(module))
    for module in model.modules():
        if isinstance(module, nn.TransformerEncoder) and any(id(layer) in rerouted for layer in module.layers):
            module.use_nested_tensor = False


def _check_convertible(linear: nn.Module, name: str, kind: type) -> None:
    """Raise ValueError naming ``name`` unless the MAM counterpart of ``kind`` can replace ``linear`` exactly."""
    shown = repr(name) if name else "the model"
    if isinstance(linear.weight, nn.parameter.UninitializedParameter):
        raise ValueError(f"convert: {shown} is an uninitialized nn.{type(linear).__name__}; "
                         f"run one forward pass before converting")
    if torch.nn.utils.parametrize.is_parametrized(linear):
        raise ValueError(f"convert: {shown} is parametrized (torch.nn.utils.parametrize, e.g. "
                         f"torch.ao.pruning); remove the parametrizations before converting")
    hooks = _unmovable_hooks(linear)
    if hooks:
        raise ValueError(f"convert: {shown} has state_dict hooks ({', '.join(hooks)}) that would stay with the "
                         f"old layer; remove them before converting and register them on the new one")
    reason = _why_not_exact(linear, kind)
    if reason is not None:
        raise ValueError(f"convert: {shown} cannot be replaced by a {_MAM_OF[kind].__name__} without losing "
                         f"what it computes ({reason}); exclude it (exclude={name!r}) or convert the "
                         f"nn.{kind.__name__} layers it is built from yourself")


def _empty_mam(layer: nn.Module, kind: type) -> nn.Module:
    """The MAM counterpart of ``layer`` with its hyperparameters, parameters on the meta device."""
    factory = {"bias": layer.bias is not None, "device": "meta", "dtype": layer.weight.dtype}
    if kind is nn.Linear:
        return MAMLinear(layer.in_features, layer.out_features, **factory)
    return _MAM_OF[kind](layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                         padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                         padding_mode=layer.padding_mode, **factory)


def _to_mam(linear: nn.Module, name: str, kind: type) -> nn.Module:
    w = linear.weight
    has_bias = linear.bias is not None
    mam = _empty_mam(linear, kind)
    mam.beta = torch.zeros((), dtype=torch.float32, device=w.device)
    mam.set_beta(0.0)
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
    mam._backward_pre_hooks.update(linear._backward_pre_hooks)
    mam._backward_hooks.update(linear._backward_hooks)
    mam._is_full_backward_hook = linear._is_full_backward_hook
    mam.train(linear.training)
    return mam


def convert(model: nn.Module, include: Selector = None, exclude: Selector = None,
            types: Union[type, Sequence[type]] = (nn.Linear,)) -> nn.Module:
    """Replace ``nn.Linear`` submodules of ``model`` by :class:`~mamext.nn.MAMLinear`, in place.

    The new layers carry the very same ``weight`` and ``bias`` parameters (the
    same tensor objects, so an existing optimizer keeps working) and start
    with ``beta = 0`` (pure MAM); use :class:`mamext.nn.VanishingContribution`
    to blend from MAC to MAM while fine-tuning. A layer already pruned with
    ``torch.nn.utils.prune`` keeps its mask (``weight_orig``, ``weight_mask``
    and the pruning hook move over); forward and backward hooks move over too
    (a layer with ``state_dict`` hooks is refused).

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
        types: the layer kinds to convert: ``nn.Linear`` (default, to
            :class:`~mamext.nn.MAMLinear`), ``nn.Conv2d`` (to
            :class:`~mamext.nn.MAMConv2d`) and ``nn.Conv1d`` (to
            :class:`~mamext.nn.MAMConv1d`), one or a tuple. Convolutions are
            converted only when named here; ``include``/``exclude`` then
            select among layers of every kind listed.

    Returns:
        ``model`` (converted in place).

    Raises:
        TypeError: ``model`` is not a module, or a selector has a wrong type.
        ValueError: an ``include`` or ``exclude`` name pattern matches no module
            (a typo), an ``include`` pattern selects no ``nn.Linear`` (e.g. it
            names an ``nn.Conv2d``), or a selected layer cannot be converted
            exactly: an uninitialized ``nn.LazyLinear``, a
            ``torch.nn.utils.parametrize``-d layer, or an ``nn.Linear``
            subclass that overrides ``forward`` or adds parameters, buffers or
            submodules (e.g. a LoRA adapter; exclude it). Nothing is converted
            then.

    Only layers of ``types`` are converted: other modules (by default
    convolutions, ...) are left as they are unless ``include`` names them,
    which is an error.
    ``nn.MultiheadAttention``'s ``out_proj`` is never converted: that module
    reads the weights directly instead of calling the layer. An
    ``nn.TransformerEncoderLayer`` whose ``linear1``/``linear2`` are converted
    no longer takes PyTorch's fused inference path (which reads those weights
    and would compute a classic layer); an ``nn.TransformerEncoder`` holding
    such layers no longer packs its input into nested tensors.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert: model must be an nn.Module, got {type(model).__name__}")
    inc = _normalize(include, "include")
    exc = _normalize(exclude, "exclude")
    kinds = _check_types(types)
    named = list(model.named_modules(remove_duplicate=False))
    _check_patterns(named, inc, exc, kinds)

    def wanted(name: str, module: nn.Module, parent: Optional[nn.Module]) -> bool:
        if not _eligible(module, parent, kinds):
            return False
        if inc is not None and not _selected(inc, name, module):
            return False
        return not (exc is not None and _selected(exc, name, module))

    if wanted("", model, None):
        _check_convertible(model, "", _kind_of(model, kinds))
        return _to_mam(model, "", _kind_of(model, kinds))

    # Check every selected layer before replacing any: no half-converted model on error.
    slots = []  # (parent, attribute, layer, qualified name)
    for parent_name, parent in named:
        for child_name, child in parent._modules.items():
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if child is not None and wanted(name, child, parent):
                _check_convertible(child, name, _kind_of(child, kinds))
                slots.append((parent, child_name, child, name))
    memo: Dict[int, nn.Module] = {}  # a shared layer becomes one shared MAM layer
    for parent, child_name, child, name in slots:
        if id(child) not in memo:
            memo[id(child)] = _to_mam(child, name, _kind_of(child, kinds))
        parent._modules[child_name] = memo[id(child)]
    _keep_off_fused_transformer_paths(model)
    return model


def _eligible(module: nn.Module, parent: Optional[nn.Module], kinds: Kinds) -> bool:
    """A layer of ``kinds`` that is called as a module (MultiheadAttention reads out_proj's weight directly)."""
    return _kind_of(module, kinds) is not None and not isinstance(parent, nn.MultiheadAttention)


def _check_patterns(named, inc, exc, kinds: Kinds) -> None:
    """Every name pattern matches a module, and every ``include`` pattern an eligible layer of ``kinds``."""
    names = [name for name, _ in named]
    parents = {id(child): module for _, module in named for child in module._modules.values()}
    for arg, items in (("include", inc), ("exclude", exc)):
        for item in items or ():
            if not isinstance(item, str):
                continue
            matched = [(n, m) for n, m in named if _pattern_matches(item, n)]
            if not matched:
                raise ValueError(f"convert: {arg} pattern {item!r} matches no module of the model; "
                                 f"module names look like {names[1:4] or ['']}")
            if arg == "include" and not any(_eligible(m, parents.get(id(m)), kinds) for _, m in matched):
                shown = ", ".join(f"{n or '<model>'} ({type(m).__name__})" for n, m in matched[:4])
                kind_names = _kind_names(kinds)
                raise ValueError(f"convert: include pattern {item!r} selects no {kind_names} layer that convert "
                                 f"can replace (it matches {shown}); convert replaces {kind_names} layers only "
                                 f"(convolutions when types names them, e.g. types=(nn.Linear, nn.Conv2d)), "
                                 f"and never MultiheadAttention's out_proj")
