"""``mamext experiment``: train MAC and MAM MLPs, sweep pruning, report.

:func:`main` parses the command line (:func:`build_parser`) and calls
:func:`run`, which resolves the options (:func:`resolve_options`), loads the
data (:func:`load_splits`), trains and sweeps each seed
(:func:`train_models`, :func:`sweep_models`), packs the pruned models
(:func:`.packing.packing_checks`) and writes the outputs
(:func:`write_report`).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import report, sweep
from .._convert import convert
from .._sysinfo import cpu_name
from .data import DEFAULT_DATA_DIRS, DatasetError, Splits, load_dataset
from .models import HIDDEN_NAMES, MODEL_KINDS, build_mlp
from .packing import packing_checks
from .train import train_model

__all__ = ["build_parser", "resolve_options", "run", "main", "DEFAULTS", "UsageError"]


class UsageError(ValueError):
    """A bad combination of command-line options."""

#: Default recipe; chosen so that a default run takes well under 10 minutes on
#: 2 CPU cores (see the README for the measured time).
DEFAULTS = dict(epochs=15, transition_epochs=5, score_samples=10000, iterative_epochs=None, iterative_min=1.0)

#: ``--quick`` (a smoke run of well under a minute): on the IDX data sets a
#: 5000-image subset and 2 epochs; on digits (1198 training images, ~0.05 s an
#: epoch) 30 epochs, since MAM layers need that many to leave chance level.
QUICK = dict(epochs=2, transition_epochs=1, train_subset=5000, score_samples=1000, iterative_min=10.0)
QUICK_DIGITS = dict(QUICK, epochs=30, transition_epochs=10)

#: The options whose default depends on ``--quick``: their parser default is
#: ``None`` ("not given") and :func:`resolve_options` fills it in, so that a
#: value given explicitly always wins, even one equal to the default.
RECIPE_OPTIONS = ("epochs", "transition_epochs", "score_samples", "iterative_min")


def _recipe_default(key):
    """Help text stating the default of a :data:`RECIPE_OPTIONS` option."""
    quick = f"{QUICK[key]:g}"
    if QUICK_DIGITS[key] != QUICK[key]:
        quick += f", on digits {QUICK_DIGITS[key]:g}"
    return f"(default: {DEFAULTS[key]:g}; with --quick: {quick})"


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
    g.add_argument("--epochs", type=_positive_int, default=None,
                   help=f"training epochs of each model {_recipe_default('epochs')}")
    g.add_argument("--transition-epochs", type=_nonneg_float, default=None,
                   help="MAM model: epochs over which the MAC contribution vanishes (beta 1 -> 0); "
                        f"must not exceed --epochs {_recipe_default('transition_epochs')}")
    g.add_argument("--schedule", choices=["linear", "exponential"], default="linear",
                   help="vanishing-contribution schedule")
    g.add_argument("--mam-init", choices=["scratch", "mac"], default="scratch",
                   help="MAM model: train from the same random init as MAC (scratch), or start from the trained MAC "
                        "model converted with mamext.convert (mac; then trained --epochs more)")
    g.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate")
    g.add_argument("--batch-size", type=_positive_int, default=128, help="training batch size")
    g.add_argument("--seed", type=_nonneg_int, nargs="+", default=[0], help="one or more seeds (one run each)")
    g.add_argument("--models", type=_name_list(list(MODEL_KINDS)), default=list(MODEL_KINDS),
                   help="comma-separated models to train and sweep")


def _add_pruning_options(p):
    g = p.add_argument_group("pruning")
    mam_only = [c for c in sweep.CRITERIA if sweep.needs_mam(c)]
    note = f" ({', '.join(mam_only)}: MAM models only)" if mam_only else ""
    g.add_argument("--criteria", type=_name_list(list(sweep.CRITERIA)), default=list(sweep.DEFAULT_CRITERIA),
                   help=f"comma-separated one-shot criteria, from: {', '.join(sweep.CRITERIA)}{note}")
    g.add_argument("--fractions", type=_percent_list, default=[100 * f for f in sweep.FRACTIONS],
                   help="comma-separated remaining percentages (100 is always included)")
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
    return p


def _resolve_device(text):
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


def _environment(device):
    import mamext

    env = {"python": platform.python_version(), "torch": torch.__version__, "mamext": mamext.__version__,
           "cpu": cpu_name(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
           "mamext_cpu_capability": mamext.cpu_capability(), "device": str(device), "platform": platform.platform()}
    try:
        env["loadavg_1_5_15min"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def resolve_options(args) -> argparse.Namespace:
    """A copy of the parsed ``args`` with the recipe defaults filled in (the
    ``--quick`` ones with ``--quick``; options given explicitly win) and the
    option combinations checked; ``args`` itself is left unchanged."""
    opts = argparse.Namespace(**vars(args))
    recipe = (QUICK_DIGITS if opts.dataset == "digits" else QUICK) if opts.quick else DEFAULTS
    for k in RECIPE_OPTIONS:
        if getattr(opts, k) is None:
            setattr(opts, k, recipe[k])
    if opts.quick and opts.train_subset is None:
        opts.train_subset = recipe["train_subset"]
    if len(set(opts.seed)) != len(opts.seed):
        raise UsageError(f"--seed {' '.join(map(str, opts.seed))}: each seed may be given only once")
    if opts.transition_epochs > opts.epochs:
        raise UsageError(f"--transition-epochs ({opts.transition_epochs:g}) must not exceed --epochs "
                         f"({opts.epochs}): the MAM model would never become pure MAM")
    if opts.iterative and opts.iterative_epochs is not None and opts.transition_epochs > opts.iterative_epochs:
        raise UsageError("--transition-epochs must not exceed --iterative-epochs")
    if str(opts.out) == "":
        raise UsageError("--out is empty; give an output directory")
    if opts.data_dir is not None and str(opts.data_dir) == "":
        raise UsageError("--data-dir is empty; give the directory of the IDX files")
    return opts


def _check_out_dir(path) -> Path:
    """Check up front that ``--out`` is, or can be created as, a writable
    directory, so that a bad path fails before training rather than after it;
    nothing is created here."""
    out = Path(path)
    existing = out
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"--out {path}: {existing} exists and is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {path}: {existing} is not writable")
    return out


def _progress_enabled(opts) -> bool:
    return (not opts.quiet) and (opts.progress == "always" or (opts.progress == "auto" and sys.stderr.isatty()))


def _make_log(quiet, progress):
    """A log function writing to stderr (through tqdm while bars are shown);
    a no-op when ``quiet``."""
    def log(msg):
        if quiet:
            return
        if progress:
            try:
                from tqdm.auto import tqdm

                tqdm.write(msg, file=sys.stderr)
                return
            except ImportError:
                pass
        print(msg, file=sys.stderr, flush=True)

    return log


def load_splits(opts, device) -> Splits:
    """The data set of ``opts``, its training set cut to ``--train-subset``
    (fixed-seed shuffle), every split on ``device``."""
    splits = load_dataset(opts.dataset, opts.data_dir)
    if opts.train_subset is not None and opts.train_subset < len(splits.y_train):
        g = torch.Generator().manual_seed(12345)
        idx = torch.randperm(len(splits.y_train), generator=g)[: opts.train_subset]
        splits.x_train, splits.y_train = splits.x_train[idx], splits.y_train[idx]
    for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        setattr(splits, k, getattr(splits, k).to(device))
    return splits


def train_models(opts, splits, seed, device, progress, log):
    """Train the models of ``opts`` for one seed: ``(trained, inits,
    histories)``, each keyed by model kind (``inits``: the state dicts before
    training, the lottery ticket's rewind point)."""
    trained, inits, histories = {}, {}, {}
    train_kwargs = dict(epochs=opts.epochs, lr=opts.lr, batch_size=opts.batch_size)
    fit = dict(x_train=splits.x_train, y_train=splits.y_train, x_val=splits.x_val, y_val=splits.y_val, seed=seed,
               progress=progress, log=log, **train_kwargs)
    if "mac" in opts.models or ("mam" in opts.models and opts.mam_init == "mac"):
        torch.manual_seed(seed)
        mac = build_mlp("mac", splits.in_features, splits.num_classes).to(device)
        inits["mac"] = copy.deepcopy(mac.state_dict())
        histories["mac"] = train_model(mac, label="MAC", **fit)
        trained["mac"] = mac
    if "mam" in opts.models:
        if opts.mam_init == "mac":
            mam = convert(copy.deepcopy(trained["mac"]), include=list(HIDDEN_NAMES))
        else:
            torch.manual_seed(seed)
            mam = build_mlp("mam", splits.in_features, splits.num_classes).to(device)
        inits["mam"] = copy.deepcopy(mam.state_dict())
        histories["mam"] = train_model(mam, transition_epochs=opts.transition_epochs, schedule=opts.schedule,
                                       label="MAM", **fit)
        trained["mam"] = mam
    return trained, inits, histories


def sweep_models(opts, trained, inits, splits, fractions, seed, progress, log):
    """The pruning sweep of each model of ``opts`` (one-shot per criterion,
    or lottery-ticket rounds with ``--iterative``): the result rows."""
    rows = []
    loader = sweep.score_loader(splits.x_train, splits.y_train, opts.score_samples, seed=seed)
    for name in opts.models:
        model = trained[name]
        if opts.iterative:
            kw = dict(epochs=opts.iterative_epochs or opts.epochs, lr=opts.lr, batch_size=opts.batch_size)
            if name == "mam":
                kw.update(transition_epochs=min(opts.transition_epochs, kw["epochs"]), schedule=opts.schedule)
            fr = [f for f in fractions if f >= opts.iterative_min / 100 - 1e-12]
            rows += sweep.lottery_sweep(model, inits[name], name, splits, fr, seed, kw, progress=progress, log=log)
        else:
            rows += sweep.one_shot_sweep(model, name, splits, opts.criteria, fractions, loader, seed,
                                         progress=progress, log=log)
    return rows


@dataclass
class _Outcome:
    """What training and sweeping every seed produced."""

    rows: list = field(default_factory=list)
    #: model kind -> one history per seed, each with its ``seed``
    histories: dict = field(default_factory=dict)
    #: model kind -> the model trained with the last seed
    trained: dict = field(default_factory=dict)


def _train_and_sweep(opts, splits, fractions, device, progress, log) -> _Outcome:
    outcome = _Outcome()
    for seed in opts.seed:
        trained, inits, histories = train_models(opts, splits, seed, device, progress, log)
        for name, h in histories.items():
            outcome.histories.setdefault(name, []).append({"seed": seed, **h})
        outcome.rows += sweep_models(opts, trained, inits, splits, fractions, seed, progress, log)
        outcome.trained = {k: v for k, v in trained.items() if k in opts.models}
    return outcome


def _timings(opts, histories):
    """Mean training time of each reported model over the seeds."""
    timings = {}
    for name, hs in histories.items():
        if name not in opts.models:
            continue
        timings[name] = {"epochs": opts.epochs, "seconds_per_epoch": sum(h["seconds_per_epoch"] for h in hs) / len(hs),
                         "train_seconds": sum(h["train_seconds"] for h in hs) / len(hs)}
    return timings


def _summary_header(opts, splits, device, command, wall, load_start):
    """The title, command, machine, recipe and wall-time lines of summary.md."""
    load = ""
    if load_start:
        load = (f" (load average at start {load_start[0]:.1f}, at end {os.getloadavg()[0]:.1f}, "
                f"on {os.cpu_count()} CPUs)")
    return [f"# MAM vs MAC pruning on {splits.name}", "",
            f"Command: `{command}`  ", f"Machine: {cpu_name()}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}, device {device}  ",
            f"Recipe: MLP {splits.in_features}-512-256-{splits.num_classes}, Adam lr {opts.lr:g}, batch "
            f"{opts.batch_size}, {opts.epochs} epochs, MAM hidden layers with a {opts.transition_epochs:g}-epoch "
            f"{opts.schedule} MAC-to-MAM transition, MAM init: {opts.mam_init}; seeds {opts.seed}; "
            f"{'lottery-ticket rounds' if opts.iterative else 'one-shot pruning, no fine-tuning'}.  ",
            f"Wall time: {wall:.0f} s" + load]


def write_report(out, results, header, packing_info, splits, iterative):
    """Write summary.md, results.csv, the plot and results.json into ``out``;
    returns the summary text."""
    md = [*header, "", report.summary_markdown(results["summary"], results["timings"],
                                                results["packing"]["checks"])]
    if results["comparison"]:
        md += ["", *results["comparison"], ""]
    if not packing_info.get("available", False):
        md += ["", f"Packing: {packing_info['reason']}.", ""]
    summary_text = "\n".join(md)
    (out / "summary.md").write_text(summary_text)
    report.write_csv(out / "results.csv", results["rows"])
    report.plot(out / "accuracy_vs_remaining.png", results["rows"],
                title=f"{splits.name}: accuracy vs remaining interconnections "
                      f"({'lottery ticket' if iterative else 'one-shot, no fine-tuning'})")
    report.write_json(out / "results.json", results)
    return summary_text


def _rng_devices(device):
    """The CUDA devices whose random state :func:`run` saves and restores."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def run(args) -> dict:
    """Run the experiment described by parsed ``args``; returns the results
    dict (also written to ``args.out``). ``args``, torch's thread count and
    its global random state are left as they were."""
    t_start = time.perf_counter()
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    opts = resolve_options(args)
    device = _resolve_device(opts.device)
    out = _check_out_dir(opts.out)
    threads = torch.get_num_threads()
    try:
        if opts.threads is not None:
            torch.set_num_threads(opts.threads)
        with torch.random.fork_rng(devices=_rng_devices(device)):
            return _run(opts, device, out, t_start, load_start)
    finally:
        torch.set_num_threads(threads)


def _run(opts, device, out, t_start, load_start) -> dict:
    progress = _progress_enabled(opts)
    log = _make_log(opts.quiet, progress)
    splits = load_splits(opts, device)
    fractions = sorted({1.0, *[p / 100 for p in opts.fractions]}, reverse=True)
    log(f"data: {splits.describe()}; device {device}; {torch.get_num_threads()} threads")
    outcome = _train_and_sweep(opts, splits, fractions, device, progress, log)
    summary = report.summarize(outcome.rows)
    packing_info, packing = {"available": False, "reason": "not run with --iterative"}, []
    if not opts.iterative:
        loader = sweep.score_loader(splits.x_train, splits.y_train, opts.score_samples, seed=opts.seed[-1])
        packing_info, packing = packing_checks(outcome.trained, summary, splits, loader, log)
    out.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter() - t_start
    argv = sys.argv[1:] if getattr(opts, "_argv", None) is None else opts._argv
    command = ("mamext experiment " + " ".join(argv)).strip()
    config = {k: v for k, v in vars(opts).items() if not k.startswith("_")}
    results = {"command": command, "config": config, "dataset": splits.describe(),
               "environment": {**_environment(device), "loadavg_at_start": load_start},
               "fractions": fractions, "timings": _timings(opts, outcome.histories), "histories": outcome.histories,
               "summary": summary, "comparison": report.comparison_lines(summary),
               "packing": {**packing_info, "checks": packing}, "rows": outcome.rows, "wall_seconds": wall}
    header = _summary_header(opts, splits, device, command, wall, load_start)
    print(write_report(out, results, header, packing_info, splits, opts.iterative))
    print(f"outputs in {out}/: results.json, results.csv, accuracy_vs_remaining.png, summary.md "
          f"({wall:.0f} s)")
    return results


def main(argv=None, prog="mamext experiment") -> int:
    parser = build_parser(prog)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args._argv = argv
    try:
        run(args)
    except (DatasetError, UsageError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    except KeyboardInterrupt:
        parser.exit(130, "interrupted\n")
    except BrokenPipeError:  # e.g. `mamext experiment | head`: the outputs are written already
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
    return 0
