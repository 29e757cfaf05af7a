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
  a data loader, in eval mode;
* :func:`selection` / :class:`SelectionCounter`: the number of samples for
  which each connection was the argmax or the argmin of its MAM neuron.

A new score is one function registered by name; :func:`prune_model`,
:class:`LotteryTicket` and the experiment's sweep pick it up::

    @mamext.prune.register_score("my_score", needs_data=False, needs_loss=False,
                                 layer_kinds=(nn.Linear, MAMLinear))
    def my_score(model, layers, *, data=None, loss_fn=None):
        # layers: {qualified name: module}; return {name: tensor shaped like its weight}
        return {name: module.weight.detach().abs() for name, module in layers.items()}

    mamext.prune.prune_model(model, 0.1, score="my_score")

``needs_data`` / ``needs_loss`` make the callers refuse a missing (or empty)
``data`` / ``loss_fn`` before the function runs; ``layer_kinds`` is the
default set of layers and the kinds ``layers=`` may name. A score must leave
the model as it found it (:class:`~mamext.prune.state.PreservedState` does
that for a forward pass). :func:`score_names` lists the registered scores in
registration order, :func:`unregister_score` removes one, and
:func:`compute_scores` runs one by name.

:func:`prune_model` prunes one-shot to a target fraction of remaining
connections, :func:`remaining` reports what is left, :class:`LotteryTicket`
drives iterative pruning with weight rewinding and :func:`finalize` bakes the
masks into plain weights.

Files: ``layers`` (which modules are prunable, masks, effective weights),
``batches`` (calibration data), ``state`` (leaving the model as found),
``registry`` (the score table), ``scores`` (the built-in scores),
``counter`` (:class:`SelectionCounter`), ``ranking`` (masks from scores,
:func:`prune_model`, :func:`remaining`, :func:`finalize`), ``lottery``
(:class:`LotteryTicket`).
"""

from __future__ import annotations

from .counter import SelectionCounter
from .lottery import LotteryTicket
from .ranking import finalize, prune_model, remaining
from .registry import ScoreSpec, get_score, register_score, score_names, unregister_score
from .scores import compute_scores, gradient, magnitude, selection

__all__ = [
    "magnitude",
    "gradient",
    "selection",
    "SelectionCounter",
    "prune_model",
    "remaining",
    "LotteryTicket",
    "finalize",
    "compute_scores",
    "register_score",
    "unregister_score",
    "score_names",
    "get_score",
    "ScoreSpec",
]
