"""The network as the generated C sees it: constant arrays, statements, static buffers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Tuple, Union

from ._args import check_c_size
from ._c_text import CArray, CStruct


@dataclass
class Network:
    """The network lowered to C: constant arrays, the statements of ``<name>_infer``, static buffers.

    The current activation (``shape``, one sample) lives in ``current``: the
    ``input`` argument or one of the float buffers ``act0``/``act1``, whose
    sizes in elements ``buffers`` records (only buffers written appear).
    Dense convolutions gather each output's patch into ``mam_patch``
    (``patch`` elements; integer networks: ``mam_qpatch``, int16, for dense
    weights and ``mam_qcodes``, ``qpatch`` int8 codes, for encoded ones); float
    packed ones read their kept inputs directly; integer encoded ones write
    one position's outputs to ``mam_qcol`` (``col`` elements); all need the
    convolution runtime (``conv``).
    """

    shape: Tuple[int, ...]
    int8: bool
    current: str = "input"
    buffers: Dict[str, int] = field(default_factory=dict)
    qbuf: int = 0                                               # int8 input buffer, bytes
    patch: int = 0                                              # convolution patch buffer, elements
    col: int = 0                                                # integer: encoded conv outputs of one position
    qpatch: int = 0                                             # integer: patch codes of encoded convolutions
    conv: bool = False                                          # needs the convolution runtime
    arrays: List[Union[CArray, CStruct]] = field(default_factory=list)
    checks: List[str] = field(default_factory=list)             # file-scope compile-time checks
    statements: List[str] = field(default_factory=list)
    layers: List[Tuple[str, str]] = field(default_factory=list)  # (module name, description)
    largest: int = 0                                            # largest activation, elements

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def spare_buffer(self) -> str:
        return "act1" if self.current == "act0" else "act0"

    def write(self, buffer: str, shape: Tuple[int, ...], what: str) -> None:
        """The next activation, of ``shape``, is written to ``buffer``."""
        size = check_c_size(math.prod(shape), what)
        self.buffers[buffer] = max(self.buffers.get(buffer, 0), size)
        self.largest = max(self.largest, size)
        self.current, self.shape = buffer, shape
