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
    shape: tuple[int, int, int] | None = None  # images: (H, W, C) of a flattened sample
    #: images of the same domain the scenario never trains or tests on (a backbone's
    #: pretraining pool), or None
    x_pool: np.ndarray | None = None
    y_pool: np.ndarray | None = None

    @property
    def n_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    def subset(self, classes: int, n_train: int, n_test: int, n_pool: int = 0) -> Dataset:
        """The first n_train / n_test (/ n_pool) samples of classes 0..classes-1."""
        def take(x: np.ndarray | None, y: np.ndarray | None, n: int
                 ) -> tuple[np.ndarray | None, np.ndarray | None]:
            if x is None or y is None:
                return None, None
            keep = np.flatnonzero(y < classes)[:n]
            return x[keep], y[keep]

        xtr, ytr = take(self.x_train, self.y_train, n_train)
        xte, yte = take(self.x_test, self.y_test, n_test)
        xp, yp = take(self.x_pool, self.y_pool, n_pool) if n_pool else (None, None)
        assert xtr is not None and ytr is not None and xte is not None and yte is not None
        return Dataset(self.name, xtr, ytr, xte, yte, self.shape, xp, yp)


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
            root: str = FASHION_DIR, n_pool: int = 0) -> Dataset:
    """Fashion-MNIST from Debian's dataset-fashion-mnist package, average-pooled from 28x28 to
    ``size`` x ``size`` (a divisor of 28), pixels in [0, 1]; the first n_train / n_test, and
    the next ``n_pool`` training images as the pretraining pool."""
    import os

    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root} missing: apt-get install dataset-fashion-mnist")
    if 28 % size:
        raise ValueError("size must divide 28")
    k = 28 // size

    def prep(images: np.ndarray) -> np.ndarray:
        x = images.reshape(-1, size, k, size, k).mean(axis=(2, 4)) / 255.0
        return x.reshape(len(images), -1).astype(np.float32)

    if min(n_train, n_test) < 1 or n_pool < 0 or n_train + n_pool > 60000 or n_test > 10000:
        raise ValueError("Fashion-MNIST has 60,000 training and 10,000 test images")
    images = _idx(f"{root}/train-images-idx3-ubyte.gz")[:n_train + n_pool]
    labels = _idx(f"{root}/train-labels-idx1-ubyte.gz")[:n_train + n_pool].astype(np.int64)
    xtr = prep(images)
    xte = prep(_idx(f"{root}/t10k-images-idx3-ubyte.gz")[:n_test])
    yte = _idx(f"{root}/t10k-labels-idx1-ubyte.gz")[:n_test].astype(np.int64)
    pool = (xtr[n_train:], labels[n_train:]) if n_pool else (None, None)
    return Dataset("fashion", xtr[:n_train], labels[:n_train], xte, yte, (size, size, 1), *pool)


def _package_data(package: str, rel: str, hint: str) -> str:
    """A data file shipped inside an installed package, found without importing it (aeon's
    import pulls in numba)."""
    import importlib.util
    import os

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {package!r} package is missing: {hint}")
    path = os.path.join(list(spec.submodule_search_locations)[0], rel)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} missing: {hint}")
    return path


def read_ts(path: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A time-series file in the sktime/aeon ``.ts`` format with equal-length series: the
    series as float32 (n, length, dims), the labels as indices into the class names the
    header lists."""
    classes: list[str] = []
    rows: list[np.ndarray] = []
    labels: list[int] = []
    length = None
    with open(path, encoding="utf-8") as f:
        in_data = False
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                key, _, rest = line.partition(" ")
                if key.lower() == "@classlabel":
                    classes = rest.split()[1:]
                in_data = key.lower() == "@data"
                continue
            *dims, label = line.split(":")
            try:
                series = np.array([[float(v) for v in d.split(",")] for d in dims], np.float32)
            except ValueError:
                raise ValueError(f"{path}:{n}: not a list of numbers") from None
            if label not in classes or series.ndim != 2 or \
                    (length is not None and series.shape != length):
                raise ValueError(f"{path}:{n}: unknown class or unequal series")
            length = series.shape
            rows.append(series.T)
            labels.append(classes.index(label))
    if not rows:
        raise ValueError(f"{path}: no series")
    return np.stack(rows), np.array(labels, np.int64), classes


def basic_motions() -> Dataset:
    """BasicMotions (UEA archive, shipped inside the ``aeon`` package): a smartwatch's 3-axis
    accelerometer and gyroscope, 100 steps at 10 Hz, while standing, running, walking or
    playing badminton; 40 training and 40 test recordings. Each of the 6 channels is
    standardised with the training set's mean and deviation; a sample is (1, 100, 6) HWC."""
    hint = "pip install aeon (the data files ship inside it)"
    base = "datasets/data/BasicMotions/BasicMotions_"
    xtr, ytr, _ = read_ts(_package_data("aeon", base + "TRAIN.ts", hint))
    xte, yte, _ = read_ts(_package_data("aeon", base + "TEST.ts", hint))
    mu = xtr.mean(axis=(0, 1))
    sd = xtr.std(axis=(0, 1)) + 1e-6

    def prep(x: np.ndarray) -> np.ndarray:
        return ((x - mu) / sd).astype(np.float32).reshape(len(x), -1)

    return Dataset("basicmotions", prep(xtr), ytr, prep(xte), yte, (1, xtr.shape[1], xtr.shape[2]))


LOADERS = {"digits": digits, "fashion": fashion, "basicmotions": basic_motions}


def load(name: str) -> Dataset:
    if name not in LOADERS:
        raise ValueError(f"unknown data set {name!r} (known: {', '.join(LOADERS)})")
    return LOADERS[name]()
