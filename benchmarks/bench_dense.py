"""Dense MAM layer vs F.linear / nn.Linear and vs torch.compile of the naive formula.

    python benchmarks/bench_dense.py [--threads 2] [--shapes 64x512x512,...] [--device cpu|cuda]

Every figure is a median over --reps timed calls after warm-up, and every ratio
divides two figures measured in the same run. Shapes are B x K x N (batch,
in_features, out_features), float32. `--device cuda` runs the CUDA benchmark
(benchmarks/bench_dense_cuda.py).
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

import mamext
from timing import median_ms
from mamext._sysinfo import cpu_name

DEFAULT_SHAPES = "64x512x512,256x1024x1024,256x4096x1024,256x4096x4096"




def naive(x, w, b):
    p = x.unsqueeze(-2) * w
    return p.amax(-1) + p.amin(-1) + b


def bench_shape(B, K, N, reps, with_naive):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, K, generator=g)
    w = torch.randn(N, K, generator=g) / K**0.5
    b = torch.randn(N, generator=g)
    gout = torch.randn(B, N, generator=g)
    r = {}
    with torch.no_grad():
        r["linear"] = median_ms(lambda: F.linear(x, w, b), reps)
        r["mam_inf"] = median_ms(lambda: torch.ops.mamext.mam_linear_inference(x, w, b), reps)
        r["mam_idx"] = median_ms(lambda: torch.ops.mamext.mam_linear_forward(x, w, b), reps)

    xg, wg, bg = (t.clone().requires_grad_() for t in (x, w, b))

    def step(fn):
        def run():
            xg.grad = wg.grad = bg.grad = None
            fn(xg, wg, bg).backward(gout)
        return run

    r["linear_step"] = median_ms(step(F.linear), reps)
    r["mam_step"] = median_ms(step(mamext.mam_linear), reps)
    if with_naive:
        try:
            torch._dynamo.reset()
            cn = torch.compile(naive, fullgraph=True)
            with torch.no_grad():
                r["naive_inf"] = median_ms(lambda: cn(x, w, b), max(3, reps // 4), warmup=1)
            cs = torch.compile(naive)
            r["naive_step"] = median_ms(step(cs), max(3, reps // 4), warmup=1)
        except Exception as exc:  # out of memory on the big shapes, typically
            print(f"  naive formula skipped at {B}x{K}x{N}: {type(exc).__name__}: {exc}"[:200], file=sys.stderr)
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shapes", default=DEFAULT_SHAPES)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--no-naive", action="store_true", help="skip torch.compile of the naive formula")
    ap.add_argument("--naive-max-elems", type=float, default=2**31,
                    help="skip the naive formula when B*K*N exceeds this (its training step materialises it)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    argv = sys.argv[1:] if argv is None else list(argv)
    args, rest = ap.parse_known_args(argv)
    if args.device == "cuda":
        # The CUDA benchmark has its own defaults (shapes, reps, dtypes): hand
        # it only what was given explicitly, except the CPU-only options.
        import os

        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import bench_dense_cuda

        cuda_argv, skip = [], False
        for a in argv:
            if skip:
                skip = False
            elif a.split("=")[0] in ("--threads", "--naive-max-elems"):
                skip = "=" not in a
            else:
                cuda_argv.append(a)
        return bench_dense_cuda.main(cuda_argv)
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    torch.set_num_threads(args.threads)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    print(f"machine: {cpu_name()}, {args.threads} threads, mamext kernels: {mamext.cpu_capability()}, "
          f"torch {torch.__version__}")
    print()
    print("| B x K x N | F.linear ms | MAM inf ms | MAM+idx ms | inf / linear | idx / linear "
          "| Linear step ms | MAM step ms | step ratio | naive inf / MAM inf | naive step / MAM step |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for B, K, N in shapes:
        with_naive = not args.no_naive and B * K * N <= args.naive_max_elems
        r = bench_shape(B, K, N, args.reps, with_naive)
        ni = f"{r['naive_inf'] / r['mam_inf']:.1f}x" if "naive_inf" in r else "n/a"
        ns = f"{r['naive_step'] / r['mam_step']:.1f}x" if "naive_step" in r else "n/a"
        print(f"| {B}x{K}x{N} | {r['linear']:.3f} | {r['mam_inf']:.3f} | {r['mam_idx']:.3f} | "
              f"{r['mam_inf'] / r['linear']:.2f}x | {r['mam_idx'] / r['linear']:.2f}x | "
              f"{r['linear_step']:.3f} | {r['mam_step']:.3f} | {r['mam_step'] / r['linear_step']:.2f}x | "
              f"{ni} | {ns} |", flush=True)


if __name__ == "__main__":
    main()
