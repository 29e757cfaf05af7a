"""torch.autocast through the MAM operators: every floating operand is cast to
the widest floating dtype among them (a float32 MAM layer after a layer that
autocast ran in bfloat16 computes and returns float32), gradients flow back in
each operand's own dtype, and mixed-precision training works. Without
autocast, mismatched dtypes are still refused.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mamext
from mamext.nn import MAMLinear


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), MAMLinear(16, 12), nn.ReLU(), nn.Linear(12, 3))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_linear_then_mam_under_autocast(dtype):
    model = _model()
    x = torch.randn(10, 8)
    with torch.autocast("cpu", dtype=dtype):
        hidden = model[1](model[0](x))
        assert hidden.dtype == dtype
        mam_out = model[2](hidden)
        out = model(x)
    assert mam_out.dtype == torch.float32
    expected = mamext.mam_linear(hidden.float(), model[2].weight, model[2].bias)
    assert torch.equal(mam_out, expected)
    assert out.dtype == dtype  # the last Linear runs in the autocast dtype again


@pytest.mark.parametrize("op", ["forward", "inference"])
def test_ops_promote_to_the_widest_operand(op):
    x = torch.randn(4, 6, dtype=torch.bfloat16)
    w, b = torch.randn(5, 6), torch.randn(5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = getattr(torch.ops.mamext, f"mam_linear_{op}")(x, w, b)
        got_f64 = getattr(torch.ops.mamext, f"mam_linear_{op}")(x, w.double(), None)
    got = got[0] if op == "forward" else got
    got_f64 = got_f64[0] if op == "forward" else got_f64
    assert got.dtype == torch.float32 and got_f64.dtype == torch.float64
    assert torch.equal(got, mamext.mam_linear(x.float(), w, b))
    assert torch.equal(got_f64, mamext.mam_linear(x.double(), w.double()))


def test_backward_op_under_autocast():
    x, w = torch.randn(4, 6), torch.randn(5, 6)
    _, argmax, argmin = mamext.mam_linear(x, w, return_indices=True)
    g = torch.randn(4, 5, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gx, gw = torch.ops.mamext.mam_linear_backward(g, x, w, argmax, argmin, [True, True])
    ref_gx, ref_gw = torch.ops.mamext.mam_linear_backward(g.float(), x, w, argmax, argmin, [True, True])
    assert torch.equal(gx, ref_gx) and torch.equal(gw, ref_gw)


def test_mismatched_dtypes_still_refused_without_autocast():
    with pytest.raises(RuntimeError, match="weight dtype Float does not match input dtype BFloat16"):
        mamext.mam_linear(torch.randn(2, 4, dtype=torch.bfloat16), torch.randn(3, 4))


def test_gradients_flow_back_in_each_dtype():
    model = _model()
    x = torch.randn(10, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x).float().pow(2).mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32, name
        assert torch.isfinite(p.grad).all(), name
    assert model[2].weight.grad.abs().sum() > 0


def test_mixed_precision_training_reduces_the_loss():
    torch.manual_seed(1)
    x = torch.randn(256, 8)
    y = (x[:, :3] * 2 - x[:, 3:6]).sin()
    model = _model(1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_of(model):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        return nn.functional.mse_loss(out.float(), y)

    with torch.no_grad():
        initial = loss_of(model).item()
    for _ in range(60):
        opt.zero_grad()
        loss_of(model).backward()
        opt.step()
    with torch.no_grad():
        final = loss_of(model).item()
    assert final < 0.7 * initial, (initial, final)


def test_compiled_model_under_autocast():
    model = _model()
    x = torch.randn(10, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager = model(x)
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")(x)
    assert compiled.dtype == eager.dtype
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)


def test_packed_layer_under_autocast():
    from mamext import sparse

    model = _model()
    with torch.no_grad():
        model[2].weight[:, ::3] = 0.0
    packed = sparse.pack(model)
    x = torch.randn(10, 8)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hidden = packed[1](packed[0](x))
            got = packed[2](hidden)
        want = packed[2](hidden)
    assert torch.equal(got, want)
