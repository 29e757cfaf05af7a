"""The calibration data of the data-driven scores: an iterable of batches."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


def model_device(model: nn.Module):
    """The device of the model's first parameter (None for a parameterless model)."""
    for p in model.parameters():
        return p.device
    return None


def to_device(obj, device):
    """``obj`` (a tensor, or a tuple/list of them) moved to ``device``."""
    if device is None:
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(o, device) for o in obj)
    return obj


def split_batch(batch, fn: str):
    """``(inputs, target)`` of a data loader batch; target is None if absent."""
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and len(batch) >= 1:
        return batch[0], (batch[1] if len(batch) >= 2 else None)
    raise TypeError(f"{fn}: each batch of data must be a tensor or an (inputs, target, ...) tuple/list, "
                    f"got {type(batch).__name__}")


def is_empty(inputs) -> bool:
    """Whether a batch's inputs hold no sample (a tensor with no element)."""
    return isinstance(inputs, torch.Tensor) and inputs.numel() == 0


def _known_length(data):
    try:
        return len(data)
    except TypeError:  # a generator, or a DataLoader over an IterableDataset
        return None


def check_data(data, fn: str, score: str) -> None:
    """Refuse missing, non-iterable and (where the length is known) empty data."""
    if data is None:
        raise ValueError(f"{fn}: the {score!r} score needs data (an iterable of batches, e.g. a DataLoader)")
    if isinstance(data, torch.Tensor) or not isinstance(data, Iterable):
        raise TypeError(f"{fn}: data must be an iterable of batches (e.g. a DataLoader or a list of "
                        f"(inputs, target) tuples), got {type(data).__name__}")
    if _known_length(data) == 0:
        raise ValueError(f"{fn}: data is empty; the {score!r} score needs at least one batch")


def no_batch_error(fn: str, score: str) -> ValueError:
    """The error for data that yielded no batch while scoring."""
    return ValueError(f"{fn}: data yielded no batch with a sample; the {score!r} score needs at least one")
