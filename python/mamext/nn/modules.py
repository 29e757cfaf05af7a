"""MAMLinear: a drop-in replacement for ``nn.Linear`` with MAM neurons."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..ops import mam_linear
from ._blend import BetaBlended

__all__ = ["MAMLinear"]


class MAMLinear(BetaBlended):
    r"""Applies ``y = max_k(W[n,k] x[k]) + min_k(W[n,k] x[k]) + b[n]``.

    Parameters are named, shaped and initialised exactly as ``nn.Linear``'s, so
    optimizers, ``state_dict`` and ``torch.nn.utils.prune`` treat it like one.
    ``self.weight`` is read afresh on every forward (pruning hooks replace it).

    ``beta`` (a float32 scalar buffer in [0, 1], saved in ``state_dict``)
    blends in the classic layer during the MAC-to-MAM transition:
    ``y = beta * (x W^T + b) + (1 - beta) * MAM(x)`` (exactly ``MAM(x)`` at
    ``beta == 0``). Set it with :meth:`set_beta` (or
    :class:`mamext.nn.VanishingContribution`), which checks the value; writes
    in place (``beta.fill_``, ``copy_``), by assignment or by
    ``load_state_dict`` take effect too. The forward never reads a GPU beta:
    while beta is known to be 0 (the default; after :meth:`set_beta`,
    ``load_state_dict`` or a move) no MAC work is done, otherwise (and always
    under ``torch.compile``) the blend is computed with the tensor, which is
    exact for any beta. ``beta`` stays float32 under ``.half()``/``.double()``.

    ``load_state_dict`` accepts an ``nn.Linear`` checkpoint (no ``beta``: the
    layer becomes pure MAM, beta 0) and refuses a beta that is not a scalar
    in [0, 1].
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
        self._init_beta(device)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same as nn.Linear.reset_parameters.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        return self._blend(mam_linear(input, weight, bias), lambda: F.linear(input, weight, bias))

    def _describe(self) -> str:
        return f"MAMLinear(in_features={self.in_features}, out_features={self.out_features})"

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, beta={self._beta_repr()}")
