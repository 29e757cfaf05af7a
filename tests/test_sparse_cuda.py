"""CUDA kernels of the packed sparse operator mamext::packed_linear
(csrc/ops/cuda/packed_linear_kernel.cu, glue csrc/ops/cuda/packed_linear_glue.cpp).

The reference is the CPU operator (torch.ops.mamext.packed_linear on CPU
tensors): on finite data the CUDA results must equal it bit for bit (float32,
float64, int8, signed zeros included), and follow the same NaN rules.

* "emulated" tests (run anywhere): the kernels' own source compiled with g++
  against the CUDA emulation header (tests/_cuda_emulation.py) and called
  through ctypes on CPU tensors. A Python wrapper plays the glue (dtype
  conversions, int64 offsets, workspaces). Launch choices are forced to reach
  every path: x staged in shared memory or read from global memory, 1 to 32
  samples per block, neuron chunks, several blocks.
* GPU tests (skipped without a CUDA GPU and a CUDA build): the CUDA operator
  against the CPU operator on the same inputs, error messages, devices.
"""

from __future__ import annotations

import ctypes
import math

import pytest
import torch

from _cuda_emulation import BUILT_WITH_CUDA, EmulatedKernels, build_emulation, needs_gpu
from op_testing import assert_bitwise

_DEV = "cuda"  # the device of the GPU tests

_INDEX_DTYPES = (torch.uint8, torch.int16, torch.int32)
_INDEX_KIND = {torch.uint8: 0, torch.int16: 1, torch.int32: 2}
_NO_ERROR = 2**64 - 1


# ---------------------------------------------------------------- helpers ---

def _index_dtypes(K):
    return [d for d in _INDEX_DTYPES if K - 1 <= torch.iinfo(d).max]


