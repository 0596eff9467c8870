"""``kilolearn link-bench``: the session protocol's rate against the link's (docs/protocol.md).

TRAIN and EVAL frames (78 bytes: the 64-input int8 session model, a label) streamed with 1, 2,
4, 8 ... requests in flight (protocol version 2), against

- the raw rate: frames of the same size with a damaged CRC pushed back to back; the device
  NAKs each at once, so only the link and the framing limit it (``session.raw_rate``). Each
  run is cut in parts, each followed by a raw run of as many frames; a fraction is the median
  of its parts' (the speed of a shared machine, and of QEMU on it, drifts);
- the ceiling: the same requests, pre-built and written half a device window at a time with the
  device's whole window in flight, their replies read without decoding: what the device's
  computing and the link allow without the client's own per-frame work.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import struct
import time
from pathlib import Path

from ..core import data as datasets
from ..core import reference
from ..device import protocol as P
from ..device import session
from ..formats import export

WINDOWS = (1, 2, 4, 8)
MODES = ("train", "eval")
#: the figure's links: board, frames per measurement
FIGURE_LINKS = (("host-pty", 20000), ("mps2-an386", 2000))
PARTS = 10


def _items(n: int) -> tuple[bytes, list[tuple[int, bytes]]]:
    ds = datasets.digits()
    sc = session.Scenario()
    m = session.build_model(sc, ds.x_train.shape[1], ds.n_classes)
    qm = reference.quantize_model(m.graph, m.init(sc.seed), ds.x_train[:200])
    xq = qm.quantize_input(ds.x_train)
    return export.export_s8(qm), [(int(ds.y_train[k % len(xq)]), xq[k % len(xq)].tobytes())
                                  for k in range(n)]


def ceiling(client: P.Client, cmd: int, items: list[tuple[int, bytes]]) -> float:
    """Frames/s of requests pre-built and kept ``client.window`` in flight, half a window per
    write, the replies counted but not decoded."""
    half = max(1, client.window // 2)
    seq0 = client.seq
    frames = [P.pack(cmd, seq0 + 1 + k, struct.pack("<H", y) + x, P.VERSION2)
              for k, (y, x) in enumerate(items)]
    batches = [b"".join(frames[i:i + half]) for i in range(0, len(frames), half)]
    sizes = [min(half, len(frames) - i) for i in range(0, len(frames), half)]
    t0 = time.monotonic()
    client.link.write(batches[0])
    for k in range(len(batches)):
        if k + 1 < len(batches):
            client.link.write(batches[k + 1])
        for _ in range(sizes[k]):
            client.link.read_frame(30)
    dt = time.monotonic() - t0
    client.seq = (seq0 + len(frames)) & 0xFFFF
    return len(frames) / dt


def bench(client: P.Client, windows: tuple[int, ...] = WINDOWS, n: int = 2000,
          modes: tuple[str, ...] = MODES, parts: int = 5) -> dict:
    """Rates of TRAIN/EVAL streams at each window and of the ceiling, against the raw rate.
    Each run is cut in ``parts``, each part followed by a raw run of as many frames: a
    fraction is the median of the parts' (a shared machine's speed drifts)."""
    blob, items = _items(n)
    client.load(blob)
    client.config(lr=0.05, cut=P.NO_CUT, replay_cap=0, replay_ratio=0, classes=b"")
    offered = client.window
    frame = len(P.pack(P.TRAIN, 1, struct.pack("<H", 0) + items[0][1], P.VERSION2))
    size = -(-n // parts)
    raws: list[float] = []

    def paired(run) -> tuple[float, float]:  # noqa: ANN001
        """(frames/s over the run, the median fraction of the raw rate over its parts)"""
        spent, fractions = 0.0, []
        for at in range(0, n, size):
            part = items[at:at + size]
            t0 = time.monotonic()
            run(part)
            dt = time.monotonic() - t0
            spent += dt
            raws.append(session.raw_rate(client, frame, len(part)))
            fractions.append(len(part) * frame / dt / raws[-1])
        return n / spent, statistics.median(fractions)

    rows = []
    for mode in modes:
        cmd = P.TRAIN if mode == "train" else P.EVAL
        client.window = offered
        fps, frac = paired(lambda part, cmd=cmd: ceiling(client, cmd, part))
        rows.append({"mode": mode, "window": "ceiling", "frames_per_s": fps,
                     "bytes_per_s": fps * frame, "fraction_of_raw": frac, "retransmitted": 0})
        many = client.train_many if mode == "train" else client.eval_many
        for w in windows:
            if w > offered:
                continue
            client.window = w
            retx = client.retransmissions
            fps, frac = paired(lambda part, many=many: collections.deque(many(part), 0))
            rows.append({"mode": mode, "window": w, "frames_per_s": fps,
                         "bytes_per_s": fps * frame, "fraction_of_raw": frac,
                         "retransmitted": client.retransmissions - retx})
    client.window = offered
    for r in rows:
        r["fraction_of_ceiling"] = r["frames_per_s"] / next(
            x["frames_per_s"] for x in rows if x["mode"] == r["mode"] and x["window"] == "ceiling")
    return {"frame_bytes": frame, "frames": n, "parts": parts, "device_window": offered,
            "version": client.version, "raw_bytes_per_s": statistics.median(raws),
            "rows": rows}


def measure_figure() -> dict:
    """``kilolearn docs --measure link-window``: the host build behind a pty and QEMU
    mps2-an386's UART on a TCP socket."""
    links = []
    for board, n in FIGURE_LINKS:
        with session.open_device(board) as client:
            links.append({"board": board} | bench(client, WINDOWS, n, parts=PARTS))
    return {"links": links}


