"""The C runtime of mamext.export.to_c: its headers compile cleanly on their own, it ships the very
mam_semantics.h the PyTorch kernels are compiled from, and every packed kernel (index type x MAM/Linear x
float/int8) matches PyTorch."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from mamext import export, sparse
from mamext.export import _runtime
from mamext.nn import MAMLinear
from test_export_c import _compile, _run

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

_REPO = Path(__file__).resolve().parents[1]

# Calls every kernel once, so each is instantiated and checked by the compiler.
_DRIVER = r"""
#include "mam_runtime.h"

int main(void)
{
    static const float x[4] = {1.0f, -2.0f, 0.5f, 0.0f};
    static const float w[8] = {1.0f, 2.0f, 3.0f, 4.0f, -1.0f, 0.0f, 1.0f, 2.0f};
    static const float bias[2] = {0.25f, -0.25f};
    static const float val[3] = {1.0f, -1.0f, 2.0f};
    static const int8_t val8[3] = {127, -64, 3};
    static const float wscale[2] = {0.5f, 0.25f};
    static const uint8_t idx8[3] = {0, 3, 1};
    static const int16_t idx16[3] = {0, 3, 1};
    static const int32_t idx32[3] = {0, 3, 1};
    static const int32_t off[3] = {0, 2, 3};
    static int8_t q[4];
    float y[2];
    float total = 0.0f;
#define MAMRT_ALL_F32(suffix, idx) \
    mamrt_mam_csr_f32_##suffix(x, y, 1, 4, 2, val, idx, off, bias); total += y[0] + y[1]; \
    mamrt_lin_csr_f32_##suffix(x, y, 1, 4, 2, val, idx, off, bias); total += y[0] + y[1]; \
    mamrt_mam_csr_i8_##suffix(x, y, 1, 4, 2, val8, idx, off, wscale, bias, q); total += y[0] + y[1]; \
    mamrt_lin_csr_i8_##suffix(x, y, 1, 4, 2, val8, idx, off, wscale, (const float *)0, q); total += y[0] + y[1];
    MAMRT_ALL_F32(u8, idx8)
    MAMRT_ALL_F32(i16, idx16)
    MAMRT_ALL_F32(i32, idx32)
    mamrt_mam_dense_f32(x, y, 1, 4, 2, w, bias);
    total += y[0] + y[1];
    mamrt_lin_dense_f32(x, y, 1, 4, 2, w, (const float *)0);
    total += y[0] + y[1];
    total += mamrt_quantize(x, 4, q);
    return total == total ? 0 : 1;
}
"""

# the usual flags plus those embedded builds commonly add
_STRICT = ["-Wall", "-Wextra", "-Werror", "-pedantic", "-Wshadow", "-Wstrict-prototypes", "-Wmissing-prototypes",
           "-Wcast-qual", "-Wundef", "-Wconversion", "-Wsign-conversion", "-Wdouble-promotion"]


@pytest.mark.parametrize("std", ["c99", "c11"])
@pytest.mark.parametrize("opt", ["-O0", "-O2"])
def test_runtime_compiles_warning_free(tmp_path, std, opt):
    for src in _runtime.runtime_files():
        shutil.copyfile(src, tmp_path / src.name)
    (tmp_path / "driver.c").write_text(_DRIVER)
    exe = tmp_path / "driver"
    done = subprocess.run(["gcc", f"-std={std}", opt, *_STRICT, "-o", str(exe), str(tmp_path / "driver.c")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert subprocess.run([str(exe)]).returncode == 0


def test_exported_semantics_header_is_the_kernels_header(tmp_path):
    res = export.to_c(nn.Sequential(MAMLinear(4, 2)), tmp_path, (4,))
    names = sorted(p.name for p in res.runtime)
    assert names == ["mam_runtime.h", "mam_runtime_csr.h", "mam_semantics.h"]
    for p in res.runtime:
        assert p.parent == tmp_path and p.is_file()
    shipped = (tmp_path / "mam_semantics.h").read_bytes()
    assert shipped == (_REPO / "csrc" / "common" / "mam_semantics.h").read_bytes()
    assert '#include "mam_semantics.h"' in (tmp_path / "mam_runtime.h").read_text()
    assert "mamext_max_f32" in (tmp_path / "mam_runtime_csr.h").read_text()


def test_compiles_from_out_dir_alone(tmp_path):
    """The exported folder is self-contained: moved elsewhere, it compiles with no include path."""
    m = nn.Sequential(MAMLinear(6, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    export.to_c(m, tmp_path / "a", (6,), torch.int8)
    moved = tmp_path / "b"
    shutil.copytree(tmp_path / "a", moved)
    done = subprocess.run(["gcc", "-std=c99", "-O2", *_STRICT, "-o", "net", "mamnet.c", "mamnet_main.c"], cwd=moved,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_semantics_header_lookup(tmp_path, monkeypatch):
    installed, source_tree = tmp_path / "installed", tmp_path / "csrc_common"
    installed.mkdir()
    source_tree.mkdir()
    monkeypatch.setattr(_runtime, "RUNTIME_DIR", installed)
    monkeypatch.setattr(_runtime, "_SOURCE_TREE_DIR", source_tree)
    with pytest.raises(FileNotFoundError, match="mam_semantics.h"):
        _runtime.semantics_header()
    with pytest.raises(FileNotFoundError, match="mam_semantics.h"):
        export.to_c(nn.Linear(2, 2), tmp_path / "out", (2,))
    assert not (tmp_path / "out").exists()  # nothing written before the runtime is found
    (source_tree / "mam_semantics.h").write_text("/* tree */\n")
    assert _runtime.semantics_header() == source_tree / "mam_semantics.h"
    (installed / "mam_semantics.h").write_text("/* installed */\n")
    assert _runtime.semantics_header() == installed / "mam_semantics.h"


def _pruned_layer(K, mam, seed):
    torch.manual_seed(seed)
    layer = MAMLinear(K, 5) if mam else nn.Linear(K, 5)
    with torch.no_grad():
        keep = torch.rand(5, K) < min(1.0, 24 / K)
        keep[1] = False                  # a neuron with every connection pruned
        if K <= 300:
            keep[2] = True               # an unpruned neuron among pruned ones
        layer.weight.mul_(keep)
    return layer.eval()


@pytest.mark.parametrize("K, index", [(16, "u8"), (300, "i16"), (33000, "i32")])
@pytest.mark.parametrize("mam", [True, False], ids=["mam", "lin"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.int8], ids=["f32", "i8"])
def test_every_packed_kernel_matches_pytorch(tmp_path, K, index, mam, dtype):
    layer = _pruned_layer(K, mam, seed=K)
    res = export.to_c(layer, tmp_path, (K,), dtype)
    kernel = f"mamrt_{'mam' if mam else 'lin'}_csr_{'i8' if dtype == torch.int8 else 'f32'}_{index}("
    assert kernel in res.source.read_text()
    exe = _compile(res, tmp_path)
    torch.manual_seed(0)
    x = torch.randn(4, K) * 3
    x[1] = 0
    if dtype == torch.float32:
        x[2, 0] = float("inf")               # non-finite input: NaN where the dense layer gives NaN
    y = _run(exe, x)
    with torch.no_grad():
        ref = (sparse.pack(layer, dtype) if dtype == torch.int8 else layer)(x)
    if dtype == torch.int8 or mam:
        torch.testing.assert_close(y, ref, rtol=0, atol=0, equal_nan=True)
    else:
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5 * float(ref[ref.isfinite()].abs().max()),
                                   equal_nan=True)
