"""MAMLinear's ``beta`` buffer: every way of writing it takes effect, bad values are refused,
conversions keep it, and the forward never reads it on a device where that costs a sync."""

import contextlib
import copy
import io
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import mamext
from mamext.nn import MAMLinear, modules as mam_modules
from mamext.nn import _beta as beta_mod
from mamext.reference import mam_linear_reference


def _layer(seed=0, **kw):
    torch.manual_seed(seed)
    return MAMLinear(5, 3, **kw)


def _blend(layer, x, beta):
    mac = F.linear(x, layer.weight, layer.bias)
    mam = mam_linear_reference(x, layer.weight, layer.bias)
    return mam if beta == 0 else beta * mac + (1 - beta) * mam


WRITES = {
    "fill_": lambda b: b.fill_(1.0),
    "copy_": lambda b: b.copy_(torch.tensor(0.25)),
    "iadd": lambda b: b.__iadd__(0.5),
    "data": lambda b: b.data.fill_(0.75),
}


@pytest.mark.parametrize("write", list(WRITES))
def test_in_place_writes_take_effect(write):
    layer, x = _layer(), torch.randn(4, 5)
    torch.testing.assert_close(layer(x), _blend(layer, x, 0.0))
    WRITES[write](layer.beta)
    value = float(layer.beta)
    assert value != 0.0
    torch.testing.assert_close(layer(x), _blend(layer, x, value))
    layer.beta.zero_()
    assert torch.equal(layer(x), mam_linear_reference(x, layer.weight, layer.bias))


def test_assignment_and_load_state_dict_take_effect():
    layer, x = _layer(), torch.randn(4, 5)
    layer.beta = torch.tensor(1.0)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    sd = layer.state_dict()
    sd["beta"] = torch.tensor(0.5)
    layer.load_state_dict(sd)
    torch.testing.assert_close(layer(x), _blend(layer, x, 0.5))


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_compiled_forward_follows_in_place_writes(backend):
    torch._dynamo.reset()
    layer, x = _layer(1), torch.randn(4, 5)
    compiled = torch.compile(layer, backend=backend, fullgraph=True)
    torch.testing.assert_close(compiled(x), _blend(layer, x, 0.0))
    layer.beta.fill_(1.0)
    torch.testing.assert_close(compiled(x), F.linear(x, layer.weight, layer.bias))
    layer.beta.copy_(torch.tensor(0.5))
    torch.testing.assert_close(compiled(x), _blend(layer, x, 0.5))
    layer.beta.zero_()
    torch.testing.assert_close(compiled(x), _blend(layer, x, 0.0))


def test_blend_at_zero_is_exact_mam_where_the_mac_term_overflows():
    layer = _layer(2)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    x = torch.full((1, 5), 3e38)  # the MAC sum overflows to inf, MAM stays finite
    mam = mam_linear_reference(x, layer.weight, layer.bias)
    beta_mod_free = beta_mod.free_to_read
    try:  # beta unknown to the forward (as on a GPU after an in-place write): the tensor blend runs
        beta_mod.free_to_read = lambda beta: False
        layer.beta.zero_()
        assert torch.equal(layer(x), mam)
    finally:
        beta_mod.free_to_read = beta_mod_free


class _NoReads:
    """Makes reads of beta cost a sync (as on a GPU) and counts the MAC terms computed."""

    def __init__(self, monkeypatch):
        self.mac_calls = 0
        monkeypatch.setattr(beta_mod, "free_to_read", lambda beta: False)

        def linear(*args, **kw):
            self.mac_calls += 1
            return F.linear(*args, **kw)

        monkeypatch.setattr(mam_modules, "F", type("F", (), {"linear": staticmethod(linear)}))

    @staticmethod
    @contextlib.contextmanager
    def forbid_reads():
        """Reading any tensor's value raises inside the block."""
        saved = {name: getattr(torch.Tensor, name) for name in ("item", "__float__", "__bool__")}

        def refuse(*_):
            raise AssertionError("the forward read a tensor's value")
        try:
            for name in saved:
                setattr(torch.Tensor, name, refuse)
            yield
        finally:
            for name, fn in saved.items():
                setattr(torch.Tensor, name, fn)


def test_forward_never_reads_beta_where_reads_cost_a_sync(monkeypatch):
    layer, x = _layer(3), torch.randn(4, 5)
    expected = {v: _blend(layer, x, v) for v in (0.0, 0.5)}
    probe = _NoReads(monkeypatch)
    layer.set_beta(0.0)
    layer.beta.fill_(0.5)  # in place: the forward cannot know the value without reading it
    with probe.forbid_reads():
        half = layer(x)
        layer.beta.zero_()
        zero = layer(x)
    torch.testing.assert_close(half, expected[0.5])
    torch.testing.assert_close(zero, expected[0.0])


def test_known_zero_beta_does_no_mac_work_without_reading(monkeypatch):
    layer, x = _layer(4), torch.randn(4, 5)
    probe = _NoReads(monkeypatch)
    layer.set_beta(1.0)
    layer.set_beta(0.0)
    moved = copy.deepcopy(layer).to(torch.float64).to(torch.float32)
    with probe.forbid_reads():
        for module in (layer, moved):
            module(x)
    assert probe.mac_calls == 0


