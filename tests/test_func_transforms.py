"""torch.func transforms and forward-mode AD through the MAM operators,
checked against the plain-PyTorch reference (mamext.reference): the tangent of
a MAM output is the tangent of its two selected products plus the bias
tangent; reverse mode flows through the same two products. Inference-only
operators (packed layers) refuse every derivative with a clear error.
"""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import mamext
from mamext.reference import mam_linear_reference


def _operands(dtype=torch.float64, lead=(5,), K=6, N=4, seed=0, ties=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, K, generator=g, dtype=dtype)
    w = torch.randn(N, K, generator=g, dtype=dtype)
    b = torch.randn(N, generator=g, dtype=dtype)
    if ties:  # small integers: many equal products, exercising lowest-index ties
        x, w = x.mul(2).round(), w.mul(2).round()
    return x, w, b


def _mam(x, w, b):
    return mamext.mam_linear(x, w, b)


def _tangents(*ts, seed=1):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(t.shape, generator=g, dtype=t.dtype) for t in ts)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("lead", [(5,), (2, 3)])
def test_jvp_matches_reference(ties, lead):
    primals = _operands(lead=lead, ties=ties)
    tangents = _tangents(*primals)
    out, tangent = torch.func.jvp(_mam, primals, tangents)
    ref_out, ref_tangent = torch.func.jvp(mam_linear_reference, primals, tangents)
    assert torch.equal(out, ref_out)
    torch.testing.assert_close(tangent, ref_tangent, rtol=1e-12, atol=1e-12)
    assert tangent.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_forward_ad_primal_is_the_kernel_output(dtype):
    x, w, b = _operands(dtype=dtype, lead=(9,), K=33, N=7)
    x[0, 3] = float("inf")
    x[1, 5] = float("nan")
    w[2, 0] = 0.0
    expected = mamext.mam_linear(x, w, b)
    with fwAD.dual_level():
        dual = fwAD.make_dual(x, torch.ones_like(x))
        primal, tangent = fwAD.unpack_dual(mamext.mam_linear(dual, w, b))
    assert tangent is not None
    torch.testing.assert_close(primal, expected, rtol=0, atol=0, equal_nan=True)


