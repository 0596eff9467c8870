"""The C engine against the numpy reference, on the host (plain and ASan/UBSan) and on the
emulated Cortex-M3/M4/M7/M33: float32 gradients to 1e-5, int8 bit for bit, for dense, conv,
depthwise, pooling and residual graphs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import (
    CMSIS_NN_TARGETS,
    HOST_TARGETS,
    QEMU_BOARDS,
    check_f32_grads,
    check_f32_weights,
    rel_err,
    require_target,
    run_job,
    split_target,
)

from kilolearn.core import model as M
from kilolearn.core import reference as R
from kilolearn.device import job, runner
from kilolearn.formats import export

TARGETS = HOST_TARGETS + QEMU_BOARDS
S8_TARGETS = TARGETS + CMSIS_NN_TARGETS  # the int8 forward kernels through CMSIS-NN too


def residual_net() -> M.Model:
    x = M.Input((6, 6, 4))
    n = M.Node(x, [])
    a = M.ReLU6()(M.BatchNorm()(M.Conv2D(8, 3, 2)(n)))  # 3x3x8, stride 2, SAME
    h = M.ReLU()(M.Conv2D(16, 1)(a))
    h = M.ReLU6()(M.DepthwiseConv2D(3, 1)(h))
    h = M.Conv2D(8, 1)(h)
    r = M.Add(activation="relu")([a, h])
    p = M.AvgPool2D(2, 1)(r)  # overlapping windows
    out = M.Dense(5)(M.Flatten()(M.MaxPool2D(2)(p)))
    return M.Model(M.SoftmaxCrossEntropy()(out))


MODELS = {
    "mlp": lambda: M.mlp([7, 5, 3]),
    "mlp-frozen-first": lambda: M.Model([
        M.Input((20,)), M.Dense(16, trainable=False), M.ReLU(), M.Dense(12), M.ReLU(),
        M.Dense(5), M.SoftmaxCrossEntropy()]),
    "cnn": lambda: M.small_cnn((8, 8, 1), 4, 3),
    "cnn-valid": lambda: M.Model([
        M.Input((7, 9, 2)), M.Conv2D(5, (3, 2), 2, "valid"), M.ReLU(),
        M.DepthwiseConv2D(2, 1, "valid", "relu6"), M.Flatten(), M.Dense(3),
        M.SoftmaxCrossEntropy()]),
    "residual": residual_net,
    "bias-only": lambda: M.Model([  # conv and dense train their biases only
        M.Input((6, 6, 2)), M.Conv2D(4, 3, trainable="bias"), M.ReLU(), M.MaxPool2D(2),
        M.Flatten(), M.Dense(6, "relu", trainable="bias"), M.Dense(3),
        M.SoftmaxCrossEntropy()]),
}


def data_for(m: M.Model, rng, n):
    x = rng.uniform(0, 1, (n,) + m.graph.shapes[m.graph.input]).astype(np.float32)
    y = rng.integers(0, m.n_classes, n)
    return x, y


@pytest.fixture(params=list(MODELS))
def net(request):
    return request.param, MODELS[request.param]()


@pytest.mark.parametrize("target", TARGETS)
def test_f32_gradients_match_numpy(target, net, rng):
    require_target(target)
    board, asan = split_target(target)
    name, m = net
    g = m.graph
    p = m.init(int(rng.integers(1000)))
    for b in p.biases:
        if b is not None:
            b[:] = rng.normal(0, 0.1, b.shape)
    x, y = data_for(m, rng, 3)
    rep = runner.run_job(job.build(export.export_f32(g, p), x, y, cmd=job.CMD_GRADS, n_steps=3,
                                   lr=0.1, momentum=0.5, dump_weights=True), board, sanitize=asan)
    ref = R.F32Trainer(g, p, lr=0.1, momentum=0.5)
    for s in range(3):
        dws, dbs, _ = ref.grads(x[s], int(y[s]))
        assert rep.records["step"][s]["pred"] == int(np.argmax(ref.logits(x[s])))
        check_f32_grads(rep, g, dws, dbs, s, name)
        ref.apply(dws, dbs)
    check_f32_weights(rep, g, ref.p.weights, name)


@pytest.mark.parametrize("target", TARGETS)
def test_f32_fused_training_matches_numpy(target, rng):
    """Fused float32 SGD steps without momentum (the fpu kernels' VLDM/VFMA blocks of eight and
    their tails on M4/M7/M33): weights after 2 epochs equal numpy's to float rounding.
    mlp-blocks: one, two and four blocks of eight per loop iteration (24, 16, 32 inputs), odd
    rows (9, 5), input gradients over rows that ReLU zeroed, and a layer without whole blocks."""
    require_target(target)
    board, asan = split_target(target)
    shapes = {"mlp-big": [64, 32, 10], "mlp-blocks": [24, 16, 9, 32, 5]}
    for name in ("mlp-big", "mlp-blocks", "mlp-frozen-first"):
        m = M.mlp(shapes[name]) if name in shapes else MODELS[name]()
        g = m.graph
        p = m.init(3)
        x, y = data_for(m, rng, 40)
        rep = runner.run_job(job.build(export.export_f32(g, p), x, y, x[:20], y[:20], lr=0.1,
                                       epochs=2, dump_weights=True), board, sanitize=asan)
        ref = R.F32Trainer(g, p, lr=0.1)
        R.train_in_order(ref, x, y, 2)
        for i, op in enumerate(g.ops):
            if op.has_params:
                got = rep.dump(f"w{i:02d}", "<f4").reshape(ref.p.weights[i].shape)
                assert rel_err(got, ref.p.weights[i]) < 1e-5, (name, i)
                assert rel_err(rep.dump(f"b{i:02d}", "<f4"), ref.p.biases[i]) < 1e-5, (name, i)


@pytest.mark.parametrize("target", S8_TARGETS)
def test_s8_gradients_bit_exact(target, net, rng):
    require_target(target)
    name, m = net
    g = m.graph
    p = m.init(int(rng.integers(1000)))
    x, y = data_for(m, rng, 4)
    qm = R.quantize_model(g, p, x)
    xq = qm.quantize_input(x)
    rep = run_job(job.build(export.export_s8(qm), xq, y, cmd=job.CMD_GRADS, n_steps=4,
                            lr=0.2, seed=77, dump_weights=True), target)
    ref = R.S8Trainer(qm, lr=0.2, seed=77)
    for s in range(4):
        gs = ref.grads(xq[s], int(y[s]))
        assert rep.records["step"][s]["dlogits_exp"] == ref.logits_grad_exp, name
        assert np.array_equal(rep.dump("logits", "i1", s), ref._fw.acts[g.output].reshape(-1))
        for i, gr in enumerate(gs):
            exps = rep.records["exps"][s * len(g.ops) + i]
            assert exps["y"] == ref.m.exp[g.ops[i].output], (name, s, i)
            if gr is None:
                assert f"g{i:02d}w" not in rep.dumps
                continue
            assert exps["gb"] == gr.gb_exp, (name, s, i)
            if gr.gw is None:  # bias only
                assert f"g{i:02d}w" not in rep.dumps
            else:
                assert exps["gw"] == gr.gw_exp, (name, s, i)
                got = rep.dump(f"g{i:02d}w", "<i4", s).reshape(gr.gw.shape)
                assert np.array_equal(got, gr.gw), (name, s, i)
            assert np.array_equal(rep.dump(f"g{i:02d}b", "<i4", s), gr.gb), (name, s, i)
        ref.apply(gs)
    for i, op in enumerate(g.ops):
        if op.has_params:
            assert np.array_equal(rep.dump(f"w{i:02d}", "i1").reshape(ref.m.w[i].shape),
                                  ref.m.w[i]), (name, i)
            assert np.array_equal(rep.dump(f"b{i:02d}", "<i4"), ref.m.b[i]), (name, i)


@pytest.mark.parametrize("target", S8_TARGETS)
def test_s8_fused_training_bit_exact(target, rng):
    """Many fused steps (kl_train_step): weights, biases and the adapted exponents agree."""
    require_target(target)
    for name in ("mlp-big", "residual", "bias-only"):
        m = M.mlp([64, 32, 10]) if name == "mlp-big" else MODELS[name]()
        g = m.graph
        p = m.init(5)
        x, y = data_for(m, rng, 150 if name == "mlp-big" else 40)
        qm = R.quantize_model(g, p, x[:10])
        xq = qm.quantize_input(x)
        rep = run_job(job.build(export.export_s8(qm), xq, y, xq[:30], y[:30], lr=0.3,
                                seed=9, epochs=2, dump_weights=True), target)
        ref = R.S8Trainer(qm, lr=0.3, seed=9)
        R.train_in_order(ref, xq, y, 2)
        assert rep.records["epoch"][-1]["test_correct"] == \
            int((ref.predict(xq[:30]) == y[:30]).sum())
        for i, op in enumerate(g.ops):
            assert rep.records["exps"][i]["y"] == ref.m.exp[op.output], (name, i)
            if op.has_params:
                assert np.array_equal(rep.dump(f"w{i:02d}", "i1").reshape(ref.m.w[i].shape),
                                      ref.m.w[i]), (name, i)
                assert np.array_equal(rep.dump(f"b{i:02d}", "<i4"), ref.m.b[i]), (name, i)
        assert ref.m.exp != qm.exp, "the test should exercise the dynamic range adaptation"


@pytest.mark.parametrize("target", CMSIS_NN_TARGETS)
def test_cmsis_nn_blocks_in_the_planned_arena(target, rng):
    """The CMSIS-NN backend keeps a parameter block per int8 dense, conv and depthwise op in
    the arena (kl_cmsis_blocks): the arena the engine uses is the planner's (MemModel with
    cmsis_nn) to the byte, trained and frozen layers alike, and the blocks are what it adds."""
    require_target(target)
    from kilolearn.planner import memory as P

    board, _ = split_target(target)
    arch = "host" if board == "host" else "arm"
    for name in ("cnn", "residual", "mlp-frozen-first", "bias-only", "cnn-valid"):
        m = MODELS[name]()
        g = m.graph
        p = m.init(3)
        x, y = data_for(m, rng, 3)
        qm = R.quantize_model(g, p, x)
        rep = run_job(job.build(export.export_s8(qm), qm.quantize_input(x), y, lr=0.05), target)
        mm = P.MemModel(g, "s8", target=arch, cmsis_nn=True)
        assert rep.one("done")["arena_peak"] == mm.store_all_bytes(), name
        ptr = 8 if arch == "host" else 4
        blocks = sum(12 + (4 * mm.tsize[op.output] if op.kind == "dense"
                           else 12 * g.shapes[op.output][2])
                     for op in g.ops if op.kind in ("dense", "conv", "dwconv"))
        plain = P.MemModel(g, "s8", target=arch).store_all_bytes()
        assert plain < mm.store_all_bytes() <= plain + ptr * len(g.ops) + blocks + ptr, name
