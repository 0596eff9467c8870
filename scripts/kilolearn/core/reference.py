"""numpy reference of kilolearn training: float32 and int8 fully quantized (FQT).

The int8 trainer reproduces the C engine bit for bit (same integer operations, same order of the
update dither); the float32 trainer reproduces it to rounding. Batch size 1, plain SGD (or SGD
with momentum in float32), as the engine does it on the device. docs/int8-training.md specifies
the int8 arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import quant as q
from . import selective as sel
from .model import Graph, Op, Params

# --------------------------------------------------------------------------- geometry


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


def needs_grad(g: Graph) -> list[bool]:
    """Per tensor: does backprop need its gradient (a trainable op at or before it)."""
    need = [False] * len(g.shapes)
    for op in g.ops:
        need[op.output] = op.trainable or any(need[t] for t in op.inputs)
    return need


def _act_f32(y: np.ndarray, act: str) -> np.ndarray:
    if act == "relu":
        return np.maximum(y, np.float32(0))
    if act == "relu6":
        return np.clip(y, np.float32(0), np.float32(6))
    return y


def _mask_f32(y: np.ndarray, act: str) -> np.ndarray:
    if act == "relu":
        return y > 0
    if act == "relu6":
        return (y > 0) & (y < 6)
    return np.ones(y.shape, bool)


# --------------------------------------------------------------------------- float32


class F32Trainer:
    def __init__(self, graph: Graph, params: Params, lr: float = 0.05, momentum: float = 0.0):
        self.g = graph
        self.p = params.copy()
        self.lr = np.float32(lr)
        self.mu = np.float32(momentum)
        self.need = needs_grad(graph)
        self.vw = [None if w is None else np.zeros_like(w) for w in self.p.weights]
        self.vb = [None if b is None else np.zeros_like(b) for b in self.p.biases]
        self.class_mask: np.ndarray | None = None  # active classes (bool), None = all
        self.set_update_policy("all")

    def set_update_policy(self, policy: str | int, fraction: float | None = None,
                          permille: int | None = None) -> None:
        """kl_model_set_update_policy: a selective-update policy and the fraction updated
        (docs/selective-updates.md); restarts the step count."""
        self.policy = sel.policy_id(policy)
        if self.policy and self.mu:
            raise NotImplementedError("selective updates with momentum")
        self.pm = sel.FRAC_ONE if not self.policy else (
            permille if permille is not None else sel.permille(fraction or 1.0))
        self.upd_step = 0
        self.upd_touched = 0
        self.upd_weights = 0

    def forward(self, x: np.ndarray, start: int | None = None) -> list[np.ndarray]:
        """Activations by tensor id, each (H, W, C) float32; from tensor ``start`` (given x
        as its activations) when set."""
        g = self.g
        acts: list[np.ndarray] = [np.zeros(0, np.float32)] * len(g.shapes)
        t0 = g.input if start is None else start
        acts[t0] = np.asarray(x, np.float32).reshape(g.shapes[t0])
        first = first_op_after(g, t0)
        for i, op in enumerate(g.ops):
            if i < first:
                continue
            x0 = acts[op.inputs[0]]
            w, b = self.p.weights[i], self.p.biases[i]
            if op.kind == "dense":
                y = w @ x0.reshape(-1) + b
            elif op.kind == "conv":
                pt = patches(x0, op)
                y = pt.reshape(pt.shape[0], pt.shape[1], -1) @ w.reshape(w.shape[0], -1).T + b
            elif op.kind == "dwconv":
                y = np.einsum("hwijc,ijc->hwc", patches(x0, op), w) + b
            elif op.kind == "avgpool":
                y = patches(x0, op).mean(axis=(2, 3))
            elif op.kind == "maxpool":
                y = patches(x0, op).max(axis=(2, 3))
            else:  # add
                y = x0 + acts[op.inputs[1]]
            acts[op.output] = _act_f32(y.astype(np.float32), op.act).reshape(g.shapes[op.output])
        return acts

    def grads(self, x: np.ndarray, label: int, start: int | None = None
              ) -> tuple[list[np.ndarray | None], list[np.ndarray | None], float]:
        """(dW by op, db by op, loss) for one sample; None where nothing trains."""
        g = self.g
        acts = self.forward(x, start)
        z = acts[g.output].reshape(-1).astype(np.float64)
        active = _active(self.class_mask, z.size, label)
        e = np.where(active, np.exp(z - z[active].max()), 0.0)
        p = e / e.sum()
        loss = float(-np.log(max(p[label], 1e-30)))
        dz = p.astype(np.float32)
        dz[label] -= np.float32(1)
        grad: dict[int, np.ndarray] = {g.output: dz.reshape(g.shapes[g.output])}
        dws: list[np.ndarray | None] = [None] * len(g.ops)
        dbs: list[np.ndarray | None] = [None] * len(g.ops)

        def give(t: int, v: np.ndarray) -> None:
            if self.need[t] or t == g.output:
                v = v.astype(np.float32).reshape(g.shapes[t])
                grad[t] = v if t not in grad else (grad[t] + v).astype(np.float32)

        for i in range(len(g.ops) - 1, -1, -1):
            op = g.ops[i]
            if op.output not in grad:
                continue
            dy = np.where(_mask_f32(acts[op.output], op.act), grad[op.output],
                          np.float32(0)).astype(np.float32)
            if self._channel_sparse(op):
                dy = sel.channel_mask_dy(dy, op.kind, self.pm, self.upd_step)[0]
            x0 = acts[op.inputs[0]]
            w = self.p.weights[i]
            if op.kind == "dense":
                d = dy.reshape(-1)
                if op.trainable:
                    dws[i] = np.outer(d, x0.reshape(-1)).astype(np.float32)
                    dbs[i] = d.copy()
                if self.need[op.inputs[0]]:
                    give(op.inputs[0], w.T @ d)
            elif op.kind == "conv":
                pt = patches(x0, op)
                P = pt.shape[0] * pt.shape[1]
                d = dy.reshape(P, -1)
                if op.trainable:
                    dws[i] = (d.T @ pt.reshape(P, -1)).reshape(w.shape).astype(np.float32)
                    dbs[i] = d.sum(axis=0).astype(np.float32)
                if self.need[op.inputs[0]]:
                    dp = (d @ w.reshape(w.shape[0], -1)).reshape(pt.shape)
                    give(op.inputs[0], col2im(dp, x0.shape, op))
            elif op.kind == "dwconv":
                pt = patches(x0, op)
                if op.trainable:
                    dws[i] = np.einsum("hwijc,hwc->ijc", pt, dy).astype(np.float32)
                    dbs[i] = dy.sum(axis=(0, 1)).astype(np.float32)
                if self.need[op.inputs[0]]:
                    dp = dy[:, :, None, None, :] * w[None, None]
                    give(op.inputs[0], col2im(dp, x0.shape, op))
            elif op.kind == "avgpool":
                if self.need[op.inputs[0]]:
                    kh, kw = op.kernel
                    dp = np.broadcast_to((dy / np.float32(kh * kw))[:, :, None, None, :],
                                         dy.shape[:2] + (kh, kw, dy.shape[2]))
                    give(op.inputs[0], col2im(np.ascontiguousarray(dp), x0.shape, op))
            elif op.kind == "maxpool":
                if self.need[op.inputs[0]]:
                    give(op.inputs[0], col2im(_max_route(patches(x0, op), dy), x0.shape, op))
            else:  # add
                for t in op.inputs:
                    if self.need[t]:
                        give(t, dy)
            if op.bias_only:
                dws[i] = None  # the weights stay frozen
        return dws, dbs, loss

    def _channel_sparse(self, op: Op) -> bool:
        return self.policy == sel.POLICIES["channel-sparse"] and op.trainable and \
            not op.bias_only and op.kind in ("dense", "conv") and op.output != self.g.output

    def apply(self, dws: list[np.ndarray | None], dbs: list[np.ndarray | None]) -> None:
        for i, op in enumerate(self.g.ops):
            gw, gb = dws[i], dbs[i]
            if not op.trainable or gb is None:
                continue
            if gw is not None and self.policy:
                self._apply_selected(i, op, gw, gb)
                continue
            if gw is not None:
                self.upd_touched += gw.size
                self.upd_weights += gw.size
            if self.mu:
                if gw is not None:
                    self.vw[i] = self.mu * self.vw[i] + gw
                    gw = self.vw[i]
                self.vb[i] = self.mu * self.vb[i] + gb
                gb = self.vb[i]
            if gw is not None:
                self.p.weights[i] -= self.lr * gw
            self.p.biases[i] -= self.lr * gb
        self.upd_step += 1

    def _apply_selected(self, i: int, op: Op, gw: np.ndarray, gb: np.ndarray) -> None:
        n = gw.size
        n_ch = gb.size
        self.upd_weights += n
        if self.policy == sel.POLICIES["topr"]:
            delta = (self.lr * gw).astype(np.float32)
            keys = np.abs(delta).view(np.uint32)
            chosen = sel.top_r(keys, sel.count(n, self.pm)) & (keys > 0)
            self.p.weights[i] = np.where(chosen, self.p.weights[i] - delta,
                                         self.p.weights[i]).astype(np.float32)
            self.p.biases[i] -= self.lr * gb
            self.upd_touched += int(chosen.sum())
            return
        k = sel.count(n_ch, self.pm)
        ax = sel.channel_axis(op.kind)
        if self.policy == sel.POLICIES["channel-norm"]:
            g64 = np.moveaxis(gw.astype(np.float64), ax, 0).reshape(n_ch, -1)
            scores = [float(gb[c]) ** 2 + float(np.sum(g64[c] ** 2)) for c in range(n_ch)]
            keep = sel.top_channels(scores, k)
            shape = [1] * gw.ndim
            shape[ax] = n_ch
            gw = np.where(keep.reshape(shape), gw, np.float32(0)).astype(np.float32)
            gb = np.where(keep, gb, np.float32(0)).astype(np.float32)
        self.p.weights[i] -= self.lr * gw
        self.p.biases[i] -= self.lr * gb
        sparse = self.policy == sel.POLICIES["channel-norm"] or self._channel_sparse(op)
        self.upd_touched += k * (n // n_ch) if sparse else n

    def step(self, x: np.ndarray, label: int, start: int | None = None) -> float:
        dws, dbs, loss = self.grads(x, label, start)
        self.apply(dws, dbs)
        return loss

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)[self.g.output].reshape(-1)

    def predict(self, xs: np.ndarray) -> np.ndarray:
        return np.array([masked_argmax(self.logits(x), self.class_mask) for x in xs])


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


def masked_argmax(v: np.ndarray, mask: np.ndarray | None) -> int:
    """First maximum among the active classes (all when mask is None)."""
    if mask is None:
        return int(np.argmax(v))
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return 0
    return int(idx[np.argmax(v[idx])])


def _max_route(pt: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Window gradients of max pooling: dy to the first maximum of each window."""
    ho, wo, kh, kw, c = pt.shape
    flat = pt.reshape(ho, wo, kh * kw, c)
    first = np.argmax(flat, axis=2)  # argmax returns the first maximum
    out = np.zeros((ho, wo, kh * kw, c), dy.dtype)
    np.put_along_axis(out, first[:, :, None, :], dy[:, :, None, :], axis=2)
    return out.reshape(pt.shape)


