"""Export a model to the versioned, CRC-checked ``.klm`` blob, and read one back.

Format 2.0 (little-endian; docs/blob-format.md is the reference): a 48-byte header, a tensor
table (12 bytes per tensor: shape, int8 exponent and zero point), an op table (48 bytes per op:
kind, activation, flags, geometry, tensor ids, parameter offsets), then 4-byte aligned data: the
int8 softmax table and the weights and biases. Format 2.1 adds an optional schedule section (a
memory plan of :mod:`kilolearn.planner`, ``Plan.pack()``) after the data; a blob without one is
written as 2.0, byte for byte as before. Format 2.2 adds the selective-update policy in the
header's last four bytes (docs/selective-updates.md); written only when a policy is set.
Format 2.4 adds the paged flag of dense ops (weights stay in the weight store, updated rows go to
the weight log: docs/paged-weights.md); written only for a paged blob. Format 2.5 adds the loss
(header byte 17: mean squared error or sigmoid binary cross-entropy); written only for a model
with a loss other than softmax cross-entropy. Format 2.6 adds the activations sigmoid, tanh and
leaky ReLU (op activation codes 3..5; a reader before 2.6 rejects them). Format 2.7 splits a
schedule's region in two parts at a boundary (two more words in the schedule header: a board's two
memories, docs/blob-format.md); written only for a plan with a boundary (``Plan.split``).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from ..core.model import Graph, Op, Params
from ..core.reference import QModel

MAGIC = b"KLMB"
VERSION = (2, 0)  # a blob without a schedule
VERSION_SCHED = (2, 1)  # with one
VERSION_UPDATE = (2, 2)  # with a selective-update policy (header bytes 44..47)
VERSION_COMPACT = (2, 3)  # a schedule with compact backward steps (KL_STEP_COMPACT)
VERSION_PAGED = (2, 4)  # paged dense ops (FLAG_PAGED)
VERSION_LOSS = (2, 5)  # a loss other than softmax cross-entropy (header byte 17)
VERSION_ACTS = (2, 6)  # sigmoid, tanh or leaky ReLU activations
VERSION_SPLIT = (2, 7)  # a schedule whose region is split in two parts (24-byte header)
LOSSES = {"softmax_ce": 0, "mse": 1, "sigmoid_bce": 2}
STEP_COMPACT = 0x04
HEADER_SIZE = 48
TENSOR_SIZE = 12
OP_SIZE = 48
CRC_START = 16
NO_TENSOR = 0xFFFF
DTYPE_F32, DTYPE_S8 = 0, 1
KINDS = {"dense": 1, "conv": 2, "dwconv": 3, "avgpool": 4, "maxpool": 5, "add": 6}
ACTS = {"none": 0, "relu": 1, "relu6": 2, "sigmoid": 3, "tanh": 4, "leaky_relu": 5}
FLAG_TRAINABLE = 0x01
FLAG_BIAS_ONLY = 0x02
FLAG_PAGED = 0x04  # dense, trainable (weights too): weights in the store, rows to the log
SCHED_HEADER, STEP_SIZE = 16, 8  # schedule section (planner.SCHED_HEADER, STEP_SIZE)
SCHED_HEADER_SPLIT = 24  # from minor 7 on: + u32 boundary, u32 the second part's bytes

# engine return codes (modules/kilolearn/include/kilolearn/kilolearn.h)
ERRORS = {
    0: "KL_OK", -12: "KL_ENOMEM", -22: "KL_EINVAL", -134: "KL_ENOTSUP",
    -200: "KL_EBADMAGIC", -201: "KL_EVERSION", -202: "KL_ETRUNC", -203: "KL_ECRC",
    -204: "KL_ECORRUPT",
}
CODES = {v: k for k, v in ERRORS.items()}


class BlobError(ValueError):
    def __init__(self, code: str, msg: str):
        super().__init__(f"{code}: {msg}")
        self.code = code


def _pack(dtype: int, g: Graph, ws: list[bytes | None], bs: list[bytes | None],
          ew: list[int], eb: list[int], exp: list[int], zp: list[int], lut_exp: int,
          lut: bytes | None, sched: bytes | None = None,
          update: tuple[int, int] | None = None, paged: bool = False) -> bytes:
    if paged and sched is not None:
        raise ValueError("a paged model trains without a schedule (docs/paged-weights.md)")
    tensors_off = HEADER_SIZE
    ops_off = tensors_off + len(g.shapes) * TENSOR_SIZE
    data_base = ops_off + len(g.ops) * OP_SIZE
    data = bytearray()

    def place(b: bytes) -> tuple[int, int]:
        off = data_base + len(data)
        data.extend(b)
        data.extend(b"\0" * (-len(data) % 4))
        return off, len(b)

    lut_off = place(lut)[0] if lut is not None else 0
    trecs = b"".join(struct.pack("<HHHbb4x", h, w, c, e, z)
                     for (h, w, c), e, z in zip(g.shapes, exp, zp, strict=True))
    orecs = bytearray()
    for i, op in enumerate(g.ops):
        w_off = w_sz = b_off = b_sz = 0
        if ws[i] is not None and bs[i] is not None:
            w_off, w_sz = place(ws[i])  # type: ignore[arg-type]
            b_off, b_sz = place(bs[i])  # type: ignore[arg-type]
        in1 = op.inputs[1] if len(op.inputs) > 1 else NO_TENSOR
        flags = (FLAG_TRAINABLE if op.trainable else 0) | \
            (FLAG_BIAS_ONLY if op.trainable and op.bias_only else 0)
        if paged and pageable(op):
            flags |= FLAG_PAGED
        orecs += struct.pack("<BBBBBBBBBBbbHHHxxIIII12x", KINDS[op.kind], ACTS[op.act],
                             flags, op.stride, op.kernel[0],
                             op.kernel[1], *op.pad, ew[i], eb[i], op.inputs[0], in1, op.output,
                             w_off, w_sz, b_off, b_sz)
    sched_off = place(sched)[0] if sched is not None else 0
    total = data_base + len(data)
    policy, pm = _update(update)
    loss = LOSSES[g.loss]
    body = struct.pack("<BBHHHHbxIIIIBxH", dtype, loss, len(g.shapes), len(g.ops), g.input,
                       g.output,
                       lut_exp, tensors_off, ops_off, lut_off, sched_off, policy, pm) + trecs + \
        bytes(orecs) + bytes(data)
    crc = zlib.crc32(body) & 0xFFFFFFFF
    n_steps = struct.unpack_from("<I", sched)[0] if sched is not None else 0
    # Plan.pack() writes the 24-byte header only for a split region
    split = sched is not None and len(sched) == SCHED_HEADER_SPLIT + STEP_SIZE * n_steps
    head = SCHED_HEADER_SPLIT if split else SCHED_HEADER
    compact = sched is not None and any(
        sched[head + 8 * k + 1] & STEP_COMPACT for k in range(n_steps))
    smooth = any(ACTS[op.act] > ACTS["relu6"] for op in g.ops)
    ver = (VERSION_SPLIT if split else
           VERSION_ACTS if smooth else VERSION_LOSS if loss else VERSION_PAGED if paged else
           VERSION_COMPACT if compact else VERSION_UPDATE if policy else
           VERSION_SCHED if sched is not None else VERSION)
    blob = MAGIC + struct.pack("<HHII", ver[0], ver[1], total, crc) + body
    assert len(blob) == total
    return blob


def pageable(op: Op) -> bool:
    """Can this op's weights stay in the store (a trainable dense op, weights and bias)?"""
    return op.kind == "dense" and bool(op.trainable) and not op.bias_only


