"""Compaction: remove the neurons and connections of a pruned network that cannot influence its output.

:func:`compact` returns a smaller network computing the same outputs and a
:class:`CompactionReport` of what it removed. It works on

* a float network (``nn.Sequential``, nested allowed, of ``MAMLinear`` /
  ``nn.Linear`` and ``MAMConv2d`` / ``MAMConv1d`` / ``nn.Conv2d`` /
  ``nn.Conv1d`` (dense, pruned with masks or zeros, or float-packed),
  ``nn.ReLU``, ``nn.Flatten``, ``nn.Unflatten``, ``nn.Identity``, ``nn.Dropout``,
  max and average pooling, ``nn.BatchNorm1d``/``2d``): the result is a copy (same
  names and nesting) whose layers have smaller dense weights (pruned
  connections as zeros, ready for :func:`mamext.sparse.pack` or export);
* a :class:`mamext.quant.IntegerNetwork`: the result is a smaller integer
  network whose ``forward_int8`` equals the original's bit for bit.

Two linear layers are *adjacent* when only ReLU, Identity or Dropout (integer:
ReLU clamps) sit between them. A convolution's output channels are its
neurons: two convolutions with ``groups=1`` are adjacent when only those
modules, pooling and batch normalisation (channel-wise) sit between them,
each channel of ``A`` being a kernel's worth of ``B``'s columns; a convolution
(``groups=1``) and a linear layer are adjacent with one ``nn.Flatten()`` after
those, each channel being ``B.in_features / A.out_channels`` columns (a
batched network). Grouped convolutions and anything else separate layers; a
batch normalisation between adjacent layers loses the removed channels'
entries. In each adjacent pair (``A`` then ``B``):

* a neuron of ``A`` that no kept connection of ``B`` reads is removed (its row
  in ``A``, its column in ``B``);
* a *dead* neuron of ``A`` (no kept connection: its output is the constant
  ``c``, the activation of its bias) is removed when its constant products in
  ``B`` can be accounted for exactly: for an integer MAC ``B`` always (the
  integer constant ``w_q * (c_q - zero_point)`` is added to ``B``'s int32 bias:
  integer addition is exact); for an integer MAM ``B`` when every product is 0
  (it is then the zero candidate ``B``'s neuron keeps, since ``candidate_width``
  stays the width the layer was pruned at); for a float ``B`` when ``c == 0``
  (folding a non-zero ``c * w`` into a float bias changes the rounding, so such
  a neuron is kept as it is). After a convolution ``c`` goes through the
  modules in between: a ReLU and max pooling map it exactly, average pooling
  keeps only 0, batch normalisation with running statistics is evaluated in
  float64 and only a result whose sign is certain counts (a negative one
  becomes exactly 0 in a ReLU).

For a float MAM ``B`` a removed column is one zero product fewer for each of
``B``'s neurons: a column (a channel's columns) is only removed while every
neuron of ``B`` keeps another zero weight (its zero candidate). Removal
repeats until nothing changes. The network's inputs and outputs are never removed: the first
layer's unread inputs are only counted (packed layers skip them anyway). Every
layer keeps at least one neuron, even one that nothing reads, so that the
result always exports to C (which has no empty layers).

Exactness: the integer network is bit for bit identical. The float network is
identical on finite inputs up to the sign of a zero output (removing a ``+-0``
product or term can flip the sign of a zero result); an inf or NaN input on a
removed connection no longer produces NaN. A smaller ``nn.Conv2d``/``nn.Conv1d``
may sum in another order than the original (PyTorch picks the convolution
algorithm by shape): equal to within float rounding; MAM layers stay exact.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
from torch import nn

from .nn.conv import MAMConv1d, MAMConv2d
from .nn.modules import MAMLinear
from .quant import IntClamp, IntegerNetwork, IntLinear
from .quant._fixed_point import INT32_MAX, requantize
from .sparse import (PackedConv1d, PackedConv2d, PackedLayer, PackedMAMConv1d, PackedMAMConv2d, effective_weight,
                     is_packable_conv)
from .sparse_conv import MAM_CONV_KINDS

__all__ = ["compact", "CompactionReport"]

_WHERE = "mamext.compact.compact"


@dataclass
class CompactionReport:
    """What :func:`compact` removed, per layer (by its position among the linear layers and convolutions;
    a convolution's neurons are its output channels)."""

    layer_names: List[str]
    neurons_before: List[int]
    neurons_after: List[int]
    kept_before: List[int]
    kept_after: List[int]
    removed_neurons: List[List[int]]                     # original indices, per layer
    dead_neurons_kept: List[List[int]] = field(default_factory=list)  # dead, kept for exactness
    folded_constants: int = 0                             # int32 constants added to a MAC bias
    unread_inputs: int = 0                                # inputs of the first layer nobody reads

    @property
    def neurons_removed(self) -> int:
        return sum(len(r) for r in self.removed_neurons)

    def __str__(self) -> str:
        lines = [f"compaction: removed {self.neurons_removed} neurons, "
                 f"{sum(self.kept_before) - sum(self.kept_after)} connections; "
                 f"{self.unread_inputs} network inputs are read by no kept connection"]
        for i, name in enumerate(self.layer_names):
            lines.append(f"  {name}: neurons {self.neurons_before[i]} -> {self.neurons_after[i]}, kept "
                         f"{self.kept_before[i]} -> {self.kept_after[i]}"
                         + (f", dead neurons kept: {len(self.dead_neurons_kept[i])}"
                            if self.dead_neurons_kept[i] else ""))
        if self.folded_constants:
            lines.append(f"  {self.folded_constants} constant products folded into MAC biases")
        return "\n".join(lines)


# --------------------------------------------------------------------------- the layers as matrices

@dataclass(eq=False)
class _Layer:
    """One linear layer as compaction sees it: a dense weight (0: not kept) and per-neuron data."""

    name: str
    weight: torch.Tensor                  # (N, K): float weights, or int64 codes
    bias: Optional[torch.Tensor]          # (N,) float, or int64 (integer layers)
    mam: bool
    module: nn.Module                     # the layer it came from
    adjacent_next: bool = False           # only element-wise layers until the next linear layer
    relu_after: bool = False              # float: a ReLU among those layers
    between: list = field(default_factory=list)   # float: (module, kind) up to the next layer
    clamp_after: Optional[int] = None     # integer: a standalone ReLU clamp among those layers
    rows: torch.Tensor = None             # original indices of the neurons still present
    next_width: Optional[int] = None      # the next layer's in_width when adjacent
    in_width: int = 1                     # columns per neuron of the previous layer (a channel's patch or map)
    per_row: dict = field(default_factory=dict)   # other per-neuron tensors (integer requantisation)

    def __post_init__(self):
        self.rows = torch.arange(self.weight.shape[0])

    def dead(self) -> torch.Tensor:
        return ~(self.weight != 0).any(1)

    def read_units(self) -> torch.Tensor:
        """(N, units): which neuron of this layer reads which neuron (unit of ``in_width`` columns) before it."""
        return (self.weight != 0).reshape(self.weight.shape[0], -1, self.in_width).any(2)

    def remove_units(self, drop: torch.Tensor) -> None:
        """Remove the columns of the dropped neurons of the previous layer."""
        N = self.weight.shape[0]
        self.weight = self.weight.reshape(N, -1, self.in_width)[:, ~drop].reshape(N, -1)

    def remove_rows(self, drop: torch.Tensor) -> None:
        keep = ~drop
        self.weight, self.rows = self.weight[keep], self.rows[keep]
        self.bias = None if self.bias is None else self.bias[keep]
        self.per_row = {key: value[keep] for key, value in self.per_row.items()}


# --------------------------------------------------------------------------- the removal rules

def _removable_float(a: _Layer, b: _Layer):
    """Neurons of float layer ``a`` whose columns in ``b`` hold only products that are exactly 0."""
    unread = ~b.read_units().any(0)
    drop = unread | (a.dead() & (_dead_outputs(a) == 0))
    if b.mam:
        drop = _keep_zero_candidates(b.weight, drop, b.in_width)
    return drop, None


def _dead_outputs(a: _Layer) -> torch.Tensor:
    """What the next layer reads from each neuron of float layer ``a`` if the neuron is dead (its output
    is then its bias), through the modules between them: float64, NaN where it is not known exactly."""
    value = torch.zeros(a.weight.shape[0], dtype=torch.float64) if a.bias is None else a.bias.to(torch.float64)
    for module, kind in a.between:
        if kind == "relu":
            value = value.clamp(min=0)
        elif kind == "pool" and not isinstance(module, _MAX_POOLS):  # an average of equal values may round
            value = torch.where(value == 0, value, torch.nan)
        elif kind == "norm":
            value = _normalised(module, value, a.rows)
    return value


def _normalised(norm: nn.Module, value: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Batch normalisation (running statistics) of a constant per channel, in float64; NaN where the
    result is too close to 0 for its float32 sign to be certain (only its sign decides, through a ReLU)."""
    if not norm.track_running_stats or norm.running_mean is None:
        return torch.full_like(value, torch.nan)
    scale = (norm.running_var.to(torch.float64)[rows] + norm.eps).rsqrt()
    if norm.affine:
        scale = scale * norm.weight.detach().to(torch.float64)[rows]
    shift = norm.bias.detach().to(torch.float64)[rows] if norm.affine else torch.zeros_like(value)
    centred = value - norm.running_mean.to(torch.float64)[rows]
    out = centred * scale + shift
    margin = 1e-4 * ((centred * scale).abs() + shift.abs())
    return torch.where(out.abs() > margin, out, torch.nan)


def _keep_zero_candidates(weight: torch.Tensor, drop: torch.Tensor, width: int = 1) -> torch.Tensor:
    """Un-drop units (``width`` columns each) until every row of a float MAM layer keeps a zero weight
    among the kept columns.

    Every dropped unit contributes zero products to every row, so keeping
    any one of them restores the zero candidate of every row lacking one.
    """
    drop = drop.clone()
    units = weight.reshape(weight.shape[0], -1, width)
    while bool(drop.any()) and bool((~(units[:, ~drop] == 0).flatten(1).any(1)).any()):
        drop[int(drop.nonzero()[0])] = False
    return drop


def _removable_int(a: _Layer, b: _Layer):
    """Neurons of integer layer ``a`` to remove, and (MAC ``b``) the constant products (N_b, N_a) of each."""
    unread = ~(b.weight != 0).any(0)
    code = _dead_codes(a)
    if a.clamp_after is not None:
        code = code.clamp(min=a.clamp_after)
    products = b.weight * (code - b.module.input_zero_point)[None, :]          # (N_b, N_a)
    dead = a.dead()
    if b.mam:
        return unread | (dead & ~(products != 0).any(0)), None
    return unread | dead, products


def _dead_codes(layer: _Layer) -> torch.Tensor:
    """The int8 output code of each neuron when all its products are 0: its requantised bias."""
    module = layer.module
    y = requantize(layer.bias, layer.per_row["multiplier"], layer.per_row["right_shift"])
    return (y + module.output_zero_point).clamp(module.low, module.high)


def _fold(b: _Layer, constants: Optional[torch.Tensor]) -> int:
    """Add the removed constant products (N_b, N_a) to an integer MAC layer's bias; how many were non-zero."""
    if constants is None:
        return 0
    b.bias = b.bias + constants.sum(1)
    if bool((b.bias.abs() > INT32_MAX).any()):   # cannot happen for a network built by pack_integer
        raise ValueError(f"{_WHERE}: folding constants into '{b.name}' overflows its int32 bias")
    return int((constants != 0).sum())


def _compact_layers(layers: List[_Layer], rule) -> Tuple[List[List[int]], int]:
    """Apply ``rule`` to every adjacent pair until nothing changes: removed original indices, folds."""
    removed: List[List[int]] = [[] for _ in layers]
    folds, changed = 0, True
    while changed:
        changed = False
        for position, (a, b) in enumerate(zip(layers, layers[1:])):
            if not a.adjacent_next:
                continue
            drop, constants = rule(a, b)
            if bool(drop.all()):      # keep one neuron: C has no empty layers
                drop[0] = False
            if bool(drop.any()):
                folds += _fold(b, None if constants is None else constants * drop[None, :])
                removed[position] += a.rows[drop].tolist()
                a.remove_rows(drop)
                b.remove_units(drop)
                changed = True
    return [sorted(r) for r in removed], folds


# --------------------------------------------------------------------------- float networks

_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
_POOLS = (*_MAX_POOLS, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
_SUPPORTED = ("nn.Sequential, MAMLinear, nn.Linear, MAMConv2d, MAMConv1d, nn.Conv2d, nn.Conv1d, their float-packed "
              "versions, nn.ReLU, nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, max/average pooling, "
              "nn.BatchNorm1d/2d")


def _kind(name: str, module: nn.Module) -> str:
    """How compaction sees a module: a layer ('linear', 'conv'), element-wise ('relu', 'noop'), channel-wise
    ('pool', 'norm'), 'flatten', or 'other' (never compacted across). A subclass counts only if it keeps its
    base's forward."""
    if type(module) in (PackedMAMConv2d, PackedMAMConv1d, PackedConv2d, PackedConv1d) or is_packable_conv(module):
        return "conv"
    bases = ((nn.Identity, "noop"), (nn.Dropout, "noop"), (nn.Flatten, "flatten"), (nn.ReLU, "relu"),
             (MAMLinear, "linear"), (PackedLayer, "linear"), (nn.Linear, "linear"), (nn.BatchNorm1d, "norm"),
             (nn.BatchNorm2d, "norm"), (nn.Unflatten, "other"), *((pool, "pool") for pool in _POOLS))
    for base, kind in bases:
        if (isinstance(module, base) and type(module).forward is base.forward
                and not getattr(module, "return_indices", False)):
            return kind
    raise ValueError(f"{_WHERE}: unsupported module '{name}' ({type(module).__name__}); supported: {_SUPPORTED}")


def _steps(module: nn.Module, prefix: str = "") -> List[Tuple[str, nn.Module, str]]:
    """(name, module, kind) of every layer in execution order, nested nn.Sequential unrolled."""
    if type(module) is nn.Sequential:
        return [step for name, child in module.named_children()
                for step in _steps(child, f"{prefix}.{name}" if prefix else name)]
    name = prefix or "<model>"
    return [(name, module, _kind(name, module))]


def _in_width(a: nn.Module, b: nn.Module, between: List[Tuple[nn.Module, str]]) -> Optional[int]:
    """Columns of ``b`` per neuron (output channel) of ``a`` when the two are adjacent, else None.

    Linear then linear: only element-wise modules between. Convolution then
    convolution (both ``groups == 1``): element-wise modules, pooling and
    batch normalisation of ``a``'s channels; each channel is a kernel's worth
    of ``b``'s patch. Convolution then linear: the same, then one
    ``nn.Flatten()`` (element-wise modules only after it); each channel is
    ``b.in_features / a.out_channels`` columns (a batched network: flatten
    keeps the channels in order).
    """
    kinds = [kind for _, kind in between]
    a_conv, b_conv = hasattr(a, "kernel_size"), hasattr(b, "kernel_size")
    if not a_conv:
        return 1 if not b_conv and all(k in ("relu", "noop") for k in kinds) else None
    flat = kinds.index("flatten") if "flatten" in kinds else len(kinds)
    if (a.groups != 1 or not all(k in ("relu", "noop", "pool", "norm") for k in kinds[:flat])
            or not all(k in ("relu", "noop") for k in kinds[flat + 1:])
            or any(m.num_features != a.out_channels for m, k in between if k == "norm")):
        return None
    if b_conv:
        return math.prod(b.kernel_size) if b.groups == 1 and flat == len(kinds) else None
    if (flat == len(kinds) or (between[flat][0].start_dim, between[flat][0].end_dim) != (1, -1)
            or b.in_features % a.out_channels):
        return None
    return b.in_features // a.out_channels


def _float_weight(name: str, module: nn.Module) -> Tuple[torch.Tensor, bool]:
    """The dense weight as (N, K) (a convolution's flattened per output channel) and whether it is MAM."""
    if isinstance(module, PackedLayer):
        if module.is_int8:
            raise ValueError(f"{_WHERE}: layer '{name}' is packed as int8; compact the float model, or the "
                             "IntegerNetwork of mamext.quant.pack_integer")
        weight, mam = module.to_dense_weight(), module.mam
    else:
        if isinstance(module, (MAMLinear, *MAM_CONV_KINDS)) and bool(module.beta.item() != 0):
            raise ValueError(f"{_WHERE}: {type(module).__name__} '{name}' still blends in the MAC layer (beta="
                             f"{float(module.beta):g}); finish the transition (beta=0) first")
        weight, mam = effective_weight(module), isinstance(module, (MAMLinear, *MAM_CONV_KINDS))
    return weight.detach().cpu().reshape(weight.shape[0], -1).clone(), mam


def _float_layers(steps) -> List[_Layer]:
    layers: List[_Layer] = []
    for position, (name, module, kind) in enumerate(steps):
        if kind not in ("linear", "conv"):
            continue
        weight, mam = _float_weight(name, module)
        bias = None if module.bias is None else module.bias.detach().cpu().clone()
        layer = _Layer(name, weight, bias, mam, module)
        between = []
        for _, module_after, kind_after in steps[position + 1:]:
            if kind_after in ("linear", "conv"):
                layer.next_width = _in_width(module, module_after, between)
                layer.adjacent_next = layer.next_width is not None
                break
            between.append((module_after, kind_after))
        layer.relu_after = "relu" in [kind for _, kind in between]
        layer.between = between
        if layers and layers[-1].adjacent_next:
            layer.in_width = layers[-1].next_width
        layers.append(layer)
    return layers


def _float_module(layer: _Layer) -> nn.Module:
    N, K = layer.weight.shape
    old = layer.module
    if hasattr(old, "kernel_size"):
        cls = {(True, 2): MAMConv2d, (True, 1): MAMConv1d, (False, 2): nn.Conv2d, (False, 1): nn.Conv1d}[
            (layer.mam, len(old.kernel_size))]
        in_channels = K // math.prod(old.kernel_size) * old.groups
        module = cls(in_channels, N, tuple(old.kernel_size), tuple(old.stride),
                     old.padding if isinstance(old.padding, str) else tuple(old.padding), tuple(old.dilation),
                     old.groups, layer.bias is not None, old.padding_mode, dtype=layer.weight.dtype)
    else:
        module = (MAMLinear if layer.mam else nn.Linear)(K, N, bias=layer.bias is not None, dtype=layer.weight.dtype)
    with torch.no_grad():
        module.weight.copy_(layer.weight.reshape(module.weight.shape))
        if layer.bias is not None:
            module.bias.copy_(layer.bias)
    return module.eval()


def _compact_float(model: nn.Module):
    steps = _steps(model)
    layers = _float_layers(steps)
    before = [(lay.weight.shape[0], int((lay.weight != 0).sum())) for lay in layers]
    with torch.no_grad():
        removed, folds = _compact_layers(layers, _removable_float)
    replacements = {id(lay.module): _float_module(lay) for lay in layers}
    for lay in layers:
        for module, kind in lay.between:
            if kind == "norm" and lay.adjacent_next and len(lay.rows) != module.num_features:
                replacements[id(module)] = _sliced_norm(module, lay.rows)
    smaller = _copy_with(model, replacements).cpu().eval()
    return smaller, layers, before, removed, folds


def _sliced_norm(norm: nn.Module, rows: torch.Tensor) -> nn.Module:
    """A copy of batch normalisation ``norm`` for the channels ``rows`` only."""
    floats = [t for t in (norm.weight, norm.running_mean) if t is not None]
    out = type(norm)(len(rows), eps=norm.eps, momentum=norm.momentum, affine=norm.affine,
                     track_running_stats=norm.track_running_stats,
                     dtype=floats[0].dtype if floats else None)
    with torch.no_grad():
        for name, tensor in (*norm.named_parameters(recurse=False), *norm.named_buffers(recurse=False)):
            if getattr(out, name) is not None:
                getattr(out, name).copy_(tensor if tensor.dim() == 0 else tensor[rows.to(tensor.device)])
    return out.eval()


def _copy_with(model: nn.Module, replacements: dict) -> nn.Module:
    """A deep copy of ``model`` (names and nesting kept) with the modules in ``replacements`` swapped in.

    Pruned modules are never copied themselves (their ``weight`` is a non-leaf
    tensor, which deepcopy refuses); other non-leaf tensors are copied detached.
    """
    memo = dict(replacements)
    for module in model.modules():
        if id(module) not in memo:
            for value in vars(module).values():
                if isinstance(value, torch.Tensor) and not value.is_leaf:
                    memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)


# --------------------------------------------------------------------------- integer networks

def _int_layers(model: IntegerNetwork) -> List[_Layer]:
    layers: List[_Layer] = []
    previous: Optional[_Layer] = None
    for name, module in model.layers.named_children():
        if isinstance(module, IntLinear):
            layer = _Layer(f"layers.{name}", module.dense_codes(), module.bias.to(torch.int64), module.mam, module,
                           per_row={"multiplier": module.multiplier.to(torch.int64),
                                    "right_shift": module.right_shift.to(torch.int64)})
            if previous is not None:
                previous.adjacent_next = True
            layers.append(layer)
            previous = layer
        elif isinstance(module, IntClamp) and previous is not None:
            previous.clamp_after = module.zero_point
        else:
            previous = None
    return layers


def _int_module(layer: _Layer) -> IntLinear:
    old: IntLinear = layer.module
    keep = layer.weight != 0
    counts = keep.sum(1)
    weight_scale = None if old.weight_scale is None else old.weight_scale[layer.rows]
    return IntLinear(layer.weight.shape[1], layer.weight.shape[0], layer.weight[keep], keep.nonzero()[:, 1], counts,
                     layer.bias, layer.per_row["multiplier"], layer.per_row["right_shift"], mam=old.mam,
                     input_zero_point=old.input_zero_point, output_zero_point=old.output_zero_point, low=old.low,
                     high=old.high, candidate_width=old.candidate_width, input_scale=old.input_scale,
                     output_scale=old.output_scale, weight_scale=weight_scale)


def _compact_int(model: IntegerNetwork):
    layers = _int_layers(model)
    before = [(lay.weight.shape[0], int((lay.weight != 0).sum())) for lay in layers]
    removed, folds = _compact_layers(layers, _removable_int)
    by_module = {id(lay.module): lay for lay in layers}
    modules = [_int_module(by_module[id(m)]) if id(m) in by_module else copy.deepcopy(m) for m in model.layers]
    out = IntegerNetwork(modules, input_scale=model.input_scale, input_zero_point=model.input_zero_point,
                         output_scale=model.output_scale, output_zero_point=model.output_zero_point)
    return out, layers, before, removed, folds


def _unread_inputs(layer: _Layer) -> int:
    """How many inputs of the layer (features, or channels of a convolution) no kept connection reads."""
    module = layer.module
    if not hasattr(module, "kernel_size"):
        return int((~(layer.weight != 0).any(0)).sum())
    groups = module.groups
    read = (layer.weight != 0).reshape(groups, layer.weight.shape[0] // groups, -1, math.prod(module.kernel_size))
    return int((~read.any(3).any(1)).sum())


# --------------------------------------------------------------------------- API

def compact(model: nn.Module) -> Tuple[nn.Module, CompactionReport]:
    """The smaller equivalent network and what was removed (see :mod:`mamext.compact`).

    ``model`` is left unchanged. A float network comes back as a copy (same
    names and nesting, on the CPU, in eval mode) whose linear layers and
    convolutions are new ``MAMLinear`` / ``nn.Linear`` / ``MAMConv2d`` / ... modules
    with smaller dense weights (pruned connections as zeros, no pruning masks);
    an :class:`~mamext.quant.IntegerNetwork` comes back as a smaller one.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"{_WHERE}: model must be an nn.Module, got {type(model).__name__}")
    if isinstance(model, IntegerNetwork):
        out, layers, before, removed, folds = _compact_int(model)
    else:
        out, layers, before, removed, folds = _compact_float(model)
    report = CompactionReport(
        layer_names=[lay.name for lay in layers], neurons_before=[b[0] for b in before],
        neurons_after=[lay.weight.shape[0] for lay in layers], kept_before=[b[1] for b in before],
        kept_after=[int((lay.weight != 0).sum()) for lay in layers], removed_neurons=removed,
        dead_neurons_kept=[lay.rows[lay.dead()].tolist() for lay in layers], folded_constants=folds,
        unread_inputs=_unread_inputs(layers[0]) if layers else 0)
    return out, report
