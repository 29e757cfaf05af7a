"""Pruning MAM layers: PyTorch's pruning APIs unchanged, mamext.prune scores and helpers."""

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import prune

import mamext
import mamext.prune as mp
from mamext.nn import MAMLinear, VanishingContribution
from mamext.reference import mam_linear_reference


def _twins(seed=0, dtype=torch.float32):
    """The same weights as MAMLinear and as nn.Linear layers."""
    torch.manual_seed(seed)
    mac = nn.Sequential(nn.Linear(6, 8, dtype=dtype), nn.ReLU(), nn.Linear(8, 5, dtype=dtype))
    mam = copy.deepcopy(mac)
    mamext.convert(mam)
    return mac, mam


def _mixed(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(MAMLinear(6, 8, dtype=dtype), nn.ReLU(), nn.Linear(8, 7, dtype=dtype), nn.Tanh(),
                         MAMLinear(7, 4, dtype=dtype))


def _ref_forward(model, x):
    """Forward of a Sequential with MAM layers through the reference, using the masked weights."""
    for m in model:
        if isinstance(m, MAMLinear):
            x = mam_linear_reference(x, m.weight, m.bias)
        else:
            x = m(x)
    return x


# --------------------------------------------------------------------------- torch.nn.utils.prune, unchanged


def test_l1_unstructured_same_mask_and_mam_semantics():
    mac, mam = _twins()
    for model in (mac, mam):
        prune.l1_unstructured(model[0], "weight", amount=0.4)
        prune.l1_unstructured(model[2], "weight", amount=7)
    for i in (0, 2):
        assert torch.equal(mac[i].weight_mask, mam[i].weight_mask)
    assert int((mam[2].weight_mask == 0).sum()) == 7
    x = torch.randn(9, 6)
    torch.testing.assert_close(mam(x), _ref_forward(mam, x))
    # Gradients reach weight_orig through the mask, zero at pruned connections.
    mam(x).sum().backward()
    w = mam[2].weight_orig.detach().clone().requires_grad_(True)
    h = mam_linear_reference(x, mam[0].weight, mam[0].bias).relu().detach()
    mam_linear_reference(h, w * mam[2].weight_mask, mam[2].bias).sum().backward()
    torch.testing.assert_close(mam[2].weight_orig.grad, w.grad)
    assert torch.all(mam[2].weight_orig.grad[mam[2].weight_mask == 0] == 0)


def test_random_unstructured_same_as_linear():
    mac, mam = _twins()
    torch.manual_seed(5)
    prune.random_unstructured(mac[0], "weight", amount=0.5)
    torch.manual_seed(5)
    prune.random_unstructured(mam[0], "weight", amount=0.5)
    assert torch.equal(mac[0].weight_mask, mam[0].weight_mask)
    x = torch.randn(3, 6)
    torch.testing.assert_close(mam(x), _ref_forward(mam, x))


def test_global_unstructured_mixing_linear_and_mam():
    mac, mam = _twins()
    mam[2] = mac[2].__class__(8, 5)  # mam now mixes MAMLinear (0) and nn.Linear (2)
    mam[2].load_state_dict(mac[2].state_dict())
    for model in (mac, mam):
        prune.global_unstructured([(model[0], "weight"), (model[2], "weight")],
                                  pruning_method=prune.L1Unstructured, amount=30)
    assert isinstance(mam[0], MAMLinear) and type(mam[2]) is nn.Linear
    for i in (0, 2):
        assert torch.equal(mac[i].weight_mask, mam[i].weight_mask)
    assert sum(int((m.weight_mask == 0).sum()) for m in (mam[0], mam[2])) == 30


class EveryOther(prune.BasePruningMethod):
    """Prunes the entries at even flat positions."""

    PRUNING_TYPE = "unstructured"

    def compute_mask(self, t, default_mask):
        mask = default_mask.clone()
        mask.view(-1)[::2] = 0
        return mask


def test_custom_pruning_method_and_remove():
    _, mam = _twins()
    EveryOther.apply(mam[0], "weight")
    expected = torch.ones(8, 6)
    expected.view(-1)[::2] = 0
    assert torch.equal(mam[0].weight_mask, expected)
    x = torch.randn(4, 6)
    torch.testing.assert_close(mam(x), _ref_forward(mam, x))
    out = mam(x)
    prune.remove(mam[0], "weight")
    assert isinstance(mam[0].weight, nn.Parameter) and "weight_mask" not in dict(mam[0].named_buffers())
    assert torch.all(mam[0].weight.view(-1)[::2] == 0)
    torch.testing.assert_close(mam(x), out)


def test_weight_norm_sparsifier_with_tensor_fqn():
    from torch.ao.pruning import WeightNormSparsifier

    mac, mam = _twins(seed=3)
    masks = []
    for model in (mac, mam):
        sp = WeightNormSparsifier(sparsity_level=0.5, sparse_block_shape=(1, 2), zeros_per_block=2)
        sp.prepare(model, config=[{"tensor_fqn": "0.weight"}, {"tensor_fqn": "2.weight"}])
        sp.step()
        masks.append([model[i].parametrizations.weight[0].mask.clone() for i in (0, 2)])
        if model is mam:
            x = torch.randn(5, 6)
            torch.testing.assert_close(mam(x), _ref_forward(mam, x))
            assert 0.4 < mp.remaining(mam)["fraction"] < 0.6
        sp.squash_mask()
    for a, b in zip(*masks):
        assert torch.equal(a, b) and not torch.all(a != 0)
    assert type(mam[0]) is MAMLinear and isinstance(mam[0].weight, nn.Parameter)
    assert torch.equal(mam[0].weight == 0, masks[1][0] == 0)


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_pruned_model_under_torch_compile(backend):
    torch._dynamo.reset()
    model = _mixed()
    mp.prune_model(model, 0.3)
    x = torch.randn(6, 6)
    eager = model(x)
    compiled = torch.compile(model, backend=backend)
    torch.testing.assert_close(compiled(x), eager)
    torch.testing.assert_close(eager, _ref_forward(model, x))
    # Gradients through the compiled pruned model reach weight_orig, masked.
    compiled(x).sum().backward()
    g = model[0].weight_orig.grad
    assert g is not None and torch.all(g[model[0].weight_mask == 0] == 0)


def test_deepcopy_of_pruned_model():
    model = _mixed()
    with torch.no_grad():
        prune.l1_unstructured(model[0], "weight", amount=0.5)
    mp.prune_model(model, 0.4, layers=["2", "4"])
    clone = copy.deepcopy(model)
    x = torch.randn(5, 6)
    torch.testing.assert_close(clone(x), model(x))
    assert clone[0].weight_mask is not model[0].weight_mask
    # The copied hooks act on the copy: changing its mask changes only its output.
    with torch.no_grad():
        clone[0].weight_mask.zero_()
    torch.testing.assert_close(clone[0](x), clone[0].bias.expand(5, -1))
    torch.testing.assert_close(model(x), _ref_forward(model, x))
    # After a grad-enabled forward the masked `weight` is a non-leaf tensor and
    # deepcopy fails (a PyTorch limitation), for nn.Linear and MAMLinear alike;
    # a forward under no_grad makes it copyable again.
    for layer in (model[0], model[2]):
        layer(torch.randn(5, layer.in_features))
        with pytest.raises(RuntimeError, match="graph leaves"):
            copy.deepcopy(layer)
    with torch.no_grad():
        model(x)
    torch.testing.assert_close(copy.deepcopy(model)(x), model(x))


# --------------------------------------------------------------------------- selection counts


def _brute_force_counts(x2d, weight):
    """Per-connection counts of argmax / argmin (lowest index on ties) by plain loops."""
    weight = weight.detach()
    N, K = weight.shape
    cmax = torch.zeros(N, K, dtype=torch.int64)
    cmin = torch.zeros(N, K, dtype=torch.int64)
    union = torch.zeros(N, K, dtype=torch.int64)
    for row in x2d.tolist():
        for n in range(N):
            prods = [float(weight[n, k]) * row[k] for k in range(K)]
            hi, lo = max(prods), min(prods)
            kmax, kmin = prods.index(hi), prods.index(lo)
            cmax[n, kmax] += 1
            cmin[n, kmin] += 1
            union[n, kmax] += 1
            if kmin != kmax:
                union[n, kmin] += 1
    return union, cmax, cmin


def _int_model():
    """Small integer weights and inputs: plenty of ties and repeated winners."""
    g = torch.Generator().manual_seed(11)
    model = nn.Sequential(MAMLinear(5, 4), nn.ReLU(), MAMLinear(4, 3), nn.Linear(3, 2))
    with torch.no_grad():
        for m in model:
            if isinstance(m, (MAMLinear, nn.Linear)):
                m.weight.copy_(torch.randint(-2, 3, m.weight.shape, generator=g).float())
                m.bias.copy_(torch.randint(-1, 2, m.bias.shape, generator=g).float())
        model[0].weight[1] = 0.0  # a fully pruned neuron: every product 0, ties everywhere
    return model


def test_selection_counts_brute_force_with_duplicates():
    model = _int_model()
    g = torch.Generator().manual_seed(12)
    base = torch.randint(-3, 4, (6, 5), generator=g).float()
    batches = [torch.cat([base, base[:3], base[:1]]),  # repeated rows in one batch all count
               torch.randint(-3, 4, (2, 3, 5), generator=g).float(),  # a 3-D input: every row is a sample
               base[:1].clone()]
    with mp.SelectionCounter(model) as counter:
        for x in batches:
            model(x)
    assert set(counter.counts) == {"0", "2"}
    x0 = torch.cat([b.reshape(-1, 5) for b in batches])
    x2 = torch.cat([F.relu(mam_linear_reference(b, model[0].weight, model[0].bias)).reshape(-1, 4)
                    for b in batches])
    for name, x, layer in (("0", x0, model[0]), ("2", x2, model[2])):
        union, cmax, cmin = _brute_force_counts(x, layer.weight)
        assert counter.counts[name].dtype == torch.int64
        assert counter.counts[name].shape == layer.weight.shape
        assert torch.equal(counter.counts[name], union), name
        assert torch.equal(counter.max_counts[name], cmax), name
        assert torch.equal(counter.min_counts[name], cmin), name
        assert counter.samples[name] == x.shape[0] == 10 + 6 + 1
    # The fully pruned neuron: every row selects connection 0 as both max and min, counted once.
    assert counter.counts["0"][1].tolist() == [17, 0, 0, 0, 0]
    assert counter.max_counts["0"][1, 0] == counter.min_counts["0"][1, 0] == 17
    # Outside the context nothing is counted; reset zeroes.
    before = counter.counts["0"].clone()
    model(base)
    assert torch.equal(counter.counts["0"], before)
    counter.reset()
    assert int(counter.counts["0"].sum()) == 0


def test_selection_counts_through_pruning_and_under_grad():
    model = _int_model()
    prune.l1_unstructured(model[0], "weight", amount=6)
    x = torch.randint(-3, 4, (7, 5)).float().requires_grad_(True)
    with mp.SelectionCounter(model, layers=["0"]) as counter:
        model(x).sum().backward()
    union, _, _ = _brute_force_counts(x.detach(), model[0].weight.detach())
    assert set(counter.counts) == {"0"} and torch.equal(counter.counts["0"], union)


def test_selection_function_and_global_unstructured_importance():
    model = _int_model()
    data = [(torch.randint(-3, 4, (4, 5)).float(), torch.zeros(4)) for _ in range(3)]
    counts = mp.selection(model, data)
    union, _, _ = _brute_force_counts(torch.cat([d[0] for d in data]), model[0].weight)
    assert torch.equal(counts["0"], union)
    # Usable as importance_scores for torch's global pruning: the least selected go first.
    layers = [(model[0], "weight"), (model[2], "weight")]
    prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=10,
                              importance_scores={(model[0], "weight"): counts["0"],
                                                 (model[2], "weight"): counts["2"]})
    all_counts = torch.cat([counts["0"].flatten(), counts["2"].flatten()])
    pruned = torch.cat([model[0].weight_mask.flatten(), model[2].weight_mask.flatten()]) == 0
    assert int(pruned.sum()) == 10
    assert all_counts[pruned].max() <= all_counts[~pruned].min()
    assert model[0].weight.dtype == torch.float32


