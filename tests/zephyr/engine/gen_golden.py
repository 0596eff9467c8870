#!/usr/bin/env python3
"""Generate src/golden.h for the Zephyr engine ztest suite from the numpy reference.

    python tests/zephyr/engine/gen_golden.py [OUT]     # default: src/golden.h beside this file

The header holds model blobs (kilolearn.formats.export), inputs, and what the numpy reference
(kilolearn.core.reference) computes for them. Every case is described per op of the lowered graph
(weight and bias counts, NULL where an op has no parameters or does not train):

* s8g_mlp, s8g_cnn: int8 models (an MLP with a frozen first layer; conv, pooling, dense),
  4 steps of kl_compute_grads/kl_apply_grads: per step the int8 logits, the logits-gradient
  exponent, every trainable op's int32 weight and bias gradients and their exponents; then the
  weights, biases and output exponents. All bit for bit (reference.S8Trainer).
* s8t: a 64-32-10 int8 MLP trained by kl_train_step (2 epochs over 120 samples): the final
  int8 weights, int32 biases and output exponents (which grow on saturation), bit for bit, and
  the number of held-out samples the reference classifies correctly.
* f32a, f32b: float32 MLPs (plain SGD; momentum with a frozen first layer), 3 steps of
  kl_compute_grads/kl_apply_grads: gradients and final weights, compared within 1e-5 relative.

Everything is deterministic: numpy's PCG64 streams, integer arithmetic for int8, and float32
goldens computed in float64 (checked against reference.F32Trainer) and rounded once, so the
output does not depend on the BLAS in use. tests/python/test_zephyr_golden.py checks that the
committed header equals a fresh run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kilolearn.core import model as M
from kilolearn.core import reference as R
from kilolearn.formats import export

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "src" / "golden.h"
PER_LINE = 16


# --------------------------------------------------------------------------- models, data


def mlp_frozen_first() -> M.Model:
    return M.Model([M.Input((24,)), M.Dense(16, trainable=False), M.ReLU(), M.Dense(12),
                    M.ReLU(), M.Dense(5), M.SoftmaxCrossEntropy()])


def mlp_frozen_first_f32() -> M.Model:
    return M.Model([M.Input((20,)), M.Dense(16, trainable=False), M.ReLU(), M.Dense(12),
                    M.ReLU(), M.Dense(5), M.SoftmaxCrossEntropy()])


def small_cnn() -> M.Model:
    return M.small_cnn((8, 8, 1), 4, 3)


def data_for(m: M.Model, rng: np.random.Generator, n: int):
    g = m.graph
    x = rng.uniform(0, 1, (n,) + g.shapes[g.input]).astype(np.float32)
    y = rng.integers(0, m.n_classes, n)
    return x, y


def bias_count(g: M.Graph, i: int) -> int:
    op = g.ops[i]
    if not op.has_params:
        return 0
    h, w, c = g.shapes[op.output]
    return h * w * c if op.kind == "dense" else c


def weight_count(g: M.Graph, i: int) -> int:
    return int(np.prod(g.weight_shape(i))) if g.ops[i].has_params else 0


# --------------------------------------------------------------------------- C emitters


def _fmt_f32(v: float) -> str:
    s = f"{float(np.float32(v)):.9g}"
    if "e" not in s and "." not in s and "inf" not in s and "nan" not in s:
        s += ".0"
    return s + "f"


class Emitter:
    def __init__(self) -> None:
        self.out: list[str] = []

    def line(self, s: str = "") -> None:
        self.out.append(s)

    def define(self, name: str, value: int | str) -> None:
        self.line(f"#define {name} {value}")

    def defines(self, tag: str, **values: int | str) -> None:
        """``#define TAG_KEY value`` for each keyword, in order."""
        for key, value in values.items():
            self.define(f"{tag.upper()}_{key}", value)

    def array(self, ctype: str, name: str, values, fmt: Callable = str, attrs: str = "",
              rows: bool = False) -> None:
        """A const array; ``rows``: a 2-D array ``name[n][m]`` with one brace per row."""
        a = np.asarray(values)
        if rows:
            a = a.reshape(a.shape[0], -1)
            self.line(f"static const {ctype} {name}[{a.shape[0]}][{a.shape[1]}]{attrs} = {{")
            for r in a:
                vals = [fmt(v) for v in r.tolist()]
                self.line("\t{")
                for i in range(0, len(vals), PER_LINE):
                    self.line("\t\t" + ", ".join(vals[i:i + PER_LINE]) + ",")
                self.line("\t},")
            self.line("};")
            return
        vals = [fmt(v) for v in a.reshape(-1).tolist()]
        self.line(f"static const {ctype} {name}[{len(vals)}]{attrs} = {{")
        for i in range(0, len(vals), PER_LINE):
            self.line("\t" + ", ".join(vals[i:i + PER_LINE]) + ",")
        self.line("};")

    def blob(self, name: str, blob: bytes) -> None:
        self.array("uint8_t", name, np.frombuffer(blob, np.uint8), fmt=lambda v: f"0x{v:02x}",
                   attrs=" __aligned(4)")
        self.define(f"{name.upper()}_LEN", f"{len(blob)}u")

    def ptr_row(self, ctype: str, name: str, names: list[str | None]) -> None:
        self.line(f"static const {ctype} *const {name}[{len(names)}] = {{"
                  + ", ".join(p or "NULL" for p in names) + "};")

    def ptr_table(self, ctype: str, name: str, rows: list[list[str | None]]) -> None:
        self.line(f"static const {ctype} *const {name}[{len(rows)}][{len(rows[0])}] = {{")
        for r in rows:
            self.line("\t{" + ", ".join(p or "NULL" for p in r) + "},")
        self.line("};")

    def text(self) -> str:
        return "\n".join(self.out) + "\n"


