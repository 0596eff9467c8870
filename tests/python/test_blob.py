"""The .klm blob: round trip, and every kind of bad blob rejected with its own code, by the
Python reader and by the C engine under ASan/UBSan; plus a fuzz run of the C parser."""

from __future__ import annotations

import re
import struct
import subprocess
import zlib

import numpy as np
import pytest

from kilolearn.core import model
from kilolearn.core import reference as R
from kilolearn.device import build, job, runner
from kilolearn.formats import export


@pytest.fixture(scope="module")
def blobs(digits):
    m = model.mlp([64, 32, 10])
    p = m.init(0)
    qm = R.quantize_model(m.graph, p, digits.x_train[:100])
    return {"f32": (export.export_f32(m.graph, p), m, p, qm),
            "s8": (export.export_s8(qm), m, p, qm)}


def reseal(b: bytearray) -> bytes:
    total = struct.unpack_from("<I", b, 8)[0]
    struct.pack_into("<I", b, 12, zlib.crc32(b[16:total]) & 0xFFFFFFFF)
    return bytes(b)


def bad_blobs(blob: bytes) -> dict[str, bytes]:
    flipped = bytearray(blob)
    flipped[len(blob) - 7] ^= 0x10  # a weight byte
    version = bytearray(blob)
    struct.pack_into("<H", version, 4, export.VERSION[0] + 1)
    magic = b"KLMX" + blob[4:]
    ops_off = struct.unpack_from("<I", blob, 32)[0]
    n_tensors = struct.unpack_from("<H", blob, 18)[0]
    inconsistent = bytearray(blob)
    struct.pack_into("<H", inconsistent, ops_off + 12, n_tensors - 1)  # reads an unmade tensor
    offset = bytearray(blob)
    struct.pack_into("<I", offset, ops_off + 20, len(blob) - 4)  # weights past the end
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
    assert back.graph == m.graph
    for a, b in zip(back.params.weights, p.weights, strict=True):
        assert np.array_equal(a, b)
    blob8, *_ = blobs["s8"]
    q8 = export.read(blob8).qmodel
    for a, b in zip(q8.w + q8.b, qm.w + qm.b, strict=True):
        assert np.array_equal(a, b)
    assert (q8.ew, q8.eb, q8.exp, q8.zp) == (qm.ew, qm.eb, qm.exp, qm.zp)
    assert np.array_equal(q8.lut, qm.lut)


def test_round_trip_of_every_op_kind(rng):
    from test_engine import residual_net

    m = residual_net()
    p = m.init(1)
    back = export.read(export.export_f32(m.graph, p))
    assert back.graph == m.graph
    for a, b in zip(back.params.weights, p.weights, strict=True):
        assert (a is None and b is None) or np.array_equal(a, b)


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


@pytest.mark.parametrize("dtype", ["f32", "s8", "residual-f32", "residual-s8",
                                   "residual-s8-schedule", "residual-f32-schedule",
                                   "compact-s8-schedule", "split-s8-schedule", "acts-mse-s8",
                                   "acts-mse-f32"])
def test_fuzz_blob_parser_under_sanitizers(blobs, dtype, tmp_path, rng):
    from test_engine import residual_net

    from kilolearn import planner

    exe = build.build("host", sanitize=True, target="kl_fuzz_blob")
    path = tmp_path / "model.klm"
    if dtype.startswith("compact"):  # format 2.3: compact backward steps
        from test_schedule import compact_net

        m = compact_net()
        x = rng.uniform(0, 1, (2,) + m.graph.shapes[0]).astype(np.float32)
        plan = planner.baseline(planner.MemModel(m.graph, "s8"), "store-all")
        assert any(s.flags & planner.STEP_COMPACT for s in plan.steps)
        blob = export.export_s8(R.quantize_model(m.graph, m.init(2), x), plan)
    elif dtype.startswith("split"):  # format 2.7: the region split (the fuzzer's far region)
        from test_schedule import split_plans

        m = residual_net()
        x = rng.uniform(0, 1, (4,) + m.graph.shapes[0]).astype(np.float32)
        _, plan = split_plans(planner.MemModel(m.graph, "s8"))[0]
        blob = export.export_s8(R.quantize_model(m.graph, m.init(2), x), plan)
        assert blob[6] == export.VERSION_SPLIT[1]
    elif dtype.startswith("residual"):
        m = residual_net()
        p = m.init(2)
        x = rng.uniform(0, 1, (4,) + m.graph.shapes[0]).astype(np.float32)
        f32 = "-f32" in dtype
        plan = None
        if dtype.endswith("schedule"):  # format 2.1: a recomputing plan in the blob
            plan = planner.baseline(planner.MemModel(m.graph, "f32" if f32 else "s8"), "sqrt-n")
            assert plan.extra_macs > 0
        blob = export.export_f32(m.graph, p, plan) if f32 else \
            export.export_s8(R.quantize_model(m.graph, p, x), plan)
    elif dtype.startswith("acts"):  # format 2.6: sigmoid, tanh, leaky ReLU; 2.5: MSE loss
        m = model.Model([model.Input((8,)), model.Dense(6, "sigmoid"), model.Dense(5, "tanh"),
                         model.Dense(4), model.LeakyReLU(), model.Dense(8),
                         model.MeanSquaredError()])
        p = m.init(2)
        x = rng.uniform(0, 1, (4, 8)).astype(np.float32)
        blob = export.export_f32(m.graph, p) if dtype.endswith("f32") else \
            export.export_s8(R.quantize_model(m.graph, p, x))
        assert blob[6] == export.VERSION_ACTS[1] and blob[17] == export.LOSSES["mse"]
    else:
        blob = blobs[dtype][0]
    path.write_bytes(blob)
    n = "20000" if dtype.startswith("compact") else "100000"  # a 10x bigger blob
    r = subprocess.run([str(exe), str(path), n, "7"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    counts = dict(re.findall(r"(-\d+):(\d+)", r.stdout))
    for code in ("-200", "-201", "-202", "-203", "-204"):
        assert int(counts[code]) > 0, r.stdout
