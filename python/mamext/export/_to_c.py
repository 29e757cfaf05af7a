""":func:`to_c`: check the arguments, lower the model, write the C files, report the sizes."""

from __future__ import annotations

import os
from typing import Iterable, Optional, Sequence, Union

import torch
from torch import nn

from ._args import check_dtype, check_input_shape, check_model, check_name, check_out_dir
from ._harness import harness_text
from ._index_encoding import check_encodings
from ._lower import lower
from ._result import ExportResult, Sizes
from ._runtime import RESERVED_STEMS, RUNTIME_HEADER, copy_runtime, runtime_files
from ._source import header_text, source_text
from ._to_c_int import to_c_int
from ..quant import IntegerNetwork


def to_c(model: nn.Module, out_dir: Union[str, os.PathLike], input_shape: Sequence[int],
         dtype: torch.dtype = torch.float32, *, name: str = "mamnet",
         index_encodings: Optional[Iterable[str]] = None) -> ExportResult:
    """Write ``<name>.c``, ``<name>.h``, ``<name>_main.c`` and the runtime implementing ``model``'s inference.

    Args:
        model: an ``nn.Sequential`` (or single layer) of supported modules (see
            :mod:`mamext.export`), pruned, packed or dense.
        out_dir: directory to write to (created if needed; ``"."`` for the
            current directory, the empty path is refused).
        input_shape: the shape of one input sample, without the batch
            dimension, e.g. ``(784,)`` or ``(1, 28, 28)`` (``(C, H, W)``
            for a CNN): positive ints.
        dtype: ``torch.float32`` or ``torch.int8``. A
            :class:`mamext.quant.IntegerNetwork` always exports integer-only C
            (``<name>_infer_int8``, see :mod:`mamext.quant`) with either value.
        name: C identifier prefix and file stem (not a C keyword, no leading
            underscore).
        index_encodings: integer networks only: the index encodings each
            layer may use, among ``"index"``, ``"delta"``, ``"bitmap"``
            (default: all; the cheapest in bytes wins, see
            docs/quantization.md), and ``"offsets"``: a pruned convolution
            keeping at most half its weights reads them through input
            offsets, no patch gathered (default: allowed; docs/mcu.md).

    Returns:
        :class:`ExportResult` with the paths, the bytes of constant data
        (flash) and of the static buffers (RAM), and the largest activation.
    """
    check_model(model)
    int8 = check_dtype(dtype)
    name = check_name(name, RESERVED_STEMS)
    shape = check_input_shape(input_shape)
    out_dir = check_out_dir(out_dir)
    runtime_files()  # fail before writing anything if the runtime is missing
    if isinstance(model, IntegerNetwork):
        return to_c_int(model, out_dir, shape, name, check_encodings(index_encodings))
    if index_encodings is not None:
        raise ValueError("mamext.export.to_c: index_encodings applies to integer networks (mamext.quant."
                         "pack_integer) only")

    net = lower(model, shape, int8)
    sizes = Sizes.of(net, shape)
    header_code = header_text(name, net, sizes, shape)
    source_code = source_text(name, net, RUNTIME_HEADER)

    out_dir.mkdir(parents=True, exist_ok=True)
    header, source, main = out_dir / f"{name}.h", out_dir / f"{name}.c", out_dir / f"{name}_main.c"
    header.write_text(header_code)
    source.write_text(source_code)
    main.write_text(harness_text(name))
    runtime = copy_runtime(out_dir, net.conv)
    return ExportResult(source=source, header=header, main=main, input_size=sizes.input_size,
                        output_size=sizes.output_size, flash_bytes=sizes.flash_bytes, ram_bytes=sizes.ram_bytes,
                        largest_activation_bytes=sizes.largest_activation_bytes,
                        layers=[f"{qual}: {desc}" for qual, desc in net.layers], runtime=runtime)
