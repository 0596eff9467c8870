"""numpy reference of kilolearn's float32 training (kilolearn.core.reference): reproduces the
engine to rounding: SGD (with momentum) or Adam, batch 1 or gradient sums over a batch, as the
engine does it."""

from __future__ import annotations

import numpy as np

from . import ref_common as rc
from . import selective as sel
from .model import LEAKY_ALPHA, Graph, Op, Params


def _act_f32(y: np.ndarray, act: str) -> np.ndarray:
    if act == "relu":
        return np.maximum(y, np.float32(0))
    if act == "relu6":
        return np.clip(y, np.float32(0), np.float32(6))
    one = y.dtype.type(1)
    if act == "sigmoid":
        return one / (one + np.exp(-y))
    if act == "tanh":
        return np.tanh(y)
    if act == "leaky_relu":
        return np.where(y > 0, y, y * y.dtype.type(LEAKY_ALPHA))
    return y


def _dact_f32(y: np.ndarray, act: str, g: np.ndarray) -> np.ndarray:
    """The gradient g through an activation, from its outputs y (kl_activation_grad_f32 and
    the ReLU masks)."""
    if act == "sigmoid":
        return g * (y * (np.float32(1) - y))
    if act == "tanh":
        return g * (np.float32(1) - y * y)
    if act == "leaky_relu":
        return np.where(y > 0, g, g * np.float32(LEAKY_ALPHA))
    return np.where(_mask_f32(y, act), g, np.float32(0))


def _mask_f32(y: np.ndarray, act: str) -> np.ndarray:
    if act == "relu":
        return y > 0
    if act == "relu6":
        return (y > 0) & (y < 6)
    return np.ones(y.shape, bool)


