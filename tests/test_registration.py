"""Operator registration: `import mamext` alone registers every operator's
schema, fake kernel, autograd and autocast kernels, and every operator in
torch.ops.mamext passes torch.library.opcheck on sample inputs.

Each new operator needs an entry in SAMPLES (test_every_op_has_samples fails
otherwise).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.library import opcheck

import mamext

_PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(mamext.__file__)))

# A fresh interpreter that imports nothing of mamext but the package itself,
# then traces every operator, called directly through torch.ops.
_FRESH_IMPORT_SCRIPT = textwrap.dedent("""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    import mamext  # nothing else from mamext

    ops = torch.ops.mamext

    def packed(x, mam):
        values = torch.tensor([1.0, -2.0, 0.5, 3.0])
        indices = torch.tensor([0, 2, 1, 3], dtype=torch.uint8)
        offsets = torch.tensor([0, 2, 4], dtype=torch.int32)
        return ops.packed_linear(x, values, indices, offsets, None, None, 4, mam)

    def dense(x, w, b):
        out, argmax, argmin = ops.mam_linear_forward(x, w, b)
        gx, gw = ops.mam_linear_backward(torch.ones_like(out), x, w, argmax, argmin, [True, True])
        return out + ops.mam_linear_inference(x, w, b), gx, gw

    def conv(x, w, b):
        images, kernels, args = x.reshape(1, 1, 5, 4), w.reshape(3, 1, 2, 2), ([1, 1], [1, 0], [1, 1], 1)
        out, argmax, argmin = ops.mam_conv2d_forward(images, kernels, b, *args)
        gx, gw = ops.mam_conv2d_backward(torch.ones_like(out), images, kernels, argmax, argmin, *args, [True, True])
        return out + ops.mam_conv2d_inference(images, kernels, b, *args), gx, gw

    def every_op(x, w, b):
        out, gx, gw = dense(x, w, b)
        return out, gx, gw, packed(x, True), packed(x, False), *conv(x, w, b)

    x, w, b = torch.randn(5, 4), torch.randn(3, 4), torch.randn(3)
    eager = every_op(x, w, b)

    with FakeTensorMode() as mode:
        fake = every_op(mode.from_tensor(x), mode.from_tensor(w), mode.from_tensor(b))
    assert [t.shape for t in fake] == [t.shape for t in eager], "fake shapes differ from eager"

    compiled = torch.compile(every_op, fullgraph=True, backend="aot_eager")(x, w, b)
    for c, e in zip(compiled, eager):
        torch.testing.assert_close(c, e, rtol=0, atol=0)

    class EveryOp(torch.nn.Module):
        def forward(self, x, w, b):
            return every_op(x, w, b)

    exported = torch.export.export(EveryOp(), (x, w, b))
    names = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert "mamext.packed_linear.default" in names, names
    for c, e in zip(exported.module()(x, w, b), eager):
        torch.testing.assert_close(c, e, rtol=0, atol=0)

    # Autograd through the training op, compiled.
    xg = x.clone().requires_grad_()
    torch.compile(lambda x: mamext.mam_linear(x, w, b).sum(), fullgraph=True, backend="aot_eager")(xg).backward()
    assert xg.grad is not None and xg.grad.shape == x.shape
    print("REGISTRATION-OK")
