"""MAC-to-MAM blending (MAMLinear.beta) and the VanishingContribution schedule."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import mamext
from mamext.nn import MAMLinear, VanishingContribution
from mamext.reference import mam_linear_reference


def _model(dtype=torch.float64):
    torch.manual_seed(0)
    return nn.Sequential(MAMLinear(5, 7, dtype=dtype), nn.ReLU(), nn.Linear(7, 4, dtype=dtype),
                         MAMLinear(4, 3, bias=False, dtype=dtype))


def _mam_layers(model):
    return [m for m in model.modules() if isinstance(m, MAMLinear)]


# --------------------------------------------------------------------------- blending


def test_beta_buffer_default_and_state_dict():
    layer = MAMLinear(3, 2)
    assert layer.beta.dtype == torch.float32 and float(layer.beta) == 0.0 and not layer._mac_active
    layer.set_beta(0.25)
    assert "beta" in layer.state_dict() and float(layer.state_dict()["beta"]) == 0.25
    fresh = MAMLinear(3, 2)
    fresh.load_state_dict(layer.state_dict())
    assert float(fresh.beta) == 0.25 and fresh._mac_active
    fresh.load_state_dict(MAMLinear(3, 2).state_dict())
    assert float(fresh.beta) == 0.0 and not fresh._mac_active


@pytest.mark.parametrize("bias", [True, False])
def test_beta_one_equals_linear(bias):
    torch.manual_seed(1)
    mam = MAMLinear(6, 5, bias=bias)
    lin = nn.Linear(6, 5, bias=bias)
    lin.load_state_dict({k: v for k, v in mam.state_dict().items() if k != "beta"})
    mam.set_beta(1.0)
    x = torch.randn(4, 3, 6, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y_lin = mam(x), lin(x2)
    torch.testing.assert_close(y, y_lin, rtol=0, atol=0)
    g = torch.randn_like(y)
    y.backward(g)
    y_lin.backward(g)
    torch.testing.assert_close(x.grad, x2.grad, rtol=0, atol=0)
    torch.testing.assert_close(mam.weight.grad, lin.weight.grad, rtol=0, atol=0)
    if bias:
        torch.testing.assert_close(mam.bias.grad, lin.bias.grad, rtol=0, atol=0)


def test_beta_zero_is_pure_mam():
    torch.manual_seed(2)
    mam = MAMLinear(6, 5)
    mam.set_beta(0.5)
    mam.set_beta(0.0)
    assert not mam._mac_active
    x = torch.randn(8, 6)
    torch.testing.assert_close(mam(x), mam_linear_reference(x, mam.weight, mam.bias), rtol=0, atol=0)
    torch.testing.assert_close(mam(x), mamext.mam_linear(x, mam.weight, mam.bias), rtol=0, atol=0)


@pytest.mark.parametrize("beta", [0.3, 0.999])
def test_blended_forward_and_gradients_against_reference(beta):
    torch.manual_seed(3)
    mam = MAMLinear(7, 4, dtype=torch.float64)
    mam.set_beta(beta)
    w_ref = mam.weight.detach().clone().requires_grad_(True)
    b_ref = mam.bias.detach().clone().requires_grad_(True)
    x = torch.randn(2, 5, 7, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    beta32 = torch.tensor(beta, dtype=torch.float32).double()  # the buffer is float32
    y = mam(x)
    y_ref = beta32 * F.linear(x_ref, w_ref, b_ref) + (1 - beta32) * mam_linear_reference(x_ref, w_ref, b_ref)
    torch.testing.assert_close(y, y_ref)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(mam.weight.grad, w_ref.grad)
    torch.testing.assert_close(mam.bias.grad, b_ref.grad)


def test_blended_gradcheck():
    torch.manual_seed(4)
    mam = MAMLinear(4, 3, dtype=torch.float64)
    mam.set_beta(0.4)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: torch.func.functional_call(
        mam, {"weight": w, "bias": b, "beta": mam.beta}, (x,)), (x, mam.weight, mam.bias))


def test_set_beta_rejects_out_of_range():
    with pytest.raises(ValueError, match="beta"):
        MAMLinear(2, 2).set_beta(1.5)
    with pytest.raises(ValueError, match="beta"):
        MAMLinear(2, 2).set_beta(-0.1)


def test_blend_compiles_without_graph_break():
    torch.manual_seed(5)
    mam = MAMLinear(5, 3)
    x = torch.randn(4, 5)
    compiled = torch.compile(mam, backend="eager", fullgraph=True)
    for beta in (1.0, 0.5, 0.0):
        mam.set_beta(beta)
        torch.testing.assert_close(compiled(x), mam(x))


# --------------------------------------------------------------------------- schedule


def test_linear_schedule_sequence():
    model = _model()
    vc = VanishingContribution(model, steps=10)
    layers = _mam_layers(model)
    assert all(float(m.beta) == 1.0 and m._mac_active for m in layers)
    seen = [vc.beta]
    for _ in range(12):
        seen.append(vc.step())
        for m in layers:
            assert float(m.beta) == pytest.approx(seen[-1], abs=1e-7)
            assert m._mac_active == (seen[-1] != 0.0)
    expected = [1 - t / 10 for t in range(10)] + [0.0] * 3
    assert seen == pytest.approx(expected, abs=1e-12)
    assert seen[10:] == [0.0, 0.0, 0.0] and vc.done


def test_linear_schedule_snaps_below_eps():
    model = _model()
    vc = VanishingContribution(model, steps=100, eps=0.05)
    # 1 - t/100 for t = 95 is exactly eps (kept); t = 96 gives 0.04 < eps -> 0.
    for _ in range(95):
        vc.step()
    assert vc.beta == pytest.approx(0.05)
    assert vc.step() == 0.0
    assert all(float(m.beta) == 0.0 and not m._mac_active for m in _mam_layers(model))


def test_exponential_schedule_sequence():
    model = _model()
    steps, eps = 6, 1e-2
    vc = VanishingContribution(model, steps=steps, schedule="exponential", eps=eps)
    beta, expected = 1.0, []
    for t in range(1, steps + 3):
        beta *= eps ** (1 / steps)  # the recurrence
        expected.append(0.0 if (beta < eps or t >= steps) else beta)
    got = [vc.step() for _ in range(steps + 2)]
    assert got == pytest.approx(expected, rel=1e-12, abs=0)
    assert got[steps - 2] == pytest.approx(eps ** ((steps - 1) / steps))
    assert got[steps - 1:] == [0.0, 0.0, 0.0]


def test_schedule_state_dict_resume():
    model = _model()
    vc = VanishingContribution(model, steps=8, schedule="exponential", eps=0.05)
    for _ in range(3):
        vc.step()
    saved_sched, saved_model = vc.state_dict(), model.state_dict()

    model2 = _model()
    vc2 = VanishingContribution(model2, steps=1000)  # different settings; load must override
    assert float(_mam_layers(model2)[0].beta) == 1.0
    model2.load_state_dict(saved_model)
    vc2.load_state_dict(saved_sched)
    assert (vc2.steps, vc2.schedule, vc2.eps, vc2.last_step) == (8, "exponential", 0.05, 3)
    assert vc2.beta == vc.beta
    for a, b in zip(_mam_layers(model), _mam_layers(model2)):
        assert float(a.beta) == float(b.beta) and a._mac_active == b._mac_active
    assert [vc.step() for _ in range(6)] == [vc2.step() for _ in range(6)]

    with pytest.raises(ValueError, match="missing"):
        vc2.load_state_dict({"steps": 3})


def test_schedule_finds_layers_inside_wrappers_and_bare_layer():
    layer = MAMLinear(3, 2)
    vc = VanishingContribution(layer, steps=2)
    assert float(layer.beta) == 1.0
    vc.step()
    assert float(layer.beta) == 0.5


def test_schedule_argument_errors():
    model = _model()
    with pytest.raises(ValueError, match="steps"):
        VanishingContribution(model, steps=0)
    with pytest.raises(TypeError, match="steps"):
        VanishingContribution(model, steps=2.5)
    with pytest.raises(ValueError, match="schedule"):
        VanishingContribution(model, steps=3, schedule="cosine")
    with pytest.raises(ValueError, match="eps"):
        VanishingContribution(model, steps=3, eps=0.0)
    with pytest.raises(ValueError, match="eps"):
        VanishingContribution(model, steps=3, eps=1.0)
    with pytest.raises(ValueError, match="no MAMLinear"):
        VanishingContribution(nn.Sequential(nn.Linear(2, 2)), steps=3)
    with pytest.raises(TypeError, match="nn.Module"):
        VanishingContribution([MAMLinear(2, 2)], steps=3)


def test_training_through_the_transition_updates_shared_weights():
    """A few optimizer steps under the schedule: both terms train the same weight."""
    torch.manual_seed(6)
    model = nn.Sequential(MAMLinear(4, 6), nn.ReLU(), MAMLinear(6, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    vc = VanishingContribution(model, steps=4, schedule="linear")
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    betas = []
    for _ in range(5):
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        assert math.isfinite(loss.item())
        loss.backward()
        opt.step()
        betas.append(vc.step())
    assert betas == pytest.approx([0.75, 0.5, 0.25, 0.0, 0.0])
