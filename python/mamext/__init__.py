"""mamext: Multiply-And-Max/min (MAM) neurons for PyTorch.

A MAM neuron replaces the sum of a classic multiply-and-accumulate neuron by
max plus min::

    y[..., n] = max_k(W[n, k] * x[..., k]) + min_k(W[n, k] * x[..., k]) + b[n]

Importing this package registers every operator ``torch.ops.mamext.*``
completely: the native extension (``mamext._C``) brings the schemas and the
CPU/CUDA, autograd and autocast kernels, :mod:`mamext.ops` the fake kernels
(one module per operator).
"""

from __future__ import annotations

import torch  # noqa: F401  (loads libtorch before the extension)

from . import _C
from . import ops
from .ops import mam_linear, packed_linear
from . import nn
from .nn.conv import mam_conv1d, mam_conv2d
from ._convert import convert

__version__ = _C.build_info["version"]

__all__ = ["mam_linear", "packed_linear", "mam_conv2d", "mam_conv1d", "convert", "cpu_capability", "ops", "nn", "__version__"]


def cpu_capability() -> str:
    """The CPU kernel level in use: ``"avx512"``, ``"avx2"`` or ``"default"``
    on x86-64, ``"neon"`` or ``"default"`` on aarch64, ``"default"`` elsewhere
    (the levels of this build: ``mamext._C.build_info["isa_levels"]``).

    The best level the processor supports, capped by the environment variable
    ``MAMEXT_CPU_CAPABILITY`` (``default|avx2|avx512`` on x86-64,
    ``default|neon`` on aarch64) read at import time.
    """
    return _C.cpu_capability()


# Surface a bad MAMEXT_CPU_CAPABILITY value at import time, not mid-forward.
cpu_capability()


def __getattr__(name):  # lazily import the heavier optional submodules
    import importlib

    if name in {"prune", "sparse", "export", "experiment", "reference", "quant", "compact", "mcu"}:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'mamext' has no attribute {name!r}")
