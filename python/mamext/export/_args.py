"""Argument checks of :func:`mamext.export.to_c`: every user value that shapes the generated C."""

from __future__ import annotations

import math
import operator
import os
from pathlib import Path
from typing import Tuple

import torch
from torch import nn

_WHERE = "mamext.export.to_c"

# The generated C indexes every array with int32_t.
INT32_MAX = 2 ** 31 - 1

# C99, C11 and C23 keywords: a network name must not be one.
_C_KEYWORDS = frozenset("""
    auto break case char const continue default do double else enum extern float for goto if inline int long
    register restrict return short signed sizeof static struct switch typedef union unsigned void volatile while
    _Alignas _Alignof _Atomic _Bool _Complex _Generic _Imaginary _Noreturn _Static_assert _Thread_local
    alignas alignof bool constexpr false nullptr static_assert thread_local true typeof typeof_unqual
    _BitInt _Decimal32 _Decimal64 _Decimal128
""".split())


def check_model(model) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{_WHERE}: model must be an nn.Module, got {type(model).__name__}")
    return model


def check_dtype(dtype) -> bool:
    """True for int8, False for float32; anything else is refused."""
    if not isinstance(dtype, torch.dtype) or dtype not in (torch.float32, torch.int8):
        raise TypeError(f"{_WHERE}: dtype must be torch.float32 or torch.int8, got {dtype!r}")
    return dtype == torch.int8


def check_name(name, reserved_stems) -> str:
    """``name`` prefixes the C identifiers and names the files: a C identifier, not a keyword, no clash.

    ``reserved_stems``: lower-case file stems and include-guard stems of the runtime headers written
    beside the network (``<name>.h`` and its guard ``<NAME>_H`` must not coincide with theirs).
    """
    if not isinstance(name, str):
        raise TypeError(f"{_WHERE}: name must be a str (a C identifier), got {type(name).__name__}")
    if not (name.isascii() and name.isidentifier()):
        raise ValueError(f"{_WHERE}: name must be a C identifier (ASCII letters, digits and '_', not starting "
                         f"with a digit), got {name!r}")
    if name.startswith("_"):
        raise ValueError(f"{_WHERE}: name must not start with '_' (C reserves such identifiers), got {name!r}")
    if name in _C_KEYWORDS:
        raise ValueError(f"{_WHERE}: name must not be a C keyword, got {name!r}")
    if name.lower() in reserved_stems:
        raise ValueError(f"{_WHERE}: name {name!r} clashes with the runtime files written beside the network "
                         f"({', '.join(sorted(reserved_stems))}); choose another name")
    return name


def check_out_dir(out_dir) -> Path:
    if isinstance(out_dir, bytes) or not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"{_WHERE}: out_dir must be a str or os.PathLike directory, got {type(out_dir).__name__}")
    text = os.fspath(out_dir)
    if not isinstance(text, str):
        raise TypeError(f"{_WHERE}: out_dir must name a directory as a str path, got {text!r}")
    if not text.strip():
        raise ValueError(f"{_WHERE}: out_dir must name a directory, got the empty path {text!r} (use '.' to "
                         "write into the current directory)")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{_WHERE}: out_dir {text!r} exists and is not a directory")
    return path


def _positive_size(value, input_shape) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{_WHERE}: input_shape must hold ints, got the bool {value!r} in {input_shape!r}")
    try:
        size = operator.index(value)
    except TypeError:
        raise TypeError(f"{_WHERE}: input_shape must hold ints (one sample, no batch dimension), got "
                        f"{value!r} ({type(value).__name__}) in {input_shape!r}") from None
    if size <= 0:
        raise ValueError(f"{_WHERE}: input_shape must hold positive sizes, got {size} in {input_shape!r}")
    return size


def check_input_shape(input_shape) -> Tuple[int, ...]:
    """The shape of one sample: a positive int or a non-empty sequence of positive ints."""
    if isinstance(input_shape, (str, bytes)) or (isinstance(input_shape, torch.Tensor) and input_shape.dim() > 1):
        raise TypeError(f"{_WHERE}: input_shape must be a tuple of ints (one sample, no batch dimension), "
                        f"got {input_shape!r}")
    scalar = isinstance(input_shape, torch.Tensor) and input_shape.dim() == 0
    if scalar or isinstance(input_shape, bool) or not hasattr(input_shape, "__iter__"):
        shape = (_positive_size(input_shape, input_shape),)
        check_c_size(shape[0], "the input (input_shape)")
        return shape
    shape = tuple(_positive_size(s, input_shape) for s in input_shape)
    if not shape:
        raise ValueError(f"{_WHERE}: input_shape must be a non-empty tuple of positive sizes (one sample, no "
                         f"batch dimension), got {input_shape!r}")
    check_c_size(math.prod(shape), "the input (input_shape)")
    return shape


def check_c_size(count: int, what: str) -> int:
    """Refuse an array or loop bound that int32_t cannot index."""
    if count > INT32_MAX:
        raise ValueError(f"{_WHERE}: {what} has {count} elements; the exported C indexes arrays with int32_t, "
                         f"so at most {INT32_MAX} are supported")
    return count

