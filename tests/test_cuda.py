"""CUDA kernels of the dense MAM operators (csrc/ops/cuda/).

Everything that needs a GPU is skipped with a reason when there is none (or
when mamext was built without CUDA). The build checks at the top run anywhere:
under .ci/cuda_build_check.sh (MAMEXT_EXPECT_CUDA_BUILD=1) they prove the
installed extension really contains the CUDA kernels.

The generic value/index/gradient tests in test_mam_linear.py also run on CUDA
(conftest.devices()); this file adds what is CUDA specific: bitwise agreement
with the CPU kernels, the tile edges of the tiled kernels, the NaN path inside
a tile, huge K, the deterministic and atomic backward, opcheck, torch.compile,
streams, a second device and the index-error path.

Without a GPU, the "emulated" tests at the end still run the CUDA kernels' own
source (csrc/ops/cuda/*.cu) on the CPU: g++ compiles it against
csrc/ops/cuda/emulation.h (blocks in sequence, each thread a std::thread, real
barriers and warp shuffles) and the results are checked against the reference
and the CPU kernels. That checks the kernels' logic (tiling, edges, index
recovery, NaN path, backward order), not the GPU toolchain or the hardware.
"""

from __future__ import annotations

import ctypes
import math
import os

import pytest
import torch

import mamext
from _cuda_emulation import BUILT_WITH_CUDA, build_emulation, needs_gpu
from mamext.reference import mam_linear_backward_reference, mam_linear_reference


DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
OPS = ("mam_linear_forward", "mam_linear_inference", "mam_linear_backward")

# Tiles of the float kernels: 128 x 128 (inference), 128 x 64 (with indices),
# k tiles of 16; float64: 16 x 16. Shapes straddle all of them.
EDGE_SHAPES = [  # (M, K, N)
    (1, 1, 1),
    (1, 5, 3),
    (2, 16, 64),
    (3, 17, 65),
    (127, 15, 129),
    (128, 16, 128),
    (129, 33, 130),
    (130, 4, 200),
    (257, 70, 63),
    (64, 257, 257),
]


# ------------------------------------------------------------ build checks ---

def test_cuda_build_expected():
    """Under the CI build check the installed extension must contain CUDA."""
    if os.environ.get("MAMEXT_EXPECT_CUDA_BUILD") != "1":
        pytest.skip("only under .ci/cuda_build_check.sh (MAMEXT_EXPECT_CUDA_BUILD=1)")
    assert mamext._C.build_info["cuda"] is True, mamext._C.build_info
    assert torch.version.cuda is not None


@pytest.mark.skipif(not BUILT_WITH_CUDA, reason="mamext was built without CUDA")
@pytest.mark.parametrize("op", OPS)
def test_cuda_kernels_registered(op):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"mamext::{op}", "CUDA")
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"mamext::{op}", "CPU")


# ---------------------------------------------------------------- helpers ---

def _data(shape, dtype, kind, gen):
    if kind == "normal":
        t = torch.randn(shape, generator=gen)
    elif kind == "ints":  # many exact ties
        t = torch.randint(-3, 4, shape, generator=gen).float()
    elif kind == "negative":  # all products of a positive x row are negative
        t = -torch.rand(shape, generator=gen) - 0.1
    else:
        raise ValueError(kind)
    return t.to(dtype)


def _same(a, b):
    """Equal values, NaN == NaN, -0 == +0 (assert_close with zero tolerance)."""
    assert a.dtype == b.dtype and a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def _bitwise(a, b):
    """Identical bits except for NaN payloads (the GPU makes canonical NaNs)."""
    assert a.dtype == b.dtype and a.shape == b.shape
    nan_a, nan_b = torch.isnan(a), torch.isnan(b)
    assert torch.equal(nan_a, nan_b)
    as_int = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    ia = a.masked_fill(nan_a, 0).contiguous().view(as_int)
    ib = b.masked_fill(nan_b, 0).contiguous().view(as_int)
    bad = (ia != ib).nonzero()
    assert bad.numel() == 0, f"{bad.shape[0]} elements differ in bits, first at {bad[:5].tolist()}"


