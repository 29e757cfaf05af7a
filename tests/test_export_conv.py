"""C export of CNNs (mamext.export.to_c): MAMConv2d / nn.Conv2d, pooling, folded batch norms, in float32
(compiled with gcc -std=c99 -Wall -Wextra -Werror -pedantic, MAM exactly equal to PyTorch, MAC within float
rounding) and in the integer-only path (bit for bit equal to mamext.quant's integer reference)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn
from torch.nn import functional as F

from mamext import export, sparse
from mamext.nn import MAMConv1d, MAMConv2d, MAMLinear
from mamext.quant import IntAvgPool2d, IntConv2d, IntMaxPool2d, pack_integer
from test_export_c import _compile, _run
from test_export_int import _compile as _compile_int
from test_export_int import _run as _run_int

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

_STRICT = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wshadow", "-Wstrict-prototypes",
           "-Wmissing-prototypes", "-Wcast-qual", "-Wundef", "-Wconversion", "-Wsign-conversion",
           "-Wdouble-promotion"]


def _batchnorm(bn, negative=False, seed=0):
    """Eval statistics away from the identity; ``negative``: every other gamma below zero."""
    torch.manual_seed(seed)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
        if negative:
            bn.weight[::2] *= -1
    return bn


def _mam_cnn():
    """MAM convolutions only (pruned, grouped, depthwise, strided, dilated, padded), pools, a MAM head."""
    torch.manual_seed(3)
    m = nn.Sequential(MAMConv2d(2, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, padding=1),
                      MAMConv2d(6, 6, 3, stride=2, padding=2, dilation=2, groups=3), nn.ReLU(),
                      MAMConv2d(6, 6, 3, padding="same", groups=6, bias=False),           # depthwise
                      nn.MaxPool2d(3, stride=1, padding=1, dilation=1),
                      nn.AvgPool2d(2, padding=1, count_include_pad=False),
                      nn.Flatten(), MAMLinear(6 * 2 * 2, 10))
    torch_prune.l1_unstructured(m[0], "weight", amount=0.5)
    with torch.no_grad():
        m[3].weight[m[3].weight.abs() < 0.1] = 0
    return m.eval()


def _lenet(negative_gamma=True):
    """LeNet-style: MAC and MAM convolutions with batch norms, pools, MAM and MAC classifier layers."""
    torch.manual_seed(4)
    m = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), _batchnorm(nn.BatchNorm2d(6), seed=1), nn.ReLU(),
                      nn.MaxPool2d(2),
                      MAMConv2d(6, 8, 3, padding=1, bias=False), _batchnorm(nn.BatchNorm2d(8), negative_gamma, 2),
                      nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                      MAMLinear(8 * 3 * 3, 32), _batchnorm(nn.BatchNorm1d(32), negative_gamma, 3), nn.ReLU(),
                      nn.Linear(32, 16), _batchnorm(nn.BatchNorm1d(16), seed=4), nn.ReLU(), nn.Linear(16, 10))
    torch_prune.l1_unstructured(m[9], "weight", amount=0.8)
    return m.eval()


def _inputs(n, shape, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(n, *shape)
    x[1] = 0.0                                  # every product 0: ties everywhere
    x[2] = x[2].abs() + 0.5                     # all positive: the padding's 0 is the min of border patches
    x[3] = x[3].round()                         # repeated values: tied products
    return x


def test_mam_cnn_is_exact(tmp_path):
    m = _mam_cnn()
    res = export.to_c(m, tmp_path, (2, 11, 11))
    x = _inputs(24, (2, 11, 11))
    x[4, 0, 5, 5] = float("inf")                # a pruned weight on inf: NaN, as in PyTorch
    x[5, 1, 0, 0] = float("nan")
    y = _run(_compile(res, tmp_path), x)
    with torch.no_grad():
        ref = m(x)
    assert ref.isnan().any() and not ref[6:].isnan().any()
    torch.testing.assert_close(y, ref, rtol=0, atol=0, equal_nan=True)
    source = res.source.read_text()
    assert "mamrt_mam_conv2d_f32" in source and "mamrt_avgpool2d_f32" in source
    assert sorted(p.name for p in res.runtime) == ["mam_runtime.h", "mam_runtime_conv.h", "mam_runtime_csr.h",
                                                   "mam_runtime_window.h", "mam_semantics.h"]
    patch = 1 * 3 * 3               # the dense (depthwise) conv's c_in / groups * k_h * k_w; packed ones need none
    assert res.ram_bytes == 4 * (6 * 11 * 11 + 6 * 6 * 6 + patch)
    report = str(res)
    assert "0: packed MAM conv" in report and "3: packed MAM conv" in report and "5: dense MAM conv" in report


def test_padding_wins_and_ties(tmp_path):
    """Positive weights and inputs: only the padding's zero product can be a border output's min."""
    conv = MAMConv2d(1, 2, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.rand(2, 1, 3, 3) + 0.5)
        conv.weight[1] = 1.0                                       # one channel of tied weights
    m = nn.Sequential(conv).eval()
    x = torch.rand(3, 1, 5, 5) + 1.0
    x[1] = 2.0                                                     # every product tied
    res = export.to_c(m, tmp_path, (1, 5, 5))
    y = _run(_compile(res, tmp_path), x).reshape(3, 2, 5, 5)
    with torch.no_grad():
        ref = m(x)
    assert torch.equal(y, ref)
    interior_min = ref[:, :, 1:-1, 1:-1]
    border = ref[:, :, 0, :]
    assert bool((interior_min > 0).all())
    assert torch.equal(y[1, 1, 0, 0], torch.tensor(2.0))          # max 2 + min 0 (padding)
    assert torch.equal(y[1, 1, 2, 2], torch.tensor(4.0))          # max 2 + min 2
    assert bool((border < interior_min.max()).all())


def test_lenet_with_batchnorm_within_rounding(tmp_path):
    m = _lenet()
    res = export.to_c(m, tmp_path, (1, 12, 12))
    x = _inputs(40, (1, 12, 12))
    y = _run(_compile(res, tmp_path), x)
    with torch.no_grad():
        ref = m(x)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
    report = str(res)
    assert "1 folded" in report and "13 folded" in report        # MAC layers absorb their batch norm
    assert report.count("batch norm (per-channel affine)") == 2   # MAM layers keep it as a step


def test_negative_gamma_batchnorm_after_mam(tmp_path):
    """A negative BN scale after a MAM layer swaps max and min: the exported step keeps the order right."""
    torch.manual_seed(6)
    m = nn.Sequential(MAMConv2d(2, 4, 3), _batchnorm(nn.BatchNorm2d(4), negative=True, seed=7)).eval()
    with torch.no_grad():
        m[1].weight.fill_(-2.0)
        m[1].running_mean.zero_()
        m[1].running_var.fill_(1.0 - m[1].eps)
        m[1].bias.zero_()
    res = export.to_c(m, tmp_path, (2, 6, 6))
    x = _inputs(8, (2, 6, 6))
    y = _run(_compile(res, tmp_path), x).reshape(8, 4, 4, 4)
    with torch.no_grad():
        ref = m(x)
        mam = m[0](x)
    torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(y, -2.0 * mam, rtol=1e-6, atol=1e-6)


def test_batchnorms_without_a_layer_before_them(tmp_path):
    """Batch norms first, after a ReLU, after a Flatten: per-channel affine steps (src: input or a buffer)."""
    torch.manual_seed(16)
    m = nn.Sequential(_batchnorm(nn.BatchNorm2d(2), seed=17), MAMConv2d(2, 3, 3), nn.ReLU(),
                      _batchnorm(nn.BatchNorm2d(3), negative=True, seed=18), nn.Flatten(),
                      _batchnorm(nn.BatchNorm1d(3 * 5 * 5), seed=19), nn.Linear(3 * 5 * 5, 4)).eval()
    res = export.to_c(m, tmp_path, (2, 7, 7))
    assert str(res).count("batch norm (per-channel affine)") == 3
    x = _inputs(10, (2, 7, 7))
    y = _run(_compile(res, tmp_path), x)
    with torch.no_grad():
        ref = m(x)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


def test_generated_cnns_compile_with_strict_flags(tmp_path):
    """Dense, packed and encoded convolutions, pools and batch-norm steps, float and integer (input offsets and
    index encodings)."""
    x = _inputs(16, (2, 11, 11))
    exports = [(_lenet(), (1, 12, 12), torch.float32), (_mam_cnn(), (2, 11, 11), torch.float32),
               (pack_integer(_mam_cnn(), [x]), (2, 11, 11), torch.int8),
               (pack_integer(_lenet(), [_inputs(16, (1, 12, 12))]), (1, 12, 12), torch.int8),
               (pack_integer(_mam_cnn(), [x]), (2, 11, 11), torch.int8)]
    for k, (model, shape, dtype) in enumerate(exports):
        folder = tmp_path / str(k)
        encodings = ("index", "delta", "bitmap") if k == 4 else None
        res = export.to_c(model, folder, shape, dtype, name="net", index_encodings=encodings)
        assert ("packed MAM conv" in str(res)) == (k == 1) and ("B (dense:" in str(res)) == (k in (2, 4))
        assert ("input offsets" in str(res)) == (k == 2) and ("conv 2->6 k3x3 s1x1 -> (6, 11, 11), kept 54/108, "
                                                              "bitmap" in str(res)) == (k == 4)
        done = subprocess.run(["gcc", *_STRICT, "-o", "net", "net.c", "net_main.c"], cwd=folder,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("model, shape, match", [
    (nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), (1, 5, 5), "padding_mode='reflect'"),
    (MAMConv2d(1, 2, 3), (1, 5, 5), "beta"),
    (nn.MaxPool2d(2, ceil_mode=True), (1, 5, 5), "ceil_mode"),
    (nn.AvgPool2d(2, ceil_mode=True), (1, 5, 5), "ceil_mode"),
    (nn.MaxPool2d(2, return_indices=True), (1, 5, 5), "indices"),
    (nn.MaxPool2d(2, padding=2), (1, 5, 5), "pad should be at most half"),
    (nn.BatchNorm2d(1, track_running_stats=False), (1, 5, 5), "running statistics"),
    (nn.BatchNorm2d(3), (1, 5, 5), r"BatchNorm2d\(3\)"),
    (nn.Conv2d(3, 2, 3), (1, 5, 5), "expects 3 input channels"),
    (nn.Conv2d(1, 2, 3), (25,), r"shape \(C, H, W\)"),
    (nn.Conv2d(1, 2, 7), (1, 5, 5), "does not fit"),
    (nn.MaxPool1d(2), (1, 5), "unsupported module"),
    (nn.Conv1d(1, 2, 3), (1, 5, 5), r"shape \(C, L\)"),
    (nn.AdaptiveAvgPool2d(1), (1, 5, 5), "unsupported module"),
])
def test_refusals(tmp_path, model, shape, match):
    if isinstance(model, MAMConv2d):
        model.beta.fill_(0.5)
    with pytest.raises(ValueError, match=match):
        export.to_c(nn.Sequential(model).eval(), tmp_path, shape)


def test_convolutions_need_float32_or_the_integer_path(tmp_path):
    with pytest.raises(ValueError, match="pack_integer"):
        export.to_c(nn.Sequential(MAMConv2d(1, 2, 3)).eval(), tmp_path, (1, 5, 5), torch.int8)


def _pruned(conv, amount):
    torch_prune.l1_unstructured(conv, "weight", amount=amount)
    return conv


_GEOMETRIES = {
    "pruned_no_bias": lambda: _pruned(MAMConv2d(2, 4, 3, padding=1, bias=False), 0.8),
    "pruned_mac_grouped": lambda: _pruned(nn.Conv2d(2, 6, 3, padding=1, groups=2), 0.7),
    "same_even_kernel": lambda: MAMConv2d(2, 4, (2, 4), padding="same", dilation=(1, 2)),
    "valid_stride3": lambda: MAMConv2d(2, 4, 3, stride=3, padding="valid", bias=False),
    "depthwise_multiplier": lambda: MAMConv2d(2, 4, 3, padding=(0, 2), groups=2),
    "mac_grouped_dilated": lambda: nn.Conv2d(2, 4, 3, stride=(1, 2), padding=2, dilation=2, groups=2),
    "maxpool_dilated": lambda: nn.MaxPool2d(3, 2, 1, dilation=2),
    "avgpool_pad": lambda: nn.AvgPool2d(3, 2, 1),
    "avgpool_divisor": lambda: nn.AvgPool2d((3, 2), (1, 2), (1, 1), divisor_override=5),
}


@pytest.mark.parametrize("layer", sorted(_GEOMETRIES))
def test_single_layer_geometries(tmp_path, layer):
    """Each layer alone, float (MAM and pools exactly PyTorch's, MAC within rounding) and integer (bit for bit)."""
    torch.manual_seed(13)
    m = nn.Sequential(_GEOMETRIES[layer]()).eval()
    x = _inputs(12, (2, 9, 8))
    x[4, 0, 0, 0], x[5, 1, 3, 3], x[6, 0, 8, 7] = float("-inf"), float("nan"), float("inf")
    res = export.to_c(m, tmp_path / "f", (2, 9, 8))
    y = _run(_compile(res, tmp_path / "f"), x)
    with torch.no_grad():
        ref = m(x).reshape(len(x), -1)
    exact = not isinstance(m[0], nn.Conv2d)
    torch.testing.assert_close(y, ref, rtol=0 if exact else 1e-5, atol=0 if exact else 1e-5, equal_nan=True)
    assert ("packed" in str(res)) == layer.startswith("pruned")
    _int_round_trip(tmp_path / "q", nn.Sequential(_GEOMETRIES[layer]()).eval(), (2, 9, 8), n=40)


@pytest.mark.parametrize("mam", [True, False])
def test_packed_conv_with_wide_offsets_and_a_kernel_wider_than_the_input(tmp_path, mam):
    """Packed convolutions read their kept inputs through offsets: int32 ones past 2**15 inputs per group (inf and
    NaN inputs, borders included); a dilated kernel wider than the input stays dense. MAM exact, MAC within
    rounding."""
    torch.manual_seed(4)
    kind = MAMConv2d if mam else nn.Conv2d
    wide = nn.Sequential(_pruned(kind(3, 4, 3, stride=2, padding=1), 0.9)).eval()
    narrow = nn.Sequential(_pruned(kind(2, 4, 3, padding=3, dilation=3), 0.8)).eval()
    tol = 0 if mam else 1e-5
    for name, m, shape in (("wide", wide, (3, 110, 110)), ("narrow", narrow, (2, 5, 5))):
        x = _inputs(6, shape)
        x[4, 0, 0, 0], x[5, 1, 3, 3] = float("inf"), float("nan")
        res = export.to_c(m, tmp_path / name, shape)
        y = _run(_compile(res, tmp_path / name), x)
        with torch.no_grad():
            ref = m(x).reshape(len(x), -1)
        torch.testing.assert_close(y, ref, rtol=tol, atol=tol, equal_nan=True)
        assert ("packed" in str(res)) == (name == "wide")
    assert re.search(r"int32_t \w*_at\[", (tmp_path / "wide" / res.source.name).read_text())


# --------------------------------------------------------------------------- integer-only path

def _int_codes(q, x):
    """Quantised samples, random codes and the extremes (saturation, every code at the zero point)."""
    n = x[0].numel()
    torch.manual_seed(8)
    extremes = torch.tensor([[127] * n, [-128] * n, [q.input_zero_point] * n], dtype=torch.int8)
    return torch.cat([q.quantize_input(x).reshape(-1, n), torch.randint(-128, 128, (30, n), dtype=torch.int8),
                      extremes])


def _int_round_trip(tmp_path, model, shape, n=80):
    torch.manual_seed(14)
    x = _inputs(n, shape)
    q = pack_integer(model, [x[: n // 2]])
    res = export.to_c(q, tmp_path, shape, torch.int8, name="qnet")
    codes = _int_codes(q, x)
    got = _run_int(_compile_int(res, tmp_path), codes)
    want = q.forward_int8(codes.reshape(-1, *shape)).reshape(len(codes), -1)
    assert torch.equal(got, want)
    return q, res, x, want


def test_int_lenet_is_bit_exact_and_close_to_float(tmp_path):
    m = _lenet(negative_gamma=True)
    q, res, x, want = _int_round_trip(tmp_path, m, (1, 12, 12))
    assert (want == 127).any() and (want == -128).any()
    calls = re.findall(r"mamrt_q_\w+(?=\()", res.source.read_text())
    assert calls[:4] == ["mamrt_q_lin_conv2d", "mamrt_q_maxpool2d", "mamrt_q_mam_conv2d", "mamrt_q_avgpool2d"]
    assert sorted(p.name for p in res.runtime) == ["mam_runtime_conv_int.h", "mam_runtime_int.h",
                                                   "mam_runtime_window.h", "mam_semantics.h"]
    assert res.ram_bytes == 6 * 12 * 12 + 6 * 6 * 6 + 2 * 6 * 3 * 3      # int8 activations, int16 patch
    with torch.no_grad():
        ref = m(x)
    # the batch norms (two with negative gammas after MAM layers) are folded: the integer network still
    # computes the float model up to quantisation
    assert float((q(x) - ref).abs().max()) < 0.03 * float(ref.abs().max())
    assert float((q(x).argmax(1) == ref.argmax(1)).float().mean()) >= 0.95


def test_int_mam_cnn_is_bit_exact(tmp_path):
    """Pruned, grouped, depthwise, strided, dilated and 'same'-padded MAM convolutions, padded pools."""
    m = _mam_cnn()
    _int_round_trip(tmp_path, m, (2, 11, 11))


@pytest.mark.parametrize("encoding", ["index", "delta", "bitmap", "offsets"])
def test_int_pruned_convolutions_in_each_encoding(tmp_path, encoding):
    """Pruned convolutions (one grouped) stored in each index encoding, run patch by patch, or with input offsets
    (the default for at most half the weights kept), bit for bit."""
    torch.manual_seed(15)
    m = nn.Sequential(_pruned(MAMConv2d(2, 8, 3, padding=1, bias=False), 0.8), nn.ReLU(),
                      _pruned(nn.Conv2d(8, 6, 3, stride=2, groups=2), 0.7), nn.ReLU(),   # 3 x 36 bits a group
                      _pruned(MAMConv2d(6, 4, 2, padding=1, groups=2), 0.6)).eval()      # 2 x 12 bits a group
    x = _inputs(40, (2, 9, 9))
    q = pack_integer(m, [x])
    allowed = ("offsets", "index") if encoding == "offsets" else (encoding,)
    res = export.to_c(q, tmp_path, (2, 9, 9), torch.int8, name="qnet", index_encodings=allowed)
    codes = _int_codes(q, x)
    got = _run_int(_compile_int(res, tmp_path), codes)
    assert torch.equal(got, q.forward_int8(codes.reshape(-1, 2, 9, 9)).reshape(len(codes), -1))
    layers = res.layers
    expect = {"index": "indices u8", "delta": "indices d8", "bitmap": "bitmap",
              "offsets": "input offsets int16"}[encoding]
    assert expect in layers[0]
    if encoding == "offsets":  # every layer keeps at most half its weights; the default chooses the same
        assert all(expect in layer for layer in layers[:3])
        assert export.to_c(q, tmp_path / "default", (2, 9, 9), torch.int8, name="qnet").layers == layers
    elif encoding == "bitmap":   # a group's bitmap must start on a byte: 3 x 36 bits do not, 2 x 12 bits do
        assert "dense int8 weight" in layers[1] and "bitmap" in layers[2]
    else:                      # grouped: each group starts at its own offsets in the value and index arrays
        assert expect in layers[1]


@pytest.mark.parametrize("mam", [True, False])
def test_int_offset_convolutions_padding_full_rows_and_wide_inputs(tmp_path, mam):
    """Input offsets: padded positions of kept connections (every input code, the extremes and the zero point),
    a full row and an empty one next to pruned ones (no zero candidate; the bias alone), int32 offsets past 2**15
    inputs per group, bit for bit; above half the weights kept, or with a dilated kernel wider than the input, the index encodings stay."""
    torch.manual_seed(21)
    kind = MAMConv2d if mam else nn.Conv2d
    rows = kind(2, 4, 3, padding=2, dilation=(1, 2))
    with torch.no_grad():
        rows.weight[1:3] *= (torch.rand(2, 2, 3, 3) < 0.3).float()    # row 0 full: 18 of 72 + about 11
        rows.weight[0] = rows.weight[0].abs() + 0.05                     # every product of row 0 has x's sign
        rows.weight[3] = 0                                               # row 3 empty: its bias everywhere
    cases = {"rows": (nn.Sequential(rows, nn.ReLU(), _pruned(kind(4, 4, 2, stride=2, padding=1, groups=2), 0.6)),
                      (2, 7, 6), ["input offsets int16", "input offsets int16"]),
             "wide": (nn.Sequential(_pruned(kind(3, 2, 3, stride=3, padding=1), 0.9)), (3, 110, 110),
                      ["input offsets int32"]),
             "most_kept": (nn.Sequential(_pruned(kind(2, 4, 3, padding=1), 0.3)), (2, 6, 6), ["bitmap"]),
             "narrow": (nn.Sequential(_pruned(kind(2, 4, 3, padding=3, dilation=3), 0.8)), (2, 5, 5),
                        ["bitmap"])}
    for name, (m, shape, layouts) in cases.items():
        q, res, _, want = _int_round_trip(tmp_path / name, m.eval(), shape, n=20)
        convs = [layer for layer in res.layers if " conv " in layer]
        assert len(convs) == len(layouts) and all(want_layout in layer for want_layout, layer in zip(layouts, convs))
        assert ("mamrt_q_packed_conv2d" in res.source.read_text()) == layouts[0].startswith("input offsets")
    assert torch.unique(want).numel() > 1


def test_int_cnn_has_no_float_in_object_code(tmp_path):
    """Dense, input-offset and encoded integer convolutions and both pools compile with no floating point at all."""
    x = _inputs(16, (2, 11, 11))
    # -mgeneral-regs-only: any floating-point operation is a compile error on x86-64
    machine = subprocess.run(["gcc", "-dumpmachine"], capture_output=True, text=True).stdout
    flags = ["-mgeneral-regs-only"] if machine.startswith("x86_64") else []
    for layout, encodings in (("input offsets", None), ("indices u8", ("index",))):
        folder = tmp_path / layout.replace(" ", "_")
        res = export.to_c(pack_integer(_mam_cnn(), [x]), folder, (2, 11, 11), torch.int8, name="qnet",
                          index_encodings=encodings)
        assert layout in str(res) and "dense int8 weight" in str(res)
        subprocess.run(["gcc", *_STRICT, *flags, "-c", "-o", str(folder / "net.o"), str(res.source)], check=True,
                       capture_output=True, text=True)
        symbols = subprocess.run(["nm", str(folder / "net.o")], capture_output=True, text=True, check=True).stdout
        assert not re.search(r"\b(__\w*(sf|df)\w*|__float\w*|__fix\w*)\b", symbols)


def test_int_negative_gamma_folds_exactly():
    """Folding a negative scale into a MAM layer negates its codes; max + min of the negated products is
    exactly the negated max + min, so the folded layer equals the unfolded one followed by the scale."""
    torch.manual_seed(9)
    conv = MAMConv2d(2, 4, 3, padding=1)
    bn = _batchnorm(nn.BatchNorm2d(4), negative=True, seed=10)
    x = _inputs(40, (2, 6, 6))
    folded = pack_integer(nn.Sequential(conv, bn).eval(), [x])
    with torch.no_grad():
        ref = bn.eval()(conv(x))
    err = (folded(x) - ref).abs().max()
    assert float(err) < 0.03 * float(ref.abs().max())
    layer = folded.layers[0]
    plain = pack_integer(nn.Sequential(conv).eval(), [x]).layers[0]
    signs = torch.sign(bn.weight.detach()).to(torch.int64)
    assert torch.equal(layer.weight.to(torch.int64), plain.weight.to(torch.int64) * signs[:, None, None, None])


def _brute_force_conv(layer, codes):
    """acc of an IntConv2d by plain loops over outputs and patch positions."""
    B, C, H, W = codes.shape
    k_h, k_w = layer.kernel_size
    (s_h, s_w), (d_h, d_w), (top, left, bottom, right) = layer.stride, layer.dilation, layer.padding
    h_out = (H + top + bottom - d_h * (k_h - 1) - 1) // s_h + 1
    w_out = (W + left + right - d_w * (k_w - 1) - 1) // s_w + 1
    cin_g, cout_g = C // layer.groups, layer.out_channels // layer.groups
    acc = torch.zeros(B, layer.out_channels, h_out, w_out, dtype=torch.int64)
    for b in range(B):
        for o in range(layer.out_channels):
            for i in range(h_out):
                for j in range(w_out):
                    products = []
                    for c in range(cin_g):
                        for u in range(k_h):
                            for v in range(k_w):
                                r, s = i * s_h - top + u * d_h, j * s_w - left + v * d_w
                                inside = 0 <= r < H and 0 <= s < W
                                xv = int(codes[b, o // cout_g * cin_g + c, r, s]) - layer.input_zero_point \
                                    if inside else 0
                                products.append(int(layer.weight[o, c, u, v]) * xv)
                    total = max(products) + min(products) if layer.mam else sum(products)
                    acc[b, o, i, j] = total + int(layer.bias[o])
    return acc


@pytest.mark.parametrize("mam", [True, False], ids=["mam", "mac"])
def test_int_conv_reference_against_loops(mam):
    torch.manual_seed(11)
    weight = torch.randn(4, 1, 3, 2)
    weight[weight.abs() < 0.3] = 0                                   # pruned weights
    layer = IntConv2d.from_float(weight, torch.randn(4), mam=mam, stride=(2, 1), padding=(1, 0, 2, 1),
                                 dilation=(1, 2), groups=2, input_scale=0.05, input_zero_point=-7,
                                 output_scale=0.1, output_zero_point=3, relu=False)
    codes = torch.randint(-128, 128, (2, 2, 7, 6), dtype=torch.int8)
    assert torch.equal(layer.accumulate(codes), _brute_force_conv(layer, codes))


@pytest.mark.parametrize("include_pad, divisor", [(True, None), (False, None), (True, 3)])
def test_int_pools_against_float(include_pad, divisor):
    torch.manual_seed(12)
    codes = torch.randint(-128, 128, (3, 2, 7, 7), dtype=torch.int8)
    codes[0] = 5                                                     # ties and exact halves
    zp = -9
    pool = IntAvgPool2d(3, 2, 1, zero_point=zp, count_include_pad=include_pad, divisor_override=divisor)
    mean = F.avg_pool2d(codes.double() - zp, 3, 2, 1, count_include_pad=include_pad, divisor_override=divisor)
    rounded = torch.sign(mean) * torch.floor(mean.abs() + 0.5)        # half away from zero
    assert torch.equal(pool(codes).long(), (rounded + zp).clamp(-128, 127).long())
    top = IntMaxPool2d(3, 2, 1, dilation=2)(codes)
    assert torch.equal(top, F.max_pool2d(codes.double(), 3, 2, 1, dilation=2).to(torch.int8))


def test_int_refusals():
    x = torch.randn(8, 2, 6, 6)
    with pytest.raises(ValueError, match="must directly follow"):
        pack_integer(nn.Sequential(nn.BatchNorm2d(2).eval(), nn.Conv2d(2, 2, 3)).eval(), [x])
    with pytest.raises(ValueError, match="padding_mode"):
        pack_integer(nn.Sequential(nn.Conv2d(2, 2, 3, padding_mode="circular", padding=1)).eval(), [x])
    with pytest.raises(ValueError, match="ceil_mode"):
        pack_integer(nn.Sequential(nn.MaxPool2d(2, ceil_mode=True)).eval(), [x])
    blending = MAMConv2d(2, 2, 3)
    blending.beta.fill_(0.5)
    with pytest.raises(ValueError, match="beta"):
        pack_integer(nn.Sequential(blending).eval(), [x])
    codes = torch.zeros(1, 4, 2, 2, dtype=torch.int32)
    with pytest.raises(ValueError, match="padding"):
        IntConv2d(codes, codes[0, 0, 0], codes[0, 0, 0], codes[0, 0, 0], mam=True, stride=1, padding=(0, -1, 0, 0),
                  dilation=1, groups=1, input_zero_point=0, output_zero_point=0)
    with pytest.raises(TypeError, match="int8 codes"):
        IntMaxPool2d(2, 2, 0)(torch.zeros(1, 1, 4, 4))
    wide = torch.randn(2, 4000, 3, 3)                             # 36000 products per MAC output
    with pytest.raises(ValueError, match="int32 sums are exact"):
        pack_integer(nn.Sequential(nn.Conv2d(4000, 1, 3)).eval(), [wide])


# --------------------------------------------------------------------------- packed convolutions, Unflatten

def _flat_cnn(pruned=True):
    """Flat inputs unflattened to images; MAM and grouped MAC convolutions, a pool, a MAM head (pruned)."""
    torch.manual_seed(21)
    m = nn.Sequential(nn.Unflatten(1, (2, 9, 9)), MAMConv2d(2, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(8, 6, 3, groups=2), nn.ReLU(), nn.Flatten(), MAMLinear(24, 10)).eval()
    for index, amount in ((1, 0.7), (4, 0.6), (7, 0.5)) if pruned else ():
        torch_prune.l1_unstructured(m[index], "weight", amount=amount)
    return m


def test_packed_convolutions_and_unflatten_in_float(tmp_path):
    """Packed convolutions export from their kept connections: the MAM outputs equal PyTorch's exactly."""
    masked = _flat_cnn()
    packed = sparse.pack(masked, layers=["1", "4", "7"])
    assert [type(packed[i]).__name__ for i in (1, 4)] == ["PackedMAMConv2d", "PackedConv2d"]
    res = export.to_c(packed, tmp_path, (162,))
    assert res.layers[0] == "0: Unflatten -> (2, 9, 9)"
    assert "1: packed MAM conv 2->8" in res.layers[1] and "4: packed MAC conv 8->6" in res.layers[4]
    x = _inputs(30, (162,))
    y = _run(_compile(res, tmp_path), x)
    with torch.no_grad():
        ref, ref_masked = packed(x), masked(x)
    torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-6)
    mam_only = nn.Sequential(*list(packed)[:4], nn.Flatten()).eval()     # up to the MAC convolution: exact
    res = export.to_c(mam_only, tmp_path / "mam", (162,))
    with torch.no_grad():
        assert torch.equal(_run(_compile(res, tmp_path / "mam"), x), mam_only(x))
    torch.testing.assert_close(ref, ref_masked, rtol=1e-6, atol=1e-6)


def test_packed_convolutions_in_the_integer_path(tmp_path):
    """pack_integer of the packed model is the masked model's integer network, bit for bit, and exports."""
    masked = _flat_cnn()
    packed = sparse.pack(masked, layers=["1", "4", "7"])
    x = _inputs(40, (162,))
    from_packed, from_masked = pack_integer(packed, [x]), pack_integer(masked, [x])
    codes = _int_codes(from_packed, x)
    want = from_packed.forward_int8(codes)
    assert torch.equal(want, from_masked.forward_int8(codes))
    assert [layer.mam for layer in from_packed.layers if isinstance(layer, IntConv2d)] == [True, False]
    res = export.to_c(from_packed, tmp_path, (162,), torch.int8, name="qnet")
    assert res.layers[0] == "layers.0: Unflatten -> (2, 9, 9)"
    assert torch.equal(_run_int(_compile_int(res, tmp_path), codes), want)


@pytest.mark.parametrize("make, shape, match", [
    (lambda: nn.Unflatten(0, (1, 25)), (25,), "unflattens the batch dimension"),
    (lambda: nn.Unflatten(-2, (1, 25)), (25,), "unflattens the batch dimension"),
    (lambda: nn.Unflatten(1, (2, 13)), (25,), "cannot unflatten"),
    (lambda: nn.Unflatten(3, (1, 25)), (25,), "cannot unflatten"),
    (lambda: sparse.pack(nn.Sequential(torch_prune.l1_unstructured(MAMConv2d(1, 2, 3), "weight", 0.5)),
                         torch.int8, layers=["0"])[0], (1, 5, 5), "packed as int8"),
])
def test_packed_and_unflatten_refusals(tmp_path, make, shape, match):
    with pytest.raises(ValueError, match=match):
        export.to_c(nn.Sequential(make()).eval(), tmp_path, shape)


def test_packed_convolution_with_broken_buffers_is_refused(tmp_path):
    packed = sparse.pack(_flat_cnn(), layers=["1"])
    with torch.no_grad():
        packed[1].indices[0] = 200                      # past the 18 positions of a patch
    with pytest.raises(ValueError, match="packed convolution '1' has inconsistent buffers"):
        export.to_c(packed, tmp_path, (162,))


def _conv1d_net():
    """1-d convolutions (pruned, strided, dilated, grouped, depthwise with 'same' padding of an even kernel), a
    MAC one with a folded BatchNorm1d, a MAM head."""
    torch.manual_seed(23)
    m = nn.Sequential(MAMConv1d(2, 6, 3, padding=1), nn.ReLU(), MAMConv1d(6, 6, 3, stride=2, padding=2, dilation=2,
                                                                        groups=3),
                      MAMConv1d(6, 6, 4, padding="same", groups=6, bias=False), nn.Conv1d(6, 4, 3),
                      _batchnorm(nn.BatchNorm1d(4), seed=5), nn.ReLU(), nn.Flatten(), MAMLinear(4 * 5, 5)).eval()
    torch_prune.l1_unstructured(m[0], "weight", amount=0.6)
    torch_prune.l1_unstructured(m[4], "weight", amount=0.5)
    return m


def test_conv1d_in_float(tmp_path):
    """A 1-d convolution is a height-1 2-d one on (C, 1, L): MAM exact, MAC within rounding, packed too."""
    m = _conv1d_net()
    x = _inputs(30, (2, 13))
    res = export.to_c(m, tmp_path, (2, 13))
    assert "0: packed MAM conv1d 2->6 k3 s1 -> (6, 13)" in res.layers[0] and "5 folded" in res.layers[4]
    with torch.no_grad():
        torch.testing.assert_close(_run(_compile(res, tmp_path), x), m(x), rtol=1e-5, atol=1e-5)
    mam_part = nn.Sequential(*list(m)[:4], nn.Flatten()).eval()
    packed = sparse.pack(mam_part, layers=["0"])
    assert type(packed[0]).__name__ == "PackedMAMConv1d"
    for model, where in ((mam_part, "mam"), (packed, "packed")):
        res = export.to_c(model, tmp_path / where, (2, 13))
        with torch.no_grad():
            assert torch.equal(_run(_compile(res, tmp_path / where), x), model(x))


def test_conv1d_in_the_integer_path(tmp_path):
    m = _conv1d_net()
    q, res, x, _ = _int_round_trip(tmp_path, m, (2, 13))
    assert [type(layer).__name__ for layer in q.layers][:3] == ["Unflatten", "IntConv2d", "Flatten"]
    assert "integer MAM conv 2->6 k1x3" in res.layers[1]
    with torch.no_grad():
        assert float((q(x).argmax(1) == m(x).argmax(1)).float().mean()) >= 0.9


# --------------------------------------------------------------------------- Cortex-M firmware

def _mcu_with_tools():
    """mamext.mcu where the Arm compiler and QEMU are installed; skips without them, except under CI."""
    mcu = pytest.importorskip("mamext.mcu")
    try:
        mcu._tools.Compiler.find()
        mcu._tools.find_qemu()
    except mcu.ToolsMissingError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the firmware tests: {e}")
        pytest.skip(str(e))
    return mcu


def test_cnn_firmware_on_cortex_m(tmp_path):
    """The exported CNNs built for Cortex-M under QEMU: the integer-only LeNet on a Cortex-M3 (no FPU: no
    floating point anywhere) and the float MAM CNN on a Cortex-M4, both equal to their references."""
    mcu = _mcu_with_tools()
    lenet, x = _lenet(), _inputs(6, (1, 12, 12))
    integer = pack_integer(lenet, [_inputs(40, (1, 12, 12), seed=1)])
    firmware = mcu.build(integer, tmp_path / "m3", (1, 12, 12), target="cortex-m3", dtype=torch.int8)
    out, _ = firmware.run(x, repeats=1)
    assert torch.equal(out, integer(x))
    cnn, x = _mam_cnn(), _inputs(6, (2, 11, 11))
    firmware = mcu.build(cnn, tmp_path / "m4", (2, 11, 11), target="cortex-m4", dtype=torch.float32)
    out, _ = firmware.run(x, repeats=1)
    with torch.no_grad():
        assert torch.equal(out, cnn(x))


def test_fit_prunes_a_cnns_linear_layers_and_the_named_convolutions(tmp_path):
    """mcu.fit on a CNN with flat inputs: by default it prunes the linear layers only (convolutions stay dense,
    as prune_model's rules say); named convolutions (as modules or names) are pruned and counted too. The chosen
    integer network runs on the device bit for bit."""
    mcu = _mcu_with_tools()
    model = _flat_cnn(pruned=False)
    x = _inputs(40, (162,))
    with torch.no_grad():
        data = [(x, model(x).argmax(1))]
    options = dict(flash_bytes=10 ** 6, ram_bytes=10 ** 6, fractions=(0.5,), calibration=[x])
    linear_only = mcu.fit(model, data, **options)
    assert (linear_only.table[0].kept, linear_only.table[0].total) == (120, 240)
    convs = [layer for layer in linear_only.model.layers if isinstance(layer, IntConv2d)]
    assert len(convs) == 2 and all(bool((conv.weight != 0).float().mean() > 0.9) for conv in convs)
    named = mcu.fit(model, data, layers=[model[1], "4", "7"], **options)
    assert named.table[0].total == 8 * 2 * 9 + 6 * 4 * 9 + 240 and named.table[0].kept == named.table[0].total // 2
    firmware = mcu.build(named.model, tmp_path / "fw", (162,), target="cortex-m4")
    out, _ = firmware.run(x[:8], repeats=1)
    assert torch.equal(out, named.model(x[:8]))


def test_fit_refuses_a_layer_outside_the_model():
    from mamext import mcu

    model = _flat_cnn(pruned=False)
    x = _inputs(8, (162,))
    with pytest.raises(ValueError, match="layers holds a Conv2d that is not a module of model"):
        mcu.fit(model, [(x, torch.zeros(8, dtype=torch.long))], flash_bytes=10 ** 6, ram_bytes=10 ** 6,
                layers=[nn.Conv2d(8, 6, 3)])