# --------------------------------------------------------------------------- int8 FQT


@dataclass
class QModel:
    """An int8 model: what the blob holds for dtype s8 and what the engine trains."""

    graph: Graph
    w: list[np.ndarray | None]  # int8 values held as int64
    b: list[np.ndarray | None]  # int32 values held as int64
    ew: list[int]  # weight exponent per op (0 where none)
    eb: list[int]  # bias exponent per op
    exp: list[int]  # tensor exponents (dynamic: grow when an op's output saturates)
    zp: list[int]  # tensor zero points
    lut_exp: int
    lut: np.ndarray = field(default_factory=lambda: np.zeros(256, np.uint16))

    def copy(self) -> QModel:
        return QModel(self.graph, [None if a is None else a.copy() for a in self.w],
                      [None if a is None else a.copy() for a in self.b], list(self.ew),
                      list(self.eb), list(self.exp), list(self.zp), self.lut_exp, self.lut.copy())

    @property
    def ex(self) -> int:
        return self.exp[self.graph.input]

    @property
    def zx(self) -> int:
        return self.zp[self.graph.input]

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """float inputs -> int8 with the model's input scale (host side, before streaming)."""
        v = np.round(np.asarray(x, np.float64) / 2.0**self.ex) + self.zx
        return np.clip(v, q.INT8_MIN, q.INT8_MAX).astype(np.int8)


