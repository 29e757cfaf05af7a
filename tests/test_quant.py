"""mamext.quant: integer-only int8 networks, checked against plain Python integer arithmetic."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

from mamext import sparse
from mamext.nn import MAMLinear
from mamext.quant import IntClamp, IntegerNetwork, IntLinear, pack_integer, quantize_multiplier, requantize


# --------------------------------------------------------------------------- fixed point

def test_requantize_equals_python_integers():
    rng = random.Random(0)
    accs, mults, shifts = [], [], []
    for _ in range(2000):
        accs.append(rng.choice([rng.randint(-2 ** 31, 2 ** 31 - 1), rng.randint(-70000, 70000), 0, -1, 1]))
        mults.append(rng.randint(2 ** 30, 2 ** 31 - 1))
        shifts.append(rng.randint(1, 62))
    got = requantize(torch.tensor(accs), torch.tensor(mults), torch.tensor(shifts)).tolist()
    want = [(a * m + (1 << (r - 1))) >> r for a, m, r in zip(accs, mults, shifts)]   # Python >>: floor
    assert got == want


@pytest.mark.parametrize("value", [1.0, 0.5, 0.75, 1e-3, 3.1e-7, 123.456, 2.0 ** -31, 1 - 2.0 ** -40, 0.999999999])
def test_quantize_multiplier_precision(value):
    m, r = quantize_multiplier(value)
    assert 2 ** 30 <= m < 2 ** 31 and 1 <= r <= 62
    assert abs(m * 2.0 ** -r - value) <= value * 2.0 ** -31


def test_quantize_multiplier_edges():
    m, r = quantize_multiplier(2.0 ** -70)           # negligible: rounds to 0 at the largest shift
    assert (m, r) == (0, 62)
    m, r = quantize_multiplier(2.0 ** -40 * 1.3)     # below 2**-31: fewer bits at the largest shift
    assert r == 62 and m == round(1.3 * 2 ** 22)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="multiplier"):
            quantize_multiplier(bad)
    with pytest.raises(ValueError, match="too large"):
        quantize_multiplier(2.0 ** 31)


# --------------------------------------------------------------------------- one integer layer

def reference_layer(layer: IntLinear, codes):
    """The integer layer in plain Python ints, straight from the definition."""
    w = layer.dense_codes().tolist()
    out = []
    for row in codes:
        y = []
        for n in range(layer.out_features):
            products = [w[n][k] * (row[k] - layer.input_zero_point) for k in range(layer.in_features) if w[n][k]]
            if layer.mam:
                candidates = products + ([0] if len(products) < layer.candidate_width else [])
                acc = max(candidates) + min(candidates)
            else:
                acc = sum(products)
            acc += int(layer.bias[n])
            m, r = int(layer.multiplier[n]), int(layer.right_shift[n])
            v = ((acc * m + (1 << (r - 1))) >> r) + layer.output_zero_point
            y.append(min(max(v, layer.low), layer.high))
        out.append(y)
    return out


def adversarial_layer(mam: bool, relu: bool = False) -> IntLinear:
    """Rows: full all-negative, pruned all-negative, empty, ties, saturating, mixed."""
    w = torch.tensor([[-3, -5, -7, -1, -2, -9],
                      [-3, 0, -7, 0, -2, 0],
                      [0, 0, 0, 0, 0, 0],
                      [4, 4, 0, 4, 4, 0],
                      [127, 127, 127, 127, 127, 127],
                      [-127, 0, 0, 0, 0, 127],
                      [1, -1, 2, -2, 3, -3]], dtype=torch.int64)
    keep = w != 0
    N = w.shape[0]
    bias = torch.tensor([5, -7, 1000, 0, 2 ** 20, -3, 11])
    mult = torch.tensor([quantize_multiplier(s)[0] for s in (0.01, 0.02, 0.003, 0.5, 0.9, 0.07, 1.5)])
    shift = torch.tensor([quantize_multiplier(s)[1] for s in (0.01, 0.02, 0.003, 0.5, 0.9, 0.07, 1.5)])
    return IntLinear(6, N, w[keep], keep.nonzero()[:, 1], keep.sum(1), bias, mult, shift, mam=mam,
                     input_zero_point=-5, output_zero_point=3, low=3 if relu else -128)


@pytest.mark.parametrize("mam", [True, False])
@pytest.mark.parametrize("relu", [True, False])
def test_int_layer_equals_python_reference(mam, relu):
    layer = adversarial_layer(mam, relu)
    rng = random.Random(1)
    codes = [[rng.randint(-128, 127) for _ in range(6)] for _ in range(200)]
    codes += [[127] * 6, [-128] * 6, [-5] * 6, [0] * 6, [127, -128] * 3]
    got = layer(torch.tensor(codes, dtype=torch.int8))
    assert got.dtype == torch.int8
    assert got.tolist() == reference_layer(layer, codes)
    assert (got.to(torch.int64) == 127).any() and (got.to(torch.int64) == layer.low).any()   # saturation happens


def test_int_layer_zero_candidate_follows_candidate_width():
    layer = adversarial_layer(True)
    wide = IntLinear(6, layer.out_features, layer.values, layer.indices, layer.counts, layer.bias, layer.multiplier,
                     layer.right_shift, mam=True, input_zero_point=-5, output_zero_point=3, candidate_width=7)
    codes = torch.full((1, 6), 100, dtype=torch.int8)
    # row 0 keeps all 6 inputs: with candidate_width 7 it also has the zero candidate (max becomes 0)
    assert layer(codes)[0, 0] != wide(codes)[0, 0]
    assert wide(codes).tolist() == reference_layer(wide, codes.tolist())


def test_int_layer_errors():
    layer = adversarial_layer(True)
    with pytest.raises(TypeError, match="int8"):
        layer(torch.zeros(2, 6))
    with pytest.raises(ValueError, match="shape"):
        layer(torch.zeros(2, 5, dtype=torch.int8))
    with pytest.raises(ValueError, match="indices"):
        IntLinear(3, 1, torch.tensor([1]), torch.tensor([3]), torch.tensor([1]), torch.zeros(1),
                  torch.tensor([2 ** 30]), torch.tensor([31]), mam=True, input_zero_point=0, output_zero_point=0)
    with pytest.raises(ValueError, match="counts"):
        IntLinear(3, 2, torch.tensor([1]), torch.tensor([0]), torch.tensor([1, 1]), torch.zeros(2),
                  torch.tensor([2 ** 30] * 2), torch.tensor([31] * 2), mam=True, input_zero_point=0,
                  output_zero_point=0)


# --------------------------------------------------------------------------- pack_integer

def pruned_model(seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Flatten(), MAMLinear(64, 48), nn.ReLU(), nn.Dropout(0.2), nn.Linear(48, 40), nn.ReLU(),
                      nn.Sequential(MAMLinear(40, 30), nn.Identity()), MAMLinear(30, 10))
    torch_prune.l1_unstructured(m[1], "weight", amount=0.9)
    with torch.no_grad():
        m[4].weight[m[4].weight.abs() < 0.05] = 0
        m[1].weight_orig[5] = 0.0      # an empty neuron
    return m.eval()


def test_pack_integer_is_close_to_float_and_argmax_agrees():
    m = pruned_model()
    x = torch.randn(400, 1, 8, 8)
    q = pack_integer(m, [(x[:200], None), (x[200:], None)])
    assert isinstance(q, IntegerNetwork)
    with torch.no_grad():
        f, g = m(x), q(x)
    assert g.dtype == torch.float32 and g.shape == f.shape
    assert float((f - g).abs().max()) < 12 * q.output_scale      # a few output steps of rounding
    assert float((f.argmax(1) == g.argmax(1)).float().mean()) > 0.9
    # the int8 output's argmax is the dequantised output's argmax
    codes = q.forward_int8(q.quantize_input(x))
    assert torch.equal(codes.argmax(1), g.argmax(1))
    assert torch.equal(q(q.quantize_input(x)), g)                # int8 codes in: same output


def test_pack_integer_layers_and_zero_points():
    q = pack_integer(pruned_model(), [torch.randn(100, 1, 8, 8)])
    kinds = [type(layer).__name__ for layer in q.layers]
    assert kinds == ["Flatten", "IntLinear", "IntLinear", "IntLinear", "IntLinear"]
    first, second = q.layers[1], q.layers[2]
    assert first.mam and not second.mam
    assert first.low == first.output_zero_point                  # fused ReLU: clamp at the zero point
    assert second.input_zero_point == first.output_zero_point
    assert q.layers[4].low == -128 and q.output_zero_point == q.layers[4].output_zero_point
    assert int(first.counts[5]) == 0                             # the empty neuron stays empty


def test_pack_integer_leaves_model_unchanged_and_accepts_packed():
    m = pruned_model()
    m.train()
    m[1].eval()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.randn(50, 1, 8, 8)
    q = pack_integer(m, [x])
    assert m.training and not m[1].training and m[4].training
    assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())
    q_packed = pack_integer(sparse.pack(m), [x])                 # float-packed layers: the same network
    assert torch.equal(q_packed.forward_int8(q.quantize_input(x)), q.forward_int8(q.quantize_input(x)))


def test_standalone_relu_is_a_clamp():
    torch.manual_seed(3)
    m = nn.Sequential(nn.ReLU(), MAMLinear(8, 4), nn.Flatten(), nn.ReLU()).eval()
    x = torch.randn(30, 8)
    q = pack_integer(m, [x])
    assert [type(layer).__name__ for layer in q.layers] == ["IntClamp", "IntLinear", "Flatten", "IntClamp"]
    codes = q.quantize_input(x)
    assert torch.equal(q.layers[0](codes), codes.clamp(min=q.input_zero_point))
    with torch.no_grad():
        assert float((q(x) - m(x)).abs().max()) < 4 * q.output_scale


def test_pack_integer_errors():
    m = pruned_model()
    with pytest.raises(ValueError, match="calibration is empty"):
        pack_integer(m, [])
    with pytest.raises(TypeError, match="calibration item 0"):
        pack_integer(m, [torch.zeros(2, 64, dtype=torch.int64)])
    with pytest.raises(ValueError, match="unsupported module '1'.*MaxPool1d"):
        pack_integer(nn.Sequential(nn.Flatten(), nn.MaxPool1d(1)), [torch.zeros(1, 1, 4)])
    blended = MAMLinear(4, 2)
    blended.set_beta(0.5)
    with pytest.raises(ValueError, match="beta"):
        pack_integer(blended, [torch.zeros(1, 4)])
    with pytest.raises(ValueError, match="packed as int8"):
        pack_integer(sparse.pack(nn.Linear(4, 2), torch.int8), [torch.zeros(1, 4)])
    with pytest.raises(ValueError, match="non-finite"):
        pack_integer(nn.Linear(4, 2), [torch.full((1, 4), math.inf)])
    with pytest.raises(TypeError, match="nn.Module"):
        pack_integer("model", [torch.zeros(1, 4)])
    q = pack_integer(nn.Linear(4, 2), [torch.randn(5, 4)])
    with pytest.raises(ValueError, match="NaN"):
        q(torch.full((1, 4), math.nan))
    with pytest.raises(TypeError, match="int8"):
        q.forward_int8(torch.zeros(1, 4))


def test_int_clamp_repr_and_save_load(tmp_path):
    q = pack_integer(pruned_model(), [torch.randn(20, 1, 8, 8)])
    torch.save(q, tmp_path / "q.pt")
    again = torch.load(tmp_path / "q.pt", weights_only=False)
    codes = torch.randint(-128, 128, (10, 64), dtype=torch.int8)
    assert torch.equal(again.forward_int8(codes), q.forward_int8(codes))
    assert "MAM" in repr(q) and "zero_point=2" in repr(IntClamp(2))


def test_forward_in_chunks_equals_one_pass(monkeypatch):
    import mamext.quant._layers as layers_module
    layer = adversarial_layer(True)
    codes = torch.randint(-128, 128, (37, 6), dtype=torch.int8)
    whole = layer(codes)
    monkeypatch.setattr(layers_module, "_CHUNK_ELEMENTS", 50)     # 2 rows of 22 products per chunk
    assert torch.equal(layer(codes), whole)
    assert layer(codes[:0]).shape == (0, 7)


def test_bias_clamp_and_infinite_inputs():
    # a bias far beyond int32 at the accumulator's scale is clamped so that acc + bias fits int32
    layer = IntLinear.from_float(torch.tensor([[1.0, 0.0]]), torch.tensor([1e6]), mam=True, input_scale=1e-6,
                                 input_zero_point=0, output_scale=1e-8, output_zero_point=0, relu=False)
    assert int(layer.bias[0]) == 2 ** 31 - 1 - 2 * 127 * 255
    codes = [[127, 5], [-128, 0]]
    assert layer(torch.tensor(codes, dtype=torch.int8)).tolist() == reference_layer(layer, codes) == [[127], [127]]
    q = pack_integer(nn.Linear(2, 1), [torch.randn(10, 2)])
    codes = q.quantize_input(torch.tensor([[math.inf, -math.inf]]))
    assert codes.tolist() == [[127, -128]]
