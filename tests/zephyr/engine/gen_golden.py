#!/usr/bin/env python3
"""Generate src/golden.h for the Zephyr engine ztest suite from the numpy reference.

    python tests/zephyr/engine/gen_golden.py [OUT]     # default: src/golden.h beside this file

The header holds model blobs (kilolearn.export), inputs, and what the numpy reference
(kilolearn.reference) computes for them:

* s8_grads: an int8 MLP with a frozen first layer, 4 steps of kl_compute_grads/kl_apply_grads:
  per step the prediction, the int8 logits, the logits-gradient exponent, every trainable
  layer's int32 weight gradient, int8 bias gradient and their exponents; then the weights.
  All bit for bit (S8Trainer).
* s8_train: a 64-32-10 int8 MLP trained by kl_train_step (2 epochs over 120 samples): the final
  int8 weights, int32 biases and output exponents (which grow on saturation), bit for bit, and
  the predictions on 50 held-out samples.
* f32_a / f32_b: two float32 MLPs (plain SGD; momentum with a frozen first layer), 3 steps of
  kl_compute_grads/kl_apply_grads: gradients and final weights, compared within 1e-5 relative.

Everything is deterministic: numpy's PCG64 streams, integer arithmetic for int8, and float32
goldens computed in float64 (checked against reference.F32Trainer) and rounded once, so the
output does not depend on the BLAS in use. tests/python/test_zephyr_golden.py checks that the
committed header equals a fresh run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from kilolearn import export, model
from kilolearn import reference as R

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "src" / "golden.h"
PER_LINE = 16


# --------------------------------------------------------------------------- models, data


def build_model(sizes: list[int], trainable: list[bool] | None = None) -> model.Model:
    layers: list = [model.Input(sizes[0])]
    for k, n in enumerate(sizes[1:]):
        last = k == len(sizes) - 2
        layers.append(model.Dense(n, None if last else "relu",
                                  trainable=True if trainable is None else trainable[k]))
    return model.Model(layers + [model.SoftmaxCrossEntropy()])


def data_for(sizes: list[int], rng: np.random.Generator, n: int):
    x = rng.uniform(0, 1, (n, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], n)
    return x, y


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

    def array(self, ctype: str, name: str, values, fmt=str, attrs: str = "",
              rows: bool = False) -> None:
        """A const array; ``rows``: a 2-D array ``name[n][m]`` with one brace per row."""
        a = np.asarray(values)
        if rows:
            self.line(f"static const {ctype} {name}[{a.shape[0]}][{a.shape[1]}]{attrs} = {{")
            for r in a:
                self.line("\t{" + ", ".join(fmt(v) for v in r.tolist()) + "},")
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

    def ptr_table(self, ctype: str, name: str, rows: list[list[str | None]]) -> None:
        self.line(f"static const {ctype} *const {name}[{len(rows)}][{len(rows[0])}] = {{")
        for r in rows:
            self.line("\t{" + ", ".join(p or "NULL" for p in r) + "},")
        self.line("};")

    def text(self) -> str:
        return "\n".join(self.out) + "\n"


# --------------------------------------------------------------------------- int8


def emit_s8_grads(e: Emitter) -> None:
    sizes, trainable, steps, lr, seed = [24, 16, 12, 5], [False, True, True], 4, 0.2, 77
    rng = np.random.default_rng(101)
    m = build_model(sizes, trainable)
    p = m.init(11)
    x, y = data_for(sizes, rng, steps)
    qm = R.quantize_model(m.fused, p, x)
    xq = qm.quantize_input(x)
    ref = R.S8Trainer(qm, lr=lr, seed=seed)
    n_l = len(m.fused)
    preds, logits, dlexp, gwe, gbe = [], [], [], [], []
    gw_rows, gb_rows = [], []
    e.line(f"/* s8_grads: int8 MLP {'-'.join(map(str, sizes))}, trainable {trainable}, "
           f"lr {lr}, seed {seed}: kl_compute_grads + kl_apply_grads */")
    e.define("S8G_STEPS", steps)
    e.define("S8G_LAYERS", n_l)
    e.define("S8G_N_IN", sizes[0])
    e.define("S8G_N_CLASSES", sizes[-1])
    e.define("S8G_LR", _fmt_f32(lr))
    e.define("S8G_SEED", f"{seed}u")
    e.blob("s8g_blob", export.export_s8(qm))
    e.array("int8_t", "s8g_x", xq, rows=True)
    e.array("int", "s8g_y", y)
    for s in range(steps):
        gs = ref.grads(xq[s], int(y[s]))
        preds.append(int(np.argmax(ref._fw.acts[-1])))
        logits.append(ref._fw.acts[-1])
        dlexp.append(ref.logits_grad_exp)
        gw_row: list[str | None] = []
        gb_row: list[str | None] = []
        for li, g in enumerate(gs):
            if g is None:
                gw_row.append(None)
                gb_row.append(None)
                gwe.append(0)
                gbe.append(0)
                continue
            e.array("int32_t", f"s8g_gw_s{s}_l{li}", g.gw)
            e.array("int8_t", f"s8g_gb_s{s}_l{li}", g.gb)
            gw_row.append(f"s8g_gw_s{s}_l{li}")
            gb_row.append(f"s8g_gb_s{s}_l{li}")
            gwe.append(g.gw_exp)
            gbe.append(g.gb_exp)
        gw_rows.append(gw_row)
        gb_rows.append(gb_row)
        ref.apply(gs)
    e.array("int", "s8g_pred", preds)
    e.array("int8_t", "s8g_logits", np.array(logits), rows=True)
    e.array("int8_t", "s8g_dlogits_exp", dlexp)
    e.array("int8_t", "s8g_gw_exp", np.reshape(gwe, (steps, n_l)), rows=True)
    e.array("int8_t", "s8g_gb_exp", np.reshape(gbe, (steps, n_l)), rows=True)
    e.ptr_table("int32_t", "s8g_gw", gw_rows)
    e.ptr_table("int8_t", "s8g_gb", gb_rows)
    for li, L in enumerate(ref.m.layers):
        e.array("int8_t", f"s8g_w_final_l{li}", L.w)
        e.array("int32_t", f"s8g_b_final_l{li}", L.b)
    e.line(f"static const int8_t *const s8g_w_final[{n_l}] = {{"
           + ", ".join(f"s8g_w_final_l{li}" for li in range(n_l)) + "};")
    e.line(f"static const int32_t *const s8g_b_final[{n_l}] = {{"
           + ", ".join(f"s8g_b_final_l{li}" for li in range(n_l)) + "};")
    e.line()


def emit_s8_train(e: Emitter) -> None:
    sizes, n_train, n_test, epochs, lr, seed = [64, 32, 10], 120, 50, 2, 0.3, 9
    rng = np.random.default_rng(202)
    m = build_model(sizes)
    p = m.init(5)
    x, y = data_for(sizes, rng, n_train + n_test)
    qm = R.quantize_model(m.fused, p, x[:10])
    xq = qm.quantize_input(x)
    ref = R.S8Trainer(qm, lr=lr, seed=seed)
    for _ in range(epochs):
        for i in range(n_train):
            ref.step(xq[i], int(y[i]))
    adapted = [L.ey != Q.ey for L, Q in zip(ref.m.layers, qm.layers, strict=True)]
    assert any(adapted), "s8_train should exercise the dynamic range adaptation"
    n_l = len(m.fused)
    e.line(f"/* s8_train: int8 MLP {'-'.join(map(str, sizes))}, kl_train_step, {epochs} epochs "
           f"over {n_train} samples, lr {lr}, seed {seed}; output exponents adapted: "
           f"{sum(adapted)} of {n_l} layers */")
    e.define("S8T_LAYERS", n_l)
    e.define("S8T_N_IN", sizes[0])
    e.define("S8T_N_TRAIN", n_train)
    e.define("S8T_N_TEST", n_test)
    e.define("S8T_EPOCHS", epochs)
    e.define("S8T_LR", _fmt_f32(lr))
    e.define("S8T_SEED", f"{seed}u")
    e.blob("s8t_blob", export.export_s8(qm))
    e.array("int8_t", "s8t_x", xq, rows=True)
    e.array("int", "s8t_y", y)
    e.array("int", "s8t_test_pred", ref.predict(xq[n_train:]))
    for li, L in enumerate(ref.m.layers):
        e.array("int8_t", f"s8t_w_final_l{li}", L.w)
        e.array("int32_t", f"s8t_b_final_l{li}", L.b)
    e.line(f"static const int8_t *const s8t_w_final[{n_l}] = {{"
           + ", ".join(f"s8t_w_final_l{li}" for li in range(n_l)) + "};")
    e.line(f"static const int32_t *const s8t_b_final[{n_l}] = {{"
           + ", ".join(f"s8t_b_final_l{li}" for li in range(n_l)) + "};")
    e.array("int8_t", "s8t_y_exp_final", [L.ey for L in ref.m.layers])
    e.line()


# --------------------------------------------------------------------------- float32


class F64Reference:
    """reference.F32Trainer's arithmetic in float64 (weights and momenta stored as float32,
    like the engine's): golden gradients free of float32 rounding and of the BLAS's summation
    order, rounded to float32 once when written."""

    def __init__(self, layers, params, lr: float, momentum: float):
        self.layers = layers
        self.w = [np.asarray(w, np.float64) for w in params.weights]
        self.b = [np.asarray(b, np.float64) for b in params.biases]
        self.lr, self.mu = float(np.float32(lr)), float(np.float32(momentum))
        self.vw = [np.zeros_like(w) for w in self.w]
        self.vb = [np.zeros_like(b) for b in self.b]

    def grads(self, x: np.ndarray, label: int):
        acts = [np.asarray(x, np.float64)]
        for f, w, b in zip(self.layers, self.w, self.b, strict=True):
            h = w @ acts[-1] + b
            acts.append(np.maximum(h, 0.0) if f.relu else h)
        z = acts[-1]
        ez = np.exp(z - z.max())
        dy = ez / ez.sum()
        dy[label] -= 1.0
        dws: list = [None] * len(self.layers)
        dbs: list = [None] * len(self.layers)
        for i in range(len(self.layers) - 1, -1, -1):
            f = self.layers[i]
            if f.relu:
                dy = np.where(acts[i + 1] > 0, dy, 0.0)
            if f.trainable:
                dws[i], dbs[i] = np.outer(dy, acts[i]), dy.copy()
            if i > 0:
                dy = self.w[i].T @ dy
        return dws, dbs, int(np.argmax(z))

    def apply(self, dws, dbs) -> None:
        for i, f in enumerate(self.layers):
            if not f.trainable:
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


def emit_f32(e: Emitter, tag: str, sizes: list[int], trainable: list[bool] | None, lr: float,
             momentum: float, init_seed: int, data_seed: int, steps: int = 3) -> None:
    rng = np.random.default_rng(data_seed)
    m = build_model(sizes, trainable)
    p = m.init(init_seed)
    x, y = data_for(sizes, rng, steps)
    ref = F64Reference(m.fused, p, lr, momentum)
    chk = R.F32Trainer(m.fused, p, lr=lr, momentum=momentum)
    n_l = len(m.fused)
    T = tag.upper()
    e.line(f"/* {tag}: float32 MLP {'-'.join(map(str, sizes))}, trainable "
           f"{trainable or 'all'}, lr {lr}, momentum {momentum}: kl_compute_grads + "
           f"kl_apply_grads */")
    e.define(f"{T}_STEPS", steps)
    e.define(f"{T}_LAYERS", n_l)
    e.define(f"{T}_N_IN", sizes[0])
    e.define(f"{T}_LR", _fmt_f32(lr))
    e.define(f"{T}_MOMENTUM", _fmt_f32(momentum))
    e.blob(f"{tag}_blob", export.export_f32(m.fused, p))
    e.array("float", f"{tag}_x", x, rows=True, fmt=_fmt_f32)
    e.array("int", f"{tag}_y", y)
    preds, gw_rows, gb_rows = [], [], []
    for s in range(steps):
        dws, dbs, pred = ref.grads(x[s], int(y[s]))
        cw, cb, _ = chk.grads(x[s], int(y[s]))
        preds.append(pred)
        assert pred == int(np.argmax(chk.forward(x[s])[-1]))
        gw_row: list[str | None] = []
        gb_row: list[str | None] = []
        for li in range(n_l):
            if dws[li] is None:
                gw_row.append(None)
                gb_row.append(None)
                continue
            assert _rel(cw[li], dws[li]) < 1e-6 and _rel(cb[li], dbs[li]) < 1e-6
            e.array("float", f"{tag}_gw_s{s}_l{li}", dws[li], fmt=_fmt_f32)
            e.array("float", f"{tag}_gb_s{s}_l{li}", dbs[li], fmt=_fmt_f32)
            gw_row.append(f"{tag}_gw_s{s}_l{li}")
            gb_row.append(f"{tag}_gb_s{s}_l{li}")
        gw_rows.append(gw_row)
        gb_rows.append(gb_row)
        ref.apply(dws, dbs)
        chk.apply(cw, cb)
    e.array("int", f"{tag}_pred", preds)
    e.ptr_table("float", f"{tag}_gw", gw_rows)
    e.ptr_table("float", f"{tag}_gb", gb_rows)
    for li in range(n_l):
        assert _rel(chk.p.weights[li], ref.w[li]) < 1e-6
        e.array("float", f"{tag}_w_final_l{li}", ref.w[li], fmt=_fmt_f32)
        e.array("float", f"{tag}_b_final_l{li}", ref.b[li], fmt=_fmt_f32)
    e.line(f"static const float *const {tag}_w_final[{n_l}] = {{"
           + ", ".join(f"{tag}_w_final_l{li}" for li in range(n_l)) + "};")
    e.line(f"static const float *const {tag}_b_final[{n_l}] = {{"
           + ", ".join(f"{tag}_b_final_l{li}" for li in range(n_l)) + "};")
    e.line()


# --------------------------------------------------------------------------- header


def render() -> str:
    e = Emitter()
    e.line("/* Generated by tests/zephyr/engine/gen_golden.py from the numpy reference "
           "(kilolearn.reference). */")
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
    emit_s8_grads(e)
    emit_s8_train(e)
    emit_f32(e, "f32a", [7, 5, 3], None, lr=0.1, momentum=0.0, init_seed=3, data_seed=303)
    emit_f32(e, "f32b", [20, 16, 12, 5], [False, True, True], lr=0.1, momentum=0.5,
             init_seed=4, data_seed=404)
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
