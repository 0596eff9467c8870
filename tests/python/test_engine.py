"""The C engine against the numpy reference, on the host (plain and ASan/UBSan) and on the
emulated Cortex-M3/M4/M7/M33: float32 gradients to 1e-5, int8 bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import HOST_TARGETS, QEMU_BOARDS, require_target, split_target

from kilolearn import export, job, model, runner
from kilolearn import reference as R

TARGETS = HOST_TARGETS + QEMU_BOARDS
SHAPES = [  # (layer sizes, trainable flags)
    ([7, 5, 3], None),
    ([64, 32, 10], None),
    ([33, 17, 9, 4], None),
    ([20, 16, 12, 5], [False, True, True]),
]


def build_model(sizes, trainable):
    layers: list = [model.Input(sizes[0])]
    for k, n in enumerate(sizes[1:]):
        tr = True if trainable is None else trainable[k]
        last = k == len(sizes) - 2
        layers.append(model.Dense(n, None if last else "relu", trainable=tr))
    return model.Model(layers + [model.SoftmaxCrossEntropy()])


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def data_for(sizes, rng, n):
    x = rng.uniform(0, 1, (n, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], n)
    return x, y


@pytest.mark.parametrize("target", TARGETS)
def test_f32_gradients_match_numpy(target, rng):
    require_target(target)
    board, asan = split_target(target)
    for sizes, trainable in SHAPES:
        m = build_model(sizes, trainable)
        p = m.init(int(rng.integers(1000)))
        x, y = data_for(sizes, rng, 3)
        rep = runner.run_job(job.build(export.export_f32(m.fused, p), x, y, cmd=job.CMD_GRADS,
                                       n_steps=3, lr=0.1, momentum=0.5, dump_weights=True),
                             board, sanitize=asan)
        ref = R.F32Trainer(m.fused, p, lr=0.1, momentum=0.5)
        for s in range(3):
            dws, dbs, _ = ref.grads(x[s], int(y[s]))
            assert rep.records["step"][s]["pred"] == int(np.argmax(ref.forward(x[s])[-1]))
            for li, f in enumerate(m.fused):
                if not f.trainable:
                    assert f"g{li:02d}w" not in rep.dumps
                    continue
                gw = rep.dump(f"g{li:02d}w", "<f4", s).reshape(dws[li].shape)
                gb = rep.dump(f"g{li:02d}b", "<f4", s)
                assert rel_err(gw, dws[li]) < 1e-5, (sizes, s, li)
                assert rel_err(gb, dbs[li]) < 1e-5, (sizes, s, li)
            ref.apply(dws, dbs)
        for li in range(len(m.fused)):
            w = rep.dump(f"w{li:02d}", "<f4").reshape(ref.p.weights[li].shape)
            assert rel_err(w, ref.p.weights[li]) < 1e-5


@pytest.mark.parametrize("target", TARGETS)
def test_s8_gradients_bit_exact(target, rng):
    require_target(target)
    board, asan = split_target(target)
    for sizes, trainable in SHAPES:
        m = build_model(sizes, trainable)
        p = m.init(int(rng.integers(1000)))
        x, y = data_for(sizes, rng, 4)
        qm = R.quantize_model(m.fused, p, x)
        xq = qm.quantize_input(x)
        rep = runner.run_job(job.build(export.export_s8(qm), xq, y, cmd=job.CMD_GRADS, n_steps=4,
                                       lr=0.2, seed=77, dump_weights=True), board, sanitize=asan)
        ref = R.S8Trainer(qm, lr=0.2, seed=77)
        for s in range(4):
            gs = ref.grads(xq[s], int(y[s]))
            step = rep.records["step"][s]
            assert step["dlogits_exp"] == ref.logits_grad_exp
            assert np.array_equal(rep.dump("logits", "i1", s), ref._fw.acts[-1])
            for li, g in enumerate(gs):
                if g is None:
                    assert f"g{li:02d}w" not in rep.dumps
                    continue
                exps = rep.records["exps"][s * len(gs) + li]
                assert (exps["gw"], exps["gb"]) == (g.gw_exp, g.gb_exp)
                assert np.array_equal(rep.dump(f"g{li:02d}w", "<i4", s).reshape(g.gw.shape), g.gw)
                assert np.array_equal(rep.dump(f"g{li:02d}b", "i1", s), g.gb)
            ref.apply(gs)
        for li, L in enumerate(ref.m.layers):
            assert np.array_equal(rep.dump(f"w{li:02d}", "i1").reshape(L.w.shape), L.w)
            assert np.array_equal(rep.dump(f"b{li:02d}", "<i4"), L.b)


@pytest.mark.parametrize("target", TARGETS)
def test_s8_fused_training_bit_exact(target, rng):
    """Many fused steps (kl_train_step): weights, biases and the adapted exponents agree."""
    require_target(target)
    board, asan = split_target(target)
    sizes = [64, 32, 10]
    m = build_model(sizes, None)
    p = m.init(5)
    x, y = data_for(sizes, rng, 150)
    qm = R.quantize_model(m.fused, p, x[:10])
    xq = qm.quantize_input(x)
    rep = runner.run_job(job.build(export.export_s8(qm), xq, y, xq[:50], y[:50], lr=0.3, seed=9,
                                   epochs=2, dump_weights=True), board, sanitize=asan)
    ref = R.S8Trainer(qm, lr=0.3, seed=9)
    for _ in range(2):
        for i in range(len(xq)):
            ref.step(xq[i], int(y[i]))
    assert rep.records["epoch"][-1]["test_correct"] == int((ref.predict(xq[:50]) == y[:50]).sum())
    for li, L in enumerate(ref.m.layers):
        assert np.array_equal(rep.dump(f"w{li:02d}", "i1").reshape(L.w.shape), L.w)
        assert np.array_equal(rep.dump(f"b{li:02d}", "<i4"), L.b)
        assert rep.records["exps"][li]["y"] == L.ey
    assert any(L.ey != Q.ey for L, Q in zip(ref.m.layers, qm.layers, strict=True)), \
        "the test should exercise the dynamic range adaptation"
