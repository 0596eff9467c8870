"""Kernel benchmark: instructions per MAC of the int8 kernels, ref vs dsp (vs cmsis_nn, vs
mve on the Cortex-M55 board mps3-an547).

Builds ``tests/c/kl_bench_kernels.c`` for a board (or the host), runs it (QEMU
with ``-icount shift=0`` on the boards, so the counts are retired
instructions, exact to one timer tick) and parses its lines::

    KL kbench op <name> dir fwd|bwd|wgrad|sgd backend <backend> macs N insn N mismatches N
    KL kbench done dsp 0|1 mve 0|1 counter 0|1 mismatches N

backends ref, dsp, dsp_plain, mve, cmsis_nn, cmsis_nn_train, cmsis_raw.

The firmware itself checks every dsp and mve (and, in a CMSIS-NN build, cmsis_nn forward)
output against ref bit for bit; its exit code is non-zero on any difference. ``cmsis_raw``
(CMSIS-NN builds) is the CMSIS-NN function the cmsis_nn backend calls, called directly with
every parameter prepared before the timer starts: the baseline of the backend's overhead.
``cmsis_nn`` is the backend on a layer's parameter block as the engine keeps it for a frozen
layer, ``cmsis_nn_train`` for a trained one (its bias rescaled in every call).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..device import build, qemu

TARGET = "kl_bench_kernels"
DIRS = ("fwd", "bwd", "wgrad")
DIR_NAMES = {"fwd": "forward", "bwd": "input grad", "wgrad": "weight grad",
             "sgd": "fused SGD"}  # sgd: dense layers only, one MAC per weight


@dataclass
class Measurement:
    op: str
    direction: str
    backend: str
    macs: int
    insn: int
    mismatches: int

    @property
    def insn_per_mac(self) -> float:
        return self.insn / self.macs if self.macs else float("nan")


@dataclass
class KernelBench:
    board: str
    returncode: int
    dsp: bool
    mismatches: int
    mve: bool = False
    measurements: list[Measurement] = field(default_factory=list)
    output: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.mismatches == 0 and self.done

    done: bool = False

    def get(self, op: str, direction: str, backend: str) -> Measurement | None:
        for m in self.measurements:
            if (m.op, m.direction, m.backend) == (op, direction, backend):
                return m
        return None

    def rows(self, edge: bool = False, cmsis_nn: bool = False,
             mve: bool = False) -> list[list[str]]:
        """Table rows: board, op, direction, MACs, insn/MAC ref, insn/MAC dsp, speed-up
        (dsp over ref), with ``cmsis_nn`` the CMSIS-NN backend's insn/MAC, with ``mve`` the
        mve backend's insn/MAC and its speed-up over dsp (n/a where it has no kernel)."""
        out = []
        seen: list[tuple[str, str]] = []
        for m in self.measurements:
            key = (m.op, m.direction)
            if key in seen or (m.op.startswith("edge_") and not edge):
                continue
            seen.append(key)
            ref = self.get(m.op, m.direction, "ref")
            dsp = self.get(m.op, m.direction, "dsp")
            out.append([
                self.board, m.op, DIR_NAMES.get(m.direction, m.direction), f"{m.macs:,}",
                f"{ref.insn_per_mac:.2f}" if ref else "n/a",
                f"{dsp.insn_per_mac:.2f}" if dsp else "n/a",
                f"{ref.insn / dsp.insn:.1f}x" if ref and dsp and dsp.insn else "n/a",
            ])
            if cmsis_nn:
                cm = self.get(m.op, m.direction, "cmsis_nn")
                raw = self.get(m.op, m.direction, "cmsis_raw")
                tr = self.get(m.op, m.direction, "cmsis_nn_train")
                out[-1] += [f"{cm.insn_per_mac:.2f}" if cm else "n/a",
                            f"{raw.insn_per_mac:.2f}" if raw else "n/a",
                            f"{overhead(cm, raw):+.1f} %" if cm and raw and raw.insn else "n/a",
                            f"{overhead(tr, raw):+.1f} %" if tr and raw and raw.insn else "n/a"]
            if mve:
                mv = self.get(m.op, m.direction, "mve")
                out[-1] += [f"{mv.insn_per_mac:.2f}" if mv else "n/a",
                            f"{dsp.insn / mv.insn:.1f}x" if mv and dsp and mv.insn else "n/a"]
        return out


