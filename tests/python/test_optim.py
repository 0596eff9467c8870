"""Optimisers and batches (issue 20): Adam (float32), SGD with momentum in int8 FQT (an int32
velocity in the arena), mini-batches by gradient accumulation (batch N, one update: float32 and
int8). The numpy twin against independent float64 formulas; the engine against the twin on the
host (plain and ASan/UBSan) and the emulated Cortex-M3/M4/M7/M33: float32 to 1e-5, int8 bit for
bit; the arena against the planner's MemModel."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import (
    QEMU_BOARDS,
    rel_err,
    require_target,
    run_fuzz_firmware,
    run_job,
    split_target,
)
from test_engine import MODELS, data_for

from kilolearn import planner as P
from kilolearn.core import model as M
from kilolearn.core import reference as R
from kilolearn.device import job, runner
from kilolearn.formats import export

TARGETS = ["host", "host-asan"] + QEMU_BOARDS
NETS = ("mlp-frozen-first", "cnn", "bias-only")


def test_adam_and_batch_twin_against_float64_formulas(rng):
    """Three Adam updates of the twin, each on the mean gradient of a batch of 2, against
    Adam written out in float64 on the twin's own per-sample gradients."""
    m = M.mlp([6, 5, 3])
    g = m.graph
    p = m.init(0)
    x, y = data_for(m, rng, 6)
    tr = R.F32Trainer(g, p, lr=0.01, optimizer="adam", batch=2)
    plain = R.F32Trainer(g, p)  # gradients only
    w = [None if a is None else a.astype(np.float64) for a in p.weights]
    mo = [None if a is None else np.zeros_like(a) for a in w]
    v = [None if a is None else np.zeros_like(a) for a in w]
    for t in range(1, 4):
        plain.p.weights = [None if a is None else a.astype(np.float32) for a in w]
        plain.p.biases = [None if b is None else b.copy() for b in tr.p.biases]
        gs = [plain.grads(x[2 * (t - 1) + k], int(y[2 * (t - 1) + k]))[0] for k in range(2)]
        for k in (2 * (t - 1), 2 * (t - 1) + 1):
            tr.step(x[k], int(y[k]))
        for i, a in enumerate(w):
            if a is None:
                continue
            gm = (gs[0][i].astype(np.float64) + gs[1][i]) / 2
            mo[i] = 0.9 * mo[i] + 0.1 * gm
            v[i] = 0.999 * v[i] + 0.001 * gm * gm
            a -= 0.01 * (mo[i] / (1 - 0.9**t)) / (np.sqrt(v[i] / (1 - 0.999**t)) + 1e-8)
            assert np.abs(tr.p.weights[i] - a).max() < 1e-4, (t, i)


def test_s8_batch_is_the_mean_gradient(rng):
    """An int8 batch of 4 without momentum moves the weights by the mean of the four samples'
    gradients (dequantised, the same weights for each: computed before the update) times lr,
    to the int8 step's rounding."""
    m = M.mlp([12, 8, 4])
    g = m.graph
    p = m.init(1)
    x, y = data_for(m, rng, 4)
    qm = R.quantize_model(g, p, x)
    xq = qm.quantize_input(x)
    one = R.S8Trainer(qm, lr=0.5)
    gr = [one.grads(xq[k], int(y[k])) for k in range(4)]
    tr = R.S8Trainer(qm, lr=0.5, batch=4)
    for k in range(4):
        tr.step(xq[k], int(y[k]))
    for i in (0, 1):
        mean = sum(r[i].gw * 2.0 ** r[i].gw_exp for r in gr) / 4
        moved = (qm.w[i] - tr.m.w[i]) * 2.0 ** qm.ew[i]
        want = 0.5 * mean
        assert np.abs(moved - want).max() <= 2.0 ** qm.ew[i] + 1e-12  # one int8 step
        assert rel_err(moved, want) < 0.2


CONFIGS_F32 = {
    "adam": dict(optimizer="adam"),
    "adam-batch4": dict(optimizer="adam", batch=4),
    "sgd-batch3": dict(batch=3),
    "momentum-batch2": dict(batch=2, momentum=0.9),
}


