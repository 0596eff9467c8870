"""Stream a data set to a board as TRAIN or EVAL frames (``kilolearn stream``).

The device must hold a model already (``kilolearn session`` or the LOAD command); samples are
sent in the model's input type, quantised on the host for int8 models with the input scale of
the blob given. Resumable: ``--start N`` skips what an interrupted run already sent, and a
state file records the next index after every chunk of samples.
"""

from __future__ import annotations

import json
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..core import data as datasets
from ..formats import export
from . import protocol


@dataclass
class StreamResult:
    sent: int
    correct: int | None  # EVAL only
    seconds: float
    frame_bytes: int
    bytes_per_s: float
    frames_per_s: float
    retransmissions: int

    def as_dict(self) -> dict:
        return asdict(self)


def load_samples(source: str, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """A built-in data set name, an .npz with x and y arrays, or a CSV (label first). Samples
    come back flat, (n, features) float32, labels int64; ValueError if the file does not hold
    at least one sample with finite values and integer labels."""
    if source.lower().endswith(".npz"):
        try:
            z = np.load(source, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive (a single array)")
            with z:
                missing = [k for k in ("x", "y") if k not in z.files]
                if missing:
                    raise ValueError(f"no array {' or '.join(missing)} (has: "
                                     f"{', '.join(z.files) or 'none'})")
                x, y = np.asarray(z["x"]), np.asarray(z["y"])
        except (OSError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"not an .npz archive ({e})") from None
    elif source.lower().endswith(".csv"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty file: "input contained no data"
            arr = np.loadtxt(source, delimiter=",", ndmin=2, dtype=np.float64)
        if arr.shape[1] < 2:
            raise ValueError("expected rows of a label and at least one value")
        x, y = arr[:, 1:], arr[:, 0]
    else:
        ds = datasets.load(source)
        return (ds.x_train, ds.y_train) if split == "train" else (ds.x_test, ds.y_test)
    return _check_samples(x, y)


def _check_samples(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
        raise ValueError(f"x and y must be numbers (x is {x.dtype}, y is {y.dtype})")
    if x.ndim < 1 or len(x) == 0 or x.size == 0:
        raise ValueError("no samples")
    x = x.reshape(len(x), -1)
    y = y.reshape(-1)
    if len(y) != len(x):
        raise ValueError(f"{len(x):,} samples but {len(y):,} labels")
    with np.errstate(over="ignore", invalid="ignore"):
        x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError("samples hold NaN, infinite or too large values")
    if not np.isfinite(y).all() or (y != np.round(y)).any() or (y < 0).any() or \
            (y > 0xFFFF).any():
        raise ValueError("labels must be integers from 0 to 65535")
    return x, y.astype(np.int64)


def encode(x: np.ndarray, blob: bytes) -> np.ndarray:
    """Samples in the model's input type: int8 (quantised with the blob's input scale) or
    float32."""
    b = export.read(blob)
    if b.qmodel is None:
        return np.ascontiguousarray(x, np.float32).reshape(len(x), -1)
    return b.qmodel.quantize_input(x).reshape(len(x), -1)


def stream(client: protocol.Client, x: np.ndarray, y: np.ndarray, mode: str = "train",
           start: int = 0, state: Path | None = None,
           progress: Callable[[int, int], None] | None = None) -> StreamResult:
    if mode not in ("train", "eval"):
        raise ValueError("mode is 'train' or 'eval'")
    correct = 0
    before = client.bytes_sent
    t0 = time.monotonic()
    frames_before = client.bytes_sent
    n = len(x)
    for i in range(start, n):
        sample = x[i].tobytes()
        if mode == "train":
            client.train(int(y[i]), sample)
        else:
            correct += client.eval(int(y[i]), sample)[1]
        if state is not None and (i + 1) % 100 == 0:
            state.write_text(json.dumps({"next": i + 1}))
        if progress is not None and (i % 50 == 0 or i == n - 1):
            progress(i + 1, n)
    dt = max(time.monotonic() - t0, 1e-9)
    if state is not None:
        state.write_text(json.dumps({"next": n}))
    sent = n - start
    frame = len(protocol.pack(protocol.TRAIN, 0, b"\0" * (2 + x.shape[1] * x.itemsize)))
    wire = client.bytes_sent - before
    retrans = max(0, round((client.bytes_sent - frames_before) / frame) - sent)
    return StreamResult(sent, correct if mode == "eval" else None, dt, frame, wire / dt,
                        sent / dt, retrans)
