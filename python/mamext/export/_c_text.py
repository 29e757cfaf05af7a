"""C text of values: float literals, constant arrays, and comments safe for any user string."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence, Union

# bytes per element of each C type the export writes
C_SIZEOF = {"float": 4, "int8_t": 1, "uint8_t": 1, "int16_t": 2, "uint16_t": 2, "int32_t": 4}


def c_float(value: float) -> str:
    """An exact C float literal (hexadecimal); the caller has checked the value is finite."""
    if not math.isfinite(value):
        raise ValueError(f"mamext.export.to_c: cannot write the non-finite constant {value} as C")
    return float(value).hex() + "f"


def comment_text(text: str) -> str:
    """``text`` made inert inside a C block comment.

    Keeps printable ASCII only (no newline, no backslash line splice), and
    breaks up every comment delimiter (``*/``, ``/*``) and trigraph lead-in
    (``??``), so the text can neither end the comment nor start another one.
    """
    safe = "".join(c if " " <= c <= "~" and c != "\\" else "_" for c in str(text))
    previous = None
    while safe != previous:
        previous = safe
        safe = safe.replace("*/", "*_/").replace("/*", "/_*").replace("??", "?_?")
    return safe


@dataclass
class CArray:
    """A ``static const`` array of the generated network (flash)."""

    ctype: str
    name: str
    values: Sequence[Union[int, float]]

    @property
    def length(self) -> int:
        return max(len(self.values), 1)  # C has no zero-length arrays: an empty one holds a single unread 0

    @property
    def nbytes(self) -> int:
        return C_SIZEOF[self.ctype] * self.length

    def definition(self) -> str:
        items: List[str]
        if self.ctype == "float":
            items = [c_float(v) for v in self.values] or ["0.0f"]
        else:
            items = [str(int(v)) for v in self.values] or ["0"]
        per_line = 6 if self.ctype == "float" else 16
        body = ",\n".join("    " + ", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line))
        return f"static const {self.ctype} {self.name}[{self.length}] = {{\n{body}\n}};\n"


@dataclass
class CStruct:
    """A ``static const`` struct of int32_t fields (flash), e.g. a ``mamrt_window``."""

    ctype: str
    name: str
    values: Sequence[int]

    @property
    def nbytes(self) -> int:
        return 4 * len(self.values)

    def definition(self) -> str:
        return f"static const {self.ctype} {self.name} = {{{', '.join(str(int(v)) for v in self.values)}}};\n"


def static_buffers(ctype_name_size) -> List[str]:
    """``static <ctype> <name>[<size>];`` for each (ctype, name, size) of nonzero size."""
    return [f"static {ctype} {name}[{size}];" for ctype, name, size in ctype_name_size if size]