def _sched(g: Graph, plan) -> bytes | None:  # noqa: ANN001
    """A planner.Plan (or its packed bytes) for this graph, or None."""
    if plan is None:
        return None
    return plan if isinstance(plan, bytes | bytearray) else plan.pack()


def _update(update: tuple[str | int, float | int] | None) -> tuple[int, int]:
    """(policy, fraction) -> the header's (policy id, per mille); a fraction > 1 is per mille
    already. (0, 0) for none or 'all'."""
    from ..core import selective

    if update is None:
        return 0, 0
    policy = selective.policy_id(update[0])
    if policy == 0:
        return 0, 0
    frac = update[1]
    pm = int(frac) if isinstance(frac, int) and frac > 1 else selective.permille(float(frac))
    if not 1 <= pm <= selective.FRAC_ONE:
        raise ValueError(f"update fraction {frac} outside (0, 1]")
    return policy, pm


def export_f32(g: Graph, params: Params, plan=None,  # noqa: ANN001
               update: tuple[str | int, float | int] | None = None, paged: bool = False) -> bytes:
    """plan: an optional planner.Plan of g (format 2.1: the engine trains by its schedule);
    update: an optional selective-update policy and fraction, e.g. ("topr", 0.2)
    (format 2.2); paged: the trainable dense ops' weights stay in the weight store (2.4)."""
    ws = [None if w is None else np.ascontiguousarray(w, "<f4").tobytes() for w in params.weights]
    bs = [None if b is None else np.ascontiguousarray(b, "<f4").tobytes() for b in params.biases]
    z = [0] * len(g.ops)
    return _pack(DTYPE_F32, g, ws, bs, z, z, [0] * len(g.shapes), [0] * len(g.shapes), 0, None,
                 _sched(g, plan), update, paged)


