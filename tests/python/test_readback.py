"""READ: the host pulls a model back from the device (docs/protocol.md). The model as trained is
a valid blob (CRC resealed) whose weights, biases and activation exponents are the numpy twin's
after the same steps, and which predicts on the host exactly as the device does; the stored
generation comes back byte for byte; a partial or damaged read is caught by the blob's own
checks; a read across a TRAIN starts again."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from conftest import require_target

from kilolearn.core import model, reference
from kilolearn.device import protocol as P
from kilolearn.device import session
from kilolearn.formats import export

ALL = bytes([1] * 10)


@pytest.fixture(scope="module")
def qm(digits) -> reference.QModel:
    m = model.mlp([64, 32, 10])
    return reference.quantize_model(m.graph, m.init(2), digits.x_train[:200])


def _train_both(dev: P.Client, qm: reference.QModel, digits, n: int) -> reference.S8Trainer:
    twin = reference.S8Trainer(qm, lr=0.05, seed=4)
    dev.config(lr=0.05, seed=4, classes=ALL)
    xq = qm.quantize_input(digits.x_train[:n])
    for x, y in zip(xq, digits.y_train[:n], strict=True):
        dev.train(int(y), x.tobytes())
        twin.step(x, int(y))
    return twin


@pytest.mark.parametrize("target", ["host", "mps2-an386"])
def test_pulled_model_is_the_twins_and_predicts_alike(target, qm, digits):
    require_target(target)
    blob = export.export_s8(qm)
    with session.open_device(target) as dev:
        dev.load(blob)
        assert dev.read_blob(P.READ_STORED) == blob  # the stored generation, byte for byte
        twin = _train_both(dev, qm, digits, 300)
        pulled = dev.read_blob()
        got = export.read(pulled).qmodel  # CRC and tables check out
        for a, b in zip(got.w, twin.m.w, strict=True):
            assert (a is None and b is None) or np.array_equal(a, b)
        for a, b in zip(got.b, twin.m.b, strict=True):
            assert (a is None and b is None) or np.array_equal(a, b)
        assert list(got.exp) == list(twin.m.exp)
        # the pulled blob on the host predicts what the device predicts, sample for sample
        xt = qm.quantize_input(digits.x_test[:150])
        host = reference.S8Trainer(got).predict(xt)
        dev_pred = [dev.eval(int(y), x.tobytes())[0] for x, y in zip(xt, digits.y_test[:150],
                                                                     strict=True)]
        assert list(host) == dev_pred
        assert np.mean(host == digits.y_test[:150]) > 0.5
        # after COMMIT the stored generation is the pulled model
        dev.commit()
        assert dev.read_blob(P.READ_STORED) == pulled


def test_partial_damaged_and_moving_reads(qm, digits):
    blob = export.export_s8(qm)
    with session.open_device("host") as dev:
        dev.load(blob)
        _train_both(dev, qm, digits, 20)
        pulled = dev.read_blob()
        for bad in (pulled[:-1], pulled[: len(pulled) // 2]):  # a read cut short
            with pytest.raises(export.BlobError):
                export.read(bad)
        flipped = bytearray(pulled)
        flipped[len(pulled) - 3] ^= 0x10  # a damaged weight byte
        with pytest.raises(export.BlobError):
            export.read(bytes(flipped))
        # chunk by chunk: the version moves with a TRAIN in between
        p0 = dev.request(P.READ, struct.pack("<BIH", 0, 0, 64))
        total, v0 = struct.unpack_from("<II", p0)
        assert total == len(pulled) and len(p0) == 8 + 64
        dev.train(1, qm.quantize_input(digits.x_train[0]).tobytes())
        _, v1 = struct.unpack_from("<II", dev.request(P.READ, struct.pack("<BIH", 0, 64, 64)))
        assert v1 != v0
        assert export.read(dev.read_blob()).qmodel is not None  # a whole read still works
        # past the end, a bad source, a short request: refused
        for req in (struct.pack("<BIH", 0, total + 1, 16), struct.pack("<BIH", 2, 0, 16),
                    b"\x00\x00"):
            with pytest.raises(P.DeviceError) as e:
                dev.request(P.READ, req)
            assert e.value.status == -22
        end = dev.request(P.READ, struct.pack("<BIH", 0, total, 16))
        assert len(end) == 8  # at the end: no bytes
    with session.open_device("host") as dev:  # nothing loaded: nothing to read
        with pytest.raises(P.DeviceError) as e:
            dev.read_blob()
        assert e.value.status == -207
