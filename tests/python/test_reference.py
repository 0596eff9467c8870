"""The numpy reference against independent checks: finite differences, float training."""

from __future__ import annotations

import numpy as np
import pytest
from test_engine import MODELS

from kilolearn.core import model as M
from kilolearn.core import reference as R


def loss64(tr: R.F32Trainer, x: np.ndarray, label: int) -> float:
    """Loss in float64 by the float trainer's own graph walk (weights cast up)."""
    t64 = R.F32Trainer(tr.g, tr.p)
    t64.p.weights = [None if w is None else w.astype(np.float64) for w in tr.p.weights]
    t64.p.biases = [None if b is None else b.astype(np.float64) for b in tr.p.biases]
    acts = t64.forward(x, dtype=np.float64)
    z = acts[tr.g.output].reshape(-1)
    z = z - z.max()
    return float(-(z[label] - np.log(np.exp(z).sum())))


@pytest.mark.parametrize("name", list(MODELS))
def test_f32_gradients_match_finite_differences(name, rng):
    m = MODELS[name]()
    p = m.init(3)
    for b in p.biases:
        if b is not None:
            b[:] = rng.normal(0, 0.1, b.shape)
    x = rng.uniform(0.05, 1, m.graph.shapes[m.graph.input]).astype(np.float32)
    tr = R.F32Trainer(m.graph, p)
    dws, dbs, loss = tr.grads(x, 1)
    assert abs(loss - loss64(tr, x, 1)) < 1e-4
    eps = 1e-6
    checked = 0
    for i, op in enumerate(m.graph.ops):
        if not op.trainable:
            assert dws[i] is None
            continue
        if op.bias_only:
            assert dws[i] is None  # frozen weights: no weight gradient
        pairs = [(tr.p.biases[i], dbs[i])] if op.bias_only else \
            [(tr.p.weights[i], dws[i]), (tr.p.biases[i], dbs[i])]
        for tensor, grad in pairs:
            flat = tensor.reshape(-1)
            idx = rng.choice(flat.size, min(flat.size, 12), replace=False)
            num = []
            for k in idx:
                old = flat[k]
                flat[k] = old + np.float32(eps * 100)
                up = loss64(tr, x, 1)
                flat[k] = old - np.float32(eps * 100)
                dn = loss64(tr, x, 1)
                flat[k] = old
                num.append((up - dn) / (2 * float(np.float32(eps * 100))))
            assert np.allclose(grad.reshape(-1)[idx], num, rtol=1e-2, atol=1e-4), (name, i)
            checked += len(idx)
    assert checked > 0


def test_frozen_prefix_gets_no_gradient(rng):
    m = MODELS["mlp-frozen-first"]()
    p = m.init(0)
    x = rng.normal(0, 1, 20).astype(np.float32)
    dws, _, _ = R.F32Trainer(m.graph, p).grads(x, 2)
    assert dws[0] is None and dws[1] is not None
    qm = R.quantize_model(m.graph, p, x[None, :])
    g = R.S8Trainer(qm).grads(qm.quantize_input(x), 2)
    assert g[0] is None and g[1] is not None
    assert not R.needs_grad(m.graph)[m.graph.ops[0].output]


def test_s8_gradients_follow_f32(digits):
    """int8 weight gradients, dequantised, point the same way as the float ones."""
    for m, xs in ((M.mlp([64, 32, 10]), digits.x_train),
                  (M.small_cnn((8, 8, 1), 10, 8), digits.x_train.reshape(-1, 8, 8, 1))):
        p = m.init(0)
        qm = R.quantize_model(m.graph, p, xs[:200])
        s8 = R.S8Trainer(qm)
        f32 = R.F32Trainer(m.graph, p)
        cos = []
        for i in range(20):
            x, y = xs[i], int(digits.y_train[i])
            g8 = s8.grads(qm.quantize_input(x), y)
            dws, _, _ = f32.grads(x, y)
            for k, gr in enumerate(g8):
                if gr is None:
                    continue
                a = gr.gw * 2.0 ** gr.gw_exp
                b = dws[k]
                cos.append(float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30)))
        assert np.median(cos) > 0.9


def test_conv_geometry_matches_tflite_same_padding():
    g = M.Model([M.Input((7, 7, 1)), M.Conv2D(2, 3, 2), M.Flatten(), M.Dense(2),
                 M.SoftmaxCrossEntropy()]).graph
    assert g.shapes[g.ops[0].output] == (4, 4, 2) and g.ops[0].pad == (1, 1, 1, 1)
    g = M.Model([M.Input((8, 8, 1)), M.Conv2D(2, 3, 2), M.Flatten(), M.Dense(2),
                 M.SoftmaxCrossEntropy()]).graph
    assert g.shapes[g.ops[0].output] == (4, 4, 2) and g.ops[0].pad == (0, 0, 1, 1)


def test_model_errors_are_clear():
    with pytest.raises(M.ModelError, match="SoftmaxCrossEntropy"):
        M.Model([M.Input((4,)), M.Dense(2)])
    with pytest.raises(M.ModelError, match="activation"):
        M.Model([M.Input((4,)), M.Dense(2, activation="tanh"), M.SoftmaxCrossEntropy()])
    with pytest.raises(M.ModelError, match="Add"):
        x = M.Node(M.Input((2, 2, 3)), [])
        y = M.Conv2D(4, 1)(x)
        M.Model(M.SoftmaxCrossEntropy()(M.Dense(2)(M.Add()([x, y]))))


@pytest.mark.slow
def test_reference_trains_digits(digits):
    m = M.mlp([64, 32, 10])
    p = m.init(0)
    f32 = R.F32Trainer(m.graph, p, lr=0.05)
    qm = R.quantize_model(m.graph, p, digits.x_train[:200])
    s8 = R.S8Trainer(qm, lr=0.05)
    xq = qm.quantize_input(digits.x_train)
    for _ in range(20):
        for i in range(len(xq)):
            f32.step(digits.x_train[i], int(digits.y_train[i]))
            s8.step(xq[i], int(digits.y_train[i]))
    acc32 = (f32.predict(digits.x_test) == digits.y_test).mean()
    acc8 = (s8.predict(qm.quantize_input(digits.x_test)) == digits.y_test).mean()
    assert acc32 >= 0.90 and acc8 >= 0.88
