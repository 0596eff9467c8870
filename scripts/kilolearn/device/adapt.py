"""Adapt a deployed model on the device with the user's samples (``kilolearn adapt``).

The loop, on one device session: LOAD the blob; EVAL every evaluation set (before); then for
each sample count N: CONFIG (a fresh training state from the stored blob, a sample buffer of N),
TRAIN the first N samples (epoch 1, as they come), EPOCHS for the other epochs (the device
revisits its buffer, shuffled), EVAL every set; finally READ the adapted model back. Beside it,
on the host: the numpy twin (the same steps in the same order: device = numpy, prediction for
prediction) and independent host runs (the same samples and epochs, each in numpy's own
shuffled order; their mean), so the device's figure can be judged against plain host training.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..core import fit, selective
from ..core.samples import SESSION_SEED_XOR, SampleBuffer
from ..formats import export
from . import protocol

ENOMEM = -12
EvalSets = dict[str, tuple[np.ndarray, np.ndarray]]


class AdaptError(ValueError):
    """The adaptation cannot run as asked (one line)."""


@dataclass
class Settings:
    samples: list[int]  # sample counts to adapt with, each from the blob's state
    epochs: int = 5
    lr: float = 0.05
    seed: int = 1
    update: tuple[str, float] | None = None  # a selective-update policy over the blob's
    grow: bool = False  # class-incremental: classes become active with their labels
    host_runs: int = 3  # independent host runs (numpy's own orders), averaged; 0: none


@dataclass
class Point:
    n: int
    steps: int
    device: dict[str, float]
    twin: dict[str, float]
    host: dict[str, float]  # mean of the host runs
    agree: dict[str, float]  # fraction of the device's predictions the twin makes too
    train_insn: int
    seconds: float
    host_runs: list[dict[str, float]] = field(default_factory=list)


@dataclass
class AdaptResult:
    dtype: str
    before: dict[str, float]
    before_agree: dict[str, float]
    points: list[Point] = field(default_factory=list)
    pulled: bytes | None = None
    pulled_host: dict[str, float] = field(default_factory=dict)
    buffer_bytes: int = 0

    def as_dict(self) -> dict:
        return {"dtype": self.dtype, "before": self.before, "before_agree": self.before_agree,
                "points": [p.__dict__ for p in self.points], "pulled_host": self.pulled_host,
                "pulled_bytes": len(self.pulled or b""), "buffer_bytes": self.buffer_bytes}


def buffer_bytes(n: int, sample_bytes: int) -> int:
    """Arena bytes of a sample buffer of n samples (kl_samples_reserve)."""
    def a4(v: int) -> int:
        return (v + 3) // 4 * 4

    return n * a4(sample_bytes) + 2 * a4(2 * n)


class _Twin:
    """The numpy twin of the device, or (``order`` = a numpy Generator) an independent host
    run that revisits the samples in numpy's own shuffled order."""

    def __init__(self, b: export.Blob, st: Settings, n: int, n_classes: int,
                 order: np.random.Generator | None = None):
        self.t = fit.trainer(b, lr=st.lr, seed=st.seed)
        if st.update is not None:
            self.t.set_update_policy(st.update[0], st.update[1])
        elif b.update[0]:
            self.t.set_update_policy(b.update[0], permille=b.update[1])
        self.mask = np.zeros(n_classes, bool) if st.grow else None
        self.t.class_mask = self.mask
        self.buf = SampleBuffer(max(n, 1), st.seed ^ SESSION_SEED_XOR)
        self.order = order

    def train(self, x: np.ndarray, label: int) -> None:
        if self.mask is not None:
            self.mask[label] = True
        self.t.step(x, label)
        self.buf.add(x, label)

    def epoch(self) -> None:
        if self.order is None:
            for x, label in self.buf.epoch():
                self.t.step(x, label)
        else:
            for k in self.order.permutation(len(self.buf)):
                self.t.step(self.buf.samples[k], self.buf.labels[k])

    def predict(self, xs: np.ndarray) -> np.ndarray:
        return self.t.predict(xs)