def _check_vs_reference(x, w, b=None):
    """CUDA kernels (both forwards) against the CPU reference; CPU tensors back."""
    dev = "cuda"
    xd, wd = x.to(dev), w.to(dev)
    bd = b.to(dev) if b is not None else None
    out, amax, amin = (t.cpu() for t in torch.ops.mamext.mam_linear_forward(xd, wd, bd))
    inf = torch.ops.mamext.mam_linear_inference(xd, wd, bd).cpu()
    rout, ramax, ramin = mam_linear_reference(x, w, b, return_indices=True)
    assert amax.dtype == torch.int32 and amin.dtype == torch.int32
    _same(out, rout)
    _same(inf, rout)
    assert torch.equal(amax, ramax), (amax != ramax).nonzero()[:5]
    assert torch.equal(amin, ramin), (amin != ramin).nonzero()[:5]
    return out, amax, amin


# ------------------------------------------------------------ forward values ---

@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K,N", EDGE_SHAPES)
@pytest.mark.parametrize("kind", ["normal", "ints"])
def test_forward_matches_reference(dtype, M, K, N, kind):
    g = torch.Generator().manual_seed(M * 1000003 + K * 1009 + N)
    x, w = _data((M, K), dtype, kind, g), _data((N, K), dtype, kind, g)
    b = _data((N,), dtype, "normal", g)
    _check_vs_reference(x, w, b)
    _check_vs_reference(x, w, None)


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_all_products_negative(dtype):
    """The authors' kernel started the max at the smallest positive float."""
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(130, 40, generator=g) + 0.1).to(dtype)
    w = _data((70, 40), dtype, "negative", g)
    out, _, _ = _check_vs_reference(x, w)
    assert (out < 0).all()


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_weights_and_ties(dtype):
    x = torch.ones(131, 37, dtype=dtype)
    w = torch.zeros(67, 37, dtype=dtype)
    out, amax, amin = _check_vs_reference(x, w, torch.ones(67, dtype=dtype))
    assert (amax == 0).all() and (amin == 0).all() and (out == 1).all()
    w[:, 20] = 2.0  # one positive product: max at 20, min (a zero) at 0
    _, amax, amin = _check_vs_reference(x, w)
    assert (amax == 20).all() and (amin == 0).all()


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_signed_zero_value_is_the_first(dtype):
    """All products (signed) zero: the value is the product at index 0, like the reference."""
    g = torch.Generator().manual_seed(3)
    x = torch.zeros(140, 45, dtype=dtype)
    w = torch.randn(70, 45, generator=g, dtype=dtype)
    ref = mam_linear_reference(x, w)
    for out in (mamext.mam_linear(x.cuda(), w.cuda()).cpu(),
                torch.ops.mamext.mam_linear_forward(x.cuda(), w.cuda(), None)[0].cpu()):
        assert torch.equal(torch.signbit(out), torch.signbit(ref))


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where", ["x", "w"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite(dtype, where, value):
    """NaN / inf anywhere in a tile: outputs touching that row take the exact scan."""
    g = torch.Generator().manual_seed(7)
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
    _check_vs_reference(x, w, torch.randn(140, generator=g).to(dtype))


def _huge_k_problem(rows, neurons):
    """K = 70,000 > 65,536 (past the int16 range of the authors' packed kernel),
    extremes planted at known indices."""
    K = 70_000
    g = torch.Generator().manual_seed(11)
    x = torch.rand(rows, K, generator=g) + 0.5
    w = torch.rand(neurons, K, generator=g) * 0.1
    w[0, 69_999] = 5.0
    w[1, 65_536] = 5.0
    w[2, 40_000] = -5.0
    w[3, 66_000] = -3.0
    w[3, 65_537] = 4.0
    return x, w


def _assert_huge_k_indices(amax, amin):
    assert (amax[:, 0] == 69_999).all() and (amax[:, 1] == 65_536).all()
    assert (amin[:, 2] == 40_000).all() and (amin[:, 3] == 66_000).all() and (amax[:, 3] == 65_537).all()


@needs_gpu
def test_huge_k_indices():
    x, w = _huge_k_problem(3, 5)
    _, amax, amin = _check_vs_reference(x, w)
    _assert_huge_k_indices(amax, amin)


