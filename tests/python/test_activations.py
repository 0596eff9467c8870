"""Sigmoid, tanh and leaky ReLU (issue 20): the numpy twin's float gradients against finite
differences; the engine against the twin on the host (plain and ASan/UBSan) and on the emulated
Cortex-M3/M4/M7/M33: float32 to 1e-5, int8 bit for bit (gradients, weights, exponents), also
with a memory plan (schedule); the engine's int8 tables against their formulas."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    QEMU_BOARDS,
    check_f32_grads,
    rel_err,
    require_target,
    run_job,
    split_target,
)
from test_losses import check_finite_differences
from test_schedule import comparable, plans_for
from test_schedule import run as run_sched

from kilolearn import planner as P
from kilolearn.core import model as M
from kilolearn.core import reference as R
from kilolearn.device import job, runner
from kilolearn.formats import export

TARGETS = ["host", "host-asan"] + QEMU_BOARDS
ROOT = Path(__file__).resolve().parents[2]


def acts_cnn() -> M.Model:
    """Each new activation after each op kind with parameters; a leaky-ReLU output with two
    consumers (its gradient is a sum)."""
    x = M.Node(M.Input((6, 6, 2)), [])
    a = M.LeakyReLU()(M.Conv2D(4, 3)(x))
    h = M.Tanh()(M.DepthwiseConv2D(3, 1)(a))
    h = M.Sigmoid()(M.Conv2D(4, 1)(h))
    r = M.Add()([a, h])
    out = M.Dense(3)(M.Flatten()(M.MaxPool2D(2)(r)))
    return M.Model(M.SoftmaxCrossEntropy()(out))


ACT_MODELS = {
    "mlp": lambda: M.Model([M.Input((10,)), M.Dense(8, "sigmoid"), M.Dense(6, "tanh"),
                            M.Dense(5), M.LeakyReLU(), M.Dense(3), M.SoftmaxCrossEntropy()]),
    "cnn": acts_cnn,
    "autoencoder": lambda: M.Model([M.Input((8,)), M.Dense(4), M.Tanh(), M.Dense(8),
                                    M.MeanSquaredError()]),
}


def init(m: M.Model, rng: np.random.Generator):
    p = m.init(int(rng.integers(1000)))
    for b in p.biases:
        if b is not None:
            b[:] = rng.normal(0, 0.3, b.shape)
    return p


def data(m: M.Model, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    g = m.graph
    x = rng.uniform(-1, 1, (n,) + g.shapes[g.input]).astype(np.float32)
    return x, rng.integers(0, max(g.n_classes, 2) if g.loss == "softmax_ce" else 1, n)


def test_int8_tables_match_their_formulas():
    """The engine's tables (kl_activation_s8.c), parsed from the source, equal the formulas
    evaluated in float64; the twin uses the formulas."""
    src = (ROOT / "modules/kilolearn/src/kernels/ref/kl_activation_s8.c").read_text()
    body = re.search(r"kl_sigmoid_table\[256\] = \{(.*?)\};", src, re.S).group(1)
    table = np.array([int(v) for v in body.replace("\n", " ").split(",") if v.strip()])
    for act in ("sigmoid", "tanh"):  # tanh: the same table clamped to -127 (the kernel's rule)
        vals = np.maximum(table, -128 if act == "sigmoid" else -127)
        p = np.arange(-128, 128) / (16.0 if act == "sigmoid" else 32.0)
        f = 256 / (1 + np.exp(-p)) - 128 if act == "sigmoid" else 128 * np.tanh(p)
        lo = -128 if act == "sigmoid" else -127
        assert vals.size == 256 and np.array_equal(vals, np.clip(np.round(f), lo, 127))
        assert np.array_equal(vals, R.act_table(act))


@pytest.mark.parametrize("name", list(ACT_MODELS))
def test_f32_activation_gradients_match_finite_differences(name, rng):
    m = ACT_MODELS[name]()
    p = init(m, rng)
    x, y = data(m, rng, 1)
    tr = R.F32Trainer(m.graph, p)
    dws, dbs, _ = tr.grads(x[0], int(y[0]))

    def loss64() -> float:
        t64 = R.F32Trainer(tr.g, tr.p)
        t64.p.weights = [None if w is None else w.astype(np.float64) for w in tr.p.weights]
        t64.p.biases = [None if b is None else b.astype(np.float64) for b in tr.p.biases]
        z = t64.forward(x[0], dtype=np.float64)[tr.g.output].reshape(-1)
        if tr.g.loss == "mse":
            return float(np.mean((z - x[0].reshape(-1)) ** 2))
        z = z - z.max()
        return float(-(z[int(y[0])] - np.log(np.exp(z).sum())))

    assert check_finite_differences(tr, dws, dbs, loss64, rng, name) > 0


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", list(ACT_MODELS))
def test_f32_activations_match_numpy(target, name, rng):
    require_target(target)
    board, asan = split_target(target)
    m = ACT_MODELS[name]()
    g = m.graph
    p = init(m, rng)
    x, y = data(m, rng, 3)
    rep = runner.run_job(job.build(export.export_f32(g, p), x, y, cmd=job.CMD_GRADS, n_steps=3,
                                   lr=0.1, dump_weights=True), board, sanitize=asan)
    ref = R.F32Trainer(g, p, lr=0.1)
    for s in range(3):
        dws, dbs, _ = ref.grads(x[s], int(y[s]))
        assert rel_err(rep.dump("logits", "<f4", s), ref.logits(x[s])) < 1e-5
        check_f32_grads(rep, g, dws, dbs, s, name)
        ref.apply(dws, dbs)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", list(ACT_MODELS))
def test_s8_activations_bit_exact(target, name, rng):
    require_target(target)
    m = ACT_MODELS[name]()
    g = m.graph
    p = init(m, rng)
    x, y = data(m, rng, 30)
    qm = R.quantize_model(g, p, x[:10])
    xq = qm.quantize_input(x)
    rep = run_job(job.build(export.export_s8(qm), xq, y, cmd=job.CMD_GRADS, n_steps=4, lr=0.2,
                            seed=77, dump_weights=True), target)
    ref = R.S8Trainer(qm, lr=0.2, seed=77)
    for s in range(4):
        gs = ref.grads(xq[s], int(y[s]))
        assert rep.records["step"][s]["dlogits_exp"] == ref.logits_grad_exp, name
        assert np.array_equal(rep.dump("logits", "i1", s), ref._fw.acts[g.output].reshape(-1))
        for i, gr in enumerate(gs):
            if gr is None:
                continue
            assert rep.records["exps"][s * len(g.ops) + i]["gw"] == gr.gw_exp, (name, s, i)
            got = rep.dump(f"g{i:02d}w", "<i4", s).reshape(gr.gw.shape)
            assert np.array_equal(got, gr.gw), (name, s, i)
            assert np.array_equal(rep.dump(f"g{i:02d}b", "<i4", s), gr.gb), (name, s, i)
        ref.apply(gs)
    # fused training, two epochs
    rep = run_job(job.build(export.export_s8(qm), xq, y, lr=0.3, seed=9, epochs=2,
                            dump_weights=True), target)
    ref = R.S8Trainer(qm, lr=0.3, seed=9)
    R.train_in_order(ref, xq, y, 2)
    for i, op in enumerate(g.ops):
        assert rep.records["exps"][i]["y"] == ref.m.exp[op.output], (name, i)
        if op.has_params:
            assert np.array_equal(rep.dump(f"w{i:02d}", "i1").reshape(ref.m.w[i].shape),
                                  ref.m.w[i]), (name, i)
            assert np.array_equal(rep.dump(f"b{i:02d}", "<i4"), ref.m.b[i]), (name, i)


@pytest.mark.parametrize("target", ["host", "host-asan"])
def test_s8_activation_schedules_bit_identical(target, rng):
    """Planned (recomputing) schedules of the activation CNN give the store-all bits: the planner
    and the blob check agree on what a sigmoid/tanh/leaky backward step reads (its output)."""
    board, asan = split_target(target)
    m = acts_cnn()
    g = m.graph
    p = init(m, rng)
    x, y = data(m, rng, 6)
    qm = R.quantize_model(g, p, x)
    xq = qm.quantize_input(x)
    mm = P.MemModel(g, "s8", keep_grads=True, target="host")
    for c in (job.CMD_GRADS, job.CMD_TRAIN):
        ref = run_sched(export.export_s8(qm), xq, y, board, asan, c)
        for pl in plans_for("acts", mm):
            rep = run_sched(export.export_s8(qm, pl), xq, y, board, asan, c)
            assert comparable(rep) == comparable(ref), (pl.name, c)


def test_activation_rules_and_blob(rng):
    """Sigmoid/tanh only after ops with parameters; int8 sigmoid/tanh outputs have the tables'
    fixed scale (else KL_ECORRUPT); the blob is 2.6."""
    with pytest.raises(M.ModelError, match="only after"):
        M.Model([M.Input((4, 4, 1)), M.MaxPool2D(2), M.Sigmoid(), M.Flatten(), M.Dense(2),
                 M.SoftmaxCrossEntropy()])
    m = ACT_MODELS["mlp"]()
    p = m.init(0)
    x = rng.uniform(-1, 1, (4, 10)).astype(np.float32)
    qm = R.quantize_model(m.graph, p, x)
    assert (qm.exp[m.graph.ops[0].output], qm.zp[m.graph.ops[0].output]) == (-8, -128)
    blob = export.export_s8(qm)
    assert blob[6] == export.VERSION_ACTS[1]
    bad = qm.copy()
    bad.exp[m.graph.ops[0].output] = -7
    with pytest.raises(runner.RunError, match="code -204"):
        runner.run_job(job.build(export.export_s8(bad), qm.quantize_input(x), np.zeros(4, int)),
                       "host", sanitize=True)
