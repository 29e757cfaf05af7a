"""MAMLinear: a drop-in replacement for ``nn.Linear`` with MAM neurons."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..ops import mam_linear

__all__ = ["MAMLinear"]


class MAMLinear(nn.Module):
    r"""Applies ``y = max_k(W[n,k] x[k]) + min_k(W[n,k] x[k]) + b[n]``.

    Parameters are named, shaped and initialised exactly as ``nn.Linear``'s, so
    optimizers, ``state_dict`` and ``torch.nn.utils.prune`` treat it like one.
    ``self.weight`` is read afresh on every forward (pruning hooks replace it).

    ``beta`` (a float buffer, saved in ``state_dict``) blends in the classic
    layer during the MAC-to-MAM transition:
    ``y = beta * (x W^T + b) + (1 - beta) * MAM(x)``. Change it with
    :meth:`set_beta` (or :class:`mamext.nn.VanishingContribution`); at
    ``beta == 0`` (the default) no MAC work is done.
    """

    __constants__ = ["in_features", "out_features"]
    in_features: int
    out_features: int

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty((out_features, in_features), **factory_kwargs))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory_kwargs))
        else:
            self.register_parameter("bias", None)
        self.register_buffer("beta", torch.zeros((), dtype=torch.float32, device=device))
        # Python-side mirror of `beta != 0`, so that the forward branches on a
        # plain bool (no device sync, no graph break under torch.compile).
        self._mac_active = False
        self._register_load_state_dict_pre_hook(MAMLinear._sync_beta_on_load, with_module=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same as nn.Linear.reset_parameters.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    @torch.no_grad()
    def set_beta(self, value: float) -> None:
        """Set the MAC blending factor in [0, 1]."""
        value = float(value)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {value}")
        self.beta.fill_(value)
        self._mac_active = value != 0.0

    @staticmethod
    def _sync_beta_on_load(module, state_dict, prefix, *args):
        beta = state_dict.get(prefix + "beta")
        if beta is not None:
            module._mac_active = bool(float(beta) != 0.0)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        out = mam_linear(input, weight, bias)
        if self._mac_active:
            beta = self.beta.to(out.dtype)
            out = beta * F.linear(input, weight, bias) + (1 - beta) * out
        return out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