@needs_gpu
def test_empty_and_degenerate_shapes():
    w = torch.randn(5, 8, device="cuda")
    out, amax, amin = torch.ops.mamext.mam_linear_forward(torch.randn(0, 8, device="cuda"), w, None)
    assert out.shape == amax.shape == amin.shape == (0, 5)
    assert torch.ops.mamext.mam_linear_inference(torch.randn(2, 0, 8, device="cuda"), w, None).shape == (2, 0, 5)
    out = torch.ops.mamext.mam_linear_inference(torch.randn(3, 8, device="cuda"), torch.randn(0, 8, device="cuda"),
                                                None)
    assert out.shape == (3, 0)
    x = torch.randn(4, 3, 8, device="cuda")
    _same(mamext.mam_linear(x, w).cpu(), mam_linear_reference(x.cpu(), w.cpu()))


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_non_contiguous_and_misaligned(dtype):
    """Views: transposed (copied to contiguous) and offset by one element (no vector loads)."""
    g = torch.Generator().manual_seed(5)
    big = torch.randn(133, 66, generator=g).to(dtype)
    x = big[:, 1:65]  # K = 64 but rows start one element off a 16-byte boundary
    w = torch.randn(64, 70, generator=g).to(dtype).t()[:, :64]  # (70, 64) non-contiguous
    out = mamext.mam_linear(x.cuda(), w.cuda()).cpu()
    _same(out, mam_linear_reference(x, w))
    xd = big.cuda()[:, 1:65]
    _, amax, amin = mamext.mam_linear(xd, w.cuda(), return_indices=True)
    _, ramax, ramin = mam_linear_reference(x, w, return_indices=True)
    assert torch.equal(amax.cpu(), ramax) and torch.equal(amin.cpu(), ramin)


# ------------------------------------------------ CPU vs CUDA, bit for bit ---

@needs_gpu
@pytest.mark.parametrize("M,K,N", [(1, 7, 5), (9, 100, 33), (200, 300, 150), (300, 1000, 257)])
@pytest.mark.parametrize("kind", ["normal", "ints"])
@pytest.mark.parametrize("bias", [True, False])
def test_cpu_cuda_bitwise_float32(M, K, N, kind, bias):
    g = torch.Generator().manual_seed(M + K + N)
    x, w = _data((M, K), torch.float32, kind, g), _data((N, K), torch.float32, kind, g)
    b = torch.randn(N, generator=g) if bias else None
    cpu = torch.ops.mamext.mam_linear_forward(x, w, b)
    gpu = [t.cpu() for t in torch.ops.mamext.mam_linear_forward(x.cuda(), w.cuda(), b.cuda() if bias else None)]
    _bitwise(gpu[0], cpu[0])
    assert torch.equal(gpu[1], cpu[1]) and torch.equal(gpu[2], cpu[2])
    _bitwise(torch.ops.mamext.mam_linear_inference(x.cuda(), w.cuda(), b.cuda() if bias else None).cpu(),
             torch.ops.mamext.mam_linear_inference(x, w, b))


@needs_gpu
def test_cpu_cuda_bitwise_backward_deterministic():
    """The gather backward adds in the CPU kernel's order: identical bits in float32."""
    g = torch.Generator().manual_seed(21)
    x, w = torch.randn(150, 90, generator=g), torch.randn(70, 90, generator=g)
    x[:, 3] = 100.0  # many rows share an argmax: long sums per element
    gout = torch.randn(150, 70, generator=g)
    _, amax, amin = torch.ops.mamext.mam_linear_forward(x, w, None)
    cpu = torch.ops.mamext.mam_linear_backward(gout, x, w, amax, amin, [True, True])
    with _deterministic(True):
        gpu = torch.ops.mamext.mam_linear_backward(gout.cuda(), x.cuda(), w.cuda(), amax.cuda(), amin.cuda(),
                                                   [True, True])
        again = torch.ops.mamext.mam_linear_backward(gout.cuda(), x.cuda(), w.cuda(), amax.cuda(), amin.cuda(),
                                                     [True, True])
    for a, b, c in zip(gpu, cpu, again):
        _bitwise(a.cpu(), b)
        _bitwise(a.cpu(), c.cpu())


# --------------------------------------------------------------- backward ---

class _deterministic:
    def __init__(self, on):
        self.on = on

    def __enter__(self):
        self.prev = torch.are_deterministic_algorithms_enabled()
        self.prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
        torch.use_deterministic_algorithms(self.on)

    def __exit__(self, *exc):
        torch.use_deterministic_algorithms(self.prev, warn_only=self.prev_warn)


@needs_gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12), (torch.float16, 1e-2),
                                       (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (33, 17, 65), (130, 40, 129)])
