"""MAMConv2d vs nn.Conv2d, inference and training step, in one run.

    python benchmarks/bench_conv.py [--threads 2] [--reps 20] [--clock wall|cpu]

Layers: LeNet-sized (B=64, 1->6 5x5 on 28x28; 6->16 5x5 on 14x14) and
small-VGG-sized (B=32, 64->64 3x3 pad 1 on 32x32; 128->128 3x3 pad 1 on
16x16), plus a depthwise 3x3 (groups = channels). "inf" is a forward under
``torch.no_grad`` (the MAM inference kernel); "step" is forward + backward
(gradients for input, weight and bias). "patch route" is the same MAM
convolution computed as patch rows of ``mam_linear`` (the route CUDA tensors
take), for comparison with the direct CPU operator that ``MAMConv2d`` runs.
Every figure is a median over --reps timed calls after warm-up, and every
ratio divides two figures of this run. The calls being compared alternate
(one call of each per round), so that a machine shared with other work slows
them alike. ``--clock cpu`` times the process's CPU time instead of the wall
clock: with ``--threads 1`` it does not count the time other processes hold
the core (cache sharing still shows). Prints a markdown table with the CPU and the load average at the
start and the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

import mamext
from mamext._sysinfo import cpu_name
from mamext.nn import conv as conv_module

# (label, batch, C_in, C_out, kernel, padding, groups, H=W)
LAYERS = [
    ("LeNet conv1", 64, 1, 6, 5, 0, 1, 28),
    ("LeNet conv2", 64, 6, 16, 5, 0, 1, 14),
    ("VGG 64->64", 32, 64, 64, 3, 1, 1, 32),
    ("VGG 128->128", 32, 128, 128, 3, 1, 1, 16),
    ("depthwise 64", 32, 64, 64, 3, 1, 64, 32),
]



def patch_route(x, weight, bias, padding, groups):
    """The MAM convolution as patch rows of mam_linear (stride 1, dilation 1)."""
    kernel, pad = tuple(weight.shape[2:]), (padding, padding)
    rows = conv_module._patch_rows(x, kernel, (1, 1), pad, (1, 1), groups)
    out = conv_module._mam_rows(rows, weight.reshape(weight.shape[0], -1), bias, False)
    h_out, w_out = conv_module._output_size(x.shape[2:], kernel, (1, 1), pad, (1, 1), "patch_route")
    return out.reshape(x.shape[0], h_out, w_out, -1).permute(0, 3, 1, 2).contiguous()


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def interleaved_medians(fns, reps, warmup=2, clock=time.perf_counter):
    """{name: median ms} of ``reps`` timed calls of each function, one call of each per round."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = clock()
            fn()
            times[name].append((clock() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_layer(batch, c_in, c_out, kernel, padding, groups, size, reps, clock):
    torch.manual_seed(0)
    conv = nn.Conv2d(c_in, c_out, kernel, padding=padding, groups=groups)
    mam = mamext.nn.MAMConv2d(c_in, c_out, kernel, padding=padding, groups=groups)
    mam.load_state_dict(conv.state_dict())
    x = torch.randn(batch, c_in, size, size)
    gout = torch.randn_like(conv(x))
    xg = x.clone().requires_grad_()

    def patched(inp):
        return patch_route(inp, mam.weight, mam.bias, padding, groups)

    def step(layer, forward=None):
        def run():
            layer.zero_grad(set_to_none=True)
            xg.grad = None
            (forward or layer)(xg).backward(gout)
        return run

    with torch.no_grad():
        r = interleaved_medians({"conv_inf": lambda: conv(x), "mam_inf": lambda: mam(x),
                                 "patch_inf": lambda: patched(x)}, reps, clock=clock)
    r.update(interleaved_medians({"conv_step": step(conv), "mam_step": step(mam),
                                  "patch_step": step(mam, patched)}, reps, clock=clock))
    return r


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    print(f"CPU: {cpu_name()}; torch {torch.__version__}, {args.threads} threads, mamext kernels "
          f"{mamext.cpu_capability()}; {args.clock} clock; 1-minute load average at start {load:.1f}\n")
    print("| layer | B | C_in->C_out | k | groups | HxW | Conv2d inf ms | MAM inf ms | inf ratio | "
          "patch route inf ratio | Conv2d step ms | MAM step ms | step ratio | patch route step ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label, batch, c_in, c_out, kernel, padding, groups, size in LAYERS:
        r = bench_layer(batch, c_in, c_out, kernel, padding, groups, size, args.reps, CLOCKS[args.clock])
        print(f"| {label} | {batch} | {c_in}->{c_out} | {kernel} | {groups} | {size}x{size} | "
              f"{r['conv_inf']:.3f} | {r['mam_inf']:.3f} | {r['mam_inf'] / r['conv_inf']:.2f}x | "
              f"{r['patch_inf'] / r['conv_inf']:.2f}x | "
              f"{r['conv_step']:.3f} | {r['mam_step']:.3f} | {r['mam_step'] / r['conv_step']:.2f}x | "
              f"{r['patch_step'] / r['conv_step']:.2f}x |", flush=True)
    print(f"\n1-minute load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
