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


FASHION_DIR = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist


def _idx(path: str) -> np.ndarray:
    """An IDX file (the MNIST format), gzip-compressed."""
    import gzip
    import struct

    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack_from(f">{raw[3]}I", raw, 4)
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * raw[3])
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: truncated")
    return data.reshape(dims)


def fashion(n_train: int = 3000, n_test: int = 1000, size: int = 14,
            root: str = FASHION_DIR) -> Dataset:
    """Fashion-MNIST from Debian's dataset-fashion-mnist package, average-pooled from 28x28 to
    ``size`` x ``size`` (a divisor of 28), pixels in [0, 1]; the first n_train / n_test."""
    import os

    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root} missing: apt-get install dataset-fashion-mnist")
    if 28 % size:
        raise ValueError("size must divide 28")
    k = 28 // size

    def prep(images: np.ndarray) -> np.ndarray:
        x = images.reshape(-1, size, k, size, k).mean(axis=(2, 4)) / 255.0
        return x.reshape(len(images), -1).astype(np.float32)

    xtr = prep(_idx(f"{root}/train-images-idx3-ubyte.gz")[:n_train])
    ytr = _idx(f"{root}/train-labels-idx1-ubyte.gz")[:n_train].astype(np.int64)
    xte = prep(_idx(f"{root}/t10k-images-idx3-ubyte.gz")[:n_test])
    yte = _idx(f"{root}/t10k-labels-idx1-ubyte.gz")[:n_test].astype(np.int64)
    return Dataset("fashion", xtr, ytr, xte, yte)


def load(name: str) -> Dataset:
    if name == "digits":
        return digits()
    if name == "fashion":
        return fashion()
    raise ValueError(f"unknown data set {name!r} (known: digits, fashion)")
