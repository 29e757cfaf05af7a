"""Pruning sweeps: one-shot (several scores) and iterative lottery-ticket."""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping

import torch
from torch import nn

from .. import prune as mprune
from .models import hidden_layers
from .train import evaluate, make_progress, train_model

__all__ = ["FRACTIONS", "CRITERIA", "DEFAULT_CRITERIA", "criterion_applies", "mam_models_only", "score_loader", "prune_copy",
           "one_shot_sweep", "lottery_sweep"]

#: Remaining fractions of the hidden layers' weights (100 % ... 0.01 %).
FRACTIONS = (1.0, 0.5, 0.3, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 0.0005, 0.0002, 0.0001)

#: The ranking scopes of :func:`mamext.prune.prune_model`; each score gives one criterion per scope.
SCOPES = ("global", "layer")


class _Criteria(Mapping):
    """criterion name -> (score, scope) for :func:`mamext.prune.prune_model`:
    ``"<score>-global"`` and ``"<score>-layer"`` for every score registered
    with :func:`mamext.prune.register_score`, in registration order. A live
    view: a score registered later appears here (and so in the sweep, the
    command line's ``--criteria`` and the report) without any change here."""

    def _table(self):
        return {f"{score}-{scope}": (score, scope) for score in mprune.score_names() for scope in SCOPES}

    def __getitem__(self, criterion):
        return self._table()[criterion]

    def __iter__(self):
        return iter(self._table())

    def __len__(self):
        return len(self._table())

    def __repr__(self):
        return f"CRITERIA({self._table()!r})"


#: criterion name -> (score, scope), derived from the score registry.
CRITERIA = _Criteria()
# Gradient (|W dL/dW|, a loss sensitivity) compares across layers, so it is
# pruned globally; selection counts scale with each layer's fan-in, so they are
# ranked within each layer.
DEFAULT_CRITERIA = ("magnitude-global", "magnitude-layer", "gradient-global", "selection-layer")


def criterion_applies(criterion: str, model: nn.Module) -> bool:
    """Whether ``criterion``'s score applies to every hidden layer of ``model``."""
    spec = mprune.get_score(CRITERIA[criterion][0], "sweep")
    return all(isinstance(m, spec.layer_kinds + spec.explicit_kinds) for m in hidden_layers(model))


def mam_models_only(criterion: str) -> bool:
    """Whether ``criterion``'s score cannot rank a MAC model's ``nn.Linear`` layers."""
    spec = mprune.get_score(CRITERIA[criterion][0], "sweep")
    return not issubclass(nn.Linear, spec.layer_kinds)


def score_loader(x, y, samples: int, batch_size: int = 500, seed: int = 0):
    """A DataLoader over a fixed subset of the training set, for the gradient
    and selection scores."""
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(seed + 7)
    idx = torch.randperm(len(y), generator=g)[: min(samples, len(y))].to(x.device)
    return DataLoader(TensorDataset(x[idx], y[idx]), batch_size=batch_size, shuffle=False)


def precompute_scores(model, criterion, data):
    """The data-driven scores of the (unpruned) ``model``'s hidden layers,
    computed once for a whole sweep, as a dict that ``prune_model`` accepts;
    ``None`` for a score that needs no data (each ``prune_model`` call then
    scores by itself)."""
    score, _ = CRITERIA[criterion]
    spec = mprune.get_score(score, "precompute_scores")
    if not spec.needs_data:
        return None
    return mprune.compute_scores(model, score, hidden_layers(model), data=data, loss_fn=nn.CrossEntropyLoss())


def prune_copy(model, fraction, criterion, data, scores=None):
    """A pruned deep copy of ``model`` (hidden layers only) and its
    ``(kept, total)``. ``scores``: precomputed (see :func:`precompute_scores`)."""
    m = copy.deepcopy(model)
    layers = hidden_layers(m)
    if fraction < 1.0:
        score, scope = CRITERIA[criterion]
        mprune.prune_model(m, fraction, score=score if scores is None else scores, scope=scope, layers=layers,
                           data=data, loss_fn=nn.CrossEntropyLoss())
    return m, _kept_total(m, layers)


def _row(model_name, criterion, fraction, seed, kept, total, val_acc, test_acc, seconds, **extra):
    r = {"model": model_name, "criterion": criterion, "fraction": fraction, "seed": seed, "kept": kept,
         "total": total, "actual_fraction": kept / total if total else 0.0, "val_acc": val_acc,
         "test_acc": test_acc, "seconds": seconds}
    r.update(extra)
    return r


