"""Export a model to the versioned, CRC-checked ``.klm`` blob, and read one back.

Layout (format 1.0, little-endian; docs/blob-format.md is the reference):

    header   48 bytes  magic "KLMB", version, total size, CRC-32 of bytes [16, total), dtype,
                       layer count, input/class counts, int8 input exponent + zero point,
                       softmax-table exponent, offsets of the layer table and the table
    layers   32 bytes each: op, activation, flags, n_in, n_out, int8 exponents and output zero
                       point, offset + size of weights and biases
    data     4-byte aligned: int8 softmax table (256 x u16), weights, biases
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from .model import FusedDense, Params
from .reference import QLayer, QModel

MAGIC = b"KLMB"
VERSION = (1, 0)
HEADER_SIZE = 48
LAYER_SIZE = 32
CRC_START = 16
DTYPE_F32, DTYPE_S8 = 0, 1
OP_DENSE = 1
ACT_NONE, ACT_RELU = 0, 1
FLAG_TRAINABLE = 0x01

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


def _align(buf: bytearray, n: int = 4) -> None:
    buf.extend(b"\0" * (-len(buf) % n))


def _pack(dtype: int, layers: list[FusedDense], ws: list[bytes], bs: list[bytes],
          qinfo: list[tuple[int, int, int, int]], in_exp: int, in_zp: int, lut_exp: int,
          lut: bytes | None) -> bytes:
    n = len(layers)
    layers_off = HEADER_SIZE
    data = bytearray()
    data_base = layers_off + n * LAYER_SIZE
    lut_off = 0
    if lut is not None:
        lut_off = data_base + len(data)
        data += lut
        _align(data)
    recs = bytearray()
    for f, w, b, (we, be, ye, yz) in zip(layers, ws, bs, qinfo, strict=True):
        w_off = data_base + len(data)
        data += w
        _align(data)
        b_off = data_base + len(data)
        data += b
        _align(data)
        recs += struct.pack("<BBBxHHbbbbIIII4x", OP_DENSE, ACT_RELU if f.relu else ACT_NONE,
                            FLAG_TRAINABLE if f.trainable else 0, f.n_in, f.n_out,
                            we, be, ye, yz, w_off, len(w), b_off, len(b))
    total = data_base + len(data)
    body = struct.pack("<BBHHbbb3xII12x", dtype, n, layers[0].n_in, layers[-1].n_out,
                       in_exp, in_zp, lut_exp, layers_off, lut_off) + bytes(recs) + bytes(data)
    crc = zlib.crc32(body) & 0xFFFFFFFF
    head = MAGIC + struct.pack("<HHII", VERSION[0], VERSION[1], total, crc)
    blob = head + body
    assert len(blob) == total
    return blob


def export_f32(layers: list[FusedDense], params: Params) -> bytes:
    ws = [np.ascontiguousarray(w, "<f4").tobytes() for w in params.weights]
    bs = [np.ascontiguousarray(b, "<f4").tobytes() for b in params.biases]
    return _pack(DTYPE_F32, layers, ws, bs, [(0, 0, 0, 0)] * len(layers), 0, 0, 0, None)


def export_s8(qm: QModel) -> bytes:
    ls = [L.spec for L in qm.layers]
    ws = [L.w.astype("<i1").tobytes() for L in qm.layers]
    bs = [L.b.astype("<i4").tobytes() for L in qm.layers]
    qi = [(L.ew, L.eb, L.ey, L.zy) for L in qm.layers]
    return _pack(DTYPE_S8, ls, ws, bs, qi, qm.ex, qm.zx, qm.lut_exp,
                 qm.lut.astype("<u2").tobytes())


@dataclass
class Blob:
    dtype: int
    layers: list[FusedDense]
    params: Params | None  # f32
    qmodel: QModel | None  # s8


def read(blob: bytes) -> Blob:
    """Parse a blob with the same checks as the engine (the Python twin of kl_blob_check)."""
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
    dtype, n, n_in, _n_cls, in_exp, in_zp, lut_exp, layers_off, lut_off = struct.unpack_from(
        "<BBHHbbb3xII", blob, 16)
    layers: list[FusedDense] = []
    ws, bs, qls = [], [], []
    for i in range(n):
        (op, act, flags, li, lo, we, be, ye, yz, w_off, w_sz, b_off, b_sz) = struct.unpack_from(
            "<BBBxHHbbbbIIII", blob, layers_off + i * LAYER_SIZE)
        if op != OP_DENSE:
            raise BlobError("KL_ECORRUPT", f"layer {i}: unknown op {op}")
        f = FusedDense(li, lo, act == ACT_RELU, bool(flags & FLAG_TRAINABLE))
        layers.append(f)
        wdt, bdt = ("<f4", "<f4") if dtype == DTYPE_F32 else ("<i1", "<i4")
        w = np.frombuffer(blob, wdt, li * lo, w_off).reshape(lo, li)
        b = np.frombuffer(blob, bdt, lo, b_off)
        ws.append(w.copy())
        bs.append(b.copy())
        qls.append(QLayer(f, w.astype(np.int64), b.astype(np.int64), we, be, ye, yz))
    if dtype == DTYPE_F32:
        return Blob(dtype, layers, Params(ws, bs), None)
    lut = np.frombuffer(blob, "<u2", 256, lut_off).copy()
    return Blob(dtype, layers, None, QModel(qls, in_exp, in_zp, lut_exp, lut))
