"""mamext.convert: nn.Linear -> MAMLinear, in place, same parameters."""

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import mamext
from mamext.nn import MAMLinear, VanishingContribution
from mamext.reference import mam_linear_reference


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8))
        self.head = nn.Linear(8, 3)
        self.norm = nn.LayerNorm(8)

    def forward(self, x):
        return self.head(self.norm(self.encoder(x)))


def _net():
    torch.manual_seed(0)
    return Net()


def _linear_names(model, kind):
    return sorted(n for n, m in model.named_modules() if type(m) is kind)


def test_convert_all_keeps_parameter_objects_and_computes_mam():
    model = _net()
    params = {n: p for n, p in model.named_parameters()}
    x = torch.randn(5, 6)
    with torch.no_grad():
        mac_out = model(x)
    out = mamext.convert(model)
    assert out is model
    assert _linear_names(model, MAMLinear) == ["encoder.0", "encoder.2", "head"]
    assert _linear_names(model, nn.Linear) == []
    for n, p in model.named_parameters():
        assert p is params[n]  # same tensors: optimizers built before keep working
    assert all(float(m.beta) == 0.0 for m in model.modules() if isinstance(m, MAMLinear))
    # Pure MAM forward, layer by layer against the reference.
    h = mam_linear_reference(x, model.encoder[0].weight, model.encoder[0].bias).relu()
    h = mam_linear_reference(h, model.encoder[2].weight, model.encoder[2].bias)
    ref = mam_linear_reference(model.norm(h), model.head.weight, model.head.bias)
    torch.testing.assert_close(model(x), ref)
    # With beta = 1 (start of the vanishing contribution) it is the MAC model again.
    VanishingContribution(model, steps=10)
    torch.testing.assert_close(model(x), mac_out)


def test_state_dict_of_converted_model_matches_linear_keys_plus_beta():
    model = _net()
    keys = set(model.state_dict())
    mamext.convert(model)
    assert set(model.state_dict()) == keys | {"encoder.0.beta", "encoder.2.beta", "head.beta"}


@pytest.mark.parametrize("include, expected", [
    ("encoder.*", ["encoder.0", "encoder.2"]),
    ("encoder", ["encoder.0", "encoder.2"]),  # a parent name selects what is under it
    ("*.2", ["encoder.2"]),
    ("head", ["head"]),
    (["head", "encoder.0"], ["encoder.0", "head"]),
    (lambda name, m: m.out_features == 8, ["encoder.0", "encoder.2"]),
    (["head", lambda name, m: m.in_features == 6], ["encoder.0", "head"]),
])
def test_include(include, expected):
    model = mamext.convert(_net(), include=include)
    assert _linear_names(model, MAMLinear) == expected
    assert len(_linear_names(model, nn.Linear)) == 3 - len(expected)


def test_exclude_wins_over_include():
    model = mamext.convert(_net(), exclude="head")
    assert _linear_names(model, MAMLinear) == ["encoder.0", "encoder.2"]
    model = mamext.convert(_net(), include="encoder", exclude=lambda n, m: n.endswith(".0"))
    assert _linear_names(model, MAMLinear) == ["encoder.2"]


def test_bad_selectors():
    with pytest.raises(ValueError, match="matches no module"):
        mamext.convert(_net(), include="encodr.*")
    with pytest.raises(ValueError, match="matches no module"):
        mamext.convert(_net(), exclude=["head", "hed"])
    with pytest.raises(TypeError, match="include"):
        mamext.convert(_net(), include=3)
    with pytest.raises(TypeError, match="exclude"):
        mamext.convert(_net(), exclude=["head", 3])
    with pytest.raises(TypeError, match="nn.Module"):
        mamext.convert("model")


def test_optimizer_built_before_conversion_trains_the_mam_layers():
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    mamext.convert(model)
    before = model.head.weight.detach().clone()
    model(torch.randn(4, 6)).pow(2).sum().backward()
    opt.step()
    assert not torch.equal(before, model.head.weight)


def test_shared_linear_becomes_one_shared_mam_layer():
    torch.manual_seed(1)
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.Tanh(), shared)
    mamext.convert(model)
    assert isinstance(model[0], MAMLinear) and model[0] is model[2]


def test_root_linear_returns_new_module():
    lin = nn.Linear(3, 2)
    mam = mamext.convert(lin)
    assert isinstance(mam, MAMLinear) and mam.weight is lin.weight and mam.bias is lin.bias
    nb = mamext.convert(nn.Linear(3, 2, bias=False))
    assert nb.bias is None and "bias" not in nb.state_dict()


