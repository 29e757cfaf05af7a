"""Tests of ``mamext experiment``: IDX loader, CLI, a quick digits run."""

from __future__ import annotations

import csv
import gzip
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mamext.__main__ import main as mamext_main
from mamext.experiment import data
from mamext.experiment.data import DatasetError, load_idx_dataset, read_idx



# --------------------------------------------------------------------------- IDX files

def idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    if magic is None:
        magic = 0x00000800 | arr.ndim
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write(path: Path, payload: bytes, gz: bool):
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def make_idx_dir(tmp_path, n_train=40, n_test=20, gz=True, rows=28, cols=28, seed=0):
    rng = np.random.default_rng(seed)
    d = tmp_path / "idx"
    d.mkdir(exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, rows, cols), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, rows, cols), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, arr in arrays.items():
        write(d / name, idx_bytes(arr), gz)
    return d, arrays


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = write(tmp_path / "a-idx3-ubyte", idx_bytes(arr), gz)
    out = read_idx(p, data.IMAGES_MAGIC)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_dataset(tmp_path, gz):
    d, arrays = make_idx_dir(tmp_path, gz=gz)
    s = load_idx_dataset(d)
    assert s.x_train.shape == (40, 784) and s.x_train.dtype == torch.float32
    assert float(s.x_train.min()) >= 0.0 and float(s.x_train.max()) <= 1.0
    np.testing.assert_allclose(s.x_train[3].numpy(), arrays["train-images-idx3-ubyte"][3].reshape(-1) / 255.0)
    assert s.y_train.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    # test set split 50/50 into val and test, fixed seed, disjoint, covering everything
    assert len(s.y_val) == 10 and len(s.y_test) == 10
    t = torch.from_numpy(arrays["t10k-images-idx3-ubyte"].reshape(20, -1).astype(np.float32) / 255)
    rows = {tuple(r.tolist()) for r in t}
    got = [tuple(r.tolist()) for r in torch.cat([s.x_val, s.x_test])]
    assert set(got) == rows and len(got) == 20
    s2 = load_idx_dataset(d)
    assert torch.equal(s.x_val, s2.x_val) and torch.equal(s.y_test, s2.y_test)


def test_idx_mnist_dot_spelling(tmp_path):
    d, _ = make_idx_dir(tmp_path, gz=False)
    for p in d.iterdir():  # train-images-idx3-ubyte -> train-images.idx3-ubyte (some MNIST mirrors)
        p.rename(p.with_name(p.name.replace("-idx", ".idx")))
    assert len(load_idx_dataset(d, name="mnist").y_train) == 40


def test_idx_missing_file_named(tmp_path):
    d, _ = make_idx_dir(tmp_path)
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte"):
        load_idx_dataset(d)
    with pytest.raises(DatasetError, match="missing IDX file"):
        load_idx_dataset(tmp_path / "nowhere")


@pytest.mark.parametrize("gz", [False, True])
def test_idx_truncated(tmp_path, gz):
    d, arrays = make_idx_dir(tmp_path, gz=False)
    payload = idx_bytes(arrays["train-images-idx3-ubyte"])
    (d / "train-images-idx3-ubyte").unlink()
    p = write(d / "train-images-idx3-ubyte", payload[:-100], gz)
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.*truncated"):
        load_idx_dataset(d)
    # header cut short
    write(d / "train-images-idx3-ubyte", payload[:6], gz)
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(p)
    # trailing garbage is corrupt too
    write(d / "train-images-idx3-ubyte", payload + b"\0\0", gz)
    with pytest.raises(DatasetError, match="beyond"):
        read_idx(p)


def test_idx_truncated_gzip_stream(tmp_path):
    arr = np.zeros((5, 28, 28), np.uint8)
    p = tmp_path / "x-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(idx_bytes(arr))[:-12])
    with pytest.raises(DatasetError, match=r"x-idx3-ubyte\.gz"):
        read_idx(p)


