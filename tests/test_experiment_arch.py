"""Tests of ``mamext experiment --arch cnn|vit`` (and that ``--arch mlp``,
the default, is the MLP run as before)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from mamext.experiment import options, sweep
from mamext.experiment.cli import run
from mamext.experiment.models import hidden_layers, hidden_names
from mamext.experiment.models_cnn import build_cnn
from mamext.experiment.models_vit import build_vit
from mamext.nn import MAMConv2d, MAMLinear

#: results.json's top-level keys and config keys of the MLP run before --arch existed.
MLP_JSON_KEYS = {"command", "comparison", "config", "dataset", "environment", "fractions", "histories", "packing",
                 "rows", "summary", "timings", "wall_seconds"}
MLP_CONFIG_KEYS = {"batch_size", "criteria", "data_dir", "dataset", "device", "epochs", "fractions", "iterative",
                   "iterative_epochs", "iterative_min", "lr", "mam_init", "mcu", "mcu_samples", "models", "out",
                   "progress", "quick", "quiet", "schedule", "score_samples", "seed", "threads", "train_subset",
                   "transition_epochs"}
ROW_KEYS = {"model", "criterion", "fraction", "seed", "kept", "total", "actual_fraction", "val_acc", "test_acc",
            "seconds"}
OUTPUTS = ("results.json", "results.csv", "accuracy_vs_remaining.png", "summary.md")


def _run(tmp_path, *argv):
    args = options.build_parser().parse_args(["--dataset", "digits", "--quick", "--quiet", "--threads", "1",
                                               "--out", str(tmp_path / "out"), *argv])
    args._argv = None
    results = run(args)
    for name in OUTPUTS:
        assert (tmp_path / "out" / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "out" / "results.json").read_text())["rows"] == json.loads(
        json.dumps(results["rows"]))
    return results


def _check_structure(results, total):
    assert set(results) == MLP_JSON_KEYS
    rows = results["rows"]
    assert {r["model"] for r in rows} == {"mac", "mam"}
    assert all(ROW_KEYS <= set(r) and r["total"] == total for r in rows)
    crit = {m: {r["criterion"] for r in rows if r["model"] == m} for m in ("mac", "mam")}
    assert crit["mam"] == set(sweep.DEFAULT_CRITERIA)
    assert crit["mac"] == {c for c in sweep.DEFAULT_CRITERIA if not sweep.mam_models_only(c)}
    assert {r["fraction"] for r in rows} == set(sweep.FRACTIONS)
    assert results["comparison"] and results["summary"]
    assert all("error" not in rec for rec in results["packing"]["checks"])


def test_mlp_run_unchanged(tmp_path):
    results = _run(tmp_path, "--criteria", "magnitude-global,selection-layer")
    assert set(results) == MLP_JSON_KEYS
    assert set(results["config"]) == MLP_CONFIG_KEYS | {"arch", "mam_conv", "vit_mam", "mam_epochs", "mam_lr",
                                                        "lr_schedule", "weight_decay"}
    assert results["config"]["arch"] == "mlp" and results["config"]["epochs"] == options.QUICK_DIGITS["epochs"]
    assert options.ARCH_DEFAULTS["mlp"] is options.DEFAULTS
    assert all(r["total"] == 64 * 512 + 512 * 256 for r in results["rows"])
    assert "Recipe: MLP 64-512-256-10" in (tmp_path / "out" / "summary.md").read_text()


def test_cnn_quick_digits(tmp_path):
    results = _run(tmp_path, "--arch", "cnn")
    _check_structure(results, total=(32 * 2 * 2) * 256 + 256 * 128)
    assert "Recipe: CNN" in (tmp_path / "out" / "summary.md").read_text()


def test_vit_quick_digits(tmp_path):
    results = _run(tmp_path, "--arch", "vit")
    _check_structure(results, total=2 * (64 * 128 + 128 * 64))  # both MLP layers of both blocks
    assert "Recipe: ViT" in (tmp_path / "out" / "summary.md").read_text()


def _pruned_weights(model, criterion, fraction, data):
    """Names of the weight tensors changed by pruning ``model``."""
    pruned, _ = sweep.prune_copy(model, fraction, criterion, data)
    before = {n: t for n, t in model.state_dict().items() if n.endswith("weight")}
    after = {n.replace("weight_orig", "weight"): t for n, t in pruned.state_dict().items()}
    changed = set()
    for name, module in pruned.named_modules():
        if hasattr(module, "weight") and isinstance(module.weight, torch.Tensor) and f"{name}.weight" in before:
            if not torch.equal(module.weight.detach(), before[f"{name}.weight"]):
                changed.add(name)
    assert set(after) >= set(before)
    return changed


def _data(shape=(8, 8), n=64):
    x = torch.rand(n, shape[0] * shape[1])
    return [(x, torch.randint(0, 10, (n,)))]


@pytest.mark.parametrize("kind", ["mac", "mam"])
@pytest.mark.parametrize("mam_conv", [False, True])
def test_cnn_prunes_only_the_selected_layers(kind, mam_conv):
    torch.manual_seed(0)
    model = build_cnn(kind, (8, 8), 10, mam_conv=mam_conv)
    expected = (["conv1", "conv2"] if mam_conv else []) + ["fc1", "fc2"]
    assert hidden_names(model) == expected
    mam_kinds = {n: type(model.get_submodule(n)) for n in expected}
    if kind == "mam":
        assert all(t in (MAMLinear, MAMConv2d) for t in mam_kinds.values())
    assert type(model.out) is nn.Linear
    assert type(model.conv1) is ((MAMConv2d if mam_conv else nn.Conv2d) if kind == "mam" else nn.Conv2d)
    for crit in ("magnitude-global", "gradient-global"):
        assert _pruned_weights(model, crit, 0.1, _data()) == set(expected)


def test_cnn_shapes_and_same_init():
    for shape in ((8, 8), (28, 28)):
        torch.manual_seed(1)
        mac = build_cnn("mac", shape, 10)
        torch.manual_seed(1)
        mam = build_cnn("mam", shape, 10)
        assert torch.equal(mac.fc1.weight, mam.fc1.weight)
        assert mam(torch.rand(3, shape[0] * shape[1])).shape == (3, 10)
    with pytest.raises(ValueError, match="too small"):
        build_cnn("mac", (3, 3), 10)


@pytest.mark.parametrize("kind", ["mac", "mam"])
def test_vit_prunes_only_the_selected_layers(kind):
    torch.manual_seed(0)
    model = build_vit(kind, (8, 8), 10)
    expected = ["encoder.layers.0.linear1", "encoder.layers.1.linear1"]
    assert hidden_names(model) == expected
    assert all(type(m) is (MAMLinear if kind == "mam" else nn.Linear) for m in hidden_layers(model))
    assert type(model.encoder.layers[0].linear2) is nn.Linear
    for crit in ("magnitude-global", "gradient-global"):
        assert _pruned_weights(model, crit, 0.1, _data()) == set(expected)


def test_vit_computes_mam_in_eval_without_grad():
    """PyTorch's fused encoder path (eval, no grad) would compute linear1 as
    MAC; the MAM model must compute MAM there too."""
    torch.manual_seed(0)
    mam = build_vit("mam", (8, 8), 10)
    torch.manual_seed(0)
    mac = build_vit("mac", (8, 8), 10)
    x = torch.rand(5, 64)
    mam.train()
    with_grad = mam(x).detach()
    mam.eval()
    with torch.no_grad():
        fused_candidate = mam(x)
        mac.eval()
        mac_out = mac(x)
    torch.testing.assert_close(fused_candidate, with_grad)
    assert not torch.allclose(fused_candidate, mac_out)


def test_mam_conv_needs_cnn():
    args = options.build_parser().parse_args(["--arch", "vit", "--mam-conv"])
    with pytest.raises(options.UsageError, match="--mam-conv"):
        options.resolve_options(args)


def test_arch_defaults():
    for arch in ("cnn", "vit"):
        args = options.build_parser().parse_args(["--arch", arch])
        opts = options.resolve_options(args)
        assert opts.epochs == options.ARCH_DEFAULTS[arch]["epochs"]
    args = options.build_parser().parse_args(["--arch", "cnn", "--epochs", "6"])
    assert options.resolve_options(args).epochs == 6


def test_mam_conv_uses_the_cnn_recipe_on_the_whole_training_set():
    args = options.build_parser().parse_args(["--arch", "cnn", "--mam-conv"])
    resolved, cnn = options.resolve_options(args), options.resolve_options(options.build_parser().parse_args(["--arch", "cnn"]))
    assert resolved.train_subset is None
    for key in ("epochs", "transition_epochs", "mam_init", "mam_epochs", "mam_lr"):
        assert getattr(resolved, key) == getattr(cnn, key), key
    args = options.build_parser().parse_args(["--arch", "cnn", "--mam-conv", "--train-subset", "100"])
    assert options.resolve_options(args).train_subset == 100
    assert options.resolve_options(options.build_parser().parse_args(["--arch", "cnn"])).train_subset is None
    assert options.resolve_options(options.build_parser().parse_args([])).train_subset is None


def test_quick_arch_sweep_on_idx_data_only():
    parse = options.build_parser().parse_args
    reduced = options.resolve_options(parse(["--arch", "vit", "--quick"]))
    assert reduced.criteria == options.QUICK_ARCH_SWEEP["criteria"]
    assert reduced.fractions == options.QUICK_ARCH_SWEEP["fractions"]
    for argv in (["--quick"], ["--arch", "cnn"], ["--arch", "cnn", "--quick", "--dataset", "digits"]):
        full = options.resolve_options(parse(argv))
        assert full.criteria == list(sweep.DEFAULT_CRITERIA)
        assert full.fractions == [100 * f for f in sweep.FRACTIONS]
    explicit = options.resolve_options(parse(["--arch", "cnn", "--quick", "--criteria", "magnitude-layer",
                                              "--fractions", "100,50"]))
    assert explicit.criteria == ["magnitude-layer"] and explicit.fractions == [100.0, 50.0]


def test_criteria_apply_to_pruned_convolutions():
    mam, mac = build_cnn("mam", (8, 8), 10, mam_conv=True), build_cnn("mac", (8, 8), 10, mam_conv=True)
    for crit in ("magnitude-global", "gradient-layer", "selection-layer"):
        assert sweep.criterion_applies(crit, mam)
    assert sweep.criterion_applies("magnitude-global", mac)
    assert not sweep.criterion_applies("selection-layer", mac)


def test_cnn_mam_conv_from_trained_mac(tmp_path):
    results = _run(tmp_path, "--arch", "cnn", "--mam-conv", "--mam-init", "mac", "--epochs", "2",
                   "--transition-epochs", "1", "--criteria", "magnitude-global", "--fractions", "100,10")
    total = 16 * 9 + 32 * 16 * 9 + (32 * 2 * 2) * 256 + 256 * 128
    assert {r["total"] for r in results["rows"]} == {total}
    assert results["histories"]["mam"][0]["epochs"][-1]["beta"] == 0.0
