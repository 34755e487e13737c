"""The data set the golden model is trained on: scikit-learn's 8x8 handwritten digits.

NumPy and scikit-learn only (no torch), so the integer side can use it too.
"""

from __future__ import annotations

import numpy as np

__all__ = ["load_digits_split", "N_FEATURES", "N_CLASSES"]

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
