"""The built-in pruning scores: magnitude, gradient and selection.

Each is registered (in this order) with :func:`~mamext.prune.registry.register_score`
and also callable directly with its own signature. Data-driven scores run the
model in eval mode (Dropout off, BatchNorm on its running statistics, so the
result is deterministic) and leave the model exactly as they found it: modes,
buffers, ``requires_grad`` flags and ``.grad`` tensors (see
:class:`~mamext.prune.state.PreservedState`).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch
from torch import nn

from ..nn.conv import MAMConv1d, MAMConv2d
from ..nn.modules import MAMLinear
from .batches import is_empty, model_device, no_batch_error, split_batch, to_device
from .counter import SelectionCounter
from .layers import CONV_KINDS, LayerSpec, check_model, effective_weight, leaf_weight, resolve_layers
from .registry import get_score, purpose, register_score, run_score
from .state import PreservedState


def _score(name: str, fn: str, model, layers: LayerSpec, data=None, loss_fn=None) -> Dict[str, torch.Tensor]:
    """Run registered score ``name`` as the public function ``fn``."""
    check_model(model, fn)
    spec = get_score(name, fn)
    chosen = resolve_layers(model, layers, fn, spec.layer_kinds, purpose(spec), spec.explicit_kinds)
    return run_score(spec, model, chosen, data, loss_fn, fn)


def compute_scores(model: nn.Module, score: str, layers: LayerSpec = None, data=None,
                   loss_fn: Optional[Callable] = None) -> Dict[str, torch.Tensor]:
    """The scores of registered score ``score`` for ``layers`` (default: every
    layer it applies to), checked as :func:`prune_model` checks them; the
    result is a dict that ``prune_model(score=...)`` accepts."""
    return _score(score, "compute_scores", model, layers, data, loss_fn)


# --------------------------------------------------------------------------- magnitude

@register_score("magnitude", explicit_kinds=CONV_KINDS)
def magnitude_scores(model: nn.Module, layers: Dict[str, nn.Module], *, data=None, loss_fn=None):
    """``|w|`` of the effective (masked) weight."""
    with torch.no_grad():
        return {name: effective_weight(m).abs() for name, m in layers.items()}


def magnitude(model: nn.Module, layers: LayerSpec = None) -> Dict[str, torch.Tensor]:
    """``|w|`` for each layer (default: every ``nn.Linear`` and ``MAMLinear``)."""
    return _score("magnitude", "magnitude", model, layers)


# --------------------------------------------------------------------------- gradient

def _summed_gradients(model: nn.Module, leaves: List[torch.Tensor], data, loss_fn: Callable) -> List[torch.Tensor]:
    """``dL/dleaf`` summed over the batches of ``data`` (float64 except on MPS)."""
    fn = "gradient"
    sums = [torch.zeros_like(p, dtype=torch.float64 if p.device.type != "mps" else torch.float32) for p in leaves]
    device = model_device(model)
    n_batches = 0
    for p in leaves:
        p.requires_grad_(True)
    with torch.enable_grad():
        for batch in data:
            inputs, target = split_batch(batch, fn)
            if is_empty(inputs):
                continue
            inputs, target = to_device(inputs, device), to_device(target, device)
            out = model(inputs)
            loss = loss_fn(out) if target is None else loss_fn(out, target)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                got = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
                raise ValueError(f"{fn}: loss_fn must return a scalar tensor, got {got}")
            grads = torch.autograd.grad(loss.reshape(()), leaves, allow_unused=True)
            for s, g in zip(sums, grads):
                if g is not None:
                    s += g
            n_batches += 1
    if n_batches == 0:
        raise no_batch_error(fn, "gradient")
    return sums


@register_score("gradient", needs_data=True, needs_loss=True, explicit_kinds=CONV_KINDS)
def gradient_scores(model: nn.Module, layers: Dict[str, nn.Module], *, data=None, loss_fn=None):
    """``|w * G|``, ``G`` the gradient of the loss summed over ``data``, in eval mode."""
    leaves = [leaf_weight(m) for m in layers.values()]
    with PreservedState(model, training=False):
        sums = _summed_gradients(model, leaves, data, loss_fn)
    # With w = w_orig * mask: w * dL/dw = w_orig * mask * dL/dw = w_orig * dL/dw_orig.
    with torch.no_grad():
        return {n: (p.to(s.dtype) * s).abs().to(p.dtype) for n, p, s in zip(layers, leaves, sums)}


def gradient(model: nn.Module, data, loss_fn: Callable, layers: LayerSpec = None) -> Dict[str, torch.Tensor]:
    """``|w * G|`` for each layer, ``G`` the gradient of the loss summed over ``data``.

    The model runs in eval mode (Dropout off, BatchNorm on its running
    statistics) with one forward and backward pass per batch:
    ``loss_fn(model(inputs), target)`` for ``(inputs, target, ...)`` batches,
    ``loss_fn(model(batch))`` for bare tensor batches. Inputs are moved to the
    model's device. Afterwards every submodule's mode, every buffer, every
    parameter's ``requires_grad`` and ``.grad`` are as before (the gradients
    are taken with ``torch.autograd.grad``). For a pruned layer ``w`` is the
    masked weight, so pruned connections score 0. Batches without a sample
    are skipped; ``data`` without any sample is refused.
    Pass an unwrapped model (not a DDP wrapper).
    """
    return _score("gradient", "gradient", model, layers, data, loss_fn)


# --------------------------------------------------------------------------- selection

@register_score("selection", needs_data=True, layer_kinds=(MAMLinear,), explicit_kinds=(MAMConv2d, MAMConv1d))
def selection_scores(model: nn.Module, layers: Dict[str, nn.Module], *, data=None, loss_fn=None):
    """Samples of ``data`` for which each connection won its neuron's max or min, in eval mode."""
    fn = "selection"
    device = model_device(model)
    counter = SelectionCounter(model, list(layers.values()))
    n_batches = 0
    with PreservedState(model, training=False), counter, torch.no_grad():
        for batch in data:
            inputs, _ = split_batch(batch, fn)
            if is_empty(inputs):
                continue
            model(to_device(inputs, device))
            n_batches += 1
    if n_batches == 0:
        raise no_batch_error(fn, "selection")
    return counter.counts


def selection(model: nn.Module, data, layers: LayerSpec = None) -> Dict[str, torch.Tensor]:
    """Selection counts (see :class:`SelectionCounter`) over ``data``.

    Runs the model in eval mode under ``torch.no_grad`` on the inputs of each
    batch (a tensor, or the first item of a tuple/list), moved to the model's
    device, and leaves the model's modes and buffers as they were. Default
    layers: every ``MAMLinear``. Batches without a sample are skipped;
    ``data`` without any sample is refused (all counts would be 0). Returns the
    ``counts`` dict (int64).
    """
    return _score("selection", "selection", model, layers, data)
