"""The packed (pruned, CSR per output neuron) layer: fake kernel of
``torch.ops.mamext.packed_linear`` and the public wrapper :func:`packed_linear`.

Schema: ``csrc/ops/packed_linear.cpp``; kernels: ``csrc/ops/cpu/``,
``csrc/ops/cuda/``; autograd (inference only):
``csrc/ops/autograd/packed_linear_kernel.cpp``; the modules built on it:
:mod:`mamext.sparse`.
"""

from __future__ import annotations

import torch

from .. import _C  # noqa: F401  (registers the schema and kernels)
from ._vmap import input_batched_only, register_vmap

__all__ = ["packed_linear"]

_INPUT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_VALUE_DTYPES = (torch.float32, torch.float64, torch.int8)
_INDEX_DTYPES = (torch.uint8, torch.int16, torch.int32)


def _check_args(input, values, indices, offsets, in_features):
    op = "packed_linear"
    torch._check(input.dtype in _INPUT_DTYPES,
                 lambda: f"{op}: input must be float32, float64, float16 or bfloat16, got {input.dtype}")
    torch._check(input.dim() >= 1, lambda: f"{op}: input must have at least 1 dimension, got a scalar")
    torch._check(input.shape[-1] == in_features,
                 lambda: f"{op}: input's last dimension ({input.shape[-1]}) must equal in_features "
                         f"({in_features}); input shape {tuple(input.shape)}")
    torch._check(values.dtype in _VALUE_DTYPES,
                 lambda: f"{op}: values must be float32, float64 or int8, got {values.dtype}")
    torch._check(indices.dtype in _INDEX_DTYPES,
                 lambda: f"{op}: indices must be uint8, int16 or int32, got {indices.dtype}")
    torch._check(offsets.dim() == 1 and offsets.shape[0] >= 1,
                 lambda: f"{op}: offsets must be 1-D with out_features + 1 entries")


def column_major(t: torch.Tensor) -> bool:
    """A 2-D tensor laid out as the transpose of a contiguous one (more than one row)."""
    return t.dim() == 2 and t.shape[0] > 1 and t.stride(0) == 1 and t.stride(1) == t.shape[0]


@torch.library.register_fake("mamext::packed_linear")
def _packed_linear_fake(input, values, indices, offsets, bias, weight_scale, in_features, mam):
    _check_args(input, values, indices, offsets, in_features)
    N = offsets.shape[0] - 1
    if column_major(input):  # the layout rule of the kernels (csrc/ops/packed_linear.h)
        return input.new_empty((N, input.shape[0])).t()
    return input.new_empty((*input.shape[:-1], N))


register_vmap("packed_linear", input_batched_only)


def packed_linear(input, values, indices, offsets, bias=None, weight_scale=None, *, in_features, mam=True):
    """Packed MAM (``mam=True``) or Linear (``mam=False``) layer over CSR rows.

    Row ``n`` keeps the connections ``j`` in ``[offsets[n], offsets[n+1])``
    with weight ``values[j]`` at input ``indices[j]`` (strictly increasing in
    a row); pruned connections are zero weights (a MAM row with fewer than
    ``in_features`` entries has the product 0 as a candidate). Inference only.

    Args:
        input: ``(*, in_features)`` floating tensor; the output has its dtype.
        values: ``(nnz,)`` float32, float64 or int8 (then ``weight_scale``).
        indices: ``(nnz,)`` uint8, int16 or int32.
        offsets: ``(out_features + 1,)`` int32 or int64.
        bias: optional ``(out_features,)`` in the compute dtype (values'
            dtype, float32 for int8).
        weight_scale: ``(out_features,)`` float32 per-neuron scale, int8 only.
    """
    return torch.ops.mamext.packed_linear(input, values, indices, offsets, bias, weight_scale, in_features, mam)
