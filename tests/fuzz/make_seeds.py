"""Seed corpora of the libFuzzer targets (tests/fuzz/kl_fuzz_*_lf.c), made with the Python
package's exporter. The blob target's seeds session-s8 and session-f32 are also the blobs the
session and store targets embed: kilolearn.tools.fuzz generates kl_fuzz_blobs.h from them when it
builds the targets.

    python tests/fuzz/make_seeds.py      # rewrites tests/fuzz/corpus/ (and adds regressions)

Deterministic: the same files on every run. The record layouts are described at the top of each
target's source.
"""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np

from kilolearn import planner as P
from kilolearn.core import model as M
from kilolearn.core import reference as R
from kilolearn.formats import export

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"

INFO, LOAD, TRAIN, EVAL, PREDICT, COMMIT, STATS, CONFIG, RESET = range(1, 10)


def calib(m: M.Model, n: int = 16, seed: int = 0) -> np.ndarray:
    shape = m.graph.shapes[m.graph.input]
    return np.random.default_rng(seed).uniform(0, 1, (n,) + tuple(shape)).astype(np.float32)


def both(m: M.Model, seed: int = 1, plan_f32=None, plan_s8=None, update=None):  # noqa: ANN001
    """(f32 blob, s8 blob) of a model."""
    g = m.graph
    p = m.init(seed)
    qm = R.quantize_model(g, p, calib(m))
    return export.export_f32(g, p, plan_f32, update), export.export_s8(qm, plan_s8, update)


def session_model() -> M.Model:
    """The session/store targets' model: a frozen backbone (the replay cut) and a small head."""
    return M.Model([M.Input((16,)), M.Dense(12, "relu", trainable=False), M.Dense(8, "relu"),
                    M.Dense(4), M.SoftmaxCrossEntropy()])


def residual_net() -> M.Model:
    """Conv, depthwise, 1x1 conv, residual add, average and max pooling, dense."""
    x = M.Input((6, 6, 4))
    n = M.Node(x, [])
    a = M.ReLU6()(M.BatchNorm()(M.Conv2D(8, 3, 2)(n)))
    h = M.ReLU()(M.Conv2D(8, 1)(a))
    h = M.ReLU6()(M.DepthwiseConv2D(3, 1)(h))
    h = M.Conv2D(8, 1)(h)
    r = M.Add(activation="relu")([a, h])
    p = M.AvgPool2D(2, 1)(r)
    out = M.Dense(3)(M.Flatten()(M.MaxPool2D(2)(p)))
    return M.Model(M.SoftmaxCrossEntropy()(out))


def compact_net() -> M.Model:
    """Depthwise and 1x1 conv on 24x24 inputs: a schedule with compact backward steps (2.3)."""
    return M.Model([M.Input((24, 24, 2)), M.Conv2D(8, 3), M.ReLU(), M.DepthwiseConv2D(3),
                    M.ReLU6(), M.Conv2D(8, 1), M.ReLU(), M.DepthwiseConv2D(3, 2), M.ReLU(),
                    M.GlobalAvgPool(), M.Dense(3), M.SoftmaxCrossEntropy()])


