"""Packed sparse inference layers for pruned MAM and Linear networks (convolutions: :mod:`mamext.sparse_conv`).

PyTorch's pruning only multiplies weights by a mask: the model is neither
smaller nor faster. :func:`pack` replaces every pruned layer by a packed
inference module that stores only the kept connections, per output neuron
(CSR): ``values`` (float32/float64, or int8 with a per-neuron scale),
``indices`` (the smallest integer type holding ``in_features - 1``: uint8,
int16 or int32) and ``offsets`` (int32, int64 past 2**31 - 1 connections).

Semantics (identical to the dense layer with zero weights):

* a MAM neuron with at least one pruned connection has the product 0 as a
  candidate for both its max and its min; a neuron whose connections are all
  pruned outputs its bias; packed ``nn.Linear`` layers compute the ordinary sum;
* float packing is exact: on finite inputs the output equals the dense
  ``MAMLinear`` bit for bit (up to the sign of a zero). Non-finite inputs also
  match the dense layer: an inf or NaN input on a *pruned* connection makes
  that neuron NaN (the dense layer computes ``inf * 0 = NaN``), on a kept
  connection it behaves as in the dense layer;
* int8 (``dtype=torch.int8``): each neuron's kept weights are quantised
  symmetrically with their own scale ``max|w| / 127`` (max and min commute
  with a positive scale); inputs are quantised symmetrically per tensor, the
  tensor being one sample's input vector (scale ``max|x| / 127``, round half
  to even), so a sample's output never depends on the rest of the batch and
  the C export (:mod:`mamext.export`, one sample per call) reproduces it bit
  for bit. Products and max/min (or sums) are exact int32; the output is
  ``float(acc) * (w_scale[n] * x_scale) + bias[n]`` in float32. A sample with
  a non-finite input gives NaN outputs.

Packed layers are inference only: asking for gradients raises an error.
Saving: ``torch.save(packed.state_dict(), path)`` and
``load_packed(build_model(), torch.load(path))`` is the safe way (default
``weights_only=True``); ``load_state_dict`` into a packed model resizes the
buffers but refuses an int8 checkpoint in a float model and the reverse.
``torch.save(packed)`` / ``torch.load(path, weights_only=False)`` work too;
with ``weights_only=True`` a whole pickled model loads when every class in it
is allowed (the packed layers are; ``torch.serialization.add_safe_globals``
for the others). int8 packing refuses weights with inf or NaN entries.
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn

from . import _C
from . import ops  # noqa: F401  (registers the operators)
from ._convert import _keep_off_fused_transformer_paths
from .nn.modules import MAMLinear

__all__ = ["pack", "compact", "load_packed", "PackedMAMLinear", "PackedLinear", "PackedLayer", "index_dtype",
           "effective_weight", "packed_stats", "PackedConvNd", "PackedMAMConv2d", "PackedMAMConv1d", "PackedConv2d",
           "PackedConv1d"]

_FLOAT_DTYPES = (torch.float32, torch.float64)
_INT8_SUM_MAX_TERMS = _C.build_info["int8_sum_max_terms"]  # int32 sums of int8 products stay exact


# The operator's fake kernel and wrapper: mamext/ops/packed_linear.py.
_packed_linear = torch.ops.mamext.packed_linear.default


# --------------------------------------------------------------------------- helpers

def index_dtype(in_features: int) -> torch.dtype:
    """The smallest integer dtype that holds every input index (0 .. in_features - 1)."""
    if in_features <= 256:
        return torch.uint8
    if in_features <= 32768:
        return torch.int16
    if in_features <= 2 ** 31:
        return torch.int32
    raise ValueError(f"in_features={in_features} is too large for int32 indices")


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight a (possibly pruned) Linear/MAMLinear computes with: ``weight_orig * weight_mask``
    for :mod:`torch.nn.utils.prune` masks, otherwise ``module.weight`` (parametrizations applied)."""
    if hasattr(module, "weight_orig") and hasattr(module, "weight_mask"):
        return (module.weight_orig * module.weight_mask).detach()
    return module.weight.detach()


def _is_packable(module: nn.Module) -> bool:
    return isinstance(module, MAMLinear) or type(module) is nn.Linear


