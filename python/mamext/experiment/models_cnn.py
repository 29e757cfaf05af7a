"""The experiment's small VGG-style CNN: two 3x3 convolution blocks (ReLU,
2x2 max-pooling) and a classifier of fully-connected layers
``flatten -> 256 -> 128 -> classes``. For ``kind="mam"`` the classifier's
hidden layers are MAM (``MAMLinear``), the convolutions MAC, as in the MAM
paper's VGG-16; ``mam_conv=True`` makes the convolutions MAM
(``MAMConv2d``) too and prunes them with the classifier."""

from __future__ import annotations

import operator
from collections import OrderedDict

from torch import nn

from .._convert import convert
from .models import MODEL_KINDS

__all__ = ["build_cnn", "CNN_CHANNELS", "CNN_HIDDEN"]

CNN_CHANNELS = (16, 32)
CNN_HIDDEN = (256, 128)


def _check_image_shape(image_shape, blocks):
    """``(height, width)``, each a positive integer divisible by ``2**blocks``."""
    try:
        h, w = (operator.index(v) for v in image_shape)
    except (TypeError, ValueError):
        raise ValueError(f"build_cnn: image_shape must be (height, width), got {image_shape!r}") from None
    step = 2 ** blocks
    if h < step or w < step:
        raise ValueError(f"build_cnn: images of {h}x{w} are too small for {blocks} 2x2 poolings")
    return h, w


def build_cnn(kind: str, image_shape, num_classes: int, mam_conv: bool = False, channels=CNN_CHANNELS,
              hidden=CNN_HIDDEN) -> nn.Sequential:
    """The CNN for flattened ``image_shape`` single-channel images. Layers:
    ``unflatten, conv1, crelu1, pool1, conv2, ..., flatten, fc1, relu1, fc2,
    relu2, out``. The model carries ``mam_layer_names`` (the layers that are
    MAM in the MAM model) and ``pruned_layer_names`` (the layers the sweep
    prunes: the classifier's hidden layers, and the convolutions with
    ``mam_conv``), the same for both kinds so that MAC and MAM are pruned
    alike. The MAM model is the MAC one converted with :func:`mamext.convert`
    (same initial weights for the same random state)."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"build_cnn: model kind must be one of {MODEL_KINDS}, got {kind!r}")
    h, w = _check_image_shape(image_shape, len(channels))
    layers, c_in = OrderedDict(unflatten=nn.Unflatten(1, (1, h, w))), 1
    for i, c in enumerate(channels, start=1):
        layers[f"conv{i}"] = nn.Conv2d(c_in, c, 3, padding=1)
        layers[f"crelu{i}"] = nn.ReLU()
        layers[f"pool{i}"] = nn.MaxPool2d(2)
        c_in, h, w = c, h // 2, w // 2
    layers["flatten"] = nn.Flatten()
    width = c_in * h * w
    for i, units in enumerate(hidden, start=1):
        layers[f"fc{i}"] = nn.Linear(width, units)
        layers[f"relu{i}"] = nn.ReLU()
        width = units
    layers["out"] = nn.Linear(width, num_classes)
    model = nn.Sequential(layers)
    fc_names = [f"fc{i}" for i in range(1, len(hidden) + 1)]
    conv_names = [f"conv{i}" for i in range(1, len(channels) + 1)] if mam_conv else []
    model.mam_layer_names = tuple(conv_names + fc_names)
    model.pruned_layer_names = model.mam_layer_names
    if kind == "mam":
        convert(model, include=list(model.mam_layer_names), types=(nn.Linear, nn.Conv2d))
    return model
