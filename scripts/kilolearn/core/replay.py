"""Latent replay, the numpy twin of modules/kilolearn/src/kl_replay.c (same generator, same
choices, so the device and the reference keep the very same latents)."""

from __future__ import annotations

import numpy as np

MASK32 = 0xFFFFFFFF


def xorshift32(x: int) -> int:
    """The next state of the engine's generator (kl_xorshift32: shifts 13, 17, 5)."""
    x ^= (x << 13) & MASK32
    x ^= x >> 17
    x ^= (x << 5) & MASK32
    return x


class ReplayBuffer:
    """Class-balanced reservoir of latents (Chrysakis & Moens 2020), xorshift32-driven."""

    def __init__(self, cap: int, n_classes: int, seed: int):
        self.cap = cap
        self.n_classes = n_classes
        self.rng = seed & MASK32 or 0x2545F491
        self.latents: list[np.ndarray] = []
        self.labels: list[int] = []
        self.stored = [0] * n_classes
        self.seen = [0] * n_classes

    def rand(self) -> int:
        self.rng = xorshift32(self.rng)
        return self.rng

    def _nth_of_class(self, c: int, j: int) -> int:
        for k, lab in enumerate(self.labels):
            if lab == c:
                if j == 0:
                    return k
                j -= 1
        raise AssertionError("class count out of step")

    def add(self, latent: np.ndarray, label: int) -> int:
        """Offer a latent; returns the slot written or -1."""
        if not 0 <= label < self.n_classes or self.cap == 0:
            return -1
        self.seen[label] += 1
        if len(self.labels) < self.cap:
            self.latents.append(np.array(latent))
            self.labels.append(label)
            self.stored[label] += 1
            return len(self.labels) - 1
        big = int(np.argmax(self.stored))  # first of the largest
        if self.stored[label] < self.stored[big]:
            slot = self._nth_of_class(big, self.rand() % self.stored[big])
        else:
            u = self.rand() % self.seen[label]
            if u >= self.stored[label]:
                return -1
            slot = self._nth_of_class(label, u)
        self.stored[self.labels[slot]] -= 1
        self.latents[slot] = np.array(latent)
        self.labels[slot] = label
        self.stored[label] += 1
        return slot

    def pick(self) -> int:
        return -1 if not self.labels else self.rand() % len(self.labels)
