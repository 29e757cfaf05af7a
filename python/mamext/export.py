"""Export a (pruned, packed) MAM network to self-contained C99 for microcontrollers.

:func:`to_c` writes three files to ``out_dir``:

* ``<name>.h``: sizes and ``void <name>_infer(const float *input, float *output);``
* ``<name>.c``: the whole network's inference: ``static const`` arrays (flash),
  two static activation buffers (RAM), no dynamic memory, nothing beyond the C
  standard library headers (``stdint.h``, ``float.h``, ``math.h`` for ``NAN``;
  no libm function is called);
* ``<name>_main.c``: a harness reading whitespace separated input samples
  from stdin and printing one line of outputs per sample.

Supported modules: ``nn.Sequential`` (nested), ``MAMLinear`` and ``nn.Linear``
(dense, pruned or packed), ``nn.ReLU``, ``nn.Flatten``, ``nn.Identity``,
``nn.Dropout`` (a no-op in inference). Anything else raises a ``ValueError``
naming the module. Pruned layers are packed (CSR) and unpruned ones stay dense
for ``dtype=torch.float32``; ``dtype=torch.int8`` packs and quantises every
layer exactly like ``mamext.sparse.pack(model, torch.int8)``, and the C
output equals that PyTorch model's output bit for bit (one sample per call,
per-sample input scale, integer products, the same final float scaling).

Bit-exactness needs IEEE single precision without excess precision
(``FLT_EVAL_METHOD == 0``: any x86-64 or ARM hard-float target) and no
contraction of ``a * b + c`` into an FMA: compile with ``-std=c99`` (GCC then
does not contract) or pass ``-ffp-contract=off``; never ``-ffast-math``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Sequence, Tuple, Union

import torch
from torch import nn

from .nn.modules import MAMLinear
from .sparse import PackedLayer, PackedMAMLinear, _pack_one, effective_weight

__all__ = ["to_c", "ExportResult"]

_NOOP = (nn.Identity, nn.Dropout)
_SUPPORTED = "nn.Sequential, MAMLinear, nn.Linear, PackedMAMLinear, PackedLinear, nn.ReLU, nn.Flatten, " \
             "nn.Identity, nn.Dropout"
_C_INDEX = {torch.uint8: "uint8_t", torch.int16: "int16_t", torch.int32: "int32_t"}
_C_OFFSET = {torch.int32: "int32_t", torch.int64: "int64_t"}


@dataclass
class ExportResult:
    """What :func:`to_c` wrote and how much memory the network needs."""

    source: Path
    header: Path
    main: Path
    input_size: int
    output_size: int
    flash_bytes: int                # constant data (weights, indices, offsets, biases, scales)
    ram_bytes: int                  # static buffers (activations, int8 input buffer)
    largest_activation_bytes: int   # largest single activation (input, hidden or output), float32
    layers: List[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"C export: {self.source.name}, {self.header.name}, {self.main.name}",
                 f"  input {self.input_size} floats -> output {self.output_size} floats",
                 f"  flash (constant data): {self.flash_bytes} bytes",
                 f"  RAM (static buffers): {self.ram_bytes} bytes; largest activation {self.largest_activation_bytes} bytes"]
        lines += [f"  {s}" for s in self.layers]
        return "\n".join(lines)


# --------------------------------------------------------------------------- model walk

def _flatten(module: nn.Module, prefix: str) -> List[Tuple[str, nn.Module]]:
    if type(module) is nn.Sequential:
        out = []
        for name, child in module.named_children():
            out += _flatten(child, f"{prefix}.{name}" if prefix else name)
        return out
    name = prefix or "<model>"
    if isinstance(module, (PackedLayer, MAMLinear, nn.ReLU, nn.Flatten) + _NOOP) or type(module) is nn.Linear:
        return [(name, module)]
    raise ValueError(f"mamext.export.to_c: unsupported module '{name}' ({type(module).__name__}); "
                     f"supported: {_SUPPORTED}")


def _c_float(v: float) -> str:
    if not math.isfinite(v):
        raise ValueError(f"mamext.export.to_c: cannot export the non-finite constant {v}")
    return float(v).hex() + "f"


def _c_array(ctype: str, name: str, values, fmt) -> Tuple[str, int]:
    vals = list(values)
    if not vals:  # C has no zero-length arrays; never read
        vals = [0]
    items = [fmt(v) for v in vals]
    per_line = 6 if ctype == "float" else 16
    body = ",\n".join("    " + ", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line))
    size = {"float": 4, "int8_t": 1, "uint8_t": 1, "int16_t": 2, "int32_t": 4, "int64_t": 8}[ctype]
    return f"static const {ctype} {name}[{len(vals)}] = {{\n{body}\n}};\n", size * len(vals)


# --------------------------------------------------------------------------- C helpers

_HELPER_ROUND = r"""
/* round half to even, clamped to [-127, 127] (mirrors the PyTorch kernel) */
static int32_t mam_round_q(float v)
{
    int32_t t, odd, up, down;
    float f;
    v = v > 127.0f ? 127.0f : v;
    v = v < -127.0f ? -127.0f : v;
    t = (int32_t)v;
    f = v - (float)t;
    odd = t & 1;
    up = (int32_t)(f > 0.5f) | ((int32_t)(f == 0.5f) & odd);
    down = (int32_t)(f < -0.5f) | ((int32_t)(f == -0.5f) & odd);
    return t + up - down;
}

