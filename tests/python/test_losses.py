"""Regression and multi-label losses (issue 20): mean squared error (with a target, or the input
itself: an autoencoder) and sigmoid binary cross-entropy (binary and multi-label). The numpy
twin's float gradients against finite differences; the engine against the twin on the host
(plain and ASan/UBSan) and on the emulated Cortex-M3/M4/M7/M33: float32 to 1e-5, int8 bit for
bit (gradients, weights, exponents, the anomaly score); the blob's loss byte (format 2.5)."""

from __future__ import annotations

import re
import struct
from collections.abc import Callable

import numpy as np
import pytest
from conftest import (
    QEMU_BOARDS,
    check_f32_grads,
    check_f32_weights,
    require_target,
    run_job,
    split_target,
)
from test_blob import reseal

from kilolearn.core import model as M
from kilolearn.core import reference as R
from kilolearn.device import job, runner
from kilolearn.formats import export

TARGETS = ["host", "host-asan"] + QEMU_BOARDS

LOSS_MODELS = {
    # an autoencoder: MSE toward its own input
    "autoencoder": lambda: M.Model([M.Input((12,)), M.Dense(6), M.ReLU(), M.Dense(3),
                                    M.ReLU(), M.Dense(6), M.ReLU(), M.Dense(12),
                                    M.MeanSquaredError()]),
    # regression: MSE toward given targets, through a conv net
    "regression": lambda: M.Model([M.Input((6, 6, 2)), M.Conv2D(4, 3), M.ReLU(),
                                   M.MaxPool2D(2), M.Flatten(), M.Dense(8, "relu"),
                                   M.Dense(3), M.MeanSquaredError()]),
    # multi-label: sigmoid BCE toward 0/1 target vectors
    "multilabel": lambda: M.Model([M.Input((10,)), M.Dense(8), M.ReLU6(), M.Dense(4),
                                   M.SigmoidBinaryCrossEntropy()]),
    # binary: one sigmoid output, the label is the target
    "binary": lambda: M.Model([M.Input((9,)), M.Dense(6), M.ReLU(), M.Dense(1),
                               M.SigmoidBinaryCrossEntropy()]),
}


