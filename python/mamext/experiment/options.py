"""Command-line options of ``mamext experiment``: the parser
(:func:`build_parser`), the recipe defaults, ``--quick``, and the checks of
option combinations (:func:`resolve_options`)."""

from __future__ import annotations

import argparse
import math
import textwrap

import torch

from . import sweep
from .data import DEFAULT_DATA_DIRS
from .architectures import ARCHS
from .models import MODEL_KINDS
from .train import LR_SCHEDULES
from .models_vit import VIT_MAM_CHOICES

__all__ = ["build_parser", "resolve_options", "resolve_device", "UsageError", "DEFAULTS", "QUICK", "QUICK_DIGITS",
           "RECIPE_OPTIONS", "ARCH_DEFAULTS", "MAM_RECIPE_OPTIONS"]


class UsageError(ValueError):
    """A bad combination of command-line options."""


#: Default recipe; chosen so that a default run takes a few minutes on 2 CPU
#: cores (docs/experiment.md gives the measured time). The MAM model starts
#: from the trained MAC model (``mam_init="mac"``) and becomes pure MAM over a
#: short transition: docs/training_mam.md gives the measurements behind each
#: choice.
DEFAULTS = dict(epochs=15, transition_epochs=2, score_samples=10000, iterative_epochs=None, iterative_min=1.0,
                mam_init="mac", mam_epochs=None, mam_lr=None)

#: ``--quick`` (a smoke run of well under a minute): on the IDX data sets a
#: 5000-image subset and 2 epochs; on digits (1198 training images, ~0.05 s an
#: epoch) 30 epochs, since MAM layers need that many to leave chance level.
#: The MAM model trains from scratch there, as long as MAC and at ``--lr``.
QUICK = dict(epochs=2, transition_epochs=1, train_subset=5000, score_samples=1000, iterative_min=10.0)
QUICK_DIGITS = dict(QUICK, epochs=30, transition_epochs=10)

#: The default recipe of each ``--arch`` (the MLP's is :data:`DEFAULTS`),
#: chosen so that a default run with ``--threads 1`` stays within 15 minutes
#: on 2 CPU cores (docs/experiment.md gives the measured times).
#: ``cnn-mam-conv`` (``--arch cnn --mam-conv``) uses the CNN's recipe. The
#: CNN's MAM model, still underfitting after 10 epochs, trains 12 epochs with
#: twice the learning rate. The ViT's MAM model trains from scratch: from the
#: same random init it is as accurate as MAC and more prunable than when
#: started from the trained MAC model (docs/training_mam.md). Both linear
#: layers of its encoder MLPs are MAM (``vit_mam="mlp"``): with ``linear1``
#: alone MAM lost accuracy gradually under pruning, with both it holds down
#: to 1 %.
_CNN_RECIPE = dict(DEFAULTS, epochs=10, mam_epochs=12, mam_lr=2e-3)
ARCH_DEFAULTS = {"mlp": DEFAULTS, "cnn": _CNN_RECIPE, "cnn-mam-conv": _CNN_RECIPE,
                 "vit": dict(DEFAULTS, epochs=15, transition_epochs=5, mam_init="scratch", mam_epochs=None,
                             mam_lr=None, vit_mam="mlp")}

#: The MAM model's recipe options, filled in from :data:`ARCH_DEFAULTS` when
#: not given (not with ``--quick``: its 2 epochs leave too little pure-MAM
#: training after a switch from a trained MAC model, so the MAM model trains
#: from scratch as long as MAC, at ``--lr``; with
#: ``--iterative``, ``mam_init`` stays ``scratch``, the lottery ticket's
#: rewind point being the random initialisation).
MAM_RECIPE_OPTIONS = ("mam_init", "mam_epochs", "mam_lr")

#: ``--quick --arch cnn|vit`` on the IDX data sets: fewer criteria and
#: remaining percentages, since evaluating these networks on the 10000 test
#: images at every point takes most of a smoke run's time.
QUICK_ARCH_SWEEP = dict(criteria=["magnitude-global", "gradient-global"], fractions=[100.0, 10.0, 1.0, 0.1])

#: The options whose default depends on ``--quick``: their parser default is
#: ``None`` ("not given") and :func:`resolve_options` fills it in, so that a
#: value given explicitly always wins, even one equal to the default.
RECIPE_OPTIONS = ("epochs", "transition_epochs", "score_samples", "iterative_min")


