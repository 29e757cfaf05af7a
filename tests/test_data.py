"""Hostile IDX files: the experiment's loader refuses every malformed input
with a ``DatasetError`` naming the file, in bounded memory and time."""

from __future__ import annotations

import gzip
import struct
import time
import tracemalloc

import numpy as np
import pytest

from mamext.__main__ import main as mamext_main
from mamext.experiment import data
from mamext.experiment.data import DatasetError, load_idx_dataset, read_idx

MiB = 1 << 20


def header(shape, type_code=0x08) -> bytes:
    return struct.pack(">HBB", 0, type_code, len(shape)) + struct.pack(f">{len(shape)}I", *shape)


def write_idx(path, head: bytes, body: bytes = b"", gz: bool = False):
    """``head + body`` at ``path`` (``path.gz`` gzip-compressed when ``gz``)."""
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(head + body))
    else:
        path.write_bytes(head + body)
    return path


def idx_dir(tmp_path, n_train=8, n_test=4, rows=4, cols=4, labels_train=None):
    """Four small, valid, plain IDX files; returns the directory."""
    rng = np.random.default_rng(0)
    d = tmp_path / "idx"
    d.mkdir(exist_ok=True)
    n_labels = n_train if labels_train is None else labels_train
    for stem, shape in (("train-images-idx3-ubyte", (n_train, rows, cols)),
                        ("train-labels-idx1-ubyte", (n_labels,)),
                        ("t10k-images-idx3-ubyte", (n_test, rows, cols)),
                        ("t10k-labels-idx1-ubyte", (n_test,))):
        high = 10 if "labels" in stem else 256
        body = rng.integers(0, high, shape, dtype=np.uint8).tobytes()
        write_idx(d / stem, header(shape), body)
    return d