def test_selection_counter_errors():
    model = _int_model()
    with pytest.raises(ValueError, match="expected MAMLinear"):
        mp.SelectionCounter(model, layers=["3"])
    with pytest.raises(ValueError, match="no module named"):
        mp.SelectionCounter(model, layers=["7"])
    with pytest.raises(ValueError, match="no MAMLinear"):
        mp.SelectionCounter(nn.Sequential(nn.Linear(2, 2)))
    counter = mp.SelectionCounter(model).attach()
    with pytest.raises(RuntimeError, match="already attached"):
        counter.attach()
    counter.detach()


# --------------------------------------------------------------------------- scores


def test_magnitude_scores():
    model = _mixed()
    prune.l1_unstructured(model[2], "weight", amount=5)
    scores = mp.magnitude(model)
    assert list(scores) == ["0", "2", "4"]
    torch.testing.assert_close(scores["0"], model[0].weight.abs())
    torch.testing.assert_close(scores["2"], (model[2].weight_orig * model[2].weight_mask).abs())


class ModeProbe(nn.Module):
    def __init__(self):
        super().__init__()
        self.modes = []

    def forward(self, x):
        self.modes.append(self.training)
        return x


def test_gradient_scores_against_manual_backward():
    model = _mixed(dtype=torch.float64)
    model.append(ModeProbe())
    with torch.no_grad():
        prune.l1_unstructured(model[0], "weight", amount=10)
    model.train()
    ref = copy.deepcopy(model).eval()
    torch.manual_seed(7)
    data = [(torch.randn(5, 6, dtype=torch.float64), torch.randint(0, 4, (5,))) for _ in range(3)]
    scores = mp.gradient(model, data, F.cross_entropy)
    assert model[-1].modes == [False] * 3  # eval mode during the passes
    assert all(m.training for m in model.modules())  # restored
    assert all(p.grad is None for p in model.parameters())  # .grad untouched

    for x, y in data:
        F.cross_entropy(ref(x), y).backward()
    weights = {"0": ref[0].weight_orig * ref[0].weight_mask, "2": ref[2].weight, "4": ref[4].weight}
    # G = dL/dW of the effective weight: with W = W_orig * mask, dL/dW_orig = mask * G.
    grads = {"0": None, "2": ref[2].weight.grad, "4": ref[4].weight.grad}
    for name in ("2", "4"):
        torch.testing.assert_close(scores[name], (weights[name] * grads[name]).abs())
    torch.testing.assert_close(scores["0"], (ref[0].weight_orig * ref[0].weight_orig.grad).abs())
    assert torch.all(scores["0"][ref[0].weight_mask == 0] == 0)


