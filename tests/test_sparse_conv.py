"""Packed convolutions (mamext.sparse.pack with layers=): equal to the masked dense convolution
(bit for bit for MAM) on every ISA path, int8, save/load, compile, errors."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn
from torch.nn import functional as F

import mamext
from mamext import sparse
from mamext.nn import MAMConv1d, MAMConv2d
from op_testing import assert_same

# (in, out, kernel, stride, padding, dilation, groups, padding_mode, spatial size)
CONV2D = [
    (3, 8, 3, 1, 1, 1, 1, "zeros", (9, 9)),
    (4, 6, (3, 2), (2, 1), (0, 1), (1, 2), 2, "zeros", (10, 7)),
    (6, 6, 3, 2, 1, 1, 6, "zeros", (8, 8)),              # depthwise
    (2, 4, 5, 1, "same", 2, 1, "zeros", (12, 11)),       # uneven "same"
    (8, 4, 1, 1, 0, 1, 4, "zeros", (5, 5)),
    (3, 5, 3, 1, "valid", 1, 1, "zeros", (6, 6)),
    (4, 4, 3, 1, 2, 1, 2, "reflect", (7, 6)),
    (2, 3, 4, 1, "same", 1, 1, "circular", (6, 6)),
]
CONV1D = [
    (3, 5, 3, 2, 1, 1, 1, "zeros", (15,)),
    (4, 8, 5, 1, "same", 2, 2, "zeros", (20,)),
    (6, 6, 3, 1, 0, 1, 6, "zeros", (9,)),
    (2, 4, 3, 1, 1, 1, 1, "replicate", (5,)),
]


def _conv(config, mam: bool, keep: float, seed: int, bias: bool = True) -> nn.Module:
    """A convolution pruned with a torch.nn.utils.prune mask: fraction ``keep`` kept, output channel 0
    fully pruned, channel 1 (when there is one) fully kept."""
    c_in, c_out, kernel, stride, padding, dilation, groups, mode, size = config
    cls = {(True, 2): MAMConv2d, (True, 1): MAMConv1d, (False, 2): nn.Conv2d, (False, 1): nn.Conv1d}[
        (mam, len(size))]
    torch.manual_seed(seed)
    conv = cls(c_in, c_out, kernel, stride, padding, dilation, groups, bias, mode).eval()
    mask = (torch.rand(conv.weight.shape) < keep).float()
    mask[0] = 0
    if c_out > 1:
        mask[1] = 1
    torch_prune.custom_from_mask(conv, "weight", mask)
    return conv


def _input(config, batch: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, config[0], *config[-1], generator=gen)


@pytest.mark.parametrize("config", CONV2D + CONV1D, ids=lambda c: f"{len(c[-1])}d-{c[:8]}")
def test_packed_mam_conv_equals_masked_dense(isa, config):
    for keep, bias in ((0.05, True), (0.5, False), (0.9, True)):
        dense = _conv(config, True, keep, seed=int(keep * 100))
        if not bias:
            dense.bias = None
        packed = sparse.pack(dense)                            # a convolution given as the model
        expected = sparse.PackedMAMConv2d if len(config[-1]) == 2 else sparse.PackedMAMConv1d
        assert type(packed) is expected and packed.kept == int(dense.weight_mask.sum())
        for batch in (1, 3):
            x = _input(config, batch, batch)
            with torch.no_grad():
                assert_same(packed(x), dense(x), signs=None)
        with torch.no_grad():                                  # unbatched
            assert_same(packed(x[0]), dense(x[0]), signs=None)


@pytest.mark.parametrize("config", CONV2D + CONV1D, ids=lambda c: f"{len(c[-1])}d-{c[:8]}")
def test_packed_mac_conv_matches_nn_conv(config):
    dense = _conv(config, False, 0.4, seed=1)
    packed = sparse.pack(dense)
    assert type(packed) is (sparse.PackedConv2d if len(config[-1]) == 2 else sparse.PackedConv1d)
    x = _input(config, 2, 0)
    with torch.no_grad():
        torch.testing.assert_close(packed(x), dense(x), rtol=1e-5, atol=1e-5)
        assert torch.equal(packed(x)[:, 0], dense.bias[0].expand_as(packed(x)[:, 0]))  # no connection: the bias


def test_adversarial_weights_and_inputs(isa):
    """Every kept product negative (the pruned connections' zero wins the max), exact ties between
    products (integer data), zero inputs and padded zeros, a single kept connection per channel,
    non-finite inputs (inf * a pruned zero weight is NaN in the dense layer too)."""
    config = (4, 6, 3, 1, 1, 1, 2, "zeros", (6, 7))
    gen = torch.Generator().manual_seed(5)
    for case in ("negative", "ties", "single", "full", "non-finite"):
        conv = _conv(config, True, 0.5, seed=3)
        with torch.no_grad():
            w = conv.weight_orig
            if case == "negative":
                w.copy_(-w.abs() - 0.1)
            elif case == "ties":
                w.copy_(torch.randint(-2, 3, w.shape, generator=gen).float())
            elif case == "single":
                conv.weight_mask.zero_()
                conv.weight_mask[:, 0, 1, 1] = 1
            else:
                conv.weight_mask.fill_(1)
        x = _input(config, 2, 7)
        if case == "negative":
            x = x.abs() + 0.5
        if case == "ties":
            x = torch.randint(-2, 3, x.shape, generator=gen).float()
            x[:, :, 2] = 0
        if case == "non-finite":        # inf on pruned and kept connections, NaN: as the dense layer
            x[0, 0, 1, 1], x[0, 3, 4, 4], x[1, 1, 0, 0] = float("inf"), float("-inf"), float("nan")
        packed = sparse.pack(conv)
        with torch.no_grad():
            assert_same(packed(x), conv(x), signs=None)
            ref = mamext.reference.mam_conv2d_reference(x, conv.weight, conv.bias, padding=1, groups=2)
            assert_same(packed(x), ref, signs=None)


def test_fully_pruned_channels_and_layers_output_the_bias():
    config = CONV2D[1]
    conv = _conv(config, True, 0.3, seed=0)
    with torch.no_grad():
        conv.weight_mask[2:4] = 0                               # every channel of a group, besides channel 0
    packed = sparse.pack(conv)
    x = _input(config, 2, 1)
    with torch.no_grad():
        out = packed(x)
        assert_same(out, conv(x), signs=None)
        for channel in (0, 2, 3):
            assert torch.equal(out[:, channel], conv.bias[channel].expand_as(out[:, channel]))
        conv.weight_mask.zero_()
        empty = sparse.pack(conv)
        assert empty.kept == 0 and torch.equal(empty(x), conv(x))


def _model(mam=True):
    torch.manual_seed(0)
    conv = MAMConv2d if mam else nn.Conv2d
    model = nn.Sequential(conv(1, 6, 3, padding=1), nn.ReLU(), conv(6, 8, 3, stride=2, groups=2), nn.ReLU(),
                          nn.Flatten(), mamext.nn.MAMLinear(8 * 3 * 3, 10)).eval()
    mamext.prune.prune_model(model, 0.8, layers=["0", "2", "5"])
    return model


def test_pack_selects_convolutions_only_when_named():
    model = _model()
    x = torch.randn(4, 1, 8, 8)
    default = sparse.pack(model)                                # as before: linear layers only
    assert isinstance(default[5], sparse.PackedMAMLinear) and type(default[0]) is MAMConv2d
    assert type(sparse.pack(model, torch.int8)[0]) is MAMConv2d
    packed = sparse.pack(model, layers=["0", "2", "5"])
    assert [type(packed[i]) for i in (0, 2, 5)] == [sparse.PackedMAMConv2d, sparse.PackedMAMConv2d,
                                                    sparse.PackedMAMLinear]
    only_conv = sparse.pack(model, layers=[model[2]])
    assert type(only_conv[2]) is sparse.PackedMAMConv2d and type(only_conv[5]) is mamext.nn.MAMLinear
    with torch.no_grad():
        assert torch.equal(packed(x), model(x)) and torch.equal(only_conv(x), model(x))
    assert hasattr(model[0], "weight_mask")                     # the original is untouched
    unpruned = nn.Sequential(nn.Conv2d(1, 2, 3))
    assert type(sparse.pack(unpruned, layers=["0"])[0]) is nn.Conv2d       # float: unpruned stays dense
    assert type(sparse.pack(unpruned, layers=["0"], pack_dense=True)[0]) is sparse.PackedConv2d
    stats = sparse.packed_stats(packed)
    assert stats["layers"] == 3 and stats["total"] == 6 * 9 + 8 * 3 * 9 + 72 * 10


def test_pack_layer_errors():
    model = _model()
    with pytest.raises(ValueError, match=r"mamext.sparse.pack: layer '1' is a ReLU"):
        sparse.pack(model, layers=["1"])
    with pytest.raises(ValueError, match=r"no module named 'conv'"):
        sparse.pack(model, layers=["conv"])
    with pytest.raises(ValueError, match="layers= does not apply"):
        sparse.pack(model, torch.int8, layers=["0"], calibration=[torch.randn(2, 1, 8, 8)])

    class Custom(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 2

    with pytest.raises(ValueError, match=r"layer '0' is a Custom.*cannot pack"):
        sparse.pack(nn.Sequential(Custom(1, 1, 1)), layers=["0"])
    blended = MAMConv2d(1, 2, 3)
    blended.set_beta(0.5)
    with torch.no_grad():
        blended.weight[0] = 0
    with pytest.raises(ValueError, match=r"MAMConv2d '0' still blends.*beta=0.5"):
        sparse.pack(nn.Sequential(blended), layers=["0"])
    with torch.no_grad():
        model[0].weight_orig[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"layer '0'.*non-finite.*int8"):
        sparse.pack(model, torch.int8, layers=["0"])


def test_bad_inputs_and_edited_buffers_name_the_layer():
    packed = sparse.pack(_conv(CONV2D[1], True, 0.5, 0))
    with pytest.raises(ValueError, match=r"PackedMAMConv2d: expected input of shape \(N, 4, H, W\) or \(4, H, W\), "
                                         r"got \(2, 3, 10, 7\)"):
        packed(torch.randn(2, 3, 10, 7))
    with pytest.raises(ValueError, match=r"PackedMAMConv2d: expected input"):
        packed(torch.randn(10, 7))
    with pytest.raises(RuntimeError, match="inference only"):
        packed(torch.randn(1, 4, 10, 7, requires_grad=True))
    with pytest.raises(ValueError, match="does not fit"):
        packed(torch.randn(1, 4, 2, 2))
    edited = sparse.pack(_conv(CONV2D[1], True, 0.5, 0))
    with torch.no_grad():
        edited.indices[-1] = 100                                  # past the patch (4 / 2 * 3 * 2 = 12)
    with pytest.raises(RuntimeError, match=r"PackedMAMConv2d \(4, 6, kernel_size=\(3, 2\), groups=2\): its "
                                           r"packed buffers do not fit: .*indices"):
        edited(torch.randn(1, 4, 10, 7))
    with pytest.raises(TypeError, match="needs its geometry"):
        sparse.PackedMAMConv2d.from_weight(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"weight must have shape \(6, 2, 3, 2\)"):
        sparse.PackedMAMConv2d.from_conv_weight(packed, torch.randn(6, 2, 3, 3))


def _patch_reference(x, packed):
    """The int8 packed conv through F.unfold patches and the packed linear layer, group by group."""
    c_out, g = packed.out_channels, packed.groups
    cols = F.unfold(x, packed.kernel_size, dilation=packed.dilation, padding=packed.padding,
                    stride=packed.stride).transpose(1, 2)                 # (N, L, C_in * kh * kw)
    k, n = cols.shape[-1] // g, c_out // g
    linear = sparse.PackedMAMLinear if packed.mam else sparse.PackedLinear
    parts = []
    for group in range(g):
        rows = slice(group * n, (group + 1) * n)
        lo, hi = int(packed.offsets[group * n]), int(packed.offsets[(group + 1) * n])
        layer = linear(k, n, packed.values[lo:hi], packed.indices[lo:hi],
                       packed.offsets[group * n:(group + 1) * n + 1] - lo, packed.bias[rows], packed.weight_scale[rows])
        parts.append(layer(cols[..., group * k:(group + 1) * k]))
    h, w = (packed.kernel_size[0], packed.kernel_size[1])
    size = [(s + 2 * p - d * (kk - 1) - 1) // st + 1 for s, p, d, kk, st in
            zip(x.shape[2:], packed.padding, packed.dilation, (h, w), packed.stride)]
    return torch.cat(parts, -1).transpose(1, 2).reshape(x.shape[0], c_out, *size)


@pytest.mark.parametrize("config", [CONV2D[0], CONV2D[1], CONV2D[2]], ids=["plain", "groups", "depthwise"])
def test_int8_quantises_each_patch(isa, config):
    conv = _conv(config, True, 0.5, seed=2)
    packed = sparse.pack(conv, torch.int8)
    assert packed.values.dtype == torch.int8 and packed.weight_scale.shape == (config[1],)
    x = _input(config, 3, 4) * 2
    with torch.no_grad():
        out = packed(x)
        assert torch.equal(out, _patch_reference(x, packed))
        assert torch.equal(packed(x[1:2]), out[1:2])                 # a sample does not depend on the batch
        reference = conv(x)
        assert (out - reference).abs().max() <= 0.05 * reference.abs().max()
        mac = sparse.pack(_conv(config, False, 0.5, seed=2), torch.int8)
        assert type(mac) is sparse.PackedConv2d and mac.is_int8
        assert torch.equal(mac(x), _patch_reference(x, mac))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.int8])
def test_cuda_matches_cpu(dtype):
    model = _model()
    packed = sparse.pack(model, dtype, layers=["0", "2", "5"])
    x = torch.randn(6, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(packed.to("cuda")(x.cuda()).cpu(), packed.cpu()(x))


def _saved(obj) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("dtype", [torch.float32, torch.int8])
@pytest.mark.parametrize("mam", [True, False], ids=["mam", "mac"])
def test_state_dict_round_trip_and_load_packed(dtype, mam):
    model = _model(mam)
    names = ["0", "2", "5"]
    packed = sparse.pack(model, dtype, layers=names)
    x = torch.randn(3, 1, 8, 8)
    state = torch.load(_saved(packed.state_dict()))                 # weights_only=True
    rebuilt = sparse.load_packed(_model(mam), state)
    assert [type(m) for m in rebuilt] == [type(m) for m in packed]
    layer = torch.load(_saved(packed[2]))                           # a whole packed conv, weights_only=True
    assert layer.kernel_size == (3, 3) and layer.groups == 2
    with torch.no_grad():
        assert torch.equal(rebuilt(x), packed(x))
        h = packed[1](packed[0](x))
        assert torch.equal(layer(h), packed[2](h))
    single = sparse.load_packed(_model(mam)[2], torch.load(_saved(packed[2].state_dict())))
    with torch.no_grad():
        assert type(single) is type(packed[2]) and torch.equal(single(h), packed[2](h))
    # into a differently pruned packed model: buffers resize and the groups' bounds follow
    other_model = _model(mam)
    mamext.prune.prune_model(other_model, 0.3, layers=names)
    other = sparse.pack(other_model, dtype, layers=names)
    assert other[2].kept != packed[2].kept
    other.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(other(x), packed(x))


def test_checkpoints_of_another_dtype_or_shape_are_refused():
    model = _model()
    floats, ints = sparse.pack(model, layers=["2"]), sparse.pack(model, torch.int8, layers=["2"])
    with pytest.raises(RuntimeError, match=r"PackedMAMConv2d '2' is packed as torch.float32 but 2.values in the "
                                           r"checkpoint is torch.int8"):
        floats.load_state_dict(ints.state_dict())
    wider = sparse.pack(nn.Sequential(MAMConv2d(6, 8, 5, groups=2)), pack_dense=True, layers=["0"])
    with pytest.raises(RuntimeError, match=r"PackedMAMConv2d '<model>' has in_features=27 but indices in the "
                                           r"checkpoint reach 74"):
        floats[2].load_state_dict(wider[0].state_dict())


def test_compiled_packed_conv_model():
    model = _model()
    packed = sparse.pack(model, layers=["0", "2", "5"])
    compiled = torch.compile(packed, backend="aot_eager", fullgraph=True)
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(compiled(x), packed(x))
        assert torch.equal(compiled(x), model(x))


def test_channels_last_and_float64():
    conv = _conv(CONV2D[0], True, 0.3, seed=9).double()
    packed = sparse.pack(conv, torch.float64)
    x = _input(CONV2D[0], 2, 3).double().contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = packed(x)
        assert out.dtype == torch.float64 and out.is_contiguous(memory_format=torch.channels_last)
        assert_same(out, conv(x), signs=None)
        repacked = sparse.pack(packed, torch.float32)               # a packed conv repacks at another dtype
        assert type(repacked) is sparse.PackedMAMConv2d and repacked.dtype == torch.float32
        assert torch.equal(repacked.to_dense_weight(), packed.to_dense_weight().float())


# --------------------------------------------------------------------------- compaction of convolution channels

def _cnn(mam: bool, seed: int, middle=(nn.ReLU(), nn.MaxPool2d(2)), groups: int = 1):
    """conv -> ReLU -> pool -> conv -> ReLU -> flatten -> linear, with dead channels (negative biases under
    the ReLU: constant 0) and channels nobody reads."""
    torch.manual_seed(seed)
    conv = MAMConv2d if mam else nn.Conv2d
    model = nn.Sequential(conv(2, 8, 3, padding=1), *middle, conv(8, 6, 3, padding=1, groups=groups), nn.ReLU(),
                          nn.Flatten(), (mamext.nn.MAMLinear if mam else nn.Linear)(6 * 4 * 4, 5)).eval()
    first, second, last = model[0], model[len(middle) + 1], model[-1]
    mamext.prune.prune_model(model, 0.6, layers=["0", str(len(middle) + 1), str(len(model) - 1)])
    with torch.no_grad():
        first.weight_mask[[1, 4]] = 0                     # dead: constant relu(bias) = 0
        first.bias[[1, 4]] = -0.5
        second.weight_mask[:, [2 // groups, 6 // groups]] = 0   # nobody reads channels 2 and 6 (groups == 1)
        second.weight_mask[3] = 0                         # dead, constant relu(bias) = 0
        second.bias[3] = -1.0
        last.weight_mask[:, 16:32] = 0                    # nobody reads channel 1 of the second conv
    return model


@pytest.mark.parametrize("mam", [True, False], ids=["mam", "mac"])
def test_compaction_removes_convolution_channels(mam):
    from mamext.compact import compact

    model = _cnn(mam, 0)
    small, report = compact(model)
    assert report.layer_names == ["0", "3", "6"]
    assert report.neurons_after[0] < 8 and report.neurons_after[1] < 6 and report.neurons_after[2] == 5
    assert {1, 2, 4, 6} <= set(report.removed_neurons[0]) and {1, 3} <= set(report.removed_neurons[1])
    assert small[0].out_channels == small[3].in_channels == report.neurons_after[0]
    assert small[6].in_features == report.neurons_after[1] * 16
    assert type(small[0]) is type(model[0]) and not hasattr(small[0], "weight_mask")
    x = torch.randn(20, 2, 8, 8)
    with torch.no_grad():
        if mam:
            assert torch.equal(small(x), model(x))
            packed = sparse.pack(model, layers=["0", "3", "6"])
            assert torch.equal(compact(packed)[0](x), model(x))          # from the packed model too
            assert torch.equal(sparse.pack(small, layers=["0", "3", "6"])(x), model(x))
        else:
            torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-5)


def test_compaction_keeps_the_channels_of_grouped_convolutions():
    from mamext.compact import compact

    model = _cnn(True, 1, groups=2)
    small, report = compact(model)
    assert report.neurons_removed == 0                    # neither side of a grouped convolution changes
    x = torch.randn(10, 2, 8, 8)
    with torch.no_grad():
        assert torch.equal(small(x), model(x))


@pytest.mark.parametrize("mam", [True, False], ids=["mam", "mac"])
def test_compaction_through_batch_normalisation(mam):
    """A dead channel is removed when batch normalisation and the ReLU make it exactly 0, kept when
    they make it positive; batch normalisation loses the removed channels' entries."""
    from mamext.compact import compact

    model = _cnn(mam, 2, (nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2)))
    norm = model[1]
    with torch.no_grad():
        norm.running_mean.uniform_(-0.2, 0.2), norm.running_var.uniform_(0.5, 2.0)
        norm.weight.uniform_(0.5, 1.5), norm.bias.uniform_(-0.1, 0.1)
        norm.running_mean[1] = -2.0                      # dead channel 1: (-0.5 + 2) * ... > 0, kept
    small, report = compact(model)
    assert 4 in report.removed_neurons[0] and 1 not in report.removed_neurons[0]
    assert 1 in report.dead_neurons_kept[0] and {2, 6} <= set(report.removed_neurons[0])
    kept = [c for c in range(8) if c not in report.removed_neurons[0]]
    assert small[1].num_features == len(kept) and torch.equal(small[1].running_mean, norm.running_mean[kept])
    x = torch.randn(10, 2, 8, 8)
    with torch.no_grad():
        if mam:
            assert torch.equal(small(x), model(x))
        else:
            torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-5)
    norm.track_running_stats, norm.running_mean, norm.running_var = False, None, None
    batch_stats, report = compact(model)
    assert 4 not in report.removed_neurons[0] and 2 in report.removed_neurons[0]  # batch statistics: the
    with torch.no_grad():                                                        # constant is not known
        torch.testing.assert_close(batch_stats(x), model(x), rtol=0 if mam else 1e-5, atol=0 if mam else 1e-5)


