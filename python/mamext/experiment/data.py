"""Data sets for ``mamext experiment``: IDX files (Fashion-MNIST, MNIST) and
scikit-learn's bundled digits. Nothing is ever downloaded.

IDX format (LeCun et al.): a big-endian header ``00 00 <type> <ndim>`` followed
by ``ndim`` big-endian uint32 sizes, then the data in row-major order. The
image files have magic ``0x00000803`` (uint8, 3-D), the label files
``0x00000801`` (uint8, 1-D). Files may be gzip-compressed (detected from the
content, not the name).
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DEFAULT_DATA_DIR",
    "DatasetError",
    "Splits",
    "read_idx",
    "find_idx_file",
    "load_idx_dataset",
    "load_digits",
    "load_dataset",
    "split_half",
]

#: Where Debian/Ubuntu's ``dataset-fashion-mnist`` package installs the files.
DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"

#: Seed of the fixed 50/50 validation/test split of the test set (independent
#: of the training seed, so that every run is scored on the same images).
SPLIT_SEED = 20240601

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

# IDX type code -> (numpy big-endian dtype, name)
_IDX_TYPES = {
    0x08: (">u1", "unsigned byte"),
    0x09: (">i1", "signed byte"),
    0x0B: (">i2", "short"),
    0x0C: (">i4", "int"),
    0x0D: (">f4", "float"),
    0x0E: (">f8", "double"),
}

# The stems of the four files; each may also be spelled with a dot
# (``train-images.idx3-ubyte``, as some MNIST mirrors do) and end in ``.gz``.
_STEMS = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


class DatasetError(ValueError):
    """A data file is missing, truncated, corrupt or inconsistent."""


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DatasetError(f"cannot read IDX file {path}: {e.strerror or e}") from e
    if raw[:2] == b"\x1f\x8b":  # gzip magic
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise DatasetError(f"IDX file {path} is a corrupt or truncated gzip stream: {e}") from e
    return raw


def read_idx(path, expected_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (gzip or not) into a numpy array, checking its magic
    number and that the data size matches the header exactly.

    Raises :class:`DatasetError` naming the file for any problem.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DatasetError(f"IDX file {path} is truncated: {len(raw)} bytes, no header")
    zero, type_code, ndim = struct.unpack(">HBB", raw[:4])
    magic = struct.unpack(">I", raw[:4])[0]
    if zero != 0 or type_code not in _IDX_TYPES or ndim == 0:
        raise DatasetError(f"{path} is not an IDX file (bad magic number 0x{magic:08x})")
    if expected_magic is not None and magic != expected_magic:
        raise DatasetError(
            f"IDX file {path} has magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"({'images' if expected_magic == IMAGES_MAGIC else 'labels'})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"IDX file {path} is truncated: header of {ndim} dimensions needs "
                           f"{header} bytes, file has {len(raw)}")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    np_dtype, _ = _IDX_TYPES[type_code]
    itemsize = np.dtype(np_dtype).itemsize
    expected = int(np.prod(shape, dtype=np.int64)) * itemsize
    got = len(raw) - header
    if got < expected:
        raise DatasetError(f"IDX file {path} is truncated: shape {tuple(shape)} needs {expected} data bytes, "
                           f"found {got}")
    if got > expected:
        raise DatasetError(f"IDX file {path} is corrupt: {got - expected} bytes beyond the {expected} "
                           f"that its header (shape {tuple(shape)}) declares")
    arr = np.frombuffer(raw, dtype=np_dtype, count=expected // itemsize, offset=header)
    return arr.reshape(shape).astype(np_dtype[1:], copy=True)  # native byte order


def find_idx_file(data_dir, split: str, kind: str) -> Path:
    """Locate ``train``/``test`` ``images``/``labels`` in ``data_dir``
    (``.gz`` or not, ``-idx`` or ``.idx`` spelling)."""
    stem = _STEMS[(split, kind)]
    data_dir = Path(data_dir)
    candidates = []
    for name in (stem, stem.replace("-idx", ".idx")):
        candidates += [data_dir / (name + ".gz"), data_dir / name]
    for c in candidates:
        if c.is_file():
            return c
    hint = ""
    if os.path.abspath(data_dir) == DEFAULT_DATA_DIR:
        hint = (" Install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or point "
                "--data-dir at a directory holding the four IDX files.")
    raise DatasetError(f"missing IDX file {data_dir / (stem + '.gz')} (or {stem}); "
                       f"{split} {kind} not found in {data_dir}.{hint}")


@dataclass
class Splits:
    """Float32 features in [0, 1] and int64 labels for each split."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    name: str
    image_shape: tuple

    @property
    def in_features(self) -> int:
        return self.x_train.shape[1]

    def describe(self) -> dict:
        return {"name": self.name, "train": len(self.y_train), "val": len(self.y_val),
                "test": len(self.y_test), "features": self.in_features, "classes": self.num_classes,
                "image_shape": list(self.image_shape)}