/* symmetric per-sample quantisation: returns the input scale (NaN if a value is not finite) */
static float mam_quantize(const float *x, int32_t K, int8_t *q)
{
    float amax = 0.0f;
    int bad = 0;
    int32_t k;
    for (k = 0; k < K; ++k) {
        const float a = x[k] < 0.0f ? -x[k] : x[k];
        if (!(a <= FLT_MAX)) {
            bad = 1;
        } else if (a > amax) {
            amax = a;
        }
    }
    if (bad || amax < 1e-30f) {
        for (k = 0; k < K; ++k) q[k] = 0;
        return bad ? NAN : 0.0f;
    }
    {
        const float inv = 127.0f / amax;
        for (k = 0; k < K; ++k) q[k] = (int8_t)mam_round_q(x[k] * inv);
    }
    return amax / 127.0f;
}
"""

_HELPER_DENSE = {
    True: r"""
/* dense MAM: y = max_k(w x) + min_k(w x) + b; a NaN product gives NaN */
static void mam_dense_f32(const float *x, float *y, int32_t rows, int32_t K, int32_t N,
                          const float *w, const float *bias)
{
    int32_t r, n, k;
    for (r = 0; r < rows; ++r) {
        const float *xr = x + r * K;
        for (n = 0; n < N; ++n) {
            const float *wr = w + n * K;
            float mx = wr[0] * xr[0], mn = mx, v;
            int nan_seen = mx != mx;
            for (k = 1; k < K; ++k) {
                const float p = wr[k] * xr[k];
                if (p != p) nan_seen = 1;
                if (p > mx) mx = p;
                if (p < mn) mn = p;
            }
            v = nan_seen ? NAN : mx + mn;
            if (bias) v = v + bias[n];
            y[r * N + n] = v;
        }
    }
}
""",
    False: r"""
