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
        if op.act in TABLE_ACTS:  # the table's fixed output scale
            exp[op.output], zp[op.output] = TABLE_ACTS[op.act][1:]
        else:
            exp[op.output], zp[op.output] = act(op.output, op.act in ("relu", "relu6"))
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


LEAKY_SHIFT = 3  # kl_kernels.h: alpha = 2**-3
#: sigmoid / tanh in int8 (kl_kernels.h): (pre-activation exponent, output exponent, zero point)
TABLE_ACTS = {"sigmoid": (-4, -8, -128), "tanh": (-5, -7, 0)}


def act_table(act: str) -> np.ndarray:
    """The int8 table of sigmoid or tanh over pre-activations p = -128..127 (index p + 128):
    round(256 sigmoid(p / 16)) - 128, round(128 tanh(p / 32)) (kl_activation_s8.c)."""
    p = np.arange(-128, 128, dtype=np.float64)
    if act == "sigmoid":
        return np.clip(np.round(256 / (1 + np.exp(-p / 16))) - 128, -128, 127).astype(np.int64)
    return np.clip(np.round(128 * np.tanh(p / 32)), -127, 127).astype(np.int64)


_TABLES = {a: act_table(a) for a in TABLE_ACTS}


def activation_q(y: np.ndarray, act: str, zy: int) -> np.ndarray:
    """kl_activation_s8: sigmoid / tanh by table (y: the pre-activation), leaky ReLU around the
    zero point (negatives times 2**-3, rounded half away from zero)."""
    if act in _TABLES:
        return _TABLES[act][y + 128]
    v = y - zy
    return np.where(v < 0, zy + q.rshift_round(v, LEAKY_SHIFT), y)


def activation_grad_q(y: np.ndarray, act: str, zy: int, dy: np.ndarray, ey: int
                      ) -> tuple[np.ndarray, int]:
    """kl_activation_grad_s8: dy times the derivative at the outputs, requantised: sigmoid
    u (256 - u) (u = y - zy, 2**-16), tanh 16384 - v**2 (2**-14), leaky ReLU 8 or 1 (2**-3)."""
    v = y - zy
    if act == "sigmoid":
        d, bits = v * (256 - v), 16
    elif act == "tanh":
        d, bits = 16384 - v * v, 14
    else:
        d, bits = np.where(v > 0, 1 << LEAKY_SHIFT, 1), LEAKY_SHIFT
    return q.quantize_grad(dy * d, ey - bits)


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


ACC_MAX = 0x3FFFFFFF  # kl_kernels.h KL_ACC_MAX


def _rsh(x: np.ndarray, s: int) -> np.ndarray:
    x = np.asarray(x, np.int64)
    return x if s == 0 else np.zeros_like(x) if s > 62 else q.rshift_round(x, s)


def accumulate(acc: np.ndarray, ea: int, mu_q: int, g: np.ndarray, eg: int
               ) -> tuple[np.ndarray, int]:
    """kl_accumulate_s8: acc * mu_q / 2**15 + g, aligned to the coarser exponent (rounded),
    then shifted right (rounded) until every value is at most ACC_MAX; (sums, exponent)."""
    e = max(ea, eg)
    t = _rsh(np.asarray(acc, np.int64) * mu_q, q.MOM_FRAC_BITS + e - ea) + _rsh(g, e - eg)
    mx = int(np.abs(t).max()) if t.size else 0
    s = 0
    while (mx >> s) > ACC_MAX:
        s += 1
    return _rsh(t, s), e + s


MSE_ALIGN_MAX = 6  # kl_kernels.h KL_MSE_ALIGN_MAX


def mse_exp(ey: int, et: int) -> int:
    """The exponent output and target are aligned to: the finer one, at most MSE_ALIGN_MAX
    bits below the coarser (kl_mse_exp)."""
    return max(min(ey, et), max(ey, et) - MSE_ALIGN_MAX)


def mse_diff(y: np.ndarray, ey: int, zy: int, t: np.ndarray, et: int, zt: int
             ) -> tuple[np.ndarray, int]:
    """(output - target) in units of 2**e, e = mse_exp (kl_mse_s8's d)."""
    e = mse_exp(ey, et)

    def align(v: np.ndarray, d: int) -> np.ndarray:
        return v << d if d >= 0 else q.rshift_round(v, -d)

    y64 = np.asarray(y, np.int64).reshape(-1)
    t64 = np.asarray(t, np.int64).reshape(-1)
    return align(y64 - zy, ey - e) - align(t64 - zt, et - e), e


