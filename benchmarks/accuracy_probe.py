"""Why does a MAM model train below its MAC twin? Per-epoch measurements.

Trains the MAC and the MAM model of ``mamext experiment --arch ...`` with the
experiment's own training loop and, after every epoch, prints for each MAM
layer:

* ``win/n``: distinct inputs that won the max or the min of a neuron over the
  probe images (mean over neurons; ``SelectionCounter``), a direct measure
  of how many connections a neuron uses, hence of how prunable it is;
* ``flip``: fraction of (image, neuron) pairs whose argmax or argmin changed
  since the previous epoch (how unsettled the selections still are);
* ``dead``: fraction of neurons whose output is <= 0 on every probe image
  (dead after the ReLU; for the ViT's GELU the same test, i.e. always in the
  near-zero part);
* ``|g|``: mean gradient norm of the layer's weight per step in the epoch;
* ``mac/mam``: RMS of the layer's MAC term (``x W^T + b``) over the RMS of
  its MAM term (max + min + b) on the probe images: how much larger the MAC
  path's output is, hence how small beta must get before MAM dominates;

plus the train and validation accuracy (under- or over-fitting) and beta.
Around the end of the MAC-to-MAM transition it also prints the mean
gradient norms over the 50 steps before and after beta reaches 0.

Example (the MLP, 20,000 images, the default recipe otherwise)::

    PYTHONPATH=python python benchmarks/accuracy_probe.py --arch mlp --train-subset 20000
"""

from __future__ import annotations

import argparse
import copy
import sys

import torch
from torch import nn

from mamext.experiment import options
from mamext.experiment.architectures import build_model
from mamext.experiment.cli import load_splits
from mamext.experiment.train import train_model, evaluate
from mamext.nn._blend import BetaBlended
from mamext.nn.modules import MAMLinear
from mamext.ops import mam_linear
from mamext.prune import SelectionCounter


def _mam_layers(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, BetaBlended)}


class _GradMeter:
    """Per-step gradient norm of each layer's weight."""

    def __init__(self, layers):
        self.steps = {n: [] for n in layers}
        self.handles = [m.weight.register_hook(self._hook(n)) for n, m in layers.items()]

    def _hook(self, name):
        def hook(grad):
            self.steps[name].append(float(grad.norm()))
        return hook

    def close(self):
        for h in self.handles:
            h.remove()


def _winners(layer, x):
    """(argmax, argmin) of a MAMLinear for the rows of ``x``."""
    x = x.reshape(-1, layer.in_features)
    _, amax, amin = mam_linear(x, layer.weight, layer.bias, return_indices=True)
    return amax, amin


def _layer_inputs(model, layers, x):
    """Each MAM layer's input and pure-MAM output on ``x`` (eval mode)."""
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, a, out, n=n: seen.__setitem__(n, a[0].detach()))
             for n, m in layers.items()]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return seen


class _Probe:
    """The epoch callback: measures the MAM layers on fixed probe images."""

    def __init__(self, model, x_probe, grads):
        self.layers = _mam_layers(model)
        self.x, self.grads, self.prev, self.done = x_probe, grads, {}, {n: 0 for n in self.layers}

    def __call__(self, epoch, model):
        inputs = _layer_inputs(model, self.layers, self.x)
        rec = {}
        with SelectionCounter(model, list(self.layers)) as counter, torch.no_grad():
            model.eval()
            model(self.x)
            model.train()
        for n, layer in self.layers.items():
            distinct = (counter.counts[n].reshape(counter.counts[n].shape[0], -1) > 0).sum(1).float()
            flips = float("nan")
            if isinstance(layer, MAMLinear):
                amax, amin = _winners(layer, inputs[n])
                if n in self.prev:
                    pmax, pmin = self.prev[n]
                    flips = float(((amax != pmax) | (amin != pmin)).float().mean())
                self.prev[n] = (amax, amin)
                with torch.no_grad():
                    out = mam_linear(inputs[n].reshape(-1, layer.in_features), layer.weight, layer.bias)
                    out = out.reshape(-1, inputs[n].shape[-2] if inputs[n].dim() > 2 else 1, layer.out_features)
                    dead = float((out <= 0).flatten(0, 1).all(0).float().mean())
                    mac = nn.functional.linear(inputs[n], layer.weight, layer.bias)
                    ratio = float(mac.pow(2).mean().sqrt() / out.pow(2).mean().sqrt())
            else:
                dead = ratio = float("nan")
            g = self.grads.steps[n][self.done[n]:]
            self.done[n] = len(self.grads.steps[n])
            rec[n] = {"distinct_winners": float(distinct.mean()), "flip": flips, "dead": dead,
                      "grad_norm": sum(g) / max(1, len(g)), "mac_over_mam": ratio}
        return {"probe": rec}


