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
import math
import os
import stat
import struct
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_DATA_DIRS",
    "MAX_IDX_DATA_BYTES",
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

#: The default directory of each IDX data set.
DEFAULT_DATA_DIRS = {"fashion-mnist": DEFAULT_DATA_DIR, "mnist": "/usr/share/datasets/mnist"}

#: Seed of the fixed 50/50 validation/test split of the test set (independent
#: of the training seed, so that every run is scored on the same images).
SPLIT_SEED = 20240601

#: The largest data size (bytes) an IDX header may declare, and so the most
#: memory a read takes; the largest public IDX files (EMNIST) hold about 0.6 GB.
MAX_IDX_DATA_BYTES = 1 << 30

#: Read size of the streaming reader.
_CHUNK_BYTES = 1 << 20

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


@contextmanager
def _idx_stream(path: Path):
    """``(stream, size)``: the file opened for sequential reads, through a
    gzip decoder when its content starts with the gzip magic; ``size`` is the
    length in bytes of an uncompressed regular file, else ``None``."""
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise DatasetError(f"cannot read IDX file {path}: {e.strerror or e}") from e
    with raw:
        try:
            compressed = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            st = os.fstat(raw.fileno())
            size = st.st_size if stat.S_ISREG(st.st_mode) and not compressed else None
        except OSError as e:
            raise DatasetError(f"cannot read IDX file {path}: {e.strerror or e}") from e
        if not compressed:
            yield raw, size
            return
        with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
            yield stream, None


def _read_upto(stream, n: int, path: Path) -> bytearray:
    """At most ``n`` bytes from ``stream`` (fewer only at its end), read in
    bounded chunks so that memory grows with the data actually present, never
    with what a header claims."""
    buf = bytearray()
    try:
        while len(buf) < n:
            chunk = stream.read(min(_CHUNK_BYTES, n - len(buf)))
            if not chunk:
                break
            buf += chunk
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        what = "is a corrupt or truncated gzip stream" if isinstance(stream, gzip.GzipFile) else "cannot be read"
        raise DatasetError(f"IDX file {path} {what}: {e}") from e
    return buf


def _read_header(stream, path: Path, expected_magic, file_size):
    """Parse and check the header: ``(numpy dtype, shape, data bytes)``.
    Refuses a data size above :data:`MAX_IDX_DATA_BYTES` and, for an
    uncompressed file, a length that disagrees with the header, before any data
    is read."""
    head = _read_upto(stream, 4, path)
    if len(head) < 4:
        raise DatasetError(f"IDX file {path} is truncated: {len(head)} bytes, no header")
    zero, type_code, ndim = struct.unpack(">HBB", head)
    magic = struct.unpack(">I", head)[0]
    if zero != 0 or type_code not in _IDX_TYPES or ndim == 0:
        raise DatasetError(f"{path} is not an IDX file (bad magic number 0x{magic:08x})")
    if expected_magic is not None and magic != expected_magic:
        raise DatasetError(
            f"IDX file {path} has magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"({'images' if expected_magic == IMAGES_MAGIC else 'labels'})")
    header = 4 + 4 * ndim
    dims = _read_upto(stream, 4 * ndim, path)
    if len(dims) < 4 * ndim:
        raise DatasetError(f"IDX file {path} is truncated: header of {ndim} dimensions needs "
                           f"{header} bytes, file has {4 + len(dims)}")
    shape = struct.unpack(f">{ndim}I", dims)
    np_dtype, _ = _IDX_TYPES[type_code]
    expected = math.prod(shape) * np.dtype(np_dtype).itemsize  # exact: Python integers do not overflow
    if expected > MAX_IDX_DATA_BYTES:
        raise DatasetError(f"IDX file {path} declares shape {shape}, {expected} data bytes, more than the "
                           f"{MAX_IDX_DATA_BYTES} this loader accepts")
    if file_size is not None and file_size - header != expected:
        _raise_size_mismatch(path, shape, expected, file_size - header)
    return np_dtype, shape, expected


def _raise_size_mismatch(path, shape, expected, got=None):
    """``got``: the data bytes present, ``None`` when only known to exceed."""
    if got is not None and got < expected:
        raise DatasetError(f"IDX file {path} is truncated: shape {shape} needs {expected} data bytes, "
                           f"found {got}")
    extra = "data continues" if got is None else f"{got - expected} bytes"
    raise DatasetError(f"IDX file {path} is corrupt: {extra} beyond the {expected} bytes that its header "
                       f"(shape {shape}) declares")


def read_idx(path, expected_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (gzip or not) into a numpy array, checking its magic
    number and that the data size matches the header exactly.

    The header is read and checked first and the data streamed, so memory and
    time stay bounded by the declared size (at most
    :data:`MAX_IDX_DATA_BYTES`) whatever the file holds. Raises
    :class:`DatasetError` naming the file for any problem.
    """
    path = Path(path)
    with _idx_stream(path) as (stream, file_size):
        np_dtype, shape, expected = _read_header(stream, path, expected_magic, file_size)
        data = _read_upto(stream, expected, path)
        if len(data) < expected:
            _raise_size_mismatch(path, shape, expected, len(data))
        if _read_upto(stream, 1, path):
            _raise_size_mismatch(path, shape, expected)
    arr = np.frombuffer(data, dtype=np_dtype).reshape(shape)
    return arr.astype(np_dtype[1:], copy=False)  # native byte order (copies unless single bytes)


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
    if images.shape[0] == 0:
        raise DatasetError(f"IDX file {img_path} holds no images")
    if images.shape[1] * images.shape[2] == 0:
        raise DatasetError(f"IDX file {img_path} holds images of size {images.shape[1]}x{images.shape[2]}, "
                           "which have no pixels")
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
    if str(data_dir) == "":
        raise DatasetError("the IDX data directory is an empty string; give a directory")
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
    try:
        from sklearn.datasets import load_digits as _sk_digits
    except ImportError as e:
        raise DatasetError(f"the digits data set comes with scikit-learn, which is not importable ({e}); "
                           "install scikit-learn or use an IDX data set") from e

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
    """``digits``, or an IDX data set (``fashion-mnist``, ``mnist``) from
    ``data_dir`` (default: the data set's entry in :data:`DEFAULT_DATA_DIRS`)."""
    if name == "digits":
        return load_digits()
    if name in DEFAULT_DATA_DIRS:
        return load_idx_dataset(DEFAULT_DATA_DIRS[name] if data_dir is None else data_dir, name=name)
    raise ValueError(f"unknown dataset {name!r}; choose from digits, {', '.join(DEFAULT_DATA_DIRS)}")
