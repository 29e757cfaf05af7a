"""The table of pruning scores by name, and running one of them.

A score is one function registered with :func:`register_score`::

    @mamext.prune.register_score("my_score", needs_data=False, needs_loss=False,
                                 layer_kinds=(nn.Linear, MAMLinear))
    def my_score(model, layers, *, data=None, loss_fn=None):
        return {name: ... for name, module in layers.items()}

It receives the model, ``layers`` (a dict from qualified name, as in
``model.named_modules()``, to module, already checked to be of
``layer_kinds``), and the caller's ``data`` and ``loss_fn`` as keywords. It
returns a dict with one tensor per layer name, shaped like that layer's
weight; higher means more important, lowest goes first. It must leave the
model as it found it (see :class:`~mamext.prune.state.PreservedState`).

The entry's flags are checked before the function runs: ``needs_data``
refuses missing or empty ``data``, ``needs_loss`` a missing ``loss_fn``;
``layer_kinds`` is both the default set of layers (every layer of those kinds)
and the kinds an explicit ``layers`` list may hold. The result is checked for
a missing layer, a wrong shape and NaN.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn

from .batches import check_data
from .layers import CONV_KINDS, PRUNABLE_KINDS, LayerKinds, kind_names

ScoreFn = Callable[..., Dict[str, torch.Tensor]]


@dataclass(frozen=True)
class ScoreSpec:
    """One registered score: its function and what it needs."""

    name: str
    fn: ScoreFn
    needs_data: bool
    needs_loss: bool
    layer_kinds: LayerKinds
    explicit_kinds: LayerKinds = ()

    def applies_to(self, module: nn.Module) -> bool:
        """Whether the score can rank the weights of ``module``."""
        return isinstance(module, self.layer_kinds)


_SCORES: Dict[str, ScoreSpec] = {}


def _check_kinds(layer_kinds) -> LayerKinds:
    kinds = tuple(layer_kinds) if isinstance(layer_kinds, (tuple, list)) else (layer_kinds,)
    if not kinds or not all(isinstance(k, type) and issubclass(k, nn.Module) for k in kinds):
        raise TypeError(f"register_score: layer_kinds must be nn.Module subclasses, got {layer_kinds!r}")
    return kinds


def register_score(name: str, *, needs_data: bool = False, needs_loss: bool = False,
                   layer_kinds: Optional[LayerKinds] = None,
                   explicit_kinds: LayerKinds = ()) -> Callable[[ScoreFn], ScoreFn]:
    """Decorator registering a score function under ``name`` (see the module
    docstring for the function's signature). ``name`` is an identifier not
    yet registered; ``layer_kinds`` defaults to ``(nn.Linear, MAMLinear)``;
    ``explicit_kinds`` (default none) are further kinds an explicit ``layers``
    list may name but that never join the default set (e.g. convolutions,
    whose weights have more than two dimensions). Returns the function unchanged."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"register_score: name must be an identifier (letters, digits, _), got {name!r}")
    if name in _SCORES:
        raise ValueError(f"register_score: a score named {name!r} is already registered "
                         f"(unregister_score({name!r}) first to replace it)")
    kinds = PRUNABLE_KINDS if layer_kinds is None else _check_kinds(layer_kinds)
    explicit = _check_kinds(explicit_kinds) if explicit_kinds else ()

    def decorator(fn: ScoreFn) -> ScoreFn:
        if not callable(fn):
            raise TypeError(f"register_score({name!r}): expected a function, got {type(fn).__name__}")
        if name in _SCORES:
            raise ValueError(f"register_score: a score named {name!r} is already registered")
        _SCORES[name] = ScoreSpec(name, fn, bool(needs_data), bool(needs_loss), kinds, explicit)
        return fn
    return decorator


def unregister_score(name: str) -> ScoreSpec:
    """Remove a registered score; returns its entry."""
    if name not in _SCORES:
        raise ValueError(f"unregister_score: no score named {name!r}; registered: {score_names()}")
    return _SCORES.pop(name)


def score_names() -> Tuple[str, ...]:
    """Registered score names, in registration order."""
    return tuple(_SCORES)


def get_score(name, fn: str = "get_score") -> ScoreSpec:
    """The entry of score ``name``; ``fn`` names the caller in the error."""
    spec = _SCORES.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"{fn}: score must be one of {score_names()} or a dict of tensors, got {name!r}")
    return spec


def purpose(spec: ScoreSpec) -> str:
    """Wrong-kind error suffix for layers this score does not apply to."""
    if spec.layer_kinds == PRUNABLE_KINDS and spec.explicit_kinds in ((), CONV_KINDS):
        return ""
    kinds = spec.layer_kinds + tuple(k for k in spec.explicit_kinds if k not in spec.layer_kinds)
    return f" (the {spec.name!r} score applies only to {kind_names(kinds)} layers)"


def check_score_inputs(spec: ScoreSpec, data, loss_fn, fn: str) -> None:
    """Refuse missing data / loss_fn before a score that needs them runs."""
    if spec.needs_data:
        check_data(data, fn, spec.name)
    if spec.needs_loss and not callable(loss_fn):
        if loss_fn is None:
            raise ValueError(f"{fn}: the {spec.name!r} score needs loss_fn")
        raise TypeError(f"{fn}: loss_fn must be callable (output, target) -> scalar loss, "
                        f"got {type(loss_fn).__name__}")


def check_scores(scores, layers: Dict[str, nn.Module], fn: str, source: str) -> Dict[str, torch.Tensor]:
    """``scores`` restricted to ``layers``, each checked to be a NaN-free
    tensor shaped like the layer's weight. ``source`` names where the scores
    came from in the errors."""
    if not isinstance(scores, dict):
        raise TypeError(f"{fn}: {source} must be a dict of tensors, got {type(scores).__name__}")
    name_of = {id(m): n for n, m in layers.items()}
    out = {}
    for key, value in scores.items():
        name = name_of.get(id(key)) if isinstance(key, nn.Module) else key
        if name in layers:
            out[name] = value
    for name, module in layers.items():
        if name not in out:
            raise ValueError(f"{fn}: {source} has no entry for layer {name!r}")
        value = out[name]
        if not isinstance(value, torch.Tensor) or value.shape != module.weight.shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{fn}: {source} for layer {name!r} must be a tensor of shape "
                             f"{tuple(module.weight.shape)}, got {got}")
        if torch.isnan(value).any():
            raise ValueError(f"{fn}: the score of layer {name!r} contains NaN")
    return out


def run_score(spec: ScoreSpec, model: nn.Module, layers: Dict[str, nn.Module], data, loss_fn,
              fn: str) -> Dict[str, torch.Tensor]:
    """Check the inputs, run the score, check its result."""
    check_score_inputs(spec, data, loss_fn, fn)
    scores = spec.fn(model, dict(layers), data=data, loss_fn=loss_fn)
    return check_scores(scores, layers, fn, f"the {spec.name!r} score")
