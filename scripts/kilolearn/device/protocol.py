"""The session protocol, host side (docs/protocol.md): COBS frames with CRC-32 and sequence
numbers over any byte link (pyserial URL, a child process's pipes)."""

from __future__ import annotations

import os
import queue
import struct
import subprocess
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Protocol

from ..formats.export import ERRORS

VERSION = 1
HEADER = 6
INFO, LOAD, TRAIN, EVAL, PREDICT, COMMIT, STATS, CONFIG, RESET, READ, EPOCHS = range(1, 12)
READ_TRAINED, READ_STORED = 0, 1  # READ sources: the model as trained now, the stored one
REPLY, NAK = 0x80, 0xFF
LOAD_BEGIN, LOAD_DATA, LOAD_END = 0, 1, 2
(CFG_LR, CFG_REPLAY_RATIO, CFG_REPLAY_CAP, CFG_CUT, CFG_SEED, CFG_CLASSES, CFG_UPDATE,
 CFG_BUFFER, CFG_REPLAY_WHERE) = range(1, 10)
#: CFG_REPLAY_WHERE: the latents in the arena, in the replay store (flash: a new buffer, or
#: the one it holds when its shape matches; docs/replay.md)
REPLAY_ARENA, REPLAY_FLASH, REPLAY_FLASH_RESUME = 0, 1, 2
MAX_EPOCHS = 100  # per EPOCHS request
UPDATE_BLOB = 0xFF  # CFG_UPDATE policy: the one the blob carries
NO_CUT = 0xFFFF

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


def cobs_encode(data: bytes) -> bytes:
    out = bytearray([0])
    code_at, code = 0, 1
    for b in data:
        if b == 0:
            out[code_at] = code
            code_at, code = len(out), 1
            out.append(0)
        else:
            out.append(b)
            code += 1
            if code == 0xFF:
                out[code_at] = code
                code_at, code = len(out), 1
                out.append(0)
    out[code_at] = code
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(data):
        code = data[i]
        i += 1
        if code == 0 or i + code - 1 > len(data):
            raise FrameError("bad COBS data")
        chunk = data[i:i + code - 1]
        if 0 in chunk:
            raise FrameError("zero inside COBS data")
        out += chunk
        i += code - 1
        if code != 0xFF and i < len(data):
            out.append(0)
    return bytes(out)


def pack(ftype: int, seq: int, payload: bytes = b"") -> bytes:
    body = struct.pack("<BBHH", ftype, VERSION, seq & 0xFFFF, len(payload)) + payload
    body += struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)
    return cobs_encode(body) + b"\0"


@dataclass
class Frame:
    type: int
    seq: int
    payload: bytes

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
    ftype, _ver, seq, n = struct.unpack_from("<BBHH", body)
    if n != len(body) - HEADER - 4:
        raise FrameError("length mismatch")
    if zlib.crc32(body[:-4]) & 0xFFFFFFFF != struct.unpack_from("<I", body, len(body) - 4)[0]:
        raise FrameError("CRC mismatch")
    return Frame(ftype, seq, body[HEADER:-4])


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


class Client:
    """Stop-and-wait requests with retransmission on timeout or a damaged frame."""

    def __init__(self, link: Link, timeout: float = 20.0, retries: int = 3):
        self.link = link
        self.timeout = timeout
        self.retries = retries
        self.seq = 0
        self.bytes_sent = 0
        self.max_payload = 1024
        self.last_info: Info | None = None
        self.info()

    def request(self, cmd: int, payload: bytes = b"") -> bytes:
        if cmd != INFO:
            self.seq = (self.seq + 1) & 0xFFFF
        frame = pack(cmd, self.seq, payload)
        for attempt in range(self.retries + 1):
            self.link.write(frame)
            self.bytes_sent += len(frame)
            try:
                while True:
                    r = unpack(self.link.read_frame(self.timeout))
                    if r.seq == self.seq and r.type in (cmd | REPLY, NAK):
                        break
            except (LinkTimeout, FrameError):
                if attempt == self.retries:
                    raise
                continue
            if r.type == NAK and r.status == -205 and attempt < self.retries:
                continue  # our frame arrived damaged: send it again
            if r.status != 0:
                raise DeviceError(cmd, r.status)
            return r.payload[4:]
        raise LinkTimeout("no reply")

    def info(self) -> Info:
        self.seq = 0
        p = self.request(INFO)
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
        self.last_info = info
        return info

    def load(self, blob: bytes) -> None:
        self.request(LOAD, struct.pack("<BI", LOAD_BEGIN, len(blob)))
        step = self.max_payload - 5
        for off in range(0, len(blob), step):
            self.request(LOAD, struct.pack("<BI", LOAD_DATA, off) + blob[off:off + step])
        self.request(LOAD, struct.pack("<BI", LOAD_END, zlib.crc32(blob) & 0xFFFFFFFF))

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
