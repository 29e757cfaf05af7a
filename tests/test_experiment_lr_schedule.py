"""The experiment's learning-rate schedules, weight decay and epoch callback
(mamext.experiment.train)."""

import math

import pytest
import torch
from torch import nn

from mamext.experiment import options
from mamext.experiment.train import LR_SCHEDULES, lr_factor, train_model
from mamext.nn import MAMLinear


def _data(n=64, d=6, classes=3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def _model():
    torch.manual_seed(0)
    return nn.Sequential(MAMLinear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def test_lr_factor_values():
    assert lr_factor("constant", 0, 10) == 1.0 and lr_factor("constant", 9, 10) == 1.0
    assert lr_factor("cosine", 0, 10) == 1.0
    assert lr_factor("cosine", 5, 10) == pytest.approx(0.5)
    assert lr_factor("cosine", 10, 10) == pytest.approx(0.0)
    assert lr_factor("cosine", 20, 10) == pytest.approx(0.0)  # clamped past the end
    steps = [lr_factor("cosine", t, 100) for t in range(101)]
    assert all(a >= b for a, b in zip(steps, steps[1:]))


def test_lr_factor_rejects_unknown_schedule():
    with pytest.raises(ValueError, match="lr schedule must be one of"):
        lr_factor("step", 0, 10)
    x, y = _data()
    with pytest.raises(ValueError, match="lr schedule must be one of"):
        train_model(_model(), x, y, x, y, epochs=1, lr_schedule="step")


def _learning_rates(monkeypatch, **kw):
    """The learning rate of every optimizer step of a short run."""
    seen = []

    def spy(step):
        def wrapped(opt, *a, **k):
            seen.append(opt.param_groups[0]["lr"])
            return step(opt, *a, **k)
        return wrapped

    for cls in (torch.optim.Adam, torch.optim.AdamW):
        monkeypatch.setattr(cls, "step", spy(cls.step))
    x, y = _data()
    train_model(_model(), x, y, x, y, epochs=2, batch_size=16, transition_epochs=1, **kw)
    return seen


def test_cosine_schedule_reaches_zero_and_constant_stays(monkeypatch):
    const = _learning_rates(monkeypatch, lr=1e-2)
    assert const == [1e-2] * 8
    cos = _learning_rates(monkeypatch, lr=1e-2, lr_schedule="cosine")
    assert len(cos) == 8 and cos[0] == pytest.approx(1e-2)
    assert cos == pytest.approx([1e-2 * 0.5 * (1 + math.cos(math.pi * t / 8)) for t in range(8)])


def test_weight_decay_uses_adamw_and_shrinks_weights():
    x, y = _data()
    plain, decayed = _model(), _model()
    train_model(plain, x, y, x, y, epochs=3, batch_size=16, lr=1e-2)
    train_model(decayed, x, y, x, y, epochs=3, batch_size=16, lr=1e-2, weight_decay=5.0)
    assert decayed[0].weight.norm() < plain[0].weight.norm()


def test_epoch_callback_records_extra_fields_and_restores_mode():
    x, y = _data()
    model = _model().eval()
    calls = []
    hist = train_model(model, x, y, x, y, epochs=2, batch_size=16,
                       epoch_callback=lambda e, m: calls.append((e, m.training)) or {"extra": e})
    assert calls == [(1, True), (2, True)]
    assert [r["extra"] for r in hist["epochs"]] == [1, 2]
    assert not model.training


def test_cli_options_parse_and_check():
    p = options.build_parser()
    args = p.parse_args(["--lr-schedule", "cosine", "--weight-decay", "0.01"])
    assert args.lr_schedule == "cosine" and args.weight_decay == 0.01
    assert set(LR_SCHEDULES) == {"constant", "cosine", "hold-cosine"}
    for bad in (["--lr-schedule", "step"], ["--weight-decay", "-1"]):
        with pytest.raises(SystemExit):
            p.parse_args(bad)


def test_hold_cosine_holds_then_decays():
    assert [lr_factor("hold-cosine", t, 10, hold_steps=4) for t in range(4)] == [1.0] * 4
    assert lr_factor("hold-cosine", 4, 10, hold_steps=4) == 1.0
    assert lr_factor("hold-cosine", 7, 10, hold_steps=4) == pytest.approx(0.5)
    assert lr_factor("hold-cosine", 10, 10, hold_steps=4) == pytest.approx(0.0)
    assert lr_factor("hold-cosine", 3, 10, hold_steps=20) == 1.0  # a hold past the end: constant


def test_hold_cosine_holds_for_the_transition(monkeypatch):
    rates = _learning_rates(monkeypatch, lr=1e-2, lr_schedule="hold-cosine")  # transition: 1 of 2 epochs
    assert rates[:4] == [1e-2] * 4
    assert rates[4:] == pytest.approx([1e-2 * 0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(4)])
