"""Pruning MAC and MAM layers: scores, one-shot and iterative pruning.

Everything here goes through :mod:`torch.nn.utils.prune` masks: a pruned
layer has a ``weight_orig`` parameter, a ``weight_mask`` buffer and a forward
pre-hook computing ``weight = weight_orig * weight_mask``, exactly as after
``torch.nn.utils.prune.l1_unstructured``. A pruned connection is a zero weight;
in a MAM neuron it still takes part in the max and the min as a product 0.

Scores (higher = more important), each a dict from a layer's qualified name
(as in ``model.named_modules()``) to a tensor shaped like its weight:

* :func:`magnitude`: ``|w|``;
* :func:`gradient`: ``|w * G|`` with ``G`` the gradient of the loss summed over
  a data loader, in training mode;
* :func:`selection` / :class:`SelectionCounter`: the number of samples for
  which each connection was the argmax or the argmin of its MAM neuron.

:func:`prune_model` prunes one-shot to a target fraction of remaining
connections, :func:`remaining` reports what is left, :class:`LotteryTicket`
drives iterative pruning with weight rewinding and :func:`finalize` bakes the
masks into plain weights.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils import prune as torch_prune

from .nn.modules import MAMLinear
from .ops import mam_linear

__all__ = [
    "magnitude",
    "gradient",
    "selection",
    "SelectionCounter",
    "prune_model",
    "remaining",
    "LotteryTicket",
    "finalize",
]

LayerSpec = Optional[Iterable[Union[str, nn.Module]]]


# --------------------------------------------------------------------------- helpers

def _check_model(model, fn: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: model must be an nn.Module, got {type(model).__name__}")


def _default_layers(model: nn.Module, kinds) -> Dict[str, nn.Module]:
    """All layers of the given kinds, by qualified name; skips
    ``nn.MultiheadAttention.out_proj`` (that module never calls its forward,
    so a pruning hook on it would not be applied)."""
    skip = {id(m.out_proj) for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    return {name: m for name, m in model.named_modules() if isinstance(m, kinds) and id(m) not in skip}


def _resolve_layers(model: nn.Module, layers: LayerSpec, fn: str, kinds=(nn.Linear, MAMLinear)) -> Dict[str, nn.Module]:
    kind_names = " or ".join(k.__name__ for k in kinds)
    if layers is None:
        found = _default_layers(model, kinds)
        if not found:
            raise ValueError(f"{fn}: model has no {kind_names} layer")
        return found
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    try:
        layers = list(layers)
    except TypeError:
        raise TypeError(f"{fn}: layers must be None or a list of qualified module names or modules, "
                        f"got {type(layers).__name__}") from None
    if not layers:
        raise ValueError(f"{fn}: layers is empty")
    by_name = dict(model.named_modules())
    name_of = {id(m): n for n, m in by_name.items()}
    out: Dict[str, nn.Module] = {}
    for item in layers:
        if isinstance(item, str):
            if item not in by_name:
                raise ValueError(f"{fn}: the model has no module named {item!r}")
            name, module = item, by_name[item]
        elif isinstance(item, nn.Module):
            if id(item) not in name_of:
                raise ValueError(f"{fn}: module {item!r} is not part of the model")
            name, module = name_of[id(item)], item
        else:
            raise TypeError(f"{fn}: layers entries must be qualified names (str) or modules, "
                            f"got {type(item).__name__}")
        if not isinstance(module, kinds):
            raise ValueError(f"{fn}: layer {name!r} is a {type(module).__name__}, expected {kind_names}")
        out[name] = module
    return out


def _pruning_hook(module: nn.Module, name: str = "weight"):
    """The ``torch.nn.utils.prune`` hook of ``module.<name>``, or None."""
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, torch_prune.BasePruningMethod) and hook._tensor_name == name:
            return hook
    return None


def _leaf_weight(module: nn.Module) -> torch.Tensor:
    """The trainable tensor underlying ``module.weight``."""
    if _pruning_hook(module) is not None:
        return module.weight_orig
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


def _effective_weight(module: nn.Module) -> torch.Tensor:
    """``module.weight`` as the next forward will see it (not a stale attribute)."""
    if _pruning_hook(module) is not None:
        return module.weight_orig * module.weight_mask
    return module.weight


def _kept_mask(module: nn.Module) -> torch.Tensor:
    """Bool mask of the connections not pruned by torch.nn.utils.prune."""
    if _pruning_hook(module) is not None:
        return module.weight_mask != 0
    return torch.ones(module.weight.shape, dtype=torch.bool, device=module.weight.device)


def _model_device(model: nn.Module):
    for p in model.parameters():
        return p.device
    return None


def _to(obj, device):
    if device is None:
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to(o, device) for o in obj)
    return obj


def _split_batch(batch, fn: str):
    """``(inputs, target)`` of a data loader batch; target is None if absent."""
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and len(batch) >= 1:
        return batch[0], (batch[1] if len(batch) >= 2 else None)
    raise TypeError(f"{fn}: each batch of data must be a tensor or an (inputs, target, ...) tuple/list, "
                    f"got {type(batch).__name__}")


def _check_data(data, fn: str, score: str) -> None:
    if data is None:
        raise ValueError(f"{fn}: the {score!r} score needs data (an iterable of batches, e.g. a DataLoader)")
    if isinstance(data, torch.Tensor) or not isinstance(data, Iterable):
        raise TypeError(f"{fn}: data must be an iterable of batches (e.g. a DataLoader or a list of "
                        f"(inputs, target) tuples), got {type(data).__name__}")


class _Modes:
    """Sets train/eval mode on every submodule and restores each one's flag."""

    def __init__(self, model: nn.Module, training: bool):
        self.model, self.training = model, training

    def __enter__(self):
        self.saved = [(m, m.training) for m in self.model.modules()]
        self.model.train(self.training)
        return self

    def __exit__(self, *exc):
        for m, flag in self.saved:
            m.training = flag


