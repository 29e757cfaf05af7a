"""Ranking scores into masks: one-shot pruning, what remains, baking masks in."""

from __future__ import annotations

import numbers
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from .layers import CONV_KINDS, LayerSpec, check_model, effective_weight, install_mask, kept_mask, pruning_hook, resolve_layers
from .registry import check_scores, get_score, purpose, run_score, score_names

SCOPES = ("global", "layer")


def check_fraction(value, fn: str, arg: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: {arg} must be a float in (0, 1], got {type(value).__name__}")
    value = float(value)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{fn}: {arg} must be a fraction in (0, 1] of connections to keep "
                         f"(e.g. 0.001 keeps 0.1 %), got {value}")
    return value


def check_scope(scope, fn: str) -> str:
    if scope not in SCOPES:
        raise ValueError(f"{fn}: scope must be 'global' or 'layer', got {scope!r}")
    return scope


def chosen_layers(model: nn.Module, score, layers: LayerSpec, fn: str) -> Dict[str, nn.Module]:
    """The layers a ``score`` (registered name or dict) ranks: by default
    every layer the score applies to."""
    if isinstance(score, str):
        spec = get_score(score, fn)
        return resolve_layers(model, layers, fn, spec.layer_kinds, purpose(spec), spec.explicit_kinds)
    if isinstance(score, dict):
        return resolve_layers(model, layers, fn, explicit_kinds=CONV_KINDS)
    raise TypeError(f"{fn}: score must be a str in {score_names()} or a dict of tensors, got {type(score).__name__}")


def _checked_scores(model: nn.Module, score, chosen: Dict[str, nn.Module], data, loss_fn,
                   fn: str) -> Dict[str, torch.Tensor]:
    """The checked scores of the ``chosen`` layers: run the registered score, or take the dict."""
    if isinstance(score, str):
        return run_score(get_score(score, fn), model, chosen, data, loss_fn, fn)
    return check_scores(score, chosen, fn, "score dict")


def _select_prune(scores, mags, masks, n_prune: int) -> List[torch.Tensor]:
    """New masks pruning the ``n_prune`` kept entries of lowest score (ties: lowest |w|, then
    lowest position)."""
    device = masks[0].device
    flat_masks = torch.cat([m.reshape(-1).to(device) for m in masks])
    if n_prune > 0:
        pos = flat_masks.nonzero().squeeze(1)
        s = torch.cat([sc.reshape(-1).to(device, torch.float64) for sc in scores])[pos]
        w = torch.cat([mg.reshape(-1).to(device, torch.float64) for mg in mags])[pos]
        order = torch.argsort(w, stable=True)
        order = order[torch.argsort(s[order], stable=True)]
        flat_masks = flat_masks.clone()
        flat_masks[pos[order[:n_prune]]] = False
    return list(torch.split(flat_masks, [m.numel() for m in masks]))


def _groups(names: Sequence[str], scope: str) -> List[List[int]]:
    if scope == "global":
        return [list(range(len(names)))]
    return [[i] for i in range(len(names))]


def _new_masks(chosen: Dict[str, nn.Module], scores: Dict[str, torch.Tensor], remaining: float,
               scope: str, fn: str) -> List[Tuple[str, torch.Tensor]]:
    """``(name, mask)`` keeping ``remaining`` of each group's connections; the
    lowest-scored kept connections go first. Groups without any weight are left alone."""
    names = list(chosen)
    with torch.no_grad():
        mags = [effective_weight(chosen[n]).abs() for n in names]
    masks = [kept_mask(chosen[n]) for n in names]
    out: List[Tuple[str, torch.Tensor]] = []
    for group in _groups(names, scope):
        total = sum(masks[i].numel() for i in group)
        if total == 0:
            continue
        kept = sum(int(masks[i].sum()) for i in group)
        target = max(1, int(round(remaining * total)))
        if target > kept:
            where = "the chosen layers" if scope == "global" else f"layer {names[group[0]]!r}"
            raise ValueError(f"{fn}: {where} already keep{'s' if scope == 'layer' else ''} {kept} of {total} "
                             f"weights ({kept / total:.4g}), fewer than remaining={remaining} asks "
                             f"({target}); pruning cannot grow connections back")
        selected = _select_prune([scores[names[i]] for i in group], [mags[i] for i in group],
                                 [masks[i] for i in group], kept - target)
        out += [(names[i], m) for i, m in zip(group, selected)]
    return out