def test_idx_wrong_magic(tmp_path):
    d, arrays = make_idx_dir(tmp_path, gz=False)
    # labels file where images are expected: magic 0x801 instead of 0x803
    (d / "train-images-idx3-ubyte").write_bytes(idx_bytes(arrays["train-labels-idx1-ubyte"]))
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.*magic number 0x00000801.*0x00000803"):
        load_idx_dataset(d)
    # not an IDX file at all
    (d / "train-images-idx3-ubyte").write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(DatasetError, match="not an IDX file"):
        load_idx_dataset(d)


def test_idx_count_mismatch(tmp_path):
    d, arrays = make_idx_dir(tmp_path, gz=False)
    (d / "train-labels-idx1-ubyte").write_bytes(idx_bytes(arrays["train-labels-idx1-ubyte"][:-1]))
    with pytest.raises(DatasetError, match="40 images but .* 39 labels"):
        load_idx_dataset(d)


# --------------------------------------------------------------------------- CLI

def test_help_subprocess():
    # The same mamext this test session imports (installed, or PYTHONPATH in a dev tree).
    r = subprocess.run([sys.executable, "-m", "mamext", "experiment", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    for flag in ("--dataset", "--data-dir", "--epochs", "--seed", "--threads", "--device", "--iterative", "--quick",
                 "--out", "--transition-epochs", "--mam-init"):
        assert flag in r.stdout
    assert "%%" not in r.stdout and "(default: None)" not in r.stdout and "(default: all) (default" not in r.stdout


def test_top_level_usage(capsys):
    assert mamext_main([]) == 2
    assert "experiment" in capsys.readouterr().out
    assert mamext_main(["--help"]) == 0
    assert mamext_main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


@pytest.mark.parametrize("argv, msg", [
    (["--epochs", "0"], "positive integer"),
    (["--epochs", "x"], "positive integer"),
    (["--dataset", "cifar"], "invalid choice"),
    (["--fractions", "50,200"], r"\(0, 100\]"),
    (["--fractions", "abc"], "percentages"),
    (["--criteria", "magnitude-global,bogus"], "bogus"),
    (["--models", "mlp"], "mlp"),
    (["--threads", "-1"], "positive integer"),
    (["--no-such-flag"], "unrecognized arguments"),
])
def test_bad_arguments(argv, msg, capsys):
    with pytest.raises(SystemExit) as e:
        mamext_main(["experiment", *argv])
    assert e.value.code == 2
    assert __import__("re").search(msg, capsys.readouterr().err)


def test_bad_combinations(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        mamext_main(["experiment", "--dataset", "digits", "--epochs", "2", "--transition-epochs", "3",
                     "--out", str(tmp_path)])
    assert e.value.code == 2 and "--transition-epochs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        mamext_main(["experiment", "--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "train-images-idx3-ubyte" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as e:
        mamext_main(["experiment", "--dataset", "digits", "--device", "tpu", "--out", str(tmp_path)])
    assert e.value.code == 2 and "--device" in capsys.readouterr().err


# --------------------------------------------------------------------------- quick runs

@pytest.fixture(scope="module")
def quick_digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    # one thread: the run is tiny, and OpenMP threads spin badly on a shared, loaded machine
    assert mamext_main(["experiment", "--dataset", "digits", "--quick", "--quiet", "--threads", "1",
                        "--out", str(out)]) == 0
    return out


def test_quick_outputs_exist(quick_digits):
    for name in ("results.json", "results.csv", "accuracy_vs_remaining.png", "summary.md"):
        assert (quick_digits / name).stat().st_size > 0, name


def test_quick_json_and_csv_sane(quick_digits):
    res = json.loads((quick_digits / "results.json").read_text())
    rows = res["rows"]
    with open(quick_digits / "results.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == len(rows) > 0
    fr = res["fractions"]
    assert fr[0] == 1.0 and all(a > b for a, b in zip(fr, fr[1:])), "fractions strictly decreasing from 100%"
    assert fr[-1] == pytest.approx(1e-4) and len(fr) == 13
    models = {r["model"] for r in rows}
    assert models == {"mac", "mam"}
    crits = {(r["model"], r["criterion"]) for r in rows}
    assert ("mam", "selection-layer") in crits and ("mac", "selection-layer") not in crits
    assert {c for m, c in crits if m == "mac"} == {"magnitude-global", "magnitude-layer", "gradient-global"}
    for r in csv_rows:
        for k in ("val_acc", "test_acc"):
            assert 0.0 <= float(r[k]) <= 1.0
        assert int(r["kept"]) <= int(r["total"])
        assert abs(int(r["kept"]) - round(float(r["fraction"]) * int(r["total"]))) <= 2
    # one row per (model, criterion, fraction, seed); kept counts fall as the fraction falls
    keys = [(r["model"], r["criterion"], r["fraction"], r["seed"]) for r in csv_rows]
    assert len(keys) == len(set(keys))
    for m, c in crits:
        seq = [int(r["kept"]) for r in csv_rows if (r["model"], r["criterion"]) == (m, c)]
        assert len(seq) == 13 and all(a > b for a, b in zip(seq, seq[1:]))
    # the quick run learns something (well above the 10 % of chance) before pruning
    full = {r["model"]: float(r["test_acc"]) for r in csv_rows if float(r["fraction"]) == 1.0}
    assert full["mac"] > 0.8 and full["mam"] > 0.5
    # summary: per model/criterion, operating points monotone (within 3 pt <= within 1 pt)
    assert len(res["summary"]) == 7
    for e in res["summary"]:
        assert 0 <= e["unpruned_test"] <= 1
        if e["within_1pt"] and e["within_3pt"]:
            assert e["within_3pt"]["fraction"] <= e["within_1pt"]["fraction"]
    assert set(res["timings"]) == {"mac", "mam"} and all(t["seconds_per_epoch"] > 0 for t in res["timings"].values())
    assert res["environment"]["torch"] == torch.__version__
    md = (quick_digits / "summary.md").read_text()
    assert "| MAM | selection-layer |" in md and "@ 1%" in md
    # packed models: float packed equal to the masked model, int8 accuracy measured
    assert res["packing"]["available"]
    packing = res["packing"]["checks"]
    assert packing and all("error" not in p for p in packing)
    for p in packing:
        assert p["equal"] and 0.0 <= p["int8_test_acc"] <= 1.0 and 0 < p["int8_bytes"]
    assert "int8 packed test acc" in md


def test_quick_png_opens(quick_digits):
    from PIL import Image

    with Image.open(quick_digits / "accuracy_vs_remaining.png") as im:
        im.verify()
    with Image.open(quick_digits / "accuracy_vs_remaining.png") as im:
        assert im.size[0] > 300 and im.size[1] > 200


def test_quick_idx_files(tmp_path):
    """The whole pipeline on (tiny, random) IDX files written here."""
    d, _ = make_idx_dir(tmp_path, n_train=64, n_test=32, rows=8, cols=8)
    out = tmp_path / "out"
    argv = ["experiment", "--data-dir", str(d), "--quick", "--quiet", "--epochs", "2", "--transition-epochs", "1",
            "--fractions", "100,10,1", "--criteria", "magnitude-global,selection-layer", "--score-samples", "32",
            "--out", str(out), "--threads", "1"]
    threads = torch.get_num_threads()
    assert mamext_main(argv) == 0
    assert torch.get_num_threads() == threads  # --threads does not leak out of the command
    res = json.loads((out / "results.json").read_text())
    assert res["dataset"]["train"] == 64 and res["dataset"]["val"] == 16 and res["dataset"]["test"] == 16
    assert res["fractions"] == [1.0, 0.1, 0.01]
    assert all(0 <= r["test_acc"] <= 1 for r in res["rows"])


def test_quick_iterative_digits(tmp_path):
    out = tmp_path / "it"
    argv = ["experiment", "--dataset", "digits", "--quick", "--quiet", "--iterative", "--iterative-epochs", "4",
            "--transition-epochs", "2", "--fractions", "100,50,10", "--threads", "1", "--out", str(out)]
    assert mamext_main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    rows = res["rows"]
    assert {r["criterion"] for r in rows} == {"lottery"}
    for m in ("mac", "mam"):
        seq = [r for r in rows if r["model"] == m]
        assert [r["fraction"] for r in seq] == [1.0, 0.5, 0.1]
        assert [r["round"] for r in seq] == [0, 1, 2]
        assert seq[-1]["kept"] == round(0.1 * seq[-1]["total"])
