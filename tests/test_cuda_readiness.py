"""CUDA kernels: split K, the small-batch tile, the shared-memory gather
backward, and the GPU-only checks for the first run on a device.

Emulated (run anywhere with g++): the dense forward with its K range split
into slices (the launch heuristic only splits when the output tiles are few
next to the SM count, and the CPU emulation reports a one-SM device, so the
tests force the split) and the small-M tile, checked against the reference and
the CPU kernels bit for bit, with ties and signed zeros across slice
boundaries, NaN in a later slice and all-negative products; the heuristic
itself; the deterministic gather backward against the CPU kernel. The cache
that lets the glue skip repeated checks (csrc/ops/cuda/content_cache.h), on CPU
tensors. With MAMEXT_TSAN=1, a ThreadSanitizer build of the emulated forward,
which must be clean and must catch a deleted barrier.

GPU (skipped without one): offset views reaching the kernels misaligned,
CUDA graph capture of the dense backward and the packed op, a tensor above
2^31 elements, the packed op on a second device, the per-weight caches of the
index and structure checks.
"""

from __future__ import annotations

import ctypes
import math
import os
import subprocess
import sys

import pytest
import torch

import mamext  # noqa: F401  (registers the operators)
from _cuda_emulation import build_emulation, needs_gpu
from mamext.reference import mam_linear_reference

_CAPI = r"""
#include "ops/cuda/mam_linear_kernel.h"
using namespace mamext::cuda;
extern "C" int emu_forward_split(int dt, const void* x, const void* w, const void* b, void* out, int32_t* amax,
                                 int32_t* amin, int64_t M, int64_t N, int64_t K, int slices, void* ws) {
  return launch_forward(static_cast<DType>(dt), x, w, b, out, amax, amin, M, N, K, nullptr, slices, ws);
}
extern "C" int64_t emu_workspace_bytes(int64_t M, int64_t N, int slices, int track) {
  return static_cast<int64_t>(forward_workspace_bytes(M, N, slices, track != 0));
}
extern "C" int emu_k_slices(int dt, int64_t M, int64_t N, int64_t K, int track, int sms) {
  return forward_k_slices(static_cast<DType>(dt), M, N, K, track != 0, sms);
}
extern "C" int emu_backward(int dt, const void* g, const void* x, const void* w, const int32_t* amax,
                            const int32_t* amin, void* gx, void* gw, int64_t M, int64_t N, int64_t K, int det,
                            int32_t* err) {
  return launch_backward(static_cast<DType>(dt), g, x, w, amax, amin, gx, gw, M, N, K, det != 0, err, nullptr);
}
"""
_DT = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}
_F32 = 0


class _Emulated:
    def __init__(self, lib):
        P, I, C = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
        lib.emu_forward_split.argtypes = [C, P, P, P, P, P, P, I, I, I, C, P]
        lib.emu_workspace_bytes.argtypes = [I, I, C, C]
        lib.emu_workspace_bytes.restype = I
        lib.emu_k_slices.argtypes = [C, I, I, I, C, C]
        lib.emu_backward.argtypes = [C, P, P, P, P, P, P, P, I, I, I, C, P]
        self.lib = lib

    @staticmethod
    def _p(t):
        return None if t is None else t.data_ptr()

    def forward(self, x, w, b=None, track=True, slices=1):
        (M, K), N = x.shape, w.shape[0]
        out = torch.full((M, N), 1234.0, dtype=x.dtype)  # garbage: every element must be written
        amax = torch.full((M, N), -7, dtype=torch.int32) if track else None
        amin = torch.full((M, N), -7, dtype=torch.int32) if track else None
        nbytes = self.lib.emu_workspace_bytes(M, N, slices, int(track))
        ws = torch.full((max(nbytes, 1),), 0xA5, dtype=torch.uint8) if slices > 1 else None
        rc = self.lib.emu_forward_split(_DT[x.dtype], self._p(x), self._p(w.contiguous()),
                                        self._p(None if b is None else b.contiguous()), self._p(out),
                                        self._p(amax), self._p(amin), M, N, K, slices, self._p(ws))
        assert rc == 0
        return out, amax, amin

    def k_slices(self, M, N, K, track, sms, dtype=torch.float32):
        return self.lib.emu_k_slices(_DT[dtype], M, N, K, int(track), sms)

    def backward(self, g, x, w, amax, amin, deterministic):
        (M, K), N = x.shape, w.shape[0]
        ct = torch.float64 if x.dtype == torch.float64 else torch.float32
        gx, gw = torch.zeros(M, K, dtype=ct), torch.zeros(N, K, dtype=ct)
        err = torch.zeros(1, dtype=torch.int32)
        rc = self.lib.emu_backward(_DT[x.dtype], self._p(g), self._p(x), self._p(w), self._p(amax), self._p(amin),
                                   self._p(gx), self._p(gw), M, N, K, int(deterministic), self._p(err))
        assert rc == 0
        return gx.to(x.dtype), gw.to(x.dtype), int(err[0])


