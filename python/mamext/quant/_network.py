"""The integer-only network: int8 codes in, int8 codes out, with the float interface around it."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ._conv import IntAvgPool2d, IntConv2d, IntMaxPool2d
from ._layers import IntClamp, IntLinear
from ._observer import dequantize, quantize


class IntegerNetwork(nn.Module):
    """A network whose whole inference is integer (see :mod:`mamext.quant`).

    ``layers`` runs on int8 codes (:class:`IntLinear`, :class:`IntClamp`,
    ``nn.Flatten``, and for CNNs ``nn.Unflatten``, :class:`IntConv2d`, :class:`IntMaxPool2d`,
    :class:`IntAvgPool2d`). The float interface quantises the input with the static
    ``input_scale``/``input_zero_point`` and dequantises the int8 output with
    ``output_scale``/``output_zero_point``:

    * ``forward(x)``: float input (or int8 codes), float output;
    * ``forward_int8(q)``: int8 codes in, int8 codes out (the C export's
      ``<name>_infer_int8``, bit for bit).
    """

    def __init__(self, layers: Sequence[nn.Module], *, input_scale: float, input_zero_point: int,
                 output_scale: float, output_zero_point: int):
        super().__init__()
        for layer in layers:
            if not isinstance(layer, (IntLinear, IntClamp, nn.Flatten, nn.Unflatten, IntConv2d, IntMaxPool2d,
                                      IntAvgPool2d)):
                raise TypeError(f"IntegerNetwork: unsupported layer {type(layer).__name__}; expected IntLinear, "
                                "IntConv2d, IntMaxPool2d, IntAvgPool2d, IntClamp, nn.Flatten or nn.Unflatten")
        self.layers = nn.Sequential(*layers)
        self.input_scale, self.input_zero_point = float(input_scale), int(input_zero_point)
        self.output_scale, self.output_zero_point = float(output_scale), int(output_zero_point)

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """int8 codes of a float input: ``clamp(round(x / input_scale) + input_zero_point, -128, 127)``."""
        if not torch.is_tensor(x) or not x.is_floating_point():
            raise TypeError(f"IntegerNetwork.quantize_input: expected a float tensor, got "
                            f"{x.dtype if torch.is_tensor(x) else type(x).__name__}")
        if bool(torch.isnan(x).any()):
            raise ValueError("IntegerNetwork.quantize_input: the input holds NaN, which has no int8 code")
        return quantize(x.cpu(), self.input_scale, self.input_zero_point)

    def dequantize_output(self, codes: torch.Tensor) -> torch.Tensor:
        """float32 ``(q - output_zero_point) * output_scale``."""
        return dequantize(codes, self.output_scale, self.output_zero_point)

    def forward_int8(self, codes: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(codes) or codes.dtype != torch.int8:
            raise TypeError(f"IntegerNetwork.forward_int8: expected an int8 tensor of codes, got "
                            f"{codes.dtype if torch.is_tensor(codes) else type(codes).__name__}")
        return self.layers(codes.cpu())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes = x if torch.is_tensor(x) and x.dtype == torch.int8 else self.quantize_input(x)
        return self.dequantize_output(self.forward_int8(codes))

    def extra_repr(self) -> str:
        return (f"input_scale={self.input_scale:.6g}, input_zero_point={self.input_zero_point}, "
                f"output_scale={self.output_scale:.6g}, output_zero_point={self.output_zero_point}")
