"""Domain shifts for the adaptation example (``kilolearn example-data``): what a deployed
sensor may do to the data a model was trained on. Each maps images (n, H, W) in [0, 1] to
images of the same shape and range."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def translate(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The sensor moved: every image one pixel to the right (the left column dark)."""
    out = np.zeros_like(im)
    out[:, :, 1:] = im[:, :, :-1]
    return out


def gain(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lower gain and a raised black level: 0.45 x + 0.3."""
    return np.clip(0.45 * im + 0.3, 0.0, 1.0)


def blur(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Defocus: a 3x3 box blur, brightened x2 to keep the contrast."""
    h, w = im.shape[1:]
    p = np.pad(im, ((0, 0), (1, 1), (1, 1)))
    out = sum(p[:, a:a + h, b:b + w] for a in range(3) for b in range(3)) / 9.0
    return np.clip(2.0 * out, 0.0, 1.0)


def noise(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A noisy sensor: Gaussian noise of sigma 0.25."""
    return np.clip(im + rng.normal(0.0, 0.25, im.shape), 0.0, 1.0)


SHIFTS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "translate": translate, "gain": gain, "blur": blur, "noise": noise}


def apply(name: str, x: np.ndarray, side: int, seed: int = 0) -> np.ndarray:
    """Flat samples (n, side*side) shifted by ``name``, flat again, float32."""
    im = x.reshape(len(x), side, side).astype(np.float64)
    out = SHIFTS[name](im, np.random.default_rng(seed))
    return out.reshape(len(x), -1).astype(np.float32)