def _recipe_default(key):
    """Help text stating the default of a :data:`RECIPE_OPTIONS` option."""
    quick = f"{QUICK[key]:g}"
    if QUICK_DIGITS[key] != QUICK[key]:
        quick += f", on digits {QUICK_DIGITS[key]:g}"
    others = ", ".join(f"{a} {r[key]:g}" for a, r in ARCH_DEFAULTS.items() if a != "mlp" and r[key] != DEFAULTS[key]
                       and a != "cnn-mam-conv")
    return f"(default: {DEFAULTS[key]:g}{'; --arch ' + others if others else ''}; with --quick: {quick})"


def _mam_default(key, fallback):
    """Help text stating the default of a :data:`MAM_RECIPE_OPTIONS` option
    per architecture."""
    shown = ", ".join(f"{a.replace('-mam-conv', ' --mam-conv')} "
                      f"{fallback if r[key] is None else _format_default(r[key])}" for a, r in ARCH_DEFAULTS.items())
    quick = {"mam_epochs": "--epochs", "mam_lr": "--lr", "mam_init": "scratch"}[key]
    return f"(default: {shown}; with --quick: {quick}" + (")" if key != "mam_init" else "")


def _percent(text):
    """One remaining percentage in (0, 100]."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage, got {text!r}") from None
    if not 0 < v <= 100:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"remaining percentages must be in (0, 100], got {v:g}")
    return v


def _percent_list(text):
    vals = [v for v in text.split(",") if v.strip()]
    if not vals:
        raise argparse.ArgumentTypeError("empty list of percentages")
    try:
        vals = [float(v) for v in vals]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated percentages, got {text!r}") from None
    return sorted({_percent(v) for v in vals}, reverse=True)


def _name_list(choices):
    def parse(text):
        vals = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in vals if v not in choices]
        if bad or not vals:
            raise argparse.ArgumentTypeError(
                f"invalid choice(s) {', '.join(bad) or '(none)'}; choose from {', '.join(choices)}")
        return list(dict.fromkeys(vals))
    return parse


def _number(cast, positive):
    """argparse type: a finite number of type `cast`, > 0 (positive) or >= 0."""
    kind = ("positive " if positive else "non-negative ") + ("integer" if cast is int else "finite number")

    def parse(text):
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind}, got {text!r}") from None
        if not math.isfinite(v) or not (v > 0 if positive else v >= 0):  # also rejects NaN
            raise argparse.ArgumentTypeError(f"expected a {kind}, got {text}")
        return v

    return parse


_positive_int = _number(int, True)
_nonneg_int = _number(int, False)
_nonneg_float = _number(float, False)
_positive_float = _number(float, True)


class _HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to each option's help unless the help already
    states its default or there is none to state (flags, ``None``); lists are
    shown as the comma-separated text the option accepts. Hyphenated names
    are not split across lines."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is False or default == argparse.SUPPRESS:
            return text
        if isinstance(default, (list, tuple)):
            shown = ", ".join(_format_default(v) for v in default)
        else:
            shown = _format_default(default)
        return f"{text} (default: {shown.replace('%', '%%')})".lstrip()

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def _format_default(value):
    return f"{value:g}" if isinstance(value, float) else str(value)


def _add_data_options(p):
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=[*DEFAULT_DATA_DIRS, "digits"], default="fashion-mnist",
                   help="fashion-mnist/mnist: IDX files in --data-dir; digits: scikit-learn's bundled 8x8 digits")
    dirs = "; ".join(f"{d} for {name}" for name, d in DEFAULT_DATA_DIRS.items())
    g.add_argument("--data-dir", default=None,
                   help=f"directory of the IDX files (default: {dirs}; Debian's dataset-fashion-mnist package "
                        "installs Fashion-MNIST there)")
    g.add_argument("--train-subset", type=_positive_int, default=None,
                   help="train on the first N shuffled training images only (default: all)")


def _add_training_options(p):
    g = p.add_argument_group("training")
    g.add_argument("--arch", choices=list(ARCHS), default="mlp",
                   help="mlp: 784-512-256-10 with MAM hidden layers; cnn: two MAC convolution blocks and a "
                        "classifier 256-128 with MAM hidden layers; vit: a small vision transformer with MAM in its "
                        "encoder blocks' first MLP layers. The pruned layers are the MAM ones, in both models")
    g.add_argument("--mam-conv", action="store_true",
                   help="--arch cnn only: the MAM model's convolutions are MAM (MAMConv2d) too, and the "
                        "convolutions of both models are pruned with the classifier")
    g.add_argument("--vit-mam", choices=list(VIT_MAM_CHOICES), default=None,
                   help="--arch vit only: the MAM (and pruned) layers of each encoder block's MLP: linear1 (the "
                        f"expansion) or mlp (linear1 and linear2) (default: {ARCH_DEFAULTS['vit']['vit_mam']})")
    g.add_argument("--epochs", type=_positive_int, default=None,
                   help=f"training epochs of each model {_recipe_default('epochs')}")
    g.add_argument("--transition-epochs", type=_nonneg_float, default=None,
                   help="MAM model: epochs over which the MAC contribution vanishes (beta 1 -> 0); "
                        f"must not exceed --epochs {_recipe_default('transition_epochs')}")
    g.add_argument("--schedule", choices=["linear", "exponential"], default="linear",
                   help="vanishing-contribution schedule")
    g.add_argument("--mam-init", choices=["scratch", "mac"], default=None,
                   help="MAM model: train from the same random init as MAC (scratch), or start from the trained MAC "
                        "model converted with mamext.convert (mac; then trained --mam-epochs more) "
                        f"{_mam_default('mam_init', 'scratch')}; with --iterative: scratch)")
    g.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate")
    g.add_argument("--mam-epochs", type=_positive_int, default=None,
                   help=f"training epochs of the MAM model {_mam_default('mam_epochs', '--epochs')}")
    g.add_argument("--mam-lr", type=_positive_float, default=None,
                   help=f"learning rate of the MAM model {_mam_default('mam_lr', '--lr')}")
    g.add_argument("--lr-schedule", choices=list(LR_SCHEDULES), default="constant",
                   help="learning rate over the run, for both models: constant; cosine (lr -> 0 over every "
                        "training step); hold-cosine (constant for --transition-epochs, then cosine to 0)")
    g.add_argument("--weight-decay", type=_nonneg_float, default=0.0,
                   help="decoupled weight decay (AdamW) for both models; 0: Adam")
    g.add_argument("--batch-size", type=_positive_int, default=128, help="training batch size")
    g.add_argument("--seed", type=_nonneg_int, nargs="+", default=[0], help="one or more seeds (one run each)")
    g.add_argument("--models", type=_name_list(list(MODEL_KINDS)), default=list(MODEL_KINDS),
                   help="comma-separated models to train and sweep")


def _add_pruning_options(p):
    g = p.add_argument_group("pruning")
    mam_only = [c for c in sweep.CRITERIA if sweep.mam_models_only(c)]
    note = f" ({', '.join(mam_only)}: MAM models only)" if mam_only else ""
    quick = f"with --quick --arch cnn or vit on an IDX data set: {', '.join(QUICK_ARCH_SWEEP['criteria'])}"
    g.add_argument("--criteria", type=_name_list(list(sweep.CRITERIA)), default=None,
                   help=f"comma-separated one-shot criteria, from: {', '.join(sweep.CRITERIA)}{note} (default: "
                        f"{', '.join(sweep.DEFAULT_CRITERIA)}; {quick})")
    shown = ", ".join(_format_default(100 * f) for f in sweep.FRACTIONS)
    quick = ", ".join(_format_default(f) for f in QUICK_ARCH_SWEEP["fractions"])
    g.add_argument("--fractions", type=_percent_list, default=None,
                   help=f"comma-separated remaining percentages (100 is always included) (default: {shown}; with "
                        f"--quick --arch cnn or vit on an IDX data set: {quick})")
    g.add_argument("--score-samples", type=_positive_int, default=None,
                   help="training images used by the data-driven scores (those computed from gradients or "
                        f"activations) {_recipe_default('score_samples')}")
    g.add_argument("--iterative", action="store_true",
                   help="instead of one-shot sweeps, run lottery-ticket rounds (global magnitude pruning to each "
                        "next fraction, rewind to init, retrain with the same recipe)")
    g.add_argument("--iterative-epochs", type=_positive_int, default=None,
                   help="epochs per lottery round (default: --epochs)")
    g.add_argument("--iterative-min", type=_percent, default=None,
                   help=f"last remaining percentage of the lottery rounds {_recipe_default('iterative_min')}")


def _add_run_options(p):
    g = p.add_argument_group("run")
    g.add_argument("--out", default="results", help="output directory")
    g.add_argument("--threads", type=_positive_int, default=None,
                   help="torch.set_num_threads (default: torch's default)")
    g.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:N")
    g.add_argument("--quick", action="store_true",
                   help=f"smoke run of under a minute: {QUICK['epochs']} epochs, at most {QUICK['train_subset']} "
                        f"training images, {QUICK['score_samples']} scoring images ({QUICK_DIGITS['epochs']} "
                        f"epochs on digits); options given explicitly win")
    g.add_argument("--progress", choices=["auto", "always", "never"], default="auto",
                   help="tqdm progress bars (auto: only when stderr is a terminal)")
    g.add_argument("--quiet", action="store_true", help="no progress bars and no log lines; the table still prints")


def _add_mcu_options(p):
    g = p.add_argument_group("microcontroller")
    g.add_argument("--mcu", action="store_true",
                   help="after the sweep, deploy MAC and MAM (integer-only int8, compacted) at their within-1-point "
                        "operating points and at a 32 KB flash budget on an emulated Cortex-M4 and Cortex-M7 "
                        "(needs arm-none-eabi-gcc, newlib and qemu-system-arm; takes minutes): flash, RAM, "
                        "instructions per inference and test accuracy on the device")
    g.add_argument("--mcu-samples", type=_positive_int, default=1000,
                   help="test images run on each emulated device (the first of the test half)")


def build_parser(prog="mamext experiment"):
    p = argparse.ArgumentParser(
        prog=prog,
        description="Reproduce the MAM pruning claim: train an MLP 784-512-256-10 with MAC (nn.Linear) hidden "
                    "layers and with MAM (MAMLinear) hidden layers, prune the hidden layers one-shot at remaining "
                    "fractions from 100% down to 0.01% with several criteria, and report accuracy vs remaining "
                    "interconnections (table, CSV, JSON, plot).",
        formatter_class=_HelpFormatter)
    _add_data_options(p)
    _add_training_options(p)
    _add_pruning_options(p)
    _add_run_options(p)
    _add_mcu_options(p)
    return p


def resolve_device(text):
    """The torch device of ``--device`` (``auto``: CUDA when available)."""
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError) as e:
        raise UsageError(f"invalid --device {text!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {text}: CUDA is not available in this torch build/machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {text}: only cpu and cuda are supported")
    return dev


def resolve_options(args) -> argparse.Namespace:
    """A copy of the parsed ``args`` with the recipe defaults filled in (the
    ``--quick`` ones with ``--quick``; options given explicitly win) and the
    option combinations checked; ``args`` itself is left unchanged."""
    opts = argparse.Namespace(**vars(args))
    arch = "cnn-mam-conv" if opts.arch == "cnn" and opts.mam_conv else opts.arch
    recipe = (QUICK_DIGITS if opts.dataset == "digits" else QUICK) if opts.quick else ARCH_DEFAULTS[arch]
    for k in RECIPE_OPTIONS:
        if getattr(opts, k) is None:
            setattr(opts, k, recipe[k])
    reduced = opts.quick and opts.arch != "mlp" and opts.dataset != "digits"
    if opts.criteria is None:
        opts.criteria = list(QUICK_ARCH_SWEEP["criteria"] if reduced else sweep.DEFAULT_CRITERIA)
    if opts.fractions is None:
        opts.fractions = list(QUICK_ARCH_SWEEP["fractions"]) if reduced else [100 * f for f in sweep.FRACTIONS]
    for k in MAM_RECIPE_OPTIONS:
        if getattr(opts, k, None) is None and not opts.quick:
            setattr(opts, k, ARCH_DEFAULTS[arch][k])
    if getattr(opts, "mam_init", None) is None or (opts.iterative and args.mam_init is None):
        opts.mam_init = "scratch"
    if opts.train_subset is None and "train_subset" in recipe:
        opts.train_subset = recipe["train_subset"]
    if opts.mam_conv and opts.arch != "cnn":
        raise UsageError(f"--mam-conv applies to --arch cnn only, not --arch {opts.arch}")
    if getattr(opts, "vit_mam", None) is not None and opts.arch != "vit":
        raise UsageError(f"--vit-mam applies to --arch vit only, not --arch {opts.arch}")
    if opts.arch == "vit" and getattr(opts, "vit_mam", None) is None:
        opts.vit_mam = ARCH_DEFAULTS["vit"]["vit_mam"]
    if len(set(opts.seed)) != len(opts.seed):
        raise UsageError(f"--seed {' '.join(map(str, opts.seed))}: each seed may be given only once")
    mam_epochs = getattr(opts, "mam_epochs", None) or opts.epochs
    if opts.transition_epochs > mam_epochs:
        which = "--mam-epochs" if getattr(opts, "mam_epochs", None) else "--epochs"
        raise UsageError(f"--transition-epochs ({opts.transition_epochs:g}) must not exceed {which} "
                         f"({mam_epochs}): the MAM model would never become pure MAM")
    if opts.iterative and opts.iterative_epochs is not None and opts.transition_epochs > opts.iterative_epochs:
        raise UsageError("--transition-epochs must not exceed --iterative-epochs")
    if getattr(opts, "mcu", False) and opts.iterative:
        raise UsageError("--mcu deploys the one-shot operating points; it cannot be combined with --iterative")
    if str(opts.out) == "":
        raise UsageError("--out is empty; give an output directory")
    if opts.data_dir is not None and str(opts.data_dir) == "":
        raise UsageError("--data-dir is empty; give the directory of the IDX files")
    return opts
