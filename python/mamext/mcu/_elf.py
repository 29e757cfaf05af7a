"""Reading the firmware ELF: section sizes grouped like ``arm-none-eabi-size``, and symbol names.

Only 32-bit little-endian ELF (what ``arm-none-eabi-gcc`` writes) is read.
Grouping (the Berkeley format of ``size``): allocated sections without
contents (``SHT_NOBITS``) are ``bss``; other allocated writable sections are
``data``; other allocated sections (code, constants, the vector table,
unwind tables) are ``text``. Flash holds text + data (the load image of
``.data``); RAM holds data + bss (+ the stack).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

_SHF_WRITE, _SHF_ALLOC = 0x1, 0x2
_SHT_SYMTAB, _SHT_NOBITS = 2, 8


@dataclass(frozen=True)
class SectionSizes:
    text: int
    data: int
    bss: int


def _sections(blob: bytes, path: Path) -> List[Tuple[int, int, int, int, int]]:
    """(type, flags, offset, size, link) of every section header."""
    if blob[:4] != b"\x7fELF" or blob[4] != 1 or blob[5] != 1:
        raise ValueError(f"mamext.mcu: {path} is not a 32-bit little-endian ELF file")
    shoff, = struct.unpack_from("<I", blob, 0x20)
    shentsize, shnum = struct.unpack_from("<HH", blob, 0x2E)
    out = []
    for i in range(shnum):
        _, sh_type, flags, _, offset, size, link = struct.unpack_from("<IIIIIII", blob, shoff + i * shentsize)
        out.append((sh_type, flags, offset, size, link))
    return out


def section_sizes(path: Path) -> SectionSizes:
    text = data = bss = 0
    for sh_type, flags, _, size, _ in _sections(path.read_bytes(), path):
        if not flags & _SHF_ALLOC:
            continue
        if sh_type == _SHT_NOBITS:
            bss += size
        elif flags & _SHF_WRITE:
            data += size
        else:
            text += size
    return SectionSizes(text=text, data=data, bss=bss)


def symbol_names(path: Path) -> List[str]:
    """Names in the static symbol table (defined and undefined)."""
    blob = path.read_bytes()
    sections = _sections(blob, path)
    names = []
    for sh_type, _, offset, size, link in sections:
        if sh_type != _SHT_SYMTAB:
            continue
        strtab_offset = sections[link][2]
        for entry in range(offset, offset + size, 16):
            name_offset, = struct.unpack_from("<I", blob, entry)
            end = blob.index(b"\0", strtab_offset + name_offset)
            if end > strtab_offset + name_offset:
                names.append(blob[strtab_offset + name_offset:end].decode("ascii", "replace"))
    return names
