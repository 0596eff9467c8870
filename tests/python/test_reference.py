"""The numpy reference against independent checks: finite differences, float training."""

from __future__ import annotations

import numpy as np
import pytest

from kilolearn import model
from kilolearn import reference as R


def loss64(layers, params, x, label):
    h = x.astype(np.float64)
    for f, w, b in zip(layers, params.weights, params.biases, strict=True):
        h = w.astype(np.float64) @ h + b
        if f.relu:
            h = np.maximum(h, 0)
    z = h - h.max()
    return -(z[label] - np.log(np.exp(z).sum()))


@pytest.mark.parametrize("sizes", [[7, 5, 3], [12, 9, 6, 4]])
def test_f32_gradients_match_finite_differences(sizes, rng):
    m = model.mlp(sizes)
    p = m.init(3)
    for b in p.biases:
        b[:] = rng.normal(0, 0.1, b.shape)
    x = rng.normal(0, 1, sizes[0]).astype(np.float32)
    tr = R.F32Trainer(m.fused, p)
    dws, dbs, loss = tr.grads(x, 1)
    assert abs(loss - loss64(m.fused, p, x, 1)) < 1e-5
    eps = 1e-6
    for li in range(len(m.fused)):
        for tensor, grad in ((p.weights[li], dws[li]), (p.biases[li], dbs[li])):
            num = np.zeros(tensor.shape)
            for idx in np.ndindex(tensor.shape):
                p64 = p.copy()
                ws = [w.astype(np.float64) for w in p64.weights]
                bs = [b.astype(np.float64) for b in p64.biases]
                tgt = ws[li] if tensor is p.weights[li] else bs[li]
                tgt[idx] += eps
                up = loss64(m.fused, R.Params(ws, bs), x, 1)
                tgt[idx] -= 2 * eps
                dn = loss64(m.fused, R.Params(ws, bs), x, 1)
                num[idx] = (up - dn) / (2 * eps)
            assert np.allclose(grad, num, rtol=1e-3, atol=1e-5)


def test_frozen_prefix_gets_no_gradient(rng):
    m = model.Model([model.Input(6), model.Dense(5, trainable=False), model.ReLU(),
                     model.Dense(3), model.SoftmaxCrossEntropy()])
    p = m.init(0)
    x = rng.normal(0, 1, 6).astype(np.float32)
    dws, _, _ = R.F32Trainer(m.fused, p).grads(x, 2)
    assert not dws[0].any() and dws[1].any()
    qm = R.quantize_model(m.fused, p, x[None, :])
    g = R.S8Trainer(qm).grads(qm.quantize_input(x), 2)
    assert g[0] is None and g[1] is not None


def test_s8_gradients_follow_f32(digits):
    """int8 weight gradients, dequantised, point the same way as the float ones."""
    m = model.mlp([64, 32, 10])
    p = m.init(0)
    qm = R.quantize_model(m.fused, p, digits.x_train[:200])
    s8 = R.S8Trainer(qm)
    f32 = R.F32Trainer(m.fused, p)
    cos = []
    for i in range(20):
        x, y = digits.x_train[i], int(digits.y_train[i])
        g8 = s8.grads(qm.quantize_input(x), y)
        dws, _, _ = f32.grads(x, y)
        for li in range(2):
            a = g8[li].gw * 2.0 ** g8[li].gw_exp
            b = dws[li]
            cos.append(float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30)))
    assert np.median(cos) > 0.9


@pytest.mark.slow
def test_reference_trains_digits(digits):
    m = model.mlp([64, 32, 10])
    p = m.init(0)
    f32 = R.F32Trainer(m.fused, p, lr=0.05)
    qm = R.quantize_model(m.fused, p, digits.x_train[:200])
    s8 = R.S8Trainer(qm, lr=0.05)
    xq = qm.quantize_input(digits.x_train)
    for _ in range(20):
        for i in range(len(xq)):
            f32.step(digits.x_train[i], int(digits.y_train[i]))
            s8.step(xq[i], int(digits.y_train[i]))
    acc32 = (f32.predict(digits.x_test) == digits.y_test).mean()
    acc8 = (s8.predict(qm.quantize_input(digits.x_test)) == digits.y_test).mean()
    assert acc32 >= 0.90 and acc8 >= 0.88
