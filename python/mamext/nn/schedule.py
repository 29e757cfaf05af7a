"""Vanishing contribution: a schedule that turns MAC layers into MAM layers.

Every MAM layer (:class:`~mamext.nn.MAMLinear`, :class:`~mamext.nn.MAMConv2d`,
:class:`~mamext.nn.MAMConv1d`) computes ``y = beta * MAC(x) + (1 - beta) * MAM(x)``
with the same weight and bias in both terms (for MAMLinear
``MAC(x) = x W^T + b``, for a convolution the classic convolution). Starting at ``beta = 1`` (a plain ``nn.Linear``, e.g. right
after :func:`mamext.convert`) and lowering ``beta`` to 0 over the course of
training lets a pretrained multiply-and-accumulate model adapt smoothly to MAM
neurons.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Dict, List

from torch import nn

from ._blend import BetaBlended

__all__ = ["VanishingContribution"]

_SCHEDULES = ("linear", "exponential")


class VanishingContribution:
    r"""Lowers ``beta`` of every MAM layer of ``model`` from 1 to 0.

    On construction ``beta`` is set to 1 on every MAM layer (``MAMLinear``,
    ``MAMConv2d``, ``MAMConv1d``) in
    ``model`` (found with ``model.modules()``, so a model wrapped in
    ``DistributedDataParallel`` or a bare MAM layer work too). Call
    :meth:`step` once per optimizer step; after ``t`` calls ``beta`` is

    * ``"linear"``: ``1 - t / steps`` (``beta -= 1 / steps`` each step);
    * ``"exponential"``: ``eps ** (t / steps)`` (``beta *= eps ** (1 / steps)``
      each step);

    and whenever that value falls below ``eps``, or once ``t >= steps``, beta
    snaps to exactly 0 (so both schedules reach pure MAM after ``steps`` calls;
    from then on a MAM layer does no MAC work). ``beta`` is computed from the
    step count rather than accumulated, so no rounding drift builds up.

    Args:
        model: a module containing at least one MAM layer.
        steps: positive number of :meth:`step` calls the transition lasts.
        schedule: ``"linear"`` or ``"exponential"``.
        eps: threshold in (0, 1) under which beta snaps to 0 (for the
            exponential schedule also the value reached after ``steps`` steps).

    :meth:`state_dict` / :meth:`load_state_dict` save and restore the schedule
    (its position, ``steps``, ``schedule`` and ``eps``) to resume training;
    loading also writes the restored beta into the layers.

    Example::

        vc = mamext.nn.VanishingContribution(model, steps=len(loader) * 5)
        for x, y in loader:
            loss_fn(model(x), y).backward()
            opt.step(); opt.zero_grad(); vc.step()
    """

    def __init__(self, model: nn.Module, steps: int, schedule: str = "linear", eps: float = 1e-3):
        if not isinstance(model, nn.Module):
            raise TypeError(f"VanishingContribution: model must be an nn.Module, got {type(model).__name__}")
        self.steps, self.schedule, self.eps = self._check(steps, schedule, eps)
        self.layers: List[BetaBlended] = [m for m in model.modules() if isinstance(m, BetaBlended)]
        if not self.layers:
            raise ValueError("VanishingContribution: model contains no MAMLinear, MAMConv2d or MAMConv1d layer "
                             "(convert classic layers first with mamext.convert)")
        self.last_step = 0
        self._apply()

    @staticmethod
    def _check(steps, schedule, eps):
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
            raise TypeError(f"VanishingContribution: steps must be an int, got {type(steps).__name__}")
        if steps <= 0:
            raise ValueError(f"VanishingContribution: steps must be positive, got {steps}")
        if schedule not in _SCHEDULES:
            raise ValueError(f"VanishingContribution: schedule must be one of {_SCHEDULES}, got {schedule!r}")
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
            raise TypeError(f"VanishingContribution: eps must be a float, got {type(eps).__name__}")
        eps = float(eps)
        if not 0.0 < eps < 1.0:
            raise ValueError(f"VanishingContribution: eps must be in (0, 1), got {eps}")
        return int(steps), schedule, eps

    def beta_at(self, t: int) -> float:
        """The beta value after ``t`` calls of :meth:`step`."""
        if t <= 0:
            return 1.0
        if t >= self.steps:
            return 0.0
        if self.schedule == "linear":
            beta = 1.0 - t / self.steps
        else:
            beta = math.exp(math.log(self.eps) * t / self.steps)  # eps ** (t / steps)
        return 0.0 if beta < self.eps else beta

    @property
    def beta(self) -> float:
        """The current beta (as a Python float, before float32 rounding)."""
        return self.beta_at(self.last_step)

    @property
    def done(self) -> bool:
        """True once beta is 0 (pure MAM)."""
        return self.beta == 0.0

    def _apply(self) -> None:
        beta = self.beta
        for layer in self.layers:
            layer.set_beta(beta)

    def step(self) -> float:
        """Advance the schedule by one optimizer step; returns the new beta."""
        self.last_step += 1
        self._apply()
        return self.beta

    def state_dict(self) -> Dict[str, Any]:
        return {"last_step": self.last_step, "steps": self.steps, "schedule": self.schedule, "eps": self.eps}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        missing = {"last_step", "steps", "schedule", "eps"} - set(state_dict)
        if missing:
            raise ValueError(f"VanishingContribution.load_state_dict: missing keys {sorted(missing)}")
        last_step = state_dict["last_step"]
        if isinstance(last_step, bool) or not isinstance(last_step, numbers.Integral) or last_step < 0:
            raise ValueError(f"VanishingContribution.load_state_dict: last_step must be a non-negative int, "
                             f"got {last_step!r}")
        self.steps, self.schedule, self.eps = self._check(state_dict["steps"], state_dict["schedule"],
                                                          state_dict["eps"])
        self.last_step = int(last_step)
        self._apply()

    def __repr__(self) -> str:
        return (f"VanishingContribution(steps={self.steps}, schedule={self.schedule!r}, eps={self.eps}, "
                f"last_step={self.last_step}, beta={self.beta:.6g}, layers={len(self.layers)})")
