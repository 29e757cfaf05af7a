"""``mamext experiment``: train MAC and MAM MLPs, sweep pruning, report.

:func:`main` parses the command line (:func:`.options.build_parser`) and calls
:func:`run`, which resolves the options (:func:`.options.resolve_options`),
loads the data (:func:`load_splits`), trains and sweeps each seed
(:func:`train_models`, :func:`sweep_models`), packs the pruned models
(:func:`.packing.packing_checks`) and writes the outputs
(:func:`write_report`).
"""

from __future__ import annotations

import copy
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import deployment, report, sweep
from .._convert import convert
from .._sysinfo import cpu_name
from .data import DatasetError, Splits, load_dataset
from .architectures import build_model, describe, mam_layer_names
from .options import (DEFAULTS, QUICK, QUICK_DIGITS, RECIPE_OPTIONS, UsageError, build_parser, resolve_device,
                      resolve_options)
from .packing import packing_checks
from .train import train_model

__all__ = ["build_parser", "resolve_options", "run", "main", "load_splits", "train_models", "sweep_models",
           "write_report", "DEFAULTS", "QUICK", "QUICK_DIGITS", "RECIPE_OPTIONS", "UsageError"]


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


def _optimizer_options(opts):
    """The learning-rate schedule and weight decay of ``opts`` as
    :func:`train_model` keywords."""
    return dict(lr_schedule=getattr(opts, "lr_schedule", "constant"), weight_decay=getattr(opts, "weight_decay", 0.0),
                lr_hold_epochs=opts.transition_epochs)


def train_models(opts, splits, seed, device, progress, log):
    """Train the models of ``opts`` for one seed: ``(trained, inits,
    histories)``, each keyed by model kind (``inits``: the state dicts before
    training, the lottery ticket's rewind point)."""
    trained, inits, histories = {}, {}, {}
    train_kwargs = dict(epochs=opts.epochs, lr=opts.lr, batch_size=opts.batch_size, **_optimizer_options(opts))
    fit = dict(x_train=splits.x_train, y_train=splits.y_train, x_val=splits.x_val, y_val=splits.y_val, seed=seed,
               progress=progress, log=log, **train_kwargs)
    if "mac" in opts.models or ("mam" in opts.models and opts.mam_init == "mac"):
        torch.manual_seed(seed)
        mac = build_model(opts, "mac", splits).to(device)
        inits["mac"] = copy.deepcopy(mac.state_dict())
        histories["mac"] = train_model(mac, label="MAC", **fit)
        trained["mac"] = mac
    if "mam" in opts.models:
        if opts.mam_init == "mac":
            mac = trained["mac"]
            mam = convert(copy.deepcopy(mac), include=mam_layer_names(mac), types=(nn.Linear, nn.Conv2d))
        else:
            torch.manual_seed(seed)
            mam = build_model(opts, "mam", splits).to(device)
        inits["mam"] = copy.deepcopy(mam.state_dict())
        mam_fit = dict(fit, epochs=getattr(opts, "mam_epochs", None) or opts.epochs,
                       lr=getattr(opts, "mam_lr", None) or opts.lr)
        histories["mam"] = train_model(mam, transition_epochs=opts.transition_epochs, schedule=opts.schedule,
                                       label="MAM", **mam_fit)
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
            kw = dict(epochs=opts.iterative_epochs or opts.epochs, lr=opts.lr, batch_size=opts.batch_size,
                      **_optimizer_options(opts))
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
        timings[name] = {"epochs": len(hs[0]["epochs"]),
                         "seconds_per_epoch": sum(h["seconds_per_epoch"] for h in hs) / len(hs),
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
            f"Recipe: {describe(opts, splits)}, Adam lr {opts.lr:g}, batch "
            f"{opts.batch_size}, {_epochs_text(opts)}, MAM hidden layers with a {opts.transition_epochs:g}-epoch "
            f"{opts.schedule} MAC-to-MAM transition, {_optimizer_text(opts)}, MAM init: {opts.mam_init}; "
            f"seeds {opts.seed}; "
            f"{'lottery-ticket rounds' if opts.iterative else 'one-shot pruning, no fine-tuning'}.  ",
            f"Wall time: {wall:.0f} s" + load]


def _epochs_text(opts):
    mam_epochs, mam_lr = getattr(opts, "mam_epochs", None), getattr(opts, "mam_lr", None)
    if (mam_epochs in (None, opts.epochs)) and (mam_lr in (None, opts.lr)):
        return f"{opts.epochs} epochs"
    return (f"{opts.epochs} epochs (MAM model: {mam_epochs or opts.epochs} epochs, lr {mam_lr or opts.lr:g})")


def _optimizer_text(opts):
    text = f"{getattr(opts, 'lr_schedule', 'constant')} learning rate"
    decay = getattr(opts, "weight_decay", 0.0)
    return text + (f", weight decay {decay:g} (AdamW)" if decay else "")


def write_report(out, results, header, packing_info, splits, iterative):
    """Write summary.md, results.csv, the plot and results.json into ``out``;
    returns the summary text."""
    md = [*header, "", report.summary_markdown(results["summary"], results["timings"],
                                                results["packing"]["checks"])]
    if results["comparison"]:
        md += ["", *results["comparison"], ""]
    if not packing_info.get("available", False):
        md += ["", f"Packing: {packing_info['reason']}.", ""]
    if results.get("deployment"):
        md += ["", deployment.markdown(results["deployment"])]
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
    device = resolve_device(opts.device)
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
    if getattr(opts, "mcu", False):
        deployment.check_tools()  # before training, not after it
    splits = load_splits(opts, device)
    fractions = sorted({1.0, *[p / 100 for p in opts.fractions]}, reverse=True)
    log(f"data: {splits.describe()}; device {device}; {torch.get_num_threads()} threads")
    outcome = _train_and_sweep(opts, splits, fractions, device, progress, log)
    summary = report.summarize(outcome.rows)
    packing_info, packing = {"available": False, "reason": "not run with --iterative"}, []
    if not opts.iterative:
        loader = sweep.score_loader(splits.x_train, splits.y_train, opts.score_samples, seed=opts.seed[-1])
        packing_info, packing = packing_checks(outcome.trained, summary, splits, loader, log)
    deployed = None
    if getattr(opts, "mcu", False):
        deployed = deployment.deployment_table(outcome.trained, summary, splits, loader, fractions,
                                               opts.mcu_samples, log)
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
    if deployed is not None:
        results["deployment"] = deployed
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
