"""Summary table, CSV/JSON outputs and the accuracy-vs-remaining plot."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

__all__ = ["aggregate", "summarize", "summary_markdown", "comparison_lines", "write_csv", "write_json", "plot",
           "CSV_FIELDS", "REPORT_AT"]

CSV_FIELDS = ["model", "criterion", "fraction", "seed", "kept", "total", "actual_fraction", "val_acc", "test_acc",
              "round", "seconds"]

#: Fixed budgets shown in the table (remaining fractions).
REPORT_AT = (0.1, 0.01, 0.001)


def aggregate(rows):
    """Mean val/test accuracy over seeds: {(model, criterion): [(fraction, val, test, n)] sorted by
    decreasing fraction}."""
    acc = defaultdict(lambda: defaultdict(list))
    for r in rows:
        acc[(r["model"], r["criterion"])][r["fraction"]].append((r["val_acc"], r["test_acc"]))
    out = {}
    for key, by_f in acc.items():
        pts = []
        for f in sorted(by_f, reverse=True):
            v = by_f[f]
            pts.append((f, sum(a for a, _ in v) / len(v), sum(b for _, b in v) / len(v), len(v)))
        out[key] = pts
    return out


def _smallest_within(points, ref_val, drop):
    """Walking down from 100 %, the last fraction whose validation accuracy
    stays within ``drop`` of the unpruned one (all larger fractions too)."""
    best = None
    for f, val, test, _ in points:
        if val >= ref_val - drop - 1e-12:
            best = (f, val, test)
        else:
            break
    return best


def summarize(rows):
    """One entry per (model, criterion). Operating points are chosen on the
    validation split and reported with their test accuracy."""
    agg = aggregate(rows)
    out = []
    for (model, crit), pts in agg.items():
        full = [p for p in pts if p[0] >= 1.0]
        if not full:
            continue
        _, ref_val, ref_test, n = full[0]
        entry = {"model": model, "criterion": crit, "seeds": n, "unpruned_val": ref_val, "unpruned_test": ref_test}
        for name, drop in (("within_1pt", 0.01), ("within_3pt", 0.03)):
            b = _smallest_within(pts, ref_val, drop)
            entry[name] = None if b is None else {"fraction": b[0], "val_acc": b[1], "test_acc": b[2]}
        by_f = {p[0]: p for p in pts}
        entry["test_acc_at"] = {f"{f:g}": (by_f[f][2] if f in by_f else None) for f in REPORT_AT}
        out.append(entry)
    order = {"mac": 0, "mam": 1}
    out.sort(key=lambda e: (order.get(e["model"], 9), e["model"], e["criterion"]))
    return out


def _signed_points(d):
    return f"{'+' if d >= 0 else '−'}{abs(d):.2f} points"


def _best_at_budgets(by):
    """One line per fixed budget (:data:`REPORT_AT`): the best criterion of
    MAC and of MAM there."""
    lines = []
    for f in REPORT_AT:
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
                         f"MAM {_signed_points(d)}.")
    return lines


def _smallest_operating_points(by):
    """One line per operating point (within 1 and 3 points): the smallest
    remaining fraction of MAC and of MAM over all criteria."""
    lines = []
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


def comparison_lines(summary):
    """Plain-language MAC vs MAM comparison (unpruned gap, best criterion at
    each budget, smallest operating points); empty unless both models ran."""
    by = {}
    for e in summary:
        by.setdefault(e["model"], []).append(e)
    if "mac" not in by or "mam" not in by:
        return []
    mac0, mam0 = by["mac"][0]["unpruned_test"], by["mam"][0]["unpruned_test"]
    lines = [f"- Unpruned test accuracy: MAC {100 * mac0:.2f}%, MAM {100 * mam0:.2f}% "
             f"(MAM {_signed_points(100 * (mam0 - mac0))})."]
    return lines + _best_at_budgets(by) + _smallest_operating_points(by)


def _pct(f):
    if f is None:
        return "–"
    return f"{100 * f:g}%"


def _acc(a):
    return "–" if a is None or (isinstance(a, float) and math.isnan(a)) else f"{100 * a:.2f}"


def summary_markdown(summary, timings=None, packing=None):
    lines = [
        "| model | criterion | unpruned test acc | smallest remaining within 1 pt (test acc) "
        "| smallest remaining within 3 pt (test acc) | test acc @ 10% | @ 1% | @ 0.1% |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for e in summary:
        w1, w3 = e["within_1pt"], e["within_3pt"]
        cell = lambda w: "–" if w is None else f"{_pct(w['fraction'])} ({_acc(w['test_acc'])})"  # noqa: E731
        at = e["test_acc_at"]
        lines.append(f"| {e['model'].upper()} | {e['criterion']} | {_acc(e['unpruned_test'])} | {cell(w1)} | "
                     f"{cell(w3)} | {_acc(at['0.1'])} | {_acc(at['0.01'])} | {_acc(at['0.001'])} |")
    lines.append("")
    lines.append("Accuracies in %. Operating points (\"within N pt\": walking down from 100 %, the last "
                 "remaining fraction whose validation accuracy stays within N points of the unpruned "
                 "validation accuracy) are chosen on the validation half of the test set and reported "
                 "with their test-half accuracy.")
    if timings:
        lines += ["", "| model | epochs | training s/epoch | training total s |", "|---|---:|---:|---:|"]
        for name, t in timings.items():
            lines.append(f"| {name.upper()} | {t['epochs']} | {t['seconds_per_epoch']:.2f} | {t['train_seconds']:.1f} |")
    if packing:
        lines += ["", "| model | criterion | remaining | masked test acc | packed test acc | equal | packed bytes "
                  "| int8 packed test acc | int8 change (pt) | int8 packed bytes | dense float32 bytes |",
                  "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
        for p in packing:
            if "error" in p:
                lines.append(f"| {p['model'].upper()} | {p['criterion']} | {_pct(p.get('fraction'))} | "
                             f"packing failed: {p['error']} | | | | | | | |")
            else:
                lines.append(f"| {p['model'].upper()} | {p['criterion']} | {_pct(p['fraction'])} | "
                             f"{_acc(p['masked_test_acc'])} | {_acc(p['packed_test_acc'])} | {p['equal']} | "
                             f"{p.get('packed_bytes', '–')} | {_acc(p.get('int8_test_acc'))} | {_delta(p)} | "
                             f"{p.get('int8_bytes', '–')} | {p.get('dense_bytes', '–')} |")
    return "\n".join(lines) + "\n"


def _delta(p):
    """int8 packed minus float packed test accuracy, in points."""
    a, b = p.get("int8_test_acc"), p.get("packed_test_acc")
    return "–" if a is None or b is None else f"{100 * (a - b):+.2f}"


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in CSV_FIELDS})


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=False, default=str)
        f.write("\n")


def _criterion_colors(rows):
    """One colour per criterion, in the order the criteria first appear in
    ``rows`` (so MAC and MAM curves of a criterion share it)."""
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    order = list(dict.fromkeys(r["criterion"] for r in rows))
    return {c: palette[i % len(palette)] for i, c in enumerate(order)}


def plot(path, rows, title="", split="val"):
    """Accuracy vs remaining fraction, log x axis from 100 % down; MAC dashed,
    MAM solid, one colour per criterion. Draws on its own figure, leaving
    matplotlib's backend and pyplot state as they were."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    agg = aggregate(rows)
    colors = _criterion_colors(rows)
    fig = Figure(figsize=(8, 5), dpi=120)
    ax = fig.subplots()
    idx = 1 if split == "val" else 2
    for (model, crit), pts in sorted(agg.items()):
        xs = [100 * p[0] for p in pts]
        ys = [100 * p[idx] for p in pts]
        ax.plot(xs, ys, linestyle="-" if model.startswith("mam") else "--",
                marker="o" if model.startswith("mam") else "s", markersize=3.5,
                color=colors[crit], label=f"{model.upper()} {crit}")
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
    ax.set_xlabel("remaining interconnections in the hidden layers (log scale)")
    ax.set_ylabel(f"{'validation' if split == 'val' else 'test'} accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title or "Accuracy vs remaining interconnections (one-shot pruning, no fine-tuning)", fontsize=10)
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)
