"""Stream a data set to a board as TRAIN or EVAL frames (``kilolearn stream``).

The device must hold a model already (``kilolearn session`` or the LOAD command); samples are
sent in the model's input type, quantised on the host for int8 models with the input scale of
the blob given. Resumable: ``--start N`` skips what an interrupted run already sent, and a
state file records the next index after every chunk of samples (the next one without a reply:
with a window of requests in flight, a run killed mid-window may have trained up to window - 1
samples past it). The frames go a window at a time (protocol version 2, ``--window``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..core import userdata
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
    """A built-in data set name, an .npz with x and y arrays, an .npy or a CSV (label first):
    ``userdata.load`` (its DataError, a ValueError, says what is wrong in one line)."""
    return userdata.load(source, split)


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
    before, retx = client.bytes_sent, client.retransmissions
    t0 = time.monotonic()
    n = len(x)
    items = ((int(y[i]), x[i].tobytes()) for i in range(start, n))
    replies = client.train_many(items) if mode == "train" else client.eval_many(items)
    for i, r in enumerate(replies, start):  # a window of requests in flight (version 2)
        if mode == "eval":
            correct += r[1]
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
    return StreamResult(sent, correct if mode == "eval" else None, dt, frame, wire / dt,
                        sent / dt, client.retransmissions - retx)
