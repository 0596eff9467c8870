"""The user's own data: arrays from .npz, .npy or .csv files (or a built-in data set), checked
against the model they are meant for, every problem one line (``DataError``).

Formats
- ``.npz``: arrays ``x`` (samples, any shape after the first axis) and ``y`` (integer labels).
  ``X``/``data``/``inputs``/``images`` and ``labels``/``targets``/``label`` are taken too.
- ``.csv``: one sample per row, the label first, then the values; a header row is skipped.
- ``.npy``: one 2-D array laid out as the CSV (label in column 0).
- a built-in name (``digits``, ``fashion``) with a split (train or test).
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np

from . import data as datasets

X_KEYS = ("x", "X", "data", "inputs", "images", "samples")
Y_KEYS = ("y", "Y", "labels", "targets", "label", "target")
BUILT_IN = ("digits", "fashion")
#: data whose values reach this many times past the model's calibrated input range is on
#: another scale (e.g. 0..255 pixels for a model calibrated on 0..1)
SCALE_FACTOR = 4.0


class DataError(ValueError):
    """The data cannot be used as it is (one line saying why and what to do)."""


def load(source: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(x, y): samples flattened to (n, features) float32, labels int64."""
    x, y, _shape = load_shaped(source, split)
    return x, y


def load_shaped(source: str | Path, split: str = "train"
                ) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int] | None]:
    """(x, y, shape): as ``load``, and the samples' image shape (H, W, C) when an .npz holds
    them as images ((n, H, W) or (n, H, W, C)), else None."""
    s = str(source)
    low = s.lower()
    shape = None
    if low.endswith(".npz"):
        x, y = _npz(s)
        if x.ndim in (3, 4) and x.shape[0] > 0:
            shape = (x.shape[1], x.shape[2], x.shape[3] if x.ndim == 4 else 1)
        x, y = check_arrays(x, y)
        return x, y, shape
    if low.endswith(".csv"):
        x, y = _split_label(_csv(s), s)
    elif low.endswith(".npy"):
        x, y = _split_label(_npy(s), s)
    elif s in BUILT_IN:
        ds = datasets.load(s)
        return (ds.x_train, ds.y_train, None) if split == "train" else \
            (ds.x_test, ds.y_test, None)
    else:
        raise DataError(f"{s}: expected an .npz, .npy or .csv file or one of "
                        f"{', '.join(BUILT_IN)}")
    x, y = check_arrays(x, y)
    return x, y, shape


def _npz(path: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as e:
        raise DataError(f"not an .npz archive ({e})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataError("not an .npz archive (a single array: save x and y with np.savez)")
    with z:
        have = list(z.files)
        kx = next((k for k in X_KEYS if k in have), None)
        ky = next((k for k in Y_KEYS if k in have), None)
        if kx is None or ky is None:
            missing = " and ".join(w for w, k in (("x (the samples)", kx),
                                                  ("y (the labels)", ky)) if k is None)
            raise DataError(f"no array {missing}: the archive has {', '.join(have) or 'none'}"
                            " (save them as np.savez(file, x=samples, y=labels))")
        try:
            return np.asarray(z[kx]), np.asarray(z[ky])
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"array {kx} or {ky} cannot be read ({e})") from None


def _csv(path: str) -> np.ndarray:
    rows: list[list[float]] = []
    try:
        with open(path, encoding="utf-8-sig") as f:
            for n, line in enumerate(f, 1):
                cells = [c.strip() for c in line.strip().split(",")]
                if cells == [""]:
                    continue
                try:
                    rows.append([float(c) for c in cells])
                except ValueError:
                    if not rows and n == 1:
                        continue  # a header row
                    bad = next(c for c in cells if not _is_number(c))
                    col = cells.index(bad) + 1
                    raise DataError(f"row {n}, column {col}: {bad[:40]!r} is not a number"
                                    ) from None
                if len(rows[-1]) != len(rows[0]):
                    raise DataError(f"row {n} has {len(rows[-1])} values, the first row "
                                    f"{len(rows[0])}")
    except UnicodeDecodeError:
        raise DataError("not a text CSV file") from None
    if not rows:
        raise DataError("no samples (an empty CSV file)")
    return np.array(rows, np.float64)


def _is_number(c: str) -> bool:
    try:
        float(c)
    except ValueError:
        return False
    return True


def _npy(path: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"not an .npy array ({e})") from None
    if not isinstance(a, np.ndarray):
        raise DataError("an .npz archive, not one .npy array: name it .npz")
    if a.ndim != 2:
        raise DataError(f"a {a.ndim}-D array: an .npy file holds one sample per row, the "
                        "label first (2-D); use an .npz with x and y for images")
    return a


def _split_label(a: np.ndarray, path: str) -> tuple[np.ndarray, np.ndarray]:
    if a.shape[1] < 2:
        raise DataError("expected rows of a label and at least one value")
    return a[:, 1:], a[:, 0]


def check_arrays(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Numbers, as many labels as samples, finite values, integer labels 0..65535."""
    if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
        raise DataError(f"x and y must be numbers (x is {x.dtype}, y is {y.dtype})")
    if x.ndim < 1 or len(x) == 0 or x.size == 0:
        raise DataError("no samples")
    x = x.reshape(len(x), -1)
    y = y.reshape(-1)
    if len(y) != len(x):
        raise DataError(f"{len(x):,} samples but {len(y):,} labels")
    with np.errstate(over="ignore", invalid="ignore"):
        x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError("samples hold NaN, infinite or too large values")
    if not np.isfinite(y).all() or (y != np.round(y)).any() or (y < 0).any() or \
            (y > 0xFFFF).any():
        raise DataError("labels must be integers from 0 to 65535")
    return x, y.astype(np.int64)


def input_range(qm) -> tuple[float, float]:  # noqa: ANN001 - reference.QModel
    """The float range an int8 model's input represents (its calibration): values outside
    saturate."""
    step = 2.0 ** qm.ex
    return (-128 - qm.zx) * step, (127 - qm.zx) * step


def check_for_model(x: np.ndarray, y: np.ndarray, n_inputs: int, n_classes: int,
                    qm=None, what: str = "the model",  # noqa: ANN001
                    scale_check: bool = True) -> str | None:
    """DataError when the data does not fit the model: width, labels, and (int8 models) the
    values' scale against the input range the model was calibrated on. Returns a note when
    some values saturate (within the scale), else None."""
    if x.shape[1] != n_inputs:
        raise DataError(f"samples of {x.shape[1]:,} values, {what} takes {n_inputs:,} "
                        "(flatten each sample to that many)")
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise DataError(f"labels {int(y.min())}..{int(y.max())}, {what} has {n_classes} "
                        f"classes (0..{n_classes - 1})")
    if qm is None:
        return None
    lo, hi = input_range(qm)
    span = hi - lo
    dmin, dmax = float(x.min()), float(x.max())
    if scale_check and (dmax > hi + SCALE_FACTOR * span or dmin < lo - SCALE_FACTOR * span):
        raise DataError(f"values span {dmin:g}..{dmax:g}, but {what}'s int8 input was "
                        f"calibrated on {lo:g}..{hi:g} (it saturates outside): scale the data "
                        "as the model's training data was scaled (--no-scale-check to go on)")
    out = float(np.mean((x < lo) | (x > hi)))
    if out > 0:
        return (f"{100 * out:.2f} % of the values lie outside the calibrated input range "
                f"{lo:g}..{hi:g} and saturate")
    return None
