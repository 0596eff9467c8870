"""Data sets that come from installed packages (no downloads at run time)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray  # float32, (n, features)
    y_train: np.ndarray  # int, (n,)
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def n_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def digits(n_train: int = 1200) -> Dataset:
    """sklearn's 8x8 digits (1,797 images), pixels scaled to [0, 1]; the first ``n_train``
    samples train, the rest test (the split the AIfES comparison uses)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    return Dataset("digits", x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def load(name: str) -> Dataset:
    if name == "digits":
        return digits()
    raise ValueError(f"unknown data set {name!r} (known: digits)")
