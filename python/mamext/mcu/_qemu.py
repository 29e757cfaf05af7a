"""Running the firmware under ``qemu-system-arm``: samples in, outputs, timings and stack use out.

The exchange goes through host files in a fresh temporary directory (the
emulator's working directory), in the format ``runtime/mcu_main.c``
documents. ``-icount shift=0`` makes the virtual clock advance 1 ns per
executed instruction, so SysTick ticks count instructions (see
:data:`~mamext.mcu._targets.INSTRUCTIONS_PER_TICK`) deterministically.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._io import NetworkIO
from ._targets import INSTRUCTIONS_PER_TICK, Target
from ._tools import find_qemu

_NUMPY = {torch.float32: np.dtype("<f4"), torch.int8: np.dtype("i1")}
_EXIT_MEANING = {2: "a host file could not be opened", 3: "it read a truncated sample",
                 4: "a host file could not be written", 127: "the core took a fault (an exception)"}
_RECORD_WORDS = 3  # per sample: repeats, ticks of the inferences, ticks of the empty calls
_TRAILER_WORDS = 3  # stack high-water mark, stack size, ticks of the calibration loop
_CALIBRATION_INSTRUCTIONS = 2 * 100_000  # CALIBRATION_LOOPS iterations of subs + bne (runtime/mcu_main.c)


class EmulationError(RuntimeError):
    """The firmware did not finish normally under the emulator."""


@dataclass
class Emulation:
    outputs: torch.Tensor        # (samples, output_size), io.output_dtype
    instructions: torch.Tensor   # (samples,) int64: instructions of one inference, call to return
    stack_bytes: int             # deepest stack use of the whole run
    stack_reserved_bytes: int


def _instructions(stats: np.ndarray, samples: int) -> torch.Tensor:
    """From the SysTick records: (inference ticks - empty-call ticks) per repeat, plus the empty call's return."""
    records = stats[:samples * _RECORD_WORDS].reshape(samples, _RECORD_WORDS).astype(np.int64)
    repeats, busy, empty = records[:, 0], records[:, 1], records[:, 2]
    per_call = np.rint(INSTRUCTIONS_PER_TICK * (busy - empty) / repeats).astype(np.int64)
    return torch.from_numpy(per_call + 1)


def emulate(elf: Path, target: Target, io: NetworkIO, samples: torch.Tensor, repeats: int,
            timeout: float) -> Emulation:
    """Run ``samples`` (n, input_size) of ``io.input_dtype`` through the firmware ``elf`` on ``target``'s machine."""
    qemu = find_qemu()
    count = samples.shape[0]
    with tempfile.TemporaryDirectory(prefix="mamext_mcu_") as tmp:
        work = Path(tmp)
        payload = samples.contiguous().numpy().astype(_NUMPY[io.input_dtype], copy=False).tobytes()
        (work / "mcu_in.bin").write_bytes(np.uint32(repeats).astype("<u4").tobytes() + payload)
        command = [str(qemu), "-M", target.machine, "-nographic", "-monitor", "none", "-serial", "none",
                   "-semihosting-config", "enable=on,target=native", "-icount", "shift=0",
                   "-kernel", str(Path(elf).resolve())]   # the emulator runs in the exchange directory
        try:
            done = subprocess.run(command, cwd=work, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise EmulationError(f"mamext.mcu: the {target.name} firmware ran longer than {timeout:g} s under "
                                 f"{target.machine}") from None
        if done.returncode != 0:
            why = _EXIT_MEANING.get(done.returncode, "the emulator failed")
            raise EmulationError(f"mamext.mcu: the {target.name} firmware stopped with status {done.returncode} "
                                 f"({why}) under {target.machine}\n$ {' '.join(command)}\n"
                                 f"{(done.stderr or done.stdout).strip()}")
        outputs = np.fromfile(work / "mcu_out.bin", dtype=_NUMPY[io.output_dtype])
        stats = np.fromfile(work / "mcu_stats.bin", dtype="<u4")
    if outputs.size != count * io.output_size or stats.size != count * _RECORD_WORDS + _TRAILER_WORDS:
        raise EmulationError(f"mamext.mcu: the {target.name} firmware wrote {outputs.size} outputs and "
                             f"{stats.size} statistics words for {count} samples; expected "
                             f"{count * io.output_size} and {count * _RECORD_WORDS + _TRAILER_WORDS}")
    _check_tick_length(int(stats[-1]), target)
    return Emulation(outputs=torch.from_numpy(outputs.copy()).reshape(count, io.output_size),
                     instructions=_instructions(stats, count),
                     stack_bytes=int(stats[-3]), stack_reserved_bytes=int(stats[-2]))


def _check_tick_length(calibration_ticks: int, target: Target) -> None:
    """The instruction counts assume INSTRUCTIONS_PER_TICK; refuse an emulator whose SysTick runs otherwise."""
    measured = _CALIBRATION_INSTRUCTIONS / max(calibration_ticks, 1)
    if abs(measured - INSTRUCTIONS_PER_TICK) > 0.5:
        raise EmulationError(f"mamext.mcu: under {target.machine} a SysTick tick lasted {measured:.2f} "
                             f"instructions, not {INSTRUCTIONS_PER_TICK}; this qemu-system-arm clocks the board "
                             "differently, so its instruction counts would be wrong")
