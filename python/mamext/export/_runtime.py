"""The C runtime shipped beside every exported network, and where its files come from.

``runtime/mam_runtime.h`` and ``runtime/mam_runtime_csr.h`` are package data, and so are
``mam_runtime_conv.h`` + ``mam_runtime_window.h`` (written only beside networks with convolutions,
pooling or batch-norm steps) and the integer runtime ``mam_runtime_int.h`` (+ ``mam_runtime_conv_int.h``).
``mam_semantics.h`` (the MAM reduction rules the PyTorch kernels are compiled
from) lives in ``csrc/common/``: a wheel installs it into ``runtime/`` (see
``cmake/export_runtime.cmake``); a source checkout used in place
(``PYTHONPATH=python``, editable installs) reads it from ``csrc/common/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import List

RUNTIME_DIR = Path(__file__).resolve().parent / "runtime"
_SOURCE_TREE_DIR = Path(__file__).resolve().parents[3] / "csrc" / "common"

RUNTIME_HEADER = "mam_runtime.h"
_PACKAGE_FILES = ("mam_runtime.h", "mam_runtime_csr.h")
# the float and integer convolution/pooling runtime, written only for networks that use it
CONV_RUNTIME_HEADER = "mam_runtime_conv.h"
CONV_INT_RUNTIME_HEADER = "mam_runtime_conv_int.h"
WINDOW_HEADER = "mam_runtime_window.h"
SEMANTICS_HEADER = "mam_semantics.h"

# lower-case file stems and include-guard stems of the runtime headers: a network's name must avoid them
RESERVED_STEMS = frozenset({"mam_runtime", "mam_runtime_csr", "mam_runtime_int", "mam_semantics",
                            "mamext_mam_semantics", "mam_runtime_conv", "mam_runtime_conv_int",
                            "mam_runtime_window"})


def semantics_header() -> Path:
    """The installed ``mam_semantics.h``, else the source tree's."""
    for folder in (RUNTIME_DIR, _SOURCE_TREE_DIR):
        candidate = folder / SEMANTICS_HEADER
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"mamext.export.to_c: the C runtime header {SEMANTICS_HEADER} is missing (looked in "
                            f"{RUNTIME_DIR} and {_SOURCE_TREE_DIR}); reinstall mamext")


def runtime_files() -> List[Path]:
    """Every file the generated C includes besides its own header."""
    return [RUNTIME_DIR / f for f in _PACKAGE_FILES] + [semantics_header()]


def copy_runtime(out_dir: Path, conv: bool = False) -> List[Path]:
    """Copy the runtime into ``out_dir`` (so the network compiles from there alone); return the copies.

    ``conv``: the network calls convolution or pooling kernels, so their headers go too.
    """
    copies = []
    extra = [RUNTIME_DIR / CONV_RUNTIME_HEADER, RUNTIME_DIR / WINDOW_HEADER] if conv else []
    for src in runtime_files() + extra:
        dst = out_dir / src.name
        shutil.copyfile(src, dst)
        copies.append(dst)
    return copies
