"""MAMLinear: a drop-in replacement for ``nn.Linear`` with MAM neurons."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from ..ops import mam_linear
from . import _beta

__all__ = ["MAMLinear"]


class MAMLinear(nn.Module):
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
        self.register_buffer("beta", torch.zeros((), dtype=torch.float32, device=device))
        self._note_beta(0.0)
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
        self._note_beta(float(torch.tensor(value, dtype=torch.float32)))

    # -- the mirror of beta (see _beta.py)
    def _note_beta(self, value: Optional[float]) -> None:
        """Record ``value`` (None: unknown) as the value of the current beta tensor."""
        self._beta_value = value
        self._beta_key = _beta.beta_key(self.beta)
        self._beta_free_to_read = _beta.free_to_read(self.beta)

    def _beta_is_zero(self) -> bool:
        """True when beta is known to be exactly 0, found without a device sync."""
        if torch.compiler.is_compiling():
            return False
        beta, key = self._buffers["beta"], self._beta_key
        try:  # inlined _beta.same_key(_beta.beta_key(beta), key): this runs on every forward
            if key is not None and key[0] is beta and key[1] == beta._version and key[2] == beta.data_ptr():
                if not self._beta_free_to_read or beta.item() == self._beta_value:
                    return self._beta_value == 0.0
        except RuntimeError:  # no version counter or no storage: not trackable
            pass
        value = _beta.read_if_free(beta, self._describe())
        if value is None:  # unknown; the mirror is kept for when its tensor comes back (functional_call)
            return False
        self._note_beta(value)
        return value == 0.0

    def _current_beta(self) -> Optional[float]:
        """beta's value: the mirror where it is current and reading would cost a sync, else read
        (a device sync on GPUs: for conversions and printing, not for the forward)."""
        beta = self._buffers.get("beta")
        if beta is None:
            return None
        if not _beta.free_to_read(beta) and _beta.same_key(_beta.beta_key(beta), self._beta_key):
            return self._beta_value
        return _beta.read_any(beta)

    @property
    def _mac_active(self) -> bool:
        """Whether the forward computes the MAC term (beta not known to be 0)."""
        return not self._beta_is_zero()

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        out = mam_linear(input, weight, bias)
        if self._beta_is_zero():
            return out
        beta = self.beta.to(out.dtype)
        blended = beta * F.linear(input, weight, bias) + (1 - beta) * out
        return torch.where(beta == 0, out, blended)  # exact MAM at beta 0 even where the MAC term is inf

    # -- beta through conversions, copies and checkpoints
    def _apply(self, fn, recurse=True):
        before = self._buffers.get("beta")
        value = self._current_beta()
        super()._apply(fn, recurse)
        after = self._buffers.get("beta")
        if after is None or after is before:
            return self
        with torch.no_grad():
            if after.dtype != torch.float32:  # .half()/.double() must not round beta
                after = torch.zeros((), dtype=torch.float32, device=after.device)
                self._buffers["beta"] = after
            if value is not None and after.device.type != "meta":
                after.fill_(value)  # the same value; also replaces what to_empty() leaves
        self._note_beta(value)
        return self

    def __getstate__(self):
        state = super().__getstate__()
        state["_beta_key_current"] = _beta.same_key(_beta.beta_key(self._buffers.get("beta")), self._beta_key)
        return state

    def __setstate__(self, state):
        current = state.pop("_beta_key_current", False)
        state.pop("_mac_active", None)
        super().__setstate__(state)
        self._note_beta(self.__dict__.get("_beta_value") if current else None)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        key = prefix + "beta"
        problem = _beta.beta_problem(state_dict[key]) if key in state_dict else None
        if problem is not None:
            error_msgs.append(f"{type(self).__name__} '{prefix[:-1] or '<model>'}': {key} {problem}")
            state_dict = {k: v for k, v in state_dict.items() if k != key}
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if problem is None and key not in state_dict and key in missing_keys and (
                prefix + "weight" in state_dict or prefix + "weight_orig" in state_dict):
            missing_keys.remove(key)  # an nn.Linear checkpoint: pure MAM
            self.set_beta(0.0)
        elif problem is not None and key in missing_keys:
            missing_keys.remove(key)  # reported as an error above
        beta = self._buffers.get("beta")
        if beta is not None and beta.dtype != torch.float32:  # load_state_dict(assign=True)
            self._buffers["beta"] = beta.detach().to(torch.float32)
        self._note_beta(_beta.read_any(self.beta))

    @staticmethod
    def _sync_beta_on_load(module, state_dict, prefix, *args):
        """No-op load pre-hook that modules pickled with it still name; _load_from_state_dict does the work."""

    def _describe(self) -> str:
        return f"MAMLinear(in_features={self.in_features}, out_features={self.out_features})"

    def extra_repr(self) -> str:
        value = self._current_beta()
        shown = "?" if value is None else f"{value:g}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, beta={shown}")
