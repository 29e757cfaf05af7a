"""Export a (pruned, packed) MAM network to self-contained C99 for microcontrollers.

:func:`to_c` writes to ``out_dir``:

* ``<name>.h``: sizes and ``void <name>_infer(const float *input, float *output);``
* ``<name>.c``: the network: ``static const`` arrays (flash), at most two
  static activation buffers (RAM), no dynamic memory, nothing beyond the C
  standard library headers (``stdint.h``, ``float.h``, ``math.h`` for ``NAN``;
  no libm function is called);
* ``<name>_main.c``: a harness reading whitespace separated input samples
  from stdin and printing one line of outputs per sample;
* the runtime the network includes: ``mam_runtime.h`` and
  ``mam_runtime_csr.h`` (the layer kernels, header only, ``static inline``)
  and ``mam_semantics.h``, the MAM reduction rules the PyTorch kernels are
  compiled from. Compile with ``gcc -std=c99 -O2 <name>.c <name>_main.c``.

Supported modules: ``nn.Sequential`` (nested), ``MAMLinear`` and ``nn.Linear``
(dense, pruned or packed), ``MAMConv2d`` and ``nn.Conv2d`` (pruned ones from
their masks or zeros, or float-packed as ``PackedMAMConv2d``/``PackedConv2d``;
zero padding), ``MAMConv1d`` and ``nn.Conv1d`` (likewise; run as height-1 2-d
convolutions on ``(C, L)`` activations), ``nn.MaxPool2d``, ``nn.AvgPool2d``,
``nn.BatchNorm1d``/``BatchNorm2d`` (running statistics; folded into a MAC
layer before them, otherwise a per-channel affine step), ``nn.ReLU``,
``nn.Flatten``, ``nn.Unflatten`` (of the per-sample dimensions: both only
change the activation's shape), ``nn.Identity``, ``nn.Dropout`` (a no-op in
inference).
Anything else raises a ``ValueError`` naming the module. Networks with
convolutions, pooling or batch-norm steps also get ``mam_runtime_conv.h`` and
``mam_runtime_window.h`` (integer networks: ``mam_runtime_conv_int.h``).

Pruned layers are packed (CSR; convolutions where that takes fewer bytes) and
unpruned ones stay dense for ``dtype=torch.float32``; ``dtype=torch.int8``
packs and quantises every layer exactly like ``mamext.sparse.pack(model,
torch.int8)`` (linear layers and pooling only: convolutions and batch norms
take float32 or the integer-only path), and the C output equals that PyTorch
model's output bit for bit (one sample per call, per-sample input scale,
integer products, the same final float scaling).
Weights, biases and scales must be finite; every array must fit int32_t
indexing.

A :class:`mamext.quant.IntegerNetwork` (from :func:`mamext.quant.pack_integer`)
exports integer-only C instead: ``void <name>_infer_int8(const int8_t *input,
int8_t *output)``, the input and output scales and zero points as macros in
``<name>.h``, the runtime ``mam_runtime_int.h`` (no floating point anywhere),
bit for bit equal to the network's ``forward_int8`` (docs/quantization.md).

Bit-exactness of the float paths needs IEEE single precision without excess precision
(``FLT_EVAL_METHOD == 0``: any x86-64 or ARM hard-float target) and no
contraction of ``a * b + c`` into an FMA: compile with ``-std=c99`` (GCC then
does not contract) or pass ``-ffp-contract=off``; never ``-ffast-math``.
"""

from ._result import ExportResult
from ._to_c import to_c

__all__ = ["to_c", "ExportResult"]
