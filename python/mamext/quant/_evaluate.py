""":func:`evaluate`: test accuracy of the integer-only network next to its float original."""

from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from ._network import IntegerNetwork


def evaluate(float_model: nn.Module, integer_model: IntegerNetwork, data) -> Dict[str, float]:
    """Accuracies (in %) of both models on ``data`` (an iterable of ``(input, target)`` batches).

    Returns ``float_accuracy``, ``integer_accuracy``, their ``difference``
    (integer minus float, in points), ``agreement`` (% of samples where both
    predict the same class) and ``samples``. The integer prediction is the
    argmax of its int8 output codes. ``float_model``'s mode is restored.
    """
    if not isinstance(integer_model, IntegerNetwork):
        raise TypeError(f"mamext.quant.evaluate: integer_model must be an IntegerNetwork, got "
                        f"{type(integer_model).__name__}")
    modes = [(m, m.training) for m in float_model.modules()]
    right_float = right_int = agree = samples = 0
    try:
        float_model.eval()
        with torch.no_grad():
            for x, y in data:
                predicted_float = float_model(x).argmax(-1)
                predicted_int = integer_model.forward_int8(integer_model.quantize_input(x)).argmax(-1)
                right_float += int((predicted_float == y).sum())
                right_int += int((predicted_int == y).sum())
                agree += int((predicted_float == predicted_int).sum())
                samples += int(y.numel())
    finally:
        for module, mode in modes:
            module.training = mode
    if samples == 0:
        raise ValueError("mamext.quant.evaluate: data is empty")
    float_accuracy, integer_accuracy = 100.0 * right_float / samples, 100.0 * right_int / samples
    return {"float_accuracy": float_accuracy, "integer_accuracy": integer_accuracy,
            "difference": integer_accuracy - float_accuracy, "agreement": 100.0 * agree / samples,
            "samples": samples}
