"""numpy reference of kilolearn training: float32 and int8 fully quantized (FQT).

The int8 trainer reproduces the C engine bit for bit (same integer operations, same order of the
update dither); the float32 trainer reproduces it to rounding. Batch size 1, plain SGD or SGD with
momentum, as the engine does it on the device. See docs/int8-training.md for the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import quant as q
from .model import FusedDense, Params

# --------------------------------------------------------------------------- float32


class F32Trainer:
    def __init__(self, layers: list[FusedDense], params: Params, lr: float = 0.05,
                 momentum: float = 0.0):
        self.layers = layers
        self.p = params.copy()
        self.lr = np.float32(lr)
        self.mu = np.float32(momentum)
        self.vw = [np.zeros_like(w) for w in self.p.weights] if momentum else None
        self.vb = [np.zeros_like(b) for b in self.p.biases] if momentum else None

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        """Activations [x, y1, ..., logits] for one sample (float32)."""
        acts = [np.asarray(x, np.float32)]
        for f, w, b in zip(self.layers, self.p.weights, self.p.biases, strict=True):
            y = w @ acts[-1] + b
            if f.relu:
                y = np.maximum(y, np.float32(0))
            acts.append(y.astype(np.float32))
        return acts

    def grads(self, x: np.ndarray, label: int) -> tuple[list[np.ndarray], list[np.ndarray], float]:
        """(dW per layer, db per layer, loss) for one sample; frozen layers get zeros."""
        acts = self.forward(x)
        z = acts[-1].astype(np.float64)
        e = np.exp(z - z.max())
        p = e / e.sum()
        loss = float(-np.log(max(p[label], 1e-30)))
        dy = p.astype(np.float32)
        dy[label] -= np.float32(1)
        dws: list[np.ndarray] = [np.zeros(0)] * len(self.layers)
        dbs: list[np.ndarray] = [np.zeros(0)] * len(self.layers)
        for i in range(len(self.layers) - 1, -1, -1):
            f = self.layers[i]
            if f.relu:
                dy = np.where(acts[i + 1] > 0, dy, np.float32(0)).astype(np.float32)
            dws[i] = np.outer(dy, acts[i]).astype(np.float32) if f.trainable else \
                np.zeros_like(self.p.weights[i])
            dbs[i] = dy.copy() if f.trainable else np.zeros_like(self.p.biases[i])
            if i > 0:
                dy = (self.p.weights[i].T @ dy).astype(np.float32)
        return dws, dbs, loss

    def apply(self, dws: list[np.ndarray], dbs: list[np.ndarray]) -> None:
        for i, f in enumerate(self.layers):
            if not f.trainable:
                continue
            gw, gb = dws[i], dbs[i]
            if self.vw is not None and self.vb is not None:
                self.vw[i] = self.mu * self.vw[i] + gw
                self.vb[i] = self.mu * self.vb[i] + gb
                gw, gb = self.vw[i], self.vb[i]
            self.p.weights[i] -= self.lr * gw
            self.p.biases[i] -= self.lr * gb

    def step(self, x: np.ndarray, label: int) -> float:
        dws, dbs, loss = self.grads(x, label)
        self.apply(dws, dbs)
        return loss

    def predict(self, xs: np.ndarray) -> np.ndarray:
        h = np.asarray(xs, np.float32)
        for f, w, b in zip(self.layers, self.p.weights, self.p.biases, strict=True):
            h = h @ w.T + b
            if f.relu:
                h = np.maximum(h, 0)
        return np.argmax(h, axis=1)


# --------------------------------------------------------------------------- int8 FQT


@dataclass
class QLayer:
    spec: FusedDense
    w: np.ndarray  # int8 values (held as int64), shape (n_out, n_in)
    b: np.ndarray  # int32 values (held as int64), scale 2**eb
    ew: int  # weight exponent
    eb: int  # bias exponent
    ey: int  # output exponent (dynamic: grows when the output saturates)
    zy: int  # output zero point (-128 after ReLU, 0 otherwise)


@dataclass
class QModel:
    """An int8 model: what the blob holds for dtype s8 and what the engine trains."""

    layers: list[QLayer]
    ex: int  # input exponent
    zx: int  # input zero point
    lut_exp: int  # exponent the softmax table was built for
    lut: np.ndarray = field(default_factory=lambda: np.zeros(256, np.uint16))

    def copy(self) -> QModel:
        return QModel(
            [QLayer(L.spec, L.w.copy(), L.b.copy(), L.ew, L.eb, L.ey, L.zy) for L in self.layers],
            self.ex, self.zx, self.lut_exp, self.lut.copy())

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """float inputs -> int8 with the model's input scale (host side, before streaming)."""
        v = np.round(np.asarray(x, np.float64) / 2.0**self.ex) + self.zx
        return np.clip(v, q.INT8_MIN, q.INT8_MAX).astype(np.int8)