def measured(fn):
    """``(exception, peak traced bytes, seconds)`` of calling ``fn``."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        err = e
    else:
        err = None
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return err, peak, seconds


def test_gzip_bomb_refused_in_bounded_memory_and_time(tmp_path):
    # Header: one 28x28 image; then 784 pixels and 50 MiB of zeros (about 50 KiB compressed).
    path = tmp_path / "bomb-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(header((1, 28, 28)) + bytes(784))
        zeros = bytes(MiB)
        for _ in range(50):
            f.write(zeros)
    assert path.stat().st_size < 1 * MiB
    err, peak, seconds = measured(lambda: read_idx(path, data.IMAGES_MAGIC))
    assert isinstance(err, DatasetError) and "bomb-idx3-ubyte.gz" in str(err) and "beyond" in str(err), err
    assert peak < 8 * MiB, f"peak {peak / MiB:.1f} MiB"
    assert seconds < 5


def test_plain_file_with_huge_tail_refused_without_reading_it(tmp_path):
    path = write_idx(tmp_path / "tail-idx3-ubyte", header((1, 28, 28)), bytes(784))
    with open(path, "r+b") as f:
        f.truncate(400 * MiB)  # sparse: no disk space used
    err, peak, seconds = measured(lambda: read_idx(path, data.IMAGES_MAGIC))
    assert isinstance(err, DatasetError) and "tail-idx3-ubyte" in str(err) and "beyond" in str(err), err
    assert peak < 8 * MiB, f"peak {peak / MiB:.1f} MiB"
    assert seconds < 5


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("shape", [(0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), (1 << 16, 1 << 16, 1 << 16),
                                   (60000, 10000, 10000)])
def test_header_size_overflow_or_too_large(tmp_path, gz, shape):
    path = write_idx(tmp_path / "big-idx3-ubyte", header(shape), bytes(64), gz)
    err, peak, _ = measured(lambda: read_idx(path, data.IMAGES_MAGIC))
    assert isinstance(err, DatasetError) and path.name in str(err), err
    assert peak < 8 * MiB


@pytest.mark.parametrize("gz", [False, True])
def test_header_product_wrapping_to_zero_in_int64(tmp_path, gz):
    # 2**16 ** 4 = 2**64: zero data bytes if the product wraps around in 64-bit integers.
    path = write_idx(tmp_path / "wrap-idx4", header((1 << 16,) * 4), b"", gz)
    with pytest.raises(DatasetError, match=path.name):
        read_idx(path)


def test_gzip_header_promising_more_than_present_is_truncated_in_bounded_memory(tmp_path):
    # The header declares 1000 x 1000 x 1000 bytes (1 GB, under the limit); the file holds 100.
    path = write_idx(tmp_path / "short-idx3-ubyte", header((1000, 1000, 1000)), bytes(100), gz=True)
    err, peak, _ = measured(lambda: read_idx(path, data.IMAGES_MAGIC))
    assert isinstance(err, DatasetError) and "short-idx3-ubyte.gz" in str(err) and "truncated" in str(err), err
    assert peak < 8 * MiB


def test_corrupt_deflate_data_named(tmp_path):
    payload = header((4, 28, 28)) + np.random.default_rng(1).integers(0, 256, 4 * 784, np.uint8).tobytes()
    blob = bytearray(gzip.compress(payload))
    for i in range(20, 40):
        blob[i] ^= 0xFF
    path = tmp_path / "corrupt-idx3-ubyte.gz"
    path.write_bytes(bytes(blob))
    with pytest.raises(DatasetError, match=r"corrupt-idx3-ubyte\.gz"):
        read_idx(path, data.IMAGES_MAGIC)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("type_code, match", [(0x0D, r"magic number 0x00000d03, expected 0x00000803"),
                                              (0x07, "not an IDX file"), (0x08, None)])
def test_wrong_dtype_code(tmp_path, gz, type_code, match):
    path = write_idx(tmp_path / "t-idx3-ubyte", header((2, 3, 3), type_code), bytes(2 * 9 * 4), gz)
    with pytest.raises(DatasetError, match=path.name) as e:
        read_idx(path, data.IMAGES_MAGIC)
    if match:
        assert __import__("re").search(match, str(e.value))


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("cut", [0, 3, 7, 16 + 5])
def test_truncated_anywhere_named(tmp_path, gz, cut):
    full = header((1, 2, 3)) + bytes(6)
    path = write_idx(tmp_path / "cut-idx3-ubyte", full[:cut], b"", gz)
    with pytest.raises(DatasetError, match=rf"{path.name}.*truncated"):
        read_idx(path, data.IMAGES_MAGIC)


def test_zero_images_refused(tmp_path):
    d = idx_dir(tmp_path, n_train=0)
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.*no images"):
        load_idx_dataset(d)


@pytest.mark.parametrize("rows, cols", [(0, 0), (28, 0), (0, 5)])
def test_images_without_pixels_refused(tmp_path, rows, cols):
    d = idx_dir(tmp_path, rows=rows, cols=cols)
    with pytest.raises(DatasetError, match=rf"train-images-idx3-ubyte.*{rows}x{cols}"):
        load_idx_dataset(d)


def test_label_count_mismatch(tmp_path):
    d = idx_dir(tmp_path, n_train=8, labels_train=9)
    with pytest.raises(DatasetError, match="8 images but .*train-labels-idx1-ubyte has 9 labels"):
        load_idx_dataset(d)


def test_other_dtypes_read_in_native_order(tmp_path):
    arr = (np.arange(6).reshape(2, 3) - 3).astype(">i2")
    path = write_idx(tmp_path / "s-idx2", header((2, 3), 0x0B), arr.tobytes())
    out = read_idx(path)
    assert out.dtype == np.dtype("i2") and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_empty_data_dir_refused():
    with pytest.raises(DatasetError, match="empty"):
        load_idx_dataset("")


def test_mnist_default_directory_is_mnist(monkeypatch):
    seen = []
    monkeypatch.setattr(data, "load_idx_dataset", lambda d, name: seen.append((d, name)))
    data.load_dataset("mnist")
    data.load_dataset("fashion-mnist")
    assert seen == [("/usr/share/datasets/mnist", "mnist"), (data.DEFAULT_DATA_DIR, "fashion-mnist")]


def test_cli_refuses_zero_training_images(tmp_path, capsys):
    d = idx_dir(tmp_path, n_train=0)
    with pytest.raises(SystemExit) as e:
        mamext_main(["experiment", "--data-dir", str(d), "--quiet", "--epochs", "1", "--transition-epochs", "0",
                     "--out", str(tmp_path / "out"), "--threads", "1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "no images" in err and "Traceback" not in err


def test_digits_without_scikit_learn_is_a_dataset_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes the import fail
    with pytest.raises(DatasetError, match="scikit-learn"):
        data.load_digits()
