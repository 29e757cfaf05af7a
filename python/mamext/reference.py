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


def mam_conv2d_reference(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
                         return_indices=False):
    """Reference MAM 2-d convolution (4-d input, int or pair padding): every output is
    :func:`mam_linear_reference` of its zero-padded patch (``F.unfold``'s order) with
    its channel's flattened weight, group by group. Indices are patch positions."""
    batch, _, height, width = input.shape
    c_out, _, kh, kw = weight.shape
    s, p, d = (torch.nn.modules.utils._pair(v) for v in (stride, padding, dilation))
    h_out = (height + 2 * p[0] - d[0] * (kh - 1) - 1) // s[0] + 1
    w_out = (width + 2 * p[1] - d[1] * (kw - 1) - 1) // s[1] + 1
    patches = torch.nn.functional.unfold(input, (kh, kw), dilation=d, padding=p, stride=s).transpose(1, 2)
    n, k = c_out // groups, patches.shape[-1] // groups
    outs, amaxs, amins = [], [], []
    for g in range(groups):
        out, amax, amin = mam_linear_reference(
            patches[..., g * k:(g + 1) * k], weight[g * n:(g + 1) * n].reshape(n, k),
            None if bias is None else bias[g * n:(g + 1) * n], return_indices=True)
        outs.append(out)
        amaxs.append(amax)
        amins.append(amin)

    def image(parts):
        return torch.cat(parts, -1).transpose(1, 2).reshape(batch, c_out, h_out, w_out)

    if return_indices:
        return image(outs), image(amaxs), image(amins)
    return image(outs)