def export_s8(qm: QModel, plan=None,  # noqa: ANN001
              update: tuple[str | int, float | int] | None = None, paged: bool = False) -> bytes:
    ws = [None if w is None else w.astype("<i1").tobytes() for w in qm.w]
    bs = [None if b is None else b.astype("<i4").tobytes() for b in qm.b]
    return _pack(DTYPE_S8, qm.graph, ws, bs, qm.ew, qm.eb, qm.exp, qm.zp, qm.lut_exp,
                 qm.lut.astype("<u2").tobytes(), _sched(qm.graph, plan), update, paged)


@dataclass
class Blob:
    dtype: int
    graph: Graph
    params: Params | None  # f32
    qmodel: QModel | None  # s8
    schedule: bytes | None = None  # 2.1: the schedule section (Plan.pack() bytes)
    update: tuple[int, int] = (0, 0)  # 2.2: (policy id, per mille); (0, 0) = every weight
    paged: bool = False  # 2.4: its trainable dense ops are paged


def read(blob: bytes) -> Blob:
    """Parse a blob (header, CRC and tables; the engine's kl_blob_check checks more)."""
    if len(blob) < 8 or blob[:4] != MAGIC:
        raise BlobError("KL_ETRUNC" if len(blob) < 4 else "KL_EBADMAGIC", "not a kilolearn blob")
    major, _minor = struct.unpack_from("<HH", blob, 4)
    if major != VERSION[0]:
        raise BlobError("KL_EVERSION", f"format {major}.x, this reader knows {VERSION[0]}.x")
    if len(blob) < HEADER_SIZE:
        raise BlobError("KL_ETRUNC", "shorter than the header")
    total, crc = struct.unpack_from("<II", blob, 8)
    if total > len(blob):
        raise BlobError("KL_ETRUNC", f"header says {total} bytes, have {len(blob)}")
    if zlib.crc32(blob[CRC_START:total]) & 0xFFFFFFFF != crc:
        raise BlobError("KL_ECRC", "CRC mismatch")
    try:
        return _read_tables(blob)
    except (struct.error, ValueError, KeyError, IndexError) as e:
        raise BlobError("KL_ECORRUPT", str(e)) from e


