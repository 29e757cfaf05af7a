"""CUDA kernels of the dense MAM operators (csrc/ops/cuda/).

Everything that needs a GPU is skipped with a reason when there is none (or
when mamext was built without CUDA). The build checks at the top run anywhere:
under .ci/cuda_build_check.sh (MAMEXT_EXPECT_CUDA_BUILD=1) they prove the
installed extension really contains the CUDA kernels.

The generic value/index/gradient tests in test_mam_linear.py also run on CUDA
(op_testing.DEVICES), with shapes past one CUDA tile: all-negative products,
zero weights and ties, signed zeros, NaN / inf inside a tile, huge K, empty
shapes, gradcheck; test_opcheck.py runs opcheck on CUDA. This file adds what
is CUDA specific: bitwise agreement with the CPU kernels, the tile edges of
the tiled kernels, the deterministic and atomic backward, torch.compile,
streams, a second device and the index-error path.

Without a GPU, the "emulated" tests at the end still run the CUDA kernels' own
source on the CPU (tests/_cuda_emulation.py: g++ against the CUDA emulation
header, the threads of a block as fibers with real barriers and warp
shuffles) and check the results against the reference and the CPU kernels.
That checks the kernels' logic (tiling, edges, index recovery, NaN path,
backward order, barriers), not the GPU toolchain or the hardware.
"""

from __future__ import annotations

import ctypes
import math
import os

import pytest
import torch

import mamext
from _cuda_emulation import BUILT_WITH_CUDA, EmulatedKernels, build_emulation, needs_gpu
from mamext.reference import mam_linear_backward_reference, mam_linear_reference
from op_testing import (FLOAT_DTYPES as DTYPES, DenseOps, assert_bitwise, assert_huge_k_indices, assert_same,
                        check_dense_forward, huge_k_problem, sample)
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

def _check_vs_reference(x, w, b=None):
    """CUDA kernels (both forwards) against the reference: values and NaN places, indices."""
    return check_dense_forward(DenseOps("cuda"), x, w, b, signs=None)


# ------------------------------------------------------------ forward values ---

