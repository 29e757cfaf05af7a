"""Counting, per connection, how often it wins its MAM neuron's max or min."""

from __future__ import annotations

from typing import Any, List

import torch
from torch import nn

from ..nn.conv import MAMConv1d, MAMConv2d
from ..nn.modules import MAMLinear
from ..ops import mam_linear
from .layers import LayerSpec, check_model, resolve_layers


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
    batch each count. For a MAM convolution (named in ``layers``) every output
    position of every sample is one row (its receptive field), and the winner
    in the patch counts for the weight that multiplied it (a zero-padded
    position counts too: its zero product can win). Attributes (dicts keyed by qualified layer names as in
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
        layers: ``None`` (every ``MAMLinear``) or a list of names / modules
            (``MAMLinear``, ``MAMConv2d``, ``MAMConv1d``).
    """

    def __init__(self, model: nn.Module, layers: LayerSpec = None):
        check_model(model, "SelectionCounter")
        self.model = model
        self.layers = resolve_layers(model, layers, "SelectionCounter", kinds=(MAMLinear,),
                                     explicit_kinds=(MAMConv2d, MAMConv1d))
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
            x = args[0]
            if self.counts[name].shape[0] == 0:  # no neuron: nothing to count, the rows still are samples
                self.samples[name] += x.numel() // max(1, x.shape[-1]) if x.dim() else 0
                return
            with torch.no_grad():
                amax, amin = self._winners(module, x)
                self._accumulate(name, amax, amin)
        return hook

    @staticmethod
    def _winners(module: nn.Module, x: torch.Tensor):
        """``(argmax, argmin)`` of ``module``'s neurons for input ``x``, shaped (rows, neurons)."""
        if isinstance(module, MAMLinear):
            _, amax, amin = mam_linear(x, module.weight, module.bias, return_indices=True)
            return amax, amin
        amax, amin = module.selections(x)  # (N, C_out, *spatial) or unbatched (C_out, *spatial)

        def rows(t):
            t = t.unsqueeze(0) if t.dim() < module.weight.dim() else t
            return t.movedim(1, -1).reshape(-1, module.weight.shape[0])

        return rows(amax), rows(amin)

    def _accumulate(self, name: str, amax: torch.Tensor, amin: torch.Tensor) -> None:
        counts = self.counts[name].view(self.counts[name].shape[0], -1)  # (neurons, connections)
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
        self.max_counts[name].view(N, K).add_(cmax)
        self.min_counts[name].view(N, K).add_(cmin)
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
