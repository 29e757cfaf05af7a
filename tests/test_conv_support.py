"""MAM convolutions around the layer: convert, VanishingContribution, pruning, SelectionCounter."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

import mamext
import mamext.prune as mp
from mamext.nn import MAMConv1d, MAMConv2d, MAMLinear, VanishingContribution
from mamext.reference import mam_conv2d_reference


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=2),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 8), nn.ReLU(), nn.Linear(8, 3))


def _data(batches=2):
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(5, 1, 6, 6, generator=gen), torch.randint(0, 3, (5,), generator=gen))
            for _ in range(batches)]


# ------------------------------------------------------------------ convert

def test_convert_leaves_convolutions_alone_by_default():
    model = mamext.convert(_cnn())
    assert [type(m) for m in model] == [nn.Conv2d, nn.ReLU, nn.Conv2d, nn.Flatten, MAMLinear, nn.ReLU, MAMLinear]


def test_convert_converts_convolutions_named_in_types():
    model = _cnn()
    model[0].padding_mode = "reflect"
    weight, bias = model[2].weight, model[2].bias
    x = torch.randn(2, 1, 6, 6)
    mamext.convert(model, types=(nn.Linear, nn.Conv2d))
    assert [type(m) for m in model][:3] == [MAMConv2d, nn.ReLU, MAMConv2d]
    assert model[2].weight is weight and model[2].bias is bias and model[2].groups == 2
    assert model[0].padding_mode == "reflect" and float(model[0].beta) == 0.0
    padded = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    assert torch.equal(model[0](x), mam_conv2d_reference(padded, model[0].weight, model[0].bias))
    only_conv = mamext.convert(_cnn(), types=nn.Conv2d)
    assert type(only_conv[0]) is MAMConv2d and type(only_conv[4]) is nn.Linear
    assert type(mamext.convert(nn.Conv1d(2, 3, 3), types=nn.Conv1d)) is MAMConv1d


def test_convert_keeps_a_pruned_convolutions_mask():
    conv = nn.Conv2d(2, 3, 3)
    torch_prune.l1_unstructured(conv, "weight", amount=0.5)
    mam = mamext.convert(conv, types=nn.Conv2d)
    assert torch.equal(mam.weight_mask, conv.weight_mask) and mam.weight_orig is conv.weight_orig
    x = torch.randn(1, 2, 5, 5)
    assert torch.equal(mam(x), mamext.mam_conv2d(x, conv.weight_orig * conv.weight_mask, conv.bias))


def test_convert_convolution_errors():
    with pytest.raises(ValueError, match=r"selects no nn.Linear.*types=\(nn.Linear, nn.Conv2d\)"):
        mamext.convert(_cnn(), include="0")
    with pytest.raises(TypeError, match="types entries must be among"):
        mamext.convert(_cnn(), types=(nn.Conv3d,))

    class Scaled(nn.Conv2d):
        def forward(self, x):
            return 2 * super().forward(x)

    with pytest.raises(ValueError, match=r"cannot be replaced by a MAMConv2d.*Scaled overrides forward"):
        mamext.convert(nn.Sequential(Scaled(1, 2, 3)), types=nn.Conv2d)
    with pytest.raises(ValueError, match="uninitialized nn.LazyConv2d"):
        mamext.convert(nn.Sequential(nn.LazyConv2d(2, 3)), types=nn.Conv2d)


# ------------------------------------------------------------------ schedule

def test_vanishing_contribution_drives_convolutions():
    model = _cnn()
    mac = model[0](torch.ones(1, 1, 6, 6))
    mamext.convert(model, types=(nn.Linear, nn.Conv2d, nn.Conv1d))
    vc = VanishingContribution(model, steps=2)
    assert len(vc.layers) == 4 and float(model[0].beta) == 1.0
    torch.testing.assert_close(model[0](torch.ones(1, 1, 6, 6)), mac)
    vc.step()
    assert float(model[2].beta) == 0.5
    vc.step()
    assert all(float(m.beta) == 0.0 and not m._mac_active for m in vc.layers)
    assert len(VanishingContribution(nn.Sequential(MAMConv1d(1, 1, 1)), steps=1).layers) == 1


# ------------------------------------------------------------------ pruning

def test_default_layers_exclude_convolutions():
    model = mamext.convert(_cnn(), types=(nn.Linear, nn.Conv2d))
    mp.prune_model(model, 0.5)
    assert not hasattr(model[0], "weight_mask") and hasattr(model[4], "weight_mask")
    assert set(mp.remaining(model)["layers"]) == {"4", "6"}
    assert set(mp.magnitude(_cnn())) == {"4", "6"}


@pytest.mark.parametrize("mam", [False, True])
@pytest.mark.parametrize("score", ["magnitude", "gradient"])
def test_scores_and_pruning_of_named_convolutions(mam, score):
    model = _cnn()
    if mam:
        mamext.convert(model, types=(nn.Linear, nn.Conv2d))
    layers = ["0", "2", "4"]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    data, loss = _data(), nn.functional.cross_entropy
    scores = mp.compute_scores(model, score, layers=layers, data=data, loss_fn=loss)
    assert scores["2"].shape == model[2].weight.shape
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # left as found
    mp.prune_model(model, 0.3, score=score, layers=layers, data=data, loss_fn=loss)
    report = mp.remaining(model, layers=layers)
    assert abs(report["fraction"] - 0.3) < 0.01 and report["layers"]["0"]["total"] == 36
    mp.finalize(model)
    assert "0.weight_mask" not in model.state_dict() and mp.remaining(model, layers)["fraction"] == report["fraction"]


def test_lottery_ticket_on_convolutions():
    model = mamext.convert(_cnn(), types=(nn.Linear, nn.Conv2d))
    ticket = mp.LotteryTicket(model, rate=0.5, layers=["0", "2"])
    ticket.prune()
    ticket.rewind()
    assert mp.remaining(model, ["0", "2"])["fraction"] == pytest.approx(0.5, abs=0.02)
    assert not hasattr(model[4], "weight_mask")


def test_selection_counter_on_mam_convolutions():
    torch.manual_seed(0)
    layer = MAMConv2d(4, 6, 3, stride=2, padding=1, groups=2)
    model = nn.Sequential(layer)
    x = torch.randint(-2, 3, (3, 4, 7, 7)).float()  # ties and padded zeros that win
    with mp.SelectionCounter(model, layers=["0"]) as counter:
        model(x)
        model(x[0])  # an unbatched sample
    _, amax, amin = mam_conv2d_reference(x, layer.weight, layer.bias, 2, 1, 1, 2, return_indices=True)
    amax, amin = torch.cat([amax, amax[:1]]), torch.cat([amin, amin[:1]])
    k = layer.weight[0].numel()
    want_max = nn.functional.one_hot(amax.long(), k).sum((0, 2, 3)).view_as(layer.weight)
    want_min = nn.functional.one_hot(amin.long(), k).sum((0, 2, 3)).view_as(layer.weight)
    both = nn.functional.one_hot(amax.long(), k) * (amax == amin).long().unsqueeze(-1)
    assert torch.equal(counter.max_counts["0"], want_max) and torch.equal(counter.min_counts["0"], want_min)
    assert torch.equal(counter.counts["0"], want_max + want_min - both.sum((0, 2, 3)).view_as(layer.weight))
    assert counter.samples["0"] == 4 * 16


def test_selection_score_on_named_mam_convolutions_only():
    model = mamext.convert(_cnn(), types=(nn.Linear, nn.Conv2d))
    assert set(mp.selection(model, _data())) == {"4", "6"}
    counts = mp.selection(model, _data(), layers=["0", "6"])
    assert counts["0"].shape == model[0].weight.shape and int(counts["0"].sum()) > 0
    with pytest.raises(ValueError, match="applies only to MAMLinear or MAMConv2d or MAMConv1d"):
        mp.selection(_cnn(), _data(), layers=["0"])