def mse_error(y: np.ndarray, ey: int, zy: int, t: np.ndarray, et: int, zt: int
              ) -> tuple[int, int]:
    """kl_mse_err_s8: sum of d**2 as (mantissa < 2**32, exponent), truncated."""
    d, e = mse_diff(y, ey, zy, t, et, zt)
    s = int(np.sum(d * d))
    k = 0
    while (s >> k) > 0xFFFFFFFF:
        k += 1
    return s >> k, 2 * e + k


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

    def __init__(self, qm: QModel, lr: float = 0.05, momentum: float = 0.0, seed: int = 1,
                 batch: int = 1):
        """``momentum``: SGD with an int32 velocity (Q15 factor, kl_accumulate_s8);
        ``batch`` (a power of two): gradients summed over that many samples, their mean
        applied."""
        if batch < 1 or batch & (batch - 1):
            raise ValueError(f"int8 batch {batch}: a power of two")
        self.mu_q = q.quantize_momentum(momentum) if momentum else 0
        self.batch = batch
        self.batch_n = 0
        self.n_updates = 0
        self.acc: dict[int, list] = {}  # op -> [gw, gw_exp, gb, gb_exp] summed over the batch
        self.vel: dict[int, list] = {}  # op -> [vw, vw_exp, vb, vb_exp] (momentum)
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
                if op.act in TABLE_ACTS:  # a pre-activation of a fixed scale, then the table
                    pre = TABLE_ACTS[op.act][0]
                    y, _ = requant_out(acc, pre - xe - m.ew[i], 0, "none", pre)
                    y, sat = activation_q(y, op.act, m.zp[t]), False
                elif op.act == "leaky_relu":
                    y, sat = requant_out(acc, exps[t] - xe - m.ew[i], m.zp[t], "none", exps[t])
                    y = activation_q(y, op.act, m.zp[t])
                else:
                    y, sat = requant_out(acc, exps[t] - xe - m.ew[i], m.zp[t], op.act,
                                         exps[t])
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

    def mse_grad(self, y: np.ndarray, ey: int, target: np.ndarray) -> tuple[np.ndarray, int]:
        """Mean-squared-error gradient of int8 outputs against int8 targets in the input's
        scale (kl_mse_s8): both aligned to mse_exp, difference times round(2^16 / n)."""
        m = self.m
        # the error before the update (kl_model_t.err_mant, err_exp): the anomaly score
        self.train_err = mse_error(y, ey, m.zp[self.g.output], target, m.ex, m.zx)
        d, e = mse_diff(y, ey, m.zp[self.g.output], target, m.ex, m.zx)
        n = y.size
        r = (65536 + n // 2) // n
        return q.quantize_grad(d * r, e - 15)

    def bce_grad(self, z: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, int]:
        """Sigmoid binary cross-entropy gradient of int8 logits (kl_sigmoid_bce_s8): sigmoid
        as the two-class softmax of (z, 0) from the softmax table, Q15, minus the 0/1
        target."""
        m = self.m
        v = z - m.zp[self.g.output]
        shift = max(min(m.exp[self.g.output] - m.lut_exp, 8), 0)
        gap = np.abs(v)
        d = np.where(gap == 0, 0, gap << shift)
        e = np.where(d < 256, m.lut[np.minimum(d, 255)].astype(np.int64), 0)
        s = 32768 + e
        num = np.where(v >= 0, 32768, e)
        p = ((num << 15) + (s >> 1)) // s
        return q.quantize_grad(p - (np.asarray(target).reshape(-1) != 0) * 32768, -15)

    def loss_grad(self, logits: np.ndarray, label: int, target: np.ndarray | None
                  ) -> tuple[np.ndarray, int]:
        """The graph's loss gradient of int8 logits: (int8 values, exponent)."""
        if self.g.loss == "mse":
            assert target is not None
            return self.mse_grad(logits, self._fw.exps[self.g.output], target)
        if self.g.loss == "sigmoid_bce":
            assert target is not None
            return self.bce_grad(logits, target)
        return self.logits_grad(logits, label)

    def error(self, xq: np.ndarray, target: np.ndarray | None = None) -> tuple[int, int]:
        """(mantissa, exponent) of the reconstruction error of xq's forward pass against the
        target (the input): kl_error_s8, the anomaly score of an autoencoder. Leaves the
        exponents as a forward pass without a step does."""
        saved = list(self.m.exp)
        fw = self.forward(xq)
        self.m.exp = saved
        t = np.asarray(xq if target is None else target, np.int64).reshape(-1)
        return mse_error(fw.acts[self.g.output].reshape(-1), fw.exps[self.g.output],
                         self.m.zp[self.g.output], t, self.m.ex, self.m.zx)

    # backward + update ---------------------------------------------------------------------
    def grads(self, xq: np.ndarray, label: int, start: int | None = None,
              target: np.ndarray | None = None) -> list[QGrad | None]:
        """Forward + backward of one sample; per op the kept gradients (None if frozen).
        ``target``: the int8 target of a MSE (in the input's scale) or BCE (0 / nonzero)
        loss; None: the input (MSE) or the label's (BCE)."""
        m, g = self.m, self.g
        fw = self._fw = self.forward(xq, start)
        d0, e0 = self.loss_grad(fw.acts[g.output].reshape(-1), label,
                                rc.loss_target(g, xq, label, target))
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
            if op.act in ("sigmoid", "tanh", "leaky_relu"):  # times the derivative
                dy, ey = activation_grad_q(fw.acts[op.output], op.act, m.zp[op.output], dy, ey)
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
        if self.defer:  # momentum (kl_apply_grads: a batch of 1)
            self.apply_deferred(grads)
            return
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

    @property
    def defer(self) -> bool:
        return self.batch > 1 or self.mu_q != 0

    def _sgd(self, i: int, gw: np.ndarray | None, ew: int, gb: np.ndarray, eb: int) -> None:
        """kl_step_s8: momentum through the velocity, then the SGD step of op i."""
        m = self.m
        if self.mu_q:
            v = self.vel.setdefault(i, [None, 0, None, 0])
            first = self.n_updates == 1
            if gw is not None:
                v0 = np.zeros_like(gw) if v[0] is None else v[0]
                v[0], v[1] = accumulate(v0, ew if first else v[1], self.mu_q, gw, ew)
                gw, ew = v[0], v[1]
            v0 = np.zeros_like(gb) if v[2] is None else v[2]
            v[2], v[3] = accumulate(v0, eb if first else v[3], self.mu_q, gb, eb)
            gb, eb = v[2], v[3]
        if gw is not None:
            w = m.w[i]
            n = w.size
            dither = q.weyl_offsets(self.dither, n).reshape(w.shape)
            st = np.clip(q.stochastic_shift(gw * self.lr_q, m.ew[i] + q.LR_FRAC_BITS - ew,
                                            dither), -128, 127)
            m.w[i] = np.clip(w - st, -127, 127)
            self.dither = q.weyl_advance(self.dither, n)
            self.upd_touched += n
            self.upd_weights += n
        db = q.rshift_round(gb * self.lr_q, m.eb[i] + q.LR_FRAC_BITS - eb)
        m.b[i] = np.clip(m.b[i] - db, q.INT32_MIN, q.INT32_MAX)

    def _adapt(self) -> None:
        m = self.m
        for op, sat in zip(self.g.ops, self._fw.sat, strict=True):
            if sat and m.exp[op.output] < EXP_MAX:
                m.exp[op.output] += 1
        self.upd_step += 1

    def apply_deferred(self, grads: list[QGrad | None]) -> None:
        """The engine's deferred update (kl_defer_s8, kl_batch_done): a batch of 1 steps at
        once; else the gradients are summed (kl_accumulate_s8) and, when the batch is full,
        their mean (exponent - log2 batch) steps, last op first; then the range
        adaptation."""
        order = range(len(self.g.ops) - 1, -1, -1)
        if self.batch == 1:
            self.n_updates += 1
            for i in order:
                if grads[i] is not None:
                    gr = grads[i]
                    self._sgd(i, gr.gw, gr.gw_exp, gr.gb, gr.gb_exp)
        else:
            first = self.batch_n == 0
            mu = 0 if first else 1 << q.MOM_FRAC_BITS
            for i in order:
                gr = grads[i]
                if gr is None:
                    continue
                a = self.acc.setdefault(i, [None, 0, None, 0])
                if gr.gw is not None:
                    a0 = np.zeros_like(gr.gw) if a[0] is None else a[0]
                    a[0], a[1] = accumulate(a0, gr.gw_exp if first else a[1], mu, gr.gw,
                                            gr.gw_exp)
                a0 = np.zeros_like(gr.gb) if a[2] is None else a[2]
                a[2], a[3] = accumulate(a0, gr.gb_exp if first else a[3], mu, gr.gb, gr.gb_exp)
            self.batch_n += 1
            if self.batch_n == self.batch:
                self.batch_n = 0
                self.n_updates += 1
                lg = self.batch.bit_length() - 1
                for i in order:
                    if i in self.acc:
                        a = self.acc[i]
                        self._sgd(i, a[0], a[1] - lg, a[2], a[3] - lg)
        self._adapt()

    def step(self, xq: np.ndarray, label: int, start: int | None = None,
             target: np.ndarray | None = None) -> None:
        """One SGD step (the engine's fused kl_train_step computes the same integers);
        from tensor ``start`` (a replayed latent) when set."""
        gs = self.grads(xq, label, start, target)
        if self.defer:
            self.apply_deferred(gs)
        else:
            self.apply(gs)

    def logits(self, xq: np.ndarray) -> np.ndarray:
        saved = list(self.m.exp)
        out = self.forward(xq).acts[self.g.output].reshape(-1)
        self.m.exp = saved
        return out

    def predict(self, xq: np.ndarray) -> np.ndarray:
        z = self.m.zp[self.g.output]
        return np.array([rc.predicted(self.logits(x), z, self.class_mask) for x in xq])