@pytest.fixture(scope="module")
def emu():
    lib = build_emulation(["mam_linear_kernel.cu", "mam_linear_backward_kernel.cu"], _CAPI, "mamext_cuda_readiness")
    return _Emulated(lib)


def _bitwise(a, b):
    """Identical bits except for NaN payloads."""
    assert a.dtype == b.dtype and a.shape == b.shape
    nan_a, nan_b = torch.isnan(a), torch.isnan(b)
    assert torch.equal(nan_a, nan_b)
    as_int = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    ia = a.masked_fill(nan_a, 0).contiguous().view(as_int)
    ib = b.masked_fill(nan_b, 0).contiguous().view(as_int)
    bad = (ia != ib).nonzero()
    assert bad.numel() == 0, f"{bad.shape[0]} elements differ in bits, first at {bad[:5].tolist()}"


def _check(emu, x, w, b=None, slices=1):
    """Both forwards (with indices, inference) against the reference and the CPU kernels, bit for bit."""
    out, amax, amin = emu.forward(x, w, b, track=True, slices=slices)
    inf = emu.forward(x, w, b, track=False, slices=slices)[0]
    rout, ramax, ramin = mam_linear_reference(x, w, b, return_indices=True)
    cpu = torch.ops.mamext.mam_linear_forward(x, w, b)
    assert torch.equal(amax, ramax), (amax != ramax).nonzero()[:5]
    assert torch.equal(amin, ramin), (amin != ramin).nonzero()[:5]
    _bitwise(out, rout)
    _bitwise(inf, rout)
    _bitwise(out, cpu[0])
    assert torch.equal(amax, cpu[1]) and torch.equal(amin, cpu[2])
    return out, amax, amin


# ------------------------------------------------------- split K (emulated) ---

def test_emulated_split_heuristic(emu):
    """Split only when the tiles leave at least half the SMs idle; one wave of blocks; slices >= 128 k."""
    # 256 x 4096 x 1024 on an H100/H200 (132 SMs): 16 inference tiles, 32 tiles with indices
    assert emu.k_slices(256, 1024, 4096, track=False, sms=132) == 8
    assert emu.k_slices(256, 1024, 4096, track=True, sms=132) == 4
    assert emu.k_slices(4096, 4096, 4096, track=False, sms=132) == 1  # 1024 tiles
    assert emu.k_slices(256, 1024, 4096, track=False, sms=1) == 1  # the emulated one-SM device
    assert emu.k_slices(256, 1024, 200, track=False, sms=132) == 1  # K too short to cut
    assert emu.k_slices(256, 1024, 4096, track=False, sms=132, dtype=torch.float64) == 1
    # batch below 32: the small tile (32 x 128), 8 tiles, 16 slices
    assert emu.k_slices(8, 1024, 4096, track=False, sms=132) == 16
    assert emu.k_slices(1, 128, 1 << 20, track=True, sms=132) == 32  # capped


@pytest.mark.parametrize("slices", [2, 3, 7])
@pytest.mark.parametrize("M,K,N", [(40, 300, 70), (130, 113, 65), (5, 260, 130)])
@pytest.mark.parametrize("kind", ["normal", "ints"])
def test_emulated_split_matches_reference(emu, slices, M, K, N, kind):
    g = torch.Generator().manual_seed(M * 7 + K * 3 + N + slices)
    if kind == "normal":
        x, w = torch.randn(M, K, generator=g), torch.randn(N, K, generator=g)
    else:  # many exact ties, across slice boundaries too
        x = torch.randint(-2, 3, (M, K), generator=g).float()
        w = torch.randint(-2, 3, (N, K), generator=g).float()
    _check(emu, x, w, torch.randn(N, generator=g), slices=slices)
    _check(emu, x, w, None, slices=slices)


