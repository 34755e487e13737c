"""The data sets the golden models are trained on: scikit-learn's 8x8 handwritten digits (the default)
and Fashion-MNIST (28x28, from Debian's ``dataset-fashion-mnist``, read by :mod:`golden.idx`).

NumPy and scikit-learn only (no torch), so the integer side can use it too. :func:`load_dataset` is
the one entry point by name; :func:`load_digits_split` stays for the digits-only callers.
"""

from __future__ import annotations

import numpy as np

from dataclasses import dataclass

from .errors import InputError

__all__ = ["load_digits_split", "load_dataset", "Dataset", "DATASETS", "DATASET_INPUT_SHAPES",
           "DEFAULT_DATASET", "check_dataset_name", "N_FEATURES", "N_CLASSES"]

#: Features per sample (8x8 pixels) and number of classes.
N_FEATURES = 64
N_CLASSES = 10


def load_digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic stratified 80/20 split of ``sklearn.datasets.load_digits``.

    Returns
    -------
    X_train, y_train, X_test, y_test
        ``X_*`` are float32 ``[n, 64]`` raw pixel values 0..16 (no scaling);
        ``y_*`` are int64 ``[n]`` labels 0..9. ``n_test == 360``, ``n_train == 1437``.
        The split is ``train_test_split(test_size=0.2, random_state=0, stratify=y)``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    X = np.asarray(digits.data, dtype=np.float32)
    y = np.asarray(digits.target, dtype=np.int64)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.2, random_state=0, stratify=y)
    return (np.ascontiguousarray(X_train), np.ascontiguousarray(y_train),
            np.ascontiguousarray(X_test), np.ascontiguousarray(y_test))


#: Data sets by name and the input shape ``(C, H, W)`` of one sample; digits is the default.
DATASET_INPUT_SHAPES = {"digits": (1, 8, 8), "fashion-mnist": (1, 28, 28)}
DATASETS = tuple(DATASET_INPUT_SHAPES)
DEFAULT_DATASET = "digits"


class DatasetError(InputError):
    """An unknown data set name (one line, listing the valid ones)."""


def check_dataset_name(name) -> str:
    """``name`` if it is one of :data:`DATASETS`, else :class:`DatasetError`."""
    if name not in DATASET_INPUT_SHAPES:
        raise DatasetError(f"unknown data set {name!r}; valid: {', '.join(DATASETS)}")
    return name


@dataclass
class Dataset:
    """A train/test split: ``X_*`` float32 ``[n, C*H*W]`` raw pixel values (digits 0..16, Fashion-MNIST
    0..255; no scaling), ``y_*`` int64 ``[n]`` labels 0..9, ``input_shape`` ``(C, H, W)`` of one sample."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    input_shape: tuple

    def split(self):
        """``(X_train, y_train, X_test, y_test)``, the tuple :func:`load_digits_split` returns."""
        return self.X_train, self.y_train, self.X_test, self.y_test


def load_dataset(name: str = DEFAULT_DATASET, *, train_samples: int | None = None,
                 test_samples: int | None = None, root=None) -> Dataset:
    """The data set ``name`` (``"digits"`` or ``"fashion-mnist"``) as a :class:`Dataset`.

    ``train_samples`` / ``test_samples`` keep only the first that many samples of each split (quick
    runs, tests; None = all). ``root`` is the Fashion-MNIST folder (default Debian's,
    :data:`golden.idx.FASHION_MNIST_DIR`). Raises :class:`~golden.errors.InputError` for an unknown
    name, a bad count, or missing/corrupt files (the message names the file and the package).
    """
    check_dataset_name(name)
    for what, v in (("train_samples", train_samples), ("test_samples", test_samples)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise DatasetError(f"{what} must be a positive integer or None, got {v!r}")
    if name == "digits":
        X_train, y_train, X_test, y_test = load_digits_split()
    else:
        from .idx import load_fashion_mnist
        f = load_fashion_mnist(root)
        n_in = int(np.prod(DATASET_INPUT_SHAPES[name]))
        # subset first, then convert: a quick run does not pay for 60,000 float images
        X_train = f.X_train[:train_samples].reshape(-1, n_in).astype(np.float32)
        X_test = f.X_test[:test_samples].reshape(-1, n_in).astype(np.float32)
        y_train, y_test = f.y_train[:train_samples].astype(np.int64), f.y_test[:test_samples].astype(np.int64)
    if train_samples is not None:
        X_train, y_train = X_train[:train_samples], y_train[:train_samples]
    if test_samples is not None:
        X_test, y_test = X_test[:test_samples], y_test[:test_samples]
    return Dataset(name, np.ascontiguousarray(X_train), np.ascontiguousarray(y_train),
                   np.ascontiguousarray(X_test), np.ascontiguousarray(y_test), DATASET_INPUT_SHAPES[name])


def model_dataset(provenance: dict | None, input_shape) -> str | None:
    """The data set a model was trained on: its provenance's ``data`` (or ``spec.data``), else the one
    whose input size equals ``input_shape``'s (None when no data set matches)."""
    prov = provenance if isinstance(provenance, dict) else {}
    spec = prov.get("spec") if isinstance(prov.get("spec"), dict) else {}
    name = prov.get("data", spec.get("data"))
    if name in DATASET_INPUT_SHAPES:
        return name
    size = int(np.prod(tuple(input_shape))) if input_shape is not None else None
    found = [n for n, s in DATASET_INPUT_SHAPES.items() if int(np.prod(s)) == size]
    return found[0] if len(found) == 1 else None


def check_model_dataset(model_data: str | None, requested: str | None, what: str) -> str:
    """The data set to run ``what`` (a model file or checkpoint) on: ``requested`` (``--data``) or, when
    None, the one the model was trained on. Refuses (:class:`DatasetError`) a model trained on another
    data set than ``requested``, or one whose data set is unknown and none was requested."""
    if requested is not None:
        check_dataset_name(requested)
    if model_data is None:
        if requested is None:
            raise DatasetError(f"{what}: cannot tell which data set the model was trained on; pass --data "
                               f"({'|'.join(DATASETS)})")
        return requested
    if requested is not None and requested != model_data:
        raise DatasetError(f"{what}: the model was trained on {model_data}, not {requested}; run it with "
                           f"--data {model_data} (or train a model with --data {requested})")
    return model_data