def device_predict(client: protocol.Client, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The device's predictions (EVAL) of encoded samples xs with labels ys."""
    return np.array([client.eval(int(y), x.tobytes())[0] for x, y in zip(xs, ys, strict=True)])


def _config(client: protocol.Client, st: Settings, buffer: int | None) -> None:
    client.config(lr=st.lr, seed=st.seed, classes=b"" if st.grow else None, buffer=buffer,
                  update=None if st.update is None else
                  (selective.policy_id(st.update[0]), selective.permille(st.update[1])))


def run(client: protocol.Client, blob: bytes, x: np.ndarray, y: np.ndarray, evals: EvalSets,
        st: Settings, load: bool = True,
        progress: Callable[[str], None] | None = None) -> AdaptResult:
    """Adapt on the device with (x, y) (floats, checked against the blob) for each count in
    ``st.samples``; every evaluation set before and after each; the last adapted model read
    back into ``result.pulled``."""
    b = export.read(blob)
    n_classes = int(np.prod(b.graph.shapes[b.graph.output]))
    xs = fit.encode(b, x)
    ev = {k: (fit.encode(b, ex), ey) for k, (ex, ey) in evals.items()}
    sample_bytes = xs.shape[1] * xs.itemsize
    say = progress or (lambda _msg: None)
    if load:
        say("loading the model")
        client.load(blob)
    _config(client, st, None)
    res = AdaptResult("s8" if b.qmodel is not None else "f32", {}, {})
    base = _Twin(b, st, 1, n_classes)
    for name, (ex, ey) in ev.items():
        say(f"evaluating {name} before adapting")
        dp = device_predict(client, ex, ey)
        res.before[name] = float(np.mean(dp == ey))
        res.before_agree[name] = float(np.mean(dp == base.predict(ex)))
    for n in st.samples:
        if n > len(xs):
            raise AdaptError(f"{n} samples asked for, the data has {len(xs):,}")
        buffer = n if st.epochs > 1 else None
        try:
            _config(client, st, buffer)
        except protocol.DeviceError as e:
            if e.status != ENOMEM:
                raise
            info = client.info()
            raise AdaptError(
                f"a buffer of {n} samples ({buffer_bytes(n, sample_bytes):,} B) does not fit "
                f"beside the model in the device's {info.arena_size:,}-byte arena: fewer "
                "samples, or --epochs 1 (no buffer)") from None
        res.buffer_bytes = max(res.buffer_bytes, buffer_bytes(buffer or 0, sample_bytes))
        t0 = time.monotonic()
        before = client.stats()
        twin = _Twin(b, st, n, n_classes)
        hosts = [_Twin(b, st, n, n_classes, np.random.default_rng(st.seed + k))
                 for k in range(st.host_runs)]
        say(f"{n} samples: epoch 1/{st.epochs}")
        for i in range(n):
            client.train(int(y[i]), xs[i].tobytes())
            for t in (twin, *hosts):
                t.train(xs[i], int(y[i]))
        for e in range(1, st.epochs):
            say(f"{n} samples: epoch {e + 1}/{st.epochs}")
            client.epochs(1)
            for t in (twin, *hosts):
                t.epoch()
        after = client.stats()
        p = Point(n, after.train_steps - before.train_steps, {}, {}, {}, {},
                  after.train_insn - before.train_insn, 0.0)
        for name, (ex, ey) in ev.items():
            say(f"{n} samples: evaluating {name}")
            dp = device_predict(client, ex, ey)
            tp = twin.predict(ex)
            p.device[name] = float(np.mean(dp == ey))
            p.twin[name] = float(np.mean(tp == ey))
            p.agree[name] = float(np.mean(dp == tp))
            runs = [float(np.mean(h.predict(ex) == ey)) for h in hosts]
            for k, v in enumerate(runs):
                if len(p.host_runs) <= k:
                    p.host_runs.append({})
                p.host_runs[k][name] = v
            if runs:
                p.host[name] = float(np.mean(runs))
        p.seconds = time.monotonic() - t0
        res.points.append(p)
        base = twin
    say("reading the adapted model back")
    res.pulled = client.read_blob(protocol.READ_TRAINED)
    pb = export.read(res.pulled)  # the CRC and tables check out
    tr = fit.trainer(pb)
    tr.class_mask = base.mask
    for name, (ex, ey) in ev.items():
        res.pulled_host[name] = float(np.mean(tr.predict(ex) == ey))
    return res
