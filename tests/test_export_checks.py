"""mamext.export.to_c refuses what the generated C cannot represent, with an error naming the argument or the
layer, and no user string can become code."""

from __future__ import annotations

import shutil
import string
import subprocess
from collections import OrderedDict

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mamext import export, sparse
from mamext.export._c_text import comment_text
from mamext.nn import MAMLinear
from test_export_c import _compile, _run

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


def _layer(K=5, N=3, mam=True):
    torch.manual_seed(0)
    return (MAMLinear(K, N) if mam else nn.Linear(K, N)).eval()


# --------------------------------------------------------------------------- activation buffers

@pytest.mark.parametrize("dtype", [torch.float32, torch.int8])
def test_single_layer_uses_one_buffer(tmp_path, dtype):
    """One layer writes one buffer: the other is neither declared (-Werror: unused) nor counted as RAM."""
    m = nn.Sequential(_layer())
    res = export.to_c(m, tmp_path, (5,), dtype)
    exe = _compile(res, tmp_path)
    assert "act1" not in res.source.read_text()
    assert res.ram_bytes == 3 * 4 + (5 if dtype == torch.int8 else 0)
    x = torch.randn(4, 5)
    with torch.no_grad():
        ref = (sparse.pack(m, dtype) if dtype == torch.int8 else m)(x)
    torch.testing.assert_close(_run(exe, x), ref, rtol=0, atol=0)


def test_no_layer_uses_no_buffer(tmp_path):
    res = export.to_c(nn.Sequential(nn.Flatten(), nn.Identity()), tmp_path, (2, 3))
    _compile(res, tmp_path)
    assert res.ram_bytes == 0 and "static float" not in res.source.read_text()


# --------------------------------------------------------------------------- user strings in the C text

_HOSTILE_NAMES = ["x*/ static int injected_a; /*", "*/\nstatic int injected_b;\n/*", "y??/", "z\\",
                  "/* injected_c", "\u00e9\u2028*\u2029/ injected_d", "??""/ injected_e *?""?/"]


def test_module_names_stay_inside_comments(tmp_path):
    layers = OrderedDict((name, nn.ReLU()) for name in _HOSTILE_NAMES)
    layers["last"] = _layer(4, 2)
    res = export.to_c(nn.Sequential(layers), tmp_path, (4,))
    _compile(res, tmp_path)
    for path in (res.header, res.source, res.main):
        code = subprocess.run(["gcc", "-std=c99", "-E", "-P", "-x", "c", str(path)], capture_output=True,
                              text=True, check=True, cwd=tmp_path).stdout
        assert "injected" not in code
    assert any("x*/ static int injected_a; /*" in line for line in res.layers)  # the report keeps the name


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("*/?\\\n\r\t ab\u00e9\u2028")), max_size=40) | st.text(max_size=40))
def test_comment_text_is_inert(text):
    safe = comment_text(text)
    assert "*/" not in safe and "/*" not in safe and "??" not in safe and "\\" not in safe
    assert all(c in string.printable and c not in "\r\n\t\x0b\x0c" for c in safe)


@pytest.mark.parametrize("name", ["int", "static", "bool", "_net", "__net", "1net", "net-1", "n\u00e9t", "",
                                  "mam_runtime", "MAM_RUNTIME", "mam_semantics", "mamext_mam_semantics",
                                  "mam_runtime_csr"])
def test_name_must_be_a_free_c_identifier(tmp_path, name):
    with pytest.raises(ValueError, match="name"):
        export.to_c(_layer(), tmp_path, (5,), name=name)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", [None, 3, b"net"])
def test_name_type(tmp_path, name):
    with pytest.raises(TypeError, match="name"):
        export.to_c(_layer(), tmp_path, (5,), name=name)


# --------------------------------------------------------------------------- argument checks

def test_empty_out_dir_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for out_dir in ("", "  "):
        with pytest.raises(ValueError, match="out_dir"):
            export.to_c(_layer(), out_dir, (5,))
    assert not any(tmp_path.iterdir())
    export.to_c(_layer(), ".", (5,))  # the current directory, said explicitly
    assert (tmp_path / "mamnet.c").is_file()


def test_out_dir_type_and_kind(tmp_path):
    for out_dir in (None, 3, b"dir"):
        with pytest.raises(TypeError, match="out_dir"):
            export.to_c(_layer(), out_dir, (5,))
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="out_dir .* not a directory"):
        export.to_c(_layer(), tmp_path / "file", (5,))


@pytest.mark.parametrize("shape", [(12.9,), 12.9, (5.0,), (True,), True, "5", ("5",), (5, None), [np.float32(5)],
                                   torch.tensor([5.0]), torch.ones(1, 1, dtype=torch.int64)])
def test_input_shape_must_hold_ints(tmp_path, shape):
    with pytest.raises(TypeError, match="input_shape"):
        export.to_c(nn.Sequential(nn.ReLU()), tmp_path, shape)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("shape", [(), (0,), (-3,), (4, 0), -1])
def test_input_shape_must_be_positive(tmp_path, shape):
    with pytest.raises(ValueError, match="input_shape"):
        export.to_c(nn.Sequential(nn.ReLU()), tmp_path, shape)


@pytest.mark.parametrize("shape", [5, (5,), [5], torch.Size([5]), (np.int64(5),), (torch.tensor(5),),
                                   torch.tensor([5]), torch.tensor(5)])
