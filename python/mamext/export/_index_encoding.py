"""Index encodings of the integer export: the cheapest exact layout of a layer's kept columns.

Two encodings of the column index stream, chosen per layer by bytes:

* ``abs``: each connection's column as the smallest integer type holding
  ``in_features - 1`` (uint8, int16, int32), as the float export stores them;
* ``d8``: uint8 column deltas: each neuron starts at column -1, a byte
  ``d`` in 1..255 advances ``d`` columns to the next kept connection, a byte
  0 advances 255 columns and the next byte continues the same delta.

Rows are described by per-neuron connection counts in the smallest type
(uint8, uint16, int32) instead of int32 row offsets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import torch

from ._c_text import C_SIZEOF

_ABS_TYPES = ((256, "uint8_t", "u8"), (32768, "int16_t", "i16"), (2 ** 31, "int32_t", "i32"))
_COUNT_TYPES = ((255, "uint8_t", "c8"), (65535, "uint16_t", "c16"), (2 ** 31 - 1, "int32_t", "c32"))


@dataclass
class IndexEncoding:
    """The index stream and row counts of one layer, and what the CSR of the float export would take."""

    idx_type: str
    idx_name: str          # kernel suffix: u8, i16, i32 or d8
    idx_values: List[int]
    cnt_type: str
    cnt_name: str          # kernel suffix: c8, c16 or c32
    csr_bytes: int         # absolute indices + int32 row offsets (the float export's layout)

    @property
    def nbytes(self) -> int:
        return C_SIZEOF[self.idx_type] * max(len(self.idx_values), 1)


def delta_stream(indices: List[int], counts: List[int]) -> List[int]:
    """The d8 bytes of the column indices, neuron by neuron."""
    out, j = [], 0
    for count in counts:
        previous = -1
        for column in indices[j:j + count]:
            delta = column - previous
            while delta > 255:
                out.append(0)
                delta -= 255
            out.append(delta)
            previous = column
        j += count
    return out


def choose_encoding(indices: torch.Tensor, counts: torch.Tensor, in_features: int) -> IndexEncoding:
    """The cheaper of ``abs`` and ``d8`` for these columns (``abs`` on a tie: it decodes faster)."""
    idx, cnt = indices.tolist(), counts.tolist()
    abs_type, abs_name = next((t, n) for bound, t, n in _ABS_TYPES if in_features <= bound)
    cnt_type, cnt_name = next((t, n) for bound, t, n in _COUNT_TYPES if max(cnt, default=0) <= bound)
    csr_bytes = C_SIZEOF[abs_type] * max(len(idx), 1) + 4 * (len(cnt) + 1)
    deltas = delta_stream(idx, cnt)
    if len(deltas) < C_SIZEOF[abs_type] * len(idx):
        return IndexEncoding("uint8_t", "d8", deltas, cnt_type, cnt_name, csr_bytes)
    return IndexEncoding(abs_type, abs_name, idx, cnt_type, cnt_name, csr_bytes)
