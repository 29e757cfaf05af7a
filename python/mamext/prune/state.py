"""Running a model for scoring without leaving a trace on it.

:class:`PreservedState` puts the model in a chosen train/eval mode for the
duration of a ``with`` block and afterwards restores exactly what it found:

* every submodule's ``training`` flag, through each module's own ``train()``
  (so a subclass that overrides ``train`` sees the restore);
* every parameter's ``requires_grad`` flag and ``.grad`` tensor;
* every buffer (BatchNorm running statistics, ``num_batches_tracked``, MAM
  ``beta``, pruning masks): the same tensor object is put back where it was
  replaced, and its values are copied back where they changed (buffers
  equal to what was saved are not written).

The restore also runs when the block raises.
"""

from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn


class PreservedState:
    """``with PreservedState(model, training=False): ...`` (see the module docstring)."""

    def __init__(self, model: nn.Module, training: bool):
        self.model, self.training = model, training

    def __enter__(self) -> "PreservedState":
        modules = list(self.model.modules())  # pre-order: every parent before its children
        self._modes = [(m, m.training) for m in modules]
        self._params = [(p, p.requires_grad, p.grad) for p in self.model.parameters()]
        self._buffers: List[Tuple[nn.Module, str, torch.Tensor, torch.Tensor]] = [
            (m, name, buf, buf.detach().clone()) for m in modules for name, buf in m._buffers.items()
            if buf is not None]
        self.model.train(self.training)
        return self

    def __exit__(self, *exc) -> None:
        with torch.no_grad():
            for module, name, buf, saved in self._buffers:
                if module._buffers.get(name) is not buf:
                    module._buffers[name] = buf
                if buf.shape != saved.shape or buf.dtype != saved.dtype:
                    module._buffers[name] = saved  # resized or re-typed in place: the saved copy is the state
                elif not torch.equal(buf, saved):
                    buf.copy_(saved)
        for p, requires_grad, grad in self._params:
            if p.requires_grad != requires_grad:
                p.requires_grad_(requires_grad)
            if p.grad is not grad:
                p.grad = grad
        for module, flag in self._modes:
            if module.training != flag:
                module.train(flag)
