"""Pruning leaves what it does not own alone: model modes and buffers while
scoring, masks through finalize, the lottery ticket after a failed round; and
refuses empty inputs instead of silently degrading."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import mamext.prune as mp
from mamext.nn import MAMLinear


class TrainMirror(nn.Module):
    """Keeps ``mirror`` equal to its mode through its own ``train``."""

    def __init__(self):
        super().__init__()
        self.mirror = True

    def train(self, mode=True):
        self.mirror = mode
        return super().train(mode)

    def forward(self, x):
        return x


def _bn_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(MAMLinear(6, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), TrainMirror(), nn.ReLU(),
                         MAMLinear(8, 5), nn.ReLU(), nn.Linear(5, 3))


def _data(n_batches=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(10, 6, generator=g) * 3 + 2, torch.randint(0, 3, (10,), generator=g))
            for _ in range(n_batches)]


def _snapshot(model):
    return {"state": {k: v.clone() for k, v in model.state_dict().items()},
            "modes": [m.training for m in model.modules()],
            "requires_grad": {id(p): p.requires_grad for p in model.parameters()},
            "grads": {id(p): p.grad for p in model.parameters()}}


def _assert_unchanged(model, before):
    after = _snapshot(model)
    assert after["modes"] == before["modes"]
    assert after["requires_grad"] == before["requires_grad"]
    assert all(after["grads"][k] is before["grads"][k] for k in before["grads"])
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), key
    assert model[3].mirror == model[3].training


def _prepared_model():
    """Train mode on the root, eval on the BatchNorm, a frozen bias, one existing .grad."""
    model = _bn_model().train()
    model[1].eval()
    model[7].bias.requires_grad_(False)
    model[5].weight.grad = torch.ones_like(model[5].weight)
    return model


@pytest.mark.parametrize("score", ["gradient", "selection"])
def test_scoring_leaves_model_state_and_modes_as_found(score):
    model = _prepared_model()
    model[1].train()  # the BatchNorm would update its running statistics in train mode
    before = _snapshot(model)
    kwargs = {"loss_fn": F.cross_entropy} if score == "gradient" else {}
    mp.prune_model(model, 0.5, score=score, layers=["0", "5"], data=_data(), **kwargs)
    del before["state"]["0.weight"], before["state"]["5.weight"]  # replaced by weight_orig + mask
    _assert_unchanged(model, before)


def test_selection_counter_and_scores_leave_state_as_found():
    model = _prepared_model()
    before = _snapshot(model)
    mp.selection(model, _data())
    mp.gradient(model, _data(), F.cross_entropy)
    _assert_unchanged(model, before)


def test_gradient_scores_are_deterministic_in_eval_mode():
    model = _bn_model().train()
    first = mp.gradient(model, _data(), F.cross_entropy)
    second = mp.gradient(model, _data(), F.cross_entropy)
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0)
    ref = _bn_model().eval()
    for x, y in _data():
        F.cross_entropy(ref(x), y).backward()
    torch.testing.assert_close(first["0"], (ref[0].weight * ref[0].weight.grad).abs())


@pytest.mark.parametrize("data", [[], (), iter([]), [(torch.zeros(0, 6), torch.zeros(0, dtype=torch.long))] * 2],
                         ids=["list", "tuple", "generator", "empty-batches"])
@pytest.mark.parametrize("score", ["selection", "gradient"])
def test_empty_data_is_refused(score, data):
    model = _bn_model()
    with pytest.raises(ValueError, match="empty|no batch"):
        mp.prune_model(model, 0.5, score=score, data=data, loss_fn=F.cross_entropy)
    assert not any(hasattr(m, "weight_mask") for m in model.modules())
    with pytest.raises(ValueError, match="empty|no batch"):
        getattr(mp, score)(model, data, **({"loss_fn": F.cross_entropy} if score == "gradient" else {}))


def test_selection_default_layers_are_the_mam_layers():
    model = _bn_model()
    mp.prune_model(model, 0.5, score="selection", data=_data())
    assert hasattr(model[0], "weight_mask") and hasattr(model[5], "weight_mask")
    assert not hasattr(model[7], "weight_mask")
    rep = mp.remaining(model, ["0", "5"])
    assert rep["kept"] == round(0.5 * rep["total"])
    ticket = mp.LotteryTicket(_bn_model(), rate=0.5, score="selection", scope="layer")
    assert len(ticket.layers) == 2 and all(isinstance(m, MAMLinear) for m in ticket.layers)


def test_lottery_rewind_after_finalize_keeps_the_model_pruned():
    model = _bn_model()
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    ticket = mp.LotteryTicket(model, rate=0.5)
    ticket.prune()
    masks = {n: model.get_submodule(n).weight_mask.clone() for n in ("0", "5", "7")}
    mp.finalize(model)
    ticket.rewind()
    assert mp.remaining(model)["fraction"] == pytest.approx(0.5, abs=0.01)
    for n, mask in masks.items():
        torch.testing.assert_close(model.get_submodule(n).weight, init[f"{n}.weight"] * mask)
    rep = ticket.prune()  # continues from the kept connections
    assert rep["fraction"] == pytest.approx(0.25, abs=0.01)
    for n, mask in masks.items():
        assert torch.all(model.get_submodule(n).weight_mask[mask == 0] == 0)


def test_failed_lottery_round_leaves_the_ticket_unchanged():
    model = _bn_model()
    ticket = mp.LotteryTicket(model, rate=0.5, score="gradient")
    with pytest.raises(ValueError, match="needs data"):
        ticket.prune()
    assert ticket.fraction == 1.0 and ticket.round == 0
    rep = ticket.prune(_data(), F.cross_entropy)
    assert rep["fraction"] == pytest.approx(0.5, abs=0.01)


def test_layers_without_weights_are_left_alone():
    model = nn.Sequential(MAMLinear(4, 6), MAMLinear(6, 0), nn.Linear(0, 3))
    mp.prune_model(model, 0.5, scope="layer")
    assert not hasattr(model[1], "weight_mask") and not hasattr(model[2], "weight_mask")
    assert mp.remaining(model, ["0"])["kept"] == 12
    with mp.SelectionCounter(model) as counter:
        model(torch.randn(5, 4))
    assert counter.samples == {"0": 5, "1": 5} and counter.counts["1"].shape == (0, 6)