def test_emulated_split_ties_and_signed_zeros_across_slices(emu):
    """K = 64, 4 slices of 16: equal extremes in different slices keep the lowest index; zeros keep the first sign."""
    M, K, N = 6, 64, 8
    x = torch.ones(M, K)
    w = torch.zeros(N, K)
    w[0, 5], w[0, 40] = 3.0, 3.0  # max tie across slices 0 and 2
    w[1, 20], w[1, 60] = -3.0, -3.0  # min tie across slices 1 and 3
    w[2, 17], w[2, 63] = 2.0, 2.0  # the first slice holds neither
    x[1, :] = -1.0  # row 1: every product with a zero weight is -0
    x[2, :16] = -1.0  # row 2: -0 in slice 0, +0 after
    x[3, 16:] = -1.0  # row 3: +0 in slice 0, -0 after
    x[4, :] = 0.0  # row 4: only zeros
    x[4, 50] = -1.0
    out, amax, amin = _check(emu, x, w, None, slices=4)
    assert amax[0, 0] == 5 and amin[0, 1] == 20 and amax[0, 2] == 17
    ref = mam_linear_reference(x, w)
    assert torch.equal(torch.signbit(out), torch.signbit(ref))
    # w[7] is all zeros: the output is twice the first product's zero
    assert torch.signbit(out[1, 7]) and torch.signbit(out[2, 7]) and not torch.signbit(out[3, 7])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_emulated_split_non_finite_in_later_slices(emu, dtype):
    g = torch.Generator().manual_seed(9)
    M, K, N = 40, 200, 70
    x = torch.randn(M, K, generator=g).to(dtype)
    w = torch.randn(N, K, generator=g).to(dtype)
    x[3, 150] = math.nan  # NaN in the last slice only
    x[5, 60] = math.nan  # NaN in two slices: the lower index wins
    x[5, 190] = math.nan
    x[7, 20] = math.inf  # inf in the first slice, NaN later
    x[7, 180] = math.nan
    w[9, 100] = -math.inf  # one weight row with -inf in the middle slice
    w[11, 130] = math.inf
    x[13, 130] = 0.0  # inf * 0 = NaN in a later slice
    out, amax, amin = _check(emu, x, w, torch.randn(N, generator=g).to(dtype), slices=4)
    assert torch.isnan(out[3]).all() and (amax[3] == 150).all() and (amin[3] == 150).all()
    assert (amax[5] == 60).all() and (amax[7] == 180).all()