# --------------------------------------------------------------------------- prune_model / remaining


def _kept_sets(model, names):
    return torch.cat([(model.get_submodule(n).weight_mask != 0).flatten() for n in names])


def test_prune_model_global_magnitude_matches_brute_force():
    model = _mixed()
    names = ["0", "2", "4"]
    w = torch.cat([model.get_submodule(n).weight.detach().abs().flatten() for n in names])
    total = w.numel()
    mp.prune_model(model, 0.3)
    k = round(0.3 * total)
    expected = torch.zeros(total, dtype=torch.bool)
    expected[w.topk(k).indices] = True
    assert torch.equal(_kept_sets(model, names), expected)
    rep = mp.remaining(model)
    assert rep["kept"] == k and rep["total"] == total and rep["fraction"] == pytest.approx(k / total)
    assert set(rep["layers"]) == set(names)
    assert sum(v["kept"] for v in rep["layers"].values()) == k
    x = torch.randn(4, 6)
    torch.testing.assert_close(model(x), _ref_forward(model, x))


def test_prune_model_layer_scope_and_repeated_calls():
    model = _mixed()
    mp.prune_model(model, 0.5, scope="layer")
    first = {n: model.get_submodule(n).weight_mask.clone() for n in ("0", "2", "4")}
    for n, m in first.items():
        total = m.numel()
        assert int(m.sum()) == round(0.5 * total)
        w = model.get_submodule(n).weight_orig.detach().abs().flatten()
        assert torch.equal(m.flatten() != 0, torch.zeros(total, dtype=torch.bool).index_fill_(
            0, w.topk(round(0.5 * total)).indices, True))
    # Prune further: existing masks respected, counts exact. Rewrite the weights so
    # that magnitude alone would resurrect some pruned connections.
    with torch.no_grad():
        for n in first:
            model.get_submodule(n).weight_orig.copy_(torch.randn_like(first[n]))
    mp.prune_model(model, 0.2, scope="layer")
    for n, m in first.items():
        new = model.get_submodule(n).weight_mask
        assert int(new.sum()) == round(0.2 * m.numel())
        assert torch.all(new[m == 0] == 0)
    rep = mp.remaining(model)
    assert all(v["kept"] == round(0.2 * v["total"]) for v in rep["layers"].values())
    with pytest.raises(ValueError, match="cannot grow"):
        mp.prune_model(model, 0.5, scope="layer")
    with pytest.raises(ValueError, match="cannot grow"):
        mp.prune_model(model, 0.5)


