"""The session protocol, host side (docs/protocol.md): COBS frames with CRC-32 and sequence
numbers over any byte link (pyserial URL, a child process's pipes). Version 2 keeps a window of
requests in flight (``Client.pipeline``); a version 1 device is spoken to one request at a
time."""

from __future__ import annotations

import os
import queue
import struct
import subprocess
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from ..formats.export import ERRORS

VERSION = 1  # the frames pack() builds unless told: every device reads version 1
VERSION2 = 2  # a window of requests in flight (docs/protocol.md)
HEADER = 6
INFO, LOAD, TRAIN, EVAL, PREDICT, COMMIT, STATS, CONFIG, RESET, READ, EPOCHS = range(1, 12)
READ_TRAINED, READ_STORED = 0, 1  # READ sources: the model as trained now, the stored one
REPLY, ACK, NAK = 0x80, 0xFE, 0xFF
LOAD_BEGIN, LOAD_DATA, LOAD_END = 0, 1, 2
(CFG_LR, CFG_REPLAY_RATIO, CFG_REPLAY_CAP, CFG_CUT, CFG_SEED, CFG_CLASSES, CFG_UPDATE,
 CFG_BUFFER, CFG_REPLAY_WHERE) = range(1, 10)
#: CFG_REPLAY_WHERE: the latents in the arena, in the replay store (flash: a new buffer, or
#: the one it holds when its shape matches; docs/replay.md)
REPLAY_ARENA, REPLAY_FLASH, REPLAY_FLASH_RESUME = 0, 1, 2
MAX_EPOCHS = 100  # per EPOCHS request
UPDATE_BLOB = 0xFF  # CFG_UPDATE policy: the one the blob carries
NO_CUT = 0xFFFF
EVERSION, EFRAME, ESEQ = -201, -205, -206

STATUS = dict(ERRORS)
STATUS.update({-205: "KL_EFRAME", -206: "KL_ESEQ", -207: "KL_ENOMODEL", -208: "KL_ESTATE",
               -5: "KL_EIO", -28: "KL_ENOSPC", -16: "KL_EBUSY"})


class FrameError(ValueError):
    pass


class DeviceError(RuntimeError):
    def __init__(self, cmd: int, status: int):
        super().__init__(f"command {cmd:#04x} failed: {STATUS.get(status, status)} ({status})")
        self.status = status


class LinkTimeout(TimeoutError):
    pass


class DeviceReset(DeviceError):
    """The device lost its session (a reset or power cycle: it refuses the sequence numbers
    in flight) and the client could not restore it (docs/protocol.md, "A device reset").
    ``pending``: the requests (command, payload) sent whose replies the caller has not had, in
    order; none of them has run since the reset. The device runs its newest committed
    generation with the default settings; the client has started a new sequence with INFO."""

    def __init__(self, cmd: int, pending: list[tuple[int, bytes]], why: str):
        RuntimeError.__init__(self, f"the device was reset with {len(pending)} request(s) "
                              f"unanswered: {why}")
        self.status = ESEQ
        self.cmd = cmd
        self.pending = pending


def cobs_encode(data: bytes) -> bytes:
    out = bytearray()
    for part in bytes(data).split(b"\0"):
        while len(part) >= 254:  # a full group (code 0xFF) carries no zero after it
            out.append(0xFF)
            out += part[:254]
            part = part[254:]
        out.append(len(part) + 1)
        out += part
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        i += 1
        if code == 0 or i + code - 1 > n:
            raise FrameError("bad COBS data")
        chunk = data[i:i + code - 1]
        if 0 in chunk:
            raise FrameError("zero inside COBS data")
        out += chunk
        i += code - 1
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def pack(ftype: int, seq: int, payload: bytes = b"", version: int = VERSION) -> bytes:
    body = struct.pack("<BBHH", ftype, version, seq & 0xFFFF, len(payload)) + payload
    body += struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)
    return cobs_encode(body) + b"\0"


@dataclass
class Frame:
    type: int
    seq: int
    payload: bytes
    version: int = VERSION

    @property
    def status(self) -> int:
        return struct.unpack_from("<i", self.payload)[0] if len(self.payload) >= 4 else -22


def pop_frame(buf: bytearray) -> bytes | None:
    """Take the first complete, non-empty frame (up to its 0x00 delimiter) out of ``buf``."""
    while (k := buf.find(0)) >= 0:
        frame = bytes(buf[:k])
        del buf[:k + 1]
        if frame:
            return frame
    return None


