"""The MAM 2-d convolution operator: fake kernels of ``torch.ops.mamext.mam_conv2d_*``
and the raw wrapper :func:`mam_conv2d_op`.

Schemas: ``csrc/ops/mam_conv2d.cpp``; CPU kernels: ``csrc/ops/cpu/mam_conv2d_kernel.cpp``
(no CUDA kernel: :func:`mamext.mam_conv2d` runs CUDA tensors as patch rows of
``mam_linear``); autograd (reverse and forward mode):
``csrc/ops/autograd/mam_conv2d_kernel.cpp``; reference:
:func:`mamext.reference.mam_conv2d_reference`. The public function, with
``F.conv2d``'s argument handling (``"same"`` padding, unbatched input, layouts),
is :func:`mamext.mam_conv2d` (``mamext/nn/conv.py``).
"""

from __future__ import annotations

import torch

from .. import _C  # noqa: F401  (registers the schemas and kernels)
from ._shared import (check_bias, check_input_and_weight, fake_backward_outputs, fake_forward_outputs,
                      forward_or_inference)
from ._vmap import register_vmap

__all__ = ["mam_conv2d_op"]


def _check_tensors(op, input, weight, bias):
    check_input_and_weight(op, input, weight)
    torch._check(input.dim() == 4, lambda: f"{op}: input must have shape (N, C_in, H, W), got {tuple(input.shape)}")
    torch._check(weight.dim() == 4,
                 lambda: f"{op}: weight must have shape (C_out, C_in / groups, kH, kW), got {tuple(weight.shape)}")
    check_bias(op, input, weight, bias)


def _output_shape(op, input, weight, bias, stride, padding, dilation, groups):
    """Checks the operands as the C++ kernel does and returns (N, C_out, Ho, Wo)."""
    _check_tensors(op, input, weight, bias)
    torch._check(len(stride) == 2 and len(padding) == 2 and len(dilation) == 2,
                 lambda: f"{op}: stride, padding and dilation must have two values each")
    torch._check(min(stride) >= 1, lambda: f"{op}: stride must be at least 1, got {list(stride)}")
    torch._check(min(dilation) >= 1, lambda: f"{op}: dilation must be at least 1, got {list(dilation)}")
    torch._check(min(padding) >= 0, lambda: f"{op}: padding must be at least 0, got {list(padding)}")
    torch._check(groups >= 1, lambda: f"{op}: groups must be positive, got {groups}")
    c_out, c_group, kh, kw = weight.shape
    torch._check(c_out % groups == 0,
                 lambda: f"{op}: weight's C_out ({c_out}) must be divisible by groups ({groups})")
    torch._check(input.shape[1] == c_group * groups,
                 lambda: f"{op}: input has {input.shape[1]} channels, but weight of shape {tuple(weight.shape)} "
                         f"with groups={groups} expects {c_group * groups}")
    torch._check(c_group * kh * kw > 0, lambda: f"{op}: the patch (C_in / groups * kH * kW) must not be empty")
    spans = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    padded = (input.shape[2] + 2 * padding[0], input.shape[3] + 2 * padding[1])
    torch._check(padded[0] >= spans[0] and padded[1] >= spans[1],
                 lambda: f"{op}: the (dilated) kernel ({kh}, {kw}) does not fit in the padded input")
    return (input.shape[0], c_out, (padded[0] - spans[0]) // stride[0] + 1, (padded[1] - spans[1]) // stride[1] + 1)


@torch.library.register_fake("mamext::mam_conv2d_forward")
def _mam_conv2d_forward_fake(input, weight, bias, stride, padding, dilation, groups):
    shape = _output_shape("mam_conv2d_forward", input, weight, bias, stride, padding, dilation, groups)
    return fake_forward_outputs(input, shape)


@torch.library.register_fake("mamext::mam_conv2d_inference")
def _mam_conv2d_inference_fake(input, weight, bias, stride, padding, dilation, groups):
    return input.new_empty(_output_shape("mam_conv2d_inference", input, weight, bias, stride, padding, dilation,
                                         groups))


@torch.library.register_fake("mamext::mam_conv2d_backward")
def _mam_conv2d_backward_fake(grad_output, input, weight, argmax, argmin, stride, padding, dilation, groups,
                              output_mask):
    _output_shape("mam_conv2d_backward", input, weight, None, stride, padding, dilation, groups)
    return fake_backward_outputs(input, weight, output_mask)


def _images_batched_only(op, in_dims, input, *rest):
    """Batch over `input` alone: the batch joins the images, one call."""
    if not isinstance(in_dims[0], int) or any(isinstance(d, int) for d in in_dims[1:]):
        return None
    x = input.movedim(in_dims[0], 0)
    result = op(x.flatten(0, 1), *rest)
    if isinstance(result, tuple):
        return tuple(t.unflatten(0, x.shape[:2]) for t in result)
    return result.unflatten(0, x.shape[:2])


register_vmap("mam_conv2d_forward", _images_batched_only)
register_vmap("mam_conv2d_inference", _images_batched_only)
register_vmap("mam_conv2d_backward", lambda op, in_dims, *args: None)  # always one call per entry


def mam_conv2d_op(input, weight, bias, stride, padding, dilation, groups, *, return_indices=False):
    """The operator on a 4-d input with explicit (symmetric) zero padding: the output, and with
    ``return_indices`` the int32 ``argmax``/``argmin`` (positions in ``weight[o].flatten()``).

    The inference kernel (no index tracking) runs when no gradient is needed and no indices
    are asked for."""
    args = (input, weight, bias, list(stride), list(padding), list(dilation), groups)
    return forward_or_inference(torch.ops.mamext.mam_conv2d_forward, torch.ops.mamext.mam_conv2d_inference, args,
                                input, weight, bias, return_indices)