class F32Trainer:
    def __init__(self, graph: Graph, params: Params, lr: float = 0.05, momentum: float = 0.0,
                 optimizer: str = "sgd", batch: int = 1, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        """``optimizer`` "sgd" (with ``momentum``) or "adam" (``betas``, ``eps``); ``batch``
        samples per update: their gradients summed, the mean applied (kl_train_cfg_t)."""
        self.g = graph
        self.p = params.copy()
        self.lr = np.float32(lr)
        self.mu = np.float32(momentum)
        self.need = rc.needs_grad(graph)
        self.vw = [None if w is None else np.zeros_like(w) for w in self.p.weights]
        self.vb = [None if b is None else np.zeros_like(b) for b in self.p.biases]
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer {optimizer!r}: sgd or adam")
        self.optimizer = optimizer
        self.batch = max(int(batch), 1)
        self.batch_n = 0
        self.b1, self.b2 = np.float32(betas[0]), np.float32(betas[1])
        self.eps = np.float32(eps)
        self.b1t = self.b2t = np.float32(1)
        self.sw = [None if w is None else np.zeros_like(w) for w in self.p.weights]
        self.sb = [None if b is None else np.zeros_like(b) for b in self.p.biases]
        self.acc_w: list[np.ndarray | None] = [None] * len(graph.ops)
        self.acc_b: list[np.ndarray | None] = [None] * len(graph.ops)
        self.class_mask: np.ndarray | None = None  # active classes (bool), None = all
        self.set_update_policy("all")

    def set_update_policy(self, policy: str | int, fraction: float | None = None,
                          permille: int | None = None) -> None:
        """kl_model_set_update_policy: a selective-update policy and the fraction updated
        (docs/selective-updates.md); restarts the step count."""
        self.policy = sel.policy_id(policy)
        if self.policy == sel.POLICIES["partial"]:
            raise NotImplementedError("partial activations train int8 models only")
        if self.policy and self.mu:
            raise NotImplementedError("selective updates with momentum")
        self.pm = sel.FRAC_ONE if not self.policy else (
            permille if permille is not None else sel.permille(fraction or 1.0))
        self.upd_step = 0
        self.upd_touched = 0
        self.upd_weights = 0

    def forward(self, x: np.ndarray, start: int | None = None,
                dtype: type[np.floating] = np.float32) -> list[np.ndarray]:
        """Activations by tensor id, each (H, W, C) float32; from tensor ``start`` (given x
        as its activations) when set. ``dtype`` float64 (with float64 parameters): the same
        walk in double precision (the finite-difference checks)."""
        g = self.g
        acts: list[np.ndarray] = [np.zeros(0, dtype)] * len(g.shapes)
        t0 = g.input if start is None else start
        acts[t0] = np.asarray(x, dtype).reshape(g.shapes[t0])
        first = rc.first_op_after(g, t0)
        for i, op in enumerate(g.ops):
            if i < first:
                continue
            x0 = acts[op.inputs[0]]
            w, b = self.p.weights[i], self.p.biases[i]
            if op.kind == "dense":
                y = w @ x0.reshape(-1) + b
            elif op.kind == "conv":
                pt = rc.patches(x0, op)
                y = pt.reshape(pt.shape[0], pt.shape[1], -1) @ w.reshape(w.shape[0], -1).T + b
            elif op.kind == "dwconv":
                y = np.einsum("hwijc,ijc->hwc", rc.patches(x0, op), w) + b
            elif op.kind == "avgpool":
                y = rc.patches(x0, op).mean(axis=(2, 3))
            elif op.kind == "maxpool":
                y = rc.patches(x0, op).max(axis=(2, 3))
            else:  # add
                y = x0 + acts[op.inputs[1]]
            acts[op.output] = _act_f32(y.astype(dtype), op.act).reshape(g.shapes[op.output])
        return acts

    def loss_grad(self, z32: np.ndarray, label: int, target: np.ndarray | None
                  ) -> tuple[np.ndarray, float]:
        """(dL/dlogits float32, loss) of the graph's loss: softmax cross-entropy on the label,
        mean squared error or sigmoid binary cross-entropy on ``target`` (rc.loss_target)."""
        z = z32.astype(np.float64)
        if self.g.loss == "mse":
            t = np.asarray(target, np.float32).reshape(-1)
            d = (z32 - t).astype(np.float32)
            return (np.float32(2.0) / np.float32(z.size) * d).astype(np.float32), \
                float(np.mean((z - t) ** 2))
        if self.g.loss == "sigmoid_bce":
            t64 = np.asarray(target, np.float64).reshape(-1)
            p = 1.0 / (1.0 + np.exp(-z))
            loss = float(np.sum(np.maximum(z, 0) - z * t64 + np.log1p(np.exp(-np.abs(z)))))
            return (p - t64).astype(np.float32), loss
        active = rc._active(self.class_mask, z.size, label)
        e = np.where(active, np.exp(z - z[active].max()), 0.0)
        p = e / e.sum()
        loss = float(-np.log(max(p[label], 1e-30)))
        dz = p.astype(np.float32)
        dz[label] -= np.float32(1)
        return dz, loss

    def grads(self, x: np.ndarray, label: int, start: int | None = None,
              target: np.ndarray | None = None
              ) -> tuple[list[np.ndarray | None], list[np.ndarray | None], float]:
        """(dW by op, db by op, loss) for one sample; None where nothing trains. ``target``:
        the target vector of a MSE or BCE loss (None: the input for MSE, the label's for
        BCE)."""
        g = self.g
        acts = self.forward(x, start)
        dz, loss = self.loss_grad(acts[g.output].reshape(-1),
                                  label, rc.loss_target(g, x, label, target))
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
            dy = _dact_f32(acts[op.output], op.act, grad[op.output]).astype(np.float32)
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
                pt = rc.patches(x0, op)
                P = pt.shape[0] * pt.shape[1]
                d = dy.reshape(P, -1)
                if op.trainable:
                    dws[i] = (d.T @ pt.reshape(P, -1)).reshape(w.shape).astype(np.float32)
                    dbs[i] = d.sum(axis=0).astype(np.float32)
                if self.need[op.inputs[0]]:
                    dp = (d @ w.reshape(w.shape[0], -1)).reshape(pt.shape)
                    give(op.inputs[0], rc.col2im(dp, x0.shape, op))
            elif op.kind == "dwconv":
                pt = rc.patches(x0, op)
                if op.trainable:
                    dws[i] = np.einsum("hwijc,hwc->ijc", pt, dy).astype(np.float32)
                    dbs[i] = dy.sum(axis=(0, 1)).astype(np.float32)
                if self.need[op.inputs[0]]:
                    dp = dy[:, :, None, None, :] * w[None, None]
                    give(op.inputs[0], rc.col2im(dp, x0.shape, op))
            elif op.kind == "avgpool":
                if self.need[op.inputs[0]]:
                    kh, kw = op.kernel
                    dp = np.broadcast_to((dy / np.float32(kh * kw))[:, :, None, None, :],
                                         dy.shape[:2] + (kh, kw, dy.shape[2]))
                    give(op.inputs[0], rc.col2im(np.ascontiguousarray(dp), x0.shape, op))
            elif op.kind == "maxpool":
                if self.need[op.inputs[0]]:
                    route = rc._max_route(rc.patches(x0, op), dy)
                    give(op.inputs[0], rc.col2im(route, x0.shape, op))
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

    @property
    def defer(self) -> bool:
        """Updates through the optimiser step (kl_step_f32): Adam or a batch."""
        return self.optimizer == "adam" or self.batch > 1

    def _opt_step(self, dws: list[np.ndarray | None], dbs: list[np.ndarray | None],
                  scale: np.float32) -> None:
        """kl_begin_update + kl_step_f32 of every trainable op: Adam, or SGD (momentum) on
        the gradients times ``scale`` (1 / batch)."""
        self.b1t = np.float32(self.b1t * self.b1)
        self.b2t = np.float32(self.b2t * self.b2)
        one = np.float32(1)
        c1, c2 = one / (one - self.b1t), one / (one - self.b2t)
        for i, op in enumerate(self.g.ops):
            if not op.trainable or dbs[i] is None:
                continue
            if dws[i] is not None:
                self.upd_touched += dws[i].size
                self.upd_weights += dws[i].size
            for p, mo, v, gr in ((self.p.weights, self.vw, self.sw, dws),
                                 (self.p.biases, self.vb, self.sb, dbs)):
                if gr[i] is None:
                    continue
                g = (gr[i] * scale).astype(np.float32)
                if self.optimizer == "adam":
                    mo[i] = (self.b1 * mo[i] + (one - self.b1) * g).astype(np.float32)
                    v[i] = (self.b2 * v[i] + (one - self.b2) * (g * g)).astype(np.float32)
                    p[i] -= self.lr * (mo[i] * c1) / (np.sqrt(v[i] * c2) + self.eps)
                elif self.mu:
                    mo[i] = (self.mu * mo[i] + g).astype(np.float32)
                    p[i] -= self.lr * mo[i]
                else:
                    p[i] -= self.lr * g
        self.upd_step += 1

    def apply(self, dws: list[np.ndarray | None], dbs: list[np.ndarray | None]) -> None:
        if self.defer:  # kl_apply_grads with Adam (a batch of 1)
            self._opt_step(dws, dbs, np.float32(1))
            return
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

    def step(self, x: np.ndarray, label: int, start: int | None = None,
             target: np.ndarray | None = None) -> float:
        dws, dbs, loss = self.grads(x, label, start, target)
        if self.batch == 1:
            self.apply(dws, dbs)
            return loss
        first = self.batch_n == 0  # the batch's sums (float32, in sample order)
        for i in range(len(self.g.ops)):
            for acc, gr in ((self.acc_w, dws), (self.acc_b, dbs)):
                if gr[i] is not None:
                    acc[i] = gr[i].copy() if first else (acc[i] + gr[i]).astype(np.float32)
        self.batch_n += 1
        if self.batch_n == self.batch:
            self.batch_n = 0
            self._opt_step(self.acc_w, self.acc_b, np.float32(1) / np.float32(self.batch))
        return loss

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)[self.g.output].reshape(-1)

    def predict(self, xs: np.ndarray) -> np.ndarray:
        return np.array([rc.predicted(self.logits(x), 0.0, self.class_mask) for x in xs])

    def error(self, x: np.ndarray, target: np.ndarray | None = None) -> float:
        """Sum of squared differences of the output from the target (the input): the anomaly
        score of an autoencoder (kl_error_f32, in float64 here)."""
        t = np.asarray(x if target is None else target, np.float64).reshape(-1)
        return float(np.sum((self.logits(x).astype(np.float64) - t) ** 2))