def unpack(wire: bytes) -> Frame:
    body = cobs_decode(wire)
    if len(body) < HEADER + 4:
        raise FrameError("short frame")
    ftype, ver, seq, n = struct.unpack_from("<BBHH", body)
    if n != len(body) - HEADER - 4:
        raise FrameError("length mismatch")
    if zlib.crc32(body[:-4]) & 0xFFFFFFFF != struct.unpack_from("<I", body, len(body) - 4)[0]:
        raise FrameError("CRC mismatch")
    return Frame(ftype, seq, body[HEADER:-4], ver)


# ---------------------------------------------------------------------------- links


class Link(Protocol):
    def write(self, data: bytes) -> None: ...
    def read_frame(self, timeout: float) -> bytes: ...
    def close(self) -> None: ...


class SerialLink:
    """Any pyserial URL: /dev/ttyACM0, socket://127.0.0.1:4321, loop://, ..."""

    def __init__(self, url: str, baudrate: int = 115200):
        import serial

        self.port = serial.serial_for_url(url, baudrate=baudrate, timeout=0.05)
        self.buf = bytearray()

    def write(self, data: bytes) -> None:
        self.port.write(data)

    def read_frame(self, timeout: float) -> bytes:
        end = time.monotonic() + timeout
        while True:
            frame = pop_frame(self.buf)
            if frame is not None:
                return frame
            if time.monotonic() > end:
                raise LinkTimeout("no reply")
            self.buf += self.port.read(max(1, self.port.in_waiting))

    def close(self) -> None:
        self.port.close()


class ProcessLink:
    """A child process speaking the protocol on its stdin/stdout (the host build)."""

    def __init__(self, cmd: list[str]):
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     bufsize=0)
        self.frames: queue.Queue[bytes] = queue.Queue()
        self.thread = threading.Thread(target=self._reader, daemon=True)
        self.thread.start()

    def _reader(self) -> None:
        buf = bytearray()
        assert self.proc.stdout is not None
        while True:
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                return
            buf += chunk
            while (frame := pop_frame(buf)) is not None:
                self.frames.put(frame)

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def read_frame(self, timeout: float) -> bytes:
        try:
            return self.frames.get(timeout=timeout)
        except queue.Empty:
            raise LinkTimeout("no reply" if self.proc.poll() is None else
                              f"device exited with {self.proc.returncode}") from None

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---------------------------------------------------------------------------- client


@dataclass
class Info:
    version: int
    max_payload: int
    window: int
    loaded: bool
    dtype: int
    n_inputs: int
    n_classes: int
    cut: int
    replay_cap: int
    arena_size: int
    store_size: int
    #: the configuration in force (None from a device that does not report it)
    config: Config | None = None
    #: bytes of the store a flash replay buffer can use (0: none, or not reported)
    replay_store_size: int = 0


@dataclass
class Config:
    """The configuration in force, as INFO reports it (docs/protocol.md)."""

    lr: float
    replay_ratio: int
    seed: int
    update_policy: int  # UPDATE_BLOB: the blob's own
    update_permille: int
    grow_classes: bool  # classes become active as their labels are trained
    active_classes: int
    buffer_cap: int  # samples kept for EPOCHS
    buffered: int  # samples held now
    replay_where: int = REPLAY_ARENA
    replay_lines: int = 0  # a flash buffer's cached latents


@dataclass
class Stats:
    train_steps: int
    replay_steps: int
    train_insn: int
    arena_used: int
    arena_peak: int
    replay_count: int
    store_bytes_written: int
    store_erases: int
    active_classes: int
    # the weight store (docs/flash-store.md): newest committed generation (0: none) and its slot
    generation: int = 0
    slot_offset: int = 0xFFFFFFFF
    erase_block: int = 0
    write_block: int = 0
    erase_value: int = 0xFF
    memory_mapped: bool = False
    n_sectors: int = 0
    #: per sector (the first ones that fit in a reply): erases, bytes programmed
    sector_erases: list[int] = field(default_factory=list)
    sector_bytes: list[int] = field(default_factory=list)
    #: the replay buffer (docs/replay.md): where its latents live, capacity, and the replay
    #: store's size and wear since the device started; a flash buffer's reclaim copies and
    #: latent reads served by its cache / from the store
    replay_where: int = REPLAY_ARENA
    replay_cap: int = 0
    replay_store_size: int = 0
    replay_bytes_written: int = 0
    replay_erases: int = 0
    replay_copies: int = 0
    replay_cache_hits: int = 0
    replay_cache_misses: int = 0