def _layer(N, K, gen, *, density=0.3, kind="normal", dtype=torch.float32, index_dtype=torch.int32,
           offsets_dtype=torch.int64):
    """CSR (values, indices, offsets) of a random mask with, when N allows, an empty row, a full row, a
    single kept connection in the middle, one at the last index, and a row missing only its first entry.
    kind "ints": small integer weights, kept zeros included (ties and signed zero products)."""
    keep = torch.rand(N, K, generator=gen) < density
    special = [torch.zeros(K, dtype=torch.bool), torch.ones(K, dtype=torch.bool)]
    mid, last, first_missing = (torch.zeros(K, dtype=torch.bool) for _ in range(3))
    mid[K // 2] = True
    last[K - 1] = True
    first_missing[1:] = True
    special += [mid, last, first_missing]
    for i, row in enumerate(special[:N]):
        keep[i] = row
    if kind == "normal":
        w = torch.randn(N, K, generator=gen, dtype=torch.float64)
    else:
        w = torch.randint(-2, 3, (N, K), generator=gen).to(torch.float64)
    counts = keep.sum(1)
    offsets = torch.zeros(N + 1, dtype=torch.int64)
    offsets[1:] = counts.cumsum(0)
    indices = keep.nonzero()[:, 1].to(index_dtype)
    values = w[keep].to(dtype)
    return values, indices, offsets.to(offsets_dtype)


def _input(M, K, gen, kind="normal", dtype=torch.float32):
    if kind == "normal":
        x = torch.randn(M, K, generator=gen, dtype=torch.float64)
    else:  # ties, zeros of both signs
        x = torch.randint(-2, 3, (M, K), generator=gen).to(torch.float64)
        neg = torch.rand(M, K, generator=gen) < 0.5
        x = torch.where((x == 0) & neg, torch.tensor(-0.0, dtype=torch.float64), x)
    return x.to(dtype)


def _int8_layer(N, K, gen, density=0.3, index_dtype=torch.int32):
    values, indices, offsets = _layer(N, K, gen, density=density, index_dtype=index_dtype)
    q = torch.randint(-128, 128, values.shape, generator=gen).to(torch.int8)
    scale = torch.rand(N, generator=gen) * 0.02 + 1e-3
    return q, indices, offsets, scale


def _cpu(x, values, indices, offsets, bias, scale, K, mam):
    return torch.ops.mamext.packed_linear(x, values, indices, offsets, bias, scale, K, mam)


# ------------------------------------------- emulated on the CPU (no GPU) ---

_CAPI = r"""
#include "ops/cuda/packed_linear_kernel.h"
using namespace mamext::cuda;
static PackedLaunchConfig config(int spb, int64_t npb, int64_t smem) {
  PackedLaunchConfig c;
  c.samples_per_block = spb;
  c.neurons_per_block = npb;
  c.smem_limit = smem;
  return c;
}
extern "C" int emu_validate(const void* idx, int ik, const int64_t* off, int64_t N, int64_t nnz, int64_t K,
                            unsigned long long* result) {
  return launch_packed_validate(idx, static_cast<PackedIndex>(ik), off, N, nnz, K, result, nullptr);
}
extern "C" int emu_float(int dt, const void* x, const void* values, const void* idx, int ik, const int64_t* off,
                         int64_t nnz, const void* bias, void* out, int64_t M, int64_t N, int64_t K, int mam, int tr,
                         int64_t* bad, int32_t* flag, int spb, int64_t npb, int64_t smem) {
  return launch_packed_float(static_cast<DType>(dt), x, values, idx, static_cast<PackedIndex>(ik), off, nnz, bias,
                             out, M, N, K, mam != 0, tr != 0, bad, flag, nullptr, config(spb, npb, smem));
}
extern "C" int emu_int8(const float* x, const int8_t* values, const void* idx, int ik, const int64_t* off,
                        int64_t nnz, const float* wscale, const float* bias, float* out, int64_t M, int64_t N,
                        int64_t K, int mam, int tr, int8_t* xq, float* sx, int spb, int64_t npb, int64_t smem) {
  return launch_packed_int8(x, values, idx, static_cast<PackedIndex>(ik), off, nnz, wscale, bias, out, M, N, K,
                            mam != 0, tr != 0, xq, sx, nullptr, config(spb, npb, smem));
}
"""

# (samples per block, neurons per block, shared-memory limit); 0 / -1 = automatic.
PATHS = {
    "auto": (0, 0, -1),
    "smem-s32-chunks": (32, 8, -1),     # 32 samples a block, x in shared memory, chunks of 8 neurons
    "smem-s4": (4, 64, -1),             # 4 samples x 64 neuron groups, each thread on its own row
    "global-s32": (32, 0, 0),           # x from global memory
    "global-s1-chunks": (1, 256, 0),    # one sample a block, chunks of 256 neurons
}


class _Emulated(EmulatedKernels):
    """The packed CUDA kernels compiled for the CPU emulation, plus the glue's dtype handling."""

    P, I, C = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    signatures = {"emu_validate": [P, C, P, I, I, I, P],
                  "emu_float": [C, P, P, P, C, P, I, P, P, I, I, I, C, C, P, P, C, I, I],
                  "emu_int8": [P, P, P, C, P, I, P, P, P, I, I, I, C, C, P, P, C, I, I]}

    def validate(self, indices, offsets, K):
        off = offsets.to(torch.int64).contiguous()
        result = torch.zeros(1, dtype=torch.int64)
        rc = self.lib.emu_validate(self.ptr(indices), _INDEX_KIND[indices.dtype], self.ptr(off), off.numel() - 1,
                                   indices.numel(), K, self.ptr(result))
        assert rc == 0, f"emulated launch failed ({rc}), see stderr"
        return int(result[0]) % 2**64  # the uint64 key

    def __call__(self, x, values, indices, offsets, bias, scale, K, mam, path="auto"):
        spb, npb, smem = PATHS[path]
        is_int8 = values.dtype == torch.int8
        ct = torch.float32 if is_int8 else values.dtype
        M = x.numel() // K
        N = offsets.numel() - 1
        # the glue's layout rule: a column-major 2-D input is passed transposed, the output comes back so
        cols = x.dim() == 2 and M > 1 and x.stride() == (1, M)
        xc = x.t().to(ct).contiguous() if cols else x.reshape(M, K).to(ct).contiguous()
        off = offsets.to(torch.int64).contiguous()
        out = torch.full((N, M) if cols else (M, N), 1234.5, dtype=ct)  # garbage: every element must be written
        ik = _INDEX_KIND[indices.dtype]
        if is_int8:
            xq = torch.full((M, K), 99, dtype=torch.int8)
            sx = torch.full((M,), 7.0)
            rc = self.lib.emu_int8(self.ptr(xc), self.ptr(values), self.ptr(indices), ik, self.ptr(off), values.numel(),
                                   self.ptr(scale), self.ptr(bias), self.ptr(out), M, N, K, int(mam), int(cols),
                                   self.ptr(xq), self.ptr(sx), spb, npb, smem)
        else:
            bad = torch.full((M,), -5, dtype=torch.int64)
            flag = torch.full((1,), 3, dtype=torch.int32)
            dt = 3 if ct == torch.float64 else 0
            rc = self.lib.emu_float(dt, self.ptr(xc), self.ptr(values), self.ptr(indices), ik, self.ptr(off),
                                    values.numel(), self.ptr(bias), self.ptr(out), M, N, K, int(mam), int(cols),
                                    self.ptr(bad), self.ptr(flag), spb, npb, smem)
        assert rc == 0, f"emulated launch failed ({rc}), see stderr"
        if cols:
            return out.t().to(x.dtype)
        return out.to(x.dtype).view(*x.shape[:-1], N)


@pytest.fixture(scope="module")
def emu():
    return _Emulated(build_emulation(["packed_linear_kernel.cu"], _CAPI, "mamext_packed_cuda_emulation"))


def _emu_vs_cpu(emu, x, values, indices, offsets, bias, scale, K, mam, path="auto"):
    got = emu(x, values, indices, offsets, bias, scale, K, mam, path)
    cpu = _cpu(x, values, indices, offsets, bias, scale, K, mam)
    assert_bitwise(got, cpu)
    assert got.stride() == cpu.stride()
    return got


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mam", [True, False])
def test_emulated_float_matches_cpu(emu, path, dtype, mam):
    """Every index dtype, both bias cases, normal data and ties / signed zeros, K not a multiple of 32."""
    gen = torch.Generator().manual_seed(17 + 3 * mam + (dtype == torch.float64))
    for i, ((M, K, N), index_dtype, density, kind) in enumerate([
        ((37, 45, 70), torch.uint8, 0.3, "normal"),  # two blocks of 32 samples, the second with 5
        ((9, 45, 70), torch.uint8, 0.5, "ints"),
        ((5, 300, 41), torch.int16, 0.1, "normal"),
        ((12, 257, 19), torch.int16, 0.6, "ints"),
        ((3, 77, 9), torch.int32, 0.3, "ints"),
        ((2, 33, 300), torch.int32, 0.2, "normal"),   # more neurons than 256 / S threads
    ]):
        values, indices, offsets = _layer(N, K, gen, density=density, kind=kind, dtype=dtype,
                                          index_dtype=index_dtype)
        x = _input(M, K, gen, kind, dtype)
        bias = torch.randn(N, generator=gen, dtype=torch.float64).to(dtype) if i % 2 == 0 else None
        _emu_vs_cpu(emu, x, values, indices, offsets, bias, None, K, mam, path)


@pytest.mark.parametrize("M", [1, 2, 3, 4, 31, 32, 33, 65])
def test_emulated_batch_edges(emu, M):
    gen = torch.Generator().manual_seed(M)
    K, N = 50, 21
    values, indices, offsets = _layer(N, K, gen, density=0.4)
    x = _input(M, K, gen)
    bias = torch.randn(N, generator=gen)
    for mam in (True, False):
        for path in ("auto", "global-s32"):
            _emu_vs_cpu(emu, x, values, indices, offsets, bias, None, K, mam, path)
    # leading batch dimensions, float16 / bfloat16 inputs (converted to float32 and back, as on the CPU)
    x3 = x.reshape(1, M, K)
    _emu_vs_cpu(emu, x3, values, indices, offsets, bias, None, K, True)
    for dt in (torch.float16, torch.bfloat16):
        _emu_vs_cpu(emu, x.to(dt), values, indices, offsets, bias, None, K, True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_emulated_shared_memory_budget(emu, dtype):
    """K = 1000: 32 samples exceed the 96 KiB default, so fewer samples per block are staged (16 for float32,
    8 for float64); the same with the int8 codes (32 samples fit)."""
    gen = torch.Generator().manual_seed(9)
    M, K, N = 33, 1000, 12
    values, indices, offsets = _layer(N, K, gen, density=0.05, dtype=dtype, index_dtype=torch.int16)
    x = _input(M, K, gen, dtype=dtype)
    x[20, 3] = math.inf
    for mam in (True, False):
        _emu_vs_cpu(emu, x, values, indices, offsets, None, None, K, mam)
    q, indices, offsets, scale = _int8_layer(N, K, gen, density=0.05, index_dtype=torch.int16)
    _emu_vs_cpu(emu, x, q, indices, offsets, None, scale, K, True)


@pytest.mark.parametrize("path", list(PATHS))
def test_emulated_column_major(emu, path):
    """A column-major 2-D input (what a chain of packed layers passes along) is read transposed and gives a
    column-major output, as on the CPU; same values as the row-major input."""
    gen = torch.Generator().manual_seed(21)
    for M, K, N in [(37, 45, 30), (5, 300, 17), (2, 40, 3)]:
        values, indices, offsets = _layer(N, K, gen, density=0.3, index_dtype=_index_dtypes(K)[0])
        x = _input(M, K, gen)
        xc = x.t().contiguous().t()
        assert xc.stride() == (1, M)
        bias = torch.randn(N, generator=gen)
        for mam in (True, False):
            out = _emu_vs_cpu(emu, xc, values, indices, offsets, bias, None, K, mam, path)
            assert out.stride() == (1, M)
            assert_bitwise(out.contiguous(), emu(x, values, indices, offsets, bias, None, K, mam, path))
        xc[M // 2, K // 3] = math.nan
        xc[0, 1] = math.inf
        _emu_vs_cpu(emu, xc, values.double(), indices, offsets, None, None, K, True, path)   # float64
        _emu_vs_cpu(emu, xc.half(), values, indices, offsets, bias, None, K, True, path)    # converted input
        q, indices, offsets, scale = _int8_layer(N, K, gen, index_dtype=_index_dtypes(K)[0])
        _emu_vs_cpu(emu, xc, q, indices, offsets, bias, scale, K, True, path)                # int8


def test_emulated_signed_zeros_and_ties(emu):
    """All products zero (signs mixed), equal products: the first one wins, as on the CPU."""
    gen = torch.Generator().manual_seed(5)
    K, N, M = 40, 12, 34
    values, indices, offsets = _layer(N, K, gen, density=0.5, kind="ints")
    x = torch.zeros(M, K)
    x[::2] = -0.0
    x[5] = 1.0
    x[6] = -1.0
    for mam in (True, False):
        for path in ("auto", "global-s1-chunks"):
            _emu_vs_cpu(emu, x, values, indices, offsets, None, None, K, mam, path)
    # full rows of +-0 products: max and min keep the first zero, so the MAM output is -0 (= -0 + -0) exactly
    # when the first product is -0; pruned rows start at +0 (the pruned products) and give +0
    x = torch.tensor([[0.0, 0.0, -0.0], [-0.0, 0.0, 0.0], [0.0, -0.0, -0.0]])
    values = torch.tensor([-1.0, 1.0, -2.0, 1.0, 1.0])
    indices = torch.tensor([0, 1, 2, 0, 1], dtype=torch.uint8)
    offsets = torch.tensor([0, 3, 5])
    for path in PATHS:
        out = _emu_vs_cpu(emu, x, values, indices, offsets, None, None, 3, True, path)
        assert torch.equal(torch.signbit(out), torch.tensor([[True, False], [False, False], [True, False]])), path


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("path", ["auto", "smem-s4", "global-s32"])
def test_emulated_non_finite(emu, dtype, path):
    """inf/NaN inputs on kept and pruned connections, NaN/inf weights, inf * 0 with a kept zero weight."""
    gen = torch.Generator().manual_seed(7)
    M, K, N = 40, 30, 25
    values, indices, offsets = _layer(N, K, gen, density=0.4, dtype=dtype)
    x = _input(M, K, gen, dtype=dtype)
    x[3, 7] = math.nan
    x[4, 0] = math.inf
    x[5, K - 1] = -math.inf
    x[6, 15] = math.inf   # column 15 is row 2's single kept connection
    x[7, :] = math.inf
    x[8, 1] = math.nan
    x[8, 2] = -math.inf
    bias = torch.randn(N, generator=gen, dtype=torch.float64).to(dtype)
    for mam in (True, False):
        _emu_vs_cpu(emu, x, values, indices, offsets, bias, None, K, mam, path)
    # non-finite weights (every block takes the checked loop), a kept zero weight against an inf input
    v2 = values.clone()
    v2[0] = math.nan
    v2[5] = math.inf
    v2[9] = 0.0
    k9 = int(indices[9])
    x[10, k9] = math.inf
    for mam in (True, False):
        _emu_vs_cpu(emu, x, v2, indices, offsets, bias, None, K, mam, path)
        _emu_vs_cpu(emu, x[10:30], v2, indices, offsets, None, None, K, mam, path)  # finite inputs except one
    # overflow of finite products to +-inf (no NaN input): the fast loop
    big = torch.full((2, K), 1e30 if dtype == torch.float32 else 1e300, dtype=dtype)
    big[1, ::2] *= -1
    vbig = values.abs() * 1e20 if dtype == torch.float32 else values.abs() * 1e200
    for mam in (True, False):
        _emu_vs_cpu(emu, big, vbig, indices, offsets, None, None, K, mam, path)


@pytest.mark.parametrize("path", ["auto", "smem-s32-chunks", "global-s1-chunks"])
@pytest.mark.parametrize("mam", [True, False])
def test_emulated_int8(emu, path, mam):
    gen = torch.Generator().manual_seed(11 + mam)
    for (M, K, N), index_dtype in [((13, 45, 70), torch.uint8), ((6, 300, 33), torch.int16),
                                   ((33, 91, 20), torch.int32)]:
        q, indices, offsets, scale = _int8_layer(N, K, gen, index_dtype=index_dtype)
        x = _input(M, K, gen) * 3
        x[0] = 0.0                      # amax 0: zeros (+ bias)
        x[1] = 1e-31                    # amax < 1e-30: zeros
        x[2, 4] = math.nan              # non-finite sample: NaN outputs
        x[3, 0] = -math.inf
        x[4] = torch.arange(K) % 7 - 3.5  # amax 3.5: x * (127 / 3.5) hits exact halves
        x[5] = 0.0
        x[5, 1] = 127.0                 # inv = 1: codes are the inputs rounded half to even
        x[5, 2:] = torch.arange(K - 2) % 11 - 5.5
        bias = torch.randn(N, generator=gen)
        _emu_vs_cpu(emu, x, q, indices, offsets, bias, scale, K, mam, path)
        _emu_vs_cpu(emu, x, q, indices, offsets, None, scale, K, mam, path)


def test_emulated_huge_k(emu):
    """K = 70,000 (indices past the int16 range, x too large for shared memory) with few connections."""
    gen = torch.Generator().manual_seed(13)
    K, N, M = 70_000, 6, 3
    keep = torch.zeros(N, K, dtype=torch.bool)
    keep[1] = True                       # a full row
    keep[2, [0, 40_000, 65_536, 69_999]] = True
    keep[3, 69_999] = True
    keep[4, torch.randint(0, K, (50,), generator=gen)] = True
    keep[5, 100:200] = True
    offsets = torch.zeros(N + 1, dtype=torch.int64)
    offsets[1:] = keep.sum(1).cumsum(0)
    indices = keep.nonzero()[:, 1].to(torch.int32)
    values = torch.randn(indices.numel(), generator=gen)
    x = torch.rand(M, K, generator=gen) + 0.5
    x[0, 65_536] = 9.0
    bias = torch.randn(N, generator=gen)
    for mam in (True, False):
        _emu_vs_cpu(emu, x, values, indices, offsets, bias, None, K, mam)
        _emu_vs_cpu(emu, x.double(), values.double(), indices, offsets, bias.double(), None, K, mam)
    xn = x.clone()
    xn[1, 3] = math.inf                  # pruned in rows 2..5, kept in the full row
    _emu_vs_cpu(emu, xn, values, indices, offsets, bias, None, K, True)
    scale = torch.rand(N, generator=gen) * 0.01 + 1e-3
    q = torch.randint(-128, 128, values.shape, generator=gen).to(torch.int8)
    for mam in (True, False):
        _emu_vs_cpu(emu, x, q, indices, offsets, bias, scale, K, mam)


def test_emulated_empty_layers(emu):
    gen = torch.Generator().manual_seed(3)
    K = 20
    x = _input(9, K, gen)
    # no neuron at all
    out = emu(x, torch.empty(0), torch.empty(0, dtype=torch.uint8), torch.zeros(1, dtype=torch.int64), None, None,
              K, True)
    assert out.shape == (9, 0)
    # every connection pruned: the bias (or +0)
    offsets = torch.zeros(6, dtype=torch.int32)
    bias = torch.randn(5, generator=gen)
    for mam in (True, False):
        out = _emu_vs_cpu(emu, x, torch.empty(0), torch.empty(0, dtype=torch.uint8), offsets, bias, None, K, mam)
        assert torch.equal(out, bias.expand(9, 5))
        out = _emu_vs_cpu(emu, x, torch.empty(0), torch.empty(0, dtype=torch.uint8), offsets, None, None, K, mam)
        assert torch.equal(out, torch.zeros(9, 5)) and not torch.signbit(out).any()
    # no sample
    values, indices, offsets = _layer(5, K, gen)
    assert emu(x[:0], values, indices, offsets, None, None, K, True).shape == (0, 5)


@pytest.mark.parametrize("index_dtype", _INDEX_DTYPES)
def test_emulated_validation(emu, index_dtype):
    """Error keys of the device structure check, in the CPU glue's order (first error wins)."""
    K = 10
    values, indices, offsets = _layer(6, K, torch.Generator().manual_seed(1), density=0.5,
                                      index_dtype=index_dtype)
    assert emu.validate(indices, offsets, K) == _NO_ERROR
    assert emu.validate(indices, offsets.to(torch.int32), K) == _NO_ERROR

    off = offsets.clone()
    off[0] = 1
    assert emu.validate(indices, off, K) == 0
    off = offsets.clone()
    off[-1] -= 1
    assert emu.validate(indices, off, K) == 1
    off[0] = -1
    assert emu.validate(indices, off, K) == 0

    # a row with more than K entries (row 0 is empty, row 1 full)
    idx = torch.cat([indices[:10], torch.tensor([0], dtype=index_dtype), indices[10:]])
    off = offsets.clone()
    off[2:] += 1
    assert emu.validate(idx, off, K) == 2 + 1
    # decreasing offsets: row 3 spans [off[3], off[3] - 1)
    off = offsets.clone()
    off[4] = off[3] - 1
    assert emu.validate(indices, off, K) == 2 + 3
    # an index out of range, a repeated index, an index going down
    for row, bad in [(4, K), (5, None), (4, -1)]:
        j0, j1 = int(offsets[row]), int(offsets[row + 1])
        if j1 - j0 < 2 or (bad == -1 and index_dtype == torch.uint8):
            continue
        idx = indices.clone()
        if bad is None:
            idx[j0 + 1] = idx[j0]
        else:
            idx[j1 - 1] = bad
        assert emu.validate(idx, offsets, K) == 2 + row, (row, bad)
    # two bad rows: the first one is reported
    idx = indices.clone()
    idx[int(offsets[2])] = K
    idx[int(offsets[5])] = K
    assert emu.validate(idx, offsets, K) == 2 + 2
    # no rows at all
    assert emu.validate(indices[:0], torch.zeros(1, dtype=torch.int64), K) == _NO_ERROR
    assert emu.validate(indices[:0], torch.ones(1, dtype=torch.int64), K) == 0


# ---------------------------------------------------------- on a real GPU ---

def test_cuda_build_registers_packed_linear():
    if not BUILT_WITH_CUDA:
        pytest.skip("mamext was built without CUDA")
    assert torch._C._dispatch_has_kernel_for_dispatch_key("mamext::packed_linear", "CUDA")


def _gpu_vs_cpu(x, values, indices, offsets, bias, scale, K, mam):
    cpu = _cpu(x, values, indices, offsets, bias, scale, K, mam)
    d = _DEV
    xd = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=d).copy_(x)  # same layout
    gpu = torch.ops.mamext.packed_linear(xd, values.to(d), indices.to(d), offsets.to(d),
                                         None if bias is None else bias.to(d), None if scale is None else scale.to(d),
                                         K, mam)
    assert gpu.device.type == torch.device(d).type
    assert gpu.stride() == cpu.stride()
    assert_bitwise(gpu.cpu(), cpu)
    return gpu.cpu()


GPU_SHAPES = [(1, 7, 5), (3, 45, 70), (33, 300, 41), (64, 784, 512), (257, 1000, 130), (4, 2000, 300)]


@needs_gpu
@pytest.mark.parametrize("M,K,N", GPU_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mam", [True, False])
def test_gpu_float_matches_cpu(M, K, N, dtype, mam):
    gen = torch.Generator().manual_seed(M + K + N)
    for index_dtype in _index_dtypes(K):
        for density, kind in ((0.01, "normal"), (0.3, "normal"), (0.5, "ints")):
            values, indices, offsets = _layer(N, K, gen, density=density, kind=kind, dtype=dtype,
                                              index_dtype=index_dtype, offsets_dtype=torch.int32)
            x = _input(M, K, gen, kind, dtype)
            bias = torch.randn(N, generator=gen, dtype=torch.float64).to(dtype)
            _gpu_vs_cpu(x, values, indices, offsets, bias, None, K, mam)
            _gpu_vs_cpu(x, values, indices, offsets, None, None, K, mam)


@needs_gpu
@pytest.mark.parametrize("M,K,N", GPU_SHAPES)
@pytest.mark.parametrize("mam", [True, False])
def test_gpu_int8_matches_cpu(M, K, N, mam):
    gen = torch.Generator().manual_seed(M * K + N)
    q, indices, offsets, scale = _int8_layer(N, K, gen, density=0.2)
    x = _input(M, K, gen) * 2
    x[0, 0] = 0.5 * float(x[0].abs().max())  # keep amax, add a value on an exact code half
    if M > 2:
        x[1] = 0.0
        x[2, K // 2] = math.nan
    bias = torch.randn(N, generator=gen)
    _gpu_vs_cpu(x, q, indices, offsets, bias, scale, K, mam)
    _gpu_vs_cpu(x, q, indices, offsets, None, scale, K, mam)


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_half_inputs(dtype):
    gen = torch.Generator().manual_seed(2)
    values, indices, offsets = _layer(40, 100, gen)
    x = torch.randn(3, 5, 100, generator=gen).to(dtype)
    out = _gpu_vs_cpu(x, values, indices, offsets, torch.randn(40, generator=gen), None, 100, True)
    assert out.dtype == dtype and out.shape == (3, 5, 40)


@needs_gpu
@pytest.mark.parametrize("mam", [True, False])
def test_gpu_non_finite(mam):
    gen = torch.Generator().manual_seed(7)
    M, K, N = 70, 60, 50
    for dtype in (torch.float32, torch.float64):
        values, indices, offsets = _layer(N, K, gen, density=0.4, dtype=dtype)
        x = _input(M, K, gen, dtype=dtype)
        x[3, 7] = math.nan
        x[40, 0] = math.inf
        x[41, :] = -math.inf
        bias = torch.randn(N, generator=gen, dtype=torch.float64).to(dtype)
        _gpu_vs_cpu(x, values, indices, offsets, bias, None, K, mam)
        values[3] = math.nan
        values[10] = 0.0
        x[50, int(indices[10])] = math.inf
        _gpu_vs_cpu(x, values, indices, offsets, bias, None, K, mam)


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int8])
def test_gpu_column_major(dtype):
    gen = torch.Generator().manual_seed(8)
    for M, K, N in [(130, 300, 70), (3, 784, 512)]:
        if dtype == torch.int8:
            values, indices, offsets, scale = _int8_layer(N, K, gen, density=0.1)
        else:
            values, indices, offsets = _layer(N, K, gen, density=0.1, dtype=dtype)
            scale = None
        xc = _input(M, K, gen, dtype=torch.float64 if dtype == torch.float64 else torch.float32).t().contiguous().t()
        for mam in (True, False):
            out = _gpu_vs_cpu(xc, values, indices, offsets, None, scale, K, mam)
            assert out.stride() == (1, M)


@needs_gpu
def test_gpu_huge_k():
    gen = torch.Generator().manual_seed(13)
    K, N, M = 70_000, 6, 5
    keep = torch.rand(N, K, generator=gen) < 0.001
    keep[1] = True
    keep[2, 65_536] = True
    offsets = torch.zeros(N + 1, dtype=torch.int64)
    offsets[1:] = keep.sum(1).cumsum(0)
    indices = keep.nonzero()[:, 1].to(torch.int32)
    values = torch.randn(indices.numel(), generator=gen)
    x = torch.randn(M, K, generator=gen)
    for mam in (True, False):
        _gpu_vs_cpu(x, values, indices, offsets, None, None, K, mam)
        q = torch.randint(-128, 128, values.shape, generator=gen).to(torch.int8)
        _gpu_vs_cpu(x, q, indices, offsets, None, torch.rand(N, generator=gen) * 0.01, K, mam)


@needs_gpu
def test_gpu_packed_module_and_empty():
    from mamext import sparse

    gen = torch.Generator().manual_seed(4)
    w = torch.randn(30, 50, generator=gen) * (torch.rand(30, 50, generator=gen) < 0.2)
    for dtype in (torch.float32, torch.int8):
        layer = sparse.PackedMAMLinear.from_weight(w, torch.randn(30, generator=gen), dtype)
        x = torch.randn(8, 50, generator=gen)
        with torch.no_grad():
            assert_bitwise(layer.to(_DEV)(x.to(_DEV)).cpu(), layer.cpu()(x))
    values, indices, offsets = _layer(5, 50, gen)
    d = _DEV
    out = torch.ops.mamext.packed_linear(torch.randn(0, 50, device=d), values.to(d), indices.to(d), offsets.to(d),
                                         None, None, 50, True)
    assert out.shape == (0, 5) and out.device.type == torch.device(d).type


@needs_gpu
def test_gpu_errors_match_cpu():
    """Mixed devices are rejected; a bad structure gives the CPU's message."""
    gen = torch.Generator().manual_seed(1)
    values, indices, offsets = _layer(6, 10, gen, density=0.5)
    x = torch.randn(3, 10)
    d = "cuda"
    with pytest.raises(RuntimeError, match="same CUDA device"):
        torch.ops.mamext.packed_linear(x.to(d), values, indices.to(d), offsets.to(d), None, None, 10, True)
    with pytest.raises(RuntimeError, match="same CUDA device"):
        torch.ops.mamext.packed_linear(x, values.to(d), indices.to(d), offsets.to(d), None, None, 10, True)
    with pytest.raises(RuntimeError, match="same CUDA device"):
        torch.ops.mamext.packed_linear(x.to(d), values.to(d), indices.to(d), offsets.to(d), torch.randn(6), None,
                                       10, True)

    def message(*args):
        with pytest.raises(RuntimeError) as e:
            torch.ops.mamext.packed_linear(*args)
        return str(e.value).splitlines()[0]

    bad_idx = indices.clone()
    bad_idx[int(offsets[3])] = 10
    bad_off = offsets.clone()
    bad_off[-1] += 1
    dec_off = offsets.clone()
    dec_off[2] = dec_off[3] + 1
    for idx, off in ((bad_idx, offsets), (indices, bad_off), (indices, dec_off)):
        cpu = message(x, values, idx, off, None, None, 10, True)
        gpu = message(x.to(d), values.to(d), idx.to(d), off.to(d), None, None, 10, True)
        assert gpu == cpu
    with pytest.raises(RuntimeError, match="weight_scale"):
        torch.ops.mamext.packed_linear(x.to(d), values.to(d), indices.to(d), offsets.to(d), None,
                                       torch.ones(6, device=d), 10, True)


@needs_gpu
def test_gpu_opcheck_and_stream():
    gen = torch.Generator().manual_seed(6)
    values, indices, offsets = _layer(20, 40, gen)
    d = "cuda"
    args = (torch.randn(7, 40, generator=gen).to(d), values.to(d), indices.to(d), offsets.to(d), None, None, 40, True)
    torch.library.opcheck(torch.ops.mamext.packed_linear.default, args,
                          test_utils=("test_schema", "test_faketensor"))
    x = torch.randn(300, 40, generator=gen)
    ref = _cpu(x, values, indices, offsets, None, None, 40, True)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        xd = x.to(d, non_blocking=True)
        out = torch.ops.mamext.packed_linear(xd, values.to(d), indices.to(d), offsets.to(d), None, None, 40, True)
        res = out.to("cpu", non_blocking=True)
    s.synchronize()
    assert_bitwise(res, ref)