def one_shot_sweep(model, model_name, splits, criteria, fractions, data, seed, progress=False, log=None):
    """Prune a trained ``model`` once per (criterion, fraction), from scratch
    each time (no fine-tuning), and evaluate on validation and test."""
    todo = [c for c in criteria if criterion_applies(c, model)]
    skipped = [c for c in criteria if c not in todo]
    if skipped and log:
        kinds = sorted({type(m).__name__ for m in hidden_layers(model)})
        log(f"{model_name}: skipping {', '.join(skipped)} (their scores do not apply to {', '.join(kinds)} layers)")
    rows = []
    t0 = time.perf_counter()
    base_val = evaluate(model, splits.x_val, splits.y_val)
    base_test = evaluate(model, splits.x_test, splits.y_test)
    total = sum(m.weight.numel() for m in hidden_layers(model))
    bar = make_progress(progress, total=len(todo) * len(fractions), desc=f"{model_name} prune", unit="pt")
    try:
        for crit in todo:
            scores = precompute_scores(model, crit, data) if any(f < 1.0 for f in fractions) else None
            for f in fractions:
                t1 = time.perf_counter()
                if f >= 1.0:
                    kept, val_acc, test_acc = total, base_val, base_test
                else:
                    pm, (kept, tot) = prune_copy(model, f, crit, data, scores)
                    assert tot == total, (tot, total)
                    val_acc = evaluate(pm, splits.x_val, splits.y_val)
                    test_acc = evaluate(pm, splits.x_test, splits.y_test)
                rows.append(_row(model_name, crit, f, seed, kept, total, val_acc, test_acc,
                                 time.perf_counter() - t1))
                bar.update(1)
                bar.set_postfix(crit=crit, remaining=f"{100 * f:g}%", val=f"{val_acc:.3f}")
            if log:
                pts = ", ".join(f"{100 * r['fraction']:g}%:{r['val_acc']:.3f}" for r in rows if r["criterion"] == crit)
                log(f"{model_name} {crit} (val acc): {pts}")
    finally:
        bar.close()
    if log:
        log(f"{model_name}: one-shot sweep took {time.perf_counter() - t0:.1f}s")
    return rows


def _rewinder(model, init_state, layers):
    """``mamext.prune.LotteryTicket.rewind`` for ``model`` with ``init_state``
    as the rewind point: copies the initial parameters back, keeping masks."""
    trained = copy.deepcopy(model.state_dict())
    model.load_state_dict(init_state)
    ticket = mprune.LotteryTicket(model, rate=0.5, score="magnitude", scope="global", layers=layers)
    model.load_state_dict(trained)
    return ticket.rewind


def _kept_total(model, layers):
    r = mprune.remaining(model, layers)
    return r["kept"], r["total"]


def lottery_sweep(model, init_state, model_name, splits, fractions, seed, train_kwargs, data=None,
                  progress=False, log=None):
    """Iterative magnitude pruning with rewinding (lottery ticket): from the
    trained ``model``, repeatedly prune (global magnitude, among the surviving
    weights) to the next fraction, rewind the surviving weights to
    ``init_state`` and retrain with the same recipe (``train_kwargs``)."""
    rows = []
    total = sum(m.weight.numel() for m in hidden_layers(model))
    rows.append(_row(model_name, "lottery", 1.0, seed, total, total,
                     evaluate(model, splits.x_val, splits.y_val), evaluate(model, splits.x_test, splits.y_test),
                     0.0, round=0))
    m = copy.deepcopy(model)
    rewind = _rewinder(m, init_state, hidden_layers(m))
    for r, f in enumerate([f for f in fractions if f < 1.0], start=1):
        t1 = time.perf_counter()
        layers = hidden_layers(m)
        # ``remaining`` counts all the layers' weights; pruned ones stay pruned.
        mprune.prune_model(m, f, score="magnitude", scope="global", layers=layers)
        rewind()
        hist = train_model(m, splits.x_train, splits.y_train, splits.x_val, splits.y_val,
                           label=f"{model_name} round {r} ({100 * f:g}%)", progress=progress, log=None,
                           seed=seed + 1000 * r, **train_kwargs)
        kept, tot = _kept_total(m, hidden_layers(m))
        val_acc = evaluate(m, splits.x_val, splits.y_val)
        test_acc = evaluate(m, splits.x_test, splits.y_test)
        rows.append(_row(model_name, "lottery", f, seed, kept, tot, val_acc, test_acc, time.perf_counter() - t1,
                         round=r, seconds_per_epoch=hist["seconds_per_epoch"]))
        if log:
            log(f"{model_name} lottery round {r}: {100 * f:g}% remaining ({kept}/{tot}), val acc {val_acc:.4f}, "
                f"test acc {test_acc:.4f}, {time.perf_counter() - t1:.1f}s")
    return rows