WEIGHT_HEADROOM = 2.0  # initial weights use half the int8 range, leaving room to grow
BIAS_EXTRA_BITS = 8  # bias resolution finer than the accumulator's by this many bits
EXP_MAX = 30  # largest exponent the blob format allows
ADD_SHIFT_MAX = 21  # an Add aligns its inputs by at most this many bits (int32 headroom)


def quantize_model(graph: Graph, params: Params, calib: np.ndarray) -> QModel:
    """Float model + calibration inputs -> int8 model with power-of-two scales.

    Activation exponents come from the float model's ranges on ``calib``; during training they
    grow when an output saturates (delayed dynamic scaling)."""
    calib = np.asarray(calib, np.float32).reshape((-1,) + graph.shapes[graph.input])
    f32 = F32Trainer(graph, params)
    lo = np.full(len(graph.shapes), np.inf)
    hi = np.full(len(graph.shapes), -np.inf)
    for x in calib:
        for t, a in enumerate(f32.forward(x)):
            if a.size:
                lo[t] = min(lo[t], float(a.min()))
                hi[t] = max(hi[t], float(a.max()))
    exp = [0] * len(graph.shapes)
    zp = [0] * len(graph.shapes)

    def set_range(t: int, nonneg: bool) -> None:
        if nonneg:
            exp[t], zp[t] = q.exp_for_range(float(hi[t]), 255), -128
        else:
            exp[t], zp[t] = q.exp_for_range(float(max(abs(lo[t]), abs(hi[t]))), 127), 0

    set_range(graph.input, lo[graph.input] >= 0)
    n = len(graph.ops)
    w: list[np.ndarray | None] = [None] * n
    b: list[np.ndarray | None] = [None] * n
    ew, eb = [0] * n, [0] * n
    for i, op in enumerate(graph.ops):
        if op.kind in ("avgpool", "maxpool"):
            exp[op.output], zp[op.output] = exp[op.inputs[0]], zp[op.inputs[0]]
            continue
        set_range(op.output, op.act != "none")
        if op.has_params:
            wf, bf = params.weights[i], params.biases[i]
            assert wf is not None and bf is not None
            ew[i] = q.exp_for_range(float(np.abs(wf).max()) * WEIGHT_HEADROOM, 127)
            w[i] = np.clip(np.round(wf.astype(np.float64) / 2.0**ew[i]), -127, 127).astype(np.int64)
            eb[i] = exp[op.inputs[0]] + ew[i] - BIAS_EXTRA_BITS
            b[i] = np.clip(np.round(bf.astype(np.float64) / 2.0**eb[i]), q.INT32_MIN,
                           q.INT32_MAX).astype(np.int64)
    lut_exp = exp[graph.output]
    return QModel(graph, w, b, ew, eb, exp, zp, lut_exp, q.softmax_lut(lut_exp))


