""":class:`Firmware`: a built image for one Cortex-M target, its flash/RAM figures, and running it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

import torch
from torch import nn

from ._compile import CompiledFirmware
from ._io import NetworkIO
from ._qemu import EmulationError, emulate
from ._targets import Target

Codec = Callable[[torch.Tensor], torch.Tensor]


class Firmware:
    """A firmware ELF for one target, with the figures a TinyML engineer budgets against.

    Attributes:
        elf: the linked image.
        target, machine: the core (``"cortex-m4"``...) and the QEMU machine emulating it.
        text_bytes, data_bytes, bss_bytes: the ELF's sections, grouped as ``arm-none-eabi-size`` does.
        flash_bytes: ``text + data``: code, constants and the load image of ``.data``.
        stack_bytes: the deepest stack use measured under emulation (stack painting).
        ram_bytes: ``data + bss + stack_bytes``.
        stack_bound_bytes: a static upper bound on the stack from ``-fstack-usage``
            (the sum of all frames; ``None`` if one is unbounded), needing no emulator.
        reference: the PyTorch model whose outputs the firmware reproduces.
        network: the :class:`mamext.export.ExportResult` of the C it runs.
        command: the compiler command line.
    """

    def __init__(self, compiled: CompiledFirmware, target: Target, io: NetworkIO, input_shape: Tuple[int, ...],
                 network, reference: nn.Module, encode: Optional[Codec] = None, decode: Optional[Codec] = None):
        self.elf: Path = compiled.elf
        self.target, self.machine = target.name, target.machine
        self.text_bytes, self.data_bytes, self.bss_bytes = (compiled.sizes.text, compiled.sizes.data,
                                                            compiled.sizes.bss)
        self.stack_bound_bytes = compiled.stack_bound_bytes
        self.stack_bytes: Optional[int] = None
        self.network, self.reference, self.command = network, reference, compiled.command
        self.input_shape = input_shape
        self._target, self._io, self._encode, self._decode = target, io, encode, decode
        self._runnable = compiled.runnable

    @property
    def flash_bytes(self) -> int:
        return self.text_bytes + self.data_bytes

    @property
    def ram_bytes(self) -> int:
        if self.stack_bytes is None:
            raise RuntimeError("mamext.mcu: the stack of this firmware was not measured yet; call run() first")
        return self.data_bytes + self.bss_bytes + self.stack_bytes

    @property
    def ram_bound_bytes(self) -> Optional[int]:
        """``data + bss + stack_bound_bytes``: a RAM figure that needs no emulator (at least ``ram_bytes``)."""
        if self.stack_bound_bytes is None:
            return None
        return self.data_bytes + self.bss_bytes + self.stack_bound_bytes

    def _samples(self, inputs) -> Tuple[torch.Tensor, bool]:
        """(samples as (n, input_size) in the firmware's input type, whether a single sample was given)."""
        x = inputs if isinstance(inputs, torch.Tensor) else torch.as_tensor(inputs)
        shape = tuple(x.shape)
        if shape == self.input_shape:
            single, x = True, x.unsqueeze(0)
        elif shape[1:] == self.input_shape and shape[0] > 0:
            single = False
        else:
            raise ValueError(f"mamext.mcu: Firmware.run: inputs must have shape {self.input_shape} (one sample) or "
                             f"(batch, {', '.join(map(str, self.input_shape))}), got {shape}")
        x = x.detach().cpu()
        if self._encode is not None:
            x = self._encode(x)
        if self._io.input_dtype.is_floating_point:
            if not x.is_floating_point():
                raise TypeError(f"mamext.mcu: Firmware.run: inputs must be floating point, got {x.dtype}")
            x = x.to(torch.float32)
        elif x.dtype != self._io.input_dtype:
            raise TypeError(f"mamext.mcu: Firmware.run: inputs must be {self._io.input_dtype}, got {x.dtype}")
        return x.reshape(x.shape[0], math.prod(self.input_shape)), single

    def run(self, inputs, *, repeats: int = 100, timeout: float = 300.0,
            per_sample: bool = False) -> Tuple[torch.Tensor, Union[float, torch.Tensor]]:
        """Run ``inputs`` on the emulated core: ``(outputs, instructions_per_inference)``.

        Args:
            inputs: one sample of ``input_shape`` or a batch ``(n, *input_shape)``.
            repeats: back-to-back inferences timed per sample (each sample's
                outputs come from its first inference). SysTick counts 40
                executed instructions per tick here, so a count is exact to
                within ``80 / repeats`` instructions; ``repeats=1`` is fastest.
            timeout: seconds before the emulator is stopped.
            per_sample: return the count of every sample (int64 tensor) instead of their mean.

        Returns:
            outputs ``(n, output_size)`` (``(output_size,)`` for one sample) and
            the executed instructions of one inference, call to return
            (instructions under ``-icount``, not cycles). Also updates
            :attr:`stack_bytes` to the deepest stack use seen.
        """
        if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= 100_000:
            raise ValueError(f"mamext.mcu: Firmware.run: repeats must be an int in [1, 100000], got {repeats!r}")
        if not self._runnable:
            raise RuntimeError("mamext.mcu: Firmware.run: this firmware was linked for sizing only (as "
                               "mamext.mcu.fit does); build it with mamext.mcu.build to run it")
        samples, single = self._samples(inputs)
        result = emulate(self.elf, self._target, self._io, samples, repeats, timeout)
        self._record_stack(result.stack_bytes, result.stack_reserved_bytes)
        outputs = result.outputs if self._decode is None else self._decode(result.outputs)
        counts = result.instructions
        if single:
            outputs = outputs[0]
        return outputs, counts if per_sample else float(counts.to(torch.float64).mean())

    def _record_stack(self, used: int, reserved: int) -> None:
        if used >= reserved:
            raise EmulationError(f"mamext.mcu: the {self.target} firmware used all of its {reserved} byte stack "
                                 "(overflow); the network's activations are too large for the stack reserve")
        self.stack_bytes = max(self.stack_bytes or 0, used)

    def measure_stack(self) -> int:
        """Run one all-zero sample (no timing repeats) to measure the stack; returns :attr:`stack_bytes`."""
        self.run(torch.zeros((1, *self.input_shape), dtype=torch.float32 if self._encode is not None
                             or self._io.input_dtype.is_floating_point else self._io.input_dtype), repeats=1)
        return self.stack_bytes

    def summary(self) -> List[str]:
        ram = "not measured" if self.stack_bytes is None else f"{self.ram_bytes} B"
        return [f"firmware {self.elf.name} for {self.target} ({self.machine})",
                f"  flash {self.flash_bytes} B (text {self.text_bytes} + data {self.data_bytes})",
                f"  RAM {ram} (data {self.data_bytes} + bss {self.bss_bytes} + stack {self.stack_bytes})"]

    def __repr__(self) -> str:
        return "\n".join(self.summary())
