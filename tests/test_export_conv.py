"""C export of CNNs (mamext.export.to_c): MAMConv2d / nn.Conv2d, pooling, folded batch norms, in float32
(compiled with gcc -std=c99 -Wall -Wextra -Werror -pedantic, MAM exactly equal to PyTorch, MAC within float
rounding) and in the integer-only path (bit for bit equal to mamext.quant's integer reference)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

from mamext import export
from mamext.nn import MAMConv2d, MAMLinear
from test_export_c import _compile, _run

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
    patch = 2 * 3 * 3                                               # the largest c_in / groups * k_h * k_w
    assert res.ram_bytes == 4 * (6 * 11 * 11 + 6 * 6 * 6 + patch)


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


def test_generated_cnn_compiles_with_strict_flags(tmp_path):
    res = export.to_c(_lenet(), tmp_path, (1, 12, 12), name="lenet")
    done = subprocess.run(["gcc", *_STRICT, "-o", "net", "lenet.c", "lenet_main.c"], cwd=tmp_path,
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
    (nn.Conv1d(1, 2, 3), (1, 5), "unsupported module"),
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