@pytest.mark.parametrize("target", TARGETS)
def test_f32_optimisers_match_numpy(target, rng):
    require_target(target)
    board, asan = split_target(target)
    for name in NETS:
        m = MODELS[name]()
        g = m.graph
        p = m.init(3)
        x, y = data_for(m, rng, 24)
        for cname, cfg in CONFIGS_F32.items():
            kw = {k: v for k, v in cfg.items() if k != "momentum"}
            mu = cfg.get("momentum", 0.0)
            lr = 0.01 if cfg.get("optimizer") == "adam" else 0.1
            rep = runner.run_job(job.build(export.export_f32(g, p), x, y, lr=lr, momentum=mu,
                                           epochs=2, dump_weights=True, **kw),
                                 board, sanitize=asan)
            ref = R.F32Trainer(g, p, lr=lr, momentum=mu, **kw)
            R.train_in_order(ref, x, y, 2)
            for i, op in enumerate(g.ops):
                if op.has_params:
                    got = rep.dump(f"w{i:02d}", "<f4").reshape(ref.p.weights[i].shape)
                    assert rel_err(got, ref.p.weights[i]) < 1e-5, (name, cname, i)
                    assert rel_err(rep.dump(f"b{i:02d}", "<f4"), ref.p.biases[i]) < 1e-5, \
                        (name, cname, i)
        # Adam through kl_compute_grads / kl_apply_grads
        rep = runner.run_job(job.build(export.export_f32(g, p), x, y, cmd=job.CMD_GRADS,
                                       n_steps=3, lr=0.01, dump_weights=True,
                                       optimizer="adam"), board, sanitize=asan)
        ref = R.F32Trainer(g, p, lr=0.01, optimizer="adam")
        for s in range(3):
            ref.step(x[s], int(y[s]))
        for i, op in enumerate(g.ops):
            if op.has_params:
                got = rep.dump(f"w{i:02d}", "<f4").reshape(ref.p.weights[i].shape)
                assert rel_err(got, ref.p.weights[i]) < 1e-5, (name, "grads", i)


CONFIGS_S8 = {
    "momentum": dict(momentum=0.9),
    "batch4": dict(batch=4),
    "momentum-batch2": dict(momentum=0.5, batch=2),
}


@pytest.mark.parametrize("target", TARGETS)
def test_s8_momentum_and_batches_bit_exact(target, rng):
    require_target(target)
    for name in NETS:
        m = MODELS[name]()
        g = m.graph
        p = m.init(5)
        x, y = data_for(m, rng, 32)
        qm = R.quantize_model(g, p, x[:10])
        xq = qm.quantize_input(x)
        for cname, cfg in CONFIGS_S8.items():
            kw = {"batch": cfg.get("batch", 1)}
            mu = cfg.get("momentum", 0.0)
            rep = run_job(job.build(export.export_s8(qm), xq, y, xq[:16], y[:16], lr=0.2,
                                    momentum=mu, seed=9, epochs=2, dump_weights=True, **kw),
                          target)
            ref = R.S8Trainer(qm, lr=0.2, momentum=mu, seed=9, **kw)
            R.train_in_order(ref, xq, y, 2)
            assert rep.records["epoch"][-1]["test_correct"] == \
                int((ref.predict(xq[:16]) == y[:16]).sum()), (name, cname)
            for i, op in enumerate(g.ops):
                assert rep.records["exps"][i]["y"] == ref.m.exp[op.output], (name, cname, i)
                if op.has_params:
                    assert np.array_equal(rep.dump(f"w{i:02d}", "i1").reshape(
                        ref.m.w[i].shape), ref.m.w[i]), (name, cname, i)
                    assert np.array_equal(rep.dump(f"b{i:02d}", "<i4"), ref.m.b[i]), \
                        (name, cname, i)
        # momentum through kl_compute_grads / kl_apply_grads: the same integers
        rep = run_job(job.build(export.export_s8(qm), xq, y, cmd=job.CMD_GRADS, n_steps=4,
                                lr=0.2, momentum=0.9, seed=7, dump_weights=True), target)
        ref = R.S8Trainer(qm, lr=0.2, momentum=0.9, seed=7)
        for s in range(4):
            gs = ref.grads(xq[s], int(y[s]))
            for i, gr in enumerate(gs):
                if gr is not None and gr.gw is not None:
                    got = rep.dump(f"g{i:02d}w", "<i4", s).reshape(gr.gw.shape)
                    assert np.array_equal(got, gr.gw), (name, s, i)
            ref.apply(gs)
        for i, op in enumerate(g.ops):
            if op.has_params:
                assert np.array_equal(rep.dump(f"w{i:02d}", "i1").reshape(ref.m.w[i].shape),
                                      ref.m.w[i]), (name, "grads", i)


