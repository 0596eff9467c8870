"""Session protocol version 2 (docs/protocol.md): a window of requests in flight over a lossy
link (frames lost, duplicated, reordered, corrupted at random, both ways) gives the session the
results of a clean link, the device equal to its numpy twin; every request runs once. Versions 1
and 2 work with each other; a device reset mid-window is restored from the client's journal."""

from __future__ import annotations

import copy
import struct

import numpy as np
import pytest

from kilolearn.core import reference
from kilolearn.device import build, session
from kilolearn.device import protocol as P
from kilolearn.device.lossy import LossyLink
from kilolearn.formats import export


@pytest.fixture(scope="module")
def exe():
    return str(build.build("host", target="kl_session"))


@pytest.fixture(scope="module")
def small(digits):
    """Split digits, every 4th training sample, every 3rd test sample."""
    ds = copy.copy(digits)
    ds.x_train, ds.y_train = digits.x_train[::4], digits.y_train[::4]
    ds.x_test, ds.y_test = digits.x_test[::3], digits.y_test[::3]
    return ds


def _lossy(exe: str, p: float, seed: int, *args: str) -> LossyLink:
    return LossyLink(P.ProcessLink([exe, *args]), loss=p, dup=p, reorder=p, corrupt=p, seed=seed)


def _model(digits):
    m = session.build_model(session.Scenario())
    qm = reference.quantize_model(m.graph, m.init(2), digits.x_train[:200])
    return qm, export.export_s8(qm)


def _stream(c: P.Client, blob: bytes, xq: np.ndarray, y: np.ndarray) -> tuple[list, list, int]:
    """LOAD, CONFIG, every sample as TRAIN then as EVAL, a window in flight."""
    c.load(blob)
    c.config(lr=0.05, seed=3, cut=P.NO_CUT, classes=b"")
    items = [(int(y[i]), xq[i].tobytes()) for i in range(len(y))]
    trained = list(c.train_many(items))
    evals = list(c.eval_many(items))
    return trained, evals, c.stats().train_steps


@pytest.mark.parametrize("p", [0.01, 0.10])
def test_class_incremental_session_over_a_lossy_link_equals_the_clean_one(exe, small, p):
    """device/session.py run() (request by request) on the host build through the lossy link:
    the accuracies after every task, the numpy twin's and the STATS of the clean link."""
    sc = session.Scenario(epochs=1, replay_cap=50, replay_ratio=2)
    clean = session.run(P.Client(P.ProcessLink([exe])), "replay", sc, small)
    link = _lossy(exe, p, seed=int(p * 1000))
    c = P.Client(link, timeout=5)
    c.rto_min = 0.005  # the host build answers within a millisecond
    res = session.run(c, "replay", sc, small)
    c.close()
    assert c.version == 2 and c.window == 16
    assert res.acc_after_task == clean.acc_after_task == res.reference_acc_after_task
    assert res.task_acc == clean.task_acc
    for a, b in zip(res.stats, clean.stats, strict=True):
        a, b = dict(a), dict(b)
        a.pop("train_insn"), b.pop("train_insn")
        assert a == b  # every TRAIN ran once: steps, replay steps, latents, store bytes
    assert res.stats[-1]["train_steps"] == len(small.y_train)
    assert link.counts["out lost"] > 0 and link.counts["in lost"] > 0
    assert link.counts["out duplicated"] > 0 and link.counts["in reordered"] > 0
    assert c.retransmissions > 0


@pytest.mark.parametrize("p", [0.01, 0.10])
def test_windowed_stream_over_a_lossy_link_equals_numpy(exe, digits, p):
    """600 TRAIN then 600 EVAL frames, 8 in flight, through the lossy link: the replies of a
    clean link, the predictions of the numpy twin trained on each sample once."""
    qm, blob = _model(digits)
    xq, y = qm.quantize_input(digits.x_train[:600]), digits.y_train[:600]
    clean = _stream(P.Client(P.ProcessLink([exe]), window=8), blob, xq, y)
    link = _lossy(exe, p, seed=7 + int(p * 100))
    c = P.Client(link, timeout=5, window=8)
    c.rto_min = 0.005
    got = _stream(c, blob, xq, y)
    c.close()
    assert c.window == 8 and link.counts["in lost"] > 0
    assert got == clean
    assert got[2] == len(y)  # STATS: each TRAIN ran once
    ref = reference.S8Trainer(qm, lr=0.05, seed=3)
    ref.class_mask = np.zeros(10, bool)  # classes grow with the labels trained
    before = []
    for i in range(len(y)):
        ref.class_mask[int(y[i])] = True
        before.append(int(ref.predict(xq[i:i + 1])[0]))
        ref.step(xq[i], int(y[i]))
    assert [t[0] for t in got[0]] == before  # the prediction before each update
    assert [e[0] for e in got[1]] == [int(v) for v in ref.predict(xq)]