def blob_seeds() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    f, s = both(M.mlp([12, 8, 4]))
    out["mlp-f32"], out["mlp-s8"] = f, s
    f, s = both(M.small_cnn((6, 6, 1), 3, 2))
    out["cnn-f32"], out["cnn-s8"] = f, s
    m = residual_net()
    f, s = both(m)
    out["residual-f32"], out["residual-s8"] = f, s
    g = m.graph
    f, s = both(m, plan_f32=P.baseline(P.MemModel(g, "f32"), "sqrt-n"),
                plan_s8=P.baseline(P.MemModel(g, "s8"), "sqrt-n"))
    out["residual-f32-sched"], out["residual-s8-sched"] = f, s
    c = compact_net()
    pl = P.baseline(P.MemModel(c.graph, "s8"), "store-all")
    assert any(st.flags & P.STEP_COMPACT for st in pl.steps)
    out["compact-s8-sched"] = both(c, plan_s8=pl)[1]
    assert out["compact-s8-sched"][6] == 3
    f, s = both(M.mlp([12, 8, 4]), update=("topr", 0.25))
    out["mlp-f32-topr"], out["mlp-s8-topr"] = f, s
    f, s = both(M.small_cnn((6, 6, 1), 3, 4), update=("channel-sparse", 0.5))
    out["cnn-f32-sparse"], out["cnn-s8-sparse"] = f, s
    out["cnn-s8-chnorm"] = both(M.small_cnn((6, 6, 1), 3, 4), update=("channel-norm", 0.5))[1]
    bias = M.Model([M.Input((6, 6, 2)), M.Conv2D(4, 3, trainable="bias"), M.ReLU(),
                    M.MaxPool2D(2), M.Flatten(), M.Dense(6, "relu", trainable="bias"),
                    M.Dense(3), M.SoftmaxCrossEntropy()])
    f, s = both(bias)
    out["bias-only-f32"], out["bias-only-s8"] = f, s
    out["session-f32"], out["session-s8"] = both(session_model(), seed=3)
    # the options and samples after the blob (kl_fuzz_blob_lf.c): keep grads, a policy,
    # a replay cut, raw float bits, a small arena
    rng = np.random.default_rng(5)
    tail = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    out["mlp-f32+grads"] = out["mlp-f32"] + bytes([4]) + tail
    out["mlp-s8+topr"] = out["mlp-s8"] + bytes([8, 1, 50]) + tail
    out["session-s8+cut"] = out["session-s8"] + bytes([16, 2]) + tail
    out["session-f32+cut"] = out["session-f32"] + bytes([16 | 32, 2]) + tail
    out["residual-s8+arena"] = out["residual-s8"] + bytes([64, 24]) + tail
    out["cnn-f32+momentum"] = out["cnn-f32"] + bytes([2]) + tail
    return out


# ---------------------------------------------------------------------------- session records


def frame(ftype: int, payload: bytes = b"", sel: int = 0, seq: int = 0, ver: int | None = None,
          damage: int = 0) -> bytes:
    """sel: 0 the next seq, 1 the last (a retransmission), 2 `seq`, 3 next + `seq`"""
    b = bytes([(8 if ver is not None else 0) | damage << 4, ftype, sel])
    if sel & 3 == 2:
        b += struct.pack("<H", seq)
    elif sel & 3 == 3:
        b += bytes([seq])
    if ver is not None:
        b += bytes([ver])
    return b + struct.pack("<H", len(payload)) + payload


def sample(cmd: int, label: int, src: bytes, op: int = 0) -> bytes:
    """cmd: 0 TRAIN, 1 EVAL, 2 PREDICT"""
    return bytes([4 | op, cmd]) + struct.pack("<H", label) + bytes([len(src)]) + src


def load_macro(which: int, chunk: int, flags: int = 0, at: int = 0, val: int = 0) -> bytes:
    b = bytes([5, which]) + struct.pack("<HB", chunk, flags)
    return b + (struct.pack("<HB", at, val) if flags & 1 else b"")


def raw(data: bytes) -> bytes:
    return bytes([3, len(data)]) + data


REBOOT = bytes([6])


def window(reqs: list[tuple[int, int, bytes]], order: list[int]) -> bytes:
    """WINDOW (window on): requests (kind 0 STATS / 1 TRAIN / 2 EVAL, label, sample source)
    with sequence numbers last + 1, ...; ``order``: which of them to send, in that order (then
    the ones without a reply)."""
    b = bytes([3 | 8, len(reqs) - 1])
    for kind, label, src in reqs:
        b += bytes([kind]) + struct.pack("<H", label) + bytes([len(src)]) + src
    return b + bytes([len(order)]) + bytes(order)


def cut(k: int, seed: int) -> bytes:
    return bytes([7]) + struct.pack("<HB", k, seed)


def load_frames(blob: bytes, chunk: int = 1000) -> bytes:
    out = frame(LOAD, struct.pack("<BI", 0, len(blob)))
    for off in range(0, len(blob), chunk):
        out += frame(LOAD, struct.pack("<BI", 1, off) + blob[off:off + chunk])
    return out + frame(LOAD, struct.pack("<BI", 2, zlib.crc32(blob) & 0xFFFFFFFF))


