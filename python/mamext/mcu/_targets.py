"""The Cortex-M targets: compiler flags, the QEMU machine that emulates each, and its memory map."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

_WHERE = "mamext.mcu"

# Every supported QEMU machine (MPS2 FPGA images AN385, AN386, AN500) maps 4 MiB of SSRAM at 0x0 (code)
# and 4 MiB at 0x20000000 (data), and clocks SysTick at 25 MHz.
FLASH_ORIGIN, FLASH_LENGTH = 0x00000000, 4 * 1024 * 1024
RAM_ORIGIN, RAM_LENGTH = 0x20000000, 4 * 1024 * 1024
STACK_RESERVE_BYTES = 64 * 1024
SYSCLK_HZ = 25_000_000

# Under `-icount shift=0` one executed instruction advances the virtual clock by 1 ns,
# so a SysTick tick (1 / SYSCLK_HZ) lasts exactly this many instructions.
INSTRUCTIONS_PER_TICK = 1_000_000_000 // SYSCLK_HZ


@dataclass(frozen=True)
class Target:
    """One Cortex-M core: how to compile for it and which QEMU machine runs it."""

    name: str
    machine: str
    cpu_flags: Tuple[str, ...]
    has_fpu: bool


TARGETS: Dict[str, Target] = {
    "cortex-m3": Target("cortex-m3", "mps2-an385",
                        ("-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft"), has_fpu=False),
    "cortex-m4": Target("cortex-m4", "mps2-an386",
                        ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"), has_fpu=True),
    "cortex-m7": Target("cortex-m7", "mps2-an500",
                        ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"), has_fpu=True),
}

# Cores without a QEMU 7.2 machine to run them: refused with a dedicated explanation.
_NOT_EMULATED = {"cortex-m0plus": "qemu-system-arm has no Cortex-M0+ machine to run it"}


def get_target(target) -> Target:
    """The :class:`Target` named ``target``, or a ``ValueError`` listing the supported ones."""
    supported = ", ".join(repr(t) for t in TARGETS)
    if not isinstance(target, str):
        raise TypeError(f"{_WHERE}: target must be a str, one of {supported}; got {type(target).__name__}")
    key = target.strip().lower()
    if key in TARGETS:
        return TARGETS[key]
    why = f" ({_NOT_EMULATED[key]})" if key in _NOT_EMULATED else ""
    raise ValueError(f"{_WHERE}: unsupported target {target!r}{why}; supported targets: {supported}")