@pytest.mark.parametrize("target", ["host", "mps2-an386"])
def test_optimiser_state_in_the_planned_arena(target, rng):
    """The arena the engine uses (its peak, store-all) is the planner's to the byte, with the
    optimiser state: Adam's two moments, the int8 velocity, the batch's sums."""
    require_target(target)
    board, _ = split_target(target)
    m = MODELS["cnn"]()
    g = m.graph
    p = m.init(2)
    x, y = data_for(m, rng, 4)
    qm = R.quantize_model(g, p, x)
    arch = "host" if board == "host" else "arm"
    cases = [("f32", dict(optimizer="adam"), 0.0), ("f32", dict(optimizer="adam", batch=2), 0.0),
             ("f32", dict(batch=2), 0.9), ("s8", dict(batch=4), 0.0), ("s8", {}, 0.9),
             ("s8", dict(batch=2), 0.5)]
    peaks = set()
    for dtype, kw, mu in cases:
        blob = export.export_f32(g, p) if dtype == "f32" else export.export_s8(qm)
        xs = x if dtype == "f32" else qm.quantize_input(x)
        rep = runner.run_job(job.build(blob, xs, y, lr=0.01, momentum=mu, **kw), board)
        mm = P.MemModel(g, dtype, momentum=mu != 0.0, optimizer=kw.get("optimizer", "sgd"),
                        batch=kw.get("batch", 1), target=arch)
        assert rep.one("done")["arena_peak"] == mm.store_all_bytes(), (dtype, kw, mu)
        peaks.add(mm.store_all_bytes())
    assert len(peaks) >= 4


def test_bad_optimiser_configurations(rng):
    """int8 Adam is KL_ENOTSUP, an int8 batch of 3 KL_EINVAL, a batch with a schedule
    KL_ENOTSUP; the twin refuses the int8 batch too."""
    m = M.mlp([6, 5, 3])
    p = m.init(0)
    x, y = data_for(m, rng, 4)
    qm = R.quantize_model(m.graph, p, x)
    xq = qm.quantize_input(x)
    for kw, code in ((dict(optimizer="adam"), -134), (dict(batch=3), -22)):
        with pytest.raises(runner.RunError, match=f"code {code}"):
            runner.run_job(job.build(export.export_s8(qm), xq, y, **kw), "host", sanitize=True)
    mm = P.MemModel(m.graph, "s8")
    plan = P.baseline(mm, "sqrt-n")
    with pytest.raises(runner.RunError, match="code -134"):
        runner.run_job(job.build(export.export_s8(qm, plan), xq, y, batch=2), "host",
                       sanitize=True)
    with pytest.raises(ValueError):
        R.S8Trainer(qm, batch=3)


@pytest.mark.parametrize("target", ["host", "host-asan", "mps2-an385", "mps2-an386"])
def test_accumulate_fuzz_equals_its_definition(target: str) -> None:
    """kl_accumulate_s8 (int8 batch sums, momentum velocity) = its definition in plain 64-bit
    arithmetic (tests/c/kl_fuzz_acc.c) on random and extreme inputs: sums at KL_ACC_MAX,
    gradients at INT32_MIN/MAX, exponent gaps up to 70, mu 0, 1 and random; every other case
    kl_quantize_grad_s8 (int32 sums to int8) against its rule, over magnitudes of every bit
    length, INT32_MIN/MAX, exact halves and the rounding carry, in place and apart."""
    require_target(target)
    cases, mismatches = run_fuzz_firmware(target, "kl_fuzz_acc")
    assert cases == 4000 and mismatches == 0