def emit_op_shape(e: Emitter, tag: str, g: M.Graph) -> None:
    n = len(g.ops)
    e.array("uint32_t", f"{tag}_nw", [weight_count(g, i) for i in range(n)])
    e.array("uint32_t", f"{tag}_nb", [bias_count(g, i) for i in range(n)])


def emit_s8_final(e: Emitter, tag: str, ref: R.S8Trainer) -> None:
    g, m = ref.g, ref.m
    wn: list[str | None] = []
    bn: list[str | None] = []
    for i, op in enumerate(g.ops):
        if not op.has_params:
            wn.append(None)
            bn.append(None)
            continue
        e.array("int8_t", f"{tag}_w_final_o{i}", m.w[i])
        e.array("int32_t", f"{tag}_b_final_o{i}", m.b[i])
        wn.append(f"{tag}_w_final_o{i}")
        bn.append(f"{tag}_b_final_o{i}")
    e.ptr_row("int8_t", f"{tag}_w_final", wn)
    e.ptr_row("int32_t", f"{tag}_b_final", bn)
    e.array("int8_t", f"{tag}_y_exp_final", [m.exp[op.output] for op in g.ops])


# --------------------------------------------------------------------------- int8


def emit_s8_grads(e: Emitter, tag: str, title: str, m: M.Model, init_seed: int,
                  data_seed: int, steps: int = 4, lr: float = 0.2, seed: int = 77) -> None:
    g = m.graph
    rng = np.random.default_rng(data_seed)
    p = m.init(init_seed)
    x, y = data_for(m, rng, steps)
    qm = R.quantize_model(g, p, x)
    xq = qm.quantize_input(x)
    ref = R.S8Trainer(qm, lr=lr, seed=seed)
    n = len(g.ops)
    e.line(f"/* {tag}: int8 {title}, ops {[op.kind for op in g.ops]}, lr {lr}, seed {seed}: "
           f"kl_compute_grads + kl_apply_grads */")
    e.defines(tag, STEPS=steps, OPS=n, N_IN=g.n_inputs, N_CLASSES=g.n_classes, LR=_fmt_f32(lr),
                   SEED=f"{seed}u")
    e.blob(f"{tag}_blob", export.export_s8(qm))
    emit_op_shape(e, tag, g)
    e.array("int8_t", f"{tag}_x", xq, rows=True)
    e.array("int", f"{tag}_y", y)
    logits, dlexp, gwe, gbe = [], [], [], []
    gw_rows, gb_rows = [], []
    for s in range(steps):
        gs = ref.grads(xq[s], int(y[s]))
        logits.append(ref._fw.acts[g.output].reshape(-1))
        dlexp.append(ref.logits_grad_exp)
        gw_row: list[str | None] = []
        gb_row: list[str | None] = []
        for i, gr in enumerate(gs):
            if gr is None:
                gw_row.append(None)
                gb_row.append(None)
                gwe.append(0)
                gbe.append(0)
                continue
            assert gr.gw.size == weight_count(g, i) and gr.gb.size == bias_count(g, i)
            e.array("int32_t", f"{tag}_gw_s{s}_o{i}", gr.gw)
            e.array("int32_t", f"{tag}_gb_s{s}_o{i}", gr.gb)
            gw_row.append(f"{tag}_gw_s{s}_o{i}")
            gb_row.append(f"{tag}_gb_s{s}_o{i}")
            gwe.append(gr.gw_exp)
            gbe.append(gr.gb_exp)
        gw_rows.append(gw_row)
        gb_rows.append(gb_row)
        ref.apply(gs)
    e.array("int8_t", f"{tag}_logits", np.array(logits), rows=True)
    e.array("int8_t", f"{tag}_dlogits_exp", dlexp)
    e.array("int8_t", f"{tag}_gw_exp", np.reshape(gwe, (steps, n)), rows=True)
    e.array("int8_t", f"{tag}_gb_exp", np.reshape(gbe, (steps, n)), rows=True)
    e.ptr_table("int32_t", f"{tag}_gw", gw_rows)
    e.ptr_table("int32_t", f"{tag}_gb", gb_rows)
    emit_s8_final(e, tag, ref)
    e.line()