@dataclass
class _Out:
    """A request in flight (version 2)."""

    cmd: int
    payload: bytes
    seq: int
    frame: bytes
    first: float  # first sent
    sent: float  # last sent
    tries: int = 1
    reply: Frame | None = None


class _Reset(Exception):
    """Internal: the device refused a sequence number in flight (it lost its session)."""

    def __init__(self, unanswered: list[tuple[int, bytes]]):
        super().__init__("reset")
        self.unanswered = unanswered


_RECORD = {TRAIN, EPOCHS, RESET}  # what changes the training state after a CONFIG


class Client:
    """Requests to a session device with retransmission on a timeout or a damaged frame.

    Version 2 (docs/protocol.md): up to ``window`` requests in flight (the device's window,
    or less when ``window`` is given), through ``pipeline`` and the ``*_many`` methods; a
    single request (``train``, ``config``, ...) waits for its reply. A version 1 device (its
    INFO refuses version 2 frames) gets one request at a time. ``version=1`` forces that.

    A device reset (docs/protocol.md, "A device reset") is found by the sequence numbers it
    then refuses; the client starts a new sequence and, when its journal holds the training
    state's history since the last CONFIG or LOAD (``journal_bytes`` at most), sends that
    history again (every reply must be the one recorded) and the requests in flight, so the
    caller sees each reply once; otherwise it raises DeviceReset."""

    def __init__(self, link: Link, timeout: float = 20.0, retries: int = 3,
                 window: int | None = None, version: int | None = None,
                 journal_bytes: int = 64 << 20):
        if version not in (None, VERSION, VERSION2):
            raise ValueError(f"protocol version {version}: 1 or 2")
        self.link = link
        self.timeout = timeout
        self.retries = retries
        self.seq = 0
        self.bytes_sent = 0
        self.max_payload = 1024
        self.last_info: Info | None = None
        self.want_window = window
        self.want_version = version
        self.version = VERSION
        self.window = 1
        self.retransmissions = 0  # frames sent again
        self.resets = 0  # device resets recovered from
        self.rto_min = 0.25  # seconds: a link or a device that hiccups is not a lost frame
        self._srtt: float | None = None
        self._heard = 0.0  # when the device last sent a well-formed frame
        self._rttvar = 0.0
        self._start = 0  # the sequence number of the INFO that starts a sequence
        self.journal_bytes = journal_bytes
        self._journal: list[tuple[int, bytes, bytes]] = []
        self._journal_size = 0
        self._journal_ok = False  # it holds the whole training state's history
        self.info()

    # ---- requests

    def request(self, cmd: int, payload: bytes = b"") -> bytes:
        for p in self.pipeline([(cmd, payload)]):
            return p
        raise LinkTimeout("no reply")  # not reached: pipeline yields or raises

    def pipeline(self, requests: Iterable[tuple[int, bytes]]) -> Iterator[bytes]:
        """Send (command, payload) requests with up to ``window`` in flight; yields each reply
        payload (after the status) in order. A refused request raises DeviceError where its
        reply comes; the requests sent after it in the same window have run."""
        src = iter(requests)
        queue_: deque[tuple[int, bytes]] = deque()

        def take() -> Iterator[tuple[int, bytes]]:
            while True:
                if queue_:
                    yield queue_.popleft()
                    continue
                nxt = next(src, None)
                if nxt is None:
                    return
                yield nxt

        while True:
            try:
                for cmd, r in self._exchange(take()):
                    if r.status != 0:
                        raise DeviceError(cmd, r.status)
                    yield r.payload[4:]
                return
            except _Reset as e:
                queue_.extendleft(reversed(e.unanswered))
                self._recover(list(queue_))

    def _exchange(self, items: Iterator[tuple[int, bytes]]) -> Iterator[tuple[int, Frame]]:
        if self.version < VERSION2:
            for cmd, payload in items:
                r = self._request_v1(cmd, payload)
                self._record(cmd, payload, r)
                yield cmd, r
            return
        out: dict[int, _Out] = {}
        order: deque[int] = deque()
        later: tuple[int, bytes] | None = None  # an INFO waits until nothing is in flight
        done = closing = False
        try:
            while True:
                while order and out[order[0]].reply is not None:  # what is answered, in order
                    head = out.pop(order.popleft())
                    self._record(head.cmd, head.payload, head.reply)
                    yield head.cmd, head.reply
                burst = []  # the window's free places filled in one write
                while not done and len(order) < self.window:
                    nxt = later or next(items, None)
                    later = None
                    if nxt is None:
                        done = True
                    elif nxt[0] == INFO and order:
                        later = nxt
                        break
                    else:
                        burst.append(self._send_new(nxt[0], nxt[1], out, order))
                if burst:
                    data = b"".join(burst)
                    self.link.write(data)
                    self.bytes_sent += len(data)
                if order:
                    self._wait(out, order)
                elif later is None:
                    return
        except GeneratorExit:
            closing = True
            raise
        finally:
            if closing:  # a refused request stopped the caller: the rest ran, take their replies
                while order:
                    head = out[order[0]]
                    if head.reply is None:
                        self._wait(out, order)
                        continue
                    order.popleft()
                    self._record(head.cmd, head.payload, head.reply)

    def _send_new(self, cmd: int, payload: bytes, out: dict[int, _Out],
                  order: deque[int]) -> bytes:
        """A new request in flight; returns its frame (the caller writes it)."""
        self.seq = self._start if cmd == INFO else (self.seq + 1) & 0xFFFF
        frame = pack(cmd, self.seq, payload, VERSION2)
        now = time.monotonic()
        out[self.seq] = _Out(cmd, payload, self.seq, frame, now, now)
        order.append(self.seq)
        return frame

    def _resend(self, o: _Out, now: float) -> None:
        o.sent = now
        o.tries += 1
        self.retransmissions += 1
        self.link.write(o.frame)
        self.bytes_sent += len(o.frame)

    def _rto(self) -> float:
        """The retransmission timeout of a request sent once (doubled for each resend)."""
        base = 0.5 if self._srtt is None else self._srtt + max(4 * self._rttvar, 0.002)
        return max(base, self.rto_min)

    def _wait(self, out: dict[int, _Out], order: deque[int]) -> None:
        """The frames from the device (waiting for one, or a timeout), then the
        retransmissions due."""
        # a request's timer runs from its last send or the last frame the device sent,
        # whichever is later: while frames come, losses show in them (a reply after a gap,
        # an ACK's map), and a slow link or a long command sends nothing again
        rto, cap, quiet = self._rto(), self.timeout, self._heard
        now = time.monotonic()
        due = min(max(o.sent, quiet) + min(rto * 2 ** (o.tries - 1), cap)
                  for o in out.values() if o.reply is None)
        wait = max(due - now, 0.0005)
        for _ in range(len(order)):  # what came already, without waiting again
            try:
                raw = self.link.read_frame(wait)
            except LinkTimeout:
                break
            self._on_frame(raw, out, order, time.monotonic())
            wait = 0.0
        now = time.monotonic()
        if now < due:
            return
        for seq in order:
            o = out[seq]
            if o.reply is None and now >= max(o.sent, self._heard) + min(
                    rto * 2 ** (o.tries - 1), cap):
                if now - o.first > self.timeout * (self.retries + 1):
                    raise LinkTimeout(f"no reply to request {o.cmd:#04x} (seq {o.seq}) in "
                                      f"{now - o.first:.1f} s")
                self._resend(o, now)

    def _on_frame(self, raw: bytes, out: dict[int, _Out], order: deque[int], now: float) -> None:
        try:
            r = unpack(raw)
        except FrameError:
            return  # a damaged reply: its request is sent again when its time is up
        self._heard = now
        if r.type == ACK and r.version == VERSION2:  # requests held (a map): up to r.seq ran,
            held = struct.unpack_from("<I", r.payload, 6)[0] if len(r.payload) >= 10 else 0
            top = held.bit_length()  # and one not held before a held one was lost
            self._lost(out, order, now, lambda s: (d := (s - r.seq) & 0xFFFF) == 0 or
                       d > 0x8000 or (d <= top and not held >> (d - 1) & 1))
            return
        o = out.get(r.seq)
        if o is None or o.reply is not None:
            return  # a duplicate, or a reply to a request answered already
        if r.type == NAK:
            if r.status == EFRAME:
                if now - o.sent > self._gap():
                    self._resend(o, now)  # it arrived damaged
            elif r.status == ESEQ and o.cmd != INFO:
                # every request not handed to the caller yet, answered or not: the journal
                # holds only what was handed over, and the device's state after it is gone
                raise _Reset([(out[s].cmd, out[s].payload) for s in order])
            else:
                o.reply = r  # refused, not run
            return
        if r.type != o.cmd | REPLY:
            return
        o.reply = r
        if o.tries == 1:
            self._rtt(now - o.first)
        # replies come in order: an earlier request without one ran, its reply was lost
        if order[0] != r.seq:
            self._lost(out, order, now, lambda s: s != r.seq and
                       ((r.seq - s) & 0xFFFF) < 0x8000)

    def _lost(self, out: dict[int, _Out], order: deque[int], now: float, before) -> None:  # noqa: ANN001
        gap = self._gap()
        for seq in order:
            o = out[seq]
            if o.reply is None and before(seq) and now - o.sent > gap:
                self._resend(o, now)

    def _gap(self) -> float:
        """The least time between two sends of a request that feedback (not a timeout) asks
        for: about one round trip, so that a reply still on its way is not asked for again."""
        return max(self._srtt or 0.0, 0.001)

    def _rtt(self, sample: float) -> None:
        if self._srtt is None:
            self._srtt, self._rttvar = sample, sample / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - sample)
            self._srtt = 0.875 * self._srtt + 0.125 * sample

    def _request_v1(self, cmd: int, payload: bytes) -> Frame:
        """Version 1: one request, stop-and-wait."""
        self.seq = 0 if cmd == INFO else (self.seq + 1) & 0xFFFF
        frame = pack(cmd, self.seq, payload, VERSION)
        for attempt in range(self.retries + 1):
            self.link.write(frame)
            self.bytes_sent += len(frame)
            if attempt:
                self.retransmissions += 1
            try:
                while True:
                    r = unpack(self.link.read_frame(self.timeout))
                    if r.seq == self.seq and r.type in (cmd | REPLY, NAK):
                        break
            except (LinkTimeout, FrameError):
                if attempt == self.retries:
                    raise
                continue
            if r.type == NAK and r.status == EFRAME and attempt < self.retries:
                continue  # our frame arrived damaged: send it again
            if r.type == NAK and r.status == ESEQ and cmd != INFO:
                raise _Reset([(cmd, payload)])
            return r
        raise LinkTimeout("no reply")

    # ---- the journal: the training state's history, for a device reset

    def _record(self, cmd: int, payload: bytes, r: Frame) -> None:
        if r.status != 0 or cmd in (INFO, EVAL, PREDICT, STATS, READ):
            return  # refused (nothing changed), or changes nothing
        if cmd == CONFIG or (cmd == LOAD and payload[:1] == bytes([LOAD_END])):
            self._journal.clear()  # a fresh training state ...
            self._journal_size = 0
            self._journal_ok = True  # ... (after LOAD: the one a boot starts)
            if cmd == LOAD:
                return
        elif cmd not in _RECORD:  # COMMIT, LOAD BEGIN/DATA: a reset would not restore it
            self._journal_ok = False
        if not self._journal_ok:
            return
        self._journal_size += len(payload) + len(r.payload)
        if self._journal_size > self.journal_bytes:
            self._journal_ok = False
            self._journal.clear()
            return
        self._journal.append((cmd, payload, r.payload))

    def _recover(self, unanswered: list[tuple[int, bytes]]) -> None:
        """The device lost its session: a new sequence (INFO), then the training state's
        history again, or DeviceReset."""
        cmd = unanswered[0][0] if unanswered else INFO
        ok, history = self._journal_ok, list(self._journal)
        self._journal, self._journal_size, self._journal_ok = [], 0, False
        self.info()
        if not ok:
            raise DeviceReset(cmd, unanswered, "no history since a CONFIG or LOAD to restore "
                              "the training state from (a COMMIT or a LOAD in between, or more "
                              "than journal_bytes)")
        self._journal_ok = True  # the history sent again is recorded again
        try:
            for (c, _p, want), (_, got) in zip(history, self._exchange(
                    iter([(c, p) for c, p, _ in history])), strict=True):
                if got.payload != want:
                    raise DeviceReset(cmd, unanswered, f"request {c:#04x} of the history "
                                      "replayed gave another reply than before the reset")
        except _Reset:
            raise DeviceReset(cmd, unanswered, "reset again while restoring") from None
        self.resets += 1

    def info(self) -> Info:
        """INFO: (re)starts the sequence and agrees on the version: 2 unless the device
        refuses it (a version 1 device) or ``version=1`` was asked for."""
        self.version = self.want_version or VERSION2
        # version 2: a nonce tells a late duplicate of this INFO from a new one, and the
        # sequence starts anywhere (a request of the last sequence is not taken for one of
        # this one)
        self._start = int.from_bytes(os.urandom(2), "little")
        nonce = os.urandom(4) if self.version >= VERSION2 else b""
        try:
            r = next(self._exchange(iter([(INFO, nonce)])))[1]
            if r.type == NAK and r.status == EVERSION and self.version > VERSION:
                self.version = VERSION
                r = next(self._exchange(iter([(INFO, b"")])))[1]
        except StopIteration:
            raise LinkTimeout("no reply to INFO") from None
        if r.status != 0:
            raise DeviceError(INFO, r.status)
        p = r.payload[4:]
        if len(p) < struct.calcsize("<HHHBBHHHIII"):
            raise FrameError(f"INFO reply of {len(p)} bytes: not a kilolearn session device")
        v = struct.unpack_from("<HHHBBHHHIII", p)
        info = Info(v[0], v[1], v[2], bool(v[3]), v[4], v[5], v[6], v[7], v[8], v[9], v[10])
        if len(p) >= 50:
            c = struct.unpack_from("<fHIBHBHII", p, 26)
            info.config = Config(c[0], c[1], c[2], c[3], c[4], bool(c[5]), c[6], c[7], c[8])
        if len(p) >= 57:
            (info.config.replay_where, info.config.replay_lines,
             info.replay_store_size) = struct.unpack_from("<BHI", p, 50)
        self.max_payload = info.max_payload
        # a version 1 reply (or a device that says version 1) means one request at a time
        self.version = min(self.version, info.version, r.version) or VERSION
        self.window = max(1, min(info.window, self.want_window or info.window)) \
            if self.version >= VERSION2 else 1
        self.last_info = info
        return info

    def load(self, blob: bytes) -> None:
        step = self.max_payload - 5
        reqs = [(LOAD, struct.pack("<BI", LOAD_BEGIN, len(blob)))]
        reqs += [(LOAD, struct.pack("<BI", LOAD_DATA, off) + blob[off:off + step])
                 for off in range(0, len(blob), step)]
        reqs.append((LOAD, struct.pack("<BI", LOAD_END, zlib.crc32(blob) & 0xFFFFFFFF)))
        for _ in self.pipeline(reqs):  # a window of chunks in flight
            pass

    def config(self, lr: float | None = None, replay_ratio: int | None = None,
               replay_cap: int | None = None, cut: int | None = None, seed: int | None = None,
               classes: bytes | None = None, update: tuple[int, int] | None = None,
               buffer: int | None = None, replay_where: int | None = None,
               replay_lines: int | None = None) -> None:
        """CONFIG: the whole configuration; what is left out (None) takes its default
        (docs/protocol.md), not the previous CONFIG's value. ``classes``: one byte per class
        (1 active), ``b""`` = classes grow with the labels trained, None = all active;
        ``update`` = (policy id, per mille): a selective-update policy
        (docs/selective-updates.md) over the blob's; ``buffer``: samples kept for EPOCHS;
        ``replay_where``: REPLAY_ARENA, REPLAY_FLASH or REPLAY_FLASH_RESUME (docs/replay.md),
        ``replay_lines``: a flash buffer's cached latents (with ``replay_where``)."""
        p = b""
        if lr is not None:
            p += struct.pack("<BBf", CFG_LR, 4, lr)
        if replay_ratio is not None:
            p += struct.pack("<BBH", CFG_REPLAY_RATIO, 2, replay_ratio)
        if replay_cap is not None:
            p += struct.pack("<BBI", CFG_REPLAY_CAP, 4, replay_cap)
        if cut is not None:
            p += struct.pack("<BBH", CFG_CUT, 2, cut)
        if seed is not None:
            p += struct.pack("<BBI", CFG_SEED, 4, seed)
        if classes is not None:
            p += struct.pack("<BB", CFG_CLASSES, len(classes)) + classes
        if update is not None:
            p += struct.pack("<BBBH", CFG_UPDATE, 3, *update)
        if buffer is not None:
            p += struct.pack("<BBI", CFG_BUFFER, 4, buffer)
        if replay_where is not None:
            p += struct.pack("<BBB", CFG_REPLAY_WHERE, 1, replay_where) if replay_lines is None \
                else struct.pack("<BBBH", CFG_REPLAY_WHERE, 3, replay_where, replay_lines)
        self.request(CONFIG, p)

    def epochs(self, n: int = 1) -> tuple[int, int]:
        """EPOCHS: ``n`` more epochs over the buffered samples, each in a new shuffled order.
        Returns (steps, predictions before the update that were right)."""
        steps, correct = struct.unpack("<II", self.request(EPOCHS, struct.pack("<H", n)))
        return steps, correct

    def train(self, label: int, sample: bytes) -> tuple[int, int]:
        pred, replayed = struct.unpack("<HH", self.request(TRAIN, struct.pack("<H", label) +
                                                          sample))
        return pred, replayed

    def train_many(self, items: Iterable[tuple[int, bytes]]) -> Iterator[tuple[int, int]]:
        """TRAIN for each (label, sample), a window in flight: (prediction, latents
        replayed) per sample, in order."""
        for p in self.pipeline((TRAIN, struct.pack("<H", label) + sample)
                               for label, sample in items):
            yield struct.unpack("<HH", p)

    def eval_many(self, items: Iterable[tuple[int, bytes]]) -> Iterator[tuple[int, bool]]:
        """EVAL for each (label, sample), a window in flight: (prediction, correct)."""
        for p in self.pipeline((EVAL, struct.pack("<H", label) + sample)
                               for label, sample in items):
            pred, ok = struct.unpack("<HB", p)
            yield pred, bool(ok)

    def eval(self, label: int, sample: bytes) -> tuple[int, bool]:
        pred, ok = struct.unpack("<HB", self.request(EVAL, struct.pack("<H", label) + sample))
        return pred, bool(ok)

    def predict(self, sample: bytes) -> tuple[int, bytes]:
        p = self.request(PREDICT, sample)
        return struct.unpack_from("<H", p)[0], p[2:]

    def stats(self) -> Stats:
        p = self.request(STATS)
        v = struct.unpack_from("<IIIIIIIIIH", p)
        st = Stats(v[0], v[1], v[2] | (v[3] << 32), v[4], v[5], v[6], v[7], v[8], v[9])
        if len(p) >= 58:
            (st.generation, st.slot_offset, st.erase_block, st.write_block, st.erase_value,
             flags, st.n_sectors, k) = struct.unpack_from("<IIIHBBHH", p, 38)
            st.memory_mapped = bool(flags & 1)
            wear = struct.unpack_from(f"<{2 * k}I", p, 58)
            st.sector_erases, st.sector_bytes = list(wear[0::2]), list(wear[1::2])
            if len(p) >= 58 + 8 * k + 33:
                (st.replay_where, _, st.replay_cap, st.replay_store_size,
                 st.replay_bytes_written, st.replay_erases, st.replay_copies,
                 st.replay_cache_hits, st.replay_cache_misses) = struct.unpack_from(
                    "<BIIIIIIII", p, 58 + 8 * k)
        return st

    def commit(self) -> None:
        self.request(COMMIT)

    def read_blob(self, source: int = READ_TRAINED, attempts: int = 3) -> bytes:
        """READ in chunks: the model as trained now (what COMMIT would store, CRC resealed) or
        the stored generation. A read during which the device's version changed (a TRAIN in
        between) starts again. The bytes are as the device sent them: ``export.read`` checks
        the blob's CRC."""
        for _ in range(attempts):
            out = bytearray()
            total = version = None
            while total is None or len(out) < total:
                p = self.request(READ, struct.pack("<BIH", source, len(out), 0xFFFF))
                t, v = struct.unpack_from("<II", p)
                if total is None:
                    total, version = t, v
                elif (t, v) != (total, version):
                    break  # the model changed under the read
                if len(p) == 8:
                    raise FrameError(f"READ at {len(out)} of {total} returned no bytes")
                out += p[8:]
            else:
                if len(out) != total:
                    raise FrameError(f"READ gave {len(out)} bytes, the device said {total}")
                return bytes(out)
        raise LinkTimeout(f"the model kept changing during {attempts} READs")

    def reset(self) -> None:
        self.request(RESET)

    def close(self) -> None:
        self.link.close()
