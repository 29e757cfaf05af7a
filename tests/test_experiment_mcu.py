"""``mamext experiment --mcu``: the deployment table on emulated Cortex-M4 and Cortex-M7.

The end-to-end test needs arm-none-eabi-gcc, newlib and qemu-system-arm: it
skips without them, except under CI (CI=true), where a missing tool fails.
"""

from __future__ import annotations

import json
import os

import pytest
from torch import nn

from mamext.__main__ import main as mamext_main
from mamext.experiment import deployment
from mamext.experiment.options import UsageError


@pytest.fixture(scope="module")
def tools():
    """Skip without the Arm tools, except in CI, which must run the firmware tests."""
    try:
        deployment.check_tools()
    except UsageError as missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the firmware tests: {missing}")
        pytest.skip(str(missing))


@pytest.fixture(scope="module")
def digits_run(tools, tmp_path_factory):
    out = tmp_path_factory.mktemp("experiment_mcu")
    argv = ["experiment", "--dataset", "digits", "--quick", "--mcu", "--mcu-samples", "60", "--quiet",
            "--out", str(out)]
    assert mamext_main(argv) == 0
    return json.loads((out / "results.json").read_text()), (out / "summary.md").read_text()


def test_deployment_rows(digits_run):
    results, _ = digits_run
    table = results["deployment"]
    assert table["samples"] == 60 and table["targets"] == ["cortex-m4", "cortex-m7"]
    rows = table["rows"]
    points = {(r["model"], r["point"], r.get("target")) for r in rows}
    for model in ("mac", "mam"):
        assert (model, "within 1 pt", "cortex-m4") in points and (model, "within 1 pt", "cortex-m7") in points
        assert any(m == model and p == "32 KB flash" for m, p, _ in points)
    for row in rows:
        if row["point"] == "within 1 pt":
            assert "error" not in row, row
        if "error" in row:
            continue
        assert row["mismatches"] == 0 and row["device_acc"] == row["torch_int8_acc"]   # bit-exact device
        assert row["flash_bytes"] > 0 and row["instructions"] > 0
        assert row["ram_bytes"] > row["stack_bytes"] > 0
        assert row["samples"] == 60 and 0 < row["kept"] <= row["total"]
        if row["point"] == "32 KB flash" and row["target"] == "cortex-m4":
            assert row["flash_bytes"] <= deployment.FLASH_BUDGET_BYTES
            assert any(fit["fraction"] == row["fraction"] and fit["fits"] for fit in row["fit_table"])
        if row["point"] == "32 KB flash":   # candidates: only fractions whose kept int8 weights fit the budget
            assert all(fit["fraction"] * fit["total"] <= deployment.FLASH_BUDGET_BYTES for fit in row["fit_table"])


def test_operating_point_is_the_smallest_within_1pt(digits_run):
    results, _ = digits_run
    for model in ("mac", "mam"):
        smallest = min(e["within_1pt"]["fraction"] for e in results["summary"]
                       if e["model"] == model and e["within_1pt"])
        row = next(r for r in results["deployment"]["rows"] if r["model"] == model and r["point"] == "within 1 pt")
        assert row["fraction"] == smallest


def test_summary_has_the_table_and_goals(digits_run):
    results, summary = digits_run
    section = summary.split("## On a microcontroller", 1)[1]
    table_lines = [line for line in section.splitlines() if line.startswith("| MA")]
    assert len(table_lines) == len(results["deployment"]["rows"])
    assert "first 60 of the" in section and "instructions" in section
    for goal in results["deployment"]["goals"]:
        assert goal in section
    assert any("32 KB flash and 4 KB RAM" in goal for goal in results["deployment"]["goals"])


def test_mcu_with_iterative_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        mamext_main(["experiment", "--dataset", "digits", "--iterative", "--mcu", "--out", str(tmp_path)])
    assert e.value.code == 2 and "--iterative" in capsys.readouterr().err