def config(lr=None, ratio=None, cap=None, cutt=None, seed=None, classes=None,  # noqa: ANN001
           update=None) -> bytes:
    p = b""
    if lr is not None:
        p += struct.pack("<BBf", 1, 4, lr)
    if ratio is not None:
        p += struct.pack("<BBH", 2, 2, ratio)
    if cap is not None:
        p += struct.pack("<BBI", 3, 4, cap)
    if cutt is not None:
        p += struct.pack("<BBH", 4, 2, cutt)
    if seed is not None:
        p += struct.pack("<BBI", 5, 4, seed)
    if classes is not None:
        p += struct.pack("<BB", 6, len(classes)) + classes
    if update is not None:
        p += struct.pack("<BBBH", 7, 3, *update)
    return frame(CONFIG, p)


def session_seeds(blobs: dict[str, bytes], cut_tensor: int) -> dict[str, bytes]:
    s8, f32 = blobs["session-s8"], blobs["session-f32"]
    px = bytes(range(0, 256, 13))
    trains = b"".join(sample(0, k % 4, px[k:] + px[:k]) for k in range(6))
    out = {}
    out["s8-replay-commit-reboot"] = (
        bytes([0]) + frame(INFO) + load_frames(s8)
        + config(lr=0.05, seed=2, cutt=cut_tensor, cap=8, ratio=2, classes=b"")
        + trains + sample(1, 2, px) + sample(2, 0, px) + frame(STATS) + frame(COMMIT)
        + REBOOT + frame(INFO) + sample(2, 0, px) + trains + frame(COMMIT) + frame(RESET)
        + frame(STATS))
    out["f32-policy-cut-during-commit"] = (
        bytes([8]) + frame(INFO) + load_macro(1, 700)
        + config(lr=0.1, update=(1, 200)) + trains + frame(COMMIT) + cut(5, 0)
        + frame(COMMIT) + REBOOT + frame(INFO) + sample(2, 0, px, op=16) + trains
        + cut(40, 77) + frame(COMMIT) + REBOOT + frame(INFO) + frame(STATS))
    out["ram-sequencing"] = (
        bytes([1]) + frame(INFO) + load_macro(0, 512)
        + config(classes=b"\x01\x01\x00\x00") + trains
        + frame(TRAIN, struct.pack("<H", 1) + px[:16], sel=1)  # a retransmission
        + frame(STATS, sel=2, seq=999)  # out of order
        + frame(STATS, damage=1) + frame(EVAL, b"\x00" * 18, damage=2)
        + frame(INFO, damage=3)
        + raw(b"\x01\x02\x00\x05\xff\xff\x00") + frame(INFO) + frame(0x7E) + frame(0x0A)
        + frame(STATS) + frame(RESET))
    out["bad-load-then-good"] = (
        bytes([0]) + frame(INFO) + load_macro(0, 300, flags=1 | 2, at=20, val=0x7F)
        + load_macro(0, 300, flags=8) + load_macro(0, 2043, flags=4) + frame(STATS)
        + load_macro(1, 1024) + config(cutt=cut_tensor, cap=4, ratio=1)
        + config(cutt=0, cap=4) + config(cutt=cut_tensor, cap=0x7FFF) + trains
        + frame(COMMIT) + frame(COMMIT) + frame(COMMIT) + REBOOT + frame(STATS))
    out["small-arena"] = (
        bytes([2 | 4]) + frame(INFO) + load_macro(0, 1000) + trains
        + config(cutt=cut_tensor, cap=100, ratio=3) + trains + frame(COMMIT) + REBOOT
        + frame(INFO))
    out["geometry-64b-writes"] = (
        bytes([8 | 16]) + frame(INFO) + load_frames(f32, 777) + trains + frame(COMMIT)
        + load_frames(s8, 2043) + trains + frame(COMMIT) + REBOOT + frame(STATS))
    out["frame-edges"] = (
        bytes([0]) + frame(INFO) + frame(LOAD, b"\x01\x00\x00\x00\x00")
        + frame(LOAD, b"\x02") + frame(CONFIG, b"\x01\x04\x00\x00\xc0\x7f")
        + frame(CONFIG, b"\x09\x00") + frame(TRAIN, b"\x00") + frame(PREDICT)
        + frame(COMMIT) + frame(RESET) + frame(INFO, ver=2) + frame(STATS, sel=3, seq=4))
    # protocol version 2 (config bit 5: a window of 4): requests out of order, held and run
    # when the gap fills, sent again after their reply (the cached one), with latent replay
    out["window-reordered"] = (
        bytes([1 | 32]) + frame(INFO) + load_macro(0, 512) + config(classes=b"")
        + window([(1, 0, px), (1, 1, px[3:]), (2, 2, px), (1, 3, px[5:])], [3, 1, 1, 0, 2, 0])
        + window([(0, 0, b""), (1, 2, px)], [1, 0]) + frame(STATS, sel=3, seq=2)
        + frame(STATS))
    out["window-replay-reboot"] = (
        bytes([32]) + frame(INFO) + load_frames(s8)
        + config(lr=0.05, seed=2, cutt=cut_tensor, cap=8, ratio=2, classes=b"")
        + window([(1, 1, px), (1, 2, px[1:]), (1, 3, px[2:])], [2, 2, 1]) + REBOOT
        + window([(2, 1, px), (1, 0, px)], [1, 1, 0, 1]) + frame(COMMIT) + frame(STATS))
    return out