def _train(kind, model, splits, args, x_probe):
    layers = _mam_layers(model) if kind == "mam" else {
        n: m for n, m in model.named_modules() if n in getattr(model, "pruned_layer_names", ("fc1", "fc2"))}
    grads = _GradMeter(layers)
    probe = _Probe(model, x_probe, grads) if kind == "mam" else None
    hist = train_model(model, splits.x_train, splits.y_train, splits.x_val, splits.y_val, epochs=args.epochs,
                       lr=args.lr, seed=args.seed, transition_epochs=args.transition_epochs if kind == "mam" else 0,
                       schedule=args.schedule, lr_schedule=args.lr_schedule, lr_hold_epochs=args.transition_epochs,
                       weight_decay=args.weight_decay,
                       label=kind.upper(), epoch_callback=probe)
    grads.close()
    return hist, grads


def _report(kind, hist, grads, test_acc):
    print(f"\n{kind.upper()}: epoch  beta   train  val    | per MAM layer: win/n  flip  dead  |g|  mac/mam")
    for r in hist["epochs"]:
        line = f"  {r['epoch']:3d}  {r['beta'] if r['beta'] is not None else 1:.3f}  {100 * r['train_acc']:5.2f}" \
               f"  {100 * r['val_acc']:5.2f} |"
        for n, p in r.get("probe", {}).items():
            line += (f" {n}: {p['distinct_winners']:6.1f} {p['flip']:.3f} {p['dead']:.2f} {p['grad_norm']:.3f} "
                     f"{p['mac_over_mam']:.2f} |")
        print(line)
    last = hist["epochs"][-1]
    print(f"  final train acc {100 * last['train_acc']:.2f}, val {100 * last['val_acc']:.2f}, "
          f"test {100 * test_acc:.2f}  (train - val: {100 * (last['train_acc'] - last['val_acc']):+.2f})")
    t = hist["transition_steps"]
    if kind == "mam" and t:
        for n, s in grads.steps.items():
            before, after = s[max(0, t - 50):t], s[t:t + 50]
            if before and after:
                print(f"  {n}: mean |grad| 50 steps before beta=0 {sum(before) / len(before):.4f}, "
                      f"after {sum(after) / len(after):.4f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", choices=["mlp", "cnn", "vit"], default="mlp")
    p.add_argument("--train-subset", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--transition-epochs", type=float, default=None)
    p.add_argument("--schedule", default="linear")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-schedule", default="constant")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--mam-init", choices=["scratch", "mac"], default="scratch")
    p.add_argument("--models", default="mac,mam")
    p.add_argument("--probe-samples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    recipe = options.ARCH_DEFAULTS[args.arch]
    args.epochs = args.epochs or recipe["epochs"]
    args.transition_epochs = recipe["transition_epochs"] if args.transition_epochs is None else args.transition_epochs
    opts = options.resolve_options(options.build_parser().parse_args(
        ["--arch", args.arch, "--train-subset", str(args.train_subset)]))
    splits = load_splits(opts, torch.device("cpu"))
    x_probe = splits.x_train[:args.probe_samples]
    kinds = args.models.split(",")
    trained = {}
    for kind in kinds:
        torch.manual_seed(args.seed)
        if kind == "mam" and args.mam_init == "mac":
            from mamext import convert
            mac = trained["mac"]
            model = convert(copy.deepcopy(mac), include=list(getattr(mac, "mam_layer_names", ("fc1", "fc2"))),
                            types=(nn.Linear, nn.Conv2d))
        else:
            model = build_model(opts, kind, splits)
        hist, grads = _train(kind, model, splits, args, x_probe)
        trained[kind] = model
        _report(kind, hist, grads, evaluate(model, splits.x_test, splits.y_test))
    return 0


if __name__ == "__main__":
    sys.exit(main())