def sample(name: str, m: M.Model, rng: np.random.Generator, n: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(x, labels, float targets or None): targets of the regression and multi-label nets,
    labels of the binary one, neither for the autoencoder (its input is the target)."""
    g = m.graph
    x = rng.uniform(0, 1, (n,) + g.shapes[g.input]).astype(np.float32)
    y = rng.integers(0, 2, n) if name == "binary" else np.zeros(n, np.int64)
    t = None
    if name == "regression":
        t = rng.normal(0, 0.5, (n, g.n_classes)).astype(np.float32)
    elif name == "multilabel":
        t = rng.integers(0, 2, (n, g.n_classes)).astype(np.float32)
    return x, y, t


def init(m: M.Model, rng: np.random.Generator):
    p = m.init(int(rng.integers(1000)))
    for b in p.biases:
        if b is not None:
            b[:] = rng.normal(0, 0.1, b.shape)
    return p


def loss64(tr: R.F32Trainer, x: np.ndarray, label: int, t: np.ndarray | None) -> float:
    """The loss in float64, written out independently of the twin's loss_grad."""
    t64 = R.F32Trainer(tr.g, tr.p)
    t64.p.weights = [None if w is None else w.astype(np.float64) for w in tr.p.weights]
    t64.p.biases = [None if b is None else b.astype(np.float64) for b in tr.p.biases]
    z = t64.forward(x, dtype=np.float64)[tr.g.output].reshape(-1)
    if tr.g.loss == "mse":
        tgt = x.reshape(-1).astype(np.float64) if t is None else t.astype(np.float64)
        return float(np.mean((z - tgt) ** 2))
    tgt = t if t is not None else np.array([float(label)])
    p = 1.0 / (1.0 + np.exp(-z))
    return float(-np.sum(tgt * np.log(p) + (1 - tgt) * np.log(1 - p)))


def check_finite_differences(tr: R.F32Trainer, dws: list, dbs: list, loss: Callable[[], float],
                             rng: np.random.Generator, what: str) -> int:
    """Up to 10 entries of each trainable weight and bias tensor: the twin's gradient against
    central differences of ``loss`` (float64, h = 1e-3). Returns how many were checked."""
    h = np.float32(1e-3)
    checked = 0
    for i, op in enumerate(tr.g.ops):
        if not op.trainable:
            continue
        for tensor, grad in ((tr.p.weights[i], dws[i]), (tr.p.biases[i], dbs[i])):
            flat = tensor.reshape(-1)
            idx = rng.choice(flat.size, min(flat.size, 10), replace=False)
            num = []
            for k in idx:
                old = flat[k]
                flat[k] = old + h
                up = loss()
                flat[k] = old - h
                dn = loss()
                flat[k] = old
                num.append((up - dn) / (2 * float(h)))
            assert np.allclose(grad.reshape(-1)[idx], num, rtol=1e-2, atol=1e-4), (what, i)
            checked += len(idx)
    return checked


@pytest.mark.parametrize("name", list(LOSS_MODELS))
def test_f32_loss_gradients_match_finite_differences(name, rng):
    m = LOSS_MODELS[name]()
    p = init(m, rng)
    x, y, t = sample(name, m, rng, 1)
    tr = R.F32Trainer(m.graph, p)
    tt = None if t is None else t[0]
    dws, dbs, loss = tr.grads(x[0], int(y[0]), target=tt)
    assert abs(loss - loss64(tr, x[0], int(y[0]), tt)) < 1e-5
    assert check_finite_differences(tr, dws, dbs, lambda: loss64(tr, x[0], int(y[0]), tt), rng,
                                    name) > 0


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", list(LOSS_MODELS))
def test_f32_loss_gradients_match_numpy(target, name, rng):
    require_target(target)
    board, asan = split_target(target)
    m = LOSS_MODELS[name]()
    g = m.graph
    p = init(m, rng)
    x, y, t = sample(name, m, rng, 3)
    rep = runner.run_job(job.build(export.export_f32(g, p), x, y, cmd=job.CMD_GRADS, n_steps=3,
                                   lr=0.1, momentum=0.5, dump_weights=True, targets=t),
                         board, sanitize=asan)
    ref = R.F32Trainer(g, p, lr=0.1, momentum=0.5)
    for s in range(3):
        ts = None if t is None else t[s]
        if g.loss == "mse":
            err = struct.unpack("<f", struct.pack("<I", rep.records["step"][s]["err_bits"]))[0]
            assert abs(err - ref.error(x[s], ts)) <= 1e-5 * max(1.0, ref.error(x[s], ts))
        dws, dbs, _ = ref.grads(x[s], int(y[s]), target=ts)
        assert rep.records["step"][s]["pred"] == int(ref.predict(x[s:s + 1])[0])
        check_f32_grads(rep, g, dws, dbs, s, name)
        ref.apply(dws, dbs)
    check_f32_weights(rep, g, ref.p.weights, name)


def quantized(name: str, m: M.Model, rng: np.random.Generator, n: int):
    """The int8 model and its data: inputs quantised, MSE targets in the input's scale (as the
    engine reads them), BCE targets 0/1."""
    g = m.graph
    p = init(m, rng)
    x, y, t = sample(name, m, rng, n)
    qm = R.quantize_model(g, p, x[:10])
    xq = qm.quantize_input(x)
    tq = None
    if t is not None:
        tq = qm.quantize_input(t) if g.loss == "mse" else t.astype(np.int8)
    return qm, xq, y, tq


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", list(LOSS_MODELS))
def test_s8_loss_gradients_bit_exact(target, name, rng):
    require_target(target)
    m = LOSS_MODELS[name]()
    g = m.graph
    qm, xq, y, tq = quantized(name, m, rng, 4)
    rep = run_job(job.build(export.export_s8(qm), xq, y, cmd=job.CMD_GRADS, n_steps=4, lr=0.2,
                            seed=77, dump_weights=True, targets=tq), target)
    ref = R.S8Trainer(qm, lr=0.2, seed=77)
    for s in range(4):
        ts = None if tq is None else tq[s]
        gs = ref.grads(xq[s], int(y[s]), target=ts)
        rec = rep.records["step"][s]
        assert rec["dlogits_exp"] == ref.logits_grad_exp, name
        assert np.array_equal(rep.dump("logits", "i1", s), ref._fw.acts[g.output].reshape(-1))
        if g.loss == "mse":  # the anomaly score, before the update
            out = g.output
            mant, e = R.mse_error(ref._fw.acts[out].reshape(-1), ref._fw.exps[out],
                                  ref.m.zp[out], xq[s] if ts is None else ts, qm.ex, qm.zx)
            assert (rec["err"], rec["err_exp"]) == (mant, e), (name, s)
        for i, gr in enumerate(gs):
            if gr is None:
                continue
            got = rep.dump(f"g{i:02d}w", "<i4", s).reshape(gr.gw.shape)
            assert np.array_equal(got, gr.gw), (name, s, i)
            assert np.array_equal(rep.dump(f"g{i:02d}b", "<i4", s), gr.gb), (name, s, i)
        ref.apply(gs)
    for i, op in enumerate(g.ops):
        if op.has_params:
            assert np.array_equal(rep.dump(f"w{i:02d}", "i1").reshape(ref.m.w[i].shape),
                                  ref.m.w[i]), (name, i)


@pytest.mark.parametrize("target", TARGETS)
def test_s8_loss_training_bit_exact(target, rng):
    """Fused steps (kl_train_step / kl_train_step_target) over two epochs: weights, biases and
    adapted exponents equal the twin's."""
    require_target(target)
    for name in LOSS_MODELS:
        m = LOSS_MODELS[name]()
        g = m.graph
        qm, xq, y, tq = quantized(name, m, rng, 40)
        rep = run_job(job.build(export.export_s8(qm), xq, y, lr=0.3, seed=9, epochs=2,
                                dump_weights=True, targets=tq), target)
        ref = R.S8Trainer(qm, lr=0.3, seed=9)
        for _ in range(2):
            for k in range(len(xq)):
                ref.step(xq[k], int(y[k]), target=None if tq is None else tq[k])
        for i, op in enumerate(g.ops):
            assert rep.records["exps"][i]["y"] == ref.m.exp[op.output], (name, i)
            if op.has_params:
                assert np.array_equal(rep.dump(f"w{i:02d}", "i1").reshape(ref.m.w[i].shape),
                                      ref.m.w[i]), (name, i)
                assert np.array_equal(rep.dump(f"b{i:02d}", "<i4"), ref.m.b[i]), (name, i)


def test_losses_learn(rng):
    """The twin's losses train: an int8 autoencoder's reconstruction error falls on data of a
    low-dimensional structure; a float multi-label net fits its labels."""
    m = LOSS_MODELS["autoencoder"]()
    basis = rng.normal(0, 1, (2, 12))
    x = (1 / (1 + np.exp(-(rng.normal(0, 1, (200, 2)) @ basis)))).astype(np.float32)
    p = m.init(1)
    qm = R.quantize_model(m.graph, p, x[:50])
    xq = qm.quantize_input(x)
    tr = R.S8Trainer(qm, lr=0.05, seed=3)
    before = np.mean([tr.error(v)[0] * 2.0 ** tr.error(v)[1] for v in xq[150:]])
    for _ in range(4):
        for v in xq[:150]:
            tr.step(v, 0)
    after = np.mean([tr.error(v)[0] * 2.0 ** tr.error(v)[1] for v in xq[150:]])
    assert after < 0.5 * before
    m = LOSS_MODELS["multilabel"]()
    x = np.random.default_rng(1).uniform(0, 1, (200, 10)).astype(np.float32)
    t = np.stack([x[:, 0] > 0.5, x[:, 1] + x[:, 2] > 1, x[:, 3] < 0.3, x[:, 4] > x[:, 5]],
                 1).astype(np.float32)
    f = R.F32Trainer(m.graph, m.init(2), lr=0.1)
    for _ in range(30):
        for k in range(150):
            f.step(x[k], 0, target=t[k])
    pred = np.array([f.logits(v) > 0 for v in x[150:]])
    majority = np.maximum(t[150:].mean(0), 1 - t[150:].mean(0)).mean()  # about 0.6
    assert (pred == t[150:].astype(bool)).mean() > max(0.8, majority + 0.2)


def test_blob_loss_byte_and_old_blobs(rng):
    """Format 2.5 writes the loss in header byte 17, the reader reads it back; a softmax blob
    stays 2.0 byte for byte; a bad loss byte is KL_ECORRUPT, in the engine too; a 2.0 blob with a
    nonzero byte 17 is rejected (it was written 0)."""
    m = LOSS_MODELS["multilabel"]()
    p = m.init(0)
    b = export.export_f32(m.graph, p)
    assert struct.unpack_from("<HH", b, 4) == export.VERSION_LOSS and b[17] == 2
    assert export.read(b).graph.loss == "sigmoid_bce"
    c = M.mlp([5, 4, 3])
    old = export.export_f32(c.graph, c.init(0))
    assert struct.unpack_from("<HH", old, 4) == export.VERSION and old[17] == 0
    assert export.read(old).graph.loss == "softmax_ce"
    x = rng.uniform(0, 1, (2, 10)).astype(np.float32)
    for blob, rest in ((b, 3), (old, 1)):
        bad = bytearray(blob)
        bad[17] = rest
        if blob is old:
            x2 = rng.uniform(0, 1, (2, 5)).astype(np.float32)
            img = job.build(reseal(bad), x2, np.zeros(2, np.int64))
        else:
            img = job.build(reseal(bad), x, np.zeros(2, np.int64),
                            targets=np.zeros((2, 4), np.float32))
        with pytest.raises(runner.RunError) as e:
            runner.run_job(img, "host", sanitize=True)
        assert int(re.search(r"code (-\d+)", str(e.value)).group(1)) == -204
    with pytest.raises(export.BlobError):
        bad = bytearray(b)
        bad[17] = 3
        export.read(reseal(bad))


def test_target_api_errors(rng):
    """A softmax model refuses targets; an MSE model without a target needs as many outputs as
    inputs; a BCE label outside [0, 1] on one output is KL_EINVAL."""
    c = M.mlp([5, 4, 3])
    x = rng.uniform(0, 1, (2, 5)).astype(np.float32)
    with pytest.raises(runner.RunError, match="code -22"):
        runner.run_job(job.build(export.export_f32(c.graph, c.init(0)), x, np.zeros(2, int),
                                 targets=np.zeros((2, 3), np.float32)), "host", sanitize=True)
    r = LOSS_MODELS["regression"]()
    xr = rng.uniform(0, 1, (2, 6, 6, 2)).astype(np.float32)
    with pytest.raises(runner.RunError, match="code -22"):
        runner.run_job(job.build(export.export_f32(r.graph, r.init(0)), xr, np.zeros(2, int)),
                       "host", sanitize=True)
    b = LOSS_MODELS["binary"]()
    xb = rng.uniform(0, 1, (2, 9)).astype(np.float32)
    with pytest.raises(runner.RunError, match="code -22"):
        runner.run_job(job.build(export.export_f32(b.graph, b.init(0)), xb, np.array([1, 2])),
                       "host", sanitize=True)