def test_emulated_split_all_negative_products(emu):
    g = torch.Generator().manual_seed(2)
    x = torch.rand(33, 150, generator=g) + 0.1
    w = -torch.rand(65, 150, generator=g) - 0.1
    out, _, _ = _check(emu, x, w, None, slices=3)
    assert (out < 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_emulated_split_half_types(emu, dtype):
    g = torch.Generator().manual_seed(4)
    x = torch.randint(-3, 4, (20, 180), generator=g).to(dtype)
    w = torch.randn(66, 180, generator=g).to(dtype)
    _check(emu, x, w, torch.randn(66, generator=g).to(dtype), slices=5)


def test_emulated_split_equals_unsplit(emu):
    g = torch.Generator().manual_seed(6)
    x, w, b = torch.randn(50, 500, generator=g), torch.randn(90, 500, generator=g), torch.randn(90, generator=g)
    base = emu.forward(x, w, b)
    for s in (2, 9, 32):
        split = emu.forward(x, w, b, slices=s)
        _bitwise(split[0], base[0])
        assert torch.equal(split[1], base[1]) and torch.equal(split[2], base[2])


# ------------------------------------------------- small-M tile (emulated) ---

@pytest.mark.parametrize("M", [1, 2, 7, 31])
@pytest.mark.parametrize("K,N", [(17, 129), (64, 40), (300, 257)])
def test_emulated_small_batch_tile(emu, M, K, N):
    g = torch.Generator().manual_seed(M * 100 + K + N)
    x = torch.randint(-3, 4, (M, K), generator=g).float()
    w = torch.randn(N, K, generator=g)
    _check(emu, x, w, torch.randn(N, generator=g))
    buf = torch.randn(M * K + 1, generator=g)  # rows off the 16-byte alignment: scalar loads
    _check(emu, buf[1:].view(M, K), w)


def test_emulated_small_batch_tile_non_finite(emu):
    g = torch.Generator().manual_seed(12)
    x = torch.randn(9, 70, generator=g)
    w = torch.randn(140, 70, generator=g)
    x[2, 33] = math.nan
    x[4, 3] = -math.inf
    w[130, 69] = math.inf
    _check(emu, x, w, torch.randn(140, generator=g))
    _check(emu, x, w, None, slices=2)


# ------------------------------------ deterministic gather backward (emulated) ---

@pytest.mark.parametrize("dtype,K", [(torch.float32, 1100), (torch.float64, 600), (torch.float16, 40),
                                     (torch.bfloat16, 1030)])
def test_emulated_gather_backward_chunks_equal_cpu(emu, dtype, K):
    """Rows longer than one shared-memory chunk (1024 floats / 512 doubles): the CPU kernel's bits."""
    g = torch.Generator().manual_seed(K)
    M, N = 9, 37
    x = torch.randint(-2, 3, (M, K), generator=g).to(dtype)  # ties: argmax == argmin for some
    x[:, 3] = 100  # long sums into one column
    x[:, K - 1] = -100  # and into the last chunk
    w = torch.randn(N, K, generator=g).to(dtype)
    gout = torch.randn(M, N, generator=g).to(dtype)
    _, amax, amin = torch.ops.mamext.mam_linear_forward(x, w, None)
    cgx, cgw = torch.ops.mamext.mam_linear_backward(gout, x, w, amax, amin, [True, True])
    gx, gw, err = emu.backward(gout, x, w, amax, amin, True)
    assert err == 0
    _bitwise(gx, cgx)
    _bitwise(gw, cgw)


@pytest.mark.parametrize("bad", [-1, 1100, 2**31 - 1])
def test_emulated_gather_backward_bad_index_in_later_chunk(emu, bad):
    g = torch.Generator().manual_seed(3)
    x, w, gout = torch.randn(4, 1100, generator=g), torch.randn(5, 1100, generator=g), torch.randn(4, 5, generator=g)
    _, amax, amin = torch.ops.mamext.mam_linear_forward(x, w, None)
    amax[2, 3] = bad
    amin[1, 1] = 1050  # a valid index in the second chunk
    gx, gw, err = emu.backward(gout, x, w, amax, amin, True)
    assert err == 1 and torch.isfinite(gx).all() and torch.isfinite(gw).all()


# ------------------------------------------------------------------- GPU ---

def _cpu_forward_check(x, w, b=None):
    """CUDA inference and forward with indices against the CPU kernels, bit for bit."""
    args = (x.cpu(), w.cpu(), None if b is None else b.cpu())
    cpu = torch.ops.mamext.mam_linear_forward(*args)
    out, amax, amin = (t.cpu() for t in torch.ops.mamext.mam_linear_forward(x, w, b))
    _bitwise(out, cpu[0])
    assert torch.equal(amax, cpu[1]) and torch.equal(amin, cpu[2])
    _bitwise(torch.ops.mamext.mam_linear_inference(x, w, b).cpu(), cpu[0])
    rout, ramax, _ = mam_linear_reference(*args, return_indices=True)
    torch.testing.assert_close(out, rout, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(amax, ramax)


def _offset_view(rows, cols, dtype, offset, gen):
    """(rows, cols) contiguous view starting `offset` elements into a fresh CUDA buffer."""
    buf = torch.randn(rows * cols + offset, generator=gen).to(dtype).cuda()
    return buf[offset:].view(rows, cols)


@needs_gpu
@pytest.mark.parametrize("dtype,offset", [(torch.float32, 1), (torch.float32, 2), (torch.float32, 3),
                                          (torch.float16, 1), (torch.float16, 2), (torch.bfloat16, 1),
                                          (torch.bfloat16, 2)])
@pytest.mark.parametrize("which", ["x", "w", "both"])
@pytest.mark.parametrize("M,K,N", [(133, 64, 70), (5, 64, 130), (40, 4096, 30)])
def test_gpu_misaligned_offset_views(dtype, offset, which, M, K, N):
    """Rows off the vector loads' alignment reach the kernels as they are (no copy): the pointer check must hold."""
    g = torch.Generator().manual_seed(M + offset)
    x = _offset_view(M, K, dtype, offset, g) if which != "w" else torch.randn(M, K, generator=g).to(dtype).cuda()
    w = _offset_view(N, K, dtype, offset, g) if which != "x" else torch.randn(N, K, generator=g).to(dtype).cuda()
    assert x.is_contiguous() and w.is_contiguous()
    vec_bytes = 4 * x.element_size()
    assert x.data_ptr() % vec_bytes != 0 or w.data_ptr() % vec_bytes != 0
    _cpu_forward_check(x, w, torch.randn(N, generator=g).to(dtype).cuda())


@needs_gpu
@pytest.mark.parametrize("slices", ["1", "5"])
def test_gpu_forced_split_matches_cpu(slices):
    """MAMEXT_CUDA_FORWARD_SLICES forces the K split (read once per process: run in a subprocess)."""
    code = (
        "import torch, mamext\n"
        "g = torch.Generator().manual_seed(0)\n"
        "for M, K, N in [(300, 1000, 257), (7, 333, 1000), (40, 4096, 30)]:\n"
        "    x = torch.randint(-3, 4, (M, K), generator=g).float(); w = torch.randn(N, K, generator=g)\n"
        "    x[1, K - 3] = float('nan')\n"
        "    cpu = torch.ops.mamext.mam_linear_forward(x, w, None)\n"
        "    gpu = [t.cpu() for t in torch.ops.mamext.mam_linear_forward(x.cuda(), w.cuda(), None)]\n"
        "    torch.testing.assert_close(gpu[0], cpu[0], rtol=0, atol=0, equal_nan=True)\n"
        "    assert torch.equal(gpu[1], cpu[1]) and torch.equal(gpu[2], cpu[2])\n"
        "    inf = torch.ops.mamext.mam_linear_inference(x.cuda(), w.cuda(), None).cpu()\n"
        "    torch.testing.assert_close(inf, cpu[0], rtol=0, atol=0, equal_nan=True)\n"
    )
    env = dict(os.environ, MAMEXT_CUDA_FORWARD_SLICES=slices)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]


@needs_gpu
@pytest.mark.parametrize("deterministic", [False, True])
def test_gpu_graph_capture_dense(deterministic):
    """Forward (split K on a large GPU) and backward captured in a CUDA graph, replayed on new data."""
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(40, 4096, generator=g).cuda(), torch.randn(30, 4096, generator=g).cuda()
    gout = torch.randn(40, 30, generator=g).cuda()
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic)
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the capture
            out, amax, amin = torch.ops.mamext.mam_linear_forward(x, w, None)
            torch.ops.mamext.mam_linear_backward(gout, x, w, amax.clone(), amin, [True, True])
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out, amax, amin = torch.ops.mamext.mam_linear_forward(x, w, None)
            gx, gw = torch.ops.mamext.mam_linear_backward(gout, x, w, amax, amin, [True, True])
        for seed in (2, 3):
            g.manual_seed(seed)
            x.copy_(torch.randn(40, 4096, generator=g))
            gout.copy_(torch.randn(40, 30, generator=g))
            graph.replay()
            torch.cuda.synchronize()
            ref = torch.ops.mamext.mam_linear_forward(x.cpu(), w.cpu(), None)
            _bitwise(out.cpu(), ref[0])
            assert torch.equal(amax.cpu(), ref[1]) and torch.equal(amin.cpu(), ref[2])
            rgx, rgw = torch.ops.mamext.mam_linear_backward(gout.cpu(), x.cpu(), w.cpu(), ref[1], ref[2],
                                                            [True, True])
            if deterministic:
                _bitwise(gx.cpu(), rgx)
                _bitwise(gw.cpu(), rgw)
            else:
                torch.testing.assert_close(gx.cpu(), rgx)
                torch.testing.assert_close(gw.cpu(), rgw)
    finally:
        torch.use_deterministic_algorithms(prev)


