"""Integer primitives against brute-force references."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from kilolearn.core import quant as q


def round_half_away(fr: Fraction) -> int:
    n = abs(fr)
    r = int(n) + (1 if n - int(n) >= Fraction(1, 2) else 0)
    return r if fr >= 0 else -r


def test_rshift_round_matches_exact_rational_rounding(rng):
    xs = np.concatenate([rng.integers(-(2**31), 2**31, 3000), np.arange(-70, 70)])
    for s in range(0, 33):
        got = q.rshift_round(xs, s)
        want = [round_half_away(Fraction(int(x), 2**s)) for x in xs[:400]]
        assert list(got[:400]) == want, s


def test_rshift_round_left_shift_saturates():
    assert q.rshift_round(np.array([3, -3, 2**30]), -2).tolist() == [12, -12, 2**31 - 1]


def test_grad_shift_is_minimal(rng):
    for _ in range(500):
        acc = rng.integers(-(2**rng.integers(1, 31)), 2**rng.integers(1, 31), 17)
        s = q.grad_shift(acc)
        assert np.abs(q.rshift_round(acc, s)).max() <= 127
        if s > 0:
            assert np.abs(q.rshift_round(acc, s - 1)).max() > 127


def test_stochastic_shift_is_unbiased():
    # a value of 0.3 LSB, rounded with the Weyl dither over many steps, averages to 0.3
    v = np.full(20000, 3 * 2**10 // 10 * 1, dtype=np.int64)  # 307/1024 = 0.2998
    d = q.weyl_offsets(12345, v.size)
    out = q.stochastic_shift(v, 10, d)
    assert set(np.unique(out)) <= {0, 1}
    assert abs(out.mean() - 307 / 1024) < 0.002
    neg = q.stochastic_shift(-v, 10, d)
    assert abs(neg.mean() + 307 / 1024) < 0.002


def test_softmax_lut_is_exp():
    t = q.softmax_lut(-4)
    assert t[0] == 32768
    assert abs(t[16] / 32768 - np.exp(-1)) < 1e-4


def test_quantize_lr_is_q12():
    assert q.quantize_lr(0.05) == 205
    assert q.quantize_lr(1.0) == 4096