# --------------------------------------------------------------------------- scores

@torch.no_grad()
def magnitude(model: nn.Module, layers: LayerSpec = None) -> Dict[str, torch.Tensor]:
    """``|w|`` for each layer (default: every ``nn.Linear`` and ``MAMLinear``)."""
    _check_model(model, "magnitude")
    return {name: _effective_weight(m).abs() for name, m in _resolve_layers(model, layers, "magnitude").items()}


def gradient(model: nn.Module, data, loss_fn: Callable, layers: LayerSpec = None) -> Dict[str, torch.Tensor]:
    """``|w * G|`` for each layer, ``G`` the gradient of the loss summed over ``data``.

    The model runs in training mode (restored afterwards) with one forward and
    backward pass per batch: ``loss_fn(model(inputs), target)`` for
    ``(inputs, target, ...)`` batches, ``loss_fn(model(batch))`` for bare
    tensor batches. Inputs are moved to the model's device. Parameters'
    ``.grad`` are left untouched (the gradients are taken with
    ``torch.autograd.grad``). For a pruned layer ``w`` is the masked weight, so
    pruned connections score 0. Pass an unwrapped model (not a DDP wrapper).
    """
    fn = "gradient"
    _check_model(model, fn)
    _check_data(data, fn, "gradient")
    if not callable(loss_fn):
        raise TypeError(f"{fn}: loss_fn must be callable (output, target) -> scalar loss, "
                        f"got {type(loss_fn).__name__}")
    chosen = _resolve_layers(model, layers, fn)
    names = list(chosen)
    leaves = [_leaf_weight(chosen[n]) for n in names]
    sums = [torch.zeros_like(p, dtype=torch.float64 if p.device.type != "mps" else torch.float32) for p in leaves]
    saved_flags = [p.requires_grad for p in leaves]
    device = _model_device(model)
    n_batches = 0
    try:
        for p in leaves:
            p.requires_grad_(True)
        with _Modes(model, True), torch.enable_grad():
            for batch in data:
                inputs, target = _split_batch(batch, fn)
                inputs, target = _to(inputs, device), _to(target, device)
                out = model(inputs)
                loss = loss_fn(out) if target is None else loss_fn(out, target)
                if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                    raise ValueError(f"{fn}: loss_fn must return a scalar tensor, got "
                                     f"{tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__}")
                grads = torch.autograd.grad(loss.reshape(()), leaves, allow_unused=True)
                for s, g in zip(sums, grads):
                    if g is not None:
                        s += g
                n_batches += 1
    finally:
        for p, flag in zip(leaves, saved_flags):
            p.requires_grad_(flag)
    if n_batches == 0:
        raise ValueError(f"{fn}: data yielded no batch")
    # With w = w_orig * mask: w * dL/dw = w_orig * mask * dL/dw = w_orig * dL/dw_orig.
    with torch.no_grad():
        return {n: (p.to(s.dtype) * s).abs().to(p.dtype) for n, p, s in zip(names, leaves, sums)}


