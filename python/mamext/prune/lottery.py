"""Iterative pruning with weight rewinding (the lottery ticket)."""

from __future__ import annotations

import numbers
from typing import Any, Callable, Dict, List, Optional, Union

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from .layers import LayerSpec, check_model, install_mask, pruning_hook
from .ranking import check_scope, chosen_layers, prune_model, remaining


def _check_rate(rate, fn: str) -> float:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise TypeError(f"{fn}: rate must be a float in (0, 1), got {type(rate).__name__}")
    if not 0.0 < float(rate) < 1.0:
        raise ValueError(f"{fn}: rate (fraction of the remaining connections pruned per round) must be in "
                         f"(0, 1), got {rate}")
    return float(rate)


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

    The ticket keeps each layer's mask from its last round, so a model whose
    masks were baked in with :func:`finalize` stays pruned: :meth:`rewind`
    zeroes the pruned connections of such a layer, and :meth:`prune`
    re-installs the kept mask before pruning further.

    Args:
        model: the model to prune.
        rate: fraction in (0, 1) of the remaining connections pruned each round.
        score, scope, layers: as in :func:`prune_model` (any registered score;
            by default the layers are those the score applies to).

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
        check_model(model, fn)
        self.rate = _check_rate(rate, fn)
        self.scope = check_scope(scope, fn)
        self.model, self.score = model, score
        self.layers = list(chosen_layers(model, score, layers, fn).values())
        self.fraction = remaining(model, self.layers)["fraction"]  # nominal kept fraction after the last round
        self.round = 0
        self._masks: Dict[str, torch.Tensor] = {}
        self._record_masks()
        self.checkpoint()

    def _layer_names(self) -> Dict[str, nn.Module]:
        ids = {id(m) for m in self.layers}
        return {name: m for name, m in self.model.named_modules() if id(m) in ids}

    def _record_masks(self) -> None:
        """Remember the current mask of every masked layer (a finalized layer keeps its last one)."""
        for name, module in self._layer_names().items():
            if pruning_hook(module) is not None:
                self._masks[name] = (module.weight_mask != 0).detach().clone()

    def _params(self):
        for mod_name, module in self.model.named_modules():
            for key, p in module._parameters.items():
                if p is None:
                    continue
                base = key[:-5] if key.endswith("_orig") and pruning_hook(module, key[:-5]) is not None else key
                yield (f"{mod_name}.{base}" if mod_name else base), module, base, p

    @torch.no_grad()
    def checkpoint(self) -> None:
        """Record the current parameters as the rewind point."""
        self._checkpoint = {key: p.detach().clone() for key, _, _, p in self._params()}

    def rewind(self) -> None:
        """Copy the checkpoint back into the parameters; pruned connections stay
        pruned (masked, or zero in a layer finalized since its last round)."""
        self._record_masks()
        current = {key: (module, base, p) for key, module, base, p in self._params()}
        missing = set(self._checkpoint) - set(current)
        if missing:
            raise RuntimeError(f"LotteryTicket.rewind: the model no longer has parameters {sorted(missing)}")
        with torch.no_grad():
            for key, value in self._checkpoint.items():
                current[key][2].copy_(value)
            for module, base, _ in current.values():
                hook = pruning_hook(module, base)
                if hook is not None:  # refresh the masked attribute now rather than at the next forward
                    hook(module, None)
            for name, module in self._layer_names().items():
                if pruning_hook(module) is None and name in self._masks:
                    module.weight.mul_(self._masks[name].to(module.weight.device, module.weight.dtype))

    def _remask_finalized(self) -> List[nn.Module]:
        """Re-install the kept mask of layers finalized since their last round; returns them."""
        restored = []
        for name, module in self._layer_names().items():
            if pruning_hook(module) is None and name in self._masks:
                install_mask(module, self._masks[name])
                restored.append(module)
        return restored

    def prune(self, data=None, loss_fn: Optional[Callable] = None) -> Dict[str, Any]:
        """Prune ``rate`` of what remains, rewind; returns :func:`remaining` of
        the layers. On an error the ticket and the model are left as they were."""
        fraction = self.fraction * (1.0 - self.rate)
        restored = self._remask_finalized()
        try:
            prune_model(self.model, fraction, score=self.score, scope=self.scope, layers=self.layers,
                        data=data, loss_fn=loss_fn)
        except BaseException:
            for module in restored:
                torch_prune.remove(module, "weight")
            raise
        self.fraction = fraction
        self.round += 1
        self._record_masks()
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
                "checkpoint": dict(self._checkpoint), "masks": dict(self._masks)}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        missing = {"round", "fraction", "rate", "checkpoint"} - set(state_dict)
        if missing:
            raise ValueError(f"LotteryTicket.load_state_dict: missing keys {sorted(missing)}")
        self.round = int(state_dict["round"])
        self.fraction = float(state_dict["fraction"])
        self.rate = float(state_dict["rate"])
        self._checkpoint = dict(state_dict["checkpoint"])
        self._masks = dict(state_dict.get("masks", {}))
