"""Instructions per inference of one layer on emulated Cortex-M cores: packed MAM vs MAC.

For each target, layer shape K -> N and fraction of connections kept, three
single-layer networks go through ``mamext.mcu.build`` and run under
``qemu-system-arm``: the packed MAM layer (a pruned ``MAMLinear``), the packed
MAC layer keeping the same number of connections (a pruned ``nn.Linear``)
and the dense MAC layer (``nn.Linear``, every connection). Pruning is by
magnitude of random weights (``mamext.prune.prune_model``), so the kept
connections are spread at random. Each figure is the mean over a few random
input samples of the instructions executed by one call of the network's
``<name>_infer`` (SysTick under ``-icount shift=0``: executed instructions,
not cycles: QEMU models neither pipelines, caches nor flash wait states).
"flash" is the whole firmware image (text + data: the layer's constants,
its code and the firmware's ~1.6 KB harness).

Variants: "float32" keeps float weights and activations; "int8" is the C
export's ``dtype=torch.int8`` without calibration (int8 weights and
products, per-sample input quantisation and output scaling in float); its
"dense" MAC layer is packed with every connection kept, as that export packs
every layer. "int8 integer-only" is ``build(..., dtype=torch.int8,
calibration=...)`` (calibrated on random samples), the only variant a core
without FPU (cortex-m3) runs; it is reported as skipped while ``build``
raises ``NotImplementedError`` for it.

    PYTHONPATH=python python benchmarks/bench_mcu.py [--out benchmarks/mcu_results.md]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import torch
from torch import nn

import mamext.mcu as mcu
from mamext.nn import MAMLinear
from mamext.prune import prune_model

SHAPES = ((784, 64), (256, 128), (128, 10))
FRACTIONS = (0.01, 0.1)
TARGETS = ("cortex-m3", "cortex-m4", "cortex-m7")
# (name, dtype, calibrated)
VARIANTS = (("float32", torch.float32, False), ("int8", torch.int8, False), ("int8 integer-only", torch.int8, True))
SAMPLES, REPEATS = 4, 20


def _layer(kind: str, K: int, N: int, fraction: float, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    layer = MAMLinear(K, N) if kind == "mam" else nn.Linear(K, N)
    model = nn.Sequential(layer)
    if fraction < 1.0:
        prune_model(model, fraction)
    return model.eval()


def _measure(model: nn.Module, K: int, target: str, variant: tuple, work: Path) -> tuple:
    """(instructions per inference, firmware flash bytes) of one single-layer network."""
    _, dtype, calibrated = variant
    x = torch.randn(SAMPLES, K, generator=torch.Generator().manual_seed(7))
    calibration = [torch.randn(64, K, generator=torch.Generator().manual_seed(8))] if calibrated else None
    firmware = mcu.build(model, work, (K,), target=target, dtype=dtype, calibration=calibration)
    _, instructions = firmware.run(x, repeats=REPEATS)
    return instructions, firmware.flash_bytes


def _versions() -> str:
    qemu = subprocess.run(["qemu-system-arm", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    gcc = subprocess.run(["arm-none-eabi-gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    return f"{qemu}; {gcc}"


def _rows(target: str, variant: tuple, shapes, fractions, work: Path) -> list:
    rows = []
    for K, N in shapes:
        dense, dense_flash = _measure(_layer("mac", K, N, 1.0, 0), K, target, variant, work / "dense")
        for fraction in fractions:
            mam, mam_flash = _measure(_layer("mam", K, N, fraction, 0), K, target, variant, work / "mam")
            mac, mac_flash = _measure(_layer("mac", K, N, fraction, 0), K, target, variant, work / "mac")
            kept = max(1, round(fraction * K * N))
            rows.append(dict(target=target, dtype=variant[0], shape=f"{K}x{N}",
                             kept=f"{kept} ({100 * fraction:g}%)", mam=mam, mac=mac, dense=dense,
                             mam_flash=mam_flash, mac_flash=mac_flash, dense_flash=dense_flash))
            print(rows[-1], flush=True)
    return rows


def run(targets, shapes, fractions) -> tuple:
    """(table rows, notes on the variants skipped)."""
    rows, skipped = [], []
    with tempfile.TemporaryDirectory(prefix="bench_mcu_") as tmp:
        for target in targets:
            has_fpu = mcu.TARGETS[target].has_fpu
            for variant in VARIANTS:
                if not has_fpu and not variant[2]:
                    continue
                try:
                    rows += _rows(target, variant, shapes, fractions, Path(tmp))
                except NotImplementedError as e:
                    skipped.append(f"{target}, {variant[0]}: skipped ({e})")
                    print(skipped[-1], flush=True)
    return rows, skipped


def markdown(rows, skipped, versions: str) -> str:
    lines = [f"Emulator and compiler: {versions}. Figures are instructions executed per inference under "
             "`-icount shift=0` (SysTick), not cycles; flash is the whole firmware (text + data).", "",
             "| target | variant | layer K x N | kept | MAM packed instr | MAC packed instr | MAC dense instr | "
             "MAM / MAC packed | MAM / MAC dense | MAM flash B | MAC packed flash B | MAC dense flash B |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['dtype']} | {r['shape']} | {r['kept']} | {r['mam']:.0f} | "
                     f"{r['mac']:.0f} | {r['dense']:.0f} | {r['mam'] / r['mac']:.2f} | {r['mam'] / r['dense']:.3f} | "
                     f"{r['mam_flash']} | {r['mac_flash']} | {r['dense_flash']} |")
    lines += [""] + [f"- {note}" for note in skipped] if skipped else []
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the markdown table to this file")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=sorted(mcu.TARGETS))
    args = parser.parse_args()
    rows, skipped = run(args.targets, SHAPES, FRACTIONS)
    table = markdown(rows, skipped, _versions())
    print(table)
    if args.out:
        Path(args.out).write_text(table)


if __name__ == "__main__":
    main()
