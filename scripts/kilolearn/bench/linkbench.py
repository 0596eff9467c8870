"""``kilolearn link-bench``: the session protocol's rate against the link's (docs/protocol.md).

TRAIN and EVAL frames (78 bytes: the 64-input int8 session model, a label) streamed with 1, 2,
4, 8 ... requests in flight (protocol version 2), against

- the raw rate: frames of the same size with a damaged CRC pushed back to back; the device
  NAKs each at once, so only the link and the framing limit it (``session.raw_rate``),
  measured right after each run: every fraction compares two rates measured back to back;
- the ceiling: the same requests, pre-built and written half a device window at a time with the
  device's whole window in flight, their replies read without decoding: what the device's
  computing and the link allow without the client's own per-frame work.
"""

from __future__ import annotations

import argparse
import json
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
FIGURE_LINKS = (("host-pty", 20000), ("mps2-an386", 1000))


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
          modes: tuple[str, ...] = MODES) -> dict:
    """Rates of TRAIN/EVAL streams at each window, the ceiling and the raw rate."""
    blob, items = _items(n)
    client.load(blob)
    client.config(lr=0.05, cut=P.NO_CUT, replay_cap=0, replay_ratio=0, classes=b"")
    offered = client.window
    frame = len(P.pack(P.TRAIN, 1, struct.pack("<H", 0) + items[0][1], P.VERSION2))
    raws: list[float] = []

    def raw_now() -> float:
        """The raw rate right after a run (a shared machine's speed drifts): each fraction
        compares rates measured back to back."""
        raws.append(session.raw_rate(client, frame, min(n, 5000)))
        return raws[-1]

    rows = []
    for mode in modes:
        cmd = P.TRAIN if mode == "train" else P.EVAL
        client.window = offered
        top = ceiling(client, cmd, items)
        rows.append({"mode": mode, "window": "ceiling", "frames_per_s": top,
                     "bytes_per_s": top * frame, "fraction_of_raw": top * frame / raw_now(),
                     "retransmitted": 0})
        for w in windows:
            if w > offered:
                continue
            client.window = w
            retx = client.retransmissions
            t0 = time.monotonic()
            for _ in (client.train_many if mode == "train" else client.eval_many)(items):
                pass
            fps = n / (time.monotonic() - t0)
            rows.append({"mode": mode, "window": w, "frames_per_s": fps,
                         "bytes_per_s": fps * frame, "fraction_of_raw": fps * frame / raw_now(),
                         "retransmitted": client.retransmissions - retx})
    client.window = offered
    for r in rows:
        r["fraction_of_ceiling"] = r["frames_per_s"] / next(
            x["frames_per_s"] for x in rows if x["mode"] == r["mode"] and x["window"] == "ceiling")
    return {"frame_bytes": frame, "frames": n, "device_window": offered,
            "version": client.version, "raw_bytes_per_s": sorted(raws)[len(raws) // 2],
            "rows": rows}


def measure_figure() -> dict:
    """``kilolearn docs --measure link-window``: the host build behind a pty and QEMU
    mps2-an386's UART on a TCP socket."""
    links = []
    for board, n in FIGURE_LINKS:
        with session.open_device(board) as client:
            links.append({"board": board} | bench(client, WINDOWS, n))
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
                   f"{link['frames']:,} per run, device window {link['device_window']}, raw "
                   f"{raw / 1e3:,.1f} KB/s ({raw / link['frame_bytes']:,.0f} frames/s; the "
                   "median of the raw rates measured right after each run)\n")
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
    out.append("Frames per second; in brackets the fraction of the raw byte rate measured right "
               "after the run. Ceiling: the device's whole window kept full by pre-built frames "
               "(no client work per frame).")
    return "\n".join(out)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cliargs import IntRange, OutFile, add_device_args

    add_device_args(p, default="host-pty")
    p.add_argument("--windows", nargs="+", type=IntRange(1, 32), default=list(WINDOWS),
                   metavar="N", help="requests in flight (at most the device's window)")
    p.add_argument("--frames", type=IntRange(10, 1_000_000), default=2000,
                   help="frames per run")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--json", type=OutFile(), default=None, help="also write the results here")


def run(a: argparse.Namespace) -> int:
    from tabulate import tabulate

    from .. import cliargs as ca

    with ca.open_device(a) as client:
        if client.version < P.VERSION2:
            print(f"the device speaks protocol version {client.version}: window 1 only")
        r = bench(client, tuple(a.windows), a.frames, tuple(a.modes))
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