def test_input_shape_integer_types(tmp_path, shape):
    assert export.to_c(_layer(), tmp_path, shape).input_size == 5


@pytest.mark.parametrize("dtype", ["int8", torch.float64, torch.qint8, None])
def test_dtype(tmp_path, dtype):
    with pytest.raises(TypeError, match="dtype"):
        export.to_c(_layer(), tmp_path, (5,), dtype)


# --------------------------------------------------------------------------- int32 indexing

def test_activation_beyond_int32_is_refused(tmp_path):
    with pytest.raises(ValueError, match="int32"):
        export.to_c(nn.Sequential(nn.ReLU()), tmp_path, (65536, 65536))
    with pytest.raises(ValueError, match=r"output of layer '0'.*int32"):
        export.to_c(nn.Sequential(nn.Linear(1, 4)), tmp_path, (2 ** 30, 1))
    assert not any(tmp_path.iterdir())


def test_dense_weight_beyond_int32_is_refused(tmp_path):
    big = nn.Linear(2 ** 16, 2 ** 15 + 1, device="meta")  # N * K > 2**31 - 1, never allocated
    with pytest.raises(ValueError, match=r"layer '1'.*int32"):
        export.to_c(nn.Sequential(nn.Flatten(), big), tmp_path, (2 ** 16,))
    assert not any(tmp_path.iterdir())


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_zero_out_features_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"layer '0'.*out_features=0"):
        export.to_c(nn.Sequential(MAMLinear(4, 0)), tmp_path, (4,))


# --------------------------------------------------------------------------- weights

@pytest.mark.parametrize("dtype", [torch.float32, torch.int8])
@pytest.mark.parametrize("what, value", [("weight", float("nan")), ("weight", float("inf")),
                                         ("bias", float("-inf")), ("bias", float("nan"))])
def test_non_finite_parameters_name_the_layer(tmp_path, dtype, what, value):
    m = nn.Sequential(OrderedDict(first=nn.Linear(5, 5), hidden=_layer()))
    with torch.no_grad():
        getattr(m.hidden, what)[1] = value
    with pytest.raises(ValueError, match=rf"layer 'hidden'.*non-finite.*{what}"):
        export.to_c(m, tmp_path, (5,), dtype)


def test_non_finite_pruned_weight_names_the_layer(tmp_path):
    import torch.nn.utils.prune as torch_prune
    m = nn.Sequential(_layer())
    torch_prune.l1_unstructured(m[0], "weight", amount=0.5)
    with torch.no_grad():
        m[0].weight_orig[0, 0] = float("nan")  # NaN * mask is NaN whether or not the connection is kept
    with pytest.raises(ValueError, match=r"layer '0'.*non-finite"):
        export.to_c(m, tmp_path, (5,), torch.int8)


def test_non_finite_packed_values_name_the_layer(tmp_path):
    packed = sparse.pack(nn.Sequential(_layer()), pack_dense=True)
    with torch.no_grad():
        packed[0].values[2] = float("inf")
    for dtype in (torch.float32, torch.int8):
        with pytest.raises(ValueError, match=r"layer '0'.*non-finite.*values"):
            export.to_c(packed, tmp_path, (5,), dtype)


def test_corrupted_packed_buffers_are_refused(tmp_path):
    packed = sparse.pack(nn.Sequential(_layer(16, 4)), pack_dense=True)
    with torch.no_grad():
        packed[0].indices[3] = 200      # beyond in_features: the C would read out of bounds
    with pytest.raises(ValueError, match=r"packed layer '0' has inconsistent buffers"):
        export.to_c(packed, tmp_path, (16,))
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------- modules

def test_subclass_with_its_own_forward_is_refused(tmp_path):
    class Scaled(MAMLinear):
        def forward(self, x):
            return 2 * super().forward(x)

    class Plain(MAMLinear):
        pass

    with pytest.raises(ValueError, match=r"unsupported module '0' \(Scaled\)"):
        export.to_c(nn.Sequential(Scaled(4, 2)), tmp_path, (4,))
    assert export.to_c(nn.Sequential(Plain(4, 2)), tmp_path, (4,)).output_size == 2


def test_flatten_with_bad_dims_names_the_module(tmp_path):
    flat = nn.Flatten()
    flat.start_dim = "1"
    with pytest.raises(ValueError, match="'0'"):
        export.to_c(nn.Sequential(flat), tmp_path, (2, 2))


def test_int8_sum_limit_comes_from_the_semantics_header(tmp_path):
    res = export.to_c(nn.Sequential(_layer(6, 3, mam=False)), tmp_path, (6,), torch.int8)
    assert "6 <= MAMEXT_INT8_SUM_MAX_TERMS" in res.source.read_text()
    _compile(res, tmp_path)


def test_export_leaves_the_model_alone(tmp_path):
    """No user hook runs, and the model's mode and state are as before."""
    model = nn.Sequential(_layer(16, 4), nn.ReLU(), _layer(4, 2, mam=False))
    packed = sparse.pack(model, pack_dense=True).train()
    calls = []
    for module in packed:
        module.register_forward_hook(lambda *args: calls.append(args))
    before = {k: v.clone() for k, v in packed.state_dict().items()}
    for dtype in (torch.float32, torch.int8):
        export.to_c(packed, tmp_path / str(dtype), (16,), dtype)
    assert calls == [] and all(m.training for m in packed.modules())
    after = packed.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