def test_gradients_match_reference(dtype, tol, deterministic, M, K, N):
    g = torch.Generator().manual_seed(M + 7 * K + 13 * N)
    x = torch.randint(-2, 3, (M, K), generator=g).to(dtype)  # ties: argmax == argmin for some
    w = torch.randn(N, K, generator=g).to(dtype)
    b = torch.randn(N, generator=g).to(dtype)
    gout = torch.randn(M, N, generator=g).to(dtype)
    xd, wd, bd = (t.cuda().requires_grad_() for t in (x, w, b))
    with _deterministic(deterministic):
        out, amax, amin = mamext.mam_linear(xd, wd, bd, return_indices=True)
        gx, gw, gb = torch.autograd.grad(out, (xd, wd, bd), gout.cuda())
    rgx, rgw = mam_linear_backward_reference(gout, x, w, amax.cpu(), amin.cpu())
    torch.testing.assert_close(gx.cpu(), rgx, rtol=tol, atol=tol)
    torch.testing.assert_close(gw.cpu(), rgw, rtol=tol, atol=tol)
    torch.testing.assert_close(gb.cpu(), gout.float().sum(0).to(dtype), rtol=tol, atol=tol)


@needs_gpu
def test_gradcheck_float64():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 9, generator=g, dtype=torch.float64).cuda().requires_grad_()
    w = torch.randn(5, 9, generator=g, dtype=torch.float64).cuda().requires_grad_()
    b = torch.randn(5, generator=g, dtype=torch.float64).cuda().requires_grad_()
    assert torch.autograd.gradcheck(lambda *a: mamext.mam_linear(*a), (x, w, b))


@needs_gpu
def test_backward_mask_and_empty_outputs():
    x, w = torch.randn(20, 10, device="cuda"), torch.randn(7, 10, device="cuda")
    gout = torch.randn(20, 7, device="cuda")
    _, amax, amin = torch.ops.mamext.mam_linear_forward(x, w, None)
    gx, gw = torch.ops.mamext.mam_linear_backward(gout, x, w, amax, amin, [True, False])
    assert gx.shape == x.shape and gw.shape == (0,)
    gx, gw = torch.ops.mamext.mam_linear_backward(gout, x, w, amax, amin, [False, True])
    assert gx.shape == (0,) and gw.shape == w.shape
    e = torch.empty(0, 10, device="cuda")
    ei = torch.empty(0, 7, dtype=torch.int32, device="cuda")
    gx, gw = torch.ops.mamext.mam_linear_backward(torch.empty(0, 7, device="cuda"), e, w, ei, ei, [True, True])
    assert gx.shape == (0, 10) and torch.equal(gw.cpu(), torch.zeros(7, 10))


@needs_gpu
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("bad", [-1, 10, 2**31 - 1])
def test_backward_out_of_range_indices_raise(deterministic, bad):
    x, w = torch.randn(20, 10, device="cuda"), torch.randn(7, 10, device="cuda")
    gout = torch.randn(20, 7, device="cuda")
    _, amax, amin = torch.ops.mamext.mam_linear_forward(x, w, None)
    amax = amax.clone()
    amax[3, 2] = bad
    with _deterministic(deterministic), pytest.raises(RuntimeError, match=r"outside \[0, 10\)"):
        torch.ops.mamext.mam_linear_backward(gout, x, w, amax, amin, [True, True])
    # the context survives (no device-side assert, nothing written out of bounds)
    torch.cuda.synchronize()
    assert torch.ops.mamext.mam_linear_inference(x, w, None).isfinite().all()


# ------------------------------------------------------- torch integration ---

@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_opcheck(dtype):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(5, 3, 12, generator=g).to(dtype).cuda().requires_grad_()
    w = torch.randn(9, 12, generator=g).to(dtype).cuda().requires_grad_()
    b = torch.randn(9, generator=g).to(dtype).cuda().requires_grad_()
    torch.library.opcheck(torch.ops.mamext.mam_linear_forward, (x, w, b))
    torch.library.opcheck(torch.ops.mamext.mam_linear_inference, (x.detach(), w.detach(), None))
    _, amax, amin = torch.ops.mamext.mam_linear_forward(x.detach(), w.detach(), b.detach())
    gout = torch.randn(5, 3, 9, generator=g).to(dtype).cuda()
    torch.library.opcheck(torch.ops.mamext.mam_linear_backward,
                          (gout, x.detach(), w.detach(), amax, amin, [True, True]))