def test_compaction_keeps_a_mam_convolutions_zero_candidate():
    """Channel 1 of the first convolution is read by nobody, but its kernel holds the second
    convolution's only zero weights: removing it would take the zero candidate away."""
    from mamext.compact import compact

    first, second = MAMConv1d(1, 2, 1), MAMConv1d(2, 1, 3)
    with torch.no_grad():
        first.weight.fill_(1.0), first.bias.zero_()
        second.weight.copy_(torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]]))
        second.bias.zero_()
    model = nn.Sequential(first, nn.ReLU(), second).eval()
    small, report = compact(model)
    assert report.neurons_after == [2, 1]
    x = torch.rand(4, 1, 9) + 1.0                          # positive products: the zero is the minimum
    with torch.no_grad():
        assert torch.equal(small(x), model(x))
        without = mamext.mam_conv1d(first(x)[:, :1].relu(), second.weight[:, :1], second.bias)
        assert not torch.equal(without, model(x))         # what removing channel 1 would compute


def test_compaction_of_conv1d_and_errors():
    from mamext.compact import compact

    torch.manual_seed(3)
    model = nn.Sequential(MAMConv1d(3, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool1d(4), nn.Flatten(),
                          mamext.nn.MAMLinear(24, 4)).eval()
    with torch.no_grad():
        model[4].weight[:, 8:16] = 0                      # channels 2 and 3 unread
        model[4].weight[:, 0] = 0                         # each row's zero candidate, besides them
        model[0].weight[:, 0] = 0                         # network input channel 0 unread
    small, report = compact(model)
    assert report.removed_neurons[0] == [2, 3] and report.unread_inputs == 1
    x = torch.randn(5, 3, 10)
    with torch.no_grad():
        assert torch.equal(small(x), model(x))
    blended = MAMConv2d(1, 2, 3)
    blended.set_beta(0.5)
    with pytest.raises(ValueError, match=r"MAMConv2d '0' still blends"):
        compact(nn.Sequential(blended))
    with pytest.raises(ValueError, match=r"layer '0' is packed as int8"):
        compact(sparse.pack(nn.Sequential(MAMConv2d(1, 2, 3)), torch.int8, layers=["0"]))
    with pytest.raises(ValueError, match=r"mamext.compact.compact: unsupported module '1' \(MaxPool2d\)"):
        compact(nn.Sequential(MAMConv2d(1, 2, 3), nn.MaxPool2d(2, return_indices=True)))


def test_the_experiments_mam_cnn_packs_and_compacts():
    """The --arch cnn --mam-conv network (nn.Unflatten first): packed and compacted, still exact."""
    from mamext.compact import compact
    from mamext.experiment.models_cnn import build_cnn

    torch.manual_seed(0)
    model = build_cnn("mam", (16, 16), 10, mam_conv=True, channels=(4, 8), hidden=(32,)).eval()
    names = list(model.pruned_layer_names)
    mamext.prune.prune_model(model, 0.1, layers=names)
    with torch.no_grad():
        model.conv1.weight_mask[2] = 0                   # dead, relu(bias) = 0
        model.conv1.bias[2] = -1.0
        model.fc1.weight_mask[:, 5 * 16:6 * 16] = 0      # conv2's channel 5 unread
    small, report = compact(model)
    assert 2 in report.removed_neurons[0] and 5 in report.removed_neurons[1]
    packed = sparse.pack(model, layers=names)
    assert isinstance(packed.conv2, sparse.PackedMAMConv2d)
    x = torch.randn(6, 256)
    with torch.no_grad():
        assert torch.equal(small(x), model(x)) and torch.equal(packed(x), model(x))