def _packed_layer(dtype, gen, N=64, K=300):
    from mamext import sparse
    w = torch.randn(N, K, generator=gen) * (torch.rand(N, K, generator=gen) > 0.7)
    return sparse.PackedMAMLinear.from_weight(w, torch.randn(N, generator=gen), dtype)


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.int8])
def test_gpu_graph_capture_packed(dtype):
    g = torch.Generator().manual_seed(4)
    layer = _packed_layer(dtype, g)
    x_cpu = torch.randn(33, 300, generator=g)
    gpu = _packed_layer(dtype, torch.Generator().manual_seed(4)).cuda()
    x = x_cpu.cuda()
    with torch.inference_mode():
        gpu(x)  # validated once, outside the capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = gpu(x)
        for seed in (5, 6):
            x_cpu = torch.randn(33, 300, generator=torch.Generator().manual_seed(seed))
            x_cpu[2, 7] = math.inf
            x.copy_(x_cpu)
            graph.replay()
            torch.cuda.synchronize()
            torch.testing.assert_close(out.cpu(), layer(x_cpu), rtol=0, atol=0, equal_nan=True)


@needs_gpu
def test_gpu_no_host_sync_per_call():
    """The backward on the forward's own indices and a packed layer after its first call do not synchronise."""
    g = torch.Generator().manual_seed(7)
    x, w = torch.randn(50, 40, generator=g).cuda(), torch.randn(30, 40, generator=g).cuda()
    gout = torch.randn(50, 30, generator=g).cuda()
    layer = _packed_layer(torch.float32, g).cuda()
    xp = torch.randn(8, 300, generator=g).cuda()
    with torch.inference_mode():
        layer(xp)  # first call: validation (one sync)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            _, amax, amin = torch.ops.mamext.mam_linear_forward(x, w, None)
            torch.ops.mamext.mam_linear_backward(gout, x, w, amax, amin, [True, True])
            with torch.inference_mode():
                layer(xp)
    finally:
        torch.cuda.set_sync_debug_mode(0)


