"""Training and evaluation loops (Adam, cross-entropy, in-memory batches)."""

from __future__ import annotations

import math
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F

from ..nn import VanishingContribution
from ..nn._blend import BetaBlended

__all__ = ["evaluate", "train_model", "make_progress", "LR_SCHEDULES", "lr_factor"]

#: Learning-rate schedules of :func:`train_model`: ``constant``; ``cosine``
#: (from ``lr`` down to 0 over every optimizer step of the run, half a cosine
#: period); ``hold-cosine`` (constant for the first ``hold`` steps, then
#: cosine down to 0 over the remaining ones).
LR_SCHEDULES = ("constant", "cosine", "hold-cosine")


def lr_factor(kind: str, step: int, total_steps: int, hold_steps: int = 0) -> float:
    """The multiplier of the base learning rate at optimizer step ``step``
    (0-based) of ``total_steps`` under schedule ``kind`` (``hold_steps``:
    the constant part of ``hold-cosine``)."""
    if kind not in LR_SCHEDULES:
        raise ValueError(f"lr schedule must be one of {LR_SCHEDULES}, got {kind!r}")
    if kind == "constant":
        return 1.0
    hold = min(max(hold_steps, 0), total_steps) if kind == "hold-cosine" else 0
    if step < hold or total_steps <= hold:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(step - hold, total_steps - hold) / (total_steps - hold)))


def make_progress(enabled: bool, **kw):
    """A tqdm bar, or a no-op stand-in when disabled (or tqdm is missing)."""
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(dynamic_ncols=True, file=sys.stderr, **kw)
        except ImportError:
            pass
    return _NoBar()


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix(self, *a, **k):
        pass

    def set_description(self, *a, **k):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_samples(x, y, what):
    """``x`` and ``y`` hold the same, non-zero number of samples."""
    if len(y) == 0:
        raise ValueError(f"{what}: the data set is empty (0 samples)")
    if len(x) != len(y):
        raise ValueError(f"{what}: {len(x)} inputs but {len(y)} labels")


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> float:
    """Top-1 accuracy in [0, 1], in eval mode; the model's mode is restored."""
    _check_samples(x, y, "evaluate")
    was_training = model.training
    model.eval()
    try:
        correct = 0
        for i in range(0, len(y), batch_size):
            correct += int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    finally:
        model.train(was_training)
    return correct / len(y)


def _start_transition(model, transition_epochs, steps_per_epoch, schedule):
    """``(schedule or None, transition steps, MAM layers)``: a
    :class:`VanishingContribution` over ``transition_epochs`` epochs, or, for
    a zero-length transition, every MAM layer set to pure MAM (beta 0)."""
    mam_layers = [m for m in model.modules() if isinstance(m, BetaBlended)]
    if not mam_layers:
        return None, 0, mam_layers
    t_steps = int(round(transition_epochs * steps_per_epoch))
    if t_steps > 0:
        return VanishingContribution(model, t_steps, schedule=schedule), t_steps, mam_layers
    for m in mam_layers:
        m.set_beta(0.0)
    return None, 0, mam_layers


def _train_epoch(model, opt, sched, vc, x_train, y_train, perm, batch_size, bar, epoch_text):
    """One pass over ``x_train`` in the order ``perm``: ``(summed loss,
    correct predictions)``."""
    loss_sum, correct = 0.0, 0
    for s, start in enumerate(range(0, len(perm), batch_size)):
        idx = perm[start:start + batch_size]
        xb, yb = x_train[idx], y_train[idx]
        out = model(xb)
        loss = F.cross_entropy(out, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if vc is not None:
            vc.step()
        loss_sum += float(loss.detach()) * len(yb)
        correct += int((out.argmax(1) == yb).sum())
        bar.update(1)
        if s % 20 == 0:
            bar.set_postfix(epoch=epoch_text, loss=f"{loss_sum / (start + len(yb)):.4f}")
    return loss_sum, correct


def train_model(model: nn.Module, x_train, y_train, x_val, y_val, *, epochs: int, lr: float = 1e-3,
                batch_size: int = 128, seed: int = 0, transition_epochs: float = 0, schedule: str = "linear",
                lr_schedule: str = "constant", lr_hold_epochs: float = None, weight_decay: float = 0.0,
                label: str = "",
                progress: bool = False, log=None, epoch_callback=None) -> dict:
    """Train in place with Adam; for a model with MAM layers, the MAC
    contribution vanishes (beta 1 -> 0) over the first ``transition_epochs``
    epochs, one :meth:`VanishingContribution.step` per optimizer step. The
    learning rate follows ``lr_schedule`` (:data:`LR_SCHEDULES`, one step per
    batch; ``hold-cosine`` holds it for ``lr_hold_epochs`` epochs, by default
    ``transition_epochs``); ``weight_decay`` > 0 uses AdamW's decoupled decay.
    ``epoch_callback(epoch, model)``, if given, runs after each epoch's
    evaluation (its return value, if a dict, is stored in the epoch's
    record). The model's train/eval mode is restored at the end.

    Returns the history: per-epoch loss, train/val accuracy, beta at the end of
    the epoch and training seconds (evaluation excluded).
    """
    _check_samples(x_train, y_train, "train_model")
    _check_samples(x_val, y_val, "train_model (validation)")
    n = len(y_train)
    steps_per_epoch = (n + batch_size - 1) // batch_size
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay) if weight_decay > 0
           else torch.optim.Adam(params, lr=lr))
    total = epochs * steps_per_epoch
    hold = int(round((transition_epochs if lr_hold_epochs is None else lr_hold_epochs) * steps_per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: lr_factor(lr_schedule, t, total, hold))
    vc, t_steps, mam_layers = _start_transition(model, transition_epochs, steps_per_epoch, schedule)
    gen = torch.Generator().manual_seed(seed)
    history = {"epochs": [], "steps_per_epoch": steps_per_epoch, "transition_steps": t_steps}
    bar = make_progress(progress, total=epochs * steps_per_epoch, desc=label or "train", unit="batch",
                        leave=True)
    was_training = model.training
    model.train()
    try:
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            perm = torch.randperm(n, generator=gen).to(x_train.device)
            loss_sum, correct = _train_epoch(model, opt, sched, vc, x_train, y_train, perm, batch_size, bar,
                                             f"{epoch}/{epochs}")
            seconds = time.perf_counter() - t0
            val_acc = evaluate(model, x_val, y_val)
            beta = float(mam_layers[0].beta) if mam_layers else None
            rec = {"epoch": epoch, "loss": loss_sum / n, "train_acc": correct / n, "val_acc": val_acc,
                   "beta": beta, "seconds": seconds}
            if epoch_callback is not None:
                extra = epoch_callback(epoch, model)
                if isinstance(extra, dict):
                    rec.update(extra)
            history["epochs"].append(rec)
            bar.set_postfix(epoch=f"{epoch}/{epochs}", loss=f"{rec['loss']:.4f}",
                            acc=f"{rec['train_acc']:.3f}", val=f"{val_acc:.3f}")
            if log is not None:
                log(f"{label} epoch {epoch}/{epochs}: loss {rec['loss']:.4f}, train acc {rec['train_acc']:.4f}, "
                    f"val acc {val_acc:.4f}" + (f", beta {beta:.3f}" if beta is not None else "")
                    + f", {seconds:.1f}s")
    finally:
        bar.close()
        model.train(was_training)
    ep = history["epochs"]
    history["seconds_per_epoch"] = sum(r["seconds"] for r in ep) / len(ep) if ep else 0.0
    history["train_seconds"] = sum(r["seconds"] for r in ep)
    return history
