"""The dense MAM layer: fake kernels of ``torch.ops.mamext.mam_linear_*`` and
the public wrapper :func:`mam_linear`.

Schemas: ``csrc/ops/mam_linear.cpp``; kernels: ``csrc/ops/cpu/``,
``csrc/ops/cuda/``; autograd (reverse and forward mode) and autocast:
``csrc/ops/autograd/mam_linear_kernel.cpp``,
``csrc/ops/autocast/mam_linear_kernel.cpp``; reference:
:func:`mamext.reference.mam_linear_reference`.
"""

from __future__ import annotations

import torch

from .. import _C  # noqa: F401  (registers the schemas and kernels)
from ._shared import (check_bias, check_input_and_weight, fake_backward_outputs, fake_forward_outputs,
                      forward_or_inference)
from ._vmap import input_batched_only, register_vmap

__all__ = ["mam_linear"]


def _check_args(op, input, weight, bias):
    check_input_and_weight(op, input, weight)
    torch._check(input.dim() >= 1, lambda: f"{op}: input must have at least 1 dimension, got a scalar")
    torch._check(weight.dim() == 2,
                 lambda: f"{op}: weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
    torch._check(weight.shape[1] > 0,
                 lambda: f"{op}: in_features must be positive, got weight of shape {tuple(weight.shape)}")
    torch._check(input.shape[-1] == weight.shape[1],
                 lambda: f"{op}: input's last dimension ({input.shape[-1]}) must equal weight's in_features "
                         f"({weight.shape[1]}); input shape {tuple(input.shape)}, weight shape {tuple(weight.shape)}")
    check_bias(op, input, weight, bias)


@torch.library.register_fake("mamext::mam_linear_forward")
def _mam_linear_forward_fake(input, weight, bias):
    _check_args("mam_linear_forward", input, weight, bias)
    return fake_forward_outputs(input, (*input.shape[:-1], weight.shape[0]))


@torch.library.register_fake("mamext::mam_linear_inference")
def _mam_linear_inference_fake(input, weight, bias):
    _check_args("mam_linear_inference", input, weight, bias)
    return input.new_empty((*input.shape[:-1], weight.shape[0]))


@torch.library.register_fake("mamext::mam_linear_backward")
def _mam_linear_backward_fake(grad_output, input, weight, argmax, argmin, output_mask):
    _check_args("mam_linear_backward", input, weight, None)
    return fake_backward_outputs(input, weight, output_mask)


register_vmap("mam_linear_forward", input_batched_only)
register_vmap("mam_linear_inference", input_batched_only)
register_vmap("mam_linear_backward", lambda op, in_dims, *args: None)  # always one call per entry


def mam_linear(input, weight, bias=None, *, return_indices=False):
    """MAM linear layer: ``max_k(W[n,k] x[...,k]) + min_k(W[n,k] x[...,k]) + b[n]``.

    Args:
        input: ``(*, K)`` tensor (float32, float64, float16 or bfloat16).
        weight: ``(N, K)`` tensor of the same dtype and device.
        bias: optional ``(N,)`` tensor.
        return_indices: also return the int32 ``argmax`` and ``argmin`` maps
            (shape ``(*, N)``; lowest k wins ties).

    Differentiable in input, weight and bias, in reverse mode
    (``backward``, ``torch.func.grad``/``jacrev``) and forward mode
    (``torch.func.jvp``/``jacfwd``, ``torch.autograd.forward_ad``). When no
    gradient is needed and no indices are asked for, the inference kernel (no
    index tracking) runs.
    """
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"mam_linear: input must be a tensor, got {type(input).__name__}")
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"mam_linear: weight must be a tensor of shape (out_features, in_features), "
                        f"got {type(weight).__name__}")
    if bias is not None and not isinstance(bias, torch.Tensor):
        raise TypeError(f"mam_linear: bias must be a tensor or None, got {type(bias).__name__}")
    return forward_or_inference(torch.ops.mamext.mam_linear_forward, torch.ops.mamext.mam_linear_inference,
                                (input, weight, bias), input, weight, bias, return_indices)