WEIGHT_HEADROOM = 2.0  # initial weights use half the int8 range, leaving room to grow
BIAS_EXTRA_BITS = 8  # bias resolution finer than the accumulator's by this many bits


def quantize_model(layers: list[FusedDense], params: Params, calib: np.ndarray) -> QModel:
    """Float model + calibration inputs -> int8 model with power-of-two scales.

    Activation exponents come from the float model's ranges on ``calib``; during training they
    grow when an output saturates (delayed dynamic scaling)."""
    calib = np.asarray(calib, np.float32)
    ex = q.exp_for_range(float(calib.max()), 255) if calib.min() >= 0 else \
        q.exp_for_range(float(np.abs(calib).max()), 127)
    zx = -128 if calib.min() >= 0 else 0
    h, e_in = calib, ex
    out: list[QLayer] = []
    for f, w, b in zip(layers, params.weights, params.biases, strict=True):
        ew = q.exp_for_range(float(np.abs(w).max()) * WEIGHT_HEADROOM, 127)
        wq = q.sat8(np.round(w.astype(np.float64) / 2.0**ew).astype(np.int64))
        wq = np.clip(wq, -127, 127)
        eb = e_in + ew - BIAS_EXTRA_BITS
        bq = np.clip(np.round(b.astype(np.float64) / 2.0**eb), q.INT32_MIN, q.INT32_MAX)
        h = h @ w.T + b
        if f.relu:
            h = np.maximum(h, 0)
            ey, zy = q.exp_for_range(float(h.max()), 255), -128
        else:
            ey, zy = q.exp_for_range(float(np.abs(h).max()), 127), 0
        out.append(QLayer(f, wq, bq.astype(np.int64), ew, eb, ey, zy))
        e_in = ey
    lut_exp = out[-1].ey
    return QModel(out, ex, zx, lut_exp, q.softmax_lut(lut_exp))


EXP_MAX = 30  # largest exponent the blob format allows


@dataclass
class QGrad:
    gw: np.ndarray
    gw_exp: int
    gb: np.ndarray
    gb_exp: int


@dataclass
class QForward:
    acts: list[np.ndarray]  # int8 activations (int64 arrays): input, then each layer's output
    exps: list[int]  # exponent of each activation
    zps: list[int]
    sat: list[bool]  # per layer: did an output saturate


