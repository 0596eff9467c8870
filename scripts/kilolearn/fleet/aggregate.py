"""The fleet's aggregation: the boards' models (kilolearn blobs) into one, bit-reproducible.

int8 (docs/int8-training.md, "Aggregation across boards"): for every tensor of parameters, the
sample-weighted mean of the boards' dequantised values, requantised at the global exponent (the
largest any board has) with round-half-even, computed in integers: with ``e0`` the smallest
exponent, ``S = sum_k n_k * (q_k << (e_k - e0))`` and ``D = (sum_k n_k) << (E - e0)``, the
result is ``round_half_even(S / D)``, saturated to the tensor's type (weights [-127, 127],
biases int32). Activation exponents: the largest any board reached (they only grow when a
tensor saturates); zero points, the softmax table and the graph must agree. float32: the
weighted mean in float64, accumulated over the boards in ascending board order, rounded once to
float32 (round to nearest even).

A reply is checked before it counts (:func:`check`): a blob that does not parse (CRC, tables)
or does not match the global model is rejected with a one-line reason.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core import fit, quant
from ..formats import export


class Rejected(ValueError):
    """A board's reply that cannot take part in the aggregation (one line: why)."""


def round_half_even_div(s: np.ndarray, d: int) -> np.ndarray:
    """``s / d`` rounded to the nearest integer, ties to even (integers, ``d > 0``)."""
    s = np.asarray(s, np.int64)
    q, r = np.divmod(s, d)  # floor division: 0 <= r < d
    up = (2 * r > d) | ((2 * r == d) & (q % 2 == 1))
    return q + up


def weighted_mean_q(values: Sequence[np.ndarray], exps: Sequence[int], counts: Sequence[int],
                    lo: int, hi: int) -> tuple[np.ndarray, int]:
    """The integer weighted mean of fixed-point tensors ``values[k] * 2**exps[k]`` with weights
    ``counts``, at the largest exponent, round-half-even, saturated to [lo, hi]:
    (values, exponent)."""
    e_out, e0 = max(exps), min(exps)
    s = np.zeros(np.shape(values[0]), np.int64)
    for v, e, n in zip(values, exps, counts, strict=True):
        s += int(n) * (np.asarray(v, np.int64) << (e - e0))
    d = int(sum(int(n) for n in counts)) << (e_out - e0)
    return np.clip(round_half_even_div(s, d), lo, hi), e_out


def weighted_mean_f32(values: Sequence[np.ndarray], counts: Sequence[int]) -> np.ndarray:
    """float32 weighted mean: float64 sum in the given order, one rounding to float32."""
    acc = np.zeros(np.shape(values[0]), np.float64)
    for v, n in zip(values, counts, strict=True):
        acc += float(n) * np.asarray(v, np.float64)
    return (acc / float(sum(int(n) for n in counts))).astype(np.float32)


def check(blob: bytes, base: export.Blob) -> export.Blob:
    """A board's blob parsed and checked against the global model, or Rejected (why)."""
    try:
        b = export.read(blob)
    except export.BlobError as e:
        raise Rejected(f"blob rejected: {e}") from None
    except Exception as e:  # noqa: BLE001 - damaged bytes may break the reader anywhere
        raise Rejected(f"blob rejected: not a valid kilolearn blob ({type(e).__name__})") from None
    if b.dtype != base.dtype:
        raise Rejected(f"blob rejected: dtype {b.dtype}, the global model's is {base.dtype}")
    if b.graph != base.graph:
        raise Rejected("blob rejected: its graph (layers, shapes, what trains) is not the global "
                       "model's")
    if b.qmodel is not None:
        assert base.qmodel is not None
        if b.qmodel.zp != base.qmodel.zp or b.qmodel.lut_exp != base.qmodel.lut_exp or \
                not np.array_equal(b.qmodel.lut, base.qmodel.lut):
            raise Rejected("blob rejected: zero points or softmax table differ from the global "
                           "model's")
    return b


def aggregate(boards: Sequence[export.Blob], counts: Sequence[int], global_blob: bytes
              ) -> bytes:
    """The new global blob from the checked boards' blobs (in ascending board order) weighted
    by their sample counts; layout, policy and flags are the global model's."""
    base = export.read(global_blob)
    if not boards or len(boards) != len(counts) or min(counts) <= 0:
        raise ValueError("aggregate needs at least one board, each with a positive count")
    ops = base.graph.ops
    if base.qmodel is not None:
        qm = base.qmodel.copy()
        ms = [b.qmodel for b in boards]
        assert all(m is not None for m in ms)
        for i, op in enumerate(ops):
            if not op.has_params:
                continue
            qm.w[i], qm.ew[i] = weighted_mean_q([m.w[i] for m in ms], [m.ew[i] for m in ms],
                                                counts, -127, 127)
            qm.b[i], qm.eb[i] = weighted_mean_q([m.b[i] for m in ms], [m.eb[i] for m in ms],
                                                counts, quant.INT32_MIN, quant.INT32_MAX)
        qm.exp = [max(m.exp[t] for m in ms) for t in range(len(qm.exp))]
        base.qmodel = qm
    else:
        assert base.params is not None
        ps = [b.params for b in boards]
        for i, op in enumerate(ops):
            if op.has_params:
                base.params.weights[i] = weighted_mean_f32([p.weights[i] for p in ps], counts)
                base.params.biases[i] = weighted_mean_f32([p.biases[i] for p in ps], counts)
    return fit.reexport(base)