def _read_tables(blob: bytes) -> Blob:
    (dtype, n_t, n_ops, t_in, _t_out, lut_exp, t_off, o_off, lut_off) = struct.unpack_from(
        "<BxHHHHbxIII", blob, 16)
    sched = None
    minor = struct.unpack_from("<H", blob, 6)[0]
    update = struct.unpack_from("<BxH", blob, 44) if minor >= 2 else (0, 0)
    if minor >= 1 and (s_off := struct.unpack_from("<I", blob,
                                                                                 40)[0]):
        n_steps = struct.unpack_from("<I", blob, s_off)[0]
        head = SCHED_HEADER_SPLIT if minor >= VERSION_SPLIT[1] else SCHED_HEADER
        if minor >= VERSION_SPLIT[1] and struct.unpack_from("<I", blob, s_off + 16)[0] == 0:
            head = SCHED_HEADER  # one block: the bytes Plan.pack() writes for it
            sched = bytes(blob[s_off:s_off + SCHED_HEADER]) + bytes(
                blob[s_off + SCHED_HEADER_SPLIT:s_off + SCHED_HEADER_SPLIT + STEP_SIZE * n_steps])
        else:
            sched = bytes(blob[s_off:s_off + head + STEP_SIZE * n_steps])
    shapes, exp, zp = [], [], []
    for k in range(n_t):
        h, w, c, e, z = struct.unpack_from("<HHHbb", blob, t_off + k * TENSOR_SIZE)
        shapes.append((h, w, c))
        exp.append(e)
        zp.append(z)
    kinds = {v: k for k, v in KINDS.items()}
    acts = {v: k for k, v in ACTS.items()}
    ops: list[Op] = []
    raw: list[tuple[int, int, int, int, int, int]] = []
    paged = False
    for i in range(n_ops):
        (kind, act, flags, stride, kh, kw, pt, pl, pb, pr, we, be, in0, in1, out, w_off, w_sz,
         b_off, b_sz) = struct.unpack_from("<BBBBBBBBBBbbHHHxxIIII", blob, o_off + i * OP_SIZE)
        ins = [in0] + ([in1] if in1 != NO_TENSOR else [])
        ops.append(Op(kinds[kind], ins, out, acts[act], (kh, kw), stride, (pt, pl, pb, pr),
                      bool(flags & FLAG_TRAINABLE), bool(flags & FLAG_BIAS_ONLY)))
        raw.append((we, be, w_off, w_sz, b_off, b_sz))
        paged |= bool(flags & FLAG_PAGED)
    losses = {v: k for k, v in LOSSES.items()}
    g = Graph(shapes, ops, t_in, losses[blob[17]] if minor >= 5 else "softmax_ce")
    ws: list[np.ndarray | None] = []
    bs: list[np.ndarray | None] = []
    for i, op in enumerate(ops):
        _, _, w_off, w_sz, b_off, b_sz = raw[i]
        if not op.has_params:
            ws.append(None)
            bs.append(None)
            continue
        shape = g.weight_shape(i)
        wdt, bdt = ("<f4", "<f4") if dtype == DTYPE_F32 else ("<i1", "<i4")
        ws.append(np.frombuffer(blob, wdt, int(np.prod(shape)), w_off).reshape(shape).copy())
        bs.append(np.frombuffer(blob, bdt, b_sz // 4, b_off).copy())
    if dtype == DTYPE_F32:
        return Blob(dtype, g, Params(ws, bs), None, sched, update, paged)
    lut = np.frombuffer(blob, "<u2", 256, lut_off).copy()
    if lut[0] != 32768 or np.any(np.diff(lut.astype(np.int64)) > 0):
        # the engine reads it as exp(-d 2^lut_exp) in Q15 (kl_blob_check: lut_ok)
        raise BlobError("KL_ECORRUPT", "softmax table is not a Q15 exp table (T[0] != 32768 "
                        "or growing)")
    qm = QModel(g, [None if w is None else w.astype(np.int64) for w in ws],
                [None if b is None else b.astype(np.int64) for b in bs],
                [r[0] for r in raw], [r[1] for r in raw], exp, zp, lut_exp, lut)
    return Blob(dtype, g, None, qm, sched, update, paged)
