"""Packed sparse layers (mamext.sparse): equality with the dense zero-weight
layer on every ISA path, int8, save/load, errors."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

import mamext
from mamext import sparse
from mamext.nn import MAMLinear
from op_testing import assert_same


def _weight(N, K, keep, gen, dtype=torch.float32):
    """Random weight with fraction `keep` kept, plus an empty row, a full row and a
    single-connection row (when N allows)."""
    w = torch.randn(N, K, generator=gen, dtype=torch.float64)
    w = w * (torch.rand(N, K, generator=gen, dtype=torch.float64) < keep)
    w[0] = 0                                   # every connection pruned
    if N > 1:
        w[1] = torch.randn(K, generator=gen, dtype=torch.float64)  # no connection pruned
        w[1][w[1] == 0] = 1.0
    if N > 2:
        w[2] = 0
        w[2, K - 1] = -1.5                     # a single kept connection
    return w.to(dtype)


def _dense(x, w, b):
    return torch.ops.mamext.mam_linear_inference(x, w, b)


SHAPES = [  # (B, K, N): B=1..3 scalar/gather path, B>=4 batch panels with tails; K picks the index type
    (1, 7, 5), (2, 300, 37), (3, 50, 3), (5, 64, 40), (37, 256, 70), (100, 300, 33), (9, 40000, 4),
    (1, 700, 600),   # gather path: rows of many lengths, vector tails, the last row at the array end
    (20, 70, 1100),  # one sample block split into neuron chunks (each refills its panel)
    (130, 33, 20),   # three sample blocks, the last one with 2 samples
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B,K,N", SHAPES)
def test_packed_mam_equals_dense(isa, B, K, N, dtype):
    gen = torch.Generator().manual_seed(B * 1000 + K + N)
    for keep in (0.02, 0.3, 0.9):
        w = _weight(N, K, keep, gen, dtype)
        b = torch.randn(N, generator=gen, dtype=dtype)
        x = torch.randn(B, K, generator=gen, dtype=dtype)
        layer = sparse.PackedMAMLinear.from_weight(w, b, dtype)
        assert layer.kept == int((w != 0).sum())
        with torch.no_grad():
            assert torch.equal(layer(x), _dense(x, w, b)), (keep, isa)
            # no bias, and leading batch dimensions
            layer_nb = sparse.PackedMAMLinear.from_weight(w, None, dtype)
            x3 = x.reshape(1, B, K)
            assert torch.equal(layer_nb(x3), _dense(x3, w, None))


@pytest.mark.parametrize("B,K,N", [(1, 30, 9), (6, 300, 20), (70, 100, 17)])
def test_packed_linear_sum(isa, B, K, N):
    gen = torch.Generator().manual_seed(7)
    w = _weight(N, K, 0.2, gen, torch.float64)
    b = torch.randn(N, generator=gen, dtype=torch.float64)
    x = torch.randn(B, K, generator=gen, dtype=torch.float64)
    ref = nn.functional.linear(x, w, b)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 2e-5)):
        layer = sparse.PackedLinear.from_weight(w, b, dtype)
        torch.testing.assert_close(layer(x.to(dtype)), ref.to(dtype), rtol=tol, atol=tol)
    assert torch.equal(layer(x.to(torch.float32))[:, 0], b[0].float().expand(B))  # empty row -> bias


@pytest.mark.parametrize("B", [1, 5, 40, 130])  # 130: blocks 0 and 2 non-finite, block 1 on the fast path
def test_nonfinite_inputs_match_dense(isa, B):
    gen = torch.Generator().manual_seed(3)
    K, N = 50, 12
    w = _weight(N, K, 0.3, gen)
    b = torch.randn(N, generator=gen)
    x = torch.randn(B, K, generator=gen)
    pruned_k = int((w[3] == 0).nonzero()[0])
    kept_k = int((w[3] != 0).nonzero()[0])
    x[0, pruned_k] = float("inf")             # on a pruned connection of row 3: NaN there (0 * inf)
    x[B - 1, kept_k] = float("nan") if B > 1 else x[B - 1, kept_k]
    if B > 2:
        x[1, :] = float("-inf")
    layer = sparse.PackedMAMLinear.from_weight(w, b)
    y, d = layer(x), _dense(x, w, b)
    assert_same(y, d, signs=None)
    assert torch.isnan(y[0, 3])
    lin = sparse.PackedLinear.from_weight(w, b)
    torch.testing.assert_close(lin(x), nn.functional.linear(x, w, b), rtol=1e-5, atol=1e-5, equal_nan=True)


def _model():
    torch.manual_seed(0)
    m = nn.Sequential(MAMLinear(48, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), MAMLinear(32, 10),
                      nn.Linear(10, 4))
    torch_prune.l1_unstructured(m[0], "weight", amount=0.97)   # masks
    torch_prune.random_unstructured(m[2], "weight", amount=0.5)
    with torch.no_grad():
        m[4].weight[m[4].weight.abs() < 0.1] = 0                 # plain zero weights
    return m.eval()                                              # m[5]: unpruned


def test_pack_model_masks_and_zeros(isa):
    m = _model()
    p = sparse.pack(m)
    assert isinstance(p[0], sparse.PackedMAMLinear) and isinstance(p[2], sparse.PackedLinear)
    assert isinstance(p[4], sparse.PackedMAMLinear) and type(p[5]) is nn.Linear  # unpruned stays dense
    assert p[0].kept == int(m[0].weight_mask.sum())
    assert hasattr(m[0], "weight_mask")  # the original is untouched
    x = torch.randn(33, 48)
    with torch.no_grad():
        torch.testing.assert_close(p(x), m(x), rtol=1e-5, atol=1e-5)
        h_dense = m[0](x)
        assert torch.equal(p[0](x), h_dense)  # MAM layers are exact
    pd = sparse.pack(m, pack_dense=True)
    assert isinstance(pd[5], sparse.PackedLinear) and pd[5].kept == 40
    single = sparse.pack(m[0])
    assert isinstance(single, sparse.PackedMAMLinear)
    assert torch.equal(single(x), h_dense)


def test_index_and_offset_dtypes():
    assert sparse.index_dtype(256) == torch.uint8
    assert sparse.index_dtype(257) == torch.int16
    assert sparse.index_dtype(32768) == torch.int16
    assert sparse.index_dtype(32769) == torch.int32
    w = torch.zeros(3, 300)
    w[1, 299] = 1
    layer = sparse.PackedMAMLinear.from_weight(w)
    assert layer.indices.dtype == torch.int16 and layer.offsets.dtype == torch.int32
    assert layer.offsets.tolist() == [0, 0, 1, 1]
    # bytes: values + indices + offsets (+ bias)
    assert layer.weight_nbytes == 1 * 4 + 1 * 2 + 4 * 4
    assert layer.nbytes == layer.weight_nbytes
    r = repr(layer)
    assert "kept=1/900" in r and "bytes=" in r


def _int8_reference(x, layer):
    """Independent torch implementation of the documented int8 arithmetic."""
    x = x.reshape(-1, layer.in_features).to(torch.float32)
    amax = x.abs().amax(1)
    zero = amax < 1e-30
    inv = torch.where(zero, torch.zeros_like(amax), torch.tensor(127.0) / amax)
    q = torch.round(x * inv[:, None]).clamp(-127, 127).to(torch.int64)
    sx = torch.where(zero, torch.zeros_like(amax), amax / torch.tensor(127.0))
    w = torch.zeros(layer.out_features, layer.in_features, dtype=torch.int64)
    rows = torch.repeat_interleave(torch.arange(layer.out_features), (layer.offsets[1:] - layer.offsets[:-1]).long())
    w[rows, layer.indices.long()] = layer.values.long()
    prod = q[:, None, :] * w[None]                                 # (M, N, K)
    if layer.mam:
        full = (layer.offsets[1:] - layer.offsets[:-1]) == layer.in_features
        kept = torch.zeros_like(w, dtype=torch.bool)
        kept[rows, layer.indices.long()] = True
        big = torch.iinfo(torch.int64).max
        mx = torch.where(kept[None], prod, -big).amax(-1)
        mn = torch.where(kept[None], prod, big).amin(-1)
        mx = torch.where(full[None], mx, mx.clamp(min=0))          # pruned rows: 0 is a candidate
        mn = torch.where(full[None], mn, mn.clamp(max=0))
        empty = kept.sum(1) == 0
        acc = torch.where(empty[None], 0, mx + mn)
    else:
        acc = prod.sum(-1)
    scale = layer.weight_scale[None, :] * sx[:, None]
    y = acc.to(torch.float32) * scale
    if layer.bias is not None:
        y = y + layer.bias
    return y


@pytest.mark.parametrize("B,K,N", [(1, 20, 6), (3, 300, 40), (21, 64, 33), (70, 256, 10)])
def test_int8(isa, B, K, N):
    gen = torch.Generator().manual_seed(B + K + N)
    w = _weight(N, K, 0.25, gen)
    b = torch.randn(N, generator=gen)
    x = torch.randn(B, K, generator=gen) * 3
    x[0, :] = 0  # an all-zero sample: scale 0, output = bias
    for cls in (sparse.PackedMAMLinear, sparse.PackedLinear):
        layer = cls.from_weight(w, b, torch.int8)
        assert layer.values.dtype == torch.int8 and layer.weight_scale.dtype == torch.float32
        y = layer(x)
        assert y.dtype == torch.float32
        assert torch.equal(y, _int8_reference(x, layer)), cls.__name__
        # close to the float layer
        ref = cls.from_weight(w, b)(x)
        assert (y - ref).abs().max() <= 0.05 * ref.abs().max() + 1e-6
        # per-sample scales: a sample's output does not depend on the batch
        assert torch.equal(layer(x[-1:]), y[-1:])
    bad = x.clone()
    bad[-1, 0] = float("inf")
    assert torch.isnan(sparse.PackedMAMLinear.from_weight(w, b, torch.int8)(bad)[-1]).all()


def test_gradients_raise():
    layer = sparse.PackedMAMLinear.from_weight(torch.eye(4))
    x = torch.randn(2, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match="inference only"):
        layer(x)
    y = torch.ops.mamext.packed_linear(x, layer.values, layer.indices, layer.offsets, None, None, 4, True)
    with pytest.raises(RuntimeError, match="inference only"):
        y.sum().backward()
    with torch.no_grad():
        layer(x)  # fine without grad mode


def test_save_load(tmp_path):
    m = _model()
    x = torch.randn(5, 48)
    for dtype in (torch.float32, torch.int8):
        p = sparse.pack(m, dtype)
        path = tmp_path / f"packed_{dtype}.pt"
        torch.save(p, path)
        q = torch.load(path, weights_only=False)
        assert torch.equal(q(x), p(x))
        # state_dict into a model packed from a differently pruned copy (buffers resize)
        other = sparse.pack(nn.Sequential(*[sparse.PackedMAMLinear.from_weight(torch.ones(64, 48)) if i == 0 else mod
                                            for i, mod in enumerate(_model())]), dtype)
        buf = io.BytesIO()
        torch.save(p.state_dict(), buf)
        buf.seek(0)
        other.load_state_dict(torch.load(buf))
        assert torch.equal(other(x), p(x))


def test_bad_inputs():
    layer = sparse.PackedMAMLinear.from_weight(torch.randn(5, 8))
    with pytest.raises(ValueError, match=r"\(\*, 8\)"):
        layer(torch.randn(3, 9))
    with pytest.raises(RuntimeError, match="in_features"):
        torch.ops.mamext.packed_linear(torch.randn(3, 9), layer.values, layer.indices, layer.offsets, None, None, 8,
                                       True)
    bad_idx = layer.indices.clone()
    bad_idx[3] = 8
    with pytest.raises(RuntimeError, match="strictly increasing"):
        torch.ops.mamext.packed_linear(torch.randn(3, 8), layer.values, bad_idx, layer.offsets, None, None, 8, True)
    bad_off = layer.offsets.clone()
    bad_off[-1] += 1
    with pytest.raises(RuntimeError, match="offsets"):
        torch.ops.mamext.packed_linear(torch.randn(3, 8), layer.values, layer.indices, bad_off, None, None, 8, True)
    with pytest.raises(TypeError, match="dtype"):
        sparse.pack(nn.Linear(3, 3), torch.float16)
    mam = MAMLinear(4, 4)
    mam.set_beta(0.5)
    with torch.no_grad():
        mam.weight[0, 0] = 0
    with pytest.raises(ValueError, match="beta"):
        sparse.pack(mam)
    with pytest.raises(ValueError, match="int8"):
        sparse.pack(sparse.pack(nn.Linear(3, 3), torch.int8), torch.float32)


def test_fake_kernel_and_compile():
    layer = sparse.PackedMAMLinear.from_weight(torch.randn(6, 10) * (torch.rand(6, 10) < 0.5))
    x = torch.randn(4, 10)
    torch.library.opcheck(torch.ops.mamext.packed_linear.default,
                          (x, layer.values, layer.indices, layer.offsets, None, None, 10, True),
                          test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(torch.ops.mamext.packed_linear.default,  # column-major input and output
                          (x.t().contiguous().t(), layer.values, layer.indices, layer.offsets, None, None, 10, True),
                          test_utils=("test_schema", "test_faketensor"))
    with torch._subclasses.fake_tensor.FakeTensorMode():
        fx = torch.empty(7, 3, 10)
        out = torch.ops.mamext.packed_linear(fx, torch.empty(5), torch.empty(5, dtype=torch.uint8),
                                             torch.empty(7, dtype=torch.int32), None, None, 10, True)
        assert out.shape == (7, 3, 6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int8])
@pytest.mark.parametrize("B,K,N", [(2, 30, 9), (70, 300, 40), (130, 33, 600)])
def test_column_major_layout_follows_input(isa, dtype, B, K, N):
    """A column-major 2-D input (x.t() of a contiguous (K, B) tensor, what a chain of
    packed layers passes along) gives a column-major output with the same values."""
    gen = torch.Generator().manual_seed(B + K + N)
    w = _weight(N, K, 0.1, gen)
    b = torch.randn(N, generator=gen)
    layer = sparse.PackedMAMLinear.from_weight(w, b, dtype)
    x = torch.randn(B, K, generator=gen)
    xc = x.t().contiguous().t()
    assert xc.stride() == (1, B)
    with torch.no_grad():
        y, yc = layer(x), layer(xc)
        assert y.is_contiguous() and yc.stride() == (1, B)
        assert torch.equal(y, yc)
        xc[B // 2, K // 3] = float("nan")   # non-finite input: the exact path, same layout
        xc[0, 1] = float("inf")
        y2 = layer(xc.contiguous())
        yc2 = layer(xc)
        assert yc2.stride() == (1, B)
        assert_same(yc2, y2, signs=None)
        if dtype != torch.int8:  # half input: converted, same layout rule
            yh = layer(xc.half())
            assert yh.dtype == torch.float16 and yh.stride() == (1, B)
    # the fake kernel applies the same layout rule
    with torch._subclasses.fake_tensor.FakeTensorMode():
        fx = torch.empty(K, B).t()
        out = torch.ops.mamext.packed_linear(fx, torch.empty(5), torch.empty(5, dtype=torch.uint8),
                                             torch.empty(N + 1, dtype=torch.int32), None, None, K, True)
        assert out.shape == (B, N) and out.stride() == (1, B)


def test_column_major_chain_compiles():
    """torch.compile through a chain that keeps the column-major layout."""
    gen = torch.Generator().manual_seed(11)
    m = nn.Sequential(MAMLinear(40, 64), nn.ReLU(), MAMLinear(64, 10))
    with torch.no_grad():
        for layer in (m[0], m[2]):
            layer.weight.mul_(torch.rand(layer.weight.shape, generator=gen) < 0.2)
    p = sparse.pack(m.eval())
    x = torch.randn(33, 40, generator=gen).t().contiguous().t()
    with torch.no_grad():
        ref = p(x.contiguous())
        out = p(x)
        assert out.stride() == (1, 33)
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
        compiled = torch.compile(p, backend="aot_eager", fullgraph=True)
        torch.testing.assert_close(compiled(x), ref, rtol=0, atol=0)


@pytest.mark.parametrize("B", [1, 5, 70])
@pytest.mark.parametrize("column_major", [False, True])
def test_adversarial_values_match_dense(isa, B, column_major):
    """Non-finite weights, huge finite inputs (the panel's finiteness sum overflows:
    the exact path must still agree), ties between equal products (integer data),
    all-negative products, and K past the int16 index range at small B."""
    gen = torch.Generator().manual_seed(B)
    K, N = 70, 40
    w = _weight(N, K, 0.2, gen)
    b = torch.randn(N, generator=gen)

    def check(w, x, b):
        layer = sparse.PackedMAMLinear.from_weight(w, b)
        if column_major and B > 1:
            x = x.t().contiguous().t()
        with torch.no_grad():
            assert_same(layer(x), _dense(x.contiguous(), w, b), signs=None)

    x = torch.randn(B, K, generator=gen)
    w_bad = w.clone()
    w_bad[5, (w[5] != 0).nonzero()[0]] = float("inf")
    w_bad[6, (w[6] != 0).nonzero()[0]] = float("nan")
    check(w_bad, x, b)
    check(w, x * 3e38, b)                                      # finite, but sums overflow
    xi = torch.randint(-2, 3, (B, K), generator=gen).float()   # many exact ties, signed zeros
    wi = torch.randint(-2, 3, (N, K), generator=gen).float() * (torch.rand(N, K, generator=gen) < 0.5)
    check(wi, xi, b)
    check(-w.abs(), x.abs() + 0.1, None)                       # every kept product negative
    big_k = 40000                                              # int32 indices
    wk = torch.randn(6, big_k, generator=gen) * (torch.rand(6, big_k, generator=gen) < 0.001)
    wk[1, -1] = 2.0
    check(wk, torch.randn(B, big_k, generator=gen), None)


@pytest.mark.parametrize("K", [50, 300, 40000])    # uint8, int16, int32 indices
@pytest.mark.parametrize("mam", [True, False])
def test_int8_batch_independent(isa, K, mam):
    """int8 quantises each sample on its own, so a sample's output is the same
    bit for bit whether it runs alone (tiny-batch path) or in a batch (panels)."""
    gen = torch.Generator().manual_seed(K)
    N = 37
    w = _weight(N, K, 0.05 if K < 1000 else 0.002, gen)
    b = torch.randn(N, generator=gen)
    cls = sparse.PackedMAMLinear if mam else sparse.PackedLinear
    layer = cls.from_weight(w, b, torch.int8)
    x = torch.randn(70, K, generator=gen)
    x[3, 5] = float("nan")                                  # that sample's outputs: NaN
    with torch.no_grad():
        batch = layer(x)
        for i in (0, 3, 17, 69):
            assert_same(layer(x[i:i + 1]), batch[i:i + 1], signs=None)
        assert_same(layer(x[:3]), batch[:3], signs=None)
    assert torch.isnan(batch[3]).all() and not torch.isnan(batch[[0, 1, 2, 4]]).any()


def test_int8_sum_overflow_is_refused():
    """int8 products reach 127 * 127; an int32 sum over more than 133,143 of them
    could overflow, so packing and the operator refuse it (a max + min cannot)."""
    K = 140_000
    w = torch.ones(2, K)
    with pytest.raises(ValueError, match="overflow int32"):
        sparse.PackedLinear.from_weight(w, None, torch.int8)
    m = sparse.PackedMAMLinear.from_weight(w, None, torch.int8)   # MAM: fine
    x = torch.rand(1, K)
    with torch.no_grad():
        assert torch.isfinite(m(x)).all()
        with pytest.raises(RuntimeError, match="overflow int32"):
            torch.ops.mamext.packed_linear(x, m.values, m.indices, m.offsets, None, m.weight_scale, K, False)
