"""mamext.sparse: int8 packing refuses non-finite weights, packed checkpoints keep their dtype,
and packed models load with torch.load's default weights_only=True."""

import io

import pytest
import torch
from torch import nn

from mamext import sparse
from mamext.nn import MAMLinear


def _pruned_model(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(MAMLinear(12, 8), nn.ReLU(), nn.Linear(8, 4))
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.weight.mul_((torch.rand_like(layer.weight) < 0.6).float())
    return model


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("index", [0, 2])
def test_int8_pack_refuses_non_finite_weights_naming_the_layer(bad, index):
    model = _pruned_model()
    with torch.no_grad():
        model[index].weight[1, 3] = bad
    with pytest.raises(ValueError, match=rf"layer '{index}'.*weight\[1, 3\] = {bad}.*int8"):
        sparse.pack(model, torch.int8)
    packed = sparse.pack(model)  # float packing keeps them exactly
    assert packed[index].values.isnan().any() or packed[index].values.isinf().any()


def test_int8_from_weight_refuses_non_finite_weights():
    w = torch.randn(3, 5)
    w[2, 0] = float("nan")
    with pytest.raises(ValueError, match=r"PackedMAMLinear.from_weight: weight has 1 non-finite"):
        sparse.PackedMAMLinear.from_weight(w, None, torch.int8)


def _state_bytes(module):
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("saved, target", [(torch.int8, torch.float32), (torch.float32, torch.int8)])
def test_state_dict_of_another_packing_dtype_is_refused(saved, target):
    model = _pruned_model(1)
    source, dest = sparse.pack(model, saved), sparse.pack(model, target, pack_dense=True)
    before = {k: v.clone() for k, v in dest.state_dict().items()}
    with pytest.raises(RuntimeError, match=rf"PackedMAMLinear '0' is packed as {target} but 0.values in the "
                                           rf"checkpoint is {saved}"):
        dest.load_state_dict(source.state_dict())
    assert dest[0].dtype == target
    assert all(torch.equal(before[k], v) for k, v in dest.state_dict().items() if k.startswith("0."))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int8])
def test_packed_state_dict_loads_safely_into_a_rebuilt_model(dtype):
    model = _pruned_model(2)
    packed = sparse.pack(model, dtype)
    state = torch.load(_state_bytes(packed))  # weights_only=True
    rebuilt = sparse.load_packed(_pruned_model(3).double() if dtype == torch.float64 else _pruned_model(3), state)
    assert [type(m) for m in rebuilt] == [type(m) for m in packed]
    x = torch.randn(5, 12, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), packed(x))


def test_load_packed_of_a_single_layer_and_bad_model():
    layer = sparse.PackedMAMLinear.from_weight(torch.randn(4, 6) * (torch.rand(4, 6) < 0.5))
    rebuilt = sparse.load_packed(MAMLinear(6, 4), torch.load(_state_bytes(layer)))
    x = torch.randn(2, 6)
    assert isinstance(rebuilt, sparse.PackedMAMLinear) and torch.equal(rebuilt(x), layer(x))
    with pytest.raises(TypeError, match="load_packed: model must be an nn.Module"):
        sparse.load_packed("model", {})


def test_whole_packed_model_loads_with_weights_only():
    packed = sparse.pack(_pruned_model(4), torch.int8)
    buffer = io.BytesIO()
    torch.save(packed[0], buffer)
    buffer.seek(0)
    layer = torch.load(buffer)  # weights_only=True: the packed classes are allowed
    x = torch.randn(3, 12)
    assert torch.equal(layer(x), packed[0](x))
    buffer = io.BytesIO()
    torch.save(packed, buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals([nn.Sequential, nn.ReLU]):
        loaded = torch.load(buffer)
    assert torch.equal(loaded(x), packed(x))


def test_state_dict_of_another_layer_shape_is_refused():
    layer = sparse.PackedMAMLinear.from_weight(torch.randn(4, 6) * (torch.rand(4, 6) < 0.5))
    wider = sparse.PackedMAMLinear.from_weight(torch.randn(5, 6))
    with pytest.raises(RuntimeError, match=r"'<model>' has out_features=4 but offsets in the checkpoint has 6"):
        layer.load_state_dict(wider.state_dict())
    longer = sparse.PackedMAMLinear.from_weight(torch.randn(4, 9))
    with pytest.raises(RuntimeError, match=r"has in_features=6 but indices in the checkpoint reach 8"):
        layer.load_state_dict(longer.state_dict())
    assert layer.out_features == 4 and layer.offsets.numel() == 5