# ---------------------------------------------------------------------------- store records


def slot(sector: int, seq: int, kind: int, extra: bytes = b"") -> bytes:
    return bytes([0]) + struct.pack("<HIB", sector, seq, kind) + extra


def store_seeds() -> dict[str, bytes]:
    out = {}
    out["empty-64k"] = bytes([0, 0])
    out["one-generation"] = bytes([0, 0]) + slot(3, 7, 0)
    out["two-generations-f32"] = bytes([8 | 2, 16]) + slot(0, 1, 1) + slot(4, 2, 1)
    out["stale-and-broken"] = (bytes([1, 40]) + slot(0, 5, 0) + slot(2, 6, 0 | 16)
                               + slot(4, 9, 0 | 8) + slot(6, 3, 0 | 4)
                               + bytes([4]) + struct.pack("<HH", 0, 9))
    out["high-seq"] = bytes([4, 0]) + slot(2, 0x7FFFFFFF, 0) + slot(5, 1000, 1)
    out["ram"] = bytes([5, 0]) + slot(1, 12, 0) + bytes([2]) + struct.pack("<IHB", 300, 64, 0)
    out["tiny-sectors"] = bytes([6, 4]) + slot(0, 2, 0) + slot(9, 3, 3, struct.pack("<HB", 70, 1))
    out["three-slots"] = bytes([7, 0]) + slot(0, 1, 0) + slot(1, 2, 2, struct.pack("<H", 900))
    out["file-store"] = bytes([0x70 | 3, 1]) + slot(2, 4, 0)
    out["random-bytes"] = (bytes([2, 0]) + bytes([1]) + struct.pack("<IB", 8192, 24)
                           + b"KLS1" + bytes(range(20)))
    return out


def freplay_seeds() -> dict[str, bytes]:
    """kl_fuzz_freplay_lf: offers (op 0), broken records (1), raw bytes (2), erased sectors (3),
    other shapes (4) and power cuts (5) on each geometry."""
    def offers(n: int, start: int = 0) -> bytes:
        return b"".join(bytes([0, (start + i) % 5, (start + 3 * i) & 0xFF]) for i in range(n))

    out = {"empty": b""}
    for g in range(4):
        out[f"offers-g{g}"] = bytes([g, g]) + offers(60)
    out["cut-and-resume"] = bytes([0, 0]) + offers(20) + bytes([5, 7, 1]) + offers(10, 20)
    out["shapes"] = (bytes([1, 0]) + offers(15) + bytes([4, 2, 0]) + offers(15, 15)
                     + bytes([4, 0, 1]) + offers(5, 40))
    out["broken"] = (bytes([2, 2]) + offers(40) + bytes([1, 3, 0, 5, 0, 1, 9, 0, 60, 0x80])
                     + bytes([2, 0x10, 0, 8]) + b"KLR1junk" + bytes([3, 1]) + offers(8, 50))
    return out


# ---------------------------------------------------------------------------- regressions
# Minimal reproducers of the bugs the targets found (tests/fuzz/regressions/<target>/): each
# failed on the code before its fix; test_fuzz_targets.py replays them all.


