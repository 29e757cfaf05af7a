"""``mamext experiment``: train MAC and MAM MLPs, sweep pruning, report."""

from __future__ import annotations

import argparse
import copy
import importlib
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

from . import report
from .._convert import convert
from .._sysinfo import cpu_name
from .data import DEFAULT_DATA_DIR, DatasetError, load_dataset
from .models import HIDDEN_NAMES, build_mlp, hidden_layers
from .sweep import CRITERIA, DEFAULT_CRITERIA, FRACTIONS, lottery_sweep, one_shot_sweep, prune_copy, score_loader
from .train import evaluate, train_model

__all__ = ["build_parser", "run", "main", "DEFAULTS", "UsageError"]


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


def _percent_list(text):
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated percentages, got {text!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError("empty list of percentages")
    for v in vals:
        if not 0 < v <= 100:
            raise argparse.ArgumentTypeError(f"remaining percentages must be in (0, 100], got {v:g}")
    return sorted(set(vals), reverse=True)


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
    """argparse type: a number of type `cast`, > 0 (positive) or >= 0."""
    kind = ("positive " if positive else "non-negative ") + ("integer" if cast is int else "number")

    def parse(text):
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind}, got {text!r}") from None
        if not (v > 0 if positive else v >= 0):  # also rejects NaN
            raise argparse.ArgumentTypeError(f"expected a {kind}, got {text}")
        return v

    return parse


_positive_int = _number(int, True)
_nonneg_int = _number(int, False)
_nonneg_float = _number(float, False)
_positive_float = _number(float, True)