class SelectionCounter:
    """Counts, per connection, the samples for which it won its MAM neuron's max or min.

    Usage::

        with mamext.prune.SelectionCounter(model) as counter:
            for x, _ in loader:
                model(x)
        counter.counts["0"]      # int64 tensor shaped like model[0].weight

    While the context is active, a forward hook on each MAM layer recomputes
    ``mamext.mam_linear(x, weight, bias, return_indices=True)`` under
    ``torch.no_grad`` and adds the winners to the counts. Each row of a layer's
    input (``x.reshape(-1, in_features)``) is one sample; identical rows in a
    batch each count. Attributes (dicts keyed by qualified layer names as in
    ``model.named_modules()``):

    * ``counts``: samples for which the connection was the argmax *or* the
      argmin (a sample where it was both counts once);
    * ``max_counts`` / ``min_counts``: argmax and argmin wins separately;
    * ``samples``: rows seen per layer.

    The counts are usable directly as ``importance_scores`` of
    ``torch.nn.utils.prune.global_unstructured``. Counting runs in whatever
    mode the model is in; use it on the eager (not ``torch.compile``-d) model.

    Args:
        model: the model.
        layers: ``None`` (every ``MAMLinear``) or a list of names / modules.
    """

    def __init__(self, model: nn.Module, layers: LayerSpec = None):
        _check_model(model, "SelectionCounter")
        self.model = model
        self.layers = _resolve_layers(model, layers, "SelectionCounter", kinds=(MAMLinear,))
        self._handles: List[Any] = []
        self.reset()

    def reset(self) -> None:
        """Zero all counts."""
        def zeros(m):
            return torch.zeros(m.weight.shape, dtype=torch.int64, device=m.weight.device)
        self.counts = {n: zeros(m) for n, m in self.layers.items()}
        self.max_counts = {n: zeros(m) for n, m in self.layers.items()}
        self.min_counts = {n: zeros(m) for n, m in self.layers.items()}
        self.samples = {n: 0 for n in self.layers}

    def _hook(self, name: str):
        def hook(module, args, output):
            if not args or not isinstance(args[0], torch.Tensor):
                raise TypeError(f"SelectionCounter: layer {name!r} was called without a tensor input")
            with torch.no_grad():
                _, amax, amin = mam_linear(args[0], module.weight, module.bias, return_indices=True)
                self._accumulate(name, amax, amin)
        return hook

    def _accumulate(self, name: str, amax: torch.Tensor, amin: torch.Tensor) -> None:
        counts = self.counts[name]
        N, K = counts.shape
        amax = amax.reshape(-1, N).to(device=counts.device, dtype=torch.int64)
        amin = amin.reshape(-1, N).to(device=counts.device, dtype=torch.int64)
        base = torch.arange(N, device=counts.device, dtype=torch.int64) * K
        imax = (amax + base).reshape(-1)
        imin = (amin + base).reshape(-1)
        both = imax[imax == imin]
        cmax = torch.bincount(imax, minlength=N * K).view(N, K)
        cmin = torch.bincount(imin, minlength=N * K).view(N, K)
        cboth = torch.bincount(both, minlength=N * K).view(N, K)
        self.max_counts[name] += cmax
        self.min_counts[name] += cmin
        counts += cmax + cmin - cboth
        self.samples[name] += amax.shape[0]

    def attach(self) -> "SelectionCounter":
        """Start counting (what ``with`` does on entry)."""
        if self._handles:
            raise RuntimeError("SelectionCounter is already attached")
        self._handles = [m.register_forward_hook(self._hook(n)) for n, m in self.layers.items()]
        return self

    def detach(self) -> None:
        """Stop counting (what ``with`` does on exit); the counts stay."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "SelectionCounter":
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()


def selection(model: nn.Module, data, layers: LayerSpec = None) -> Dict[str, torch.Tensor]:
    """Selection counts (see :class:`SelectionCounter`) over ``data``.

    Runs the model in eval mode (restored afterwards) under ``torch.no_grad``
    on the inputs of each batch (a tensor, or the first item of a tuple/list),
    moved to the model's device. Returns the ``counts`` dict (int64).
    """
    fn = "selection"
    _check_model(model, fn)
    _check_data(data, fn, "selection")
    device = _model_device(model)
    counter = SelectionCounter(model, layers)
    with counter, _Modes(model, False), torch.no_grad():
        for batch in data:
            inputs, _ = _split_batch(batch, fn)
            model(_to(inputs, device))
    return counter.counts


# --------------------------------------------------------------------------- pruning

_SCORES = ("magnitude", "gradient", "selection")


def _scores(model, score, chosen: Dict[str, nn.Module], data, loss_fn) -> Dict[str, torch.Tensor]:
    fn = "prune_model"
    if isinstance(score, str):
        if score == "magnitude":
            return magnitude(model, list(chosen.values()))
        if score == "gradient":
            _check_data(data, fn, score)
            if loss_fn is None:
                raise ValueError(f"{fn}: the 'gradient' score needs loss_fn")
            return gradient(model, data, loss_fn, list(chosen.values()))
        if score == "selection":
            mac = [n for n, m in chosen.items() if not isinstance(m, MAMLinear)]
            if mac:
                raise ValueError(f"{fn}: the 'selection' score exists only for MAMLinear layers, but layers "
                                 f"{mac} are {type(chosen[mac[0]]).__name__}; pass layers= with MAM layers only")
            _check_data(data, fn, score)
            return selection(model, data, list(chosen.values()))
        raise ValueError(f"{fn}: score must be one of {_SCORES} or a dict of tensors, got {score!r}")
    if isinstance(score, dict):
        name_of = {id(m): n for n, m in chosen.items()}
        out = {}
        for key, value in score.items():
            name = name_of.get(id(key)) if isinstance(key, nn.Module) else key
            if name in chosen:
                out[name] = value
        for name, module in chosen.items():
            if name not in out:
                raise ValueError(f"{fn}: score dict has no entry for layer {name!r}")
            value = out[name]
            if not isinstance(value, torch.Tensor) or value.shape != module.weight.shape:
                raise ValueError(f"{fn}: score for layer {name!r} must be a tensor of shape "
                                 f"{tuple(module.weight.shape)}, got "
                                 f"{tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}")
        return out
    raise TypeError(f"{fn}: score must be a str in {_SCORES} or a dict of tensors, got {type(score).__name__}")


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


def _check_fraction(value, fn: str, arg: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: {arg} must be a float in (0, 1], got {type(value).__name__}")
    value = float(value)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{fn}: {arg} must be a fraction in (0, 1] of connections to keep "
                         f"(e.g. 0.001 keeps 0.1 %), got {value}")
    return value


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
            model that a pruned ``state_dict`` loads into).
        score: ``"magnitude"``, ``"gradient"`` (needs ``data`` and ``loss_fn``,
            see :func:`gradient`), ``"selection"`` (needs ``data``, MAM layers
            only, see :func:`selection`), or a dict from layer name (or module)
            to a score tensor shaped like its weight. Lowest scores are pruned
            first; ties go to the lowest ``|w|``.
        scope: ``"global"`` (one ranking over all chosen layers) or
            ``"layer"`` (each layer keeps ``round(remaining * its size)``).
        layers: ``None`` (every ``nn.Linear`` and ``MAMLinear``, except
            ``nn.MultiheadAttention.out_proj``) or a list of qualified names
            or modules. Biases are never pruned.
        data, loss_fn: for the data-driven scores.

    The masks go through ``torch.nn.utils.prune.custom_from_mask``: every
    chosen layer gets ``weight_orig`` / ``weight_mask``, like after
    ``torch.nn.utils.prune.l1_unstructured``.
    """
    fn = "prune_model"
    _check_model(model, fn)
    remaining = _check_fraction(remaining, fn, "remaining")
    if scope not in ("global", "layer"):
        raise ValueError(f"{fn}: scope must be 'global' or 'layer', got {scope!r}")
    chosen = _resolve_layers(model, layers, fn)
    names = list(chosen)
    scores = _scores(model, score, chosen, data, loss_fn)
    for n in names:
        if torch.isnan(scores[n]).any():
            raise ValueError(f"{fn}: the score of layer {n!r} contains NaN")
    with torch.no_grad():
        mags = [_effective_weight(chosen[n]).abs() for n in names]
    masks = [_kept_mask(chosen[n]) for n in names]
    groups = [list(range(len(names)))] if scope == "global" else [[i] for i in range(len(names))]
    new_masks: List[Optional[torch.Tensor]] = [None] * len(names)
    for group in groups:
        total = sum(masks[i].numel() for i in group)
        kept = sum(int(masks[i].sum()) for i in group)
        target = max(1, int(round(remaining * total)))
        if target > kept:
            where = "the chosen layers" if scope == "global" else f"layer {names[group[0]]!r}"
            raise ValueError(f"{fn}: {where} already keep{'s' if scope == 'layer' else ''} {kept} of {total} "
                             f"weights ({kept / total:.4g}), fewer than remaining={remaining} asks "
                             f"({target}); pruning cannot grow connections back")
        out = _select_prune([scores[names[i]] for i in group], [mags[i] for i in group],
                            [masks[i] for i in group], kept - target)
        for i, m in zip(group, out):
            new_masks[i] = m
    # Under no_grad the masked `weight` attribute is a graph leaf until the next
    # grad-enabled forward, so the pruned model can be copy.deepcopy-ed.
    with torch.no_grad():
        for n, m in zip(names, new_masks):
            module = chosen[n]
            w = _leaf_weight(module)
            torch_prune.custom_from_mask(module, "weight", m.view(w.shape).to(device=w.device, dtype=w.dtype))
    return model


