"""Training and evaluation loops (Adam, cross-entropy, in-memory batches)."""

from __future__ import annotations

import sys
import time

import torch
from torch import nn
from torch.nn import functional as F

from ..nn import MAMLinear
from ..nn import VanishingContribution

__all__ = ["evaluate", "train_model", "make_progress"]


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


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> float:
    """Top-1 accuracy in [0, 1]."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(y), batch_size):
        correct += int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, len(y))


def _has_mam(model):
    return any(isinstance(m, MAMLinear) for m in model.modules())


def train_model(model: nn.Module, x_train, y_train, x_val, y_val, *, epochs: int, lr: float = 1e-3,
                batch_size: int = 128, seed: int = 0, transition_epochs: float = 0, schedule: str = "linear",
                label: str = "", progress: bool = False, log=None) -> dict:
    """Train in place with Adam; for a model with MAM layers, the MAC
    contribution vanishes (beta 1 -> 0) over the first ``transition_epochs``
    epochs, one :meth:`VanishingContribution.step` per optimizer step.

    Returns the history: per-epoch loss, train/val accuracy, beta at the end of
    the epoch and training seconds (evaluation excluded).
    """
    n = len(y_train)
    steps_per_epoch = (n + batch_size - 1) // batch_size
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    vc = None
    t_steps = 0
    mam_layers = [m for m in model.modules() if isinstance(m, MAMLinear)]
    if mam_layers:
        t_steps = int(round(transition_epochs * steps_per_epoch))
        if t_steps > 0:
            vc = VanishingContribution(model, t_steps, schedule=schedule)
        else:
            for m in mam_layers:
                m.set_beta(0.0)
    gen = torch.Generator().manual_seed(seed)
    history = {"epochs": [], "steps_per_epoch": steps_per_epoch, "transition_steps": t_steps}
    bar = make_progress(progress, total=epochs * steps_per_epoch, desc=label or "train", unit="batch",
                        leave=True)
    model.train()
    try:
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            perm = torch.randperm(n, generator=gen).to(x_train.device)
            loss_sum, correct = 0.0, 0
            for s in range(steps_per_epoch):
                idx = perm[s * batch_size:(s + 1) * batch_size]
                xb, yb = x_train[idx], y_train[idx]
                out = model(xb)
                loss = F.cross_entropy(out, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if vc is not None:
                    vc.step()
                loss_sum += float(loss.detach()) * len(yb)
                correct += int((out.argmax(1) == yb).sum())
                bar.update(1)
                if s % 20 == 0:
                    bar.set_postfix(epoch=f"{epoch}/{epochs}", loss=f"{loss_sum / ((s * batch_size) + len(yb)):.4f}")
            seconds = time.perf_counter() - t0
            val_acc = evaluate(model, x_val, y_val)
            beta = float(mam_layers[0].beta) if mam_layers else None
            rec = {"epoch": epoch, "loss": loss_sum / n, "train_acc": correct / n, "val_acc": val_acc,
                   "beta": beta, "seconds": seconds}
            history["epochs"].append(rec)
            bar.set_postfix(epoch=f"{epoch}/{epochs}", loss=f"{rec['loss']:.4f}",
                            acc=f"{rec['train_acc']:.3f}", val=f"{val_acc:.3f}")
            if log is not None:
                log(f"{label} epoch {epoch}/{epochs}: loss {rec['loss']:.4f}, train acc {rec['train_acc']:.4f}, "
                    f"val acc {val_acc:.4f}" + (f", beta {beta:.3f}" if beta is not None else "")
                    + f", {seconds:.1f}s")
    finally:
        bar.close()
    ep = history["epochs"]
    history["seconds_per_epoch"] = sum(r["seconds"] for r in ep) / len(ep) if ep else 0.0
    history["train_seconds"] = sum(r["seconds"] for r in ep)
    return history
