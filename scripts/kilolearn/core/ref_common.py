"""What both numpy trainers share (kilolearn.core.reference): the window geometry of
convolutions and pools, which tensors backprop needs, the active-class mask."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .model import Graph, Op

# --------------------------------------------------------------------------- geometry

#: every name here, the private helpers too: `reference` re-exports them all
__all__ = ["_active", "_max_route", "col2im", "first_op_after", "loss_target", "masked_argmax",
           "needs_grad", "patches", "predicted", "train_in_order"]


def patches(x: np.ndarray, op: Op, pad_value: float | int = 0) -> np.ndarray:
    """(Ho, Wo, kh, kw, C) windows of an (H, W, C) tensor under op's kernel/stride/padding."""
    kh, kw = op.kernel
    t, left, b, r = op.pad
    xp = np.pad(x, ((t, b), (left, r), (0, 0)), constant_values=pad_value)
    ho = (xp.shape[0] - kh) // op.stride + 1
    wo = (xp.shape[1] - kw) // op.stride + 1
    s = op.stride
    out = np.empty((ho, wo, kh, kw, x.shape[2]), x.dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i, j, :] = xp[i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s, :]
    return out


def col2im(dp: np.ndarray, shape: tuple[int, int, int], op: Op) -> np.ndarray:
    """Adjoint of patches(): sum window gradients (Ho, Wo, kh, kw, C) back into (H, W, C)."""
    kh, kw = op.kernel
    t, left, b, r = op.pad
    h, w, c = shape
    s = op.stride
    ho, wo = dp.shape[:2]
    acc = np.zeros((h + t + b, w + left + r, c), dp.dtype)
    for i in range(kh):
        for j in range(kw):
            acc[i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s, :] += dp[:, :, i, j, :]
    return acc[t:t + h, left:left + w, :]


def _max_route(pt: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Window gradients of max pooling: dy to the first maximum of each window."""
    ho, wo, kh, kw, c = pt.shape
    flat = pt.reshape(ho, wo, kh * kw, c)
    first = np.argmax(flat, axis=2)  # argmax returns the first maximum
    out = np.zeros((ho, wo, kh * kw, c), dy.dtype)
    np.put_along_axis(out, first[:, :, None, :], dy[:, :, None, :], axis=2)
    return out.reshape(pt.shape)


# --------------------------------------------------------------------------- graph, classes


def needs_grad(g: Graph) -> list[bool]:
    """Per tensor: does backprop need its gradient (a trainable op at or before it)."""
    need = [False] * len(g.shapes)
    for op in g.ops:
        need[op.output] = op.trainable or any(need[t] for t in op.inputs)
    return need


def first_op_after(g: Graph, t: int) -> int:
    """Index of the first op after the producer of tensor t (0 for the input)."""
    for i, op in enumerate(g.ops):
        if op.output == t:
            return i + 1
    return 0


def _active(mask: np.ndarray | None, n: int, label: int) -> np.ndarray:
    a = np.ones(n, bool) if mask is None else np.asarray(mask, bool).copy()
    a[label] = True
    return a


class _Trainer(Protocol):
    def step(self, x: np.ndarray, label: int, /) -> object: ...


def train_in_order(trainer: _Trainer, x: np.ndarray, y: np.ndarray, epochs: int) -> None:
    """``epochs`` passes over the samples in their order, one step each: the fused training of
    a job on the device (kilolearn.device.job), on either trainer."""
    for _ in range(epochs):
        for i in range(len(x)):
            trainer.step(x[i], int(y[i]))


def masked_argmax(v: np.ndarray, mask: np.ndarray | None) -> int:
    """First maximum among the active classes (all when mask is None)."""
    if mask is None:
        return int(np.argmax(v))
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return 0
    return int(idx[np.argmax(v[idx])])


def predicted(v: np.ndarray, zero: float | int, mask: np.ndarray | None) -> int:
    """The engine's prediction (kl_predicted): one output (a sigmoid) -> its sign against the
    zero point, else the first maximum among the active classes."""
    if v.size == 1:
        return int(v[0] > zero)
    return masked_argmax(v, mask)


def loss_target(g: Graph, x: np.ndarray, label: int, target: np.ndarray | None
                ) -> np.ndarray | None:
    """The target of a step as the engine takes it (kl_train_step_target / kl_train_step): the
    given one; else MSE: the input (an autoencoder), sigmoid BCE: onehot(label) (with one
    output: the label itself); softmax CE: None (it uses the label)."""
    if target is not None or g.loss == "softmax_ce":
        return target
    if g.loss == "mse":
        if g.n_inputs != g.n_classes:
            raise ValueError("MSE without a target needs as many outputs as inputs")
        return np.asarray(x).reshape(-1)
    n = g.n_classes
    return np.array([label != 0], np.int64) if n == 1 else (np.arange(n) == label).astype(
        np.int64)