@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K,N", EDGE_SHAPES)
@pytest.mark.parametrize("kind", ["normal", "ints"])
def test_forward_matches_reference(dtype, M, K, N, kind):
    g = torch.Generator().manual_seed(M * 1000003 + K * 1009 + N)
    x, w = sample((M, K), kind, g, dtype), sample((N, K), kind, g, dtype)
    b = sample((N,), "normal", g, dtype)
    _check_vs_reference(x, w, b)
    _check_vs_reference(x, w, None)


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_non_contiguous_and_misaligned(dtype):
    """Views: transposed (copied to contiguous) and offset by one element (no vector loads)."""
    g = torch.Generator().manual_seed(5)
    big = torch.randn(133, 66, generator=g).to(dtype)
    x = big[:, 1:65]  # K = 64 but rows start one element off a 16-byte boundary
    w = torch.randn(64, 70, generator=g).to(dtype).t()[:, :64]  # (70, 64) non-contiguous
    out = mamext.mam_linear(x.cuda(), w.cuda()).cpu()
    assert_same(out, mam_linear_reference(x, w), signs=None)
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
    x, w = sample((M, K), kind, g, torch.float32), sample((N, K), kind, g, torch.float32)
    b = torch.randn(N, generator=g) if bias else None
    cpu = torch.ops.mamext.mam_linear_forward(x, w, b)
    gpu = [t.cpu() for t in torch.ops.mamext.mam_linear_forward(x.cuda(), w.cuda(), b.cuda() if bias else None)]
    assert_bitwise(gpu[0], cpu[0])
    assert torch.equal(gpu[1], cpu[1]) and torch.equal(gpu[2], cpu[2])
    assert_bitwise(torch.ops.mamext.mam_linear_inference(x.cuda(), w.cuda(), b.cuda() if bias else None).cpu(),
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
        assert_bitwise(a.cpu(), b)
        assert_bitwise(a.cpu(), c.cpu())


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
    assert_bitwise(res[0], ref[0])
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
    assert_same(out.detach().cpu(), rout, signs=None)
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


class _Emulated(EmulatedKernels):
    """The dense CUDA kernels compiled for the CPU emulation, on CPU tensors (a DenseOps)."""

    P, I = ctypes.c_void_p, ctypes.c_int64
    signatures = {"emu_forward": [ctypes.c_int, P, P, P, P, P, P, I, I, I],
                  "emu_backward": [ctypes.c_int, P, P, P, P, P, P, P, I, I, I, ctypes.c_int, P]}

    def forward(self, x, w, b=None, track=True):
        (M, K), N = x.shape, w.shape[0]
        w = w.contiguous()
        b = b.contiguous() if b is not None else None
        out = torch.full((M, N), 1234.0, dtype=x.dtype)  # garbage: every element must be written
        amax = torch.full((M, N), -7, dtype=torch.int32) if track else None
        amin = torch.full((M, N), -7, dtype=torch.int32) if track else None
        p = self.ptr
        rc = self.lib.emu_forward(_DT[x.dtype], p(x), p(w), p(b), p(out), p(amax), p(amin), M, N, K)
        assert rc == 0, f"emulated launch failed ({rc}), see stderr"
        return out, amax, amin

    def inference(self, x, w, b=None):
        return self.forward(x, w, b, track=False)[0]

    def backward(self, g, x, w, amax, amin, deterministic, mask=(True, True)):
        (M, K), N = x.shape, w.shape[0]
        ct = torch.float64 if x.dtype == torch.float64 else torch.float32
        gx = torch.zeros(M, K, dtype=ct) if mask[0] else None
        gw = torch.zeros(N, K, dtype=ct) if mask[1] else None
        err = torch.zeros(1, dtype=torch.int32)
        p = self.ptr
        rc = self.lib.emu_backward(_DT[x.dtype], p(g), p(x), p(w), p(amax), p(amin), p(gx), p(gw), M, N, K,
                                   int(deterministic), p(err))
        assert rc == 0, f"emulated launch failed ({rc}), see stderr"
        cast = (lambda t: None if t is None else t.to(x.dtype))
        return cast(gx), cast(gw), int(err[0])


@pytest.fixture(scope="module")
def emu():
    return _Emulated(build_emulation(["mam_linear_kernel.cu", "mam_linear_backward_kernel.cu"], _CAPI,
                                     "mamext_cuda_emulation"))


def _emu_check(emu, x, w, b=None, inference=True):
    """Both emulated forwards against the reference; float32 / float64: every sign bit (signed zeros
    take the value at the first index)."""
    signs = "all" if x.dtype in (torch.float32, torch.float64) else None
    return check_dense_forward(emu, x, w, b, inference=inference, signs=signs)


EMU_SHAPES = [(1, 1, 1), (3, 17, 65), (127, 15, 129), (129, 33, 130), (130, 4, 200), (64, 257, 63)]


@pytest.mark.parametrize("M,K,N", EMU_SHAPES)
@pytest.mark.parametrize("kind", ["normal", "ints"])
def test_emulated_forward_float32(emu, M, K, N, kind):
    g = torch.Generator().manual_seed(M * 1000003 + K * 1009 + N)
    x, w = sample((M, K), kind, g, torch.float32), sample((N, K), kind, g, torch.float32)
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
        x, w = sample((M, K), kind, g, dtype), sample((N, K), kind, g, dtype)
        _emu_check(emu, x, w, sample((N,), "normal", g, dtype))


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
    x, w = huge_k_problem(2, 4)
    _, amax, amin = _emu_check(emu, x, w, inference=False)
    assert_huge_k_indices(amax, amin)


def test_emulated_forward_bitwise_equals_cpu_kernels(emu):
    g = torch.Generator().manual_seed(3)
    x, w, b = torch.randn(140, 100, generator=g), torch.randn(70, 100, generator=g), torch.randn(70, generator=g)
    cpu = torch.ops.mamext.mam_linear_forward(x, w, b)
    out, amax, amin = emu.forward(x, w, b)
    assert_bitwise(out, cpu[0])
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
    assert_bitwise(gx, cgx)
    assert_bitwise(gw, cgw)
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


# ------------------------------------------------- the emulation itself ---

_SELF_TEST_CAPI = r"""
#include "ops/cuda/common.cuh"
namespace {
constexpr int kT = 64;
__global__ void reverse(int* out, bool barrier) {  // out[b][t] = the value thread 63 - t wrote
  __shared__ int s[kT];
  s[threadIdx.x] = 1000 * blockIdx.x + threadIdx.x;
  if (barrier) __syncthreads();
  out[blockIdx.x * kT + threadIdx.x] = s[kT - 1 - threadIdx.x];
}
__global__ void warp_ops(int* out) {
  const int t = threadIdx.x;
  const int any = __syncthreads_or(t == 37);
  out[t] = __shfl_xor_sync(0xffffffffu, t, 1) + 100 * __shfl_sync(0xffffffffu, t, 3) + 10000 * any;
}
__global__ void early_exit(int* out) {
  if (threadIdx.x == 5) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}
__global__ void misaligned_load(const float* p, float* out) { out[threadIdx.x] = __ldg((const float4*)(p + 1)).x; }
}  // namespace
extern "C" int self_test(int which, int* out, const float* p, float* f) {
  switch (which) {
    case 0: MAMEXT_LAUNCH(reverse, 3, kT, nullptr, out, true); break;
    case 1: MAMEXT_LAUNCH(reverse, 3, kT, nullptr, out, false); break;
    case 2: MAMEXT_LAUNCH(warp_ops, 1, kT, nullptr, out); break;
    case 3: MAMEXT_LAUNCH(early_exit, 1, kT, nullptr, out); break;
    case 4: MAMEXT_LAUNCH(misaligned_load, 1, 1, nullptr, p, f); break;
  }
  return cudaGetLastError();
}
"""


@pytest.fixture(scope="module")
def emu_self_test():
    lib = build_emulation([], _SELF_TEST_CAPI, "mamext_cuda_emulation_self_test")
    P = ctypes.c_void_p
    lib.self_test.argtypes = [ctypes.c_int, P, P, P]
    return lib.self_test


def test_emulation_barriers_and_missing_barriers(emu_self_test):
    """With the barrier every thread reads what another wrote; without it, the threads that run before
    the writer read the stale value (the previous block's), in both scheduling directions."""
    out = torch.full((3, 64), -1, dtype=torch.int32)
    want = 1000 * torch.arange(3)[:, None] + torch.arange(63, -1, -1)
    assert emu_self_test(0, out.data_ptr(), None, None) == 0
    assert torch.equal(out, want.int())
    assert emu_self_test(1, out.data_ptr(), None, None) == 0
    stale = out != want
    assert stale[0].any() and stale[1].any() and stale[2].any()
    assert stale[:, :32].any() and stale[:, 32:].any()


def test_emulation_warp_shuffles_and_syncthreads_or(emu_self_test):
    out = torch.full((64,), -1, dtype=torch.int32)
    assert emu_self_test(2, out.data_ptr(), None, None) == 0
    t = torch.arange(64)
    assert torch.equal(out, ((t ^ 1) + 100 * ((t // 32) * 32 + 3) + 10000).int())


def test_emulation_reports_deadlock_and_misaligned_load(emu_self_test, capfd):
    """A barrier some thread never reaches, and a float4 load off 16 bytes, fail the launch (no hang)."""
    out = torch.zeros(64, dtype=torch.int32)
    assert emu_self_test(3, out.data_ptr(), None, None) == 719
    assert "deadlock in block 0 of 64 threads: 63 wait at __syncthreads" in capfd.readouterr().err
    buf = torch.zeros(16)
    res = torch.zeros(1)
    assert emu_self_test(4, None, buf.data_ptr(), res.data_ptr()) == 719
    assert "misaligned __ldg of 16 bytes" in capfd.readouterr().err