@needs_gpu
def test_gpu_checks_follow_in_place_edits():
    """Cached checks are dropped when a tensor is written in place: bad indices and structures still raise."""
    g = torch.Generator().manual_seed(8)
    x, w = torch.randn(20, 10, generator=g).cuda(), torch.randn(7, 10, generator=g).cuda()
    gout = torch.randn(20, 7, generator=g).cuda()
    _, amax, amin = torch.ops.mamext.mam_linear_forward(x, w, None)
    torch.ops.mamext.mam_linear_backward(gout, x, w, amax, amin, [True, True])
    amax[3, 2] = 10
    with pytest.raises(RuntimeError, match=r"outside \[0, 10\)"):
        torch.ops.mamext.mam_linear_backward(gout, x, w, amax, amin, [True, True])
    layer = _packed_layer(torch.float32, g).cuda()
    xp = torch.randn(4, 300, generator=g).cuda()
    with torch.inference_mode():
        layer(xp)
    with torch.no_grad():
        layer.values[5] = math.nan  # a non-finite weight: the cached finiteness flag must follow
    with torch.inference_mode():
        out = layer(xp).cpu()
        ref = layer.cpu()(xp.cpu())
        torch.testing.assert_close(out, ref, rtol=0, atol=0, equal_nan=True)
        layer.cuda()
        with torch.no_grad():
            layer.indices[1] = layer.indices[0]  # not strictly increasing any more
        with pytest.raises(RuntimeError, match="strictly increasing"):
            layer(xp)


def _needs_free_gib(gib):
    free = torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else 0
    if free < gib * 2**30:
        pytest.skip(f"needs {gib} GiB of free GPU memory, {free / 2**30:.1f} GiB free")


