""":func:`fit`: the most accurate pruned, compacted, packed network whose firmware fits a flash and RAM budget."""

from __future__ import annotations

import copy
import numbers
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from torch import nn

from ..prune import get_score, prune_model, remaining
from ..prune.ranking import check_fraction
from ..sparse import pack
from ._build import _integer_module, build_firmware
from ._targets import get_target

_WHERE = "mamext.mcu.fit"
DEFAULT_FRACTIONS = (1.0, 0.5, 0.25, 0.1, 0.05, 0.02, 0.01)


@dataclass
class FitRow:
    """One pruning fraction tried: connections kept, firmware size, accuracy, and whether it fits."""

    fraction: float
    kept: int
    total: int
    flash_bytes: int
    ram_bytes: Optional[int]   # data + bss + the static stack bound (no emulator run)
    accuracy: float
    fits: bool
    neurons_removed: Optional[int] = None  # by compaction (None: not compacted)


@dataclass
class FitResult:
    """:func:`fit`'s answer: the chosen packed model and everything tried."""

    model: nn.Module           # pruned and packed (what the firmware runs), eval mode
    fraction: float
    accuracy: float
    flash_bytes: int
    ram_bytes: int
    table: List[FitRow] = field(default_factory=list)

    def markdown(self) -> str:
        lines = ["| fraction kept | connections | neurons removed | flash (B) | RAM bound (B) | accuracy | fits |",
                 "|---:|---:|---:|---:|---:|---:|:---:|"]
        for row in self.table:
            ram = "-" if row.ram_bytes is None else str(row.ram_bytes)
            mark = "chosen" if row.fraction == self.fraction else ("yes" if row.fits else "no")
            removed = "-" if row.neurons_removed is None else str(row.neurons_removed)
            lines.append(f"| {row.fraction:g} | {row.kept}/{row.total} | {removed} | {row.flash_bytes} | {ram} | "
                         f"{100 * row.accuracy:.2f}% | {mark} |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.markdown()


def _check_budget(value, arg: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{_WHERE}: {arg} must be a positive int (bytes), got {value!r}")
    return int(value)


def _check_fractions(fractions) -> List[float]:
    if isinstance(fractions, (str, bytes)) or not hasattr(fractions, "__iter__"):
        raise TypeError(f"{_WHERE}: fractions must be a sequence of floats in (0, 1], got {fractions!r}")
    checked = sorted({check_fraction(f, _WHERE, "each of fractions") for f in fractions}, reverse=True)
    if not checked:
        raise ValueError(f"{_WHERE}: fractions must not be empty")
    return checked


def _batches(data) -> list:
    """``data`` as a list of (inputs, targets) pairs (read once: a generator works too)."""
    if isinstance(data, torch.Tensor) or not hasattr(data, "__iter__"):
        raise TypeError(f"{_WHERE}: data must be an iterable of (inputs, targets) batches, got {type(data).__name__}")
    batches = []
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2 or not isinstance(batch[0], torch.Tensor):
            raise TypeError(f"{_WHERE}: each batch of data must be an (inputs, targets) pair of tensors")
        batches.append((batch[0], batch[1]))
    if not batches:
        raise ValueError(f"{_WHERE}: data is empty; accuracy needs at least one (inputs, targets) batch")
    return batches


def _accuracy(model: nn.Module, batches: list) -> float:
    """Fraction of samples whose arg-max output equals the target class."""
    correct = total = 0
    with torch.no_grad():
        for inputs, targets in batches:
            predicted = model(inputs).argmax(-1)
            correct += int((predicted == targets.to(predicted.device)).sum())
            total += int(targets.numel())
    return correct / max(total, 1)


def _copy(model: nn.Module) -> nn.Module:
    """A deep copy; the non-leaf ``weight`` tensors of pruned layers (which deepcopy refuses) are cloned."""
    memo = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)


def _layer_names(model: nn.Module, layers):
    """``layers`` with every module given as its qualified name in ``model``, so that it names the layers of
    each pruned copy; None stays None (strings and anything else go to prune_model as they are)."""
    if layers is None or isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
        return layers
    names = {id(module): name for name, module in model.named_modules()}
    out = []
    for layer in layers:
        if isinstance(layer, nn.Module):
            if id(layer) not in names:
                raise ValueError(f"{_WHERE}: layers holds a {type(layer).__name__} that is not a module of model")
            layer = names[id(layer)]
        out.append(layer)
    return out


def _compactor(option):
    """:func:`mamext.compact.compact` when compaction is on (``None``: when installed), else None."""
    try:
        from ..compact import compact
    except ImportError:
        compact = None
    if option is None or not option:
        return compact if option is None else None
    if compact is None:
        raise NotImplementedError(f"{_WHERE}: compact=True needs mamext.compact, which this installation lacks")
    return compact


def _network(candidate: nn.Module, options: dict) -> tuple:
    """The network the firmware runs: calibrated (integer path) and compacted when asked; (network, neurons removed).

    Compaction keeps at least one neuron in every layer, so its result always exports to C.
    """
    network = candidate
    if options["calibration"] is not None:
        quant = _integer_module()
        if quant is None:
            raise NotImplementedError(f"{_WHERE}: calibration= needs mamext.quant, which this installation lacks")
        network = quant.pack_integer(candidate, options["calibration"])
    if options["compact"] is None:
        return network, None
    smaller, report = options["compact"](network)
    return smaller, report.neurons_removed


def _try(model, fraction, batches, shape, work: Path, options: dict) -> tuple:
    """Prune a copy to ``fraction``, build its firmware (sizes only) and measure its accuracy."""
    candidate = _copy(model)
    prune_model(candidate, fraction, score=options["score"], layers=options["layers"], data=batches,
                loss_fn=options["loss_fn"])
    counts = remaining(candidate, layers=options["layers"])
    network, removed = _network(candidate, options)
    firmware = build_firmware(network, work / f"kept_{fraction:g}", shape, target=options["target"],
                              dtype=options["dtype"], calibration=None, name="mamnet", measure=False)
    # int8: the firmware's reference is the model its C reproduces (the IntegerNetwork on the integer path)
    packed = firmware.reference if options["dtype"] == torch.int8 else pack(network, torch.float32)
    ram = firmware.ram_bound_bytes
    fits = firmware.flash_bytes <= options["flash_bytes"] and ram is not None and ram <= options["ram_bytes"]
    row = FitRow(fraction=fraction, kept=counts["kept"], total=counts["total"], flash_bytes=firmware.flash_bytes,
                 ram_bytes=ram, accuracy=_accuracy(packed, batches), fits=fits, neurons_removed=removed)
    return row, packed


def _nothing_fits(table: List[FitRow], options: dict) -> ValueError:
    smallest = min(table, key=lambda row: row.flash_bytes)
    text = FitResult(model=nn.Identity(), fraction=-1.0, accuracy=0.0, flash_bytes=0, ram_bytes=0,
                     table=table).markdown()
    return ValueError(f"{_WHERE}: no pruned network fits {options['flash_bytes']} B of flash and "
                      f"{options['ram_bytes']} B of RAM on {options['target']}; the smallest tried (fraction "
                      f"{smallest.fraction:g}) needs {smallest.flash_bytes} B of flash and {smallest.ram_bytes} B "
                      f"of RAM. Try smaller fractions or a larger budget. Tried:\n{text}")


def fit(model: nn.Module, data, *, flash_bytes: int, ram_bytes: int, target: str = "cortex-m4",
        score: str = "magnitude", fractions: Sequence[float] = DEFAULT_FRACTIONS,
        dtype: torch.dtype = torch.int8, calibration=None, compact: Optional[bool] = None,
        input_shape: Optional[Sequence[int]] = None, loss_fn=None, layers=None) -> FitResult:
    """The most accurate pruned (compacted) packed ``model`` whose firmware fits ``flash_bytes`` and ``ram_bytes``.

    For each fraction of connections to keep, a copy of ``model`` is pruned
    with :func:`mamext.prune.prune_model` (``score``, one of
    :func:`mamext.prune.score_names`; ``data`` and ``loss_fn`` feed the
    data-driven scores), its firmware is compiled for ``target`` (sizes only:
    flash is text + data, RAM is data + bss + the static stack bound from
    ``-fstack-usage``, which is at least the measured stack; no emulator
    runs), and the packed PyTorch model's accuracy (arg-max equals the target
    class) is measured on ``data``, an iterable of ``(inputs, targets)``
    batches. Ties in accuracy go to the smaller flash.

    Args:
        input_shape: one sample's shape; default: the first batch's inputs without the batch dimension.
        layers: the layers to prune, as :func:`mamext.prune.prune_model`'s
            ``layers``: None (default) prunes every linear layer the score
            applies to (a CNN's classifier), convolutions only when named.
        dtype, calibration: as in :func:`mamext.mcu.build` (with ``calibration``
            each pruned copy is calibrated with ``mamext.quant.pack_integer``).
        compact: remove what cannot influence the output
            (:func:`mamext.compact.compact`) before sizing; default: when
            ``mamext.compact`` is installed. ``FitRow.neurons_removed`` says
            how many neurons it removed.

    Returns:
        :class:`FitResult` with the chosen packed ``model``, its fraction,
        accuracy and sizes, and ``table``, one :class:`FitRow` per fraction.

    Raises:
        ValueError: if no fraction fits (the message holds the table).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"{_WHERE}: model must be an nn.Module, got {type(model).__name__}")
    options = dict(flash_bytes=_check_budget(flash_bytes, "flash_bytes"),
                   ram_bytes=_check_budget(ram_bytes, "ram_bytes"), target=get_target(target).name,
                   score=score, dtype=dtype, calibration=calibration, loss_fn=loss_fn, compact=_compactor(compact),
                   layers=_layer_names(model, layers))
    if calibration is not None and dtype != torch.int8:
        raise ValueError(f"{_WHERE}: calibration= applies to dtype=torch.int8 only, got dtype={dtype}")
    if isinstance(score, str):
        get_score(score, _WHERE)
    fractions = _check_fractions(fractions)
    batches = _batches(data)
    shape = tuple(batches[0][0].shape[1:]) if input_shape is None else input_shape
    table, models = [], {}
    with tempfile.TemporaryDirectory(prefix="mamext_fit_") as tmp:
        for fraction in fractions:
            row, packed = _try(model, fraction, batches, shape, Path(tmp), options)
            table.append(row)
            models[fraction] = packed
    fitting = [row for row in table if row.fits]
    if not fitting:
        raise _nothing_fits(table, options)
    best = max(fitting, key=lambda row: (row.accuracy, -row.flash_bytes))
    return FitResult(model=models[best.fraction], fraction=best.fraction, accuracy=best.accuracy,
                     flash_bytes=best.flash_bytes, ram_bytes=best.ram_bytes, table=table)