def test_version_1_and_2_work_with_each_other(exe, digits):
    """A version 1 host (one request at a time, version 1 frames) with this device, and this
    client with a version 1 device (the host build with --proto 1, which refuses version 2
    frames as a version 1 device does): the same replies as version 2 with a window."""
    qm, blob = _model(digits)
    xq, y = qm.quantize_input(digits.x_train[:200]), digits.y_train[:200]
    v2 = _stream(P.Client(P.ProcessLink([exe])), blob, xq, y)
    old_host = P.Client(P.ProcessLink([exe]), version=1)
    assert (old_host.version, old_host.window) == (1, 1)
    assert (old_host.last_info.version, old_host.last_info.window) == (1, 1)  # INFO says so
    assert _stream(old_host, blob, xq, y) == v2
    old_dev = P.Client(P.ProcessLink([exe, "--proto", "1"]))
    assert (old_dev.version, old_dev.window) == (1, 1)
    assert _stream(old_dev, blob, xq, y) == v2
    # the version 1 device answers a version 2 frame with NAK(KL_EVERSION), nothing run
    old_dev.link.write(P.pack(P.STATS, old_dev.seq + 1, b"", P.VERSION2))
    r = P.unpack(old_dev.link.read_frame(5))
    assert (r.type, r.status) == (P.NAK, P.EVERSION)
    assert old_dev.stats().train_steps == len(y)


def test_held_requests_run_in_order_once(exe):
    """Frames sent out of order within the window are held (an ACK maps them) and run when the
    gap is filled, in order; a duplicate of a held or a run request runs nothing again."""
    c = P.Client(P.ProcessLink([exe]), window=4)
    s = c.seq
    link = c.link
    link.write(P.pack(P.STATS, s + 3, b"", P.VERSION2))
    a = P.unpack(link.read_frame(5))
    assert (a.type, a.seq, a.status) == (P.ACK, s, 0)
    assert struct.unpack_from("<HI", a.payload, 4) == (s + 3, 1 << 2)
    link.write(P.pack(P.STATS, s + 2, b"", P.VERSION2) + P.pack(P.STATS, s + 3, b"", P.VERSION2))
    a = P.unpack(link.read_frame(5))
    assert struct.unpack_from("<HI", a.payload, 4) == (s + 2, 0b110)
    a = P.unpack(link.read_frame(5))  # the duplicate of a held one: held still, once
    assert struct.unpack_from("<HI", a.payload, 4) == (s + 3, 0b110)
    link.write(P.pack(P.STATS, s + 1, b"", P.VERSION2))
    got = [P.unpack(link.read_frame(5)) for _ in range(3)]
    assert [(r.type, r.seq) for r in got] == [(P.STATS | P.REPLY, s + k) for k in (1, 2, 3)]
    link.write(P.pack(P.STATS, s + 2, b"", P.VERSION2))  # a late duplicate: the cached reply
    again = P.unpack(link.read_frame(5))
    assert (again.seq, again.payload) == (s + 2, got[1].payload)
    link.write(P.pack(P.STATS, s + 40, b"", P.VERSION2))  # past the window (16): refused
    r = P.unpack(link.read_frame(5))
    assert (r.type, r.seq, r.status) == (P.NAK, s + 40, P.ESEQ)
    c.seq = s + 3
    assert c.stats().train_steps == 0
    c.close()


