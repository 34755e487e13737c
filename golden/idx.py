"""IDX files (the MNIST / Fashion-MNIST container format), read with every field checked (NumPy only).

An IDX file is a 4-byte magic ``00 00 TT NN`` (``TT`` the element type code, ``NN`` the number of
dimensions), ``NN`` big-endian uint32 dimension sizes, then the elements in C order, big-endian.
Files may be gzip-compressed (Debian's ``dataset-fashion-mnist`` ships ``*.gz``); compression is
recognised by the gzip magic, not by the file name.

Every defect -- a missing file, a bad magic, an unknown type code, a header or payload that is too
short or too long, labels out of range, counts that do not match -- raises :class:`IdxError` (an
:class:`~golden.errors.InputError`) whose one-line message names the file.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .errors import InputError

__all__ = ["IdxError", "IDX_DTYPES", "read_idx", "FASHION_MNIST_DIR", "FASHION_MNIST_PACKAGE",
           "FASHION_MNIST_FILES", "FASHION_MNIST_COUNTS", "FashionMNIST", "load_fashion_mnist"]

#: IDX type code -> NumPy dtype (big-endian where it matters).
IDX_DTYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

#: Where Debian's package puts the files, and the package's name.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
#: split -> (images file, labels file), without the optional ``.gz``.
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                       "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
#: split -> number of samples in the published data set.
FASHION_MNIST_COUNTS = {"train": 60000, "test": 10000}
_IMAGE_HW = (28, 28)
_CLASSES = 10
_GZIP_MAGIC = b"\x1f\x8b"


class IdxError(InputError):
    """An IDX file is missing, corrupt or not the expected array (one line, naming the file)."""


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise IdxError(f"{path}: cannot read ({exc.strerror})") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise IdxError(f"{path}: gzip data is corrupt or truncated ({exc}); reinstall the file") from None


def read_idx(path, *, ndim: int | None = None, dtype_code: int | None = None) -> np.ndarray:
    """The array stored in the IDX file ``path`` (raw or gzip), in native byte order.

    Parameters
    ----------
    path : str or PathLike
        The file.
    ndim : int or None
        Required number of dimensions (e.g. 3 for images, 1 for labels); None accepts any.
    dtype_code : int or None
        Required element type code (``0x08`` = unsigned byte); None accepts any of :data:`IDX_DTYPES`.

    Raises
    ------
    IdxError
        Missing file, bad magic, unknown type code, wrong ``ndim``/type, header or payload length
        that does not match the dimension sizes.
    """
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise IdxError(f"{p}: no such file")
    data = _read_bytes(p)
    if len(data) < 4:
        raise IdxError(f"{p}: {len(data)} bytes, too short for the 4-byte IDX magic (truncated?)")
    if data[0] != 0 or data[1] != 0:
        raise IdxError(f"{p}: bad magic {data[:4].hex()} (an IDX file starts with 0000); not an IDX file")
    code, nd = data[2], data[3]
    if code not in IDX_DTYPES:
        raise IdxError(f"{p}: unknown IDX element type 0x{code:02x} (valid: "
                       f"{', '.join(f'0x{c:02x}' for c in IDX_DTYPES)})")
    if dtype_code is not None and code != dtype_code:
        raise IdxError(f"{p}: element type 0x{code:02x}, expected 0x{dtype_code:02x}")
    if nd == 0:
        raise IdxError(f"{p}: IDX header declares 0 dimensions")
    if ndim is not None and nd != ndim:
        raise IdxError(f"{p}: {nd} dimensions, expected {ndim}")
    header = 4 + 4 * nd
    if len(data) < header:
        raise IdxError(f"{p}: {len(data)} bytes, too short for the {nd} dimension sizes of the header (truncated?)")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=nd, offset=4))
    dt = IDX_DTYPES[code]
    want = int(np.prod(dims, dtype=np.int64)) * dt.itemsize
    have = len(data) - header
    if have != want:
        what = "truncated" if have < want else "has trailing bytes"
        raise IdxError(f"{p}: {what}: dimensions {'x'.join(map(str, dims))} need {want} bytes of data, "
                       f"the file has {have}")
    arr = np.frombuffer(data, dtype=dt, offset=header).reshape(dims)
    return arr.astype(dt.newbyteorder("="), copy=True)


def _find(root: str, name: str) -> str | None:
    for cand in (name + ".gz", name):
        p = os.path.join(root, cand)
        if os.path.isfile(p):
            return p
    return None


@dataclass
class FashionMNIST:
    """Fashion-MNIST as arrays: ``X_*`` uint8 ``[n, 28, 28]``, ``y_*`` uint8 ``[n]`` (labels 0..9)."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def _load_split(root: str, split: str, count: int | None) -> tuple[np.ndarray, np.ndarray]:
    img_name, lab_name = FASHION_MNIST_FILES[split]
    paths = [_find(root, img_name), _find(root, lab_name)]
    if None in paths:
        missing = [n for n, p in zip((img_name, lab_name), paths) if p is None]
        raise IdxError(f"{os.path.join(root, missing[0])}[.gz]: no such file; install the data set with "
                       f"`apt-get install {FASHION_MNIST_PACKAGE}` (or pass the folder that holds "
                       f"{', '.join(FASHION_MNIST_FILES['train'] + FASHION_MNIST_FILES['test'])})")
    img_path, lab_path = paths
    images = read_idx(img_path, ndim=3, dtype_code=0x08)
    labels = read_idx(lab_path, ndim=1, dtype_code=0x08)
    if images.shape[1:] != _IMAGE_HW:
        raise IdxError(f"{img_path}: images are {images.shape[1]}x{images.shape[2]}, expected "
                       f"{_IMAGE_HW[0]}x{_IMAGE_HW[1]}")
    if images.shape[0] != labels.shape[0]:
        raise IdxError(f"{lab_path}: {labels.shape[0]} labels for {images.shape[0]} images in {img_path}")
    if count is not None and images.shape[0] != count:
        raise IdxError(f"{img_path}: {images.shape[0]} {split} images, expected {count}; the file is not "
                       f"the published Fashion-MNIST {split} split (reinstall {FASHION_MNIST_PACKAGE})")
    if labels.size and int(labels.max()) >= _CLASSES:
        bad = int(np.argmax(labels >= _CLASSES))
        raise IdxError(f"{lab_path}: label {int(labels[bad])} at index {bad} is out of range 0..{_CLASSES - 1}")
    return images, labels


def load_fashion_mnist(root=None, *, counts: dict | None = None) -> FashionMNIST:
    """The four Fashion-MNIST files from ``root`` (default :data:`FASHION_MNIST_DIR`), checked.

    ``counts`` maps ``"train"``/``"test"`` to the required number of samples (default
    :data:`FASHION_MNIST_COUNTS`, 60,000 / 10,000; a value None accepts any). Raises
    :class:`IdxError` naming the file (and, for a missing file, the Debian package to install).
    """
    root = FASHION_MNIST_DIR if root is None else os.fspath(root)
    counts = FASHION_MNIST_COUNTS if counts is None else counts
    return _load_cached(root, tuple(sorted(counts.items())))


@lru_cache(maxsize=2)
def _load_cached(root: str, counts: tuple) -> FashionMNIST:
    c = dict(counts)
    X_train, y_train = _load_split(root, "train", c.get("train"))
    X_test, y_test = _load_split(root, "test", c.get("test"))
    return FashionMNIST(X_train, y_train, X_test, y_test)