@needs_gpu
def test_torch_compile_training_step_equals_eager():
    def mlp():
        torch.manual_seed(0)
        return torch.nn.Sequential(mamext.nn.MAMLinear(40, 48), torch.nn.ReLU(), mamext.nn.MAMLinear(48, 5)).cuda()

    torch._dynamo.reset()
    eager, compiled_model = mlp(), mlp()
    compiled = torch.compile(compiled_model, fullgraph=True)
    x = torch.randn(64, 40, device="cuda")
    y = torch.randint(0, 5, (64,), device="cuda")
    opt_e = torch.optim.SGD(eager.parameters(), lr=0.1)
    opt_c = torch.optim.SGD(compiled_model.parameters(), lr=0.1)
    for _ in range(2):
        for model, opt in ((eager, opt_e), (compiled, opt_c)):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
    # the default (atomic) backward may round differently from run to run
    for pe, pc in zip(eager.parameters(), compiled_model.parameters()):
        torch.testing.assert_close(pe, pc, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), eager(x), rtol=1e-5, atol=1e-5)


@needs_gpu
def test_non_default_stream():
    g = torch.Generator().manual_seed(8)
    x, w = torch.randn(300, 200, generator=g), torch.randn(150, 200, generator=g)
    ref = torch.ops.mamext.mam_linear_forward(x, w, None)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        # produced and consumed on the side stream only: a kernel launched on
        # the default stream would race with these copies
        xd, wd = x.to("cuda", non_blocking=True), w.to("cuda", non_blocking=True)
        out = torch.ops.mamext.mam_linear_forward(xd, wd, None)
        gout = torch.ones(300, 150, device="cuda")
        gx, gw = torch.ops.mamext.mam_linear_backward(gout, xd, wd, out[1], out[2], [True, True])
        res = [t.to("cpu", non_blocking=True) for t in (*out, gx, gw)]
    s.synchronize()
    _bitwise(res[0], ref[0])
    assert torch.equal(res[1], ref[1]) and torch.equal(res[2], ref[2])
    rgx, rgw = mam_linear_backward_reference(torch.ones(300, 150), x, w, ref[1], ref[2])
    torch.testing.assert_close(res[3], rgx)
    torch.testing.assert_close(res[4], rgw)


@needs_gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs a second CUDA device")
def test_second_device():
    g = torch.Generator().manual_seed(9)
    x, w, b = torch.randn(70, 33, generator=g), torch.randn(65, 33, generator=g), torch.randn(65, generator=g)
    dev = torch.device("cuda", 1)
    with torch.cuda.device(0):  # current device 0, tensors on 1: the kernels must follow the tensors
        xd, wd, bd = (t.to(dev).requires_grad_() for t in (x, w, b))
        out, amax, amin = mamext.mam_linear(xd, wd, bd, return_indices=True)
        assert out.device == dev and amax.device == dev
        out.sum().backward()
    rout, ramax, ramin = mam_linear_reference(x, w, b, return_indices=True)
    _same(out.detach().cpu(), rout)
    assert torch.equal(amax.cpu(), ramax) and torch.equal(amin.cpu(), ramin)
    rgx, rgw = mam_linear_backward_reference(torch.ones(70, 65), x, w, ramax, ramin)
    torch.testing.assert_close(xd.grad.cpu(), rgx)
    torch.testing.assert_close(wd.grad.cpu(), rgw)


@needs_gpu
def test_mixed_devices_rejected():
    with pytest.raises(RuntimeError, match="device|cuda|cpu"):
        torch.ops.mamext.mam_linear_forward(torch.randn(3, 4, device="cuda"), torch.randn(5, 4), None)


# ------------------------------------------- emulated on the CPU (no GPU) ---

_CAPI = r"""
#include "ops/cuda/mam_linear_kernel.h"
using namespace mamext::cuda;
extern "C" int emu_forward(int dt, const void* x, const void* w, const void* b, void* out, int32_t* amax,
                           int32_t* amin, int64_t M, int64_t N, int64_t K) {
  return launch_forward(static_cast<DType>(dt), x, w, b, out, amax, amin, M, N, K, nullptr);
}
extern "C" int emu_backward(int dt, const void* g, const void* x, const void* w, const int32_t* amax,
                            const int32_t* amin, void* gx, void* gw, int64_t M, int64_t N, int64_t K, int det,
                            int32_t* err) {
  return launch_backward(static_cast<DType>(dt), g, x, w, amax, amin, gx, gw, M, N, K, det != 0, err, nullptr);
}
"""
_DT = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}


