"""Pieces shared by the MAM operators' modules (:mod:`.mam_linear`,
:mod:`.mam_conv2d`): the operand checks their fake kernels make (the same
messages as the C++ checks in ``csrc/common/operand_checks.h``), the fake
outputs, and the choice between the training and the inference kernel.
"""

from __future__ import annotations

import torch

_FLOATING = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_input_and_weight(op, input, weight):
    """input has a floating dtype MAM accepts; weight matches its dtype and device."""
    torch._check(input.dtype in _FLOATING,
                 lambda: f"{op}: input must be float32, float64, float16 or bfloat16, got {input.dtype}")
    torch._check(weight.dtype == input.dtype,
                 lambda: f"{op}: weight dtype {weight.dtype} does not match input dtype {input.dtype}")
    torch._check(weight.device == input.device,
                 lambda: f"{op}: weight is on {weight.device} but input is on {input.device}")


def check_bias(op, input, weight, bias):
    """A bias, when given, has input's dtype and shape (weight.shape[0],)."""
    if bias is None:
        return
    torch._check(bias.dtype == input.dtype,
                 lambda: f"{op}: bias dtype {bias.dtype} does not match input dtype {input.dtype}")
    torch._check(bias.dim() == 1 and bias.shape[0] == weight.shape[0],
                 lambda: f"{op}: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")


def fake_forward_outputs(input, shape):
    """The fake (output, argmax, argmin) of a training forward with output shape `shape`."""
    return (input.new_empty(shape), input.new_empty(shape, dtype=torch.int32),
            input.new_empty(shape, dtype=torch.int32))


def fake_backward_outputs(input, weight, output_mask):
    """The fake (grad_input, grad_weight) of a backward; an empty tensor for each one not asked for."""
    gx = input.new_empty(input.shape) if output_mask[0] else input.new_empty((0,))
    gw = weight.new_empty(weight.shape) if output_mask[1] else input.new_empty((0,))
    return gx, gw


def forward_or_inference(forward, inference, args, input, weight, bias, return_indices):
    """``inference(*args)`` when no gradient is needed and no indices are asked for, else
    ``forward(*args)``: its output, or with ``return_indices`` (output, argmax, argmin)."""
    needs_grad = torch.is_grad_enabled() and (
        input.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad))
    if return_indices or needs_grad:
        out, argmax, argmin = forward(*args)
        return (out, argmax, argmin) if return_indices else out
    return inference(*args)
