"""The operators ``torch.ops.mamext.*``, one module per operator.

Each module holds the operator's fake (meta) kernels, which let
``FakeTensorMode``, ``torch.compile(fullgraph=True)`` and ``torch.export``
trace it, and its public Python wrapper. Schemas, CPU/CUDA kernels, autograd
and autocast are C++ (``csrc/ops/``). Importing this package, which
``import mamext`` does, registers every operator completely.

=====================  ===========================================  ==============================
operator               ``torch.ops.mamext``                         module
=====================  ===========================================  ==============================
dense MAM layer        ``mam_linear_forward``, ``mam_linear_inference``,  :mod:`mamext.ops.mam_linear`
                       ``mam_linear_backward``
packed (pruned) layer  ``packed_linear``                            :mod:`mamext.ops.packed_linear`
=====================  ===========================================  ==============================
"""

from __future__ import annotations

from .. import _C  # noqa: F401  (registers the schemas and the C++ kernels)
from .mam_linear import mam_linear
from .packed_linear import packed_linear

__all__ = ["mam_linear", "packed_linear"]
