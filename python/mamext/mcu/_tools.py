"""The host tools the firmware needs: the Arm cross compiler with newlib, and QEMU."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

DEBIAN_PACKAGES = ("gcc-arm-none-eabi", "libnewlib-arm-none-eabi", "qemu-system-arm")


class ToolsMissingError(RuntimeError):
    """A tool that :mod:`mamext.mcu` needs is not installed; the message names the Debian packages."""


def _missing(what: str) -> ToolsMissingError:
    return ToolsMissingError(
        f"mamext.mcu: {what}; install the Debian packages {' '.join(DEBIAN_PACKAGES)} "
        f"(sudo apt-get install {' '.join(DEBIAN_PACKAGES)})")


def _which(program: str) -> Path:
    found = shutil.which(program)
    if found is None:
        raise _missing(f"{program} was not found on PATH")
    return Path(found)


@dataclass(frozen=True)
class Compiler:
    """``arm-none-eabi-gcc`` with the newlib C library (nano variant) it links against."""

    gcc: Path

    @classmethod
    def find(cls) -> "Compiler":
        gcc = _which("arm-none-eabi-gcc")
        try:
            specs = subprocess.run([str(gcc), "-print-file-name=nano.specs"], capture_output=True, text=True,
                                   timeout=60, env=os.environ.copy()).stdout.strip()
        except (OSError, subprocess.SubprocessError) as e:
            raise _missing(f"{gcc} cannot be run ({e})") from None
        if not os.path.isabs(specs) or not os.path.isfile(specs):
            raise _missing(f"{gcc} finds no newlib (nano.specs is missing)")
        return cls(gcc)


def find_qemu() -> Path:
    """``qemu-system-arm``, the emulator of the MPS2 boards."""
    return _which("qemu-system-arm")