def test_missing_tools_fail_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))     # no arm-none-eabi-gcc, no qemu-system-arm
    with pytest.raises(SystemExit) as e:
        mamext_main(["experiment", "--dataset", "digits", "--quick", "--mcu", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "gcc-arm-none-eabi" in err and "qemu-system-arm" in err
    assert not (tmp_path / "out").exists()


def _row(model, point, target, flash, ram, instructions, acc, unpruned=0.9):
    return dict(model=model, point=point, target=target, flash_bytes=flash, ram_bytes=ram, instructions=instructions,
                device_acc=acc, unpruned_float_acc=unpruned)


def test_goals_met_and_missed():
    rows = [_row("mac", "within 1 pt", "cortex-m4", 400_000, 3000, 3e6, 0.89),
            _row("mam", "within 1 pt", "cortex-m4", 20_000, 2000, 1e5, 0.895)]
    met = deployment.goals(rows)
    assert met[0].startswith("- cortex-m4: MAM within 1 point") and ": met (" in met[0]
    assert "20.0x the flash" in met[1] and "at least 8x: met" in met[1] and "(fewer: met)" in met[1]
    rows[1].update(ram_bytes=5000, instructions=4e6)
    missed = deployment.goals(rows)
    assert ": missed (" in missed[0] and "5000 B RAM" in missed[0] and "(fewer: missed)" in missed[1]


@pytest.fixture(scope="module")
def cnn_run(tools, tmp_path_factory):
    """The MAM-convolution CNN (the variant pruning convolutions too) on digits, deployed on both cores."""
    out = tmp_path_factory.mktemp("experiment_mcu_cnn")
    argv = ["experiment", "--arch", "cnn", "--mam-conv", "--dataset", "digits", "--quick", "--mcu",
            "--mcu-samples", "30", "--quiet", "--out", str(out),
            "--threads", "1"]   # several threads only contend on these tiny convolutions
    assert mamext_main(argv) == 0
    return json.loads((out / "results.json").read_text()), (out / "summary.md").read_text()


def test_cnn_deployment_rows(cnn_run):
    """The whole CNN (unflatten, convolutions, pooling, classifier) runs on the device bit for bit; the 32 KB
    point prunes every linear layer and the convolutions, and counts the convolutions' weights."""
    from mamext.experiment.models_cnn import build_cnn

    results, summary = cnn_run
    rows = results["deployment"]["rows"]
    model = build_cnn("mac", (8, 8), 10, mam_conv=True)
    every = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    within = sum(model.get_submodule(name).weight.numel() for name in model.pruned_layer_names)
    for model_name in ("mac", "mam"):
        for target in ("cortex-m4", "cortex-m7"):
            row = next(r for r in rows if (r["model"], r["point"], r.get("target")) ==
                       (model_name, "within 1 pt", target))
            assert "error" not in row, row
            assert row["total"] == within
    for row in rows:
        if "error" in row:
            continue
        assert row["mismatches"] == 0 and row["device_acc"] == row["torch_int8_acc"]
        assert row["flash_bytes"] > 0 and row["instructions"] > 0 and row["samples"] == 30
        if row["point"] == "32 KB flash":
            assert row["criterion"].endswith("(all linear layers and the convolutions)")
            assert row["total"] == every
    section = summary.split("## On a microcontroller", 1)[1]
    assert len([line for line in section.splitlines() if line.startswith("| MA")]) == len(rows)


def test_fit_layers_of_the_cnn():
    """The 32 KB point prunes what the score applies to: every linear layer (the MAM ones for selection), and
    the convolutions only where the sweep prunes them; the weights it leaves dense count against the budget."""
    from mamext.experiment.models_cnn import build_cnn

    plain, mam_conv = build_cnn("mam", (28, 28), 10), build_cnn("mam", (28, 28), 10, mam_conv=True)
    assert deployment._fit_layers(plain, "magnitude") == (None, ["fc1", "fc2", "out"], "all linear layers")
    assert deployment._fit_layers(plain, "selection") == (None, ["fc1", "fc2"], "the MAM linear layers")
    named = ["fc1", "fc2", "out", "conv1", "conv2"]
    assert deployment._fit_layers(mam_conv, "gradient") == (named, named, "all linear layers and the convolutions")
    assert deployment._fit_layers(mam_conv, "selection")[0] == ["fc1", "fc2", "conv1", "conv2"]
    convs = 16 * 9 + 32 * 16 * 9
    linear = 32 * 7 * 7 * 256 + 256 * 128 + 128 * 10
    edge = (deployment.FLASH_BUDGET_BYTES - convs) / linear      # the largest fraction with dense convolutions
    fractions = [edge * 1.001, edge * 0.999, 0.01]
    assert deployment._fit_fractions(plain, fractions, ["fc1", "fc2", "out"]) == fractions[1:]
    assert deployment._fit_fractions(mam_conv, fractions, named) == fractions