def emit_s8_train(e: Emitter) -> None:
    tag, n_train, n_test, epochs, lr, seed = "s8t", 120, 50, 2, 0.3, 9
    m = M.mlp([64, 32, 10])
    g = m.graph
    rng = np.random.default_rng(202)
    p = m.init(5)
    x, y = data_for(m, rng, n_train + n_test)
    qm = R.quantize_model(g, p, x[:10])
    xq = qm.quantize_input(x)
    ref = R.S8Trainer(qm, lr=lr, seed=seed)
    R.train_in_order(ref, xq[:n_train], y[:n_train], epochs)
    adapted = [ref.m.exp[op.output] != qm.exp[op.output] for op in g.ops]
    assert any(adapted), "s8t should exercise the dynamic range adaptation"
    correct = int((ref.predict(xq[n_train:]) == y[n_train:]).sum())
    n = len(g.ops)
    e.line(f"/* {tag}: int8 MLP 64-32-10, kl_train_step, {epochs} epochs over {n_train} "
           f"samples, lr {lr}, seed {seed}; output exponents adapted: {sum(adapted)} of {n} ops */")
    e.defines(tag, OPS=n, N_IN=g.n_inputs, N_TRAIN=n_train, N_TEST=n_test, EPOCHS=epochs,
                   LR=_fmt_f32(lr), SEED=f"{seed}u", TEST_CORRECT=correct)
    e.blob(f"{tag}_blob", export.export_s8(qm))
    emit_op_shape(e, tag, g)
    e.array("int8_t", f"{tag}_x", xq, rows=True)
    e.array("int", f"{tag}_y", y)
    emit_s8_final(e, tag, ref)
    e.line()


# --------------------------------------------------------------------------- float32