class S8Trainer:
    """Bit-exact numpy model of the engine's int8 training (batch 1)."""

    def __init__(self, qm: QModel, lr: float = 0.05, momentum: float = 0.0, seed: int = 1):
        if momentum:
            raise NotImplementedError("int8 training with momentum is not implemented yet")
        self.m = qm.copy()
        self.lr_q = q.quantize_lr(lr)
        self.dither = seed & 0xFFFFFFFF

    # forward -----------------------------------------------------------------------------
    def forward(self, xq: np.ndarray) -> QForward:
        m = self.m
        x = np.asarray(xq, np.int64)
        fw = QForward([x], [m.ex], [m.zx], [])
        for L in m.layers:
            xe, xz = fw.exps[-1], fw.zps[-1]
            acc = np.clip(L.w @ (fw.acts[-1] - xz) + q.rshift_round(L.b, xe + L.ew - L.eb),
                          q.INT32_MIN, q.INT32_MAX)
            r = q.rshift_round(acc, L.ey - xe - L.ew)
            lo = 0 if L.spec.relu else q.INT8_MIN - L.zy
            hi = q.INT8_MAX - L.zy
            fw.sat.append(bool(np.any(r > hi) or (not L.spec.relu and np.any(r < lo))))
            fw.acts.append(np.clip(r, lo, hi) + L.zy)
            fw.exps.append(L.ey)
            fw.zps.append(L.zy)
        return fw

    def logits_grad(self, logits: np.ndarray, label: int) -> tuple[np.ndarray, int]:
        """Softmax-CE gradient of int8 logits: (int8 values, exponent)."""
        m = self.m
        gap = logits.max() - logits
        d = np.where(gap == 0, 0, gap << min(m.layers[-1].ey - m.lut_exp, 8))
        t = np.where(d < 256, m.lut[np.minimum(d, 255)].astype(np.int64), 0)
        s = int(t.sum())
        g = ((t << 15) + (s >> 1)) // s
        g[label] -= 1 << 15
        return q.quantize_grad(g, -15)

    # backward + update ---------------------------------------------------------------------
    def grads(self, xq: np.ndarray, label: int) -> list[QGrad | None]:
        """Forward + backward of one sample; per layer the kept gradients (None if frozen):
        gw = dy (x - zp) as int32 with exponent ey + ex, gb = int8 dy with exponent ey."""
        m = self.m
        fw = self._fw = self.forward(xq)
        dy, ey = self.logits_grad(fw.acts[-1], label)
        self.logits_grad_exp = ey
        first = next((i for i, L in enumerate(m.layers) if L.spec.trainable), len(m.layers))
        out: list[QGrad | None] = [None] * len(m.layers)
        for i in range(len(m.layers) - 1, first - 1, -1):
            L = m.layers[i]
            x, xe, xz = fw.acts[i], fw.exps[i], fw.zps[i]
            if L.spec.relu:
                dy = np.where(fw.acts[i + 1] > L.zy, dy, 0)
            if L.spec.trainable:
                out[i] = QGrad(np.outer(dy, x - xz), ey + xe, dy.copy(), ey)
            if i > first:
                acc = L.w.T @ dy
                prev = m.layers[i - 1]
                if prev.spec.relu:  # mask before choosing the scale: finer gradients
                    acc = np.where(fw.acts[i] > prev.zy, acc, 0)
                dy, ey = q.quantize_grad(acc, L.ew + ey)
        return out

    def apply(self, grads: list[QGrad | None]) -> None:
        """SGD update from grads(), last layer first (the order of the update dither), then
        the delayed range adaptation of saturated outputs."""
        for L, g in zip(reversed(self.m.layers), reversed(grads), strict=True):
            if g is None:
                continue
            n = L.w.size
            sh = L.ew + q.LR_FRAC_BITS - g.gw_exp
            dither = q.weyl_offsets(self.dither, n).reshape(L.w.shape)
            step = np.clip(q.stochastic_shift(g.gw * self.lr_q, sh, dither), -128, 127)
            L.w = np.clip(L.w - step, -127, 127)
            self.dither = q.weyl_advance(self.dither, n)
            db = q.rshift_round(g.gb * self.lr_q, L.eb + q.LR_FRAC_BITS - g.gb_exp)
            L.b = np.clip(L.b - db, q.INT32_MIN, q.INT32_MAX)
        for L, sat in zip(self.m.layers, self._fw.sat, strict=True):
            if sat and L.ey < EXP_MAX:
                L.ey += 1

    def step(self, xq: np.ndarray, label: int) -> None:
        """One SGD step (the engine's fused kl_train_step computes the same integers)."""
        self.apply(self.grads(xq, label))

    def predict(self, xq: np.ndarray) -> np.ndarray:
        """Batched inference (same integers as forward())."""
        m = self.m
        h = np.asarray(xq, np.int64)
        xe, xz = m.ex, m.zx
        for L in m.layers:
            acc = np.clip((h - xz) @ L.w.T + q.rshift_round(L.b, xe + L.ew - L.eb),
                          q.INT32_MIN, q.INT32_MAX)
            r = q.rshift_round(acc, L.ey - xe - L.ew)
            lo = 0 if L.spec.relu else q.INT8_MIN - L.zy
            h = np.clip(r, lo, q.INT8_MAX - L.zy) + L.zy
            xe, xz = L.ey, L.zy
        return np.argmax(h, axis=1)
