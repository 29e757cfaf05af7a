"""The experiment's MLP: ``in -> 512 -> 256 -> classes`` with ReLU after each
hidden layer, all MAC (``nn.Linear``) or with MAM hidden layers (``MAMLinear``)
and a MAC output layer, as in the MAM authors' Fashion-MNIST example."""

from __future__ import annotations

import operator
from collections import OrderedDict

from torch import nn

from ..nn import MAMLinear

__all__ = ["build_mlp", "hidden_layers", "HIDDEN_NAMES", "MODEL_KINDS"]

MODEL_KINDS = ("mac", "mam")


def _names(n_hidden):
    return [f"fc{i + 1}" for i in range(n_hidden)]


HIDDEN_NAMES = tuple(_names(2))


def build_mlp(kind: str, in_features: int, num_classes: int, hidden=(512, 256)) -> nn.Sequential:
    """``kind="mac"``: every layer ``nn.Linear``; ``kind="mam"``: hidden layers
    ``MAMLinear`` (``beta = 0``), output ``nn.Linear``. Layers are named
    ``fc1``, ``fc2``, ... and ``out``."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {kind!r}")
    sizes = {"in_features": in_features, "num_classes": num_classes,
             **{f"hidden[{i}]": h for i, h in enumerate(hidden)}}
    for name, v in sizes.items():
        try:
            positive = not isinstance(v, bool) and operator.index(v) > 0
        except TypeError:
            positive = False
        if not positive:
            raise ValueError(f"build_mlp: {name} must be a positive integer, got {v!r}")
    hidden_cls = MAMLinear if kind == "mam" else nn.Linear
    layers, width = OrderedDict(), in_features
    for i, (name, h) in enumerate(zip(_names(len(hidden)), hidden)):
        layers[name] = hidden_cls(width, h)
        layers[f"relu{i + 1}"] = nn.ReLU()
        width = h
    layers["out"] = nn.Linear(width, num_classes)
    return nn.Sequential(layers)


def hidden_layers(model: nn.Module):
    """The hidden (prunable) layers, in order: those named by the model's
    ``pruned_layer_names`` (the CNN and ViT set it), else every ``fcN``
    child (the MLP)."""
    return [model.get_submodule(name) for name in hidden_names(model)]


def hidden_names(model: nn.Module):
    names = getattr(model, "pruned_layer_names", None)
    if names is not None:
        return list(names)
    return [name for name, _ in model.named_children() if name.startswith("fc")]
