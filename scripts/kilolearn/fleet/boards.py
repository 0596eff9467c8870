"""One board's part of a fleet round: its share of the data (a non-IID split), its local
training on a device session (``device.adapt.run``: LOAD, CONFIG, TRAIN, EPOCHS, READ back) or
in the numpy twin, the bytes on its link, and the faults a test injects (power lost mid-round,
a blob damaged on the way back)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..core import data as datasets
from ..core import fit
from ..device import adapt, protocol
from ..formats import export

# the faults a board can be given for one round: its device killed (power lost), frozen (it
# stops answering: timeouts), or its blob damaged on the way back
KILL, HANG, CORRUPT = "kill", "hang", "corrupt"
TWIN = "twin"  # a virtual board: the numpy twin stands in for the device


class PowerLost(RuntimeError):
    """A virtual board's fault: its training stopped mid-round (as a killed device's would)."""


def split(y: np.ndarray, n_boards: int, per_board: int, n_classes: int, seed: int
          ) -> list[np.ndarray]:
    """Non-IID shares of the samples with labels ``y``: board k holds the classes
    (k * per_board + j) mod n_classes, j < per_board; each class's samples (shuffled) are
    dealt evenly among the boards that hold it. Returns each board's sample indices."""
    rng = np.random.default_rng(seed)
    classes = [[(k * per_board + j) % n_classes for j in range(per_board)]
               for k in range(n_boards)]
    parts: list[list[int]] = [[] for _ in range(n_boards)]
    for c in range(n_classes):
        owners = [k for k in range(n_boards) if c in classes[k]]
        idx = rng.permutation(np.flatnonzero(y == c))
        for j, chunk in enumerate(np.array_split(idx, len(owners)) if owners else []):
            parts[owners[j]] += chunk.tolist()
    return [np.array(sorted(p), np.int64) for p in parts]


@dataclass
class Local:
    """What every board does with the global model in a round."""

    epochs: int = 2
    lr: float = 0.05
    seed: int = 1

    def settings(self, n: int, board: int, rnd: int) -> adapt.Settings:
        """The device's CONFIG (and the twin's) for board ``board`` in round ``rnd``."""
        return adapt.Settings(samples=[n], epochs=self.epochs, lr=self.lr,
                              seed=(self.seed + 1000 * rnd + board) & 0x7FFFFFFF, host_runs=0)

    def order(self, n: int, board: int, rnd: int) -> np.ndarray:
        """The order board ``board`` streams its n samples in during round ``rnd``."""
        return np.random.default_rng([self.seed, board, rnd]).permutation(n)


@dataclass
class BoardRound:
    """What a board sends back after a round."""

    blob: bytes
    n: int
    metrics: dict[str, float] = field(default_factory=dict)


def train_twin(blob: bytes, x: np.ndarray, y: np.ndarray, st: adapt.Settings,
               stop_after: int | None = None) -> bytes:
    """The numpy twin of a device's round (what ``adapt.run`` makes the device do): TRAIN the
    samples in order, ``epochs - 1`` EPOCHS over the buffer, READ back. ``stop_after``: the
    power goes after that many TRAINs (PowerLost)."""
    b = export.read(blob)
    xs = fit.encode(b, x)
    t = adapt._Twin(b, st, len(xs), b.graph.n_classes)
    for i in range(len(xs)):
        if i == stop_after:
            raise PowerLost(f"power lost after {i} of {len(xs)} samples")
        t.train(xs[i], int(y[i]))
    for _ in range(st.epochs - 1):
        t.epoch()
    if b.qmodel is not None:
        b.qmodel = t.t.m
    else:
        b.params = t.t.p
    return fit.reexport(b)


def same_model(a: bytes, b: bytes) -> bool:
    """Two blobs hold the same model, bit for bit (weights, biases, exponents)."""
    if a == b:
        return True
    ba, bb = export.read(a), export.read(b)
    if ba.graph != bb.graph or ba.dtype != bb.dtype:
        return False
    if ba.qmodel is not None and bb.qmodel is not None:
        qa, qb = ba.qmodel, bb.qmodel
        return (qa.exp == qb.exp and qa.ew == qb.ew and qa.eb == qb.eb and
                all(u is None and v is None or np.array_equal(u, v)
                    for u, v in zip(qa.w + qa.b, qb.w + qb.b, strict=True)))
    pa, pb = ba.params, bb.params
    assert pa is not None and pb is not None
    return all(u is None and v is None or np.array_equal(u, v)
               for u, v in zip(pa.weights + pa.biases, pb.weights + pb.biases, strict=True))


