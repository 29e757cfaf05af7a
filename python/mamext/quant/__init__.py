"""Integer-only int8 inference for MAM and MAC networks (TensorFlow Lite Micro / CMSIS-NN conventions).

:func:`pack_integer` calibrates a float network and returns an
:class:`IntegerNetwork` whose whole inference is integer arithmetic; its
PyTorch forward is the reference the C export (:func:`mamext.export.to_c`,
entry point ``<name>_infer_int8``) reproduces bit for bit. docs/quantization.md
explains the scheme; in short:

* **Weights**: int8, symmetric, one scale per output neuron,
  ``s_w[n] = max|W[n, :]| / 127``, codes ``round(w / s_w[n])`` (half to even)
  in [-127, 127]. A weight whose code is 0 is stored like a pruned one.
* **Activations**: int8, asymmetric, one static ``(scale, zero_point)`` per
  activation (the input and each linear layer's output after its ReLU), from
  the min/max seen on the calibration data, the range widened to contain 0:
  ``x = scale * (q - zero_point)``. Asymmetric, because a ReLU output
  (``x >= 0``) then uses all 256 codes instead of 128; the zero point costs
  one subtraction per product.
* **Products**: ``p = w_q * (x_q - x_zp)`` in int32 (at most 127 * 255 in
  magnitude). Subtracting the zero point first makes the real product 0 the
  integer 0, so a pruned connection's zero candidate stays 0.
* **MAM**: ``acc = max p + min p + bias_q`` in int32, with the candidate 0
  for a pruned neuron (``mam_semantics.h``); MAC: ``acc = sum p + bias_q``.
  ``bias_q = round(b / (s_w[n] * s_x))`` in int32. The real output is
  ``s_w[n] * s_x * acc``: max and min commute with the positive factor
  ``s_w[n] * s_x``, which is per output neuron and applied after them.
* **Requantisation**: ``y = clamp(((acc * m[n] + 2**(r[n]-1)) >> r[n]) + y_zp, low, high)``
  with ``m[n] * 2**-r[n] ~= s_w[n] * s_x / s_y`` (Q31 multiplier, 64-bit
  product, one rounding right shift); ``low = y_zp`` is a fused ReLU, else -128;
  ``high = 127``.

CNNs: a convolution is this layer on every patch (zero padding is the input
zero point, a product 0), with its weight stored dense; a batch norm right
after a layer is folded into its float weight and bias before quantisation
(for MAM layers too, whatever the sign of gamma: see ``_batchnorm.py``);
max and average pooling work on the codes at the input's scale.

The float interface quantises the input with the static input scale and
dequantises the int8 output; ``argmax`` of the int8 output equals ``argmax``
of the dequantised one.
"""

from ._conv import IntAvgPool2d, IntConv2d, IntMaxPool2d
from ._evaluate import evaluate
from ._fixed_point import quantize_multiplier, requantize
from ._layers import IntClamp, IntLinear
from ._network import IntegerNetwork
from ._pack import pack_integer

__all__ = ["pack_integer", "evaluate", "IntegerNetwork", "IntLinear", "IntClamp", "IntConv2d", "IntMaxPool2d",
           "IntAvgPool2d", "quantize_multiplier", "requantize"]
