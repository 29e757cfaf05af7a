"""The architectures of ``mamext experiment --arch``: building each model
kind and describing the recipe in the summary."""

from __future__ import annotations

from torch import nn

from .models import HIDDEN_NAMES, build_mlp
from .models_cnn import CNN_CHANNELS, CNN_HIDDEN, build_cnn
from .models_vit import build_vit

__all__ = ["ARCHS", "build_model", "mam_layer_names", "describe"]

ARCHS = ("mlp", "cnn", "vit")

_VIT_MAM_TEXT = {"linear1": "linear1", "mlp": "linear1 and linear2"}


def build_model(opts, kind: str, splits) -> nn.Module:
    """The ``kind`` ("mac" or "mam") model of ``opts.arch`` for ``splits``."""
    arch = getattr(opts, "arch", "mlp")
    if arch == "mlp":
        return build_mlp(kind, splits.in_features, splits.num_classes)
    if arch == "cnn":
        return build_cnn(kind, splits.image_shape, splits.num_classes, mam_conv=bool(opts.mam_conv))
    if arch == "vit":
        return build_vit(kind, splits.image_shape, splits.num_classes, mam=getattr(opts, "vit_mam", None) or "linear1")
    raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}")


def mam_layer_names(model: nn.Module):
    """The names of the layers that are MAM in the MAM model of ``model``'s
    architecture (for ``--mam-init mac``)."""
    return list(getattr(model, "mam_layer_names", HIDDEN_NAMES))


def describe(opts, splits) -> str:
    """The architecture part of the summary's recipe line."""
    arch = getattr(opts, "arch", "mlp")
    if arch == "mlp":
        return f"MLP {splits.in_features}-512-256-{splits.num_classes}"
    if arch == "cnn":
        convs = " + ".join(f"conv3x3({c})+ReLU+maxpool" for c in CNN_CHANNELS)
        mam = "convolutions and classifier hidden layers" if opts.mam_conv else "classifier hidden layers"
        return (f"CNN {convs}, classifier {'-'.join(map(str, CNN_HIDDEN))}-{splits.num_classes}; MAM model: "
                f"{mam} MAM, pruned alike in both models; {len(splits.y_train)} training images")
    h, w = splits.image_shape
    return (f"ViT on {h}x{w} images (16 patches + class token, dim 64, 2 pre-norm encoder blocks, 4 heads, "
            f"MLP 128); MAM model: each block's MLP {_VIT_MAM_TEXT[getattr(opts, 'vit_mam', None) or 'linear1']} MAM; "
            f"those layers pruned in both models; "
            f"{len(splits.y_train)} training images")
