""":func:`build`: export a model to C and compile it, with the firmware's own startup code, for a Cortex-M."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch import nn

from ..export import to_c
from ..export._args import check_input_shape, check_out_dir
from ._compile import RESERVED_STEMS, compile_firmware
from ._firmware import Codec, Firmware
from ._io import NetworkIO
from ._targets import Target, get_target
from ._tools import Compiler, find_qemu

_WHERE = "mamext.mcu.build"


@dataclass
class ExportedNetwork:
    """What the firmware compiles: the export's result, its entry point, and the PyTorch reference."""

    export: object
    io: NetworkIO
    reference: nn.Module
    encode: Optional[Codec] = None
    decode: Optional[Codec] = None


def _check_dtype(dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or dtype not in (torch.float32, torch.int8):
        raise TypeError(f"{_WHERE}: dtype must be torch.float32 or torch.int8, got {dtype!r}")
    return dtype


def _check_name(name) -> str:
    if isinstance(name, str) and name.lower() in RESERVED_STEMS:
        raise ValueError(f"{_WHERE}: name {name!r} clashes with the firmware files written beside the network "
                         f"({', '.join(sorted(RESERVED_STEMS))}); choose another name")
    return name


def _refuse_float_on(target: Target, dtype: torch.dtype) -> None:
    if not target.has_fpu:
        what = "the float32 network" if dtype == torch.float32 else \
            "the int8 network without calibration (it quantises inputs and scales outputs in float)"
        raise ValueError(f"{_WHERE}: target {target.name!r} has no FPU and {what} needs one; build the "
                         "integer-only network (dtype=torch.int8, calibration=<data>) or choose a target with "
                         "an FPU ('cortex-m4', 'cortex-m7')")


def _float_io_network(model: nn.Module, out_dir: Path, shape, dtype: torch.dtype, name: str) -> ExportedNetwork:
    """The float export, or today's int8 export (float samples, int8 weights and products inside)."""
    export = to_c(model, out_dir, shape, dtype, name=name)
    if dtype == torch.int8:
        from ..sparse import pack
        reference = pack(model, torch.int8)
    else:
        reference = model
    io = NetworkIO(header=f"{name}.h", infer=f"{name}_infer", input_dtype=torch.float32,
                   output_dtype=torch.float32, input_size=export.input_size, output_size=export.output_size)
    return ExportedNetwork(export=export, io=io, reference=reference)


def _integer_module():
    """:mod:`mamext.quant` (the integer-only int8 networks), or None where this installation lacks it."""
    try:
        from .. import quant
    except ImportError:
        return None
    return quant if hasattr(quant, "pack_integer") and hasattr(quant, "IntegerNetwork") else None


def _is_integer_network(model) -> bool:
    quant = _integer_module()
    return quant is not None and isinstance(model, quant.IntegerNetwork)


def _integer_codes(integer: nn.Module) -> Codec:
    """Host side of the firmware's int8 input: float samples quantised with the static input scale; codes as given."""
    def encode(x: torch.Tensor) -> torch.Tensor:
        return x if x.dtype == torch.int8 else integer.quantize_input(x)
    return encode


def _integer_network(model: nn.Module, out_dir: Path, shape, calibration, name: str) -> ExportedNetwork:
    """The integer-only network (``mamext.quant``): int8 codes in and out of ``<name>_infer_int8``.

    ``model`` is calibrated with ``mamext.quant.pack_integer(model,
    calibration)`` unless it is an ``IntegerNetwork`` already. The firmware
    runs int8 codes; :meth:`Firmware.run` quantises float inputs with the
    static input scale and zero point and dequantises the outputs, so its
    outputs equal the ``IntegerNetwork``'s forward bit for bit.
    """
    quant = _integer_module()
    if quant is None:
        raise NotImplementedError(f"{_WHERE}: calibration= (the integer-only int8 network) needs mamext.quant "
                                  "(pack_integer and the C export's <name>_infer_int8), which this installation "
                                  "does not have")
    integer = model if isinstance(model, quant.IntegerNetwork) else quant.pack_integer(model, calibration)
    export = to_c(integer, out_dir, shape, torch.int8, name=name)
    io = NetworkIO(header=f"{name}.h", infer=f"{name}_infer_int8", input_dtype=torch.int8,
                   output_dtype=torch.int8, input_size=export.input_size, output_size=export.output_size)
    return ExportedNetwork(export=export, io=io, reference=integer, encode=_integer_codes(integer),
                           decode=integer.dequantize_output)


def build_firmware(model: nn.Module, out_dir, input_shape, *, target: str, dtype: torch.dtype,
                   calibration, name: str, measure: bool) -> Firmware:
    """:func:`build`; ``measure=False`` only sizes the firmware: no emulator run (``ram_bytes`` unavailable,
    ``ram_bound_bytes`` is), linked for an address map larger than the board's, so ``run`` is refused."""
    spec = get_target(target)
    dtype = _check_dtype(dtype)
    name = _check_name(name)
    shape = check_input_shape(input_shape)
    out_dir = check_out_dir(out_dir)
    if not isinstance(model, nn.Module):
        raise TypeError(f"{_WHERE}: model must be an nn.Module, got {type(model).__name__}")
    integer = calibration is not None or _is_integer_network(model)
    if calibration is not None and dtype != torch.int8:
        raise ValueError(f"{_WHERE}: calibration= applies to dtype=torch.int8 only, got dtype={dtype}")
    if not integer:
        _refuse_float_on(spec, dtype)
    Compiler.find()
    if measure:
        find_qemu()
    if integer:
        network = _integer_network(model, out_dir, shape, calibration, name)
    else:
        network = _float_io_network(model, out_dir, shape, dtype, name)
    compiled = compile_firmware(out_dir, [f"{name}.c"], network.io, spec, f"{name}.elf", sizing_only=not measure)
    firmware = Firmware(compiled, spec, network.io, shape, network.export, network.reference,
                        encode=network.encode, decode=network.decode)
    if measure:
        firmware.measure_stack()
    return firmware


def build(model: nn.Module, out_dir: Union[str, os.PathLike], input_shape: Sequence[int], *,
          target: str = "cortex-m4", dtype: torch.dtype = torch.int8, calibration=None,
          name: str = "mamnet") -> Firmware:
    """Compile ``model`` into a firmware ELF for a Cortex-M core, and measure its stack under QEMU.

    Args:
        model: what :func:`mamext.export.to_c` accepts (pruned, packed or dense layers).
        out_dir: directory for the C sources, the runtime and ``<name>.elf``.
        input_shape: one sample's shape, without the batch dimension.
        target: ``"cortex-m3"`` (no FPU: integer-only networks only),
            ``"cortex-m4"`` (single-precision FPU) or ``"cortex-m7"``.
        dtype: ``torch.float32`` or ``torch.int8`` (the default; every layer
            quantised like ``mamext.sparse.pack(model, torch.int8)``).
        calibration: data for the integer-only int8 network (an iterable of
            input batches or ``(input, target)`` pairs): the model is
            calibrated with ``mamext.quant.pack_integer`` and the firmware runs
            ``<name>_infer_int8`` with integer arithmetic only (the one path
            for ``"cortex-m3"``). A ``mamext.quant.IntegerNetwork`` given as
            ``model`` takes that path without ``calibration``.
        name: C identifier prefix and file stem of the network.

    Returns:
        a :class:`Firmware`: ``elf``, ``flash_bytes``, ``ram_bytes`` and
        ``run(inputs) -> (outputs, instructions_per_inference)``.

    Raises:
        ToolsMissingError: ``arm-none-eabi-gcc``, newlib or ``qemu-system-arm`` is missing.
        ValueError: an unsupported target, or a float network for a core without FPU.
    """
    return build_firmware(model, out_dir, input_shape, target=target, dtype=dtype, calibration=calibration,
                          name=name, measure=True)