def test_prune_model_gradient_and_selection_scores():
    torch.manual_seed(8)
    data = [(torch.randn(6, 6), torch.randint(0, 4, (6,))) for _ in range(2)]
    model = _mixed()
    scores = mp.gradient(model, data, F.cross_entropy)
    mp.prune_model(model, 0.25, score="gradient", data=data, loss_fn=F.cross_entropy)
    s = torch.cat([scores[n].flatten() for n in ("0", "2", "4")])
    kept = _kept_sets(model, ("0", "2", "4"))
    assert int(kept.sum()) == round(0.25 * s.numel())
    assert s[~kept].max() <= s[kept].min()

    model = _int_model()
    idata = [(torch.randint(-3, 4, (5, 5)).float(), None) for _ in range(2)]
    with pytest.raises(ValueError, match="applies only to MAMLinear"):
        mp.prune_model(model, 0.5, score="selection", layers=["0", "3"], data=idata)
    counts = mp.selection(model, idata)
    mp.prune_model(model, 0.5, score="selection", layers=[model[0], "2"], data=idata)
    c = torch.cat([counts["0"].flatten(), counts["2"].flatten()])
    mags = torch.cat([model[0].weight_orig.abs().flatten(), model[2].weight_orig.abs().flatten()])
    kept = _kept_sets(model, ("0", "2"))
    assert int(kept.sum()) == round(0.5 * c.numel())
    assert c[~kept].max() <= c[kept].min()
    # ties at the boundary count go to the smaller |w|
    edge = c[kept].min()
    if (c[~kept] == edge).any():
        assert mags[~kept & (c == edge)].max() <= mags[kept & (c == edge)].min()
    assert not hasattr(model[3], "weight_mask")


