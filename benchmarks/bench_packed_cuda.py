"""CUDA benchmark of the packed (sparse) MAM layer against cuBLAS SGEMM and the dense MAM kernel.

    python benchmarks/bench_packed_cuda.py [--shapes 4096x4096x4096,256x4096x1024]
        [--pruned 0.9,0.99] [--reps 20] [--budget 60]

Shapes are B x K x N (batch, in_features, out_features). For every shape and
fraction of pruned connections (random masks), medians of CUDA-event timings
on the current stream of:
  * SGEMM: torch.mm(x, w.t()) in float32 with TF32 off (the baseline of the ratios);
  * dense MAM inference (mam_linear_inference) on the zero-filled weight;
  * packed float32 and packed int8 layers (mamext.sparse.PackedMAMLinear),
    contiguous input, under torch.inference_mode (as deployed).
The packed float32 output is checked equal to the dense MAM output first.
`--budget` caps the seconds spent per timed callable.
"""

from __future__ import annotations

import argparse

import torch

import mamext  # noqa: F401  (registers the operators)
from timing import median_ms
from mamext import sparse

DEFAULT_SHAPES = "4096x4096x4096,256x4096x1024"


def run(shapes, pruned, reps, budget_s):
    torch.backends.cuda.matmul.allow_tf32 = False
    gen = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    for B, K, N in shapes:
        x = torch.randn(B, K, device="cuda", generator=gen)
        w_full = torch.randn(N, K, device="cuda", generator=gen)
        bias = torch.randn(N, device="cuda", generator=gen)
        sgemm = median_ms(lambda: torch.mm(x, w_full.t()), reps, budget_s=budget_s, device="cuda")
        for p in pruned:
            w = w_full * (torch.rand(N, K, device="cuda", generator=gen) >= p)
            f32 = sparse.PackedMAMLinear.from_weight(w, bias).to("cuda")  # packs on the CPU
            i8 = sparse.PackedMAMLinear.from_weight(w, bias, torch.int8).to("cuda")
            with torch.inference_mode():
                dense = torch.ops.mamext.mam_linear_inference(x, w, bias)
                assert torch.equal(f32(x), dense), "packed float32 differs from the dense MAM kernel"
                dense_ms = median_ms(lambda: torch.ops.mamext.mam_linear_inference(x, w, bias), reps,
                                     budget_s=budget_s, device="cuda")
                f32_ms = median_ms(lambda: f32(x), reps, budget_s=budget_s, device="cuda")
                i8_ms = median_ms(lambda: i8(x), reps, budget_s=budget_s, device="cuda")
            rows.append(dict(shape=f"{B}x{K}x{N}", pruned=p, kept=f32.kept, sgemm=sgemm, dense=dense_ms,
                             f32=f32_ms, i8=i8_ms))
    return rows


def table(rows):
    lines = ["| B x K x N | pruned | kept | SGEMM (ms) | dense MAM (ms) | packed f32 (ms) | x SGEMM | packed int8 (ms) "
             "| x SGEMM |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['shape']} | {100 * r['pruned']:g}% | {r['kept']} | {r['sgemm']:.3f} | {r['dense']:.3f} | "
                     f"{r['f32']:.3f} | {r['f32'] / r['sgemm']:.2f} | {r['i8']:.3f} | {r['i8'] / r['sgemm']:.2f} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default=DEFAULT_SHAPES)
    ap.add_argument("--pruned", default="0.9,0.99")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--budget", type=float, default=60.0, help="seconds per timed callable at most")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_packed_cuda: no CUDA GPU")
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    pruned = [float(p) for p in args.pruned.split(",")]
    print(f"# packed MAM on {torch.cuda.get_device_name()} (torch {torch.__version__}, TF32 off)\n")
    print(table(run(shapes, pruned, args.reps, args.budget)))


if __name__ == "__main__":
    main()
