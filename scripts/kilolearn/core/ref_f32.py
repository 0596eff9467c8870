"""numpy reference of kilolearn's float32 training (kilolearn.core.reference): reproduces the
engine to rounding. Batch size 1, plain SGD or SGD with momentum, as the engine does it."""

from __future__ import annotations

import numpy as np

from . import ref_common as rc
from . import selective as sel
from .model import Graph, Op, Params


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


class F32Trainer:
    def __init__(self, graph: Graph, params: Params, lr: float = 0.05, momentum: float = 0.0):
        self.g = graph
        self.p = params.copy()
        self.lr = np.float32(lr)
        self.mu = np.float32(momentum)
        self.need = rc.needs_grad(graph)
        self.vw = [None if w is None else np.zeros_like(w) for w in self.p.weights]
        self.vb = [None if b is None else np.zeros_like(b) for b in self.p.biases]
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

    def grads(self, x: np.ndarray, label: int, start: int | None = None
              ) -> tuple[list[np.ndarray | None], list[np.ndarray | None], float]:
        """(dW by op, db by op, loss) for one sample; None where nothing trains."""
        g = self.g
        acts = self.forward(x, start)
        z = acts[g.output].reshape(-1).astype(np.float64)
        active = rc._active(self.class_mask, z.size, label)
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
        return np.array([rc.masked_argmax(self.logits(x), self.class_mask) for x in xs])
