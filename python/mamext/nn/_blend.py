"""The ``beta`` buffer that blends a classic (MAC) layer into a MAM layer.

:class:`BetaBlended` holds everything a MAM module needs for its ``beta``:
:meth:`~BetaBlended.set_beta`, the sync-free mirror of the value (see
:mod:`._beta`), :meth:`~BetaBlended._blend` for the forward, and keeping
beta float32 and its value through ``.to()``/``.half()``, pickling and
``load_state_dict`` (a checkpoint of the classic layer, without ``beta``,
loads as pure MAM). A subclass registers the buffer with
:meth:`~BetaBlended._init_beta` and describes itself in :meth:`_describe`.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from . import _beta

__all__ = ["BetaBlended"]


class BetaBlended(nn.Module):
    """Mixin of a MAM layer with a ``beta`` buffer: ``y = beta * MAC + (1 - beta) * MAM``."""

    def _init_beta(self, device) -> None:
        """Register ``beta`` (a float32 scalar, 0: pure MAM)."""
        self.register_buffer("beta", torch.zeros((), dtype=torch.float32, device=device))
        self._note_beta(0.0)

    @torch.no_grad()
    def set_beta(self, value: float) -> None:
        """Set the MAC blending factor in [0, 1]."""
        value = float(value)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {value}")
        self.beta.fill_(value)
        self._note_beta(float(torch.tensor(value, dtype=torch.float32)))

    def _blend(self, mam_out: torch.Tensor, mac: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``beta * mac() + (1 - beta) * mam_out``; ``mac`` is not called while beta is known to be 0."""
        if self._beta_is_zero():
            return mam_out
        beta = self.beta.to(mam_out.dtype)
        blended = beta * mac() + (1 - beta) * mam_out
        return torch.where(beta == 0, mam_out, blended)  # exact MAM at beta 0 even where the MAC term is inf

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
            missing_keys.remove(key)  # a checkpoint of the classic layer: pure MAM
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
        return type(self).__name__

    def _beta_repr(self) -> str:
        value = self._current_beta()
        return "?" if value is None else f"{value:g}"
