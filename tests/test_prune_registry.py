"""The pruning score registry: one registered function reaches prune_model,
LotteryTicket, the experiment's sweep and its report."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import mamext.prune as mp
from mamext.experiment import sweep
from mamext.experiment.data import Splits
from mamext.experiment.models import build_mlp
from mamext.experiment.report import summarize
from mamext.nn import MAMLinear


def _mixed(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(MAMLinear(6, 8), nn.ReLU(), nn.Linear(8, 7), nn.Tanh(), MAMLinear(7, 4))


def _position_scores(model, layers, *, data=None, loss_fn=None):
    """Score = flat position: the first connections of each layer go first."""
    return {name: torch.arange(m.weight.numel(), dtype=torch.float32).view(m.weight.shape)
            for name, m in layers.items()}


@pytest.fixture
def position_score():
    name = "test_position"
    mp.register_score(name)(_position_scores)
    yield name
    mp.unregister_score(name)
    assert name not in mp.score_names()
    assert f"{name}-global" not in sweep.CRITERIA


def _first_k_mask(shape, k):
    mask = torch.zeros(shape).flatten()
    mask[mask.numel() - k:] = 1
    return mask.view(shape)


def test_builtin_scores_registered_in_order():
    assert mp.score_names()[:3] == ("magnitude", "gradient", "selection")
    assert mp.get_score("selection").layer_kinds == (MAMLinear,)
    assert mp.get_score("gradient").needs_data and mp.get_score("gradient").needs_loss
    assert not mp.get_score("magnitude").needs_data


def test_registered_score_drives_prune_model(position_score):
    assert mp.score_names()[-1] == position_score
    model = _mixed()
    mp.prune_model(model, 0.5, score=position_score, scope="layer")
    for n in ("0", "2", "4"):
        m = model.get_submodule(n)
        assert torch.equal(m.weight_mask, _first_k_mask(m.weight.shape, round(0.5 * m.weight.numel())))
    scores = mp.compute_scores(_mixed(), position_score, layers=["2"])
    assert list(scores) == ["2"] and scores["2"].shape == (7, 8)


def test_registered_score_drives_lottery_ticket(position_score):
    model = _mixed()
    ticket = mp.LotteryTicket(model, rate=0.5, score=position_score, scope="layer")
    ticket.prune()
    ticket.prune()
    for n in ("0", "2", "4"):
        m = model.get_submodule(n)
        assert torch.equal(m.weight_mask, _first_k_mask(m.weight.shape, round(0.25 * m.weight.numel())))


def _splits(n=60, features=10, classes=3):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, features, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return Splits(x, y, x, y, x, y, classes, "toy", (features,))


def test_registered_score_reaches_sweep_and_report(position_score):
    crit = f"{position_score}-layer"
    assert {f"{position_score}-global", crit} <= set(sweep.CRITERIA)
    assert sweep.CRITERIA[crit] == (position_score, "layer")
    assert list(sweep.CRITERIA)[:2] == ["magnitude-global", "magnitude-layer"]
    splits = _splits()
    model = build_mlp("mac", 10, 3, hidden=(8, 6))
    data = sweep.score_loader(splits.x_train, splits.y_train, 20, batch_size=10)
    pruned, (kept, total) = sweep.prune_copy(model, 0.5, crit, data)
    assert total == 10 * 8 + 8 * 6 and kept == 40 + 24
    assert torch.equal(pruned.fc1.weight_mask, _first_k_mask((8, 10), 40))
    rows = sweep.one_shot_sweep(model, "mac", splits, ["magnitude-global", crit], (1.0, 0.5), data, seed=0)
    assert {r["criterion"] for r in rows} == {"magnitude-global", crit}
    assert any(e["criterion"] == crit for e in summarize(rows))


def test_layer_kinds_restrict_default_layers_and_sweep():
    name = "test_linear_only"
    mp.register_score(name, layer_kinds=(nn.Linear,))(_position_scores)
    try:
        model = _mixed()
        mp.prune_model(model, 0.5, score=name)
        assert hasattr(model[2], "weight_mask") and not hasattr(model[0], "weight_mask")
        with pytest.raises(ValueError, match=f"'{name}' score applies only to Linear"):
            mp.prune_model(_mixed(), 0.5, score=name, layers=["0"])
        assert sweep.criterion_applies(f"{name}-global", build_mlp("mac", 4, 2, hidden=(3,)))
        assert not sweep.criterion_applies(f"{name}-global", build_mlp("mam", 4, 2, hidden=(3,)))
    finally:
        mp.unregister_score(name)


def test_needs_data_and_loss_checked_before_the_score_runs():
    calls = []
    name = "test_needs_data"

    @mp.register_score(name, needs_data=True, needs_loss=True)
    def scores(model, layers, *, data=None, loss_fn=None):
        calls.append(1)
        return _position_scores(model, layers)

    try:
        with pytest.raises(ValueError, match="needs data"):
            mp.prune_model(_mixed(), 0.5, score=name)
        with pytest.raises(ValueError, match="empty"):
            mp.prune_model(_mixed(), 0.5, score=name, data=[], loss_fn=F.cross_entropy)
        with pytest.raises(ValueError, match="needs loss_fn"):
            mp.prune_model(_mixed(), 0.5, score=name, data=[torch.zeros(1, 6)])
        assert calls == []
        mp.prune_model(_mixed(), 0.5, score=name, data=[torch.zeros(1, 6)], loss_fn=F.cross_entropy)
        assert calls == [1]
    finally:
        mp.unregister_score(name)


def test_score_results_are_checked():
    name = "test_bad_result"

    @mp.register_score(name)
    def scores(model, layers, *, data=None, loss_fn=None):
        return {n: torch.zeros(3) for n in layers}

    try:
        with pytest.raises(ValueError, match=f"'{name}' score for layer '0' must be a tensor of shape"):
            mp.prune_model(_mixed(), 0.5, score=name)
    finally:
        mp.unregister_score(name)


def test_register_errors():
    with pytest.raises(ValueError, match="already registered"):
        mp.register_score("magnitude")
    with pytest.raises(ValueError, match="identifier"):
        mp.register_score("my-score")
    with pytest.raises(TypeError, match="layer_kinds"):
        mp.register_score("test_kinds", layer_kinds=(int,))
    with pytest.raises(ValueError, match="no score named"):
        mp.unregister_score("test_never_registered")
    with pytest.raises(ValueError, match="score must be one of"):
        mp.prune_model(_mixed(), 0.5, score="test_never_registered")
    assert "test_kinds" not in mp.score_names()