class _Emulated:
    """The CUDA kernels compiled for the CPU emulation, called through ctypes on CPU tensors."""

    def __init__(self, lib):
        P, I = ctypes.c_void_p, ctypes.c_int64
        lib.emu_forward.argtypes = [ctypes.c_int, P, P, P, P, P, P, I, I, I]
        lib.emu_backward.argtypes = [ctypes.c_int, P, P, P, P, P, P, P, I, I, I, ctypes.c_int, P]
        self.lib = lib

    @staticmethod
    def _p(t):
        return None if t is None else t.data_ptr()

    def forward(self, x, w, b=None, track=True):
        (M, K), N = x.shape, w.shape[0]
        w = w.contiguous()
        b = b.contiguous() if b is not None else None
        out = torch.full((M, N), 1234.0, dtype=x.dtype)  # garbage: every element must be written
        amax = torch.full((M, N), -7, dtype=torch.int32) if track else None
        amin = torch.full((M, N), -7, dtype=torch.int32) if track else None
        rc = self.lib.emu_forward(_DT[x.dtype], self._p(x), self._p(w), self._p(b), self._p(out), self._p(amax),
                                  self._p(amin), M, N, K)
        assert rc == 0
        return out, amax, amin

    def backward(self, g, x, w, amax, amin, deterministic, mask=(True, True)):
        (M, K), N = x.shape, w.shape[0]
        ct = torch.float64 if x.dtype == torch.float64 else torch.float32
        gx = torch.zeros(M, K, dtype=ct) if mask[0] else None
        gw = torch.zeros(N, K, dtype=ct) if mask[1] else None
        err = torch.zeros(1, dtype=torch.int32)
        rc = self.lib.emu_backward(_DT[x.dtype], self._p(g), self._p(x), self._p(w), self._p(amax), self._p(amin),
                                   self._p(gx), self._p(gw), M, N, K, int(deterministic), self._p(err))
        assert rc == 0
        cast = (lambda t: None if t is None else t.to(x.dtype))
        return cast(gx), cast(gw), int(err[0])


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    lib = build_emulation(tmp_path_factory.mktemp("cuda_emulation"),
                          ["mam_linear_kernel.cu", "mam_linear_backward_kernel.cu"], _CAPI, "mamext_cuda_emulation")
    return _Emulated(lib)


def _emu_check(emu, x, w, b=None, inference=True):
    out, amax, amin = emu.forward(x, w, b)
    inf = emu.forward(x, w, b, track=False)[0] if inference else out
    rout, ramax, ramin = mam_linear_reference(x, w, b, return_indices=True)
    _same(out, rout)
    _same(inf, rout)
    assert torch.equal(amax, ramax), (amax != ramax).nonzero()[:5]
    assert torch.equal(amin, ramin), (amin != ramin).nonzero()[:5]
    if x.dtype in (torch.float32, torch.float64):  # signed zeros: the value at the first index
        assert torch.equal(torch.signbit(out), torch.signbit(rout))
        assert torch.equal(torch.signbit(inf), torch.signbit(rout))
    return out, amax, amin


EMU_SHAPES = [(1, 1, 1), (3, 17, 65), (127, 15, 129), (129, 33, 130), (130, 4, 200), (64, 257, 63)]


@pytest.mark.parametrize("M,K,N", EMU_SHAPES)
@pytest.mark.parametrize("kind", ["normal", "ints"])
def test_emulated_forward_float32(emu, M, K, N, kind):
    g = torch.Generator().manual_seed(M * 1000003 + K * 1009 + N)
    x, w = _data((M, K), torch.float32, kind, g), _data((N, K), torch.float32, kind, g)
    b = torch.randn(N, generator=g)
    _emu_check(emu, x, w, b)
    _emu_check(emu, x, w)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("M,K,N", [(1, 5, 3), (33, 19, 40), (130, 36, 70)])
def test_emulated_forward_other_dtypes(emu, dtype, M, K, N):
    if dtype == torch.float64 and M > 100:
        M = 40  # one thread per output: keep the emulated grid small
    g = torch.Generator().manual_seed(M + K + N)
    for kind in ("normal", "ints"):
        x, w = _data((M, K), dtype, kind, g), _data((N, K), dtype, kind, g)
        _emu_check(emu, x, w, _data((N,), dtype, "normal", g))


