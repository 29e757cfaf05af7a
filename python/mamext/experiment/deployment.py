"""The deployment table of ``mamext experiment --mcu``: MAC and MAM on an emulated Cortex-M.

For each trained model (MAC, MAM) two networks are deployed:

* **within 1 pt**: the model pruned at its "within 1 point" operating point
  (the one-shot criterion reaching the smallest remaining fraction whose
  validation accuracy stays within 1 point of the unpruned one; hidden
  layers only, as in the sweep);
* **32 KB flash**: :func:`mamext.mcu.fit` with a 32 KB flash budget on the
  Cortex-M4: global pruning of every linear layer (output layer included;
  the MAM ones only for the selection score) by that criterion's score, and of
  the convolutions too where the sweep prunes them (``--arch cnn
  --mam-conv``; otherwise they stay dense), the candidates
  being the sweep's fractions whose int8 weights alone (the kept ones of the
  pruned layers, all of the others) fit the budget (the largest few), chosen
  by integer-only accuracy on the validation half.

A CNN (``--arch cnn``) is deployed whole: its ``nn.Unflatten`` turns the
flattened image into ``(1, H, W)``, its convolutions, ReLUs and max pooling
run as integer convolution and pooling kernels.

Each is calibrated with :func:`mamext.quant.pack_integer` (static scales from
the scoring images of the training set), compacted with
:func:`mamext.compact.compact`, built with :func:`mamext.mcu.build` for the
Cortex-M4 and the Cortex-M7 and run under QEMU on the first ``--mcu-samples``
images of the test half: flash and RAM bytes of the firmware, executed
instructions per inference (mean over those images, one timed inference
each) and the test accuracy of the device's outputs, next to the PyTorch
integer network's predictions (which the device reproduces bit for bit) and
the unpruned float model's accuracy on the same images.
"""

from __future__ import annotations

import tempfile
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from .. import prune as mprune
from ..prune.layers import CONV_KINDS
from ..nn import MAMConv2d, MAMLinear
from . import sweep
from .options import UsageError

__all__ = ["TARGETS", "FLASH_BUDGET_BYTES", "RAM_TARGET_BYTES", "check_tools", "deployment_table", "markdown"]

#: The emulated cores of the table.
TARGETS = ("cortex-m4", "cortex-m7")
#: The fixed flash budget of :func:`mamext.mcu.fit`.
FLASH_BUDGET_BYTES = 32 * 1024
#: The RAM a MAM classifier should stay within (a target of the table, not a constraint of ``fit``).
RAM_TARGET_BYTES = 4 * 1024
#: How many pruning fractions :func:`mamext.mcu.fit` compiles at most, per model.
MAX_FIT_CANDIDATES = 4
#: Seconds the emulator may take per test image (a dense MAC network executes millions of instructions).
_SECONDS_PER_SAMPLE = 1.0


def check_tools() -> None:
    """Raise :class:`UsageError` naming the Debian packages when the Arm compiler or QEMU is missing."""
    from .. import mcu
    from ..mcu._tools import Compiler, find_qemu

    try:
        Compiler.find()
        find_qemu()
    except mcu.ToolsMissingError as e:
        raise UsageError(f"--mcu needs the Arm cross compiler and QEMU: {e}") from None


def _operating_point(summary, model_name: str) -> Optional[dict]:
    """The one-shot summary entry of ``model_name`` with the smallest within-1-point fraction."""
    entries = [e for e in summary if e["model"] == model_name and e["criterion"] in sweep.CRITERIA
               and e["within_1pt"] is not None]
    if not entries:
        return None
    return min(entries, key=lambda e: (e["within_1pt"]["fraction"], -e["within_1pt"]["val_acc"]))


def _within_1pt(model: nn.Module, entry: dict, scoring, calibration) -> dict:
    """The integer-only, compacted network at ``entry``'s within-1-point operating point."""
    from ..compact import compact
    from ..quant import pack_integer

    fraction = entry["within_1pt"]["fraction"]
    pruned, (kept, total) = sweep.prune_copy(model, fraction, entry["criterion"], scoring)
    network, report = compact(pack_integer(pruned.cpu(), calibration))
    return dict(point="within 1 pt", criterion=entry["criterion"], fraction=fraction, kept=kept, total=total,
                neurons=report.neurons_after, network=network)


_LAYERS = (nn.Linear, MAMLinear, nn.Conv2d, MAMConv2d)


def _fit_layers(model: nn.Module, score: str) -> Tuple[Optional[List[str]], List[str], str]:
    """What :func:`mamext.mcu.fit` prunes: its ``layers`` argument, the names it covers and their description.
    Every linear layer ``score`` applies to (``None``, fit's default), and, named with them, the convolutions
    the sweep prunes (``--arch cnn --mam-conv``) that it applies to."""
    spec = mprune.get_score(score, "mamext experiment --mcu")
    linear = [name for name, m in model.named_modules() if isinstance(m, spec.layer_kinds)]
    convs = [name for name in getattr(model, "pruned_layer_names", ())
             if isinstance(model.get_submodule(name), spec.explicit_kinds)]
    every_linear = [name for name, m in model.named_modules() if isinstance(m, (nn.Linear, MAMLinear))]
    has_conv = any(isinstance(m, CONV_KINDS) for m in model.modules())
    which = "the MAM linear layers" if linear != every_linear else "all linear layers" if has_conv else "all layers"
    if convs:
        return linear + convs, linear + convs, f"{which} and the convolutions"
    return None, linear, which