def _load_pair(data_dir, split):
    img_path = find_idx_file(data_dir, split, "images")
    lab_path = find_idx_file(data_dir, split, "labels")
    images = read_idx(img_path, IMAGES_MAGIC)
    labels = read_idx(lab_path, LABELS_MAGIC)
    if images.ndim != 3:
        raise DatasetError(f"IDX file {img_path} holds a {images.ndim}-D array, expected 3-D images")
    if labels.ndim != 1:
        raise DatasetError(f"IDX file {lab_path} holds a {labels.ndim}-D array, expected 1-D labels")
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{img_path} has {images.shape[0]} images but {lab_path} has "
                           f"{labels.shape[0]} labels")
    if labels.size and labels.max() > 9:
        raise DatasetError(f"IDX file {lab_path} has label {int(labels.max())}, expected 0..9")
    return images, labels


def split_half(n: int, seed: int = SPLIT_SEED):
    """Fixed-seed permutation of ``range(n)`` cut into two halves (val, test)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    return perm[: n // 2], perm[n // 2:]


def _to_tensors(images, labels, scale):
    x = torch.from_numpy(images.reshape(images.shape[0], -1).astype(np.float32) / scale)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def load_idx_dataset(data_dir=DEFAULT_DATA_DIR, name: str = "fashion-mnist") -> Splits:
    """Load train and t10k IDX files (Fashion-MNIST or MNIST) from ``data_dir``.
    Pixels are scaled to [0, 1]; the test set is split 50/50 (fixed seed) into
    validation and test."""
    tr_img, tr_lab = _load_pair(data_dir, "train")
    te_img, te_lab = _load_pair(data_dir, "test")
    if tr_img.shape[1:] != te_img.shape[1:]:
        raise DatasetError(f"train images are {tr_img.shape[1:]} but test images are {te_img.shape[1:]} "
                           f"in {data_dir}")
    if te_img.shape[0] < 2:
        raise DatasetError(f"the test set in {data_dir} has {te_img.shape[0]} images; "
                           "at least 2 are needed for the validation/test split")
    x_tr, y_tr = _to_tensors(tr_img, tr_lab, 255.0)
    x_te, y_te = _to_tensors(te_img, te_lab, 255.0)
    iv, it = split_half(len(y_te))
    return Splits(x_tr, y_tr, x_te[iv], y_te[iv], x_te[it], y_te[it], num_classes=10, name=name,
                  image_shape=tuple(tr_img.shape[1:]))


def load_digits() -> Splits:
    """scikit-learn's bundled 8x8 digits (1797 images, no files): a fixed-seed
    third is held out and split 50/50 into validation and test."""
    from sklearn.datasets import load_digits as _sk_digits

    d = _sk_digits()
    x = torch.from_numpy(d.data.astype(np.float32) / 16.0)
    y = torch.from_numpy(d.target.astype(np.int64))
    g = torch.Generator().manual_seed(SPLIT_SEED)
    perm = torch.randperm(len(y), generator=g)
    n_hold = len(y) // 3
    hold, train = perm[:n_hold], perm[n_hold:]
    iv, it = split_half(n_hold)
    return Splits(x[train], y[train], x[hold[iv]], y[hold[iv]], x[hold[it]], y[hold[it]],
                  num_classes=10, name="digits", image_shape=(8, 8))


def load_dataset(name: str, data_dir=None) -> Splits:
    if name == "digits":
        return load_digits()
    if name in ("fashion-mnist", "mnist"):
        return load_idx_dataset(data_dir or DEFAULT_DATA_DIR, name=name)
    raise ValueError(f"unknown dataset {name!r}")