""")


def test_import_mamext_alone_registers_every_op():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PYTHON_DIR, env.get("PYTHONPATH", "")) if p)
    res = subprocess.run([sys.executable, "-c", _FRESH_IMPORT_SCRIPT], capture_output=True, text=True, env=env,
                         timeout=600)
    assert res.returncode == 0 and "REGISTRATION-OK" in res.stdout, res.stderr[-4000:]


# --------------------------------------------------------------------------- generated opcheck tests

def _dense(requires_grad=False, dtype=torch.float32, bias=True, lead=(5,)):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*lead, 6, generator=g, dtype=dtype).requires_grad_(requires_grad)
    w = torch.randn(4, 6, generator=g, dtype=dtype).requires_grad_(requires_grad)
    b = torch.randn(4, generator=g, dtype=dtype).requires_grad_(requires_grad) if bias else None
    return x, w, b


def _backward_args(dtype=torch.float32, mask=(True, True)):
    x, w, _ = _dense(dtype=dtype)
    _, argmax, argmin = torch.ops.mamext.mam_linear_forward(x, w, None)
    g = torch.randn(x.shape[0], w.shape[0], dtype=dtype)
    return (g, x, w, argmax, argmin, list(mask))


def _packed(requires_grad=False, values_dtype=torch.float32, mam=True, bias=True, column_major=False):
    g = torch.Generator().manual_seed(1)
    K, N = 6, 3
    offsets = torch.tensor([0, 2, 6, 6], dtype=torch.int32)  # a pruned row, a full row, an empty row
    indices = torch.tensor([1, 4, 0, 1, 2, 3], dtype=torch.uint8)
    if values_dtype == torch.int8:
        values = torch.tensor([3, -127, 5, 0, 127, -9], dtype=torch.int8)
        scale = torch.rand(N, generator=g) + 0.1
        b = torch.randn(N, generator=g) if bias else None
    else:
        values = torch.randn(6, generator=g, dtype=values_dtype)
        scale = None
        b = torch.randn(N, generator=g, dtype=values_dtype) if bias else None
    x = torch.randn(7, K, generator=g)
    if column_major:
        x = x.t().contiguous().t()
    x.requires_grad_(requires_grad)
    return (x, values, indices, offsets, b, scale, K, mam)


def _conv(requires_grad=False, dtype=torch.float32, bias=True):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 5, 6, generator=g, dtype=dtype).requires_grad_(requires_grad)
    w = torch.randn(6, 2, 3, 2, generator=g, dtype=dtype).requires_grad_(requires_grad)
    b = torch.randn(6, generator=g, dtype=dtype).requires_grad_(requires_grad) if bias else None
    return (x, w, b, [2, 1], [1, 0], [1, 2], 2)


def _conv_backward_args(dtype=torch.float32, mask=(True, True)):
    x, w, _, *args = _conv(dtype=dtype)
    out, argmax, argmin = torch.ops.mamext.mam_conv2d_forward(x, w, None, *args)
    return (torch.randn(out.shape, dtype=dtype), x, w, argmax, argmin, *args, list(mask))


_ALL_UTILS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
# Inference-only ops raise on backward: the aot test would differentiate them.
_NO_BACKWARD_UTILS = ("test_schema", "test_autograd_registration", "test_faketensor")

# op name -> [(sample id, args, test_utils)]
SAMPLES = {
    "mam_linear_forward": [
        ("f32", _dense(), _ALL_UTILS),
        ("f32_grad", _dense(requires_grad=True), _ALL_UTILS),
        ("f64_grad_nobias", _dense(requires_grad=True, dtype=torch.float64, bias=False), _ALL_UTILS),
        ("bf16_3d_grad", _dense(requires_grad=True, dtype=torch.bfloat16, lead=(2, 3)), _ALL_UTILS),
    ],
    "mam_linear_inference": [
        ("f32", _dense(), _ALL_UTILS),
        ("f16_nobias", _dense(dtype=torch.float16, bias=False), _ALL_UTILS),
        ("f32_grad", _dense(requires_grad=True), _NO_BACKWARD_UTILS),
    ],
    "mam_linear_backward": [
        ("f32", _backward_args(), _ALL_UTILS),
        ("f64_weight_only", _backward_args(torch.float64, (False, True)), _ALL_UTILS),
    ],
    "mam_conv2d_forward": [
        ("f32_grad", _conv(requires_grad=True), _ALL_UTILS),
        ("f64_nobias", _conv(dtype=torch.float64, bias=False), _ALL_UTILS),
    ],
    "mam_conv2d_inference": [
        ("bf16", _conv(dtype=torch.bfloat16), _ALL_UTILS),
        ("f32_grad", _conv(requires_grad=True), _NO_BACKWARD_UTILS),
    ],
    "mam_conv2d_backward": [
        ("f32", _conv_backward_args(), _ALL_UTILS),
        ("f64_input_only", _conv_backward_args(torch.float64, (True, False)), _ALL_UTILS),
    ],
    "packed_linear": [
        ("f32_mam", _packed(), _ALL_UTILS),
        ("f64_sum", _packed(values_dtype=torch.float64, mam=False, bias=False), _ALL_UTILS),
        ("int8_mam", _packed(values_dtype=torch.int8), _ALL_UTILS),
        ("f32_column_major", _packed(column_major=True), _ALL_UTILS),
        ("f32_grad", _packed(requires_grad=True), _NO_BACKWARD_UTILS),
    ],
}


def _registered_ops():
    return sorted(name.split("::", 1)[1] for name in torch._C._dispatch_get_all_op_names()
                  if name.startswith("mamext::"))


def test_every_op_has_samples():
    ops = _registered_ops()
    assert ops, "no mamext operator registered"
    assert set(ops) == set(SAMPLES), f"registered {ops}, samples for {sorted(SAMPLES)}"


@pytest.mark.parametrize("op_name,sample_id,args,utils", [
    pytest.param(op, sid, args, utils, id=f"{op}-{sid}") for op, samples in SAMPLES.items()
    for sid, args, utils in samples])
def test_opcheck(op_name, sample_id, args, utils):
    opcheck(getattr(torch.ops.mamext, op_name).default, args, test_utils=utils)


@pytest.mark.parametrize("op_name", ["mam_linear_inference", "mam_conv2d_inference", "packed_linear"])
def test_inference_only_ops_refuse_backward(op_name):
    args = next(a for sid, a, _ in SAMPLES[op_name] if sid.endswith("grad"))
    out = getattr(torch.ops.mamext, op_name)(*args)
    with pytest.raises(RuntimeError, match="not differentiable|inference only"):
        out.sum().backward()


def test_every_op_has_autograd_fake_and_vmap_kernels():
    for op in _registered_ops():
        name = f"mamext::{op}"
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "Autograd"), f"{name}: no autograd kernel"
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU"), f"{name}: no CPU kernel"
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "FuncTorchBatched"), f"{name}: no vmap rule"
        assert torch._library.simple_registry.singleton.find(name).fake_impl.kernel is not None, (
            f"{name}: no fake kernel")


def test_build_info_lists_isa_levels_and_int8_limit():
    info = mamext._C.build_info
    assert info["isa_levels"] == ("default", "avx2", "avx512")
    assert mamext._C.detected_cpu_capability() in info["isa_levels"]
    assert info["int8_sum_max_terms"] == (2 ** 31 - 1) // (127 * 127)


def test_mam_linear_weight_none_names_weight():
    with pytest.raises(TypeError, match="weight"):
        mamext.mam_linear(torch.randn(2, 4), None)
    with pytest.raises(TypeError, match="bias"):
        mamext.mam_linear(torch.randn(2, 4), torch.randn(3, 4), 1.0)


def test_packed_linear_wrapper_calls_the_op():
    x, values, indices, offsets, b, scale, K, mam = _packed(values_dtype=torch.int8)
    got = mamext.packed_linear(x, values, indices, offsets, b, scale, in_features=K, mam=mam)
    assert torch.equal(got, torch.ops.mamext.packed_linear(x, values, indices, offsets, b, scale, K, mam))
    assert mamext.ops.packed_linear is mamext.packed_linear
