"""The sample buffer of on-device epochs, the numpy twin of modules/kilolearn/src/kl_samples.c:
the most recent ``cap`` labelled samples in a ring, each epoch visited in a Fisher-Yates order
drawn from the engine's xorshift32, so the device and the reference train on the very same
sequence."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .replay import MASK32, xorshift32

#: the session seeds its sample buffer with the CONFIG seed ^ this (kl_session_model.c)
SESSION_SEED_XOR = 0x7F4A7C15


class SampleBuffer:
    """Ring of the ``cap`` most recent (sample, label) pairs; ``epoch()`` yields them shuffled."""

    def __init__(self, cap: int, seed: int):
        if cap < 1:
            raise ValueError(f"a sample buffer holds at least 1 sample, not {cap}")
        self.cap = cap
        self.rng = seed & MASK32 or 0x2545F491
        self.samples: list[np.ndarray] = []
        self.labels: list[int] = []
        self.next = 0  # the oldest slot once full

    def add(self, x: np.ndarray, label: int) -> None:
        if len(self.samples) < self.cap:
            self.samples.append(np.array(x, copy=True))
            self.labels.append(int(label))
            return
        self.samples[self.next] = np.array(x, copy=True)
        self.labels[self.next] = int(label)
        self.next = (self.next + 1) % self.cap

    def order(self) -> list[int]:
        """A new epoch's visiting order (kl_samples_shuffle)."""
        order = list(range(len(self.samples)))
        for i in range(len(order), 1, -1):
            self.rng = xorshift32(self.rng)
            j = self.rng % i
            order[i - 1], order[j] = order[j], order[i - 1]
        return order

    def epoch(self) -> Iterator[tuple[np.ndarray, int]]:
        for k in self.order():
            yield self.samples[k], self.labels[k]

    def __len__(self) -> int:
        return len(self.samples)
