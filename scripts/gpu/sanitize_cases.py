"""Tiny calls of every CUDA kernel of mamext, for compute-sanitizer (scripts/gpu_check.sh).

    compute-sanitizer --tool memcheck python scripts/gpu/sanitize_cases.py [dense|packed|all]

Each case is small (the sanitizers slow kernels down by orders of magnitude)
but reaches every path: the dense forward with and without indices, split
and unsplit, the small-batch tile, misaligned rows (scalar loads), the NaN
scan, both backwards; the packed operator in float32 / float64 / int8, with
the shared-memory and global-memory paths, a non-finite input, the
column-major layout. Exits non-zero when a result differs from the CPU.
"""

from __future__ import annotations

import sys

import torch

import mamext  # noqa: F401  (registers the operators)
from mamext import sparse


def _same(a, b, what):
    try:
        torch.testing.assert_close(a.cpu(), b.cpu(), rtol=0, atol=0, equal_nan=True)
    except AssertionError as e:
        raise SystemExit(f"sanitize_cases: {what}: CUDA result differs from the CPU: {e}") from None


def dense():
    g = torch.Generator().manual_seed(0)
    ops = torch.ops.mamext
    for M, K, N in [(3, 37, 20), (40, 2048, 30), (130, 33, 70)]:  # small tile; split K on a large GPU; two tiles
        x, w, b = torch.randn(M, K, generator=g), torch.randn(N, K, generator=g), torch.randn(N, generator=g)
        x[0, 5] = float("nan")
        xd, wd, bd = x.cuda(), w.cuda(), b.cuda()
        _same(ops.mam_linear_inference(xd, wd, bd), ops.mam_linear_inference(x, w, b), f"inference {M}x{K}x{N}")
        out, amax, amin = ops.mam_linear_forward(xd, wd, bd)
        ref = ops.mam_linear_forward(x, w, b)
        _same(out, ref[0], f"forward {M}x{K}x{N}")
        _same(amax, ref[1], f"argmax {M}x{K}x{N}")
        gout = torch.randn(M, N, device="cuda")
        for det in (False, True):
            torch.use_deterministic_algorithms(det)
            ops.mam_linear_backward(gout, xd, wd, amax, amin, [True, True])
        torch.use_deterministic_algorithms(False)
    buf = torch.randn(17 * 64 + 1, device="cuda")  # rows off the 16-byte alignment
    xm, w = buf[1:].view(17, 64), torch.randn(9, 64, device="cuda")
    _same(ops.mam_linear_inference(xm, w, None), ops.mam_linear_inference(xm.cpu(), w.cpu(), None), "misaligned")
    torch.cuda.synchronize()


def packed():
    g = torch.Generator().manual_seed(1)
    for K in (50, 30000):  # shared-memory staging; global reads (x rows too long to stage)
        w = torch.randn(24, K, generator=g) * (torch.rand(24, K, generator=g) > 0.8)
        x = torch.randn(5, K, generator=g)
        x[1, 3] = float("inf")
        for dtype in (torch.float32, torch.float64, torch.int8):
            layer = sparse.PackedMAMLinear.from_weight(w, torch.randn(24, generator=g), dtype)
            ref = layer(x.clone())
            got = layer.to("cuda")(x.cuda())
            _same(got, ref, f"packed {dtype} K={K}")
            layer(x.cuda().t().contiguous().t())  # column-major input and output
    torch.cuda.synchronize()


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    if which in ("dense", "all"):
        dense()
    if which in ("packed", "all"):
        packed()
    print(f"sanitize_cases: {which}: ok")


if __name__ == "__main__":
    main()