@needs_gpu
def test_gpu_input_above_2_31_elements():
    """x with 2^31 + 64 elements (float16, 4 GiB): offsets past int32 in the forward and the backward."""
    _needs_free_gib(24)
    M, K, N = 2**31 // 64 + 1, 64, 8
    g = torch.Generator(device="cuda").manual_seed(9)
    x = torch.randn(M, K, device="cuda", generator=g, dtype=torch.float16)
    w = torch.randn(N, K, device="cuda", generator=g, dtype=torch.float16)
    out, amax, amin = torch.ops.mamext.mam_linear_forward(x, w, None)
    inf = torch.ops.mamext.mam_linear_inference(x, w, None)
    rows = torch.tensor([0, M // 2, M - 2, M - 1], device="cuda")
    cpu = torch.ops.mamext.mam_linear_forward(x[rows].cpu(), w.cpu(), None)
    _bitwise(out[rows].cpu(), cpu[0])
    _bitwise(inf[rows].cpu(), cpu[0])
    assert torch.equal(amax[rows].cpu(), cpu[1]) and torch.equal(amin[rows].cpu(), cpu[2])
    del inf
    gout = torch.ones(M, N, device="cuda", dtype=torch.float16)
    gx, _ = torch.ops.mamext.mam_linear_backward(gout, x, w, amax, amin, [True, False])
    rgx, _ = torch.ops.mamext.mam_linear_backward(gout[rows].cpu(), x[rows].cpu(), w.cpu(), cpu[1], cpu[2],
                                                  [True, False])
    torch.testing.assert_close(gx[rows].cpu(), rgx)  # the atomic backward's order varies


@needs_gpu
def test_gpu_output_above_2_31_elements():
    """(M, N) outputs past 2^31 elements (float32 out, int32 indices: 26 GiB)."""
    _needs_free_gib(40)
    M, K, N = 2**16 + 1, 4, 2**15
    g = torch.Generator(device="cuda").manual_seed(10)
    x = torch.randn(M, K, device="cuda", generator=g)
    w = torch.randn(N, K, device="cuda", generator=g)
    out, amax, amin = torch.ops.mamext.mam_linear_forward(x, w, None)
    cpu = torch.ops.mamext.mam_linear_forward(x[-2:].cpu(), w.cpu(), None)
    _bitwise(out[-2:].cpu(), cpu[0])
    assert torch.equal(amax[-2:].cpu(), cpu[1]) and torch.equal(amin[-2:].cpu(), cpu[2])
    del out, amax, amin
    inf = torch.ops.mamext.mam_linear_inference(x, w, None)
    _bitwise(inf[-2:].cpu(), cpu[0])


@needs_gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs a second CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.int8])
def test_gpu_packed_second_device(dtype):
    g = torch.Generator().manual_seed(11)
    layer = _packed_layer(dtype, g)
    x = torch.randn(9, 300, generator=g)
    with torch.inference_mode():
        ref = layer(x)
        dev = torch.device("cuda", 1)
        layer.to(dev)
        with torch.cuda.device(0):  # current device 0, tensors on 1: the kernels must follow the tensors
            out = layer(x.to(dev))
            again = layer(x.to(dev))  # the cached checks, on device 1
        assert out.device == dev
        torch.testing.assert_close(out.cpu(), ref, rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(again.cpu(), ref, rtol=0, atol=0, equal_nan=True)


# ------------------------------------------- ThreadSanitizer (MAMEXT_TSAN=1) ---

_TSAN_MAIN = r"""
#include <cstdio>
#include <vector>
#include "ops/cuda/mam_linear_kernel.h"
using namespace mamext::cuda;
int main() {
  const int M = 40, N = 24, K = 70;  // one block per tile, several k tiles, a partial last one
  std::vector<float> x(M * K), w(N * K), out(M * N), ws(8 * M * N);
  std::vector<int32_t> amax(M * N), amin(M * N);
  for (int i = 0; i < M * K; ++i) x[i] = float((i * 37) % 11) - 5.f;
  for (int i = 0; i < N * K; ++i) w[i] = float((i * 53) % 13) - 6.f;
  int rc = launch_forward(DType::F32, x.data(), w.data(), nullptr, out.data(), amax.data(), amin.data(), M, N, K,
                          nullptr);
  rc |= launch_forward(DType::F32, x.data(), w.data(), nullptr, out.data(), nullptr, nullptr, M, N, K, nullptr, 2,
                       ws.data());
  std::printf("rc=%d out0=%g\n", rc, out[0]);
  return rc;
}
"""


def _tsan_run(tmp_path, kernel_source):
    cxx = os.environ.get("CXX") or "g++"
    src = tmp_path / "mam_linear_kernel.cu"
    src.write_text(kernel_source)
    main = tmp_path / "main.cpp"
    main.write_text(_TSAN_MAIN)
    exe = tmp_path / "tsan_forward"
    csrc = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "csrc")
    cmd = [cxx, "-std=c++20", "-O1", "-g", "-fsanitize=thread", "-pthread", "-ffp-contract=off",
           "-Wno-unknown-pragmas", "-DMAMEXT_CUDA_EMULATION", f"-I{csrc}", "-x", "c++", str(src), str(main),
           "-o", str(exe)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0 and "tsan" in res.stderr.lower():
        pytest.skip(f"no ThreadSanitizer runtime: {res.stderr[-300:]}")
    assert res.returncode == 0, res.stderr[-3000:]
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=0 report_signal_unsafe=0 history_size=2")
    return subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=900)


_KERNEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "csrc", "ops", "cuda", "mam_linear_kernel.cu")
_LOOP_BARRIER = "    if (has_next) store_tile(buf ^ 1);\n    __syncthreads();\n"


@pytest.mark.skipif(os.environ.get("MAMEXT_TSAN") != "1", reason="ThreadSanitizer build: set MAMEXT_TSAN=1")
def test_tsan_forward_is_race_free_and_catches_a_deleted_barrier(tmp_path):
    """The emulated forward (split and unsplit) under ThreadSanitizer: clean as it is; a race without its loop barrier."""
    source = open(_KERNEL).read()
    assert _LOOP_BARRIER in source
    clean = _tsan_run(tmp_path, source)
    assert clean.returncode == 0 and "ThreadSanitizer" not in clean.stderr, clean.stderr[-3000:]
    mutant = _tsan_run(tmp_path, source.replace(_LOOP_BARRIER, "    if (has_next) store_tile(buf ^ 1);\n"))
    assert "WARNING: ThreadSanitizer: data race" in mutant.stderr, mutant.stderr[-3000:]


# ------------------------------------------------- the checks' cache (CPU) ---

_CACHE_SRC = r"""
#include <torch/extension.h>
#include "ops/cuda/content_cache.h"
static mamext::cuda::ContentCache<int>& cache() {
  static mamext::cuda::ContentCache<int> c(3);
  return c;
}
void insert(at::Tensor a, at::Tensor b, int64_t tag, int64_t value) { cache().insert({a, b}, tag, int(value)); }
int64_t find(at::Tensor a, at::Tensor b, int64_t tag) {
  const auto v = cache().find({a, b}, tag);
  return v ? *v : -1;
}
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("insert", &insert);
  m.def("find", &find);
}
"""


@pytest.fixture(scope="module")
def content_cache(tmp_path_factory):
    from torch.utils import cpp_extension
    if not cpp_extension.is_ninja_available():
        pytest.skip("torch.utils.cpp_extension needs ninja")
    csrc = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "csrc")
    return cpp_extension.load_inline("mamext_content_cache_test", _CACHE_SRC, extra_include_paths=[csrc],
                                     extra_cflags=["-std=c++20", "-O1"],
                                     build_directory=str(tmp_path_factory.mktemp("content_cache")))


def test_content_cache_follows_versions_and_storages(content_cache):
    """What lets the backward skip its index check and the packed op its validation: an entry lives while
    its tensors are unchanged (same storage, data pointer, size, version) and no longer."""
    c = content_cache
    a, b = torch.arange(12, dtype=torch.int32).view(3, 4), torch.zeros(3, 4, dtype=torch.int32)
    c.insert(a, b, 4, 7)
    assert c.find(a, b, 4) == 7
    assert c.find(a.view(12), b.view(-1), 4) == 7  # views: same storage, data, size and version counter
    assert c.find(a, b, 5) == -1  # another tag (K)
    assert c.find(b, a, 4) == -1  # order matters
    assert c.find(a[1:], b, 4) == -1  # another data pointer
    assert c.find(a.clone(), b, 4) == -1  # another storage
    a[0, 0] = 3  # in-place write: version bump
    assert c.find(a, b, 4) == -1
    c.insert(a, b, 4, 8)
    assert c.find(a, b, 4) == 8
    with torch.no_grad():
        b.add_(1)
    assert c.find(a, b, 4) == -1
    # a freed tensor's entry cannot match a new tensor, even one at the same address
    x, y = torch.zeros(1000, dtype=torch.int32), torch.zeros(1000, dtype=torch.int32)
    c.insert(x, y, 1, 9)
    ptr = x.data_ptr()
    del x
    reused = [torch.zeros(1000, dtype=torch.int32) for _ in range(8)]
    assert all(c.find(r, y, 1) == -1 for r in reused), [r.data_ptr() == ptr for r in reused]
    # inference tensors have no version counter: never cached
    with torch.inference_mode():
        i, j = torch.ones(3), torch.ones(3)
        c.insert(i, j, 1, 1)
        assert c.find(i, j, 1) == -1
    # capacity (3 here): the oldest entries go first
    ts = [(torch.ones(2), torch.ones(2)) for _ in range(4)]
    for n, (p, q) in enumerate(ts):
        c.insert(p, q, 0, n)
    assert c.find(*ts[0], 0) == -1 and [c.find(*t, 0) for t in ts[1:]] == [1, 2, 3]
