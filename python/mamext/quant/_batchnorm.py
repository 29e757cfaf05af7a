"""Batch normalisation in inference: the per-channel affine map of its running statistics, and its folding.

``BN(y) = scale * y + shift`` per channel, ``scale = gamma / sqrt(var + eps)``,
``shift = beta - mean * scale`` (float64). Folded into the layer before it,
``W' = scale[n] * W[n]`` and ``b' = scale[n] * b[n] + shift[n]``:

* a MAC layer: ``sum(W' x) + b' = scale * (sum(W x) + b) + shift``;
* a MAM layer, for either sign of ``scale``: a negative factor turns the
  largest product into the smallest and back, so ``max`` and ``min`` trade
  places but their sum is the same: ``max(s p) + min(s p) = s (min p + max p)``
  for every ``s``, ties and a pruned row's zero candidate included. Only the
  winners' positions change, never the output.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn


def batchnorm_affine(bn: nn.Module, qual: str, where: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), float64 per channel, of ``bn``'s running statistics; refuses what cannot be mapped."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"{where}: batch norm '{qual}' has no running statistics (track_running_stats=False "
                         "normalises each batch with its own statistics); only running statistics can be exported")
    mean, var = bn.running_mean.detach().cpu().double(), bn.running_var.detach().cpu().double()
    gamma = torch.ones_like(mean) if bn.weight is None else bn.weight.detach().cpu().double()
    beta = torch.zeros_like(mean) if bn.bias is None else bn.bias.detach().cpu().double()
    scale = gamma / torch.sqrt(var + float(bn.eps))
    shift = beta - mean * scale
    if not bool(torch.isfinite(scale).all() and torch.isfinite(shift).all()):
        raise ValueError(f"{where}: batch norm '{qual}' has non-finite statistics or parameters (or var + eps "
                         "is 0); its affine map is not finite")
    return scale, shift


def fold_batchnorm(weight: torch.Tensor, bias: Optional[torch.Tensor], scale: torch.Tensor,
                   shift: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """float64 (W', b') of a layer with output channels on ``weight``'s first dim followed by the affine map."""
    w = weight.detach().cpu().double()
    b = torch.zeros(w.shape[0], dtype=torch.float64) if bias is None else bias.detach().cpu().double()
    folded = w * scale.reshape(-1, *([1] * (w.dim() - 1)))
    return folded, b * scale + shift


def check_batchnorm_channels(bn: nn.Module, qual: str, shape, where: str) -> None:
    """``bn`` normalises dim 0 of the per-sample ``shape``: (C,), (C, L) for 1-d, (C, H, W) for 2-d."""
    dims = (3,) if isinstance(bn, nn.BatchNorm2d) else (1, 2)
    if len(shape) not in dims or shape[0] != bn.num_features:
        raise ValueError(f"{where}: batch norm '{qual}' ({type(bn).__name__}({bn.num_features})) does not fit "
                         f"per-sample activations of shape {tuple(shape)}")
