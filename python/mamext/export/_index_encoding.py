"""Index encodings of the integer export: the cheapest exact layout of a layer's kept connections.

Three encodings, chosen per layer by bytes among those allowed (on a tie, the
one listed first: it decodes faster). A bitmap costs the fewest bytes above
about one kept connection in eight, but its kernel visits every possible
connection: leave it out (``index_encodings=("index", "delta")``) to favour
speed.

* ``abs`` ("index"): each connection's column as the smallest integer type holding
  ``in_features - 1`` (uint8, int16, int32), as the float export stores them;
* ``d8`` ("delta"): uint8 column deltas: each neuron starts at column -1, a byte
  ``d`` in 1..255 advances ``d`` columns to the next kept connection, a byte
  0 advances 255 columns and the next byte continues the same delta;
* ``bm`` ("bitmap"): a bitmap of ``out_features * in_features`` bits, bit ``n * K + k``
  (least significant bit first in each byte) set for a kept connection.

``abs`` and ``d8`` describe the rows by per-neuron connection counts in the
smallest type (uint8, uint16, int32) instead of int32 row offsets; the bitmap
needs no counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import FrozenSet, List, Optional

import torch

from ._c_text import C_SIZEOF

# the names to_c's index_encodings accepts: absolute indices, uint8 deltas, bitmap (every layer), and the
# input offsets of a pruned convolution's kept connections (convolutions only, see _lower_conv_int.py)
ENCODINGS = ("index", "delta", "bitmap", "offsets")
_LAYER_ENCODINGS = ENCODINGS[:3]
_ABS_TYPES = ((256, "uint8_t", "u8"), (32768, "int16_t", "i16"), (2 ** 31, "int32_t", "i32"))
_COUNT_TYPES = ((255, "uint8_t", "c8"), (65535, "uint16_t", "c16"), (2 ** 31 - 1, "int32_t", "c32"))


@dataclass
class IndexEncoding:
    """The index data of one layer, and what the int32-offset CSR of the float export would take."""

    idx_type: str
    idx_name: str                  # u8, i16, i32, d8 or bm
    idx_values: List[int]
    cnt_type: Optional[str]        # None for the bitmap
    cnt_name: Optional[str]        # c8, c16 or c32
    cnt_values: List[int]
    csr_bytes: int                 # absolute indices + int32 row offsets

    @property
    def kernel_suffix(self) -> str:
        return self.idx_name if self.cnt_name is None else f"{self.cnt_name}_{self.idx_name}"

    @property
    def nbytes(self) -> int:
        """Bytes of the index data and the counts (C arrays hold at least one element)."""
        n = C_SIZEOF[self.idx_type] * max(len(self.idx_values), 1)
        if self.cnt_type is not None:
            n += C_SIZEOF[self.cnt_type] * max(len(self.cnt_values), 1)
        return n


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


def bitmap_bytes(indices: torch.Tensor, counts: torch.Tensor, in_features: int) -> List[int]:
    """The bitmap of the kept connections, least significant bit first."""
    N = counts.numel()
    rows = torch.repeat_interleave(torch.arange(N), counts.to(torch.int64))
    bits = torch.zeros((N * in_features + 7) // 8 * 8, dtype=torch.int64)
    bits[rows * in_features + indices.to(torch.int64)] = 1
    weights = torch.tensor([1 << i for i in range(8)], dtype=torch.int64)
    return (bits.reshape(-1, 8) * weights).sum(1).tolist()


def check_encodings(encodings) -> FrozenSet[str]:
    """The encodings ``to_c`` may choose from: a non-empty collection of names from :data:`ENCODINGS`."""
    if encodings is None:
        return frozenset(ENCODINGS)
    if isinstance(encodings, str) or not hasattr(encodings, "__iter__"):
        raise TypeError(f"mamext.export.to_c: index_encodings must be a collection of names from {ENCODINGS}, "
                        f"got {encodings!r}")
    chosen = frozenset(encodings)
    unknown = sorted(str(e) for e in chosen - set(ENCODINGS))
    if unknown or not chosen & set(_LAYER_ENCODINGS):
        raise ValueError(f"mamext.export.to_c: index_encodings must be names from {ENCODINGS}, at least one of "
                         f"{_LAYER_ENCODINGS}, got {sorted(map(str, chosen))}")
    return chosen


def choose_encoding(indices: torch.Tensor, counts: torch.Tensor, in_features: int,
                    allowed: FrozenSet[str] = frozenset(ENCODINGS)) -> IndexEncoding:
    """The cheapest of the ``allowed`` encodings ("index": ``abs``, "delta": ``d8``, "bitmap": ``bm``)."""
    idx, cnt = indices.tolist(), counts.tolist()
    abs_type, abs_name = next((t, n) for bound, t, n in _ABS_TYPES if in_features <= bound)
    cnt_type, cnt_name = next((t, n) for bound, t, n in _COUNT_TYPES if max(cnt, default=0) <= bound)
    csr_bytes = C_SIZEOF[abs_type] * max(len(idx), 1) + 4 * (len(cnt) + 1)
    candidates = []
    if "index" in allowed:
        candidates.append(IndexEncoding(abs_type, abs_name, idx, cnt_type, cnt_name, cnt, csr_bytes))
    if "delta" in allowed and (in_features > 256 or not candidates):   # up to 256 inputs: never below uint8
        candidates.append(IndexEncoding("uint8_t", "d8", delta_stream(idx, cnt), cnt_type, cnt_name, cnt, csr_bytes))
    bitmap_size = (len(cnt) * in_features + 7) // 8
    if "bitmap" in allowed and len(cnt) * in_features <= 2 ** 31 - 1 and (
            not candidates or bitmap_size < min(c.nbytes for c in candidates)):
        candidates.append(IndexEncoding("uint8_t", "bm", bitmap_bytes(indices, counts, in_features), None, None,
                                        [], csr_bytes))
    if not candidates:
        raise ValueError(f"mamext.export.to_c: a layer of {len(cnt)} x {in_features} connections is too large for a "
                         "bitmap (int32_t bit indices); allow index_encodings 'index' or 'delta'")
    return min(candidates, key=lambda c: c.nbytes)   # min keeps the first of equals
