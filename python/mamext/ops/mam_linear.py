"""Python side of the ``torch.ops.mamext`` operators: fake (meta) kernels,
autograd formulas and the public :func:`mam_linear` wrapper.

The schemas and real kernels are C++ (``csrc/mam_linear.cpp``,
``csrc/cpu/``, ``csrc/cuda/``). Keeping fake kernels and autograd here, through
``torch.library``, is what lets ``torch.compile(fullgraph=True)`` and
``torch.export`` trace through a MAM layer.
"""

from __future__ import annotations

import torch

from . import _C  # noqa: F401  (registers the schemas)

__all__ = ["mam_linear"]

_FLOATING = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _check_args(op, input, weight, bias):
    torch._check(input.dtype in _FLOATING,
                 lambda: f"{op}: input must be float32, float64, float16 or bfloat16, got {input.dtype}")
    torch._check(weight.dtype == input.dtype,
                 lambda: f"{op}: weight dtype {weight.dtype} does not match input dtype {input.dtype}")
    torch._check(weight.device == input.device,
                 lambda: f"{op}: weight is on {weight.device} but input is on {input.device}")
    torch._check(input.dim() >= 1, lambda: f"{op}: input must have at least 1 dimension, got a scalar")
    torch._check(weight.dim() == 2,
                 lambda: f"{op}: weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
    torch._check(weight.shape[1] > 0,
                 lambda: f"{op}: in_features must be positive, got weight of shape {tuple(weight.shape)}")
    torch._check(input.shape[-1] == weight.shape[1],
                 lambda: f"{op}: input's last dimension ({input.shape[-1]}) must equal weight's in_features "
                         f"({weight.shape[1]}); input shape {tuple(input.shape)}, weight shape {tuple(weight.shape)}")
    if bias is not None:
        torch._check(bias.dtype == input.dtype,
                     lambda: f"{op}: bias dtype {bias.dtype} does not match input dtype {input.dtype}")
        torch._check(bias.dim() == 1 and bias.shape[0] == weight.shape[0],
                     lambda: f"{op}: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")


@torch.library.register_fake("mamext::mam_linear_forward")
def _mam_linear_forward_fake(input, weight, bias):
    _check_args("mam_linear_forward", input, weight, bias)
    shape = (*input.shape[:-1], weight.shape[0])
    out = input.new_empty(shape)
    return out, input.new_empty(shape, dtype=torch.int32), input.new_empty(shape, dtype=torch.int32)


@torch.library.register_fake("mamext::mam_linear_inference")
def _mam_linear_inference_fake(input, weight, bias):
    _check_args("mam_linear_inference", input, weight, bias)
    return input.new_empty((*input.shape[:-1], weight.shape[0]))


@torch.library.register_fake("mamext::mam_linear_backward")
def _mam_linear_backward_fake(grad_output, input, weight, argmax, argmin, output_mask):
    _check_args("mam_linear_backward", input, weight, None)
    gx = input.new_empty(input.shape) if output_mask[0] else input.new_empty((0,))
    gw = weight.new_empty(weight.shape) if output_mask[1] else input.new_empty((0,))
    return gx, gw


def _setup_context(ctx, inputs, output):
    input, weight, bias = inputs
    _, argmax, argmin = output
    ctx.save_for_backward(input, weight, argmax, argmin)
    ctx.has_bias = bias is not None


def _backward(ctx, grad_out, _grad_argmax, _grad_argmin):
    input, weight, argmax, argmin = ctx.saved_tensors
    need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    need_b = ctx.has_bias and ctx.needs_input_grad[2]
    grad_input = grad_weight = grad_bias = None
    if need_x or need_w:
        gx, gw = torch.ops.mamext.mam_linear_backward(
            grad_out, input, weight, argmax, argmin, [bool(need_x), bool(need_w)])
        grad_input = gx if need_x else None
        grad_weight = gw if need_w else None
    if need_b:
        acc = torch.float64 if grad_out.dtype == torch.float64 else torch.float32
        grad_bias = grad_out.reshape(-1, weight.shape[0]).to(acc).sum(0).to(grad_out.dtype)
    return grad_input, grad_weight, grad_bias


torch.library.register_autograd("mamext::mam_linear_forward", _backward, setup_context=_setup_context)


def _not_differentiable(op, hint):
    def backward(ctx, *grads):
        raise RuntimeError(f"mamext::{op} is not differentiable: {hint}")

    return backward


# Without these, autograd would silently treat the ops as constants. The
# inference op's (forward fine, backward raises) is in C++ (csrc/mam_linear.cpp,
# csrc/inference_only.h): a Python one costs ~6 us per call under no_grad.
torch.library.register_autograd(
    "mamext::mam_linear_backward",
    _not_differentiable("mam_linear_backward", "double backward through a MAM layer is not supported"),
    setup_context=lambda ctx, inputs, output: None)


def mam_linear(input, weight, bias=None, *, return_indices=False):
    """MAM linear layer: ``max_k(W[n,k] x[...,k]) + min_k(W[n,k] x[...,k]) + b[n]``.

    Args:
        input: ``(*, K)`` tensor (float32, float64, float16 or bfloat16).
        weight: ``(N, K)`` tensor of the same dtype and device.
        bias: optional ``(N,)`` tensor.
        return_indices: also return the int32 ``argmax`` and ``argmin`` maps
            (shape ``(*, N)``; lowest k wins ties).

    Differentiable in input, weight and bias. When no gradient is needed and no
    indices are asked for, the inference kernel (no index tracking) runs.
    """
    needs_grad = torch.is_grad_enabled() and (
        input.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad))
    if return_indices or needs_grad:
        out, argmax, argmin = torch.ops.mamext.mam_linear_forward(input, weight, bias)
        return (out, argmax, argmin) if return_indices else out
    return torch.ops.mamext.mam_linear_inference(input, weight, bias)