def test_prune_model_keeps_at_least_one_connection():
    model = _mixed()
    mp.prune_model(model, 1e-6, scope="layer")
    assert all(v["kept"] == 1 for v in mp.remaining(model)["layers"].values())
    model = _mixed()
    mp.prune_model(model, 1e-6)
    assert mp.remaining(model)["kept"] == 1
    x = torch.randn(3, 6)
    torch.testing.assert_close(model(x), _ref_forward(model, x))


def test_prune_model_score_dict():
    model = _mixed()
    custom = {"0": torch.arange(1., 49.).view(8, 6), model[2]: torch.zeros(7, 8), "4": torch.full((4, 7), 100.)}
    mp.prune_model(model, 1 - 40 / 132, score=custom)
    assert int((model[2].weight_mask == 0).sum()) == 40  # the zero-score layer goes first
    with pytest.raises(ValueError, match="no entry"):
        mp.prune_model(_mixed(), 0.5, score={"0": torch.zeros(8, 6)})
    with pytest.raises(ValueError, match="shape"):
        mp.prune_model(_mixed(), 0.5, score={"0": torch.zeros(8, 6), "2": torch.zeros(3), "4": torch.zeros(4, 7)})


def test_prune_model_argument_errors():
    model = _mixed()
    for bad in (0, 0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="remaining"):
            mp.prune_model(model, bad)
    with pytest.raises(TypeError, match="remaining"):
        mp.prune_model(model, True)
    with pytest.raises(ValueError, match="scope"):
        mp.prune_model(model, 0.5, scope="row")
    with pytest.raises(ValueError, match="score"):
        mp.prune_model(model, 0.5, score="taylor")
    with pytest.raises(ValueError, match="needs data"):
        mp.prune_model(model, 0.5, score="gradient")
    with pytest.raises(ValueError, match="loss_fn"):
        mp.prune_model(model, 0.5, score="gradient", data=[(torch.randn(2, 6), torch.zeros(2).long())])
    with pytest.raises(ValueError, match="no module named"):
        mp.prune_model(model, 0.5, layers=["9"])
    with pytest.raises(ValueError, match="expected Linear or MAMLinear"):
        mp.prune_model(model, 0.5, layers=["1"])
    with pytest.raises(ValueError, match="not part of the model"):
        mp.prune_model(model, 0.5, layers=[nn.Linear(2, 2)])
    with pytest.raises(TypeError, match="layers"):
        mp.prune_model(model, 0.5, layers=[3])
    assert not hasattr(model[0], "weight_mask")  # nothing happened


def test_remaining_unpruned_and_finalized():
    model = _mixed()
    rep = mp.remaining(model)
    assert rep["fraction"] == 1.0 and rep["total"] == 48 + 56 + 28
    mp.prune_model(model, 0.1)
    k = mp.remaining(model)["kept"]
    mp.finalize(model)
    assert not any(hasattr(m, "weight_mask") for m in model.modules())
    assert mp.remaining(model)["kept"] == k


# --------------------------------------------------------------------------- saving and loading


