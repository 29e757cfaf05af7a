"""The operators ``torch.ops.mamext.*``, one module per operator.

Each module holds the operator's fake (meta) kernels, which let
``FakeTensorMode``, ``torch.compile(fullgraph=True)`` and ``torch.export``
trace it, and its public Python wrapper. Schemas, CPU/CUDA kernels, autograd
and autocast are C++ (``csrc/ops/``). Importing this package, which
``import mamext`` does, registers every operator completely.

Operators and their modules:

* :mod:`mamext.ops.mam_linear`: the dense MAM layer, ``mam_linear_forward``
  (training: output, argmax, argmin), ``mam_linear_inference`` and
  ``mam_linear_backward``; wrapper :func:`mam_linear`.
* :mod:`mamext.ops.packed_linear`: the packed (pruned) MAM or Linear layer,
  ``packed_linear``; wrapper :func:`packed_linear`, modules in
  :mod:`mamext.sparse`.
* :mod:`mamext.ops.mam_conv2d`: the MAM 2-d convolution (CPU),
  ``mam_conv2d_forward``, ``mam_conv2d_inference`` and ``mam_conv2d_backward``;
  raw wrapper :func:`mam_conv2d_op`, public function :func:`mamext.mam_conv2d`.

The wrappers are re-exported here and from :mod:`mamext` under the module's
name, so ``mamext.ops.mam_linear`` is the function; the modules are
``sys.modules["mamext.ops.mam_linear"]`` and so on.
"""

from __future__ import annotations

from .. import _C  # noqa: F401  (registers the schemas and the C++ kernels)
from .mam_conv2d import mam_conv2d_op
from .mam_linear import mam_linear
from .packed_linear import packed_linear

__all__ = ["mam_linear", "packed_linear", "mam_conv2d_op"]