def test_emulated_special_values(emu):
    """All-negative products, zero weights, all-zero products (signed zeros), misaligned rows."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(130, 40, generator=g) + 0.1
    out, _, _ = _emu_check(emu, x, -torch.rand(70, 40, generator=g) - 0.1)
    assert (out < 0).all()
    w = torch.zeros(67, 37)
    _, amax, amin = _emu_check(emu, torch.ones(131, 37), w, torch.ones(67))
    assert (amax == 0).all() and (amin == 0).all()
    w[:, 20] = 2.0
    _, amax, amin = _emu_check(emu, torch.ones(131, 37), w)
    assert (amax == 20).all() and (amin == 0).all()
    _emu_check(emu, torch.zeros(140, 45), torch.randn(70, 45, generator=g))
    buf = torch.randn(133 * 64 + 1, generator=g)
    _emu_check(emu, buf[1:].view(133, 64), torch.randn(70, 64, generator=g))  # rows off 16-byte alignment


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_emulated_non_finite(emu, dtype):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(131, 20, generator=g).to(dtype)
    w = torch.randn(70, 20, generator=g).to(dtype)
    x[3, 7] = math.nan
    x[100, 0] = math.inf
    x[129, 19] = -math.inf
    w[5, 12] = math.nan
    w[66, 10] = math.inf
    x[11, 10] = 0.0  # inf * 0 = NaN
    w[69, 0] = -math.inf
    _emu_check(emu, x, w, torch.randn(70, generator=g).to(dtype))


def test_emulated_huge_k(emu):
    x, w = _huge_k_problem(2, 4)
    _, amax, amin = _emu_check(emu, x, w, inference=False)
    _assert_huge_k_indices(amax, amin)


def test_emulated_forward_bitwise_equals_cpu_kernels(emu):
    g = torch.Generator().manual_seed(3)
    x, w, b = torch.randn(140, 100, generator=g), torch.randn(70, 100, generator=g), torch.randn(70, generator=g)
    cpu = torch.ops.mamext.mam_linear_forward(x, w, b)
    out, amax, amin = emu.forward(x, w, b)
    _bitwise(out, cpu[0])
    assert torch.equal(amax, cpu[1]) and torch.equal(amin, cpu[2])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (33, 17, 40)])
def test_emulated_backward(emu, dtype, M, K, N):
    g = torch.Generator().manual_seed(M + K + N)
    x = torch.randint(-2, 3, (M, K), generator=g).to(dtype)  # ties: argmax == argmin for some
    if M > 1:
        x[:, 3] = 100  # long sums into one column
    w = torch.randn(N, K, generator=g).to(dtype)
    gout = torch.randn(M, N, generator=g).to(dtype)
    _, amax, amin = torch.ops.mamext.mam_linear_forward(x, w, None)
    cgx, cgw = torch.ops.mamext.mam_linear_backward(gout, x, w, amax, amin, [True, True])
    # deterministic gather: the CPU kernel's summation order, identical bits
    gx, gw, err = emu.backward(gout, x, w, amax, amin, True)
    assert err == 0
    _bitwise(gx, cgx)
    _bitwise(gw, cgw)
    gx, gw, err = emu.backward(gout, x, w, amax, amin, False)
    tol = {torch.float32: 1e-5, torch.float64: 1e-12}.get(dtype, 2e-2)
    assert err == 0
    torch.testing.assert_close(gx, cgx, rtol=tol, atol=tol)
    torch.testing.assert_close(gw, cgw, rtol=tol, atol=tol)
    gx, gw, _ = emu.backward(gout, x, w, amax, amin, True, mask=(True, False))
    assert gw is None and torch.equal(gx, cgx)
    gx, gw, _ = emu.backward(gout, x, w, amax, amin, True, mask=(False, True))
    assert gx is None and torch.equal(gw, cgw)


@pytest.mark.parametrize("deterministic", [True, False])
@pytest.mark.parametrize("bad", [-1, 10, 2**31 - 1])
def test_emulated_backward_flags_bad_indices(emu, deterministic, bad):
    g = torch.Generator().manual_seed(5)
    x, w, gout = torch.randn(20, 10, generator=g), torch.randn(7, 10, generator=g), torch.randn(20, 7, generator=g)
    _, amax, amin = torch.ops.mamext.mam_linear_forward(x, w, None)
    amax[3, 2] = bad
    _, _, err = emu.backward(gout, x, w, amax, amin, deterministic)
    assert err == 1
