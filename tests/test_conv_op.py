"""The CPU convolution operator torch.ops.mamext.mam_conv2d_* against the plain-PyTorch
reference and the patch-row route, on every ISA path and both of its forward paths
(direct for few output channels per group, im2col tiles through the dense kernels
otherwise)."""

from __future__ import annotations

import pytest
import torch

import mamext
from mamext.nn import conv as conv_module
from mamext.reference import mam_conv2d_reference
from op_testing import assert_bitwise, assert_indices, assert_same, assert_same_forward, sample

FORWARD = torch.ops.mamext.mam_conv2d_forward
INFERENCE = torch.ops.mamext.mam_conv2d_inference
BACKWARD = torch.ops.mamext.mam_conv2d_backward

# (C_in, C_out, kernel, stride, padding, dilation, groups, H, W). C_out / groups of 1 or 2 takes
# the direct path on every ISA and dtype, 32 the dense path (panels of 8 to 48 neurons), 56
# dense panels with the neurons of a mostly empty last panel on the direct path (AVX2, AVX-512).
CONFIGS = [
    (1, 2, 5, 1, 0, 1, 1, 9, 8),                    # direct, no padding
    (3, 2, 3, 1, 1, 1, 1, 7, 6),                    # direct, padding
    (4, 4, (3, 2), (2, 3), (1, 2), (2, 1), 2, 11, 12),  # direct, every stride/dilation axis
    (5, 5, 3, 1, 2, 2, 5, 8, 7),                    # depthwise, dilated
    (3, 32, 3, 1, 1, 1, 1, 6, 7),                   # dense
    (4, 64, (2, 3), (2, 1), (0, 1), (1, 2), 2, 9, 8),   # dense, groups
    (6, 32, 1, 2, 0, 1, 1, 5, 5),                   # dense, 1x1 kernel
    (7, 32, (1, 3), 1, (0, 1), 1, 1, 3, 20),        # dense, K = 21: not a vector multiple
    (2, 2, 3, 1, 1, 1, 1, 12, 14),                  # direct, a wide grid of full register blocks
    (4, 112, 3, (1, 2), 1, 1, 2, 5, 6),             # 56 per group: dense panels, the rest direct
]
# small problems for gradcheck: direct with groups, depthwise, dense with groups
GRAD_CONFIGS = [
    (4, 4, (3, 2), (2, 3), (1, 2), (2, 1), 2, 6, 7),
    (3, 3, 3, 1, 2, 2, 3, 5, 5),
    (2, 32, (2, 3), (2, 1), (0, 1), (1, 2), 2, 5, 5),
]
KINDS = ("normal", "ints", "negative", "sparse", "special")
# float16 / bfloat16 compute in float32: fewer kinds suffice
KINDS_OF = {torch.float32: KINDS, torch.float64: KINDS, torch.float16: ("ints", "special"),
            torch.bfloat16: ("normal", "special")}


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _problem(config, kind, dtype=torch.float32, seed=0, batch=2):
    c_in, c_out, kernel, stride, padding, dilation, groups, h, w = config
    gen = torch.Generator().manual_seed(seed)
    x = sample((batch, c_in, h, w), kind, gen, dtype)
    weight = sample((c_out, c_in // groups, *_pair(kernel)), "ints" if kind == "ints" else "normal", gen, dtype)
    if kind == "negative":
        weight = weight.abs() + 0.1  # every product negative: padded zeros win the max
    bias = sample((c_out,), "normal", gen, dtype)
    return x, weight, bias, [list(_pair(stride)), list(_pair(padding)), list(_pair(dilation)), groups]


def _reference(x, weight, bias, args):
    stride, padding, dilation, groups = args
    return mam_conv2d_reference(x, weight, bias, stride, padding, dilation, groups, return_indices=True)


def _check_forward(x, weight, bias, args):
    """The forward kernel against the reference: output and both index maps; returns the
    kernel's (out, argmax, argmin)."""
    got = FORWARD(x, weight, bias, *args)
    assert_same_forward(got, _reference(x, weight, bias, args))
    return got


def _patch_route(x, weight, bias, args):
    """The patch rows through mam_linear (the route CUDA takes)."""
    stride, padding, dilation, groups = (tuple(a) if isinstance(a, list) else a for a in args)
    rows = conv_module._patch_rows(x, weight.shape[2:], stride, padding, dilation, groups)
    out, amax, amin = conv_module._mam_rows(rows, weight.reshape(weight.shape[0], -1), bias, True)
    h_out, w_out = conv_module._output_size(x.shape[2:], weight.shape[2:], stride, padding, dilation, "t")

    def image(t):
        return t.reshape(x.shape[0], h_out, w_out, -1).permute(0, 3, 1, 2).contiguous()

    return image(out), image(amax), image(amin)


_REFERENCES = {}


def _cached_reference(key, x, weight, bias, args):
    """The reference results of a problem, computed once for every ISA level."""
    if key not in _REFERENCES:
        _REFERENCES[key] = (_reference(x, weight, bias, args), _reference(x, weight, None, args)[0])
    return _REFERENCES[key]


@pytest.mark.parametrize("config", CONFIGS)
def test_forward_matches_reference_and_patch_route(isa, config):
    for dtype, kinds in KINDS_OF.items():
        for kind in kinds:
            x, weight, bias, args = _problem(config, kind, dtype)
            out, amax, amin = FORWARD(x, weight, bias, *args)
            (ref, rmax, rmin), ref_no_bias = _cached_reference((config, kind, dtype), x, weight, bias, args)
            assert_same(out, ref)
            assert_indices(amax, rmax)  # NaN outputs included: the first NaN product
            assert_indices(amin, rmin)
            assert_same(INFERENCE(x, weight, None, *args), ref_no_bias)
            if dtype in (torch.float32, torch.float64):
                patch = _patch_route(x, weight, bias, args)
                assert_bitwise(out, patch[0])
                assert_indices(amax, patch[1])
                assert_indices(amin, patch[2])


@pytest.mark.parametrize("c_out", [4, 64])
def test_one_image_split_across_threads(isa, c_out):
    # a single image: its wide output grid is split into chunks (direct and dense paths)
    x, weight, bias, args = _problem((8, c_out, 3, 1, 1, 1, 1, 40, 36), "ints", batch=1)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        got = FORWARD(x, weight, bias, *args)
    finally:
        torch.set_num_threads(previous)
    assert_same_forward(got, _cached_reference(("one image", c_out), x, weight, bias, args)[0])


def test_adversarial_patterns(isa):
    # all products negative: the padded zero wins every border max; all positive: every border min
    x = -torch.rand(2, 3, 6, 5) - 0.5
    for weight in (torch.rand(2, 3, 3, 3) + 0.5, torch.rand(32, 3, 3, 3) + 0.5):
        for sign in (1.0, -1.0):
            _check_forward(sign * x, weight, None, [[1, 1], [1, 1], [1, 1], 1])
    # ties everywhere (+0 against -0 too): the lowest patch position, and its sign
    for weight in (torch.ones(2, 2, 2, 2), -torch.zeros(32, 2, 2, 2)):
        x = torch.zeros(1, 2, 4, 4)
        x[..., ::2] = -0.0
        _check_forward(x, weight, None, [[1, 1], [1, 1], [1, 1], 1])


@pytest.mark.parametrize("c_out", [2, 32, 56])
def test_nan_and_inf(isa, c_out):
    x = torch.randn(2, 3, 5, 6)
    weight = torch.randn(c_out, 3, 3, 3)
    x[0, 1, 2, 3] = float("nan")
    x[1, 0, 0, 0] = float("inf")  # inf * a padded 0: no product, the padding is a plain zero
    weight[1, 2, 1, 1] = 0.0      # inf * 0 = NaN inside the image
    _check_forward(x, weight, None, [[1, 1], [1, 1], [1, 1], 1])
    x = torch.randn(2, 3, 5, 6)  # a NaN outside every patch (stride 2 skips it) changes nothing
    x[0, 0, 1, 1] = float("nan")
    args = [[2, 2], [0, 0], [1, 1], 1]
    assert_same(FORWARD(x, weight, None, *args)[0], _reference(x, weight, None, args)[0])


def test_large_patch(isa):
    # patch 33,300: past every ISA's K block of the dense kernels (weight panels in blocks)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3700, 3, 4, generator=g) + 0.5
    weight = torch.rand(32, 3700, 3, 3, generator=g) * 0.1
    weight[0, 3699, 2, 2] = 5.0
    weight[1, 2000, 0, 1] = -5.0
    _, amax, amin = _check_forward(x, weight, None, [[1, 1], [1, 1], [1, 1], 1])
    assert amax[0, 0, 1, 1] == 33_299 and amin[0, 1, 1, 1] == 2000 * 9 + 1


@pytest.mark.parametrize("config", GRAD_CONFIGS)
def test_gradients(config):
    x, weight, bias, args = _problem(config, "normal", torch.float64, batch=1)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    assert torch.autograd.gradcheck(lambda a, w, b: FORWARD(a, w, b, *args)[0], leaves, fast_mode=True)
    # integer data: every gradient sum is exact in any order, so equal to the reference's
    x, weight, bias, args = _problem(config, "ints", torch.float64)
    got = [t.clone().requires_grad_() for t in (x, weight, bias)]
    want = [t.clone().requires_grad_() for t in (x, weight, bias)]
    gout = sample(_reference(x, weight, bias, args)[0].shape, "ints", torch.Generator().manual_seed(2),
                  torch.float64)
    FORWARD(*got, *args)[0].backward(gout)
    _reference(*want, args)[0].backward(gout)
    for g, w in zip(got, want):
        assert torch.equal(g.grad, w.grad)
    # float32 and float16 in and out, computed in float32
    for dtype in (torch.float32, torch.float16):
        x, weight, bias, args = _problem(config, "normal", dtype)
        out, amax, amin = FORWARD(x, weight, bias, *args)
        gx, gw = BACKWARD(torch.ones_like(out), x, weight, amax, amin, *args, [True, True])
        assert gx.dtype == gw.dtype == dtype and gx.shape == x.shape and gw.shape == weight.shape


@pytest.mark.parametrize("threads", [1, 2])
def test_backward_of_many_groups(threads):
    # groups >= 4 x threads: one pass per group computes both gradients
    x, weight, bias, args = _problem((16, 16, 3, 1, 1, 1, 16, 5, 6), "ints", torch.float64)
    gout = sample((2, 16, 5, 6), "ints", torch.Generator().manual_seed(3), torch.float64)
    out, amax, amin = FORWARD(x, weight, bias, *args)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        both = BACKWARD(gout, x, weight, amax, amin, *args, [True, True])
        weight_only = BACKWARD(gout, x, weight, amax, amin, *args, [False, True])[1]
    finally:
        torch.set_num_threads(previous)
    leaves = [x.clone().requires_grad_(), weight.clone().requires_grad_()]
    _reference(*leaves, bias, args)[0].backward(gout)
    assert torch.equal(both[0], leaves[0].grad) and torch.equal(both[1], leaves[1].grad)
    assert torch.equal(weight_only, leaves[1].grad)


def test_backward_output_mask_and_bad_indices():
    x, weight, bias, args = _problem(CONFIGS[1], "normal")
    out, amax, amin = FORWARD(x, weight, bias, *args)
    gx, gw = BACKWARD(torch.ones_like(out), x, weight, amax, amin, *args, [False, True])
    assert gx.numel() == 0 and gw.shape == weight.shape
    with pytest.raises(RuntimeError, match="indices outside"):
        BACKWARD(torch.ones_like(out), x, weight, amax + 1000, amin, *args, [True, True])
    with pytest.raises(RuntimeError, match="int32"):
        BACKWARD(torch.ones_like(out), x, weight, amax.long(), amin, *args, [True, True])


def test_forward_mode_and_torch_func():
    x, weight, bias, args = _problem(CONFIGS[2], "normal", torch.float64)
    tx, tw = torch.randn_like(x), torch.randn_like(weight)

    def f(a, w):
        return FORWARD(a, w, bias, *args)[0]

    out, tangent = torch.func.jvp(f, (x, weight), (tx, tw))
    ref_out, ref_tangent = torch.func.jvp(lambda a, w: _reference(a, w, bias, args)[0], (x, weight), (tx, tw))
    assert_same(out, ref_out)
    torch.testing.assert_close(tangent, ref_tangent)
    grad = torch.func.grad(lambda a: f(a, weight).sum())(x)
    torch.testing.assert_close(grad, torch.func.grad(lambda a: _reference(a, weight, bias, args)[0].sum())(x))
    batched = torch.func.vmap(lambda a: INFERENCE(a, weight, bias, *args))(x.unsqueeze(1))
    assert_same(batched.squeeze(1), _reference(x, weight, bias, args)[0])


def test_inference_is_not_differentiable():
    x, weight, bias, args = _problem(CONFIGS[0], "normal")
    out = INFERENCE(x.requires_grad_(), weight, bias, *args)
    with pytest.raises(RuntimeError, match="not differentiable"):
        out.sum().backward()


def test_empty_batch_and_no_output_channels():
    x, weight, bias, args = _problem(CONFIGS[4], "normal")
    out, amax, amin = FORWARD(x[:0], weight, bias, *args)
    assert out.shape == amax.shape == (0, 32, 6, 7)
    leaves = [t.clone().requires_grad_() for t in (x[:0], weight, bias)]
    FORWARD(*leaves, *args)[0].sum().backward()
    assert leaves[0].grad.shape == (0, 3, 6, 7) and not leaves[1].grad.any() and not leaves[2].grad.any()
    out, amax, _ = FORWARD(x, weight[:0], bias[:0], *args)
    assert out.shape == amax.shape == (2, 0, 6, 7)


def _bad(**changes):
    x, weight, bias, args = _problem(CONFIGS[4], "normal")
    call = dict(x=x, weight=weight, bias=bias, stride=args[0], padding=args[1], dilation=args[2], groups=args[3])
    call.update(changes)
    return lambda: FORWARD(*call.values())


@pytest.mark.parametrize("call, match", [
    (_bad(x=torch.randn(3, 6, 7)), "input must have shape"),
    (_bad(weight=torch.randn(32, 3, 3)), "weight must have shape"),
    (_bad(weight=torch.randn(32, 3, 3, 3, dtype=torch.float64)), "weight dtype"),
    (_bad(bias=torch.randn(31)), "bias must have shape"),
    (_bad(x=torch.randn(2, 3, 6, 7).int()), "input must be float32"),
    (_bad(groups=5), "divisible by groups"),
    (_bad(groups=2, weight=torch.randn(32, 3, 3, 3)), "input has 3 channels"),
    (_bad(x=torch.randn(2, 3, 1, 1), padding=[0, 0]), "does not fit"),
    (_bad(stride=[0, 1]), "stride must be at least 1"),
    (_bad(padding=[-1, 0]), "padding must be at least 0"),
    (_bad(dilation=[1, 0]), "dilation must be at least 1"),
    (_bad(groups=0), "groups must be positive"),
    (_bad(weight=torch.randn(32, 0, 3, 3), x=torch.randn(2, 0, 6, 7)), "patch"),
    (_bad(weight=torch.randn(32, 3, 3, 3, device="meta")), "weight is on meta"),
])
def test_clear_errors(call, match):
    with pytest.raises(RuntimeError, match=match):
        call()


def test_public_function_uses_the_operator():
    x, weight, bias, args = _problem(CONFIGS[5], "ints")
    stride, padding, dilation, groups = args
    out = mamext.mam_conv2d(x.to(memory_format=torch.channels_last), weight, bias, stride, padding, dilation, groups)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_same(out, _reference(x, weight, bias, args)[0])
    gm = torch.fx.experimental.proxy_tensor.make_fx(
        lambda a: mamext.mam_conv2d(a, weight, bias, stride, padding, dilation, groups))(x)
    assert any(n.target is INFERENCE.default for n in gm.graph.nodes)


def test_autocast_widens_mixed_operands():
    layer = mamext.nn.MAMConv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x.bfloat16())
    assert out.dtype == torch.float32
    assert_same(out, mam_conv2d_reference(x.bfloat16().float(), layer.weight, layer.bias, padding=1))