HEADERS = ["board", "op", "direction", "MACs", "insn/MAC ref", "insn/MAC dsp", "speed-up"]
CMSIS_HEADERS = ["insn/MAC cmsis_nn", "insn/MAC raw CMSIS-NN", "cmsis_nn overhead",
                 "overhead, trained layer"]


def overhead(backend: Measurement, raw: Measurement) -> float:
    """The cmsis_nn backend's instructions over the raw CMSIS-NN call's, in percent."""
    return 100.0 * (backend.insn - raw.insn) / raw.insn
MVE_HEADERS = ["insn/MAC mve", "mve vs dsp"]


def parse(text: str, board: str, returncode: int = 0) -> KernelBench:
    res = KernelBench(board=board, returncode=returncode, dsp=False, mismatches=0, output=text)
    for line in text.splitlines():
        f = line.split()
        if f[:2] != ["KL", "kbench"]:
            continue
        if f[2] == "op" and len(f) >= 14:
            kv = dict(zip(f[2::2], f[3::2], strict=False))
            res.measurements.append(Measurement(
                op=kv["op"], direction=kv["dir"], backend=kv["backend"], macs=int(kv["macs"]),
                insn=int(kv["insn"]), mismatches=int(kv["mismatches"])))
        elif f[2] == "done":
            kv = dict(zip(f[3::2], f[4::2], strict=False))
            res.done = True
            res.dsp = kv.get("dsp") == "1"
            res.mve = kv.get("mve") == "1"
            res.mismatches = int(kv.get("mismatches", "0"))
    res.mismatches = max(res.mismatches, sum(m.mismatches for m in res.measurements))
    return res


def run(board: str, sanitize: bool = False, timeout: float = 300,
        cmsis_nn: bool = False) -> KernelBench:
    """Build and run the kernel benchmark on ``board`` ("host" runs it natively);
    ``cmsis_nn`` adds the CMSIS-NN backend's forward kernels (build.cmsis_nn_dir())."""
    import subprocess

    exe = build.build(board, sanitize=sanitize, target=TARGET, cmsis_nn=cmsis_nn)
    if board == build.HOST:
        r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=timeout,
                           check=False)
        return parse(r.stdout, board + ("-asan" if sanitize else ""), r.returncode)
    rr = qemu.run_firmware(Path(exe), board, job=None, timeout=timeout)
    return parse(rr.stdout, board, rr.returncode)


BOARDS = ["mps2-an386", "mps2-an500", "mps2-an505", "mps2-an385", "mps3-an547"]


def add_arguments(p) -> None:
    p.add_argument("--boards", nargs="+", default=["mps2-an386", "mps2-an500"],
                   choices=BOARDS + [build.HOST],
                   help="boards to run on (default: the M4 and the M7; mps3-an547, the "
                        "Cortex-M55, adds the mve backend's columns)")
    p.add_argument("--edge", action="store_true",
                   help="also list the odd-shaped self-test layers")
    from ..cliargs import OutFile

    p.add_argument("--json", type=OutFile(), help="write the measurements as JSON to this file")
    p.add_argument("--cmsis-nn", action="store_true",
                   help="also the CMSIS-NN backend's forward kernels, the raw CMSIS-NN calls "
                        "they wrap and the backend's overhead per shape (a CMSIS-NN tree from "
                        "$KILOLEARN_CMSIS_NN or the Zephyr workspace of $ZEPHYR_BASE)")


