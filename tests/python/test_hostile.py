"""Hostile input and faults against the session firmware (issue 15): one test per class of input
that crashed the device, lost the committed model or changed state while refused. Each drives the
host build under ASan/UBSan (a crash or undefined behaviour fails the run) through the protocol,
and checks the outcome against an independent reference: the numpy twin, the bytes of the store
file, or the model's own earlier answers.

The protocol fuzz (libFuzzer, QEMU) covers the same classes at random; these pin each one down."""

from __future__ import annotations

import hashlib
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import require_target

from kilolearn.core import model, reference
from kilolearn.device import build
from kilolearn.device import protocol as P
from kilolearn.formats import export

EINVAL, ENOMEM, ENOTSUP, ECORRUPT, ESTATE, ENOSPC = -22, -12, -134, -204, -208, -28
GEOMETRY = "64K,4K,16,0xFF"
ALL = bytes([1] * 10)


@pytest.fixture(scope="module")
def exe() -> Path:
    return build.build("host", sanitize=True, target="kl_session")


@pytest.fixture(scope="module")
def s8(digits) -> tuple[bytes, reference.QModel]:
    m = model.mlp([64, 32, 10])
    qm = reference.quantize_model(m.graph, m.init(0), digits.x_train[:200])
    return export.export_s8(qm), qm


@pytest.fixture(scope="module")
def f32() -> tuple[bytes, model.Model, model.Params]:
    m = model.mlp([64, 16, 10])
    p = m.init(5)
    return export.export_f32(m.graph, p), m, p


def _client(exe: Path, flash: Path | None = None, geometry: str = GEOMETRY) -> P.Client:
    args = [str(exe)] + (["--flash", str(flash), "--geometry", geometry] if flash else [])
    return P.Client(P.ProcessLink(args), timeout=20)


def _reseal(blob: bytearray) -> bytes:
    struct.pack_into("<I", blob, 12, zlib.crc32(bytes(blob[export.CRC_START:])) & 0xFFFFFFFF)
    return bytes(blob)


def _lut_off(blob: bytes) -> int:
    return struct.unpack_from("<I", blob, 36)[0]


def _q(qm: reference.QModel, x: np.ndarray) -> bytes:
    return qm.quantize_input(x).tobytes()


def _expect(status: int, fn, *args) -> None:  # noqa: ANN001
    with pytest.raises(P.DeviceError) as e:
        fn(*args)
    assert e.value.status == status, e.value


def _alive(c: P.Client) -> None:
    """The device still answers, and its process did not die (ASan exits it on a finding)."""
    c.stats()
    proc = getattr(c.link, "proc", None)
    assert proc is None or proc.poll() is None


# ---- 1. CRC-valid blobs whose contents the engine relies on -------------------------------------

