"""Cortex-M firmware for exported MAM networks, run under emulation.

:func:`build` exports a model with :func:`mamext.export.to_c` and compiles it
together with the firmware's own startup code, linker script and semihosting
harness (``runtime/``) into an ELF for a Cortex-M3, M4 or M7. The returned
:class:`Firmware` reports flash (text + data) and RAM (data + bss + the
stack high-water mark measured under emulation), and ``run(inputs)``
executes it in ``qemu-system-arm`` (MPS2 boards: AN385 Cortex-M3, AN386
Cortex-M4, AN500 Cortex-M7), exchanging samples and outputs through
semihosting host files, and counts the instructions of one inference with
SysTick under ``-icount shift=0`` (executed instructions, not cycles).

Networks: float32, today's int8 export (``dtype=torch.int8``: int8 weights,
float input quantisation and output scaling, so an FPU is needed), and the
integer-only int8 network (``dtype=torch.int8, calibration=data``, through
``mamext.quant.pack_integer`` and ``<name>_infer_int8``), the only kind the
Cortex-M3 (no FPU) runs.

:func:`fit` prunes a model at several fractions and returns the most accurate
packed network whose firmware fits a flash and RAM budget.

Needs the Debian packages ``gcc-arm-none-eabi``, ``libnewlib-arm-none-eabi``
and ``qemu-system-arm``; without them the functions raise
:class:`ToolsMissingError` naming them.
"""

from ._build import build
from ._compile import FirmwareBuildError
from ._firmware import Firmware
from ._fit import FitResult, fit
from ._qemu import EmulationError
from ._targets import TARGETS
from ._tools import DEBIAN_PACKAGES, ToolsMissingError

__all__ = ["build", "fit", "Firmware", "FitResult", "TARGETS", "ToolsMissingError", "FirmwareBuildError",
           "EmulationError", "DEBIAN_PACKAGES"]