def main(a) -> int:
    import json

    from tabulate import tabulate

    from ..cliargs import UsageError

    if a.cmsis_nn and build.cmsis_nn_dir() is None:
        raise UsageError("--cmsis-nn: no CMSIS-NN source tree (set KILOLEARN_CMSIS_NN or "
                         "ZEPHYR_BASE)")
    rows, out, bad = [], [], []
    results = [run(board, cmsis_nn=a.cmsis_nn) for board in a.boards]
    mve = any(r.mve for r in results)
    for board, r in zip(a.boards, results, strict=True):
        rows += r.rows(edge=a.edge, cmsis_nn=a.cmsis_nn, mve=mve)
        out += [dict(board=board, **m.__dict__) for m in r.measurements]
        if not r.ok:
            bad.append(f"{board}: exit {r.returncode}, {r.mismatches} mismatches"
                       + ("" if r.done else ", no final line"))
    print("int8 kernels, retired instructions per multiply-accumulate (QEMU -icount "
          "shift=0; one timer tick = 40 instructions, 50 on the an505, 31.25 on the an547); "
          "dsp checked bit for bit against ref" + (", and so is cmsis_nn" if a.cmsis_nn else "")
          + (", and so is mve" if mve else ""))
    headers = HEADERS + (CMSIS_HEADERS if a.cmsis_nn else []) + (MVE_HEADERS if mve else [])
    print(tabulate(rows, headers=headers,
                   colalign=("left", "left", "left") + ("right",) * (len(headers) - 3)))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    for b in bad:
        print(f"FAILED {b}")
    return 1 if bad else 0


# ---------------------------------------------------------------------------- the figure

MVE_BOARD = "mps3-an547"
FIGURE_COMMAND = f"kilolearn bench-kernels --boards {MVE_BOARD}"


def measure_figure() -> dict:
    """The data of the docs figure ``kernels-mve``: ref, dsp and mve on the Cortex-M55."""
    r = run(MVE_BOARD)
    if not r.ok or not r.mve:
        raise RuntimeError(f"bench-kernels on {MVE_BOARD}: exit {r.returncode}, "
                           f"{r.mismatches} mismatches, mve {int(r.mve)}"
                           + ("" if r.done else ", no final line"))
    return {"board": MVE_BOARD,
            "measurements": [dict(m.__dict__) for m in r.measurements
                             if not m.op.startswith("edge_")]}


def render(rec: dict) -> str:
    """The block of ``kernels-mve`` in docs/kernels.md: one row per op and direction that has
    an mve kernel."""
    d = rec["data"]
    ms = [Measurement(**m) for m in d["measurements"]]
    kb = KernelBench(board=d["board"], returncode=0, dsp=True, mismatches=0, measurements=ms,
                     done=True, mve=True)
    out = ["| op | direction | MACs | insn/MAC ref | insn/MAC dsp | insn/MAC mve | "
           "mve vs dsp | mve vs ref |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for m in ms:
        if m.backend != "mve":
            continue
        ref, dsp = kb.get(m.op, m.direction, "ref"), kb.get(m.op, m.direction, "dsp")
        out.append(
            f"| {m.op} | {DIR_NAMES.get(m.direction, m.direction)} | {m.macs:,} | "
            + (f"{ref.insn_per_mac:.2f}" if ref else "") + " | "
            + (f"{dsp.insn_per_mac:.2f}" if dsp else "n/a") + " | "
            + f"{m.insn_per_mac:.2f} | "
            + (f"{dsp.insn / m.insn:.1f}×" if dsp else "n/a") + " | "
            + (f"{ref.insn / m.insn:.1f}×" if ref else "") + " |")
    return ("\n".join(out) + "\n\n" + f"QEMU `{d['board']}` (Cortex-M55), `-icount shift=0`, "
            f"measured {rec['measured']} by `{rec['command']}`; every mve and dsp result equal "
            "to ref bit for bit (the firmware checks it; for the fused SGD step weights, biases "
            "and the dither state). n/a: the dsp backend has no such kernel (its dense weight "
            "gradient is fused into the SGD step). The fused SGD counts one MAC per weight.")