def _bad_tables(lut: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    zero = np.zeros(256, np.uint16)
    first_zero = lut.copy()
    first_zero[0] = 0
    growing = lut.copy()
    growing[5] = growing[4] + 1
    small = lut.copy()
    small[0] = 32767
    rand = [rng.integers(0, 65536, 256).astype(np.uint16) for _ in range(4)]
    return [zero, first_zero, growing, small, *rand]


def test_blob_contents_softmax_table_checked(exe, s8, rng):
    """A softmax table the exporter never makes (T[0] = 0 divided by zero on the first TRAIN):
    kl_blob_check refuses it (LOAD END: KL_ECORRUPT) and so does `export.read` (kilolearn info);
    the device keeps running the good model, which trains as the numpy twin says."""
    blob, qm = s8
    lut = np.frombuffer(blob, "<u2", 256, _lut_off(blob)).copy()
    assert lut[0] == 32768 and np.all(np.diff(lut.astype(int)) <= 0)  # what the exporter makes
    c = _client(exe)
    c.load(blob)
    for bad in _bad_tables(lut, rng):
        b = bytearray(blob)
        b[_lut_off(blob):_lut_off(blob) + 512] = bad.astype("<u2").tobytes()
        mutant = _reseal(b)
        with pytest.raises(export.BlobError):
            export.read(mutant)
        _expect(ECORRUPT, c.load, mutant)
        _alive(c)
    x = np.random.default_rng(0).normal(0, 4, (20, 64))
    ref = reference.S8Trainer(qm, lr=0.05, seed=1)  # every class active (the default)
    for i, xi in enumerate(x):  # the good model is the one that trains
        xq = qm.quantize_input(xi)
        want = ref.predict(xq[None])[0]
        ref.step(xq, i % 10)
        assert c.train(i % 10, xq.tobytes())[0] == want
    c.close()


# ---- 2. alignment -------------------------------------------------------------------------------

def test_float_samples_any_offset_in_the_frame(exe, f32):
    """PREDICT puts a float sample 6 bytes into the frame, TRAIN/EVAL 8: the session moves each
    to a 4-byte boundary before the engine reads it (UBSan's alignment check, the M4's
    UsageFault), and the logits equal numpy's forward pass."""
    blob, m, p = f32
    c = _client(exe)
    c.load(blob)
    c.config(classes=ALL)
    twin = reference.F32Trainer(m.graph, p)
    for i in range(8):
        x = np.random.default_rng(i).normal(0, 1, 64).astype(np.float32)
        pred, logits = c.predict(x.astype("<f4").tobytes())
        want = twin.forward(x)[m.graph.output].reshape(-1)
        got = np.frombuffer(logits, "<f4")
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert pred == int(np.argmax(want))
        assert c.eval(pred, x.astype("<f4").tobytes()) == (pred, True)
    _alive(c)
    c.close()


# ---- 3. CONFIG: all or nothing ------------------------------------------------------------------

def test_config_refused_changes_nothing(exe, s8):
    """A CONFIG refused for a later item applies none of the items before it (here a learning
    rate ten times larger, then an out-of-range cut; a replay buffer that cannot fit), keeps the
    trained state, and sticks nowhere: the device goes on exactly as the numpy twin trained with
    the settings it had."""
    blob, qm = s8
    xs = [np.random.default_rng(100 + i).normal(0, 4, 64) for i in range(30)]
    c = _client(exe)
    c.load(blob)
    c.config(lr=0.05, seed=7, classes=ALL)
    ref = reference.S8Trainer(qm, lr=0.05, seed=7)
    for i, x in enumerate(xs):
        if i == 10:
            for bad in (
                struct.pack("<BBf", P.CFG_LR, 4, 0.5) + struct.pack("<BBH", P.CFG_CUT, 2, 999),
                struct.pack("<BBf", P.CFG_LR, 4, 0.5) + struct.pack("<BBH", P.CFG_CUT, 2, 3)
                + struct.pack("<BBI", P.CFG_REPLAY_CAP, 4, 0xFFFFFFFF),
                struct.pack("<BBf", P.CFG_LR, 4, 0.5) + b"\x63\x00",  # an unknown key
                struct.pack("<BBf", P.CFG_LR, 4, 0.5) + struct.pack("<BBBH", P.CFG_UPDATE, 3, 9,
                                                                     500),
                struct.pack("<BBf", P.CFG_LR, 4, 0.5) + b"\x02\x05",  # truncated item
                # 65,535 replay steps per TRAIN: no crash, but a TRAIN that never ends
                struct.pack("<BBf", P.CFG_LR, 4, 0.5) + struct.pack("<BBH", P.CFG_REPLAY_RATIO,
                                                                     2, 101),
            ):
                with pytest.raises(P.DeviceError) as e:
                    c.request(P.CONFIG, bad)
                assert e.value.status in (EINVAL, ENOMEM)
            info = c.info()
            assert info.cut == P.NO_CUT and info.replay_cap == 0
            assert c.stats().train_steps == 10  # the training state is the one it had
        xq = qm.quantize_input(x)
        want = ref.predict(xq[None])[0]
        ref.step(xq, i % 10)
        assert c.train(i % 10, xq.tobytes())[0] == want, i
    assert c.stats().train_steps == len(xs)
    for x in xs[:5]:  # the weights are the twin's: the same logits, to the bit
        xq = qm.quantize_input(x)
        assert c.predict(xq.tobytes())[1] == ref.logits(xq).astype(np.int8).tobytes()
    c.config(lr=0.01)  # nothing refused stuck: a good CONFIG goes through
    _alive(c)
    c.close()


def test_replay_cut_on_a_planned_model_refused(exe, digits):
    """A model trained by its schedule frees activations as it goes: a replay cut there would
    copy a freed (NULL) tensor. CONFIG refuses it (KL_ENOTSUP) and the session trains on."""
    from kilolearn import planner
    from kilolearn.device import session

    sc = session.Scenario()
    m = session.build_model(sc, 64, 10)
    qm = reference.quantize_model(m.graph, m.init(1), digits.x_train[:200])
    pl = planner.baseline(planner.MemModel(m.graph, "s8"), "store-all")
    c = _client(exe)
    c.load(export.export_s8(qm, pl))
    _expect(ENOTSUP, c.config, None, 1, 8, m.graph.ops[0].output)
    assert c.info().cut == P.NO_CUT
    for i in range(5):
        c.train(i, _q(qm, digits.x_train[i]))
    _alive(c)
    c.close()


# ---- 5. a refused LOAD keeps the committed model --------------------------------------------

def test_refused_load_keeps_the_model_across_reboot(exe, s8, tmp_path):
    """A CRC-valid blob the engine refuses never becomes the active generation: the old model
    stays loaded (same answers) and is the one that boots after a restart. A LOAD BEGIN that
    finds no room leaves the model running too."""
    blob, qm = s8
    flash = tmp_path / "flash.bin"
    probe = [_q(qm, np.random.default_rng(200 + i).normal(0, 4, 64)) for i in range(6)]
    c = _client(exe, flash)
    c.load(blob)
    c.config(classes=ALL)
    for i in range(10):
        c.train(i % 10, probe[i % 6])
    c.commit()
    before = [c.predict(x) for x in probe]
    gen = c.stats().generation
    b = bytearray(blob)
    b[_lut_off(blob)] ^= 0x01  # T[0] != 32768
    _expect(ECORRUPT, c.load, _reseal(b))
    info = c.info()
    assert info.loaded and c.stats().generation == gen
    c.config(classes=ALL)  # a refused LOAD changed nothing, so CONFIG restarts the same model
    assert [c.predict(x) for x in probe] == before
    _expect(ENOSPC, c.request, P.LOAD, struct.pack("<BI", P.LOAD_BEGIN, 62 * 1024))
    assert c.info().loaded
    c.close()
    c = _client(exe, flash)  # reboot
    assert c.info().loaded and c.stats().generation == gen
    c.config(classes=ALL)
    assert [c.predict(x) for x in probe] == before
    c.close()


# ---- 6. the file store never wipes itself ---------------------------------------------------

def test_file_store_other_geometry_refused_and_kept(exe, s8, tmp_path):
    blob, qm = s8
    flash = tmp_path / "flash.bin"
    c = _client(exe, flash)
    c.load(blob)
    c.close()
    digest = hashlib.sha256(flash.read_bytes()).hexdigest()
    for geometry in ("128K,4K,16,0xFF", "64K,8K,16,0xFF", "64K,4K,16,0"):
        r = subprocess.run([str(exe), "--flash", str(flash), "--geometry", geometry],
                           input=b"", capture_output=True, timeout=30)
        assert r.returncode != 0
        err = r.stderr.decode().strip().splitlines()
        assert len(err) == 1 and "geometry 65536,4096,16,0xFF" in err[0], err
        assert hashlib.sha256(flash.read_bytes()).hexdigest() == digest
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a flash image" * 10)
    r = subprocess.run([str(exe), "--flash", str(junk), "--geometry", GEOMETRY], input=b"",
                       capture_output=True, timeout=30)
    assert r.returncode != 0 and junk.read_bytes() == b"not a flash image" * 10
    c = _client(exe, flash)  # the right geometry: the model is still there
    assert c.info().loaded
    c.close()


# ---- 7. slot sequence numbers wrap --------------------------------------------------------------

def _store_image(blob: bytes, seq: int, size: int = 64 * 1024, eb: int = 4096, wb: int = 16,
                 ev: int = 0xFF) -> bytes:
    """A file store (port/posix/kl_store_file.c) holding blob in one slot with sequence number
    seq (docs/flash-store.md's slot header), written from the documented layout."""
    n = size // eb
    image = bytearray([ev]) * size
    data_off = max(32, wb)
    h = struct.pack("<IIIII", 0x31534C4B, seq, len(blob), zlib.crc32(blob) & 0xFFFFFFFF,
                    data_off)
    h += struct.pack("<I", zlib.crc32(h) & 0xFFFFFFFF)
    image[0:len(h)] = h
    image[data_off:data_off + len(blob)] = blob
    head = b"KLNORSIM" + struct.pack("<IIIIII", size, eb, wb, ev, n, 0)
    return head + bytes(image) + bytes(8 * n)


@pytest.mark.parametrize("seq", [0xFFFFFFFF, 0xFFFFFFFE, 0x7FFFFFFF])
def test_commits_after_sequence_wrap_survive_reboot(exe, s8, tmp_path, seq):
    blob, qm = s8
    flash = tmp_path / "flash.bin"
    flash.write_bytes(_store_image(blob, seq))
    probe = [_q(qm, np.random.default_rng(300 + i).normal(0, 4, 64)) for i in range(6)]
    for k in range(3):  # three commits across the wrap, each the one that boots
        c = _client(exe, flash)
        assert c.info().loaded and c.stats().generation == (seq + k) & 0xFFFFFFFF
        c.config(classes=ALL, lr=0.2)
        for i in range(30):
            c.train(i % 10, probe[i % 6])
        c.commit()
        want = [c.predict(x) for x in probe]
        assert c.stats().generation == (seq + k + 1) & 0xFFFFFFFF
        c.close()
        c = _client(exe, flash)
        c.config(classes=ALL)
        assert c.stats().generation == (seq + k + 1) & 0xFFFFFFFF
        assert [c.predict(x) for x in probe] == want
        c.close()


# ---- 8. reply types are not requests ------------------------------------------------------------

def test_reply_and_nak_types_are_refused_unexecuted(exe):
    """Every request type with the reply bit (0x80-0xFF, 0xFF = NAK among them), and 0x7F
    (whose reply type would be 0xFF), is answered by a NAK (KL_ENOTSUP) that uses no sequence
    number: the next request with that number runs. An unknown request type below 0x7F gets
    its own reply type, never a NAK's."""
    c = _client(exe)
    link = c.link
    for t in [0x7F, *range(0x80, 0x100, 7), 0xFF]:
        seq = (c.seq + 1) & 0xFFFF
        link.write(P.pack(t, seq))
        r = P.unpack(link.read_frame(10))
        assert (r.type, r.seq, r.status) == (P.NAK, seq, ENOTSUP), hex(t)
        assert c.stats().n_sectors >= 0  # STATS takes the very same sequence number
        assert c.seq == seq
    for t in (0x0C, 0x42, 0x7E):
        c.seq = (c.seq + 1) & 0xFFFF
        link.write(P.pack(t, c.seq))
        r = P.unpack(link.read_frame(10))
        assert (r.type, r.status) == (t | P.REPLY, ENOTSUP)
        assert r.type != P.NAK
    _alive(c)
    c.close()


# ---- 4. 32-bit size arithmetic (shows on the Cortex-M only) -------------------------------------

@pytest.mark.qemu
def test_replay_capacity_overflowing_32_bits_refused_on_m4(digits):
    """cap * latent bytes past 2^32 wrapped to a small buffer on the M4 (size_t is 32 bits), was
    accepted, and the TRAINs after it wrote past it. Now KL_ENOMEM, nothing applied, and the
    session trains on."""
    require_target("mps2-an386")
    from kilolearn.device import session

    sc = session.Scenario()
    m = session.build_model(sc, 64, 10)
    qm = reference.quantize_model(m.graph, m.init(sc.seed), digits.x_train[:200])
    cut = m.graph.ops[0].output  # a frozen backbone's output: the replay cut
    latent = int(np.prod(m.graph.shapes[cut]))
    with session.open_device("mps2-an386") as c:
        c.load(export.export_s8(qm))
        for cap in (2**32 // latent + 1, 2**32 // latent + 2, 0xFFFFFFFF, 2**31 // latent + 1):
            _expect(ENOMEM, c.config, None, 1, cap, cut)
            info = c.info()
            assert info.cut == P.NO_CUT and info.replay_cap == 0
        c.config(cut=cut, replay_cap=16, replay_ratio=1)
        x = _q(qm, np.random.default_rng(1).normal(0, 4, 64))
        for i in range(40):
            assert c.train(i % 10, x)[1] == 1
        st = c.stats()
        assert st.train_steps == 40 and st.replay_count == 16
