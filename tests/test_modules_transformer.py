"""Converted nn.TransformerEncoderLayer / nn.TransformerEncoder compute MAM in every mode:
PyTorch's fused inference path (eval, no gradients) reads linear1/linear2's weights and would
compute a classic layer; packed layers inside them must run too."""

import contextlib

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import mamext
import mamext.prune
import mamext.sparse
from mamext.nn import MAMLinear

D, HEADS, FF = 8, 2, 16


def _encoder_layer(seed=0):
    torch.manual_seed(seed)
    return nn.TransformerEncoderLayer(D, HEADS, dim_feedforward=FF, dropout=0.0, batch_first=True)


@contextlib.contextmanager
def _fused_paths_off():
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def _reference(model, *args, **kw):
    with _fused_paths_off(), torch.no_grad():
        return model(*args, **kw)


GRAD_MODES = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}


@pytest.mark.parametrize("mode", list(GRAD_MODES))
def test_converted_encoder_layer_computes_mam_in_eval_without_grad(mode):
    layer = _encoder_layer()
    x = torch.randn(3, 5, D)
    mac = _reference(layer.eval(), x)
    mamext.convert(layer)
    assert isinstance(layer.linear1, MAMLinear) and isinstance(layer.linear2, MAMLinear)
    ref = _reference(layer, x)
    assert not torch.allclose(ref, mac, atol=1e-3)
    with GRAD_MODES[mode]():
        torch.testing.assert_close(layer(x), ref)


def test_converted_encoder_layer_after_prune_finalize():
    layer = _encoder_layer(1)
    mamext.convert(layer)
    for lin in (layer.linear1, layer.linear2):
        prune.l1_unstructured(lin, "weight", amount=0.5)
    mamext.prune.finalize(layer)
    layer.eval()
    x = torch.randn(2, 4, D)
    ref = _reference(layer, x)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), ref)


@pytest.mark.parametrize("mode", list(GRAD_MODES))
def test_converted_encoder_with_padding_mask(mode):
    torch.manual_seed(2)
    encoder = nn.TransformerEncoder(_encoder_layer(2), num_layers=2, enable_nested_tensor=True)
    mamext.convert(encoder).eval()
    x = torch.randn(3, 5, D)
    pad = torch.zeros(3, 5, dtype=torch.bool)
    pad[0, 3:] = True
    ref = _reference(encoder, x, src_key_padding_mask=pad)
    with GRAD_MODES[mode]():
        out = encoder(x, src_key_padding_mask=pad)
    keep = ~pad
    torch.testing.assert_close(out[keep], ref[keep])


def test_packed_converted_encoder_layer_runs_and_matches():
    layer = _encoder_layer(3)
    mamext.convert(layer)
    for lin in (layer.linear1, layer.linear2):
        prune.l1_unstructured(lin, "weight", amount=0.6)
    layer.eval()
    x = torch.randn(2, 4, D)
    ref = _reference(layer, x)
    packed = mamext.sparse.pack(layer)
    assert isinstance(packed.linear1, mamext.sparse.PackedMAMLinear)
    for mode in GRAD_MODES.values():
        with mode():
            torch.testing.assert_close(packed(x), ref)


def test_packed_pruned_plain_encoder_layer_runs():
    layer = _encoder_layer(4)
    for lin in (layer.linear1, layer.linear2):
        prune.l1_unstructured(lin, "weight", amount=0.6)
    layer.eval()
    x = torch.randn(2, 4, D)
    ref = _reference(layer, x)
    packed = mamext.sparse.pack(layer)
    assert isinstance(packed.linear2, mamext.sparse.PackedLinear)
    with torch.no_grad():
        torch.testing.assert_close(packed(x), ref)


def test_unconverted_encoder_layer_keeps_the_fused_path():
    model = nn.Sequential(nn.Linear(D, D))
    model.add_module("enc", _encoder_layer(5))
    mamext.convert(model, exclude="enc")
    assert model.enc.activation_relu_or_gelu