@pytest.mark.parametrize("bad, message", [
    (torch.tensor(float("nan")), r"in \[0, 1\], got nan"),
    (torch.tensor(2.0), r"in \[0, 1\], got 2.0"),
    (torch.tensor(-1.0), r"in \[0, 1\], got -1.0"),
    (torch.tensor([0.5, 0.5]), r"a scalar tensor \(shape \(\)\), got shape \(2,\)"),
    (torch.tensor([0.5]), r"a scalar tensor"),
])
def test_load_state_dict_refuses_bad_beta_naming_the_module(bad, message):
    model = nn.Sequential(nn.ReLU(), _layer(5))
    sd = model.state_dict()
    sd["1.beta"] = bad
    with pytest.raises(RuntimeError, match=r"MAMLinear '1': 1\.beta must be " + message):
        model.load_state_dict(sd)
    with pytest.raises(RuntimeError, match="1.beta"):
        model.load_state_dict(sd, strict=False)
    assert float(model[1].beta) == 0.0


def test_linear_checkpoint_loads_strictly_as_pure_mam():
    torch.manual_seed(6)
    linear = nn.Linear(5, 3)
    layer = _layer(7)
    layer.set_beta(1.0)
    layer.load_state_dict(linear.state_dict())
    assert torch.equal(layer.weight, linear.weight) and float(layer.beta) == 0.0
    x = torch.randn(4, 5)
    assert torch.equal(layer(x), mam_linear_reference(x, linear.weight, linear.bias))
    model = nn.Sequential(nn.Linear(5, 3))
    mam_model = mamext.convert(copy.deepcopy(model))
    mam_model.load_state_dict(model.state_dict())  # strict
    result = mam_model.load_state_dict({"0.beta": torch.tensor(0.5)}, strict=False)
    assert result.missing_keys == ["0.weight", "0.bias"] and float(mam_model[0].beta) == 0.5


@pytest.mark.parametrize("cast", ["half", "bfloat16", "double"])
def test_dtype_casts_keep_beta_float32_and_exact(cast):
    layer = _layer(8)
    layer.set_beta(0.1)
    before = layer.beta.clone()
    getattr(layer, cast)()
    assert layer.beta.dtype == torch.float32 and torch.equal(layer.beta, before)
    assert layer.weight.dtype == getattr(torch, {"half": "float16"}.get(cast, cast if cast != "double" else "float64"))


def test_to_empty_keeps_beta():
    layer = MAMLinear(5, 3, device="meta")
    layer.to_empty(device="cpu")
    assert float(layer.beta) == 0.0
    layer = MAMLinear(5, 3, device="meta")
    layer.set_beta(0.5)
    layer.to_empty(device="cpu")
    assert float(layer.beta) == 0.5
    x = torch.randn(2, 5)
    layer.reset_parameters()
    torch.testing.assert_close(layer(x), _blend(layer, x, 0.5))


def test_repr_shows_beta():
    layer = _layer()
    assert "beta=0)" in repr(layer)
    layer.beta.fill_(0.25)
    assert "beta=0.25" in repr(nn.Sequential(layer))


def test_copies_and_pickles_keep_beta_and_its_mirror(monkeypatch):
    layer = _layer(9)
    layer.set_beta(0.5)
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    copied = copy.deepcopy(layer)
    monkeypatch.setattr(beta_mod, "free_to_read", lambda beta: False)
    for other in (loaded, copied):
        assert other._beta_value == 0.5 and other._mac_active and float(other.beta) == 0.5


def test_direct_write_of_an_invalid_value_is_refused_at_forward_on_cpu():
    layer = _layer()
    layer.beta.fill_(math.nan)
    with pytest.raises(ValueError, match=r"MAMLinear\(in_features=5, out_features=3\): beta must be in \[0, 1\]"):
        layer(torch.randn(2, 5))


_CUDA = pytest.mark.skipif(not (torch.cuda.is_available() and mamext._C.build_info["cuda"]),
                           reason="needs a CUDA GPU and mamext built with CUDA")


@contextlib.contextmanager
def _syncs_are_errors():
    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(before)


@_CUDA
def test_cuda_forward_follows_writes_without_syncing():
    layer, x = _layer(10).cuda(), torch.randn(4, 5, device="cuda")
    try:
        with _syncs_are_errors():
            mamext.mam_linear(x, layer.weight, layer.bias)
    except RuntimeError:
        pytest.skip("the MAM operator itself synchronises")
    expected = {v: _blend(layer.cpu(), x.cpu(), v) for v in (0.0, 0.5, 1.0)}
    layer.cuda()
    outputs = {}
    with _syncs_are_errors():
        outputs[0.0] = layer(x)
        layer.beta.fill_(0.5)
        outputs[0.5] = layer(x)
        layer.beta.copy_(torch.ones((), device="cuda"))
        outputs[1.0] = layer(x)
    for value, out in outputs.items():
        torch.testing.assert_close(out.cpu(), expected[value])
    layer.set_beta(0.0)
    assert not layer._mac_active  # known again without a read


def test_casts_keep_a_value_written_through_data():
    layer = _layer(11)
    layer.beta.data.fill_(0.5)  # bypasses the version counter
    layer.double()
    assert float(layer.beta) == 0.5 and layer.beta.dtype == torch.float32