def build_parser(prog="mamext experiment"):
    d = DEFAULTS
    p = argparse.ArgumentParser(
        prog=prog,
        description="Reproduce the MAM pruning claim: train an MLP 784-512-256-10 with MAC (nn.Linear) hidden "
                    "layers and with MAM (MAMLinear) hidden layers, prune the hidden layers one-shot at remaining "
                    "fractions from 100%% down to 0.01%% with several criteria, and report accuracy vs remaining "
                    "interconnections (table, CSV, JSON, plot).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=["fashion-mnist", "mnist", "digits"], default="fashion-mnist",
                   help="fashion-mnist/mnist: IDX files in --data-dir; digits: scikit-learn's bundled 8x8 digits")
    g.add_argument("--data-dir", default=None,
                   help=f"directory of the IDX files (default {DEFAULT_DATA_DIR}, where Debian's "
                        "dataset-fashion-mnist package puts them)")
    g.add_argument("--train-subset", type=_positive_int, default=None,
                   help="train on the first N shuffled training images only (default: all)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=_positive_int, default=d["epochs"], help="training epochs of each model")
    g.add_argument("--transition-epochs", type=_nonneg_float, default=d["transition_epochs"],
                   help="MAM model: epochs over which the MAC contribution vanishes (beta 1 -> 0); "
                        "must not exceed --epochs")
    g.add_argument("--schedule", choices=["linear", "exponential"], default="linear",
                   help="vanishing-contribution schedule")
    g.add_argument("--mam-init", choices=["scratch", "mac"], default="scratch",
                   help="MAM model: train from the same random init as MAC (scratch), or start from the trained MAC "
                        "model converted with mamext.convert (mac; then trained --epochs more)")
    g.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate")
    g.add_argument("--batch-size", type=_positive_int, default=128)
    g.add_argument("--seed", type=_nonneg_int, nargs="+", default=[0], help="one or more seeds (one run each)")
    g.add_argument("--models", type=_name_list(["mac", "mam"]), default=["mac", "mam"],
                   help="comma-separated models to train and sweep")
    g = p.add_argument_group("pruning")
    g.add_argument("--criteria", type=_name_list(list(CRITERIA)), default=list(DEFAULT_CRITERIA),
                   help="comma-separated one-shot criteria (selection only applies to MAM)")
    g.add_argument("--fractions", type=_percent_list, default=[100 * f for f in FRACTIONS],
                   help="comma-separated remaining percentages (100 is always included)")
    g.add_argument("--score-samples", type=_positive_int, default=d["score_samples"],
                   help="training images used by the gradient and selection scores")
    g.add_argument("--iterative", action="store_true",
                   help="instead of one-shot sweeps, run lottery-ticket rounds (global magnitude pruning to each "
                        "next fraction, rewind to init, retrain with the same recipe)")
    g.add_argument("--iterative-epochs", type=_positive_int, default=None,
                   help="epochs per lottery round (default: --epochs)")
    g.add_argument("--iterative-min", type=_positive_float, default=d["iterative_min"],
                   help="last remaining percentage of the lottery rounds")
    g = p.add_argument_group("run")
    g.add_argument("--out", default="results", help="output directory")
    g.add_argument("--threads", type=_positive_int, default=None,
                   help="torch.set_num_threads (default: torch's default)")
    g.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:N")
    g.add_argument("--quick", action="store_true",
                   help=f"smoke run of under a minute: {QUICK['epochs']} epochs, at most {QUICK['train_subset']} "
                        f"training images, {QUICK['score_samples']} scoring images ({QUICK_DIGITS['epochs']} "
                        f"epochs on digits); explicit flags override")
    g.add_argument("--progress", choices=["auto", "always", "never"], default="auto",
                   help="tqdm progress bars (auto: only when stderr is a terminal)")
    g.add_argument("--quiet", action="store_true", help="no progress bars and no log lines; the table still prints")
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


def _packing_checks(trained, summary, splits, data, log):
    """Where ``mamext.sparse.pack`` exists: pack each model pruned at its
    within-1-point operating point (and at 1 %), check the accuracy and report
    the size."""
    try:
        sparse = importlib.import_module("mamext.sparse")
        pack = sparse.pack
    except Exception as e:  # noqa: BLE001
        return {"available": False, "reason": f"mamext.sparse.pack unavailable ({type(e).__name__}: {e})"}, []
    out = []
    for e in summary:
        if e["criterion"] not in CRITERIA or e["model"] not in trained:
            continue
        fracs = {0.01}
        if e["within_1pt"] and e["within_1pt"]["fraction"] < 1.0:
            fracs.add(e["within_1pt"]["fraction"])
        for f in sorted(fracs, reverse=True):
            rec = {"model": e["model"], "criterion": e["criterion"], "fraction": f}
            try:
                model = trained[e["model"]]
                pm, _ = prune_copy(model, f, e["criterion"], data)
                masked = evaluate(pm, splits.x_test, splits.y_test)
                with torch.no_grad():
                    ref_pred = torch.cat([pm(splits.x_test[i:i + 2000]).argmax(1)
                                          for i in range(0, len(splits.y_test), 2000)])
                packed = pack(pm)  # returns a packed copy (pruned modules cannot be deep-copied)
                packed = packed if isinstance(packed, nn.Module) else pm
                packed_acc = evaluate(packed, splits.x_test.cpu(), splits.y_test.cpu())
                with torch.no_grad():
                    pred = torch.cat([packed(splits.x_test[i:i + 2000].cpu()).argmax(1)
                                      for i in range(0, len(splits.y_test), 2000)])
                stats = getattr(sparse, "packed_stats", None)
                st = stats(packed) if callable(stats) else {}
                # int8 (per-neuron weight scales, per-sample input scales): the accuracy change
                q = pack(pm, dtype=torch.int8)
                rec.update(int8_test_acc=evaluate(q, splits.x_test.cpu(), splits.y_test.cpu()),
                           int8_bytes=(stats(q) if callable(stats) else {}).get("bytes"))
                dense = sum(m.weight.numel() * 4 for m in hidden_layers(model))
                rec.update(masked_test_acc=masked, packed_test_acc=packed_acc, equal=bool(masked == packed_acc),
                           prediction_mismatches=int((pred != ref_pred.cpu()).sum()),
                           packed_layers=st.get("layers"), packed_bytes=st.get("bytes"),
                           dense_bytes=st.get("dense_float32_weight_bytes", dense))
            except Exception as ex:  # noqa: BLE001
                rec["error"] = f"{type(ex).__name__}: {ex}"
            out.append(rec)
            if log:
                log(f"packing {rec}")
    return {"available": True}, out


def _comparison_lines(summary):
    """Plain-language MAC vs MAM comparison (unpruned gap, best criterion at
    each budget)."""
    by = {}
    for e in summary:
        by.setdefault(e["model"], []).append(e)
    if "mac" not in by or "mam" not in by:
        return []
    mac0, mam0 = by["mac"][0]["unpruned_test"], by["mam"][0]["unpruned_test"]
    gap = 100 * (mam0 - mac0)
    lines = [f"- Unpruned test accuracy: MAC {100 * mac0:.2f}%, MAM {100 * mam0:.2f}% "
             f"(MAM {'+' if gap >= 0 else '−'}{abs(gap):.2f} points)."]
    for f in report.REPORT_AT:
        key = f"{f:g}"
        best = {}
        for m in ("mac", "mam"):
            cands = [(e["test_acc_at"][key], e["criterion"]) for e in by[m] if e["test_acc_at"].get(key) is not None]
            if cands:
                best[m] = max(cands)
        if len(best) == 2:
            d = 100 * (best["mam"][0] - best["mac"][0])
            lines.append(f"- At {100 * f:g}% remaining, best criterion: MAC {100 * best['mac'][0]:.2f}% "
                         f"({best['mac'][1]}), MAM {100 * best['mam'][0]:.2f}% ({best['mam'][1]}): "
                         f"MAM {'+' if d >= 0 else '−'}{abs(d):.2f} points.")
    for name in ("within_1pt", "within_3pt"):
        best = {}
        for m in ("mac", "mam"):
            cands = [(e[name]["fraction"], e["criterion"]) for e in by[m] if e[name]]
            if cands:
                best[m] = min(cands)
        if len(best) == 2:
            lines.append(f"- Smallest remaining fraction {name.replace('_', ' ').replace('pt', ' point(s)')} of "
                         f"the model's own unpruned accuracy: MAC {100 * best['mac'][0]:g}% ({best['mac'][1]}), "
                         f"MAM {100 * best['mam'][0]:g}% ({best['mam'][1]}).")
    return lines


def run(args) -> dict:
    """Run the experiment described by parsed ``args``; returns the results
    dict (also written to ``args.out``)."""
    t_start = time.perf_counter()
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    if args.quick:
        quick = QUICK_DIGITS if args.dataset == "digits" else QUICK
        for k in ("epochs", "transition_epochs", "score_samples", "iterative_min"):
            if getattr(args, k) == DEFAULTS[k]:  # flags given explicitly win
                setattr(args, k, quick[k])
        if args.train_subset is None:
            args.train_subset = quick["train_subset"]
    if args.transition_epochs > args.epochs:
        raise UsageError(f"--transition-epochs ({args.transition_epochs:g}) must not exceed --epochs "
                         f"({args.epochs}): the MAM model would never become pure MAM")
    if args.iterative and args.iterative_epochs is not None and args.transition_epochs > args.iterative_epochs:
        raise UsageError("--transition-epochs must not exceed --iterative-epochs")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = _resolve_device(args.device)
    quiet = args.quiet
    progress = (not quiet) and (args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty()))

    def log(msg):
        if not quiet:
            if progress:
                try:
                    from tqdm.auto import tqdm

                    tqdm.write(msg, file=sys.stderr)
                    return
                except ImportError:
                    pass
            print(msg, file=sys.stderr, flush=True)

    data_dir = args.data_dir
    if data_dir is None and args.dataset == "mnist":
        data_dir = "/usr/share/datasets/mnist"
    splits = load_dataset(args.dataset, data_dir)
    if args.train_subset is not None and args.train_subset < len(splits.y_train):
        g = torch.Generator().manual_seed(12345)
        idx = torch.randperm(len(splits.y_train), generator=g)[: args.train_subset]
        splits.x_train, splits.y_train = splits.x_train[idx], splits.y_train[idx]
    for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        setattr(splits, k, getattr(splits, k).to(device))
    fractions = sorted({1.0, *[p / 100 for p in args.fractions]}, reverse=True)
    log(f"data: {splits.describe()}; device {device}; {torch.get_num_threads()} threads")

    rows, histories, trained_last = [], {}, {}
    train_kwargs = dict(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size)
    for seed in args.seed:
        trained, inits = {}, {}
        need_mac = "mac" in args.models or ("mam" in args.models and args.mam_init == "mac")
        if need_mac:
            torch.manual_seed(seed)
            mac = build_mlp("mac", splits.in_features, splits.num_classes).to(device)
            inits["mac"] = copy.deepcopy(mac.state_dict())
            h = train_model(mac, splits.x_train, splits.y_train, splits.x_val, splits.y_val, seed=seed,
                            label="MAC", progress=progress, log=log, **train_kwargs)
            histories.setdefault("mac", []).append({"seed": seed, **h})
            trained["mac"] = mac
        if "mam" in args.models:
            if args.mam_init == "mac":
                mam = convert(copy.deepcopy(trained["mac"]), include=list(HIDDEN_NAMES))
            else:
                torch.manual_seed(seed)
                mam = build_mlp("mam", splits.in_features, splits.num_classes).to(device)
            inits["mam"] = copy.deepcopy(mam.state_dict())
            h = train_model(mam, splits.x_train, splits.y_train, splits.x_val, splits.y_val, seed=seed,
                            transition_epochs=args.transition_epochs, schedule=args.schedule, label="MAM",
                            progress=progress, log=log, **train_kwargs)
            histories.setdefault("mam", []).append({"seed": seed, **h})
            trained["mam"] = mam
        loader = score_loader(splits.x_train, splits.y_train, args.score_samples, seed=seed)
        for name in args.models:
            model = trained[name]
            if args.iterative:
                kw = dict(train_kwargs)
                kw["epochs"] = args.iterative_epochs or args.epochs
                if name == "mam":
                    kw.update(transition_epochs=min(args.transition_epochs, kw["epochs"]), schedule=args.schedule)
                fr = [f for f in fractions if f >= args.iterative_min / 100 - 1e-12]
                rows += lottery_sweep(model, inits[name], name, splits, fr, seed, kw, progress=progress, log=log)
            else:
                rows += one_shot_sweep(model, name, splits, args.criteria, fractions, loader, seed,
                                       progress=progress, log=log)
        trained_last = {k: v for k, v in trained.items() if k in args.models}

    summary = report.summarize(rows)
    timings = {}
    for name, hs in histories.items():
        if name not in args.models:
            continue
        timings[name] = {"epochs": args.epochs, "seconds_per_epoch": sum(h["seconds_per_epoch"] for h in hs) / len(hs),
                         "train_seconds": sum(h["train_seconds"] for h in hs) / len(hs)}
    packing_info, packing = ({"available": False, "reason": "not run with --iterative"}, [])
    if not args.iterative:
        loader = score_loader(splits.x_train, splits.y_train, args.score_samples, seed=args.seed[-1])
        packing_info, packing = _packing_checks(trained_last, summary, splits, loader, log)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter() - t_start
    command = "mamext experiment " + " ".join(sys.argv[1:] if getattr(args, "_argv", None) is None else args._argv)
    md = [f"# MAM vs MAC pruning on {splits.name}", "",
          f"Command: `{command.strip()}`  ", f"Machine: {cpu_name()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, device {device}  ",
          f"Recipe: MLP {splits.in_features}-512-256-{splits.num_classes}, Adam lr {args.lr:g}, batch "
          f"{args.batch_size}, {args.epochs} epochs, MAM hidden layers with a {args.transition_epochs:g}-epoch "
          f"{args.schedule} MAC-to-MAM transition, MAM init: {args.mam_init}; seeds {args.seed}; "
          f"{'lottery-ticket rounds' if args.iterative else 'one-shot pruning, no fine-tuning'}.  ",
          f"Wall time: {wall:.0f} s" + (f" (load average at start {load_start[0]:.1f}, at end "
                                          f"{os.getloadavg()[0]:.1f}, on {os.cpu_count()} CPUs)" if load_start else ""),
          "", report.summary_markdown(summary, timings, packing)]
    cmp_lines = _comparison_lines(summary)
    if cmp_lines:
        md += ["", *cmp_lines, ""]
    if not packing_info.get("available", False):
        md += ["", f"Packing: {packing_info['reason']}.", ""]
    summary_text = "\n".join(md)
    (out / "summary.md").write_text(summary_text)
    report.write_csv(out / "results.csv", rows)
    report.plot(out / "accuracy_vs_remaining.png", rows,
                title=f"{splits.name}: accuracy vs remaining interconnections "
                      f"({'lottery ticket' if args.iterative else 'one-shot, no fine-tuning'})")
    config = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    results = {"command": command.strip(), "config": config, "dataset": splits.describe(),
               "environment": {**_environment(device), "loadavg_at_start": load_start},
               "fractions": fractions, "timings": timings, "histories": histories, "summary": summary,
               "comparison": cmp_lines, "packing": {**packing_info, "checks": packing}, "rows": rows,
               "wall_seconds": wall}
    report.write_json(out / "results.json", results)
    print(summary_text)
    print(f"outputs in {out}/: results.json, results.csv, accuracy_vs_remaining.png, summary.md "
          f"({wall:.0f} s)")
    return results


def main(argv=None, prog="mamext experiment") -> int:
    parser = build_parser(prog)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args._argv = argv
    threads = torch.get_num_threads()
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
    finally:
        torch.set_num_threads(threads)  # --threads must not leak into a caller (e.g. a test session)
    return 0
