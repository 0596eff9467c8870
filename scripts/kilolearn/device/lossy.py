"""A lossy link for tests (docs/protocol.md): wraps a protocol Link and loses, duplicates,
reorders and corrupts whole frames at random, in both directions, from a seed.

Frames are the units: a frame lost is lost whole, a corrupted one has one byte changed (a zero
there splits it in two, as on a wire), a duplicated one arrives twice, a reordered one is held
back and arrives after the next frame in its direction (or when that direction goes quiet)."""

from __future__ import annotations

import random
import time
from collections import Counter, deque

from .protocol import Link, LinkTimeout


class LossyLink:
    def __init__(self, inner: Link, loss: float = 0.0, dup: float = 0.0, reorder: float = 0.0,
                 corrupt: float = 0.0, seed: int = 0):
        for name, p in (("loss", loss), ("dup", dup), ("reorder", reorder),
                        ("corrupt", corrupt)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} {p}: a probability in [0, 1)")
        self.inner = inner
        self.p = {"loss": loss, "dup": dup, "reorder": reorder, "corrupt": corrupt}
        self.rng = random.Random(seed)
        self.counts: Counter[str] = Counter()  # what happened, per direction
        self._frames: deque[bytes] = deque()  # device -> host, ready
        self._held = {"out": None, "in": None}  # a frame held back per direction

    def _mangle(self, frame: bytes, way: str) -> list[bytes]:
        """What of one frame reaches the other side (before reordering)."""
        rng = self.rng
        self.counts[f"{way} frames"] += 1
        if rng.random() < self.p["loss"]:
            self.counts[f"{way} lost"] += 1
            return []
        if rng.random() < self.p["corrupt"]:
            self.counts[f"{way} corrupted"] += 1
            i = rng.randrange(len(frame))
            frame = frame[:i] + bytes([frame[i] ^ rng.randint(1, 255)]) + frame[i + 1:]
        out = [part for part in frame.split(b"\0") if part]
        if rng.random() < self.p["dup"]:
            self.counts[f"{way} duplicated"] += 1
            out += out
        return out

    def _reorder(self, frames: list[bytes], way: str) -> list[bytes]:
        out = []
        for f in frames:
            held = self._held[way]
            if held is None and self.rng.random() < self.p["reorder"]:
                self.counts[f"{way} reordered"] += 1
                self._held[way] = f
                continue
            out.append(f)
            if held is not None:
                out.append(held)
                self._held[way] = None
        return out

    def write(self, data: bytes) -> None:
        frames = [g for f in data.split(b"\0") if f for g in self._mangle(f, "out")]
        frames = self._reorder(frames, "out")
        if frames:
            self.inner.write(b"".join(f + b"\0" for f in frames))

    def _release(self) -> bool:
        """A direction gone quiet: the frames held back go now."""
        out, inn = self._held["out"], self._held["in"]
        self._held = {"out": None, "in": None}
        if out is not None:
            self.inner.write(out + b"\0")
        if inn is not None:
            self._frames.append(inn)
        return out is not None or inn is not None

    def read_frame(self, timeout: float) -> bytes:
        end = time.monotonic() + timeout
        while not self._frames:
            held = self._held["out"] is not None or self._held["in"] is not None
            left = max(end - time.monotonic(), 0.0)
            try:
                raw = self.inner.read_frame(min(left, 0.002) if held else left)
            except LinkTimeout:
                if self._release():
                    continue
                if time.monotonic() >= end:
                    raise
                continue
            self._frames.extend(self._reorder(self._mangle(raw, "in"), "in"))
        return self._frames.popleft()

    def close(self) -> None:
        self.inner.close()