class F64Reference:
    """reference.F32Trainer's arithmetic for a chain of dense ops, in float64 (weights and
    momenta stored as float32, like the engine's): golden gradients free of float32 rounding
    and of the BLAS's summation order, rounded to float32 once when written."""

    def __init__(self, g: M.Graph, params: M.Params, lr: float, momentum: float):
        for i, op in enumerate(g.ops):
            assert op.kind == "dense" and op.act in ("none", "relu"), (i, op.kind, op.act)
            assert op.inputs[0] == (g.input if i == 0 else g.ops[i - 1].output)
        self.ops = g.ops
        self.w = [np.asarray(w, np.float64) for w in params.weights]
        self.b = [np.asarray(b, np.float64) for b in params.biases]
        self.lr, self.mu = float(np.float32(lr)), float(np.float32(momentum))
        self.vw = [np.zeros_like(w) for w in self.w]
        self.vb = [np.zeros_like(b) for b in self.b]

    def grads(self, x: np.ndarray, label: int):
        acts = [np.asarray(x, np.float64).reshape(-1)]
        for op, w, b in zip(self.ops, self.w, self.b, strict=True):
            h = w @ acts[-1] + b
            acts.append(np.maximum(h, 0.0) if op.act == "relu" else h)
        z = acts[-1]
        ez = np.exp(z - z.max())
        dy = ez / ez.sum()
        dy[label] -= 1.0
        dws: list = [None] * len(self.ops)
        dbs: list = [None] * len(self.ops)
        for i in range(len(self.ops) - 1, -1, -1):
            op = self.ops[i]
            if op.act == "relu":
                dy = np.where(acts[i + 1] > 0, dy, 0.0)
            if op.trainable:
                dws[i], dbs[i] = np.outer(dy, acts[i]), dy.copy()
            if i > 0:
                dy = self.w[i].T @ dy
        return dws, dbs, int(np.argmax(z))

    def apply(self, dws, dbs) -> None:
        for i, op in enumerate(self.ops):
            if not op.trainable:
                continue
            self.vw[i] = self.mu * self.vw[i] + dws[i]
            self.vb[i] = self.mu * self.vb[i] + dbs[i]
            self.w[i] = self.w[i] - self.lr * self.vw[i]
            self.b[i] = self.b[i] - self.lr * self.vb[i]
            # the engine keeps weights and momenta in float32: round them as it does
            for t in (self.w, self.b, self.vw, self.vb):
                t[i] = t[i].astype(np.float32).astype(np.float64)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def emit_f32(e: Emitter, tag: str, title: str, m: M.Model, lr: float, momentum: float,
             init_seed: int, data_seed: int, steps: int = 3) -> None:
    g = m.graph
    rng = np.random.default_rng(data_seed)
    p = m.init(init_seed)
    for b in p.biases:  # non-zero biases, as the host tests use
        if b is not None:
            b[:] = rng.normal(0, 0.1, b.shape)
    x, y = data_for(m, rng, steps)
    ref = F64Reference(g, p, lr, momentum)
    chk = R.F32Trainer(g, p, lr=lr, momentum=momentum)
    n = len(g.ops)
    e.line(f"/* {tag}: float32 {title}, lr {lr}, momentum {momentum}: kl_compute_grads + "
           f"kl_apply_grads */")
    e.defines(tag, STEPS=steps, OPS=n, N_IN=g.n_inputs, LR=_fmt_f32(lr),
                   MOMENTUM=_fmt_f32(momentum))
    e.blob(f"{tag}_blob", export.export_f32(g, p))
    emit_op_shape(e, tag, g)
    e.array("float", f"{tag}_x", x, rows=True, fmt=_fmt_f32)
    e.array("int", f"{tag}_y", y)
    preds, gw_rows, gb_rows = [], [], []
    for s in range(steps):
        dws, dbs, pred = ref.grads(x[s], int(y[s]))
        cw, cb, _ = chk.grads(x[s], int(y[s]))
        assert pred == int(np.argmax(chk.logits(x[s])))
        preds.append(pred)
        gw_row: list[str | None] = []
        gb_row: list[str | None] = []
        for i in range(n):
            if dws[i] is None:
                assert cw[i] is None
                gw_row.append(None)
                gb_row.append(None)
                continue
            assert _rel(cw[i], dws[i]) < 1e-5 and _rel(cb[i], dbs[i]) < 1e-5
            e.array("float", f"{tag}_gw_s{s}_o{i}", dws[i], fmt=_fmt_f32)
            e.array("float", f"{tag}_gb_s{s}_o{i}", dbs[i], fmt=_fmt_f32)
            gw_row.append(f"{tag}_gw_s{s}_o{i}")
            gb_row.append(f"{tag}_gb_s{s}_o{i}")
        gw_rows.append(gw_row)
        gb_rows.append(gb_row)
        ref.apply(dws, dbs)
        chk.apply(cw, cb)
    e.array("int", f"{tag}_pred", preds)
    e.ptr_table("float", f"{tag}_gw", gw_rows)
    e.ptr_table("float", f"{tag}_gb", gb_rows)
    for i in range(n):
        assert _rel(chk.p.weights[i], ref.w[i]) < 1e-5
        e.array("float", f"{tag}_w_final_o{i}", ref.w[i], fmt=_fmt_f32)
        e.array("float", f"{tag}_b_final_o{i}", ref.b[i], fmt=_fmt_f32)
    e.ptr_row("float", f"{tag}_w_final", [f"{tag}_w_final_o{i}" for i in range(n)])
    e.ptr_row("float", f"{tag}_b_final", [f"{tag}_b_final_o{i}" for i in range(n)])
    e.line()


# --------------------------------------------------------------------------- header


def render() -> str:
    e = Emitter()
    e.line("/* Generated by tests/zephyr/engine/gen_golden.py from the numpy reference "
           "(kilolearn.core.reference). */")
    e.line("/* Do not edit: rerun the generator; tests/python/test_zephyr_golden.py checks it. */")
    e.line("#ifndef KL_ZTEST_GOLDEN_H")
    e.line("#define KL_ZTEST_GOLDEN_H")
    e.line()
    e.line("#include <stddef.h>")
    e.line("#include <stdint.h>")
    e.line()
    e.line("#ifndef __aligned")
    e.line("#define __aligned(x) __attribute__((__aligned__(x)))")
    e.line("#endif")
    e.line()
    emit_s8_grads(e, "s8g_mlp", "MLP 24-16-12-5, first layer frozen", mlp_frozen_first(),
                  init_seed=11, data_seed=101)
    emit_s8_grads(e, "s8g_cnn", "CNN 8x8x1: conv, max-pool, conv, global average pool, dense",
                  small_cnn(), init_seed=12, data_seed=102)
    emit_s8_train(e)
    emit_f32(e, "f32a", "MLP 7-5-3", M.mlp([7, 5, 3]), lr=0.1, momentum=0.0, init_seed=3,
             data_seed=303)
    emit_f32(e, "f32b", "MLP 20-16-12-5, first layer frozen", mlp_frozen_first_f32(), lr=0.1,
             momentum=0.5, init_seed=4, data_seed=404)
    e.line("#endif /* KL_ZTEST_GOLDEN_H */")
    return e.text()


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