/* dense Linear: y = sum_k(w x) + b */
static void lin_dense_f32(const float *x, float *y, int32_t rows, int32_t K, int32_t N,
                          const float *w, const float *bias)
{
    int32_t r, n, k;
    for (r = 0; r < rows; ++r) {
        const float *xr = x + r * K;
        for (n = 0; n < N; ++n) {
            const float *wr = w + n * K;
            float acc = 0.0f;
            for (k = 0; k < K; ++k) acc += wr[k] * xr[k];
            if (bias) acc = acc + bias[n];
            y[r * N + n] = acc;
        }
    }
}
""",
}

# Packed float: identical semantics to the PyTorch kernels, non-finite inputs
# included (an inf/NaN input on a pruned connection makes the neuron NaN).
_HELPER_CSR_F32 = r"""
/* packed {what} (float, {IDX} indices, {OFF} offsets) */
static void {fname}(const float *x, float *y, int32_t rows, int32_t K, int32_t N,
        const float *val, const {IDX} *idx, const {OFF} *off, const float *bias)
{{
    int32_t r, n, k;
    for (r = 0; r < rows; ++r) {{
        const float *xr = x + r * K;
        int32_t bad = 0;
        for (k = 0; k < K; ++k) bad += !(xr[k] - xr[k] == 0.0f);
        for (n = 0; n < N; ++n) {{
            {OFF} j = off[n];
            const {OFF} j1 = off[n + 1];
            const int pruned = (int32_t)(j1 - j) < K;
            int32_t seen = 0;
            int nan_seen = 0;
{body}
            if (nan_seen || (pruned && seen != bad)) v = NAN;
            if (bias) v = v + bias[n];
            y[r * N + n] = v;
        }}
    }}
}}
"""
_BODY_MAM_F32 = r"""            int first = !pruned;
            float mx = 0.0f, mn = 0.0f, v;
            for (; j < j1; ++j) {
                const float xv = xr[idx[j]];
                const float p = val[j] * xv;
                seen += !(xv - xv == 0.0f);
                if (p != p) nan_seen = 1;
                if (first) {
                    mx = p;
                    mn = p;
                    first = 0;
                } else {
                    if (p > mx) mx = p;
                    if (p < mn) mn = p;
                }
            }
            v = mx + mn;"""
_BODY_SUM_F32 = r"""            float v = 0.0f;
            for (; j < j1; ++j) {
                const float xv = xr[idx[j]];
                const float p = val[j] * xv;
                seen += !(xv - xv == 0.0f);
                if (p != p) nan_seen = 1;
                v += p;
            }"""

_HELPER_CSR_I8 = r"""
/* packed {what} (int8, {IDX} indices, {OFF} offsets): exact integer max/min (or sum), float scaling */
static void {fname}(const float *x, float *y, int32_t rows, int32_t K, int32_t N,
        const int8_t *val, const {IDX} *idx, const {OFF} *off, const float *wscale, const float *bias)
{{
    int32_t r, n;
    for (r = 0; r < rows; ++r) {{
        const float sx = mam_quantize(x + r * K, K, mam_qbuf);
        for (n = 0; n < N; ++n) {{
            {OFF} j = off[n];
            const {OFF} j1 = off[n + 1];
            const float s = wscale[n] * sx;
            float v;
{body}
            v = (float)acc * s;
            if (bias) v = v + bias[n];
            y[r * N + n] = v;
        }}
    }}
}}
"""
_BODY_MAM_I8 = r"""            int32_t mx = 0, mn = 0, acc;
            if ((int32_t)(j1 - j) == K) {
                mx = (int32_t)val[j] * (int32_t)mam_qbuf[idx[j]];
                mn = mx;
                ++j;
            }
            for (; j < j1; ++j) {
                const int32_t p = (int32_t)val[j] * (int32_t)mam_qbuf[idx[j]];
                if (p > mx) mx = p;
                if (p < mn) mn = p;
            }
            acc = mx + mn;"""
_BODY_SUM_I8 = r"""            int32_t acc = 0;
            for (; j < j1; ++j) acc += (int32_t)val[j] * (int32_t)mam_qbuf[idx[j]];"""


# --------------------------------------------------------------------------- export

def _check_shape(input_shape) -> Tuple[int, ...]:
    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    try:
        shape = tuple(int(s) for s in input_shape)
    except TypeError:
        raise TypeError(f"mamext.export.to_c: input_shape must be a tuple of ints (one sample, no batch "
                        f"dimension), got {input_shape!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"mamext.export.to_c: input_shape must be a non-empty tuple of positive sizes "
                         f"(one sample, no batch dimension), got {input_shape!r}")
    return shape


def to_c(model: nn.Module, out_dir: Union[str, os.PathLike], input_shape: Sequence[int],
         dtype: torch.dtype = torch.float32, *, name: str = "mamnet") -> ExportResult:
    """Write ``<name>.c``, ``<name>.h`` and ``<name>_main.c`` implementing ``model``'s inference.

    Args:
        model: an ``nn.Sequential`` (or single layer) of supported modules (see
            the module docstring), pruned, packed or dense.
        out_dir: directory to write to (created if needed).
        input_shape: the shape of one input sample, without the batch
            dimension, e.g. ``(784,)`` or ``(1, 28, 28)``.
        dtype: ``torch.float32`` or ``torch.int8``.
        name: C identifier prefix and file stem.

    Returns:
        :class:`ExportResult` with the paths, the bytes of constant data
        (flash) and of the static buffers (RAM), and the largest activation.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"mamext.export.to_c: model must be an nn.Module, got {type(model).__name__}")
    if dtype not in (torch.float32, torch.int8):
        raise TypeError(f"mamext.export.to_c: dtype must be torch.float32 or torch.int8, got {dtype}")
    if not name.isidentifier() or not name.isascii():
        raise ValueError(f"mamext.export.to_c: name must be a C identifier, got {name!r}")
    shape = _check_shape(input_shape)
    modules = _flatten(model, "")
    int8 = dtype == torch.int8

    decls: List[str] = []        # constant arrays
    helpers: dict = {}           # helper name -> code (emitted once, only if used)
    calls: List[str] = []        # statements of <name>_infer
    layer_desc: List[str] = []
    flash = 0
    cur = "input"                # where the current activation lives: input, act0, act1
    max_act = 0                  # elements of the largest buffered activation
    max_q = 0                    # int8 quantisation buffer elements
    largest = math.prod(shape)

    def out_buf():
        return "act1" if cur == "act0" else "act0"

    for li, (qual, m) in enumerate(modules):
        if isinstance(m, _NOOP):
            continue
        if isinstance(m, nn.Flatten):
            full = torch.empty((1, *shape), device="meta")
            try:
                new = tuple(full.flatten(m.start_dim, m.end_dim).shape)
            except (IndexError, RuntimeError) as e:
                raise ValueError(f"mamext.export.to_c: {qual} ({m}) cannot flatten input of shape {shape}: {e}") from None
            if new[0] != 1:
                raise ValueError(f"mamext.export.to_c: {qual} ({m}) flattens the batch dimension; "
                                 "only start_dim >= 1 is supported")
            shape = new[1:]
            layer_desc.append(f"{qual}: Flatten -> {shape}")
            continue
        size = math.prod(shape)
        if isinstance(m, nn.ReLU):
            dst = cur if cur != "input" else out_buf()
            max_act = max(max_act, size)
            calls.append(f"    for (i = 0; i < {size}; ++i) {dst}[i] = {cur}[i] < 0.0f ? 0.0f : {cur}[i];")
            cur = dst
            layer_desc.append(f"{qual}: ReLU")
            continue

        # linear-type layer
        K = m.in_features
        if shape[-1] != K:
            raise ValueError(f"mamext.export.to_c: layer {qual} ({type(m).__name__}) expects inputs with last "
                             f"dimension {K}, but gets activations of shape {shape} (input_shape wrong?)")
        rows = size // K
        conv = _pack_one(m, dtype, int8, qual)
        layer = conv if conv is not None else m
        if isinstance(layer, PackedLayer) and layer.is_int8 and not int8:
            raise ValueError(f"mamext.export.to_c: layer {qual} is packed as int8; export with dtype=torch.int8")
        mam = isinstance(layer, (PackedMAMLinear, MAMLinear))
        if isinstance(layer, MAMLinear) and bool(layer.beta.item() != 0):
            raise ValueError(f"mamext.export.to_c: MAMLinear {qual} still blends in the MAC layer "
                             f"(beta={float(layer.beta):g}); finish the transition (beta=0) before exporting")
        N = layer.out_features
        p = f"L{li}"
        bias = layer.bias
        bias_ref = "(const float *)0"
        if bias is not None:
            code, nb = _c_array("float", f"{p}_bias", bias.detach().to(torch.float32).tolist(), _c_float)
            decls.append(code)
            flash += nb
            bias_ref = f"{p}_bias"
        dst = out_buf()
        kind = "MAM" if mam else "Linear"
        if isinstance(layer, PackedLayer):
            idx_c, off_c = _C_INDEX[layer.indices.dtype], _C_OFFSET[layer.offsets.dtype]
            suffix = f"{idx_c[:-2]}_{off_c[:-2]}"
            if layer.is_int8:
                code, nb = _c_array("int8_t", f"{p}_val", layer.values.tolist(), str)
            else:
                code, nb = _c_array("float", f"{p}_val", layer.values.to(torch.float32).tolist(), _c_float)
            decls.append(code)
            flash += nb
            for arr, ctype, nm in ((layer.indices, idx_c, "idx"), (layer.offsets, off_c, "off")):
                code, nb = _c_array(ctype, f"{p}_{nm}", arr.tolist(), str)
                decls.append(code)
                flash += nb
            if layer.is_int8:
                code, nb = _c_array("float", f"{p}_ws", layer.weight_scale.tolist(), _c_float)
                decls.append(code)
                flash += nb
                fname = f"{'mam' if mam else 'lin'}_csr_i8_{suffix}"
                helpers.setdefault("round", _HELPER_ROUND)
                helpers.setdefault(fname, _HELPER_CSR_I8.format(
                    what=kind, fname=fname, IDX=idx_c, OFF=off_c, body=_BODY_MAM_I8 if mam else _BODY_SUM_I8))
                calls.append(f"    {fname}({cur}, {dst}, {rows}, {K}, {N}, {p}_val, {p}_idx, {p}_off, {p}_ws, {bias_ref});")
                max_q = max(max_q, K)
            else:
                fname = f"{'mam' if mam else 'lin'}_csr_f32_{suffix}"
                helpers.setdefault(fname, _HELPER_CSR_F32.format(
                    what=kind, fname=fname, IDX=idx_c, OFF=off_c, body=_BODY_MAM_F32 if mam else _BODY_SUM_F32))
                calls.append(f"    {fname}({cur}, {dst}, {rows}, {K}, {N}, {p}_val, {p}_idx, {p}_off, {bias_ref});")
            layer_desc.append(f"{qual}: packed {kind} {K}->{N}, kept {layer.kept}/{layer.total}, "
                              f"{'int8' if layer.is_int8 else 'float32'}")
        else:
            w = effective_weight(layer).to(torch.float32).reshape(-1).tolist()
            code, nb = _c_array("float", f"{p}_w", w, _c_float)
            decls.append(code)
            flash += nb
            fname = "mam_dense_f32" if mam else "lin_dense_f32"
            helpers.setdefault(fname, _HELPER_DENSE[mam])
            calls.append(f"    {fname}({cur}, {dst}, {rows}, {K}, {N}, {p}_w, {bias_ref});")
            layer_desc.append(f"{qual}: dense {kind} {K}->{N}, float32")
        shape = (*shape[:-1], N)
        max_act = max(max_act, math.prod(shape))
        largest = max(largest, math.prod(shape))
        cur = dst

    out_size = math.prod(shape)
    in_size = math.prod(_check_shape(input_shape))
    uses_act = max_act > 0
    ram = (2 * max_act * 4 if uses_act else 0) + max_q
    largest_bytes = largest * 4

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    up = name.upper()
    header = out_dir / f"{name}.h"
    source = out_dir / f"{name}.c"
    main = out_dir / f"{name}_main.c"
    summary = "\n".join(f" *   {d}" for d in layer_desc) or " *   (no layers)"
    header.write_text(
        f"/* Generated by mamext.export.to_c ({'int8' if int8 else 'float32'}). Do not edit.\n"
        f" * Input: {in_size} floats (sample shape {tuple(_check_shape(input_shape))}), output: {out_size} floats.\n"
        f" * Layers:\n{summary}\n */\n"
        f"#ifndef {up}_H\n#define {up}_H\n\n"
        f"#define {up}_INPUT_SIZE {in_size}\n"
        f"#define {up}_OUTPUT_SIZE {out_size}\n"
        f"#define {up}_FLASH_BYTES {flash} /* constant data */\n"
        f"#define {up}_RAM_BYTES {ram} /* static buffers */\n\n"
        f"/* Runs the network on one sample. Not reentrant (static buffers). */\n"
        f"void {name}_infer(const float *input, float *output);\n\n"
        f"#endif /* {up}_H */\n")

    body = [f"/* Generated by mamext.export.to_c. Do not edit. See {name}.h. */",
            "#include <float.h>", "#include <math.h>", "#include <stdint.h>", "",
            f'#include "{name}.h"', ""]
    if uses_act:
        body += [f"static float act0[{max_act}];", f"static float act1[{max_act}];"]
    if max_q:
        body += [f"static int8_t mam_qbuf[{max_q}];"]
    body.append("")
    body += decls
    body += list(helpers.values())
    body.append(f"\nvoid {name}_infer(const float *input, float *output)\n{{")
    body.append("    int32_t i;")
    body += calls
    body.append(f"    for (i = 0; i < {out_size}; ++i) output[i] = {cur}[i];")
    body.append("}\n")
    source.write_text("\n".join(body))

    main.write_text(
        f"/* Test harness generated by mamext.export.to_c: reads {up}_INPUT_SIZE floats per sample\n"
        f" * from stdin (whitespace separated) until EOF, prints {up}_OUTPUT_SIZE outputs per line. */\n"
        "#include <stdio.h>\n\n"
        f'#include "{name}.h"\n\n'
        "int main(void)\n{\n"
        f"    static float in[{up}_INPUT_SIZE];\n"
        f"    static float out[{up}_OUTPUT_SIZE];\n"
        "    for (;;) {\n"
        "        int i;\n"
        f"        for (i = 0; i < {up}_INPUT_SIZE; ++i) {{\n"
        '            if (scanf("%f", &in[i]) != 1) return i == 0 ? 0 : 1;\n'
        "        }\n"
        f"        {name}_infer(in, out);\n"
        f"        for (i = 0; i < {up}_OUTPUT_SIZE; ++i)\n"
        f"            printf(\"%.9g%c\", (double)out[i], i + 1 < {up}_OUTPUT_SIZE ? ' ' : '\\n');\n"
        "    }\n}\n")
    return ExportResult(source=source, header=header, main=main, input_size=in_size, output_size=out_size,
                        flash_bytes=flash, ram_bytes=ram, largest_activation_bytes=largest_bytes,
                        layers=layer_desc)