class _ResetLink:
    """The host build on a flash file; when the k-th new TRAIN sample (``reset_at``) is written,
    the device is killed (what it had not answered is lost) and started again on the same
    flash, as a board resets."""

    def __init__(self, cmd: list[str]):
        self.cmd, self.reset_at, self.samples = cmd, set(), set()
        self.link = P.ProcessLink(cmd)

    def write(self, data: bytes) -> None:
        for wire in data.split(b"\0")[:-1]:
            f = P.unpack(wire)
            if f.type == P.TRAIN and f.payload not in self.samples:
                self.samples.add(f.payload)
                if len(self.samples) in self.reset_at:
                    self.link.proc.kill()
                    self.link.close()
                    self.link = P.ProcessLink(self.cmd)
        self.link.write(data)

    def read_frame(self, timeout: float) -> bytes:
        return self.link.read_frame(timeout)

    def close(self) -> None:
        self.link.close()


def test_device_reset_mid_window_restored_from_the_journal(exe, digits, tmp_path):
    """The device resets twice with 8 TRAINs in flight: each time the client sees it refuse
    their sequence numbers, starts a new sequence, sends the CONFIG and the TRAINs after it
    again (each reply as before), then the ones not handed over yet: the results of a run
    without a reset (the replies, predictions and STATS: each TRAIN run once since the
    reset)."""
    qm, blob = _model(digits)
    xq, y = qm.quantize_input(digits.x_train[:300]), digits.y_train[:300]
    clean = _stream(P.Client(P.ProcessLink([exe]), window=8), blob, xq, y)
    link = _ResetLink([exe, "--flash", str(tmp_path / "f.bin")])
    link.reset_at = {100, 200}  # the 100th and 200th sample: 8 TRAINs in flight
    c = P.Client(link, window=8)
    c.load(blob)
    c.config(lr=0.05, seed=3, cut=P.NO_CUT, classes=b"")
    items = [(int(y[i]), xq[i].tobytes()) for i in range(len(y))]
    trained = list(c.train_many(items))
    evals = list(c.eval_many(items))
    steps = c.stats().train_steps
    assert c.resets == 2
    assert (trained, evals, steps) == clean
    c.close()


def test_device_reset_after_a_commit_raises_with_the_pending_requests(exe, digits, tmp_path):
    """After a COMMIT the training state cannot be rebuilt (the stored blob moved): the client
    raises DeviceReset naming the requests left unanswered, in order, and has started a new
    sequence with the device (which runs the committed generation)."""
    qm, blob = _model(digits)
    xq, y = qm.quantize_input(digits.x_train[:64]), digits.y_train[:64]
    link = _ResetLink([exe, "--flash", str(tmp_path / "f.bin")])
    c = P.Client(link, window=8)
    c.load(blob)
    c.config(lr=0.05, seed=3, cut=P.NO_CUT, classes=b"")
    list(c.train_many((int(y[i]), xq[i].tobytes()) for i in range(32)))
    c.commit()
    link.reset_at = {36}
    with pytest.raises(P.DeviceReset) as e:
        list(c.train_many((int(y[i]), xq[i].tobytes()) for i in range(32, 64)))
    pending = e.value.pending  # sent, never answered: a run of the requests, in order
    items = [(P.TRAIN, struct.pack("<H", int(y[i])) + xq[i].tobytes()) for i in range(64)]
    first = items.index(pending[0])
    assert 32 <= first and pending == items[first:first + len(pending)] and len(pending) <= 8
    st = c.stats()  # the new sequence works; the device runs the committed generation
    assert st.generation == 2 and st.train_steps == 0
    c.close()


def test_window_on_the_emulated_board_equals_numpy(digits):
    """The bare-metal firmware on QEMU mps2-an386 (its UART read a byte at a time, the rest of
    the socket's bytes held back by QEMU): 300 TRAIN and EVAL frames with 8 in flight give the
    replies of one at a time and the numpy twin's predictions."""
    from conftest import require_target

    require_target("mps2-an386")
    qm, blob = _model(digits)
    xq, y = qm.quantize_input(digits.x_train[:300]), digits.y_train[:300]
    with session.open_device("mps2-an386") as c:
        assert (c.version, c.window) == (2, 16)
        c.window = 8
        windowed = _stream(c, blob, xq, y)
        c.window = 1
        assert _stream(c, blob, xq, y) == windowed
    ref = reference.S8Trainer(qm, lr=0.05, seed=3)
    ref.class_mask = np.zeros(10, bool)
    for i in range(len(y)):
        ref.class_mask[int(y[i])] = True
        ref.step(xq[i], int(y[i]))
    assert [e[0] for e in windowed[1]] == [int(v) for v in ref.predict(xq)]