def relu6_q(ey: int) -> int:
    """6.0 in units of 2**ey (saturating)."""
    return int(q.rshift_round(np.array(6), ey))


def requant_out(acc: np.ndarray, shift: int, zy: int, act: str, ey: int, single: bool = False
                ) -> tuple[np.ndarray, bool]:
    """int32 accumulators -> int8 outputs of an op; (values, saturated). Rounds as TFLite and
    CMSIS-NN do (quant.requant_shift); ``single``: one rounding half away from zero, which is
    what TFLite's ADD amounts to (its 2^20 headroom makes the first rounding exact)."""
    r = q.rshift_round(acc, shift) if single else q.requant_shift(acc, shift)
    hi_range = q.INT8_MAX - zy
    lo = 0 if act != "none" else q.INT8_MIN - zy
    hi = hi_range
    sat = bool(np.any(r >= hi_range))  # an output at the top of the int8 range
    if act == "relu6":
        q6 = relu6_q(ey)
        hi = min(q6, hi_range)
        sat = sat and q6 > hi_range
    if act == "none":
        sat = sat or bool(np.any(r <= lo))  # or at its bottom, without an activation
    return np.clip(r, lo, hi) + zy, sat


def act_mask_q(y: np.ndarray, act: str, zy: int, ey: int) -> np.ndarray:
    if act == "relu":
        return y > zy
    if act == "relu6":
        return (y > zy) & (y - zy < relu6_q(ey))
    return np.ones(y.shape, bool)