def remaining(model: nn.Module, layers: LayerSpec = None) -> Dict[str, Any]:
    """Kept / total connection counts, per layer and in total.

    Returns ``{"layers": {name: {"kept", "total", "fraction"}}, "kept",
    "total", "fraction"}`` over ``layers`` (default: every ``nn.Linear`` and
    ``MAMLinear``). For a layer pruned with ``torch.nn.utils.prune`` "kept"
    counts its mask's ones; otherwise its non-zero weights (so a
    :func:`finalize`-d or ``torch.ao.pruning``-masked layer reports its zeros
    as pruned).
    """
    _check_model(model, "remaining")
    report: Dict[str, Any] = {"layers": {}}
    kept_all = total_all = 0
    with torch.no_grad():
        for name, module in _resolve_layers(model, layers, "remaining").items():
            if _pruning_hook(module) is not None:
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
    _check_model(model, "finalize")
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)
    return model


# --------------------------------------------------------------------------- lottery ticket

class LotteryTicket:
    """Iterative magnitude (or other score) pruning with weight rewinding.

    Each round: train, prune ``rate`` of the connections that remain (with
    :func:`prune_model`), rewind the kept weights to a checkpoint taken early
    in training (Frankle & Carbin's lottery ticket; with a checkpoint after a
    few steps, "late rewinding").

    The checkpoint holds every parameter of the model (weights and biases of
    all layers, pruned or not); it is taken on construction (the initial
    weights) and again whenever :meth:`checkpoint` is called, e.g. once after
    the first ``k`` training steps. Buffers (BatchNorm statistics, MAM
    ``beta``) are not rewound.

    Args:
        model: the model to prune.
        rate: fraction in (0, 1) of the remaining connections pruned each round.
        score, scope, layers: as in :func:`prune_model`.

    Example::

        ticket = LotteryTicket(model, rate=0.2)
        for r in range(5):
            train(model)               # a fresh optimizer each round
            ticket.prune()             # prune 20 % of what is left, rewind
        train(model)                   # train the final ticket

    or ``ticket.run(5, train_fn)`` which does the same with
    ``train_fn(model, round)``.
    """

    def __init__(self, model: nn.Module, rate: float = 0.2, score: Union[str, Dict] = "magnitude",
                 scope: str = "global", layers: LayerSpec = None):
        fn = "LotteryTicket"
        _check_model(model, fn)
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
            raise TypeError(f"{fn}: rate must be a float in (0, 1), got {type(rate).__name__}")
        if not 0.0 < float(rate) < 1.0:
            raise ValueError(f"{fn}: rate (fraction of the remaining connections pruned per round) must be in "
                             f"(0, 1), got {rate}")
        if scope not in ("global", "layer"):
            raise ValueError(f"{fn}: scope must be 'global' or 'layer', got {scope!r}")
        if not (isinstance(score, dict) or score in _SCORES):
            raise ValueError(f"{fn}: score must be one of {_SCORES} or a dict of tensors, got {score!r}")
        self.model, self.rate, self.score, self.scope = model, float(rate), score, scope
        self.layers = list(_resolve_layers(model, layers, fn).values())
        rep = remaining(model, self.layers)
        self.fraction = rep["fraction"]  # nominal target kept fraction after the last round
        self.round = 0
        self.checkpoint()

    def _params(self):
        for mod_name, module in self.model.named_modules():
            for key, p in module._parameters.items():
                if p is None:
                    continue
                base = key[:-5] if key.endswith("_orig") and _pruning_hook(module, key[:-5]) is not None else key
                yield (f"{mod_name}.{base}" if mod_name else base), module, base, p

    @torch.no_grad()
    def checkpoint(self) -> None:
        """Record the current parameters as the rewind point."""
        self._checkpoint = {key: p.detach().clone() for key, _, _, p in self._params()}

    def rewind(self) -> None:
        """Copy the checkpoint back into the parameters (pruned ones stay masked)."""
        current = {key: (module, base, p) for key, module, base, p in self._params()}
        missing = set(self._checkpoint) - set(current)
        if missing:
            raise RuntimeError(f"LotteryTicket.rewind: the model no longer has parameters {sorted(missing)}")
        with torch.no_grad():
            for key, value in self._checkpoint.items():
                current[key][2].copy_(value)
            for module, base, _ in current.values():
                hook = _pruning_hook(module, base)
                if hook is not None:  # refresh the masked attribute now rather than at the next forward
                    hook(module, None)

    def prune(self, data=None, loss_fn: Optional[Callable] = None) -> Dict[str, Any]:
        """Prune ``rate`` of what remains, rewind; returns :func:`remaining` of the layers."""
        self.fraction *= 1.0 - self.rate
        prune_model(self.model, self.fraction, score=self.score, scope=self.scope, layers=self.layers,
                    data=data, loss_fn=loss_fn)
        self.round += 1
        self.rewind()
        return remaining(self.model, self.layers)

    def run(self, rounds: int, train_fn: Callable[[nn.Module, int], Any], data=None,
            loss_fn: Optional[Callable] = None) -> List[Dict[str, Any]]:
        """``rounds`` times: ``train_fn(model, r)`` then :meth:`prune`; finally
        ``train_fn(model, rounds)`` trains the last ticket. Returns the reports."""
        if isinstance(rounds, bool) or not isinstance(rounds, numbers.Integral) or rounds < 0:
            raise ValueError(f"LotteryTicket.run: rounds must be a non-negative int, got {rounds!r}")
        if not callable(train_fn):
            raise TypeError(f"LotteryTicket.run: train_fn must be callable (model, round), "
                            f"got {type(train_fn).__name__}")
        reports = []
        for _ in range(rounds):
            train_fn(self.model, self.round)
            reports.append(self.prune(data, loss_fn))
        train_fn(self.model, self.round)
        return reports

    def state_dict(self) -> Dict[str, Any]:
        return {"round": self.round, "fraction": self.fraction, "rate": self.rate,
                "checkpoint": dict(self._checkpoint)}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        missing = {"round", "fraction", "rate", "checkpoint"} - set(state_dict)
        if missing:
            raise ValueError(f"LotteryTicket.load_state_dict: missing keys {sorted(missing)}")
        self.round = int(state_dict["round"])
        self.fraction = float(state_dict["fraction"])
        self.rate = float(state_dict["rate"])
        self._checkpoint = dict(state_dict["checkpoint"])
