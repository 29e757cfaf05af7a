"""The MAM model's own recipe in ``mamext experiment``: ``--mam-init``,
``--mam-epochs`` and ``--mam-lr`` and their per-architecture defaults."""

import pytest
import torch

from mamext.experiment import cli, options


def _opts(*argv):
    return options.resolve_options(options.build_parser().parse_args(list(argv)))


def test_per_arch_defaults_and_explicit_values_win():
    for arch, recipe in (("mlp", options.DEFAULTS), ("cnn", options.ARCH_DEFAULTS["cnn"]),
                         ("vit", options.ARCH_DEFAULTS["vit"])):
        opts = _opts("--arch", arch)
        assert (opts.mam_init, opts.mam_epochs, opts.mam_lr) == (recipe["mam_init"], recipe["mam_epochs"],
                                                                 recipe["mam_lr"])
    assert _opts("--arch", "mlp").mam_init == "mac"
    assert _opts("--arch", "vit").mam_init == "scratch"
    opts = _opts("--arch", "cnn", "--mam-init", "scratch", "--mam-epochs", "3", "--mam-lr", "0.01")
    assert (opts.mam_init, opts.mam_epochs, opts.mam_lr) == ("scratch", 3, 0.01)


def test_quick_and_iterative():
    quick = _opts("--arch", "cnn", "--quick")  # --quick: from scratch, as long as MAC, at --lr
    assert (quick.mam_init, quick.mam_epochs, quick.mam_lr) == ("scratch", None, None)
    assert _opts("--quick", "--mam-init", "mac").mam_init == "mac"
    assert _opts("--iterative").mam_init == "scratch"  # the lottery ticket rewinds to the random init
    assert _opts("--iterative", "--mam-init", "mac").mam_init == "mac"


def test_transition_checked_against_mam_epochs():
    with pytest.raises(options.UsageError, match="must not exceed --mam-epochs"):
        _opts("--epochs", "10", "--mam-epochs", "3", "--transition-epochs", "4")
    assert _opts("--epochs", "3", "--mam-epochs", "10", "--transition-epochs", "4").transition_epochs == 4


def test_train_models_uses_the_mam_recipe(monkeypatch):
    calls = {}
    real = cli.train_model

    def spy(model, **kw):
        calls[kw["label"]] = kw
        return real(model, **kw)

    monkeypatch.setattr(cli, "train_model", spy)
    opts = _opts("--dataset", "digits", "--epochs", "2", "--mam-epochs", "3", "--mam-lr", "0.005",
                 "--transition-epochs", "1", "--train-subset", "200")
    splits = cli.load_splits(opts, torch.device("cpu"))
    trained, inits, hist = cli.train_models(opts, splits, 0, torch.device("cpu"), False, None)
    assert (calls["MAC"]["epochs"], calls["MAC"]["lr"]) == (2, 1e-3)
    assert (calls["MAM"]["epochs"], calls["MAM"]["lr"]) == (3, 0.005)
    assert len(hist["mac"]["epochs"]) == 2 and len(hist["mam"]["epochs"]) == 3
    assert cli._epochs_text(opts) == "2 epochs (MAM model: 3 epochs, lr 0.005)"