def _csr(weight: torch.Tensor):
    """CSR of the non-zero entries of weight (N, K): (values, indices, offsets)."""
    N, K = weight.shape
    keep = weight != 0
    counts = keep.sum(1)
    nnz = int(counts.sum())
    off_dtype = torch.int32 if nnz <= 2 ** 31 - 1 else torch.int64
    offsets = torch.zeros(N + 1, dtype=torch.int64)
    offsets[1:] = counts.cumsum(0)
    indices = keep.nonzero()[:, 1].to(index_dtype(K))  # row-major order: sorted within each row
    values = weight[keep]
    return values, indices, offsets.to(off_dtype)


def _quantize_rows(values: torch.Tensor, offsets: torch.Tensor, N: int):
    """Symmetric per-neuron int8 quantisation of the kept weights: (int8 values, float32 scale)."""
    v = values.to(torch.float64)
    rows = torch.repeat_interleave(torch.arange(N), (offsets[1:] - offsets[:-1]).to(torch.int64))
    amax = torch.zeros(N, dtype=torch.float64)
    if v.numel():
        amax = amax.scatter_reduce(0, rows, v.abs(), reduce="amax", include_self=True)
    scale = (amax / 127.0).to(torch.float32)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(v / scale.to(torch.float64)[rows]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def _packed_buffers(weight: torch.Tensor, bias: Optional[torch.Tensor], dtype: torch.dtype, mam: bool,
                    where: str):
    """``(values, indices, offsets, bias, weight_scale)`` of a dense (N, K) weight packed as ``dtype``
    (zero entries are pruned connections); ``where`` starts the error messages."""
    if dtype not in (*_FLOAT_DTYPES, torch.int8):
        raise TypeError(f"mamext.sparse: dtype must be torch.float32, torch.float64 or torch.int8, got {dtype}")
    N = weight.shape[0]
    weight = weight.detach().cpu()
    if dtype != torch.int8:
        values, indices, offsets = _csr(weight.to(dtype))
        return values, indices, offsets, None if bias is None else bias.detach().cpu().to(dtype), None
    finite = torch.isfinite(weight)
    if not bool(finite.all()):
        n, k = (~finite).nonzero()[0].tolist()
        raise ValueError(f"{where}: weight has {int((~finite).sum())} non-finite entries (first: "
                         f"weight[{n}, {k}] = {float(weight[n, k])}); int8 packing cannot represent "
                         f"inf or NaN: fix the weights or pack this layer as float32")
    values, indices, offsets = _csr(weight.to(torch.float64))
    longest = int((offsets[1:] - offsets[:-1]).max()) if N else 0
    if not mam and longest > _INT8_SUM_MAX_TERMS:
        raise ValueError(f"{where}: an int8 sum of {longest} kept connections per "
                         f"neuron can overflow int32 (at most {_INT8_SUM_MAX_TERMS}); pack this layer "
                         "in float32")
    values, scale = _quantize_rows(values, offsets, N)
    return values, indices, offsets, None if bias is None else bias.detach().cpu().to(torch.float32), scale


# --------------------------------------------------------------------------- modules

class PackedLayer(nn.Module):
    """Base class of the packed inference layers (see the module docstring).

    Buffers: ``values`` (nnz), ``indices`` (nnz), ``offsets`` (out_features + 1),
    ``bias`` (out_features, or None), ``weight_scale`` (out_features, int8 only).
    """

    mam: bool = True

    def __init__(self, in_features: int, out_features: int, values: torch.Tensor, indices: torch.Tensor,
                 offsets: torch.Tensor, bias: Optional[torch.Tensor] = None,
                 weight_scale: Optional[torch.Tensor] = None):
        super().__init__()
        if values.dtype not in (*_FLOAT_DTYPES, torch.int8):
            raise TypeError(f"{type(self).__name__}: values must be float32, float64 or int8, got {values.dtype}")
        if values.dtype == torch.int8 and weight_scale is None:
            raise ValueError(f"{type(self).__name__}: int8 values need a weight_scale")
        if offsets.numel() != out_features + 1:
            raise ValueError(f"{type(self).__name__}: offsets must have out_features + 1 = {out_features + 1} "
                             f"entries, got {offsets.numel()}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.register_buffer("values", values.contiguous())
        self.register_buffer("indices", indices.contiguous())
        self.register_buffer("offsets", offsets.contiguous())
        self.register_buffer("bias", None if bias is None else bias.contiguous())
        self.register_buffer("weight_scale", None if weight_scale is None else weight_scale.contiguous())

    # -- construction
    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                    dtype: torch.dtype = torch.float32, *, name: Optional[str] = None) -> "PackedLayer":
        """Pack a dense weight (N, K): zero entries are pruned connections.

        int8 packing refuses weights with inf or NaN entries (a per-neuron
        scale cannot represent them); float packing keeps them exactly.
        ``name`` (the layer's name in its model) is used in error messages.
        """
        where = f"{cls.__name__}.from_weight" + (f" (layer '{name}')" if name else "")
        if weight.dim() != 2:
            raise ValueError(f"{where}: weight must be 2-D, got shape {tuple(weight.shape)}")
        N, K = weight.shape
        return cls(K, N, *_packed_buffers(weight, bias, dtype, cls.mam, where))

    @classmethod
    def from_module(cls, module: nn.Module, dtype: torch.dtype = torch.float32, *,
                    name: Optional[str] = None) -> "PackedLayer":
        return cls.from_weight(effective_weight(module), module.bias, dtype, name=name)

    @classmethod
    def empty(cls, in_features: int, out_features: int, dtype: torch.dtype, bias: bool) -> "PackedLayer":
        """A layer with no kept connection, to load a ``state_dict`` into (buffers resize on load)."""
        float_dtype = torch.float32 if dtype == torch.int8 else dtype
        return cls(in_features, out_features, torch.empty(0, dtype=dtype),
                   torch.empty(0, dtype=index_dtype(max(in_features, 1))),
                   torch.zeros(out_features + 1, dtype=torch.int32),
                   torch.zeros(out_features, dtype=float_dtype) if bias else None,
                   torch.ones(out_features) if dtype == torch.int8 else None)

    def repacked(self, dtype: torch.dtype, *, name: Optional[str] = None) -> "PackedLayer":
        """The same layer packed as ``dtype`` (from the dense weight; not from int8)."""
        return type(self).from_weight(self.to_dense_weight(), self.bias, dtype, name=name)

    def to_dense_weight(self) -> torch.Tensor:
        """The dense (N, K) weight (dequantised for int8)."""
        N, K = self.out_features, self.in_features
        rows = torch.repeat_interleave(torch.arange(N), (self.offsets[1:] - self.offsets[:-1]).to(torch.int64))
        vals = self.values.to(torch.float32) if self.is_int8 else self.values
        if self.is_int8:
            vals = vals * self.weight_scale[rows]
        w = torch.zeros(N, K, dtype=vals.dtype)
        w[rows, self.indices.to(torch.int64)] = vals
        return w

    # -- properties
    @property
    def is_int8(self) -> bool:
        return self.values.dtype == torch.int8

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def kept(self) -> int:
        return int(self.values.numel())

    @property
    def total(self) -> int:
        return self.in_features * self.out_features

    @property
    def weight_nbytes(self) -> int:
        """Bytes of the packed weights: values + indices + offsets (+ int8 scales)."""
        n = sum(t.numel() * t.element_size() for t in (self.values, self.indices, self.offsets))
        if self.weight_scale is not None:
            n += self.weight_scale.numel() * self.weight_scale.element_size()
        return n

    @property
    def nbytes(self) -> int:
        """All buffer bytes (weights and bias)."""
        b = 0 if self.bias is None else self.bias.numel() * self.bias.element_size()
        return self.weight_nbytes + b

    # -- forward
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        # Lean on purpose (a packed layer at high sparsity runs in tens of us):
        # buffers straight from _buffers, the op overload resolved once.
        if input.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(f"mamext.sparse: {type(self).__name__} is inference only (no gradients); "
                               "run it under torch.no_grad()/torch.inference_mode() or train the dense "
                               "model and pack it afterwards")
        if input.dim() < 1 or input.shape[-1] != self.in_features:
            raise ValueError(f"{type(self).__name__}: expected input of shape (*, {self.in_features}), "
                             f"got {tuple(input.shape)}")
        b = self._buffers
        return _packed_linear(input, b["values"], b["indices"], b["offsets"], b["bias"], b["weight_scale"],
                              self.in_features, self.mam)

    # -- state dict: accept buffers of another size (another pruning of the same layer)
    def _checkpoint_problem(self, state_dict, prefix) -> Optional[str]:
        """Why the packed buffers under ``prefix`` cannot be this layer's, or None."""
        values, offsets, indices = (state_dict.get(prefix + n) for n in ("values", "offsets", "indices"))
        if isinstance(values, torch.Tensor) and (values.dtype == torch.int8) != self.is_int8:
            return (f"is packed as {self.dtype} but {prefix}values in the checkpoint is {values.dtype}; pack the "
                    f"model with the checkpoint's dtype (mamext.sparse.pack(model, {values.dtype})) or rebuild "
                    f"it with mamext.sparse.load_packed")
        if isinstance(offsets, torch.Tensor) and offsets.numel() != self.out_features + 1:
            return (f"has out_features={self.out_features} but {prefix}offsets in the checkpoint has "
                    f"{offsets.numel()} entries (a layer with {offsets.numel() - 1} outputs)")
        if isinstance(indices, torch.Tensor) and indices.numel() and int(indices.max()) >= self.in_features:
            return (f"has in_features={self.in_features} but {prefix}indices in the checkpoint reach "
                    f"{int(indices.max())}")
        return None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        problem = self._checkpoint_problem(state_dict, prefix)
        if problem is not None:
            error_msgs.append(f"{type(self).__name__} '{prefix[:-1] or '<model>'}' {problem}")
            return
        for name in ("values", "indices", "offsets", "bias", "weight_scale"):
            key = prefix + name
            if key in state_dict:
                t = state_dict[key]
                cur = getattr(self, name)
                if cur is None or cur.shape != t.shape or cur.dtype != t.dtype:
                    # keep the module where it is (CPU or CUDA)
                    device = self.values.device if self.values is not None else torch.device("cpu")
                    self._buffers[name] = torch.empty_like(t, device=device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self._storage_repr()}"

    def _storage_repr(self) -> str:
        """Bias, dtype, kept connections and bytes, for ``extra_repr``."""
        frac = 100.0 * self.kept / max(self.total, 1)
        dense = self.total * 4
        return (f"bias={self.bias is not None}, dtype={str(self.dtype).replace('torch.', '')}, "
                f"kept={self.kept}/{self.total} ({frac:.2f}%), "
                f"bytes={self.nbytes} (weights {self.weight_nbytes}, dense float32 weights {dense})")


class PackedMAMLinear(PackedLayer):
    """Packed inference version of a pruned :class:`mamext.nn.MAMLinear`."""

    mam = True


class PackedLinear(PackedLayer):
    """Packed inference version of a pruned ``nn.Linear`` (ordinary sums)."""

    mam = False


# Their state is tensors, ints and the containers nn.Module keeps: safe for torch.load(weights_only=True).
torch.serialization.add_safe_globals([PackedMAMLinear, PackedLinear])


# --------------------------------------------------------------------------- pack

def _is_pruned(module: nn.Module) -> bool:
    return bool((effective_weight(module) == 0).any())


def _pack_one(module: nn.Module, dtype: torch.dtype, pack_dense: bool, name: str,
              convolutions: bool = False) -> Optional[nn.Module]:
    """The packed replacement of ``module``, or None to keep it; convolutions only with ``convolutions``."""
    if isinstance(module, PackedLayer):
        if module.dtype == dtype:
            return None
        if module.is_int8:
            raise ValueError(f"mamext.sparse.pack: layer '{name}' is already packed as int8 and cannot be "
                             f"repacked as {dtype}; pack the float model instead")
        return module.repacked(dtype, name=name)
    if not (_is_packable(module) or (convolutions and is_packable_conv(module))):
        return None
    if not pack_dense and not _is_pruned(module):
        return None
    if isinstance(module, (MAMLinear, *MAM_CONV_KINDS)) and bool(module.beta.item() != 0):
        raise ValueError(f"mamext.sparse.pack: {type(module).__name__} '{name}' still blends in the MAC layer "
                         f"(beta={float(module.beta):g}); finish the transition (beta=0) before packing")
    if is_packable_conv(module):
        return packed_conv_class(module).from_module(module, dtype, name=name)
    if isinstance(module, MAMLinear):
        return PackedMAMLinear.from_module(module, dtype, name=name)
    return PackedLinear.from_module(module, dtype, name=name)


def pack(model: nn.Module, dtype: torch.dtype = torch.float32, *, pack_dense: Optional[bool] = None,
         calibration=None, layers=None) -> nn.Module:
    """Return a copy of ``model`` whose pruned ``MAMLinear`` and ``nn.Linear`` layers are packed.

    A layer is pruned when its effective weight (``weight_orig * weight_mask``
    for :mod:`torch.nn.utils.prune` masks, else ``weight``) has a zero. Other
    modules are kept as they are (deep copies). ``model`` itself may be a single
    layer (a convolution too). The copy is on the CPU and in eval mode.
    Convolutions (``MAMConv2d``/``MAMConv1d`` to ``PackedMAMConv2d``/``PackedMAMConv1d``,
    ``nn.Conv2d``/``nn.Conv1d`` to ``PackedConv2d``/``PackedConv1d``) are packed
    only when named in ``layers``, as :mod:`mamext.prune` prunes them.

    Args:
        model: the (pruned) network.
        dtype: ``torch.float32`` (default), ``torch.float64`` or ``torch.int8``.
        pack_dense: also pack layers without any zero weight. Default: False for
            float (the dense kernel is faster there), True for int8 (every layer
            quantised, as in the C export).
        calibration: with ``dtype=torch.int8``, an iterable of input batches (or
            of (input, target) pairs): the whole inference becomes integer-only
            with static activation scales (:func:`mamext.quant.pack_integer`,
            docs/quantization.md). Without it, int8 layers quantise each
            sample's input at run time and scale the output in float.
        layers: None (default): every ``MAMLinear`` / ``nn.Linear`` (and
            already packed layer). Otherwise the only layers to pack, as a list
            of qualified names or modules (``pruned = prune_model(model, 0.9,
            layers=names)`` then ``pack(model, layers=names)``); it may name
            convolutions. ``pack_dense`` applies to the chosen layers.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"mamext.sparse.pack: model must be an nn.Module, got {type(model).__name__}")
    if calibration is not None:
        if dtype != torch.int8:
            raise ValueError(f"mamext.sparse.pack: calibration= needs dtype=torch.int8, got {dtype}")
        if pack_dense is not None:
            raise ValueError("mamext.sparse.pack: pack_dense= does not apply to the integer-only path "
                             "(calibration=): every layer is packed")
        if layers is not None:
            raise ValueError("mamext.sparse.pack: layers= does not apply to the integer-only path "
                             "(calibration=): every linear layer is packed")
        from .quant import pack_integer

        return pack_integer(model, calibration)
    if dtype not in (*_FLOAT_DTYPES, torch.int8):
        raise TypeError(f"mamext.sparse.pack: dtype must be torch.float32, torch.float64 or torch.int8, got {dtype}")
    if pack_dense is None:
        pack_dense = dtype == torch.int8
    chosen = None if layers is None else {id(m) for m in _chosen_layers(model, layers).values()}

    def replacement(name: str, module: nn.Module) -> Optional[nn.Module]:
        if chosen is not None and id(module) not in chosen:
            return None
        # a convolution is packed when named, or when it is the model itself
        convolutions = chosen is not None or not name
        return _pack_one(module, dtype, pack_dense, name or "<model>", convolutions)

    with torch.no_grad():
        return _copy_replacing(model, replacement)


def _chosen_layers(model: nn.Module, layers) -> dict:
    """The layers named in ``pack(layers=...)``, by qualified name, each checked to be packable."""
    from .prune.layers import CONV_KINDS, resolve_layers

    chosen = resolve_layers(model, layers, "mamext.sparse.pack", kinds=(nn.Linear, MAMLinear, PackedLayer),
                            explicit_kinds=CONV_KINDS)
    for name, module in chosen.items():
        if not (_is_packable(module) or is_packable_conv(module) or isinstance(module, PackedLayer)):
            raise ValueError(f"mamext.sparse.pack: layer '{name}' is a {type(module).__name__}, a subclass that may "
                             "compute otherwise; pack cannot pack it (MAMLinear, nn.Linear, MAMConv2d, MAMConv1d, "
                             "nn.Conv2d and nn.Conv1d only)")
    return chosen


def _copy_replacing(model: nn.Module, replacement) -> nn.Module:
    """A CPU, eval-mode copy of ``model`` in which every module for which ``replacement(name, module)``
    returns a module is replaced by it (``name`` is "" for ``model`` itself)."""
    top = replacement("", model)
    if top is not None:
        return top.eval()
    # Build the replacements on the original, then deep-copy with them
    # pre-seeded in the memo: the replaced modules themselves are never
    # copied (a pruned layer's `weight` attribute is a non-leaf tensor, which
    # deepcopy refuses), and shared modules stay shared.
    memo = {}
    for name, module in model.named_modules():
        if name and id(module) not in memo:
            new = replacement(name, module)
            if new is not None:
                memo[id(module)] = new
    for module in model.modules():
        if id(module) in memo:
            continue
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    out = copy.deepcopy(model, memo).cpu()
    _keep_off_fused_transformer_paths(out)  # the fused path reads linear1.weight, which packed layers lack
    return out.eval()


def load_packed(model: nn.Module, state_dict: dict) -> nn.Module:
    """Rebuild a packed model from its ``state_dict`` and the unpacked architecture.

    The safe way to store a packed model: ``torch.save(packed.state_dict(), path)``,
    then ``load_packed(build_model(), torch.load(path))`` (the default
    ``weights_only=True`` loading). ``model`` is the dense (or pruned) model the
    packed one was made from, with any weights; every ``MAMLinear`` /
    ``nn.Linear`` (or convolution) whose entries in ``state_dict`` are packed buffers
    (``<name>.values``) becomes a packed layer of the checkpoint's dtype. The
    state is then loaded strictly. Returns a CPU, eval-mode copy; ``model`` is
    left unchanged. (Whole packed models saved with ``torch.save(packed)`` load
    with ``weights_only=True`` only when every class in them is allowed:
    the packed linear and convolution classes are registered with
    ``torch.serialization.add_safe_globals``, the others are up to the user.)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"mamext.sparse.load_packed: model must be an nn.Module, got {type(model).__name__}")

    def empty_packed(name: str, module: nn.Module) -> Optional[nn.Module]:
        prefix = f"{name}." if name else ""
        values = state_dict.get(prefix + "values")
        if not isinstance(values, torch.Tensor):
            return None
        if is_packable_conv(module) or isinstance(module, PackedConvNd):
            return packed_conv_class(module).empty_like(module, values.dtype, prefix + "bias" in state_dict)
        if not (_is_packable(module) or isinstance(module, PackedLayer)):
            return None
        mam = module.mam if isinstance(module, PackedLayer) else isinstance(module, MAMLinear)
        cls = PackedMAMLinear if mam else PackedLinear
        return cls.empty(module.in_features, module.out_features, values.dtype, prefix + "bias" in state_dict)

    with torch.no_grad():
        out = _copy_replacing(model, empty_packed)
    out.load_state_dict(state_dict)
    return out


def compact(model: nn.Module):
    """The smaller equivalent of a pruned ``model`` and what was removed:
    :func:`mamext.compact.compact` (returns ``(model, report)``)."""
    from .compact import compact as _compact

    return _compact(model)


def packed_stats(model: nn.Module) -> dict:
    """Kept/total connections and bytes over all packed layers of ``model``."""
    layers = [m for m in model.modules() if isinstance(m, PackedLayer)]
    return {
        "layers": len(layers),
        "kept": sum(m.kept for m in layers),
        "total": sum(m.total for m in layers),
        "bytes": sum(m.nbytes for m in layers),
        "weight_bytes": sum(m.weight_nbytes for m in layers),
        "dense_float32_weight_bytes": sum(m.total * 4 for m in layers),
    }


# The packed convolutions build on PackedLayer (defined above), hence imported last.
from .sparse_conv import (MAM_CONV_KINDS, PackedConv1d, PackedConv2d, PackedConvNd, PackedMAMConv1d,  # noqa: E402
                          PackedMAMConv2d, is_packable_conv, packed_conv_class)
