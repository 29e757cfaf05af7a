"""Plain-PyTorch reference implementation of the MAM operators.

Slow and memory hungry (it materialises the (*, N, K) products) but obviously
correct; the tests compare every kernel against it. Semantics:

* products and comparisons in float32 for float32/float16/bfloat16 inputs, in
  float64 for float64; output in the input dtype;
* ties go to the lowest k; a NaN product makes the output NaN and both indices
  point at the first NaN (``torch.max``/``torch.min`` along a dim);
* gradients flow only through the selected products; if argmax == argmin the
  product counts twice (y = 2 * product).
"""

from __future__ import annotations

import torch


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def mam_linear_reference(input, weight, bias=None, *, return_indices=False):
    """Reference MAM linear layer, differentiable through torch autograd."""
    ct = compute_dtype(input.dtype)
    prod = input.to(ct).unsqueeze(-2) * weight.to(ct)  # (*, N, K)
    amax = prod.argmax(-1, keepdim=True)
    amin = prod.argmin(-1, keepdim=True)
    out = prod.gather(-1, amax) + prod.gather(-1, amin)
    out = out.squeeze(-1)
    if bias is not None:
        out = out + bias.to(ct)
    out = out.to(input.dtype)
    if return_indices:
        return out, amax.squeeze(-1).to(torch.int32), amin.squeeze(-1).to(torch.int32)
    return out


def mam_linear_backward_reference(grad_output, input, weight, argmax, argmin):
    """Closed-form backward given the indices: (grad_input, grad_weight)."""
    ct = compute_dtype(input.dtype)
    K = weight.shape[1]
    g = grad_output.to(ct).reshape(-1, weight.shape[0])
    x = input.to(ct).reshape(-1, K)
    w = weight.to(ct)
    sel = torch.nn.functional.one_hot(argmax.reshape(-1, weight.shape[0]).long(), K).to(ct)
    sel = sel + torch.nn.functional.one_hot(argmin.reshape(-1, weight.shape[0]).long(), K).to(ct)
    # sel: (M, N, K)
    gx = torch.einsum("mn,mnk,nk->mk", g, sel, w)
    gw = torch.einsum("mn,mnk,mk->nk", g, sel, x)
    return gx.reshape(input.shape).to(input.dtype), gw.to(weight.dtype)