def session_regressions(blobs: dict[str, bytes], cut_tensor: int) -> dict[str, bytes]:
    px = bytes(range(0, 256, 13))
    return {
        # a reply to request type 0x7F or 0xFF is of type 0xFF: it looks like a NAK, yet it
        # used the sequence number (the host's next request then got NAK(KL_ESEQ))
        "type-0x7f-reply-looks-like-nak": bytes([0]) + frame(INFO) + frame(0x7F, b"\x00"),
        "type-0xff-reply-looks-like-nak": bytes([0]) + frame(INFO) + frame(0xFF),
        # (the harness) a version 1 reply to request type 0x7E is of type 0xFE, the type of
        # version 2's ACK: told apart by the version
        "v1-reply-to-0x7e-is-not-an-ack": bytes([0]) + frame(INFO, ver=1) + frame(0x7E, ver=1),
        # reply types as requests (0x80-0xFE) were executed as unknown commands
        "reply-type-as-request": bytes([0]) + frame(INFO) + frame(0x83, b"\x00\x00"),
        # a payload of 2049-2050 bytes (> max_payload 2048) was accepted: the decode buffer
        # was rounded up to whole words
        "payload-over-max": bytes([0]) + frame(INFO) + frame(TRAIN, bytes(2049)),
        # LOAD END of a blob with a good transfer CRC but a bad structure (resealed) made it
        # the active generation before the engine refused it: the old model was gone
        "load-activates-corrupt-blob": bytes([0]) + frame(INFO) + load_macro(0, 2043)
        + load_macro(0, 2043, flags=1 | 2, at=18, val=0xFF),
        # a refused CONFIG had applied the items before the bad one (the replay capacity)
        "config-not-atomic": bytes([0]) + frame(INFO) + load_macro(0, 2043)
        + frame(CONFIG, struct.pack("<BBI", 3, 4, 7) + b"\x09\x00"),
        # ... and a CONFIG whose cut the model refuses left the session without a model
        "config-bad-cut-unloads": bytes([0]) + frame(INFO) + load_macro(0, 2043)
        + config(cutt=9999, cap=4),
        # PREDICT's float sample at payload offset 6 was read in place: misaligned (UBSan
        # here, a UsageFault on the M4)
        "misaligned-f32-predict": bytes([0]) + frame(INFO) + load_macro(1, 2043)
        + sample(2, 0, px),
    }


def store_regressions() -> dict[str, bytes]:
    return {
        # a slot with sequence number 0xFFFFFFFF: the next generation got 0 and lost to it
        # at the next mount (the LOAD vanished)
        "slot-seq-wrap": bytes([0, 0]) + slot(3, 0xFFFFFFFF, 0),
        "slot-seq-wrap-ram": bytes([5, 0]) + slot(1, 0xFFFFFFFE, 1),
        # slots 0x7FFFFFFF and 0: compared by serial arithmetic (which orders only numbers
        # less than 2^31 apart) the commit after a LOAD (0x80000001) is older than the stale 0
        "slot-seq-serial-window": bytes([4, 0]) + slot(2, 0x7FFFFFFF, 0) + slot(5, 0, 0),
        # the host file store recreated (wiped) an existing file of another geometry
        "file-store-geometry-wipe": bytes([0x70 | 3, 1]) + slot(2, 4, 0),
    }


def write(target: str, seeds: dict[str, bytes]) -> None:
    d = CORPUS / target
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    for name, data in seeds.items():
        (d / name).write_bytes(data)


def main() -> None:
    blobs = blob_seeds()
    cut_tensor = session_model().graph.ops[0].output
    write("kl_fuzz_blob_lf", blobs)
    write("kl_fuzz_session_lf", session_seeds(blobs, cut_tensor))
    write("kl_fuzz_store_lf", store_seeds())
    write("kl_fuzz_freplay_lf", freplay_seeds())
    for target, regs in (("kl_fuzz_session_lf", session_regressions(blobs, cut_tensor)),
                         ("kl_fuzz_store_lf", store_regressions())):
        d = HERE / "regressions" / target
        d.mkdir(parents=True, exist_ok=True)
        for name, data in regs.items():  # found reproducers may sit beside them: keep those
            (d / name).write_bytes(data)
    for t in sorted(p.name for p in CORPUS.iterdir()):
        files = list((CORPUS / t).iterdir())
        print(f"{t}: {len(files)} seeds, {sum(f.stat().st_size for f in files):,} bytes")


if __name__ == "__main__":
    main()
