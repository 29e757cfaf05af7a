"""Dense MAM operators against the plain-PyTorch reference (mamext.reference).

Every value test runs on every ISA level the machine supports (the `isa`
fixture forces mamext's kernel level) and on CUDA when present (DEVICES);
shapes reach past the CUDA kernels' 128 x 128 tiles where it matters.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import mamext
from mamext.reference import mam_linear_backward_reference, mam_linear_reference

from op_testing import (DEVICES, FLOAT_DTYPES as DTYPES, ISA_LEVELS, DenseOps, assert_huge_k_indices,
                        available_isas, check_dense_forward, huge_k_problem)


def check_forward(x, w, b=None, device="cpu"):
    """Both forwards on `device` against the reference (values, signs, NaN, indices); CPU tensors back."""
    return check_dense_forward(DenseOps(device), x, w, b)


# ---------------------------------------------------------------- values ---

SHAPES = [  # (leading dims, K, N)
    ((1,), 1, 1),
    ((5,), 3, 7),
    ((3,), 15, 16),
    ((9,), 16, 17),
    ((7,), 17, 33),
    ((4,), 31, 48),
    ((13,), 33, 49),
    ((2, 3), 64, 95),
    ((2, 3, 4), 100, 10),
    ((37,), 257, 130),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lead,K,N", SHAPES)
@pytest.mark.parametrize("device", DEVICES)
def test_random_matches_reference(device, isa, dtype, lead, K, N):
    g = torch.Generator().manual_seed(K * 1000 + N)
    x = torch.randn(*lead, K, generator=g).to(dtype)
    w = torch.randn(N, K, generator=g).to(dtype)
    b = torch.randn(N, generator=g).to(dtype)
    check_forward(x, w, b, device=device)
    check_forward(x, w, None, device=device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("M,K,N", [(64, 512, 100), (130, 300, 200)])
def test_larger_shapes_multithreaded(isa, dtype, M, K, N):
    # Enough rows and neurons for several panels and row chunks per thread.
    x = torch.randn(M, K, dtype=dtype)
    w = torch.randn(N, K, dtype=dtype)
    check_forward(x, w, torch.randn(N, dtype=dtype))


@pytest.mark.parametrize("device", DEVICES)
def test_huge_k_indices(device, isa):
    # K > 65,536: indices must not wrap (the authors' fast kernel keeps 16 bits).
    K = 70_000
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, K, generator=g)
    w = torch.randn(5, K, generator=g)
    # Plant the extremes at large indices.
    x[:, 69_999] = 50.0
    w[:, 69_999] = 1.0
    w[2, 68_123] = -80.0
    x[:, 68_123] = 1.0
    _, amax, amin = check_forward(x, w, device=device)
    assert (amax == 69_999).all()
    assert amin[0, 2] == 68_123
    x, w = huge_k_problem(3, 5)
    _, amax, amin = check_forward(x, w, device=device)
    assert_huge_k_indices(amax, amin)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K,N", [(11, 37, 19), (130, 40, 70)])
@pytest.mark.parametrize("device", DEVICES)
def test_all_products_negative(device, isa, dtype, M, K, N):
    # A max started at the smallest positive float instead of -inf is wrong here.
    x = torch.rand(M, K).add(0.1).to(dtype)
    w = -torch.rand(N, K).add(0.1).to(dtype)
    out, _, _ = check_forward(x, w, device=device)
    assert (out < 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_zero_weights_take_part(device, isa, dtype):
    # A zero weight is an ordinary connection: its product 0 is a candidate.
    x = torch.rand(6, 40).add(0.5).to(dtype)
    w = torch.rand(9, 40).add(0.5).to(dtype)
    w[:, 7] = 0
    out, _, amin = check_forward(x, w, device=device)
    assert (amin == 7).all()
    w0 = torch.zeros(9, 40, dtype=dtype)
    out, amax, amin = check_forward(x, w0, torch.ones(9, dtype=dtype), device=device)
    assert (out == 1).all() and (amax == 0).all() and (amin == 0).all()
    # past one CUDA tile: all products zero, then one positive product (max at 20, min a zero at 0)
    x = torch.ones(131, 37, dtype=dtype)
    w = torch.zeros(67, 37, dtype=dtype)
    out, amax, amin = check_forward(x, w, torch.ones(67, dtype=dtype), device=device)
    assert (amax == 0).all() and (amin == 0).all() and (out == 1).all()
    w[:, 20] = 2.0
    _, amax, amin = check_forward(x, w, device=device)
    assert (amax == 20).all() and (amin == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K", [1, 2, 16, 17, 45, 300])
@pytest.mark.parametrize("device", DEVICES)
def test_ties_lowest_index(device, isa, dtype, K):
    # Small integers: many exactly tied products, within and across blocks.
    g = torch.Generator().manual_seed(K)
    x = torch.randint(-2, 3, (23, K), generator=g).to(dtype)
    w = torch.randint(-2, 3, (29, K), generator=g).to(dtype)
    check_forward(x, w, device=device)
    # All equal: index 0 for both.
    _, amax, amin = check_forward(torch.ones(3, K, dtype=dtype), torch.ones(4, K, dtype=dtype), device=device)
    assert (amax == 0).all() and (amin == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("M,N", [(1, 6), (16, 6), (140, 70)])  # row-major, register-tiled, past one CUDA tile
@pytest.mark.parametrize("device", DEVICES)
def test_signed_zero_ties(device, isa, dtype, M, N):
    # Products +0 and -0 tie: index and value (sign included) of the first.
    x = torch.tensor([[1.0, -1.0, 1.0, -1.0] * 5], dtype=dtype).repeat(M, 1)
    w = torch.zeros(3, 20, dtype=dtype)
    _, amax, amin = check_forward(x, w, device=device)
    assert (amax == 0).all() and (amin == 0).all()
    x = torch.zeros(M, 45, dtype=dtype)
    w = torch.randn(N, 45, dtype=dtype)  # every product is +0 or -0
    out, _, _ = check_forward(x, w, device=device)
    assert torch.equal(torch.signbit(out), torch.signbit(w[:, 0]).expand(M, N))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where", ["x", "w"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("device", DEVICES)
def test_non_finite(device, isa, dtype, where, value):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 45, generator=g).to(dtype)
    w = torch.randn(10, 45, generator=g).to(dtype)
    w[3, 0] = 0  # inf * 0 = NaN
    t = x if where == "x" else w
    t[2, 30] = value
    t[5, 0] = value
    t[5, 44] = value
    check_forward(x, w, torch.randn(10).to(dtype), device=device)
    # past one CUDA tile: outputs touching a non-finite row take the exact scan inside a tile
    x = torch.randn(150, 50, generator=g).to(dtype)
    w = torch.randn(140, 50, generator=g).to(dtype)
    t = x if where == "x" else w
    t[3, 7] = value
    t[100, 0] = value
    t[129, 49] = value
    t[5, 20] = 0.0  # inf * 0 = NaN
    t[5, 30] = value
    w[9, 30] = 0.0
    x[11, 30] = 0.0
    check_forward(x, w, torch.randn(140, generator=g).to(dtype), device=device)


def test_overflowing_products(isa):
    # Finite inputs whose products overflow to +-inf: fast path, exact.
    x = torch.full((2, 20), 3e38)
    w = torch.randn(5, 20) * 10
    check_forward(x, w)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device, isa):
    w = torch.randn(6, 9, device=device)
    for shape in [(0, 9), (2, 0, 9)]:
        x = torch.randn(shape, device=device)
        out, amax, amin = mamext.mam_linear(x, w, return_indices=True)
        assert out.shape == (*shape[:-1], 6) and amax.shape == out.shape and amin.shape == out.shape
        assert torch.ops.mamext.mam_linear_inference(x, w, None).shape == out.shape
        x.requires_grad_()
        wg = w.clone().requires_grad_()
        mamext.mam_linear(x, wg).sum().backward()
        assert x.grad.shape == x.shape and torch.equal(wg.grad, torch.zeros_like(w))
    out = torch.ops.mamext.mam_linear_inference(torch.randn(3, 9, device=device), w[:0], None)  # no neuron
    assert out.shape == (3, 0)
    check_forward(torch.randn(4, 3, 9), w.cpu(), device=device)  # leading batch dimensions


def test_one_dimensional_input(isa):
    x = torch.randn(12)
    w = torch.randn(4, 12)
    out, _, _ = check_forward(x, w)
    assert out.shape == (4,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_contiguous_operands(isa, dtype):
    x = torch.randn(40, 30, dtype=dtype).t()  # (30, 40) non-contiguous
    w = torch.randn(40, 25, dtype=dtype).t()  # (25, 40) non-contiguous
    b = torch.randn(50, dtype=dtype)[::2]
    assert not x.is_contiguous() and not w.is_contiguous() and not b.is_contiguous()
    check_forward(x, w, b)
    x3 = torch.randn(4, 40, 6, dtype=dtype).transpose(1, 2)  # (4, 6, 40)
    check_forward(x3, w, b)


def test_built_with_torchs_parallel_backend():
    # at::parallel_for is compiled into the extension: without -fopenmp it
    # silently runs every "parallel" loop on one thread.
    if "OpenMP" in torch.__config__.parallel_info():
        assert mamext._C.build_info["openmp"]


def test_thread_count_does_not_change_results():
    x = torch.randn(70, 300)
    w = torch.randn(150, 300)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = mamext.mam_linear(x, w, return_indices=True)
        torch.set_num_threads(max(2, n))
        b = mamext.mam_linear(x, w, return_indices=True)
    finally:
        torch.set_num_threads(n)
    for u, v in zip(a, b):
        assert torch.equal(u, v)


# ------------------------------------------------------------- gradients ---

@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12),
                                       (torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("device", DEVICES)
def test_gradients_match_reference(device, isa, dtype, tol, bias):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 5, 37, generator=g).to(dtype).requires_grad_()
    w = torch.randn(21, 37, generator=g).to(dtype).requires_grad_()
    b = torch.randn(21, generator=g).to(dtype).requires_grad_() if bias else None
    gout = torch.randn(2, 5, 21, generator=g).to(dtype)
    params = [x, w] + ([b] if bias else [])
    dparams = [p.detach().to(device).requires_grad_() for p in params]
    db = dparams[2] if bias else None
    grads = torch.autograd.grad(mamext.mam_linear(dparams[0], dparams[1], db), dparams, gout.to(device))
    grads = [t.cpu() for t in grads]
    rgrads = torch.autograd.grad(mam_linear_reference(x, w, b), params, gout)
    for got, want in zip(grads, rgrads):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def test_gradients_closed_form_with_ties(isa):
    # Ties and argmax == argmin (K == 1): both terms count.
    for K in (1, 5):
        x = torch.randint(-2, 3, (6, K)).float().requires_grad_()
        w = torch.randint(-2, 3, (4, K)).float().requires_grad_()
        out, amax, amin = mamext.mam_linear(x, w, return_indices=True)
        gout = torch.randn_like(out)
        gx, gw = torch.autograd.grad(out, [x, w], gout)
        rx, rw = mam_linear_backward_reference(gout, x.detach(), w.detach(), amax, amin)
        torch.testing.assert_close(gx, rx)
        torch.testing.assert_close(gw, rw)
    # K == 1: y = 2 * w * x
    x = torch.randn(3, 1, requires_grad=True)
    w = torch.randn(2, 1, requires_grad=True)
    mamext.mam_linear(x, w).sum().backward()
    torch.testing.assert_close(x.grad, 2 * w.detach().sum(0).expand(3, 1))


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_float64(device, isa):
    x = torch.randn(4, 9, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(6, 9, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(mamext.mam_linear, (x, w, b))


def test_backward_deterministic(isa):
    x = torch.randn(64, 100, requires_grad=True)
    w = torch.randn(80, 100, requires_grad=True)
    gout = torch.randn(64, 80)
    g1 = torch.autograd.grad(mamext.mam_linear(x, w), [x, w], gout)
    g2 = torch.autograd.grad(mamext.mam_linear(x, w), [x, w], gout)
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)


def test_backward_only_requested_grads():
    x = torch.randn(5, 8)
    w = torch.randn(3, 8, requires_grad=True)
    out = mamext.mam_linear(x, w)
    out.sum().backward()
    assert x.grad is None and w.grad is not None
    _, amax, amin = mamext.mam_linear(x, w.detach(), return_indices=True)
    gx, gw = torch.ops.mamext.mam_linear_backward(torch.ones(5, 3), x, w.detach(), amax, amin, [False, True])
    assert gx.numel() == 0 and gw.shape == (3, 8)


def test_non_differentiable_ops_raise_on_backward():
    x = torch.randn(3, 4, requires_grad=True)
    w = torch.randn(2, 4)
    y = torch.ops.mamext.mam_linear_inference(x, w, None)
    with pytest.raises(RuntimeError, match="mam_linear_inference is not differentiable"):
        y.sum().backward()
    out, amax, amin = mamext.mam_linear(x, w, return_indices=True)
    g = torch.ones(3, 2, requires_grad=True)
    gx, _ = torch.ops.mamext.mam_linear_backward(g, x.detach(), w, amax, amin, [True, False])
    with pytest.raises(RuntimeError, match="double backward"):
        gx.sum().backward()


def test_backward_rejects_out_of_range_indices():
    x = torch.randn(4, 8)
    w = torch.randn(3, 8)
    bad = torch.full((4, 3), 8, dtype=torch.int32)
    ok = torch.zeros(4, 3, dtype=torch.int32)
    with pytest.raises(RuntimeError, match="outside"):
        torch.ops.mamext.mam_linear_backward(torch.ones(4, 3), x, w, bad, ok, [True, True])
    with pytest.raises(RuntimeError, match="outside"):
        torch.ops.mamext.mam_linear_backward(torch.ones(4, 3), x, w, ok, -ok - 1, [False, True])


# ------------------------------------------------------ torch integration ---

def _mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(mamext.nn.MAMLinear(20, 32), torch.nn.ReLU(), mamext.nn.MAMLinear(32, 5))


def test_torch_compile_fullgraph_training_step_equals_eager():
    torch._dynamo.reset()
    eager, compiled_model = _mlp(), _mlp()
    compiled = torch.compile(compiled_model, fullgraph=True)
    x = torch.randn(16, 20)
    y = torch.randint(0, 5, (16,))
    opt_e = torch.optim.SGD(eager.parameters(), lr=0.1)
    opt_c = torch.optim.SGD(compiled_model.parameters(), lr=0.1)
    for _ in range(2):
        for model, opt in ((eager, opt_e), (compiled, opt_c)):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
    for pe, pc in zip(eager.parameters(), compiled_model.parameters()):
        torch.testing.assert_close(pe, pc, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), eager(x), rtol=1e-6, atol=1e-6)


def test_torch_export():
    model = _mlp().eval()
    x = torch.randn(3, 20)
    ep = torch.export.export(model, (x,))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert any("mamext" in t for t in targets), targets
    torch.testing.assert_close(ep.module()(x), model(x))


# ------------------------------------------------------------- bad input ---

@pytest.mark.parametrize("op", ["forward", "inference"])
def test_bad_inputs_raise_clear_errors(op):
    fn = getattr(torch.ops.mamext, f"mam_linear_{op}")
    x, w, b = torch.randn(4, 8), torch.randn(3, 8), torch.randn(3)
    cases = [
        ((x.int(), w.int(), None), "float32, float64"),
        ((x.bool(), w.bool(), None), "float32, float64"),
        ((x, torch.randn(3, 9), None), r"last dimension \(8\) must equal"),
        ((x, w, torch.randn(4)), r"bias must have shape \(3\)"),
        ((x, w, torch.randn(3, 1)), r"bias must have shape"),
        ((x.double(), w, None), "does not match input dtype"),
        ((x, w, b.double()), "does not match input dtype"),
        ((torch.randn(4, 0), torch.randn(3, 0), None), "in_features must be positive"),
        ((torch.tensor(1.0), w, None), "at least 1 dimension"),
        ((x, torch.randn(8), None), "must be 2-D"),
    ]
    for args, msg in cases:
        with pytest.raises(RuntimeError, match=msg):
            fn(*args)


def test_bad_device_mix_raises():
    x = torch.randn(4, 8)
    w = torch.randn(3, 8, device="meta")
    with pytest.raises((RuntimeError, ValueError), match="meta|device"):
        mamext.mam_linear(x, w)


def test_public_function_errors_are_clear():
    with pytest.raises(RuntimeError, match="must equal weight's in_features"):
        mamext.mam_linear(torch.randn(2, 5), torch.randn(3, 4))


# ------------------------------------------------------------ capability ---

def test_cpu_capability_and_forcing():
    assert mamext.cpu_capability() in ISA_LEVELS
    levels = available_isas()
    with pytest.raises(ValueError, match="unknown CPU capability"):
        mamext._C._set_cpu_capability("sse9")
    if "avx512" not in levels:
        with pytest.raises(ValueError, match="does not support"):
            mamext._C._set_cpu_capability("avx512")


@pytest.mark.parametrize("level", ISA_LEVELS)
def test_env_var_forces_level(level):
    env = dict(os.environ, MAMEXT_CPU_CAPABILITY=level)
    code = "import mamext; print(mamext.cpu_capability())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    best = available_isas()[-1]
    expected = level if level in available_isas() else best
    assert out.stdout.strip() == expected


def test_env_var_typo_is_an_error():
    env = dict(os.environ, MAMEXT_CPU_CAPABILITY="avx1024")
    out = subprocess.run([sys.executable, "-c", "import mamext"], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "unknown CPU capability" in out.stderr


# ---------------------------------------------------------------- module ---

def test_mamlinear_matches_nn_linear_interface():
    torch.manual_seed(0)
    lin = torch.nn.Linear(10, 4)
    torch.manual_seed(0)
    mam = mamext.nn.MAMLinear(10, 4)
    assert torch.equal(lin.weight, mam.weight) and torch.equal(lin.bias, mam.bias)
    assert [n for n, _ in mam.named_parameters()] == ["weight", "bias"]
    assert set(mam.state_dict()) == {"weight", "bias", "beta"}
    assert repr(mam) == "MAMLinear(in_features=10, out_features=4, bias=True, beta=0)"
    nob = mamext.nn.MAMLinear(10, 4, bias=False, dtype=torch.float64)
    assert nob.bias is None and nob.weight.dtype == torch.float64
    x = torch.randn(3, 10)
    torch.testing.assert_close(mam(x), mamext.mam_linear(x, mam.weight, mam.bias))


def test_mamlinear_reads_weight_afresh():
    mam = mamext.nn.MAMLinear(6, 3)
    x = torch.randn(2, 6)
    before = mam(x)
    del mam.weight  # what torch.nn.utils.prune does
    mam.weight = torch.zeros(3, 6)
    after = mam(x)
    assert torch.equal(after, mam.bias.detach().expand(2, 3))
    assert not torch.equal(before, after)
