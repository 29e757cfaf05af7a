"""The one timing rule of the benchmarks: the median of `reps` timed calls
after `warmup` untimed ones, stopping early (with at least 3 timed calls) once
`budget_s` seconds are spent. CPU: wall clock around each call. CUDA: a pair
of CUDA events around each call on the current stream, read after one final
synchronisation (so the timed calls queue back to back)."""

from __future__ import annotations

import statistics
import time

import torch


def median_ms(fn, reps, *, warmup=2, budget_s=20.0, device=None):
    """Median time of one call of ``fn()`` in milliseconds (see the module docstring)."""
    for _ in range(warmup):
        fn()
    if device is not None and torch.device(device).type == "cuda":
        return _median_cuda_ms(fn, reps, budget_s, torch.device(device))
    times = []
    start = time.perf_counter()
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
        if time.perf_counter() - start > budget_s and len(times) >= 3:
            break
    return statistics.median(times)


def _median_cuda_ms(fn, reps, budget_s, device):
    torch.cuda.synchronize(device)
    pairs = []
    start = time.perf_counter()
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        pairs.append((s, e))
        if time.perf_counter() - start > budget_s and len(pairs) >= 3:
            break
    torch.cuda.synchronize(device)
    return statistics.median(s.elapsed_time(e) for s, e in pairs)