def _fit_fractions(model: nn.Module, fractions, pruned: List[str]) -> List[float]:
    """The largest sweep fractions (below 1) whose int8 weights, one byte each (the kept ones of the ``pruned``
    layers, all of the others), fit the flash budget."""
    weights = {name: m.weight.numel() for name, m in model.named_modules() if isinstance(m, _LAYERS)}
    total = sum(n for name, n in weights.items() if name in pruned)
    fixed = sum(n for name, n in weights.items() if name not in pruned)
    fitting = [f for f in sorted(fractions, reverse=True) if f < 1.0 and f * total + fixed <= FLASH_BUDGET_BYTES]
    return fitting[:MAX_FIT_CANDIDATES]


def _fit_budget(model: nn.Module, entry: dict, splits, calibration, fractions) -> dict:
    """:func:`mamext.mcu.fit` at the flash budget on the Cortex-M4; ``network`` is None when nothing fits."""
    from .. import mcu
    from ..mcu._targets import RAM_LENGTH

    score = sweep.CRITERIA[entry["criterion"]][0]
    layers, pruned, which = _fit_layers(model, score)
    point = dict(point="32 KB flash", criterion=f"{score}-global ({which})", network=None)
    candidates = _fit_fractions(model, fractions, pruned)
    if not candidates:
        return dict(point, error="no fraction of the sweep keeps few enough weights for the budget")
    validation = [(splits.x_val.cpu(), splits.y_val.cpu())]
    try:
        result = mcu.fit(model.cpu(), validation, flash_bytes=FLASH_BUDGET_BYTES, ram_bytes=RAM_LENGTH,
                         target=TARGETS[0], score=score, fractions=candidates, calibration=calibration,
                         input_shape=(splits.in_features,), loss_fn=nn.CrossEntropyLoss(), layers=layers)
    except ValueError as e:   # nothing fits: the message's first sentences say what the smallest needs
        return dict(point, error=str(e).splitlines()[0].removesuffix(" Tried:"))
    chosen = next(row for row in result.table if row.fraction == result.fraction)
    neurons = [layer.out_features for layer in result.model.layers if hasattr(layer, "counts")]
    return dict(point, fraction=result.fraction, kept=chosen.kept, total=chosen.total, neurons=neurons,
                network=result.model, fit_table=[vars(row) for row in result.table])


