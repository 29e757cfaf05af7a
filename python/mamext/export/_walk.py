"""Model walk: the supported modules of a model, in execution order, with their lowering kind."""

from __future__ import annotations

from typing import List, Optional, Tuple

from torch import nn

from ..nn.conv import MAMConv1d, MAMConv2d
from ..nn.modules import MAMLinear
from ..sparse import PackedLayer
from ..sparse_conv import PackedConvNd

_WHERE = "mamext.export.to_c"
_SUPPORTED = ("nn.Sequential, MAMLinear, nn.Linear, PackedMAMLinear, PackedLinear, MAMConv2d, nn.Conv2d, "
              "MAMConv1d, nn.Conv1d (and their packed versions), nn.MaxPool2d, nn.AvgPool2d, nn.BatchNorm1d, "
              "nn.BatchNorm2d, nn.ReLU, nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout")


def _kind(module: nn.Module) -> Optional[str]:
    """The lowering kind of a supported module; a subclass counts only if it keeps its base's forward."""
    if isinstance(module, PackedConvNd):   # a PackedLayer with its own forward
        return "conv" if type(module).forward is PackedConvNd.forward else None
    bases = ((nn.Identity, "noop"), (nn.Dropout, "noop"), (nn.Flatten, "flatten"), (nn.Unflatten, "unflatten"),
             (nn.ReLU, "relu"), (MAMLinear, "linear"), (PackedLayer, "linear"), (nn.Linear, "linear"),
             (MAMConv2d, "conv"), (MAMConv1d, "conv"), (nn.Conv2d, "conv"), (nn.Conv1d, "conv"),
             (nn.MaxPool2d, "maxpool"), (nn.AvgPool2d, "avgpool"), (nn.BatchNorm1d, "batchnorm"),
             (nn.BatchNorm2d, "batchnorm"))
    for base, kind in bases:
        if isinstance(module, base):
            return kind if type(module).forward is base.forward else None
    return None


def walk(module: nn.Module, prefix: str = "") -> List[Tuple[str, nn.Module, str]]:
    """(qualified name, module, kind) of every layer, nested ``nn.Sequential`` unrolled in order."""
    if type(module) is nn.Sequential:
        out = []
        for name, child in module.named_children():
            out += walk(child, f"{prefix}.{name}" if prefix else name)
        return out
    name = prefix or "<model>"
    kind = _kind(module)
    if kind is None:
        raise ValueError(f"{_WHERE}: unsupported module '{name}' ({type(module).__name__}); "
                         f"supported: {_SUPPORTED} (subclasses only if they keep the base class's forward)")
    return [(name, module, kind)]