def avg_div(s: np.ndarray, count: int) -> np.ndarray:
    """sum / count rounded half away from zero (integer)."""
    return np.sign(s) * ((np.abs(s) + count // 2) // count)


def merge_grads(g1: np.ndarray, e1: int, g2: np.ndarray, e2: int) -> tuple[np.ndarray, int]:
    """Sum of two int8 gradients with exponents e1, e2 (a tensor with two consumers)."""
    e = max(e1, e2)
    s = q.rshift_round(g1, e - e1) + q.rshift_round(g2, e - e2)
    return q.quantize_grad(s, e)


@dataclass
class QForward:
    acts: list[np.ndarray]  # int8 (as int64) activations by tensor id, (H, W, C)
    exps: list[int]
    sat: list[bool]  # per op


@dataclass
class QGrad:
    gw: np.ndarray | None  # int32 weight gradient (as int64), exponent gw_exp; None: bias only
    gw_exp: int
    gb: np.ndarray  # int32 bias gradient, exponent gb_exp
    gb_exp: int


class S8Trainer:
    """Bit-exact numpy model of the engine's int8 training (batch 1)."""

    def __init__(self, qm: QModel, lr: float = 0.05, momentum: float = 0.0, seed: int = 1):
        if momentum:
            raise NotImplementedError("int8 training with momentum is not implemented yet")
        self.m = qm.copy()
        self.g = qm.graph
        self.lr_q = q.quantize_lr(lr)
        self.dither = seed & 0xFFFFFFFF
        self.need = needs_grad(self.g)
        self.logits_grad_exp = 0
        self.class_mask: np.ndarray | None = None  # active classes (bool), None = all
        self.set_update_policy("all")

    def set_update_policy(self, policy: str | int, fraction: float | None = None,
                          permille: int | None = None) -> None:
        """kl_model_set_update_policy (docs/selective-updates.md); restarts the step count."""
        self.policy = sel.policy_id(policy)
        self.pm = sel.FRAC_ONE if not self.policy else (
            permille if permille is not None else sel.permille(fraction or 1.0))
        self.upd_step = 0
        self.upd_touched = 0  # weights the policy let the updates write, summed over steps
        self.upd_weights = 0  # trainable weights, summed over steps

    def _channel_sparse(self, op: Op) -> bool:
        return self.policy == sel.POLICIES["channel-sparse"] and op.trainable and \
            not op.bias_only and op.kind in ("dense", "conv") and op.output != self.g.output

    # forward -----------------------------------------------------------------------------
    def forward(self, xq: np.ndarray, start: int | None = None) -> QForward:
        """int8 forward pass; from tensor ``start`` (xq are its activations) when set."""
        m, g = self.m, self.g
        acts: list[np.ndarray] = [np.zeros(0, np.int64)] * len(g.shapes)
        exps = list(m.exp)
        t0 = g.input if start is None else start
        acts[t0] = np.asarray(xq, np.int64).reshape(g.shapes[t0])
        first = first_op_after(g, t0)
        sats: list[bool] = [False] * first
        for i, op in enumerate(g.ops):
            if i < first:
                continue
            x0 = acts[op.inputs[0]]
            xe, xz = exps[op.inputs[0]], m.zp[op.inputs[0]]
            t = op.output
            sat = False
            if op.kind in ("dense", "conv", "dwconv"):
                w = m.w[i]
                bt = q.rshift_round(m.b[i], xe + m.ew[i] - m.eb[i])
                if op.kind == "dense":
                    acc = w @ (x0.reshape(-1) - xz)
                elif op.kind == "conv":
                    pt = patches(x0, op, xz) - xz
                    acc = pt.reshape(pt.shape[0], pt.shape[1], -1) @ w.reshape(w.shape[0], -1).T
                else:
                    acc = np.einsum("hwijc,ijc->hwc", patches(x0, op, xz) - xz, w)
                acc = np.clip(acc + bt, q.INT32_MIN, q.INT32_MAX)
                y, sat = requant_out(acc, exps[t] - xe - m.ew[i], m.zp[t], op.act, exps[t])
            elif op.kind == "avgpool":
                kh, kw = op.kernel
                s = (patches(x0, op) - xz).sum(axis=(2, 3))
                if (kh, kw) == x0.shape[:2]:  # global: TFLite's MEAN (Q31 reciprocal)
                    a = q.mul_q31(s, *q.recip_q31(kh * kw))
                else:  # windowed: TFLite's AVERAGE_POOL_2D (division, half away from zero)
                    a = avg_div(s, kh * kw)
                y = np.clip(a + xz, q.INT8_MIN, q.INT8_MAX)
                exps[t] = xe
            elif op.kind == "maxpool":
                y = patches(x0, op).max(axis=(2, 3))
                exps[t] = xe
            else:  # add
                x1 = acts[op.inputs[1]]
                e1, z1 = exps[op.inputs[1]], m.zp[op.inputs[1]]
                emin = min(xe, e1)
                acc = ((x0 - xz) << min(xe - emin, ADD_SHIFT_MAX)) + \
                    ((x1 - z1) << min(e1 - emin, ADD_SHIFT_MAX))
                y, sat = requant_out(acc, exps[t] - emin, m.zp[t], op.act, exps[t], single=True)
            acts[t] = y.reshape(g.shapes[t])
            sats.append(sat)
        m.exp = exps  # pools follow their inputs
        return QForward(acts, exps, sats)

    def logits_grad(self, logits: np.ndarray, label: int) -> tuple[np.ndarray, int]:
        """Softmax-CE gradient of int8 logits: (int8 values, exponent)."""
        m = self.m
        active = _active(self.class_mask, logits.size, label)
        gap = logits[active].max() - logits
        shift = min(m.exp[self.g.output] - m.lut_exp, 8)
        d = np.where(gap == 0, 0, np.where(gap > 0, gap, 0) << shift)
        t = np.where((d < 256) & active, m.lut[np.minimum(d, 255)].astype(np.int64), 0)
        s = int(t.sum())
        g = ((t << 15) + (s >> 1)) // s
        g[label] -= 1 << 15
        return q.quantize_grad(g, -15)

    # backward + update ---------------------------------------------------------------------
    def grads(self, xq: np.ndarray, label: int, start: int | None = None
              ) -> list[QGrad | None]:
        """Forward + backward of one sample; per op the kept gradients (None if frozen)."""
        m, g = self.m, self.g
        fw = self._fw = self.forward(xq, start)
        d0, e0 = self.logits_grad(fw.acts[g.output].reshape(-1), label)
        self.logits_grad_exp = e0
        grad: dict[int, tuple[np.ndarray, int]] = {g.output: (d0.reshape(g.shapes[g.output]),
                                                               e0)}
        producer = {op.output: i for i, op in enumerate(g.ops)}
        n_users = [len(g.consumers(t)) for t in range(len(g.shapes))]
        out: list[QGrad | None] = [None] * len(g.ops)

        def give(t: int, acc: np.ndarray, e: int) -> None:
            """An input gradient as int32 accumulators with exponent e."""
            acc = acc.reshape(g.shapes[t])
            p = producer.get(t)
            if p is not None and n_users[t] == 1:  # mask first: a finer scale
                pop = g.ops[p]
                acc = np.where(act_mask_q(fw.acts[t], pop.act, m.zp[t], fw.exps[t]), acc, 0)
            v, ve = q.quantize_grad(acc, e)
            if t in grad:
                v, ve = merge_grads(grad[t][0], grad[t][1], v, ve)
            grad[t] = (v, ve)

        for i in range(len(g.ops) - 1, -1, -1):
            op = g.ops[i]
            if op.output not in grad:
                continue
            dy, ey = grad[op.output]
            dy = np.where(act_mask_q(fw.acts[op.output], op.act, m.zp[op.output],
                                     fw.exps[op.output]), dy, 0)
            if self._channel_sparse(op):  # the other channels do not backpropagate
                dy = sel.channel_mask_dy(dy, op.kind, self.pm, self.upd_step)[0]
            src = op.inputs[0]
            x0, xe, xz = fw.acts[src], fw.exps[src], m.zp[src]
            w = m.w[i]
            if op.kind == "dense":
                d = dy.reshape(-1)
                if op.trainable:
                    out[i] = QGrad(np.outer(d, x0.reshape(-1) - xz), ey + xe, d.copy(), ey)
                if self.need[src]:
                    give(src, w.T @ d, m.ew[i] + ey)
            elif op.kind == "conv":
                pt = patches(x0, op, xz) - xz
                P = pt.shape[0] * pt.shape[1]
                d = dy.reshape(P, -1)
                if op.trainable:
                    out[i] = QGrad((d.T @ pt.reshape(P, -1)).reshape(w.shape), ey + xe,
                                   d.sum(axis=0), ey)
                if self.need[src]:
                    dp = (d @ w.reshape(w.shape[0], -1)).reshape(pt.shape)
                    give(src, col2im(dp, x0.shape, op), m.ew[i] + ey)
            elif op.kind == "dwconv":
                pt = patches(x0, op, xz) - xz
                if op.trainable:
                    out[i] = QGrad(np.einsum("hwijc,hwc->ijc", pt, dy), ey + xe,
                                   dy.sum(axis=(0, 1)), ey)
                if self.need[src]:
                    dp = dy[:, :, None, None, :] * w[None, None]
                    give(src, col2im(dp, x0.shape, op), m.ew[i] + ey)
            elif op.kind == "avgpool":
                if self.need[src]:
                    kh, kw = op.kernel
                    recip = (65536 + (kh * kw) // 2) // (kh * kw)
                    dp = np.broadcast_to((dy * recip)[:, :, None, None, :],
                                         dy.shape[:2] + (kh, kw, dy.shape[2]))
                    give(src, col2im(np.ascontiguousarray(dp), x0.shape, op), ey - 16)
            elif op.kind == "maxpool":
                if self.need[src]:
                    give(src, col2im(_max_route(patches(x0, op), dy), x0.shape, op), ey)
            else:  # add
                for t in op.inputs:
                    if self.need[t]:
                        give(t, dy, ey)
            if op.bias_only and out[i] is not None:
                out[i].gw = None  # the weights stay frozen
        return out

    def apply(self, grads: list[QGrad | None]) -> None:
        """SGD update from grads(), last op first (the order of the update dither), then the
        delayed range adaptation of saturated outputs."""
        m = self.m
        for i in range(len(self.g.ops) - 1, -1, -1):
            gr = grads[i]
            if gr is None:
                continue
            gb = gr.gb
            if gr.gw is not None:  # (bias-only ops keep their weights and the dither)
                w = m.w[i]
                n = w.size
                gw = gr.gw
                n_ch = gb.size
                k = sel.count(n_ch, self.pm)
                touched = n
                if self.policy == sel.POLICIES["channel-norm"]:
                    ax = sel.channel_axis(self.g.ops[i].kind)
                    sq = np.moveaxis(gw.astype(np.int64) ** 2, ax, 0).reshape(n_ch, -1)
                    scores = [int((int(gb[c]) ** 2 + int(sq[c].astype(np.uint64).sum(
                        dtype=np.uint64))) % 2**64) for c in range(n_ch)]
                    keep = sel.top_channels(scores, k)
                    shape = [1] * gw.ndim
                    shape[ax] = n_ch
                    gw = np.where(keep.reshape(shape), gw, 0)
                    gb = np.where(keep, gb, 0)
                    touched = k * (n // n_ch)
                elif self._channel_sparse(self.g.ops[i]):
                    touched = k * (n // n_ch)  # the others' gradients are zero
                sh = m.ew[i] + q.LR_FRAC_BITS - gr.gw_exp
                dither = q.weyl_offsets(self.dither, n).reshape(w.shape)
                step = np.clip(q.stochastic_shift(gw * self.lr_q, sh, dither), -128, 127)
                if self.policy == sel.POLICIES["topr"]:
                    chosen = sel.top_r(np.abs(step), sel.count(n, self.pm)) & (step != 0)
                    step = np.where(chosen, step, 0)
                    touched = int(chosen.sum())
                m.w[i] = np.clip(w - step, -127, 127)
                self.dither = q.weyl_advance(self.dither, n)
                self.upd_touched += touched
                self.upd_weights += n
            db = q.rshift_round(gb * self.lr_q, m.eb[i] + q.LR_FRAC_BITS - gr.gb_exp)
            m.b[i] = np.clip(m.b[i] - db, q.INT32_MIN, q.INT32_MAX)
        for op, sat in zip(self.g.ops, self._fw.sat, strict=True):
            if sat and m.exp[op.output] < EXP_MAX:
                m.exp[op.output] += 1
        self.upd_step += 1

    def step(self, xq: np.ndarray, label: int, start: int | None = None) -> None:
        """One SGD step (the engine's fused kl_train_step computes the same integers);
        from tensor ``start`` (a replayed latent) when set."""
        self.apply(self.grads(xq, label, start))

    def logits(self, xq: np.ndarray) -> np.ndarray:
        saved = list(self.m.exp)
        out = self.forward(xq).acts[self.g.output].reshape(-1)
        self.m.exp = saved
        return out

    def predict(self, xq: np.ndarray) -> np.ndarray:
        return np.array([masked_argmax(self.logits(x), self.class_mask) for x in xq])