def _on_device(network, target: str, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Build ``network`` for ``target``, run ``x`` under QEMU: sizes, instructions, accuracy, mismatches."""
    from .. import mcu

    with tempfile.TemporaryDirectory(prefix="mamext_experiment_mcu_") as tmp:
        firmware = mcu.build(network, tmp, (x.shape[1],), target=target)
        outputs, counts = firmware.run(x, repeats=1, per_sample=True,
                                       timeout=300.0 + _SECONDS_PER_SAMPLE * len(x))
    with torch.no_grad():
        reference = network(x).argmax(1)
    predicted = outputs.argmax(1)
    return dict(target=target, flash_bytes=firmware.flash_bytes, ram_bytes=firmware.ram_bytes,
                stack_bytes=firmware.stack_bytes, instructions=float(counts.to(torch.float64).mean()),
                device_acc=float((predicted == y).to(torch.float64).mean()),
                torch_int8_acc=float((reference == y).to(torch.float64).mean()),
                mismatches=int((predicted != reference).sum()))


def _rows_of(model_name: str, point: dict, x, y, unpruned_acc: float, log) -> List[dict]:
    """One row per target for one deployed network (one row with the ``error`` when it has none)."""
    keys = ("point", "criterion", "fraction", "kept", "total", "neurons", "error", "fit_table")
    base = dict(model=model_name, unpruned_float_acc=unpruned_acc, samples=len(y),
                **{k: point[k] for k in keys if k in point})
    if point["network"] is None:
        return [base]
    rows = []
    for target in TARGETS:
        try:
            row = dict(base, **_on_device(point["network"], target, x, y))
        except Exception as e:  # noqa: BLE001 - one failing firmware must not lose the others
            row = dict(base, target=target, error=f"{type(e).__name__}: {e}")
        rows.append(row)
        if log:
            log(f"mcu {model_name} {point['point']} on {target}: "
                + ", ".join(f"{k}={row[k]}" for k in ("flash_bytes", "ram_bytes", "instructions", "device_acc",
                                                        "error") if k in row))
    return rows


def deployment_table(trained: Dict[str, nn.Module], summary, splits, loader, fractions, samples: int,
                     log=None) -> dict:
    """Deploy each trained model at its two points on every target of :data:`TARGETS`; see the module doc.

    ``loader`` holds the scoring images (training set): the data-driven
    scores and the calibration. ``fractions``: the sweep's. ``samples``: test
    images run on the device (the first of the test half).
    """
    n = min(samples, len(splits.y_test))
    x, y = splits.x_test[:n].cpu(), splits.y_test[:n].cpu()
    scoring = [(inputs.cpu(), targets.cpu()) for inputs, targets in loader]   # the firmware's models run on the CPU
    calibration = [inputs for inputs, _ in scoring]
    rows = []
    for name in ("mac", "mam"):
        entry = _operating_point(summary, name) if name in trained else None
        if entry is None:
            continue
        model = trained[name].cpu().eval()
        with torch.no_grad():
            unpruned = float((model(x).argmax(1) == y).to(torch.float64).mean())
        for point in (_within_1pt(model, entry, scoring, calibration),
                      _fit_budget(model, entry, splits, calibration, fractions)):
            rows += _rows_of(name, point, x, y, unpruned, log)
    whole = n == len(splits.y_test)
    sample = (f"the whole test half ({n} images)" if whole else f"the first {n} of the {len(splits.y_test)} "
              "images of the test half")
    return {"samples": n, "sample": sample, "targets": list(TARGETS), "flash_budget_bytes": FLASH_BUDGET_BYTES,
            "rows": rows, "goals": goals(rows)}


def goals(rows: List[dict]) -> List[str]:
    """The table's targets, met or missed, with figures."""
    done = [r for r in rows if "error" not in r]
    lines = []
    for target in TARGETS:
        mam = [r for r in done if r["model"] == "mam" and r["target"] == target]
        small = [r for r in mam if r["flash_bytes"] <= FLASH_BUDGET_BYTES and r["ram_bytes"] <= RAM_TARGET_BYTES
                 and r["device_acc"] >= r["unpruned_float_acc"] - 0.01]
        best = max(small or mam, key=lambda r: r["device_acc"], default=None)
        if best is not None:
            lines.append(f"- {target}: MAM within 1 point of its unpruned float accuracy in at most 32 KB flash "
                         f"and 4 KB RAM: {'met' if small else 'missed'} ({best['point']}: "
                         f"{100 * best['device_acc']:.2f}% on the device vs {100 * best['unpruned_float_acc']:.2f}%"
                         f" unpruned float, {best['flash_bytes']} B flash, {best['ram_bytes']} B RAM).")
        pair = {m: next((r for r in done if r["model"] == m and r["target"] == target
                         and r["point"] == "within 1 pt"), None) for m in ("mac", "mam")}
        if pair["mac"] and pair["mam"]:
            ratio = pair["mac"]["flash_bytes"] / pair["mam"]["flash_bytes"]
            fewer = pair["mam"]["instructions"] < pair["mac"]["instructions"]
            lines.append(f"- {target}: at the within-1-point operating points MAC needs {ratio:.1f}x the flash of "
                         f"MAM (target at least 8x: {'met' if ratio >= 8 else 'missed'}) and MAM executes "
                         f"{pair['mam']['instructions']:.0f} instructions per inference vs MAC's "
                         f"{pair['mac']['instructions']:.0f} (fewer: {'met' if fewer else 'missed'}).")
    return lines


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def markdown(deployment: dict) -> str:
    """The deployment table and its targets as Markdown."""
    lines = ["## On a microcontroller (integer-only int8, emulated)", "",
             "| model | point | criterion | remaining | neurons | target | flash B | RAM B | instructions / "
             "inference | device test acc | PyTorch int8 acc | mismatches | unpruned float acc |",
             "|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in deployment["rows"]:
        remaining = "–" if "kept" not in r else f"{100 * r['fraction']:g}% ({r['kept']}/{r['total']})"
        neurons = "-".join(map(str, r.get("neurons", []))) or "–"
        head = f"| {r['model'].upper()} | {r['point']} | {r['criterion']} | {remaining} | {neurons} | "
        if "error" in r:
            lines.append(head + f"{r.get('target', '–')} | {r['error']} | | | | | | |")
            continue
        lines.append(head + f"{r['target']} | {r['flash_bytes']} | {r['ram_bytes']} | {r['instructions']:.0f} | "
                     f"{_pct(r['device_acc'])} | {_pct(r['torch_int8_acc'])} | {r['mismatches']} | "
                     f"{_pct(r['unpruned_float_acc'])} |")
    lines += ["", f"Accuracies in % on {deployment['sample']}; device accuracy from the outputs of the firmware "
              "under qemu-system-arm (MPS2 AN386 Cortex-M4, AN500 Cortex-M7); mismatches: images whose device "
              "prediction differs from the PyTorch integer network's. Instructions are executed instructions "
              "(SysTick under `-icount shift=0`), not cycles. Flash: text + data of the whole firmware; RAM: "
              "data + bss + the measured stack. Neurons: per linear layer after compaction. The 32 KB point is "
              "`mamext.mcu.fit` on the Cortex-M4 (chosen on the validation half).", "", *deployment["goals"]]
    return "\n".join(lines) + "\n"
