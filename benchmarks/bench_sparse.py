"""Packed sparse MAM layers versus the dense MAM forward.

For (B, K, N) in {(256, 1024, 1024), (1, 784, 512)} and 90 / 99 / 99.9 % of
connections pruned (random masks): the dense MAM forward
(``torch.ops.mamext.mam_linear_inference`` on the zero-filled weight), the
packed float32 layer and the packed int8 layer; speed-ups; bytes of the
packed layer versus dense float32 and versus the bound
``kept x (value + index bytes) + row offsets``.

"packed f32, col-major": the same packed layer given the input as a
column-major tensor (``x.t().contiguous().t()``, the layout a chain of packed
layers passes along: the output layout follows the input), which needs no
transposes; its output is column-major (checked equal to the contiguous one).

    PYTHONPATH=python python benchmarks/bench_sparse.py [--out benchmarks/sparse_results.md]

Timings: median over repeats after warm-up, wall clock, default torch threads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import mamext
from mamext._sysinfo import cpu_name
from mamext import sparse


def _time(fn, min_time=0.3, max_reps=2000, min_reps=5):
    fn()
    fn()
    times = []
    start = time.perf_counter()
    while (len(times) < min_reps or time.perf_counter() - start < min_time) and len(times) < max_reps:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(shapes, sparsities, seed=0):
    rows = []
    gen = torch.Generator().manual_seed(seed)
    for B, K, N in shapes:
        x = torch.randn(B, K, generator=gen)
        w_full = torch.randn(N, K, generator=gen)
        bias = torch.randn(N, generator=gen)
        for s in sparsities:
            w = w_full * (torch.rand(N, K, generator=gen) >= s)
            dense_t = _time(lambda: torch.ops.mamext.mam_linear_inference(x, w, bias), min_time=1.0, min_reps=5)
            f32 = sparse.PackedMAMLinear.from_weight(w, bias)
            i8 = sparse.PackedMAMLinear.from_weight(w, bias, torch.int8)
            xc = x.t().contiguous().t()
            with torch.inference_mode():
                ref = torch.ops.mamext.mam_linear_inference(x, w, bias)
                assert torch.equal(f32(x), ref)
                if B > 1:
                    assert f32(xc).stride() == (1, B) and torch.equal(f32(xc), ref)
                f32_t = _time(lambda: f32(x))
                col_t = _time(lambda: f32(xc)) if B > 1 else float("nan")
                i8_t = _time(lambda: i8(x))
            kept = f32.kept
            idx_b = f32.indices.element_size()
            bound = kept * (4 + idx_b) + f32.offsets.numel() * f32.offsets.element_size()
            rows.append(dict(B=B, K=K, N=N, pruned=s, kept=kept, dense_ms=dense_t * 1e3, f32_ms=f32_t * 1e3,
                             i8_ms=i8_t * 1e3, speedup=dense_t / f32_t, speedup_i8=dense_t / i8_t,
                             col_ms=col_t * 1e3, speedup_col=dense_t / col_t,
                             dense_bytes=N * K * 4, packed_bytes=f32.weight_nbytes, bound=bound,
                             int8_bytes=i8.weight_nbytes))
    return rows


def table(rows):
    lines = [
        "| (B, K, N) | pruned | kept | dense MAM (ms) | packed f32 (ms) | speed-up | packed f32, col-major (ms) "
        "| speed-up col-major | packed int8 (ms) | speed-up int8 "
        "| dense f32 bytes | packed f32 bytes | packed / bound | packed int8 bytes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| ({r['B']}, {r['K']}, {r['N']}) | {100 * r['pruned']:g}% | {r['kept']} | {r['dense_ms']:.3f} | "
            f"{r['f32_ms']:.4f} | {r['speedup']:.1f}x | "
            + (f"{r['col_ms']:.4f} | {r['speedup_col']:.1f}x | " if r['col_ms'] == r['col_ms'] else "n/a | n/a | ")
            + f"{r['i8_ms']:.4f} | {r['speedup_i8']:.1f}x | "
            f"{r['dense_bytes']} | {r['packed_bytes']} | {r['packed_bytes'] / r['bound']:.3f} | {r['int8_bytes']} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="also write the markdown table to this file")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = run([(256, 1024, 1024), (1, 784, 512)], [0.9, 0.99, 0.999])
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    head = (f"Machine: {cpu_name()}, {torch.get_num_threads()} threads, mamext CPU kernels "
            f"'{mamext.cpu_capability()}', torch {torch.__version__}; 1-min load average "
            f"{load0:.1f} before, {load1:.1f} after (other jobs share the CPU)")
    text = head + "\n\n" + table(rows)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