def prune_model(model: nn.Module, remaining: float, score: Union[str, Dict] = "magnitude", scope: str = "global",
                layers: LayerSpec = None, data=None, loss_fn: Optional[Callable] = None) -> nn.Module:
    """Prune ``model`` one-shot so that a fraction ``remaining`` of the connections is kept.

    Args:
        model: the model (pruned in place, and returned).
        remaining: fraction in (0, 1] of the weights of the chosen layers to
            *keep* after this call, counted over all their weights (pruned
            ones included); e.g. ``0.001`` keeps 0.1 %. The kept count is
            ``max(1, round(remaining * total))`` (per layer with
            ``scope="layer"``). Calling it again on a pruned model
            prunes further from what is left (existing masks are respected); a
            target above what is already kept raises ``ValueError``.
            ``remaining=1.0`` only installs all-ones masks (useful to build a
            model that a pruned ``state_dict`` loads into). Layers without
            any weight are left as they are.
        score: a registered score name (:func:`score_names`; built in:
            ``"magnitude"``, ``"gradient"`` which needs ``data`` and
            ``loss_fn``, ``"selection"`` which needs ``data`` and applies to
            MAM layers only), or a dict from layer name (or module) to a
            score tensor shaped like its weight. Lowest scores are pruned
            first; ties go to the lowest ``|w|``.
        scope: ``"global"`` (one ranking over all chosen layers) or
            ``"layer"`` (each layer keeps ``round(remaining * its size)``).
        layers: ``None`` (every layer the score applies to: for most scores
            every ``nn.Linear`` and ``MAMLinear``, for ``"selection"`` every
            ``MAMLinear``; always except ``nn.MultiheadAttention.out_proj``)
            or a list of qualified names or modules. Convolutions are pruned
            only when named here (``nn.Conv1d``/``nn.Conv2d`` and the MAM
            convolutions for ``"magnitude"``, ``"gradient"`` and a dict,
            the MAM convolutions for ``"selection"``). Biases are never pruned.
        data, loss_fn: for the data-driven scores.

    The masks go through ``torch.nn.utils.prune.custom_from_mask``: every
    chosen layer gets ``weight_orig`` / ``weight_mask``, like after
    ``torch.nn.utils.prune.l1_unstructured``.
    """
    fn = "prune_model"
    check_model(model, fn)
    remaining = check_fraction(remaining, fn, "remaining")
    check_scope(scope, fn)
    chosen = chosen_layers(model, score, layers, fn)
    scores = _checked_scores(model, score, chosen, data, loss_fn, fn)
    for name, mask in _new_masks(chosen, scores, remaining, scope, fn):
        install_mask(chosen[name], mask)
    return model


def remaining(model: nn.Module, layers: LayerSpec = None) -> Dict[str, Any]:
    """Kept / total connection counts, per layer and in total.

    Returns ``{"layers": {name: {"kept", "total", "fraction"}}, "kept",
    "total", "fraction"}`` over ``layers`` (default: every ``nn.Linear`` and
    ``MAMLinear``; convolutions when named). For a layer pruned with ``torch.nn.utils.prune`` "kept"
    counts its mask's ones; otherwise its non-zero weights (so a
    :func:`finalize`-d or ``torch.ao.pruning``-masked layer reports its zeros
    as pruned). A layer without any weight reports fraction 1.0.
    """
    check_model(model, "remaining")
    report: Dict[str, Any] = {"layers": {}}
    kept_all = total_all = 0
    with torch.no_grad():
        for name, module in resolve_layers(model, layers, "remaining", explicit_kinds=CONV_KINDS).items():
            if pruning_hook(module) is not None:
                kept = int((module.weight_mask != 0).sum())
            else:
                kept = int(torch.count_nonzero(module.weight))
            total = module.weight.numel()
            report["layers"][name] = {"kept": kept, "total": total, "fraction": kept / total if total else 1.0}
            kept_all += kept
            total_all += total
    report.update(kept=kept_all, total=total_all, fraction=kept_all / total_all if total_all else 1.0)
    return report


def finalize(model: nn.Module) -> nn.Module:
    """Bake every ``torch.nn.utils.prune`` mask into a plain weight (``prune.remove``), in place.

    Afterwards pruned connections are plain zeros and ``model.state_dict()``
    has the keys of an unpruned model (``weight``, no ``weight_orig`` /
    ``weight_mask``), so it loads into a freshly built unpruned model.
    Returns ``model``.
    """
    check_model(model, "finalize")
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)
    return model
