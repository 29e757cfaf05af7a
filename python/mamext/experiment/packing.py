"""Packing checks of ``mamext experiment``: each pruned model packed with
``mamext.sparse.pack`` (float and int8), its accuracy compared with the masked
model and its size reported."""

from __future__ import annotations

import importlib

import torch
from torch import nn

from . import sweep
from .models import hidden_layers
from .train import evaluate

__all__ = ["packing_checks"]

#: Test images per forward call when predicting.
_BATCH = 2000


def _predictions(model, x):
    """Argmax predictions of ``model`` on ``x``, batch by batch."""
    with torch.no_grad():
        return torch.cat([model(x[i:i + _BATCH]).argmax(1) for i in range(0, len(x), _BATCH)])


def _check_fractions(entry):
    """The remaining fractions to pack for one summary entry: 1 % and, when
    below 100 %, the within-1-point operating point; largest first."""
    fracs = {0.01}
    if entry["within_1pt"] and entry["within_1pt"]["fraction"] < 1.0:
        fracs.add(entry["within_1pt"]["fraction"])
    return sorted(fracs, reverse=True)


def _check_one(sparse, model, rec, splits, data):
    """Prune ``model`` to ``rec``'s criterion and fraction, pack it (float and
    int8) and add the accuracies and sizes to ``rec``."""
    pack, stats = sparse.pack, getattr(sparse, "packed_stats", None)
    pm, _ = sweep.prune_copy(model, rec["fraction"], rec["criterion"], data)
    masked = evaluate(pm, splits.x_test, splits.y_test)
    ref_pred = _predictions(pm, splits.x_test)
    x_cpu, y_cpu = splits.x_test.cpu(), splits.y_test.cpu()
    packed = pack(pm)  # returns a packed copy (pruned modules cannot be deep-copied)
    packed = packed if isinstance(packed, nn.Module) else pm
    packed_acc = evaluate(packed, x_cpu, y_cpu)
    pred = _predictions(packed, x_cpu)
    st = stats(packed) if callable(stats) else {}
    # int8 (per-neuron weight scales, per-sample input scales): the accuracy change
    q = pack(pm, dtype=torch.int8)
    rec.update(int8_test_acc=evaluate(q, x_cpu, y_cpu), int8_bytes=(stats(q) if callable(stats) else {}).get("bytes"))
    dense = sum(m.weight.numel() * 4 for m in hidden_layers(model))
    rec.update(masked_test_acc=masked, packed_test_acc=packed_acc, equal=bool(masked == packed_acc),
               prediction_mismatches=int((pred != ref_pred.cpu()).sum()),
               packed_layers=st.get("layers"), packed_bytes=st.get("bytes"),
               dense_bytes=st.get("dense_float32_weight_bytes", dense))


def packing_checks(trained, summary, splits, data, log=None):
    """Where ``mamext.sparse.pack`` exists: pack each trained model pruned by
    each one-shot criterion at its within-1-point operating point (and at
    1 %), check the accuracy and report the size. Returns ``(info, records)``;
    a failing check is a record with an ``error``."""
    try:
        sparse = importlib.import_module("mamext.sparse")
        if not callable(getattr(sparse, "pack", None)):
            raise AttributeError("module 'mamext.sparse' has no function 'pack'")
    except Exception as e:  # noqa: BLE001
        return {"available": False, "reason": f"mamext.sparse.pack unavailable ({type(e).__name__}: {e})"}, []
    out = []
    for entry in summary:
        if entry["criterion"] not in sweep.CRITERIA or entry["model"] not in trained:
            continue
        for f in _check_fractions(entry):
            rec = {"model": entry["model"], "criterion": entry["criterion"], "fraction": f}
            try:
                _check_one(sparse, trained[entry["model"]], rec, splits, data)
            except Exception as ex:  # noqa: BLE001
                rec["error"] = f"{type(ex).__name__}: {ex}"
            out.append(rec)
            if log:
                log(f"packing {rec}")
    return {"available": True}, out