def test_pruned_state_dict_loads_into_fresh_pruned_model_and_finalize():
    model = _mixed(seed=1)
    vc = VanishingContribution(model, steps=4)
    vc.step()
    mp.prune_model(model, 0.3, layers=["0", "4"])
    x = torch.randn(5, 6)
    out = model(x)
    sd = model.state_dict()
    assert {"0.weight_orig", "0.weight_mask", "0.beta"} <= set(sd)

    fresh = _mixed(seed=2)
    mp.prune_model(fresh, 1.0, layers=["0", "4"])  # all-ones masks: same state_dict layout
    fresh.load_state_dict(sd)
    torch.testing.assert_close(fresh(x), out)
    assert fresh[0]._mac_active and float(fresh[0].beta) == 0.75

    mp.finalize(model)
    assert "0.weight_orig" not in model.state_dict()
    plain = _mixed(seed=3)
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(plain(x), out)
    torch.testing.assert_close(plain[0].weight, sd["0.weight_orig"] * sd["0.weight_mask"], rtol=0, atol=0)
    assert torch.all(plain[0].weight[sd["0.weight_mask"] == 0] == 0)


# --------------------------------------------------------------------------- lottery ticket


def _train(model, steps=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(steps):
        x = torch.randn(8, 6, generator=g)
        y = torch.randint(0, 4, (8,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def test_lottery_ticket_rounds_rewind_and_nested_masks():
    model = _mixed()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    ticket = mp.LotteryTicket(model, rate=0.5)
    total = mp.remaining(model)["total"]
    prev_kept = None
    for r in range(3):
        _train(model, seed=r)
        trained = {n: model.get_submodule(n).weight_orig.detach().clone() if r else
                   model.get_submodule(n).weight.detach().clone() for n in ("0", "2", "4")}
        rep = ticket.prune()
        assert ticket.round == r + 1
        assert rep["kept"] == round(total * 0.5 ** (r + 1))
        kept = _kept_sets(model, ("0", "2", "4"))
        if prev_kept is None:
            prev_kept = torch.ones_like(kept)
        assert not torch.any(kept & ~prev_kept)  # pruned connections stay pruned
        # kept = the largest trained magnitudes among the earlier kept
        t = torch.cat([trained[n].abs().flatten() for n in ("0", "2", "4")])
        assert t[prev_kept & ~kept].max() <= t[kept].min()
        prev_kept = kept
        for n in ("0", "2", "4"):
            m = model.get_submodule(n)
            torch.testing.assert_close(m.weight_orig, init[f"{n}.weight"])  # rewound
            torch.testing.assert_close(m.bias, init[f"{n}.bias"])
            torch.testing.assert_close(m.weight, init[f"{n}.weight"] * m.weight_mask)


def test_lottery_ticket_late_rewinding_run_and_state_dict():
    model = _mixed()
    ticket = mp.LotteryTicket(model, rate=0.2, scope="layer")
    calls = []

    def train_fn(m, r):
        calls.append(r)
        _train(m, steps=1, seed=10 + r)
        if r == 0 and len(calls) == 1:
            ticket.checkpoint()  # rewind point after one step
            early[0] = {n: p.detach().clone() for n, p in m.named_parameters()}
        _train(m, steps=2, seed=20 + r)

    early = [None]
    reports = ticket.run(2, train_fn)
    assert calls == [0, 1, 2] and len(reports) == 2
    for n in ("0", "2", "4"):
        assert reports[-1]["layers"][n]["kept"] == round(model.get_submodule(n).weight_mask.numel() * 0.64)
    state = ticket.state_dict()
    ticket2 = mp.LotteryTicket(_mixed(seed=9), rate=0.5)
    ticket2.load_state_dict(state)
    assert ticket2.round == 2 and ticket2.fraction == pytest.approx(0.64) and ticket2.rate == 0.2
    assert torch.equal(state["checkpoint"]["0.weight"], early[0]["0.weight"])
    ticket.rewind()
    torch.testing.assert_close(model[0].weight_orig, early[0]["0.weight"])


def test_lottery_ticket_argument_errors():
    with pytest.raises(ValueError, match="rate"):
        mp.LotteryTicket(_mixed(), rate=1.0)
    with pytest.raises(ValueError, match="score"):
        mp.LotteryTicket(_mixed(), score="random")
    with pytest.raises(ValueError, match="scope"):
        mp.LotteryTicket(_mixed(), scope="neuron")
    with pytest.raises(ValueError, match="rounds"):
        mp.LotteryTicket(_mixed()).run(-1, lambda m, r: None)