def test_pruned_linear_keeps_its_mask():
    model = _net()
    prune.l1_unstructured(model.head, "weight", amount=0.5)
    mask = model.head.weight_mask.clone()
    mamext.convert(model)
    head = model.head
    assert isinstance(head, MAMLinear) and torch.equal(head.weight_mask, mask)
    x = torch.randn(3, 8)
    torch.testing.assert_close(head(x), mam_linear_reference(x, head.weight_orig * mask, head.bias))
    prune.remove(head, "weight")
    assert torch.equal(head.weight == 0, mask == 0) and isinstance(head.weight, nn.Parameter)


def test_dtype_device_and_training_flag_preserved():
    lin = nn.Linear(3, 2, dtype=torch.float64).eval()
    model = mamext.convert(nn.Sequential(lin))
    assert model[0].weight.dtype == torch.float64 and not model[0].training
    assert model[0].beta.dtype == torch.float32
    model[0](torch.randn(2, 3, dtype=torch.float64))


def test_multihead_attention_out_proj_left_alone():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 4))
    model.attn = nn.MultiheadAttention(4, 2)
    mamext.convert(model)
    assert isinstance(model[0], MAMLinear)
    assert type(model.attn.out_proj) is not MAMLinear


def test_lazy_linear_needs_a_forward_first():
    with pytest.raises(ValueError, match="LazyLinear"):
        mamext.convert(nn.Sequential(nn.LazyLinear(3)))


# --------------------------------------------------------------------------- exact conversion only


class LoRALinear(nn.Linear):
    """A linear layer with a low-rank adapter: its own forward and extra parameters."""

    def __init__(self, in_features, out_features, rank=2):
        super().__init__(in_features, out_features)
        self.lora_a = nn.Parameter(torch.randn(rank, in_features))
        self.lora_b = nn.Parameter(torch.randn(out_features, rank))

    def forward(self, x):
        return super().forward(x) + x @ self.lora_a.t() @ self.lora_b.t()


class PlainSubclass(nn.Linear):
    """Only adds a method: converts exactly."""

    def describe(self):
        return "plain"


class WithBuffer(nn.Linear):
    def __init__(self, *args):
        super().__init__(*args)
        self.register_buffer("scale", torch.ones(1))


def test_linear_subclass_with_its_own_forward_is_refused_and_nothing_converted():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), LoRALinear(4, 3))
    with pytest.raises(ValueError, match=r"'2' cannot be replaced by a MAMLinear.*LoRALinear overrides forward"):
        mamext.convert(model)
    assert type(model[0]) is nn.Linear  # no half-converted model
    mamext.convert(model, exclude="2")
    assert isinstance(model[0], MAMLinear) and type(model[2]) is LoRALinear


def test_linear_subclass_with_extra_state_is_refused():
    with pytest.raises(ValueError, match=r"'0'.*adds parameters or buffers \['scale'\]"):
        mamext.convert(nn.Sequential(WithBuffer(3, 2)))
    with pytest.raises(ValueError, match="the model.*WithBuffer"):
        mamext.convert(WithBuffer(3, 2))


def test_linear_subclass_that_only_adds_methods_converts():
    torch.manual_seed(4)
    model = mamext.convert(nn.Sequential(PlainSubclass(3, 2)))
    assert isinstance(model[0], MAMLinear)


def test_include_naming_a_module_convert_cannot_replace_is_refused():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(ValueError, match=r"include pattern '0' selects no nn.Linear.*0 \(Conv2d\)"):
        mamext.convert(model, include="0")
    model = nn.Sequential(nn.Linear(4, 4))
    model.attn = nn.MultiheadAttention(4, 2)
    with pytest.raises(ValueError, match="out_proj"):
        mamext.convert(model, include="attn.out_proj")
    mamext.convert(model, include="*")  # wildcards may match other modules too
    assert isinstance(model[0], MAMLinear)


def test_backward_hooks_move_over_and_state_dict_hooks_are_refused():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 2))
    seen = []
    model[0].register_full_backward_hook(lambda module, gin, gout: seen.append(type(module).__name__))
    mamext.convert(model)
    model(torch.randn(4, 3, requires_grad=True)).sum().backward()
    assert seen == ["MAMLinear"]
    model = nn.Sequential(nn.Linear(3, 2))
    model[0].register_state_dict_post_hook(lambda module, sd, prefix, meta: None)
    with pytest.raises(ValueError, match="'0' has state_dict hooks"):
        mamext.convert(model)