class CountingLink:
    """A protocol link that counts the bytes each way (frames with their delimiters)."""

    def __init__(self, link: protocol.Link):
        self.link = link
        self.tx = 0
        self.rx = 0

    def write(self, data: bytes) -> None:
        self.tx += len(data)
        self.link.write(data)

    def read_frame(self, timeout: float) -> bytes:
        frame = self.link.read_frame(timeout)
        self.rx += len(frame) + 1
        return frame

    def close(self) -> None:
        self.link.close()


def corrupt(blob: bytes, seed: int) -> bytes:
    """``blob`` with a few bytes after the header flipped (a damaged transfer)."""
    rng = np.random.default_rng(seed)
    b = bytearray(blob)
    for k in rng.choice(np.arange(export.HEADER_SIZE, len(b)), size=3, replace=False):
        b[k] ^= int(rng.integers(1, 256))
    return bytes(b)


@dataclass
class Board:
    """How board k of a fleet trains: a device (``kind`` an emulated board, 'host', or a
    pyserial ``url``) or the numpy twin (``kind`` TWIN); ``check_twin``: a device's round is
    compared with the twin's, bit for bit."""

    kind: str = TWIN
    url: str | None = None
    timeout: float = 10.0
    check_twin: bool = True

    @property
    def virtual(self) -> bool:
        return self.kind == TWIN and self.url is None


def run_round(board: Board, blob: bytes, x: np.ndarray, y: np.ndarray, st: adapt.Settings,
              fault: str | None = None) -> BoardRound:
    """Board ``board``'s round on its samples (x, y) in the order given: the global ``blob``
    in, the adapted blob out, with the sample count and the round's figures (bytes, device
    STATS, device = twin). ``fault`` KILL: the device (its process) is killed once the first
    epoch has been sent, HANG: it is stopped there (SIGSTOP: no more replies); CORRUPT: the
    returned blob is damaged after the checks here."""
    t0 = time.monotonic()
    n = len(x)
    m: dict[str, float] = {"num-examples": float(n), "blob-down": float(len(blob))}
    if board.virtual:
        out = train_twin(blob, x, y, st, stop_after=n // 2 if fault in (KILL, HANG) else None)
    else:
        out = _device_round(board, blob, x, y, st, m, fault)
    m["blob-up"] = float(len(out))
    m["seconds"] = time.monotonic() - t0
    if fault == CORRUPT:
        out = corrupt(out, st.seed)
    return BoardRound(out, n, m)


def _device_round(board: Board, blob: bytes, x: np.ndarray, y: np.ndarray,
                  st: adapt.Settings, m: dict[str, float], fault: str | None) -> bytes:
    from ..device import session

    with session.open_device(board.kind, board.url, timeout=board.timeout) as client:
        link = CountingLink(client.link)
        client.link = link
        say: Callable[[str], None] | None = None
        if fault in (KILL, HANG):
            def say(msg: str) -> None:
                if "epoch 2/" in msg or msg.startswith("reading"):
                    proc = getattr(client, "process", None)
                    if proc is None:
                        raise PowerLost("no process to switch off (a real board)")
                    if fault == HANG:
                        proc.send_signal(signal.SIGSTOP)  # killed below, once timed out
                    else:
                        proc.kill()
                        proc.wait()
        try:
            res = adapt.run(client, blob, x, y, {}, st, progress=say)
        finally:
            if fault == HANG and (proc := getattr(client, "process", None)) is not None:
                proc.kill()  # the frozen device, switched off
        m["link-tx"], m["link-rx"] = float(link.tx), float(link.rx)
        p = res.points[0]
        m["train-insn"], m["train-steps"] = float(p.train_insn), float(p.steps)
    assert res.pulled is not None
    if board.check_twin:
        m["twin-equal"] = float(same_model(res.pulled, train_twin(blob, x, y, st)))
    return res.pulled


def failure(e: BaseException) -> str:
    """Why a board's round failed, in one line: the device timed out, refused a request (a
    NAK), its link or power went, or the twin's power did."""
    from ..cliargs import one_line

    what = (f"device refused a request ({one_line(str(e))})"
            if isinstance(e, protocol.DeviceError) else
            f"device timed out ({one_line(str(e))})" if isinstance(e, protocol.LinkTimeout) else
            f"power lost ({one_line(str(e))})" if isinstance(e, PowerLost) else
            f"link lost ({type(e).__name__}: {one_line(str(e))})"
            if isinstance(e, OSError | protocol.FrameError) or _is_serial(e) else
            f"{type(e).__name__}: {one_line(str(e))}")
    return what


def _is_serial(e: BaseException) -> bool:
    return type(e).__module__.startswith("serial")


def load_data(name: str) -> datasets.Dataset:
    """A built-in data set, loaded once per process (the Flower simulation's workers too)."""
    if name not in _DATA:
        _DATA[name] = datasets.load(name)
    return _DATA[name]


_DATA: dict[str, datasets.Dataset] = {}