LINK_NAMES = {"host-pty": "pty pair to the host build",
              "mps2-an386": "QEMU mps2-an386 UART on a TCP socket"}


def render(rec: dict) -> str:
    d = rec["data"]
    out = [f"Measured {rec['measured']} on a shared 2-core machine (rerun: `kilolearn docs "
           "--measure link-window`; one link: `kilolearn link-bench --board BOARD`):", ""]
    for link in d["links"]:
        raw = link["raw_bytes_per_s"]
        out.append(f"**{LINK_NAMES.get(link['board'], link['board'])}** "
                   f"(`--board {link['board']}`): {link['frame_bytes']}-byte frames, "
                   f"{link['frames']:,} per run in {link['parts']} parts, device window "
                   f"{link['device_window']}, raw {raw / 1e3:,.1f} KB/s "
                   f"({raw / link['frame_bytes']:,.0f} frames/s; the median of the raw runs "
                   "after each part)\n")
        heads = [r["window"] for r in link["rows"] if r["mode"] == link["rows"][0]["mode"]]
        out.append("| frames | " + " | ".join(f"window {h}" if h != "ceiling" else "ceiling"
                                               for h in heads) + " |")
        out.append("|---|" + "---:|" * len(heads))
        for mode in MODES:
            rows = [r for r in link["rows"] if r["mode"] == mode]
            if rows:
                out.append(f"| {mode.upper()} | " + " | ".join(
                    f"{r['frames_per_s']:,.0f}/s ({r['fraction_of_raw']:.2f})" for r in rows)
                    + " |")
        out.append("")
    out.append("Frames per second over the run; in brackets the fraction of the raw byte rate "
               "(the median over the parts of the part's rate against the raw run right after "
               "it). Ceiling: the device's whole window kept full by pre-built frames (no "
               "client work per frame).")
    return "\n".join(out)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cliargs import IntRange, OutFile, add_device_args

    add_device_args(p, default="host-pty")
    p.add_argument("--windows", nargs="+", type=IntRange(1, 32), default=list(WINDOWS),
                   metavar="N", help="requests in flight (at most the device's window)")
    p.add_argument("--frames", type=IntRange(10, 1_000_000), default=2000,
                   help="frames per run")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--parts", type=IntRange(1, 100), default=5,
                   help="each run in this many parts, each followed by a raw run")
    p.add_argument("--json", type=OutFile(), default=None, help="also write the results here")


def run(a: argparse.Namespace) -> int:
    from tabulate import tabulate

    from .. import cliargs as ca

    with ca.open_device(a) as client:
        if client.version < P.VERSION2:
            print(f"the device speaks protocol version {client.version}: window 1 only")
        r = bench(client, tuple(a.windows), a.frames, tuple(a.modes), a.parts)
    print(f"{r['frame_bytes']}-byte frames, device window {r['device_window']}, raw link "
          f"{r['raw_bytes_per_s']:,.0f} B/s")
    print(tabulate([[x["mode"], x["window"], f"{x['frames_per_s']:,.0f}",
                     f"{x['bytes_per_s']:,.0f}", f"{x['fraction_of_raw']:.2f}",
                     f"{x['fraction_of_ceiling']:.2f}", x["retransmitted"]] for x in r["rows"]],
                   headers=["frames", "window", "frames/s", "bytes/s", "of raw", "of ceiling",
                            "sent again"],
                   disable_numparse=True))
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=2))
    return 0
