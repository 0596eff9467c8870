"""The .klm blob: round trip, and every kind of bad blob rejected with its own code, by the
Python reader and by the C engine under ASan/UBSan; plus a fuzz run of the C parser."""

from __future__ import annotations

import re
import struct
import subprocess
import zlib

import numpy as np
import pytest

from kilolearn import build, export, job, model, runner
from kilolearn import reference as R


@pytest.fixture(scope="module")
def blobs(digits):
    m = model.mlp([64, 32, 10])
    p = m.init(0)
    qm = R.quantize_model(m.fused, p, digits.x_train[:100])
    return {"f32": (export.export_f32(m.fused, p), m, p, qm),
            "s8": (export.export_s8(qm), m, p, qm)}


def reseal(b: bytearray) -> bytes:
    total = struct.unpack_from("<I", b, 8)[0]
    struct.pack_into("<I", b, 12, zlib.crc32(b[16:total]) & 0xFFFFFFFF)
    return bytes(b)


def bad_blobs(blob: bytes) -> dict[str, bytes]:
    flipped = bytearray(blob)
    flipped[len(blob) - 7] ^= 0x10  # a weight byte
    version = bytearray(blob)
    struct.pack_into("<H", version, 4, 2)
    magic = b"KLMX" + blob[4:]
    inconsistent = bytearray(blob)
    struct.pack_into("<H", inconsistent, 48 + 4, 63)  # first layer n_in != n_inputs
    offset = bytearray(blob)
    struct.pack_into("<I", offset, 48 + 12, len(blob) - 2)  # weights past the end
    return {
        "KL_ETRUNC": blob[: len(blob) - 5],
        "KL_ECRC": bytes(flipped),
        "KL_EVERSION": reseal(version),
        "KL_EBADMAGIC": magic,
        "KL_ECORRUPT": reseal(inconsistent),
        "KL_ECORRUPT ": reseal(offset),
    }


def test_round_trip(blobs):
    blob, m, p, qm = blobs["f32"]
    back = export.read(blob)
    assert back.layers == m.fused
    for a, b in zip(back.params.weights, p.weights, strict=True):
        assert np.array_equal(a, b)
    blob8, *_ = blobs["s8"]
    q8 = export.read(blob8).qmodel
    for a, b in zip(q8.layers, qm.layers, strict=True):
        assert np.array_equal(a.w, b.w) and np.array_equal(a.b, b.b)
        assert (a.ew, a.eb, a.ey, a.zy) == (b.ew, b.eb, b.ey, b.zy)
    assert np.array_equal(q8.lut, qm.lut)


@pytest.mark.parametrize("dtype", ["f32", "s8"])
def test_python_reader_rejects_bad_blobs(blobs, dtype):
    blob = blobs[dtype][0]
    for code, bad in bad_blobs(blob).items():
        if code.strip() == "KL_ECORRUPT":
            continue  # structural checks are the engine's (tested below)
        with pytest.raises(export.BlobError) as e:
            export.read(bad)
        assert e.value.code == code.strip()


@pytest.mark.parametrize("dtype", ["f32", "s8"])
def test_engine_rejects_bad_blobs_with_distinct_codes(blobs, dtype, digits):
    """Runs the host build under ASan/UBSan: each bad blob yields its own KL_E* code."""
    blob, m, p, qm = blobs[dtype]
    x = digits.x_train[:2] if dtype == "f32" else qm.quantize_input(digits.x_train[:2])
    seen = set()
    for code, bad in bad_blobs(blob).items():
        img = job.build(bad, x, digits.y_train[:2])
        with pytest.raises(runner.RunError) as e:
            runner.run_job(img, "host", sanitize=True)
        got = int(re.search(r"code (-\d+)", str(e.value)).group(1))
        assert export.ERRORS[got] == code.strip(), (code, str(e.value))
        seen.add(got)
    assert len(seen) == 5
    # and the good blob runs
    runner.run_job(job.build(blob, x, digits.y_train[:2]), "host", sanitize=True)


@pytest.mark.parametrize("dtype", ["f32", "s8"])
def test_fuzz_blob_parser_under_sanitizers(blobs, dtype, tmp_path):
    exe = build.build("host", sanitize=True, target="kl_fuzz_blob")
    path = tmp_path / "model.klm"
    path.write_bytes(blobs[dtype][0])
    r = subprocess.run([str(exe), str(path), "100000", "7"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    counts = dict(re.findall(r"(-\d+):(\d+)", r.stdout))
    for code in ("-200", "-201", "-202", "-203", "-204"):
        assert int(counts[code]) > 0, r.stdout
