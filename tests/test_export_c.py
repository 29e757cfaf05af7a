"""C export round trip (mamext.export.to_c): compile with gcc -std=c99 -Wall
-Wextra -Werror -pedantic, run the harness, compare with the PyTorch model."""

from __future__ import annotations

import math
import shutil
import subprocess

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

from mamext import export, sparse
from mamext.nn import MAMLinear

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


def _compile(result, tmp_path):
    exe = tmp_path / "net"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-o", str(exe), str(result.source),
                    str(result.main)], check=True, capture_output=True, text=True)
    return exe


def _run(exe, x):
    text = "\n".join(" ".join(f"{v:.9g}" for v in row) for row in x.reshape(x.shape[0], -1).tolist())
    out = subprocess.run([str(exe)], input=text + "\n", capture_output=True, text=True, check=True).stdout
    return torch.tensor([[float(t) for t in line.split()] for line in out.strip().splitlines()])


def _model():
    torch.manual_seed(1)
    m = nn.Sequential(nn.Flatten(), MAMLinear(64, 48), nn.ReLU(), nn.Linear(48, 40), nn.ReLU(),
                      MAMLinear(40, 300), nn.Dropout(0.1), nn.ReLU(), MAMLinear(300, 10))
    torch_prune.l1_unstructured(m[1], "weight", amount=0.95)   # masks
    with torch.no_grad():
        m[3].weight[m[3].weight.abs() < 0.05] = 0              # plain zeros
        m[1].weight_orig[5] = 0.0                               # (masked) empty neuron
    torch_prune.l1_unstructured(m[8], "weight", amount=0.9)   # int16 indices (K=300)
    return m.eval()                                            # m[5]: dense MAM


def test_float_round_trip(tmp_path):
    m = _model()
    res = export.to_c(m, tmp_path, (1, 8, 8))
    exe = _compile(res, tmp_path)
    x = torch.randn(25, 1, 8, 8)
    x[3, 0, 0, :] = 0  # exact zeros
    y = _run(exe, x)
    with torch.no_grad():
        ref = m(x)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
    # reports
    assert res.input_size == 64 and res.output_size == 10
    assert res.largest_activation_bytes == 300 * 4
    assert res.ram_bytes == (300 + 40) * 4  # act0 holds 48 then 300 floats, act1 40 then 10
    header = res.header.read_text()
    assert f"MAMNET_FLASH_BYTES {res.flash_bytes}" in header
    p = sparse.pack(m)
    expect = sum(t.numel() * t.element_size() for mod in p.modules() if isinstance(mod, sparse.PackedLayer)
                 for t in (mod.values, mod.indices, mod.offsets, mod.bias))
    expect += (m[5].weight.numel() + m[5].bias.numel()) * 4
    assert res.flash_bytes == expect
    assert "dense MAM" in str(res) and "packed MAM" in str(res)


def test_float_packed_model_and_nonfinite(tmp_path):
    m = sparse.pack(_model())
    res = export.to_c(m, tmp_path, (64,), name="packed_net")
    exe = _compile(res, tmp_path)
    x = torch.randn(6, 64)
    x[1, 7] = float("inf")
    x[2, 9] = float("nan")
    x[4, :] = float("-inf")
    y = _run(exe, x)
    with torch.no_grad():
        ref = m(x)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5 * float(ref[ref.isfinite()].abs().max()),
                               equal_nan=True)


def test_int8_round_trip_is_exact(tmp_path):
    m = _model()
    res = export.to_c(m, tmp_path, (1, 8, 8), dtype=torch.int8)
    exe = _compile(res, tmp_path)
    q = sparse.pack(m, torch.int8)
    assert all(not isinstance(mod, (nn.Linear, MAMLinear)) for mod in q.modules())
    x = torch.randn(40, 1, 8, 8) * 2
    x[0] = 0
    y = _run(exe, x)
    with torch.no_grad():
        ref = q(x)
    assert torch.equal(y, ref), (y - ref).abs().max()
    assert res.ram_bytes == (300 + 40) * 4 + 300  # two activation buffers and the int8 input buffer
    with torch.no_grad():  # and it is a reasonable approximation of the float model
        fl = m(x)
    assert (ref - fl).abs().max() < 0.1 * fl.abs().max()


def test_rows_activation(tmp_path):
    """A Linear applied to a (rows, K) activation: rows are independent."""
    torch.manual_seed(2)
    m = nn.Sequential(MAMLinear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        m[0].weight[:, ::3] = 0
    for dtype in (torch.float32, torch.int8):
        res = export.to_c(m, tmp_path / str(dtype), (4, 16), dtype=dtype)
        exe = _compile(res, tmp_path / str(dtype))
        x = torch.randn(3, 4, 16)
        y = _run(exe, x)
        with torch.no_grad():
            ref = (m if dtype == torch.float32 else sparse.pack(m, dtype))(x).reshape(3, -1)
        if dtype == torch.int8:
            assert torch.equal(y, ref)
        else:
            torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)


def test_errors(tmp_path):
    with pytest.raises(ValueError, match=r"'1' \(Tanh\)"):
        export.to_c(nn.Sequential(nn.Linear(4, 4), nn.Tanh()), tmp_path, (4,))

    class Custom(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ValueError, match=r"'0\.1' \(Custom\)"):
        export.to_c(nn.Sequential(nn.Sequential(nn.ReLU(), Custom())), tmp_path, (4,))
    with pytest.raises(ValueError, match="expects inputs with last dimension 4"):
        export.to_c(nn.Sequential(nn.Linear(4, 4)), tmp_path, (5,))
    with pytest.raises(ValueError, match="input_shape"):
        export.to_c(nn.Linear(4, 4), tmp_path, ())
    with pytest.raises(TypeError, match="dtype"):
        export.to_c(nn.Linear(4, 4), tmp_path, (4,), dtype=torch.float16)
    with pytest.raises(ValueError, match="int8"):
        export.to_c(sparse.pack(nn.Linear(4, 4), torch.int8), tmp_path, (4,))
    with pytest.raises(ValueError, match="batch"):
        export.to_c(nn.Sequential(nn.Flatten(0)), tmp_path, (4,))
    assert math.prod((2, 3)) == 6
