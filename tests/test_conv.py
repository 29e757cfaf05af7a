"""MAMConv2d / MAMConv1d and mam_conv2d / mam_conv1d against the plain-PyTorch reference."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import mamext
from mamext.nn import MAMConv1d, MAMConv2d
from mamext.reference import mam_conv2d_reference
from op_testing import HAS_CUDA, assert_indices, assert_same, sample

KINDS = ("normal", "ints", "negative", "sparse", "special")
# (C_in, C_out, kernel, stride, padding, dilation, groups, H, W)
CONFIGS = [
    (1, 6, 5, 1, 0, 1, 1, 12, 12),
    (3, 4, 3, 1, 1, 1, 1, 7, 6),
    (4, 6, (3, 2), (2, 1), (1, 0), 1, 2, 9, 7),
    (4, 4, 3, 1, 2, 2, 4, 8, 8),   # depthwise, dilated
    (6, 3, 1, 2, 0, 1, 3, 5, 5),
    (2, 5, (1, 4), 1, (0, 3), (1, 2), 1, 4, 9),
]
FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _problem(config, kind, dtype, seed=0, batch=2):
    c_in, c_out, kernel, stride, padding, dilation, groups, h, w = config
    gen = torch.Generator().manual_seed(seed)
    kh, kw = nn.modules.utils._pair(kernel)
    x = sample((batch, c_in, h, w), kind, gen, dtype)
    weight = sample((c_out, c_in // groups, kh, kw), "ints" if kind == "ints" else "normal", gen, dtype)
    if kind == "negative":
        weight = weight.abs() + 0.1
    bias = sample((c_out,), "normal", gen, dtype)
    return x, weight, bias, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("config", CONFIGS)
def test_forward_matches_reference(isa, config, dtype):
    for kind in KINDS:
        x, weight, bias, args = _problem(config, kind, dtype)
        ref, rmax, rmin = mam_conv2d_reference(x, weight, bias, **args, return_indices=True)
        out, amax, amin = mamext.mam_conv2d(x, weight, bias, **args, return_indices=True)
        assert_same(out, ref)
        finite = ~torch.isnan(ref)  # indices are checked where no NaN took part
        assert_indices(amax[finite], rmax[finite])
        assert_indices(amin[finite], rmin[finite])
        with torch.no_grad():  # the inference kernel
            assert_same(mamext.mam_conv2d(x, weight, None, **args),
                        mam_conv2d_reference(x, weight, None, **args))


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and mamext built with CUDA")
@pytest.mark.parametrize("dtype", FLOATS)
def test_cuda_matches_reference(dtype):
    for config in CONFIGS:
        for kind in KINDS:
            x, weight, bias, args = _problem(config, kind, dtype)
            ref, rmax, rmin = mam_conv2d_reference(x, weight, bias, **args, return_indices=True)
            out, amax, amin = mamext.mam_conv2d(x.cuda(), weight.cuda(), bias.cuda(), **args, return_indices=True)
            assert_same(out.cpu(), ref)
            finite = ~torch.isnan(ref)
            assert_indices(amax.cpu()[finite], rmax[finite])
            assert_indices(amin.cpu()[finite], rmin[finite])


def test_zero_padding_is_a_zero_product():
    x = -torch.ones(1, 1, 3, 3)
    weight = torch.ones(1, 1, 3, 3)
    out, amax, amin = mamext.mam_conv2d(x, weight, padding=1, return_indices=True)
    expected = torch.full((3, 3), -1.0)  # max is a padded 0 on the border, min -1
    expected[1, 1] = -2.0  # no padding in the receptive field of the centre
    assert torch.equal(out[0, 0], expected)
    assert amax[0, 0, 0, 0] == 0 and amax[0, 0, 1, 1] == 0 and amin[0, 0, 0, 0] == 4


def test_ties_go_to_the_lowest_patch_position():
    x = torch.ones(1, 2, 2, 2)
    weight = torch.ones(1, 2, 2, 2)
    _, amax, amin = mamext.mam_conv2d(x, weight, return_indices=True)
    assert amax.item() == 0 and amin.item() == 0
    weight[0, 1, 0, 1] = 2.0
    weight[0, 0, 1, 0] = -1.0
    _, amax, amin = mamext.mam_conv2d(x, weight, return_indices=True)
    assert amax.item() == 5 and amin.item() == 2  # (c, kh, kw) order of weight[o].flatten()


def test_layouts_batch_zero_and_unbatched():
    x, weight, bias, args = _problem(CONFIGS[2], "normal", torch.float32, batch=3)
    ref = mam_conv2d_reference(x, weight, bias, **args)
    channels_last = mamext.mam_conv2d(x.to(memory_format=torch.channels_last), weight, bias, **args)
    assert_same(channels_last, ref)
    assert channels_last.is_contiguous(memory_format=torch.channels_last)  # the input's layout, as nn.Conv2d
    wide = torch.randn(3, 4, 9, 14)
    wide[..., ::2] = x
    assert_same(mamext.mam_conv2d(wide[..., ::2], weight, bias, **args), ref)
    assert_same(mamext.mam_conv2d(x[1], weight, bias, **args), ref[1])
    empty = mamext.mam_conv2d(x[:0], weight, bias, **args)
    assert empty.shape == (0,) + ref.shape[1:]


@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[2], CONFIGS[3]])
def test_gradients(config):
    x, weight, bias, args = _problem(config, "normal", torch.float64)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    assert torch.autograd.gradcheck(lambda a, w, b: mamext.mam_conv2d(a, w, b, **args), leaves)
    x, weight, bias, args = _problem(config, "ints", torch.float32)
    got = [t.clone().requires_grad_() for t in (x, weight, bias)]
    want = [t.clone().requires_grad_() for t in (x, weight, bias)]
    gout = torch.randn_like(mam_conv2d_reference(x, weight, bias, **args))
    mamext.mam_conv2d(*got, **args).backward(gout)
    mam_conv2d_reference(*want, **args).backward(gout)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.grad, w.grad, rtol=1e-5, atol=1e-5)  # sums in another order


def test_compile_and_export():
    layer = MAMConv2d(3, 4, 3, padding=1, groups=1)
    grouped = MAMConv2d(4, 4, 3, stride=2, groups=2)
    x, x4 = torch.randn(2, 3, 8, 8), torch.randn(2, 4, 9, 9)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x), layer(x))
    compiled_grouped = torch.compile(grouped, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled_grouped(x4), grouped(x4))
    exported = torch.export.export(grouped, (x4,))
    assert torch.equal(exported.module()(x4), grouped(x4))
    grouped.beta.fill_(1.0)  # the compiled forward follows in-place writes of beta
    torch.testing.assert_close(compiled_grouped(x4), F.conv2d(x4, grouped.weight, grouped.bias, 2, 0, 1, 2))


def test_compile_inductor_training_step():
    torch._dynamo.reset()
    layer = MAMConv2d(4, 6, 3, padding=1, groups=2)
    x = torch.randn(2, 4, 7, 7, requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True)
    out = compiled(x)
    assert torch.equal(out, layer(x))
    (gx,) = torch.autograd.grad(out.sum(), x)
    (want,) = torch.autograd.grad(layer(x).sum(), x)
    torch.testing.assert_close(gx, want)


@pytest.mark.parametrize("kwargs", [dict(kernel_size=3), dict(kernel_size=(3, 5), stride=2, padding=(1, 2)),
                                    dict(kernel_size=3, groups=4, bias=False), dict(kernel_size=2, padding="same"),
                                    dict(kernel_size=3, padding=1, padding_mode="reflect")])
def test_parameters_and_init_are_nn_conv2d(kwargs):
    torch.manual_seed(3)
    conv = nn.Conv2d(4, 8, **kwargs)
    torch.manual_seed(3)
    mam = MAMConv2d(4, 8, **kwargs)
    assert [n for n, _ in conv.named_parameters()] == [n for n, _ in mam.named_parameters()]
    for (_, p), (_, q) in zip(conv.named_parameters(), mam.named_parameters()):
        assert torch.equal(p, q)
    fresh = MAMConv2d(4, 8, **kwargs)
    fresh.set_beta(0.5)
    fresh.load_state_dict(conv.state_dict())  # a classic checkpoint: pure MAM
    assert float(fresh.beta) == 0.0 and not fresh._mac_active
    x = torch.randn(2, 4, 10, 11)
    mam.set_beta(1.0)
    torch.testing.assert_close(mam(x), conv(x), rtol=1e-5, atol=1e-5)


def test_beta_blends_the_classic_convolution():
    mam = MAMConv2d(3, 5, 3, padding=1)
    x = torch.randn(2, 3, 6, 6)
    pure = mam(x)
    assert_same(pure, mam_conv2d_reference(x, mam.weight, mam.bias, padding=1))
    mam.beta.fill_(0.25)  # an in-place write takes effect
    mac = F.conv2d(x, mam.weight, mam.bias, padding=1)
    torch.testing.assert_close(mam(x), 0.25 * mac + 0.75 * pure)
    mam.set_beta(0.0)
    assert torch.equal(mam(x), pure) and "beta=0" in repr(mam)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_modes_pad_real_values(mode):
    mam = MAMConv2d(2, 3, 3, padding=(1, 2), padding_mode=mode)
    x = torch.randn(2, 2, 5, 6)
    padded = F.pad(x, (2, 2, 1, 1), mode=mode)
    assert_same(mam(x), mam_conv2d_reference(padded, mam.weight, mam.bias))


def test_same_and_valid_padding():
    x, weight = torch.randn(2, 2, 7, 6), torch.randn(3, 2, 2, 4)
    padded = F.pad(x, (1, 2, 0, 1))  # "same": the extra row/column at the end, as F.conv2d
    assert_same(mamext.mam_conv2d(x, weight, padding="same"), mam_conv2d_reference(padded, weight))
    assert_same(mamext.mam_conv2d(x, weight, padding="valid"), mam_conv2d_reference(x, weight))


@pytest.mark.parametrize("call, match", [
    (lambda: mamext.mam_conv2d(torch.randn(2, 3, 5), torch.randn(4, 3, 3, 3)), "input has 2 channels"),
    (lambda: mamext.mam_conv2d(torch.randn(5, 5), torch.randn(4, 3, 3, 3)), "input must have shape"),
    (lambda: mamext.mam_conv2d(torch.randn(1, 3, 5, 5), torch.randn(4, 3, 3)), "weight must have shape"),
    (lambda: mamext.mam_conv2d(torch.randn(1, 4, 5, 5), torch.randn(3, 2, 3, 3), groups=2), "divisible"),
    (lambda: mamext.mam_conv2d(torch.randn(1, 3, 5, 5), torch.randn(4, 3, 3, 3), torch.randn(3)), "bias"),
    (lambda: mamext.mam_conv2d(torch.randn(1, 3, 2, 2), torch.randn(4, 3, 3, 3)), "does not fit"),
    (lambda: mamext.mam_conv2d(torch.randn(1, 3, 5, 5), torch.randn(4, 3, 3, 3), stride=0), "stride"),
    (lambda: mamext.mam_conv2d(torch.randn(1, 3, 5, 5), torch.randn(4, 3, 3, 3), padding="full"), "padding"),
    (lambda: mamext.mam_conv2d(torch.randn(1, 3, 5, 5), torch.randn(4, 3, 3, 3), stride=2, padding="same"),
     "stride 1"),
    (lambda: MAMConv2d(3, 4, 3)(torch.randn(1, 2, 5, 5)), "input has 2 channels"),
    (lambda: mamext.mam_conv1d(torch.randn(1, 3, 5, 5), torch.randn(4, 3, 3)), "mam_conv1d: input"),
])
def test_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_conv1d():
    torch.manual_seed(5)
    conv = nn.Conv1d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2)
    torch.manual_seed(5)
    mam = MAMConv1d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2)
    assert torch.equal(conv.weight, mam.weight) and torch.equal(conv.bias, mam.bias)
    x = sample((3, 4, 11), "ints", torch.Generator().manual_seed(0))
    ref, rmax, rmin = mam_conv2d_reference(x.unsqueeze(2), mam.weight.unsqueeze(2), mam.bias, stride=(1, 2),
                                           padding=(0, 1), dilation=(1, 2), groups=2, return_indices=True)
    out, amax, amin = mamext.mam_conv1d(x, mam.weight, mam.bias, 2, 1, 2, 2, return_indices=True)
    assert_same(mam(x), ref.squeeze(2))
    assert_same(out, ref.squeeze(2))
    assert_indices(amax, rmax.squeeze(2))
    assert_indices(amin, rmin.squeeze(2))
    assert_same(mam(x[0]), ref[0, :, 0])
    mam.set_beta(1.0)
    torch.testing.assert_close(mam(x), conv(x))


def test_beta_survives_copies_dtype_changes_and_pickling():
    import copy
    import pickle

    layer = MAMConv2d(2, 3, 3)
    layer.set_beta(0.5)
    for other in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer).double()):
        assert other.beta.dtype == torch.float32 and float(other.beta) == 0.5 and other._mac_active
    with pytest.raises(RuntimeError, match="beta must be in"):
        layer.load_state_dict(dict(layer.state_dict(), beta=torch.tensor(2.0)))
