"""Integer primitives of kilolearn's int8 training, bit for bit as the C engine does them.

Conventions (see docs/int8-training.md):

* Every int8 tensor has a power-of-two scale ``2**exp`` and a zero point; weights and gradients
  are symmetric (zero point 0), activations asymmetric (ReLU outputs use zero point -128).
* A power-of-two scale is a TFLite scale like any other; the requantisation ``acc * 2**-s`` is
  one right shift rounding half away from zero (gemmlowp ``RoundingDivideByPOT``). TFLite's and
  CMSIS-NN's multiplier path rounds twice and can differ by one step on exact halves (see
  docs/int8-training.md).
* Gradient scales are chosen per tensor, per step (dynamic): the smallest shift that brings the
  int32 accumulators into [-127, 127].
* Weight updates round stochastically with a Weyl-sequence dither (one add per weight), so
  updates smaller than one weight step still move the weights on average.

All functions work on numpy int64 arrays so intermediate values never wrap; the C engine's int32
arithmetic is sized so that it never overflows either (asserted in the tests).
"""

from __future__ import annotations

import numpy as np

INT8_MIN = -128
INT8_MAX = 127
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
WEYL = 0x9E3779B9  # golden-ratio increment of the update dither
LR_FRAC_BITS = 12  # learning rate is a Q12 fixed-point number in int8 training
MOM_FRAC_BITS = 15  # momentum factor is Q15


def rshift_round(x: np.ndarray | int, s: int) -> np.ndarray:
    """Arithmetic shift right by ``s`` rounding half away from zero; ``s <= 0`` shifts left
    and saturates to int32. Identical to gemmlowp's RoundingDivideByPOT for s > 0."""
    x = np.asarray(x, dtype=np.int64)
    if s <= 0:
        return np.clip(x << min(-s, 32), INT32_MIN, INT32_MAX)
    mask = (1 << s) - 1
    rem = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> s) + (rem > threshold)


def requant_shift(x: np.ndarray | int, s: int) -> np.ndarray:
    """x / 2^s the way TFLite and CMSIS-NN requantise with a power-of-two scale:
    MultiplyByQuantizedMultiplier(x, 1 << 30, 1 - s), i.e. SaturatingRoundingDoublingHighMul
    (x / 2 rounded half up) then RoundingDivideByPOT (half away from zero) by s - 1.
    ``s <= 0`` shifts left exactly (saturating to int32), as there."""
    x = np.asarray(x, dtype=np.int64)
    if s <= 0:
        return rshift_round(x, s)
    return rshift_round((x + 1) >> 1, s - 1)


def recip_q31(n: int) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier(1.0 / n) in integers: 1/n = q * 2**(e - 31)."""
    k = (n - 1).bit_length()  # 2**k >= n
    if 1 << k == n:
        return 1 << 30, 1 - k
    return ((1 << (k + 31)) + n) // (2 * n), 1 - k


def mul_q31(x: np.ndarray, qm: int, e: int) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier(x, qm, e), e <= 1 (see requant_shift)."""
    x = np.asarray(x, dtype=np.int64) * (2 if e > 0 else 1)
    return rshift_round((x * qm + (1 << 30)) >> 31, max(-e, 0))


def sat8(x: np.ndarray) -> np.ndarray:
    return np.clip(x, INT8_MIN, INT8_MAX)


def grad_shift(acc: np.ndarray) -> int:
    """Smallest s >= 0 with max|rshift_round(acc, s)| <= 127 (the dynamic gradient scale)."""
    m = int(np.max(np.abs(acc))) if acc.size else 0
    s = 0
    while m > INT8_MAX:
        s += 1
        if ((m + (1 << (s - 1))) >> s) <= INT8_MAX:
            break
    return s


def quantize_grad(acc: np.ndarray, exp: int) -> tuple[np.ndarray, int]:
    """int32 accumulators with scale 2**exp -> (int8 values, their exponent)."""
    s = grad_shift(acc)
    return rshift_round(acc, s), exp + s


def weyl_offsets(state: int, n: int) -> np.ndarray:
    """Dither values state + k*WEYL (mod 2**32) for k = 0..n-1, as int64."""
    k = np.arange(n, dtype=np.uint64)
    return ((np.uint64(state) + k * np.uint64(WEYL)) & np.uint64(0xFFFFFFFF)).astype(np.int64)


def weyl_advance(state: int, n: int) -> int:
    return (state + n * WEYL) & 0xFFFFFFFF


def stochastic_shift(v: np.ndarray, sh: int, dither: np.ndarray) -> np.ndarray:
    """floor((v + d) / 2**sh) with d the top ``sh`` bits of the 32-bit dither.

    ``sh`` is limited to [1, 30]: a larger shift first drops the excess bits (floor); a
    shift below 1 is treated as 1 (an update of more than half the weight range per step,
    which no sane learning rate produces)."""
    v = np.asarray(v, dtype=np.int64)
    if sh > 30:
        v = v >> min(sh - 30, 62)
        sh = 30
    elif sh < 1:
        sh = 1
    d = dither >> (32 - sh)
    return (v + d) >> sh


def quantize_lr(lr: float) -> int:
    # float32 arithmetic, as the engine converts it
    q = int(np.floor(np.float32(lr) * np.float32(1 << LR_FRAC_BITS) + np.float32(0.5)))
    if not 0 <= q <= (1 << LR_FRAC_BITS):
        raise ValueError(f"learning rate {lr} outside [0, 1]")
    return q


def quantize_momentum(mu: float) -> int:
    q = int(round(mu * (1 << MOM_FRAC_BITS)))
    if not 0 <= q < (1 << MOM_FRAC_BITS):
        raise ValueError(f"momentum {mu} outside [0, 1)")
    return q


def exp_for_range(max_abs: float, levels: int) -> int:
    """Smallest exponent e with max_abs <= levels * 2**e (a power-of-two scale that covers
    max_abs with ``levels`` steps)."""
    if max_abs <= 0:
        return -7
    e = int(np.ceil(np.log2(max_abs / levels)))
    while max_abs > levels * 2.0**e:
        e += 1
    return e


def act_qparams(lo: float, hi: float, nonneg: bool) -> tuple[int, int]:
    """(exponent, zero point) of an int8 activation over [lo, hi]: ``nonneg`` (after ReLU/ReLU6,
    or a non-negative input) 255 steps up from zero point -128, otherwise 127 steps either side
    of zero point 0."""
    if nonneg:
        return exp_for_range(hi, 255), -128
    return exp_for_range(max(abs(lo), abs(hi)), 127), 0


def softmax_lut(exp_logits: int) -> np.ndarray:
    """T[d] = round(2**15 * exp(-d * 2**exp_logits)) for d = 0..255: the softmax of int8
    logits as integers (computed on the host, stored in the blob, read by the engine)."""
    d = np.arange(256, dtype=np.float64)
    return np.round(32768.0 * np.exp(-d * 2.0**exp_logits)).astype(np.uint16)
