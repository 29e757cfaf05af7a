"""The size report of an export: what :func:`mamext.export.to_c` wrote and the memory it needs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Tuple

from ._network import Network

_FLOAT_BYTES = 4


@dataclass
class Sizes:
    """Element counts and byte counts of one lowered network."""

    input_size: int
    output_size: int
    flash_bytes: int                # constant data (weights, indices, offsets, biases, scales)
    ram_bytes: int                  # static buffers (activations, int8 input buffer, convolution patch)
    largest_activation_bytes: int   # largest single activation (input, hidden or output), float32

    @classmethod
    def of(cls, net: Network, input_shape: Tuple[int, ...]) -> "Sizes":
        """Sizes of a lowered network: only the buffers it writes count as RAM."""
        return cls(input_size=math.prod(input_shape), output_size=net.size,
                   flash_bytes=sum(array.nbytes for array in net.arrays),
                   ram_bytes=_FLOAT_BYTES * (sum(net.buffers.values()) + net.patch) + net.qbuf,
                   largest_activation_bytes=_FLOAT_BYTES * net.largest)


@dataclass
class ExportResult:
    """What :func:`to_c` wrote and how much memory the network needs."""

    source: Path
    header: Path
    main: Path
    input_size: int
    output_size: int
    flash_bytes: int                # constant data (weights, indices, offsets, biases, scales)
    ram_bytes: int                  # static buffers (activations, int8 input buffer)
    largest_activation_bytes: int   # largest single activation (input, hidden or output), float32
    layers: List[str] = field(default_factory=list)
    runtime: List[Path] = field(default_factory=list)  # runtime headers copied beside the network
    element: str = "floats"         # what the input and output hold ("int8 codes": integer-only export)

    def __str__(self) -> str:
        lines = [f"C export: {self.source.name}, {self.header.name}, {self.main.name}",
                 f"  runtime: {', '.join(p.name for p in self.runtime) or '(none)'}",
                 f"  input {self.input_size} {self.element} -> output {self.output_size} {self.element}",
                 f"  flash (constant data): {self.flash_bytes} bytes",
                 f"  RAM (static buffers): {self.ram_bytes} bytes; "
                 f"largest activation {self.largest_activation_bytes} bytes"]
        lines += [f"  {s}" for s in self.layers]
        return "\n".join(lines)
