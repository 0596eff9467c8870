"""numpy reference of kilolearn's int8 fully quantized training (kilolearn.core.reference):
the int8 model (QModel, quantize_model) and S8Trainer, which reproduces the C engine bit for bit
(same integer operations, same order of the update dither). docs/int8-training.md specifies the
int8 arithmetic."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import quant as q
from . import ref_common as rc
from . import selective as sel
from .model import Graph, Op, Params
from .ref_f32 import F32Trainer

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

    def weights(i: int) -> tuple[int, np.ndarray]:
        wf = params.weights[i]
        assert wf is not None
        e = q.exp_for_range(float(np.abs(wf).max()) * WEIGHT_HEADROOM, 127)
        return e, int8_weights(wf, e)

    def act(t: int, nonneg: bool) -> tuple[int, int]:
        return q.act_qparams(float(lo[t]), float(hi[t]), nonneg)

    return build_qmodel(graph, act, bool(lo[graph.input] >= 0), weights, params.biases)


def int8_weights(wf: np.ndarray, ew: int) -> np.ndarray:
    """Float weights in units of 2**ew, rounded, in [-127, 127] (int64)."""
    return np.clip(np.round(wf.astype(np.float64) / 2.0**ew), -127, 127).astype(np.int64)


def build_qmodel(graph: Graph, act: Callable[[int, bool], tuple[int, int]], input_nonneg: bool,
                 weights: Callable[[int], tuple[int, np.ndarray]],
                 biases: list[np.ndarray | None]) -> QModel:
    """The int8 model of a graph from its quantisation choices (quantize_model's from float
    ranges, the TFLite importer's from the file): ``act(t, nonneg)`` the (exponent, zero point)
    of the input and of every op's output but a pool's (a pool keeps its input's), ``nonneg``
    for the input ``input_nonneg``, for an op's output whether it has an activation;
    ``weights(i)`` (exponent, int8 values) of op i with parameters; its float bias in units of
    2**(input exponent + weight exponent - BIAS_EXTRA_BITS), saturated to int32; the softmax
    LUT of the logits' exponent."""
    exp = [0] * len(graph.shapes)
    zp = [0] * len(graph.shapes)
    exp[graph.input], zp[graph.input] = act(graph.input, input_nonneg)
    n = len(graph.ops)
    w: list[np.ndarray | None] = [None] * n
    b: list[np.ndarray | None] = [None] * n
    ew, eb = [0] * n, [0] * n
    for i, op in enumerate(graph.ops):
        src = op.inputs[0]
        if op.kind in ("avgpool", "maxpool"):
            exp[op.output], zp[op.output] = exp[src], zp[src]
            continue
        exp[op.output], zp[op.output] = act(op.output, op.act != "none")
        if op.has_params:
            bf = biases[i]
            assert bf is not None
            ew[i], w[i] = weights(i)
            eb[i] = exp[src] + ew[i] - BIAS_EXTRA_BITS
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
        self.need = rc.needs_grad(self.g)
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
        self._part: dict[int, tuple[int, int]] = {}
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
        first = rc.first_op_after(g, t0)
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
                    pt = rc.patches(x0, op, xz) - xz
                    acc = pt.reshape(pt.shape[0], pt.shape[1], -1) @ w.reshape(w.shape[0], -1).T
                else:
                    acc = np.einsum("hwijc,ijc->hwc", rc.patches(x0, op, xz) - xz, w)
                acc = np.clip(acc + bt, q.INT32_MIN, q.INT32_MAX)
                y, sat = requant_out(acc, exps[t] - xe - m.ew[i], m.zp[t], op.act, exps[t])
            elif op.kind == "avgpool":
                kh, kw = op.kernel
                s = (rc.patches(x0, op) - xz).sum(axis=(2, 3))
                if (kh, kw) == x0.shape[:2]:  # global: TFLite's MEAN (Q31 reciprocal)
                    a = q.mul_q31(s, *q.recip_q31(kh * kw))
                else:  # windowed: TFLite's AVERAGE_POOL_2D (division, half away from zero)
                    a = avg_div(s, kh * kw)
                y = np.clip(a + xz, q.INT8_MIN, q.INT8_MAX)
                exps[t] = xe
            elif op.kind == "maxpool":
                y = rc.patches(x0, op).max(axis=(2, 3))
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
        active = rc._active(self.class_mask, logits.size, label)
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
        part: dict[int, tuple[int, int]] = {}  # partial tensor: (first channel, count)
        if self.policy == sel.POLICIES["partial"]:
            part = {t: sel.active_block(g.shapes[t][-1], self.pm, self.upd_step)
                    for t in sel.partial_tensors(g, self.need)}
        self._part = part

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
            xblock = part.get(op.inputs[0])  # partial: the input's kept channels
            yblock = part.get(op.output)
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
                pt = rc.patches(x0, op, xz) - xz
                P = pt.shape[0] * pt.shape[1]
                d = dy.reshape(P, -1)
                if yblock is not None:  # the gradient exists on the output's block only
                    keep = np.zeros(d.shape[1], bool)
                    keep[yblock[0]:yblock[0] + yblock[1]] = True
                    d = np.where(keep, d, 0)
                if op.trainable:
                    gwc = (d.T @ pt.reshape(P, -1)).reshape(w.shape)
                    if xblock is not None:  # the weights reading the input's kept block
                        cin = np.zeros(w.shape[-1], bool)
                        cin[xblock[0]:xblock[0] + xblock[1]] = True
                        gwc = np.where(cin, gwc, 0)
                    out[i] = QGrad(gwc, ey + xe, d.sum(axis=0), ey)
                if self.need[src]:
                    dp = (d @ w.reshape(w.shape[0], -1)).reshape(pt.shape)
                    dxc = rc.col2im(dp, x0.shape, op)
                    if xblock is not None:
                        cin = np.zeros(dxc.shape[-1], bool)
                        cin[xblock[0]:xblock[0] + xblock[1]] = True
                        dxc = np.where(cin, dxc, 0)
                    give(src, dxc, m.ew[i] + ey)
            elif op.kind == "dwconv":
                pt = rc.patches(x0, op, xz) - xz
                if op.trainable:
                    out[i] = QGrad(np.einsum("hwijc,hwc->ijc", pt, dy), ey + xe,
                                   dy.sum(axis=(0, 1)), ey)
                if self.need[src]:
                    dp = dy[:, :, None, None, :] * w[None, None]
                    give(src, rc.col2im(dp, x0.shape, op), m.ew[i] + ey)
            elif op.kind == "avgpool":
                if self.need[src]:
                    kh, kw = op.kernel
                    recip = (65536 + (kh * kw) // 2) // (kh * kw)
                    dp = np.broadcast_to((dy * recip)[:, :, None, None, :],
                                         dy.shape[:2] + (kh, kw, dy.shape[2]))
                    give(src, rc.col2im(np.ascontiguousarray(dp), x0.shape, op), ey - 16)
            elif op.kind == "maxpool":
                if self.need[src]:
                    give(src, rc.col2im(rc._max_route(rc.patches(x0, op), dy), x0.shape, op), ey)
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
                elif self.g.ops[i].kind == "conv" and (
                        self.g.ops[i].inputs[0] in self._part or
                        self.g.ops[i].output in self._part):
                    op = self.g.ops[i]
                    kx = self._part.get(op.inputs[0], (0, w.shape[-1]))[1]
                    ky = self._part.get(op.output, (0, w.shape[0]))[1]
                    touched = ky * kx * (n // (w.shape[0] * w.shape[-1]))
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
        return np.array([rc.masked_argmax(self.logits(x), self.class_mask) for x in xq])