def test_forward_ad_through_inference_op():
    x, w, b = _operands()
    (tx,) = _tangents(x)
    with fwAD.dual_level():
        out = torch.ops.mamext.mam_linear_inference(fwAD.make_dual(x, tx), w, b)
        tangent = fwAD.unpack_dual(out).tangent
    _, ref_tangent = torch.func.jvp(lambda x: mam_linear_reference(x, w, b), (x,), (tx,))
    assert tangent is not None
    torch.testing.assert_close(tangent, ref_tangent, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("argnums", [0, 1, 2, (0, 1, 2)])
@pytest.mark.parametrize("jac", [torch.func.jacfwd, torch.func.jacrev])
def test_jacobians_match_reference(jac, argnums):
    operands = _operands(ties=True)
    got = jac(_mam, argnums=argnums)(*operands)
    want = torch.func.jacrev(mam_linear_reference, argnums=argnums)(*operands)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_grad_matches_reference_and_backward():
    x, w, b = _operands(lead=(3, 4))

    def loss(fn):
        return lambda x, w, b: (fn(x, w, b) ** 2).sum()

    got = torch.func.grad(loss(_mam), argnums=(0, 1, 2))(x, w, b)
    want = torch.func.grad(loss(mam_linear_reference), argnums=(0, 1, 2))(x, w, b)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    loss(_mam)(*leaves).backward()
    torch.testing.assert_close(tuple(t.grad for t in leaves), got, rtol=1e-12, atol=1e-12)


def test_hessian_matches_reference():
    x, w, b = _operands(lead=(3,), K=5, N=2)
    f = lambda x, w: _mam(x, w, b).sum()  # noqa: E731
    g = lambda x, w: mam_linear_reference(x, w, b).sum()  # noqa: E731
    torch.testing.assert_close(torch.func.hessian(f, argnums=(0, 1))(x, w),
                               torch.func.hessian(g, argnums=(0, 1))(x, w), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("in_dims", [(0, None, None), (None, 0, 0), (0, 0, None)])
def test_vmap_matches_a_loop(in_dims):
    B = 3
    x, w, b = _operands(lead=(5,))
    batched = [t.unsqueeze(0).expand(B, *t.shape) * torch.arange(1, B + 1, dtype=t.dtype).view(-1, *[1] * t.dim())
               if d == 0 else t for t, d in zip((x, w, b), in_dims)]
    got = torch.func.vmap(_mam, in_dims=in_dims)(*batched)
    want = torch.stack([_mam(*[t[i] if d == 0 else t for t, d in zip(batched, in_dims)]) for i in range(B)])
    assert torch.equal(got, want)


def test_vmap_of_per_sample_gradients():
    x, w, b = _operands(lead=(6,))
    per_sample = torch.func.vmap(torch.func.grad(lambda w, x: _mam(x, w, b).sum()), in_dims=(None, 0))(w, x)
    want = torch.stack([torch.func.grad(lambda w: mam_linear_reference(xi, w, b).sum())(w) for xi in x])
    torch.testing.assert_close(per_sample, want, rtol=1e-12, atol=1e-12)


def _packed_layer():
    from mamext import sparse

    dense = mamext.nn.MAMLinear(6, 4)
    with torch.no_grad():
        dense.weight[:, ::2] = 0.0
    return sparse.pack(torch.nn.Sequential(dense))[0]


@pytest.mark.parametrize("transform", ["jvp", "grad", "forward_ad"])
def test_packed_layers_refuse_derivatives_clearly(transform):
    layer = _packed_layer()
    x = torch.randn(3, 6)
    with pytest.raises(RuntimeError, match="inference only"):
        if transform == "jvp":
            torch.func.jvp(layer, (x,), (torch.ones_like(x),))
        elif transform == "grad":
            torch.func.grad(lambda x: layer(x).sum())(x)
        else:
            with fwAD.dual_level():
                layer(fwAD.make_dual(x, torch.ones_like(x)))


def test_backward_op_refuses_forward_mode():
    x, w, _ = _operands()
    _, argmax, argmin = mamext.mam_linear(x, w, return_indices=True)
    g = torch.ones(5, 4, dtype=x.dtype)
    with fwAD.dual_level(), pytest.raises(RuntimeError, match="not differentiable"):
        torch.ops.mamext.mam_linear_backward(fwAD.make_dual(g, g), x, w, argmax, argmin, [True, True])


@pytest.mark.parametrize("in_dims", [(0, None, None, None, None, None), (None, None, 0, None, None, None)])
def test_vmap_of_the_backward_op(in_dims):
    x, w, _ = _operands(lead=(5,))
    _, argmax, argmin = mamext.mam_linear(x, w, return_indices=True)
    B = 3
    gs = torch.randn(B, 5, 4, dtype=x.dtype)
    ws = torch.stack([w * (i + 1) for i in range(B)])
    args = [gs if in_dims[0] == 0 else gs[0], x, ws if in_dims[2] == 0 else w, argmax, argmin]
    got = torch.func.vmap(lambda *a: torch.ops.mamext.mam_linear_backward(*a, [True, True]), in_dims=in_dims[:5])(*args)
    want = [torch.ops.mamext.mam_linear_backward(*[a[i] if d == 0 else a for a, d in zip(args, in_dims)],
                                                 [True, True]) for i in range(B)]
    for g, w_ in zip(got, zip(*want)):
        assert torch.equal(g, torch.stack(w_))


def test_vmap_of_a_packed_layer():
    layer = _packed_layer()
    x = torch.randn(4, 3, 6)
    with torch.no_grad():
        got = torch.func.vmap(layer)(x)
        want = torch.stack([layer(xi) for xi in x])
    assert torch.equal(got, want)
