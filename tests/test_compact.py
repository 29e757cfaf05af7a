"""mamext.compact: the compacted network computes exactly what the original computes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

from mamext import sparse
from mamext.compact import CompactionReport, compact
from mamext.nn import MAMLinear
from mamext.quant import pack_integer


def _pruned(seed: int, amounts=(0.99, 0.995, 0.9, 0.8)):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Flatten(), MAMLinear(64, 128), nn.ReLU(), MAMLinear(128, 64), nn.Dropout(0.1), nn.ReLU(),
                      nn.Linear(64, 32), nn.ReLU(), nn.Sequential(MAMLinear(32, 10), nn.Identity()))
    layers = [m[1], m[3], m[6], m[8][0]]
    for layer, amount in zip(layers, amounts):
        torch_prune.l1_unstructured(layer, "weight", amount=amount)
    with torch.no_grad():
        for layer in layers:
            layer.bias.uniform_(-0.5, 0.5)   # dead neurons with positive and negative constants
    return m.eval()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_integer_compaction_is_bit_exact(seed):
    m = _pruned(seed)
    x = torch.randn(200, 1, 8, 8)
    q = pack_integer(m, [x])
    small, report = compact(q)
    codes = torch.cat([q.quantize_input(x).reshape(200, 64), torch.randint(-128, 128, (300, 64), dtype=torch.int8),
                       torch.full((1, 64), 127, dtype=torch.int8), torch.full((1, 64), -128, dtype=torch.int8)])
    assert torch.equal(small.forward_int8(codes), q.forward_int8(codes))
    assert report.neurons_removed > 0 and report.folded_constants > 0
    linear = [layer for layer in small.layers if hasattr(layer, "counts")]
    assert [layer.out_features for layer in linear] == report.neurons_after
    assert [layer.kept for layer in linear] == report.kept_after
    assert report.neurons_after[-1] == 10                         # outputs are never removed
    assert linear[0].in_features == 64                            # nor inputs
    assert small.input_scale == q.input_scale and small.output_zero_point == q.output_zero_point
    again, second = compact(small)                                # a fixed point: nothing left to remove
    assert second.neurons_removed == 0 and torch.equal(again.forward_int8(codes), q.forward_int8(codes))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float_compaction_is_exact(seed):
    m = _pruned(seed)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    small, report = compact(m)
    assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())   # the model is unchanged
    assert report.neurons_removed > 0
    x = torch.randn(300, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(small(x), m(x))
        assert torch.equal(sparse.pack(small)(x), sparse.pack(m)(x))   # packed sums: same order
    names = [(name, type(module).__name__) for name, module in small.named_modules()]
    assert names == [(name, type(module).__name__) for name, module in m.named_modules()]   # same structure
    assert small[1].weight.shape[0] == report.neurons_after[0] < 128
    assert not hasattr(small[1], "weight_mask") and not small.training


def _layers(w1, b1, w2, b2, second_mam):
    first = nn.Linear(w1.shape[1], w1.shape[0])
    second = (MAMLinear if second_mam else nn.Linear)(w2.shape[1], w2.shape[0])
    with torch.no_grad():
        first.weight.copy_(w1), first.bias.copy_(b1), second.weight.copy_(w2), second.bias.copy_(b2)
    return nn.Sequential(first, nn.ReLU(), second).eval()


def test_float_mam_keeps_a_zero_candidate():
    # neuron 1 of the first layer is read by nobody, but column 1 is the only zero of the second layer's row 0
    w1 = torch.tensor([[1.0, 2.0], [0.5, -1.0], [0.0, 0.0]])
    w2 = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]])
    m = _layers(w1, torch.tensor([0.1, 0.2, -0.3]), w2, torch.zeros(2), second_mam=True)
    small, report = compact(m)
    # dead neuron 2 (constant relu(-0.3) = 0) and unread neuron 1 are both zero candidates of row 0:
    # one of them must stay
    assert report.neurons_after[0] == 2
    x = torch.randn(100, 2).abs()        # positive products: the zero candidate is the row's minimum
    with torch.no_grad():
        assert torch.equal(small(x), m(x))


def test_float_mac_keeps_a_nonzero_constant_and_integer_folds_it():
    w1 = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    w2 = torch.tensor([[1.0, 0.7], [0.3, -2.0]])
    m = _layers(w1, torch.tensor([0.1, 0.9]), w2, torch.tensor([0.2, 0.1]), second_mam=False)
    small, report = compact(m)
    assert report.neurons_after == [2, 2] and report.dead_neurons_kept[0] == [1]
    q = pack_integer(m, [torch.randn(50, 2)])
    small_q, report_q = compact(q)
    assert report_q.neurons_after == [1, 2] and report_q.folded_constants == 2
    codes = torch.randint(-128, 128, (200, 2), dtype=torch.int8)
    assert torch.equal(small_q.forward_int8(codes), q.forward_int8(codes))


def test_integer_mam_keeps_nonzero_constant_candidate():
    w1 = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    w2 = torch.tensor([[1.0, 0.7], [0.3, -2.0]])
    m = _layers(w1, torch.tensor([0.1, 0.9]), w2, torch.tensor([0.2, 0.1]), second_mam=True)
    q = pack_integer(m, [torch.randn(50, 2)])
    small, report = compact(q)
    assert report.neurons_removed == 0 and report.dead_neurons_kept[0] == [1]


def test_zero_constant_becomes_the_zero_candidate():
    # the second layer's row 0 reads both neurons (no zero candidate); neuron 1 is dead with constant 0:
    # removing it must leave row 0 with the zero candidate (candidate_width stays 2)
    w1 = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    w2 = torch.tensor([[1.0, 0.7], [0.3, -2.0]])
    m = _layers(w1, torch.tensor([0.1, -0.9]), w2, torch.tensor([0.2, 0.1]), second_mam=True)
    q = pack_integer(m, [torch.randn(50, 2)])
    small, report = compact(q)
    assert report.neurons_after == [1, 2]
    second = small.layers[1]
    assert second.in_features == 1 and second.candidate_width == 2
    codes = torch.randint(-128, 128, (300, 2), dtype=torch.int8)
    assert torch.equal(small.forward_int8(codes), q.forward_int8(codes))


def test_flatten_stops_compaction_and_report_text():
    torch.manual_seed(0)
    m = nn.Sequential(MAMLinear(8, 6), nn.Flatten(), MAMLinear(6, 3)).eval()
    with torch.no_grad():
        m[2].weight[:, 0] = 0                  # neuron 0 is unread, but a Flatten sits in between
    small, report = compact(m)
    assert report.neurons_removed == 0
    assert isinstance(report, CompactionReport) and "removed 0 neurons" in str(report)


def test_errors():
    with pytest.raises(TypeError, match="nn.Module"):
        compact(None)
    blended = MAMLinear(4, 2)
    blended.set_beta(0.5)
    with pytest.raises(ValueError, match="beta"):
        compact(nn.Sequential(blended))
    with pytest.raises(ValueError, match="packed as int8"):
        compact(sparse.pack(nn.Sequential(nn.Linear(4, 2)), torch.int8))
    with pytest.raises(ValueError, match="unsupported module"):
        compact(nn.Sequential(nn.Conv3d(1, 1, 1)))


@pytest.mark.parametrize("integer", [False, True])
def test_a_layer_keeps_one_neuron(integer):
    # nothing of the first layer is read: one neuron stays (C has no empty layers)
    w1 = torch.tensor([[1.0, 2.0], [0.5, -1.0], [0.0, 0.0]])
    w2 = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    m = _layers(w1, torch.tensor([0.1, 0.2, 0.3]), w2, torch.tensor([0.2, -0.1]), second_mam=False)
    x = torch.randn(20, 2)
    model = pack_integer(m, [x]) if integer else m
    small, report = compact(model)
    assert report.neurons_after == [1, 2]
    if integer:
        codes = torch.randint(-128, 128, (50, 2), dtype=torch.int8)
        assert torch.equal(small.forward_int8(codes), model.forward_int8(codes))
    else:
        with torch.no_grad():
            assert torch.equal(small(x), m(x))


@pytest.mark.parametrize("second_mam", [False, True], ids=["mac", "mam"])
@pytest.mark.parametrize("integer", [False, True], ids=["float", "integer"])
def test_fully_pruned_layers_still_export(tmp_path, integer, second_mam):
    # every connection of both layers pruned: each layer keeps one neuron, and the C export accepts the result
    from mamext.export import to_c

    m = _layers(torch.zeros(3, 2), torch.tensor([0.1, -0.2, 0.3]), torch.zeros(2, 3), torch.tensor([0.2, -0.1]),
                second_mam=second_mam)
    x = torch.randn(20, 2)
    model = pack_integer(m, [x]) if integer else m
    small, report = compact(model)
    assert report.neurons_after == [1, 2] and report.kept_after == [0, 0]
    to_c(small, tmp_path, (2,), torch.int8 if integer else torch.float32)
    if integer:
        codes = torch.randint(-128, 128, (50, 2), dtype=torch.int8)
        assert torch.equal(small.forward_int8(codes), model.forward_int8(codes))
    else:
        with torch.no_grad():
            assert torch.equal(small(x), m(x))
