"""``kilolearn paged-bench``: Kwon & Park's scale with the weights in flash (docs/paged-weights.md).

A 784-512-128-10 MLP (468,874 parameters: 1.88 MB in float32, 0.47 MB in int8) trains on 28x28
Fashion-MNIST with its weights in a simulated NOR part (4 KB sectors, 16-byte program units) and
a 20 KB arena, on an emulated Cortex-M4 (QEMU ``-icount shift=0``), updating every row or
Deutel's rows with the largest gradient (100, 50, 18.52 and 10 %). Per run: test accuracy on
the board and of the numpy twin trained with every weight in memory (same samples, same order;
int8 predictions identical), arena peak, instructions per step, flash bytes programmed and
sectors erased per 1,000 steps, folds, and the partition's lifetime at 10,000 cycles per sector
(its most worn sector). A row "in SRAM" trains the same model with every weight in the arena.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..core import data as datasets
from ..core import model as M
from ..core import reference as R
from ..core import selective
from ..device import job, runner
from ..formats import export

SIZES = (784, 512, 128, 10)
FRACTIONS = (1000, 500, 185, 100)  # per mille; 18.5 %: Kwon & Park's 18.52 %
CYCLES = 10_000
ARENA = 20 * 1024
LOG = 3 << 20  # > one step of every f32 row (1.9 MB); the f32 job, two generations and
# the log share the board's 16 MB of PSRAM
LR = {"f32": 0.01, "s8": 0.05}


@dataclass
class Run:
    dtype: str
    permille: int
    paged: bool
    steps: int
    device_acc: float
    twin_acc: float
    same_predictions: bool | None  # int8: the board's and the twin's test predictions agree
    arena_peak: int
    insn_per_step: float | None
    flash_bytes_per_1k: float
    erases_per_1k: float
    folds: int
    max_sector_erases: int
    sectors: int
    flash_bytes: int  # the partition: two generations and the log
    lifetime_steps: float | None  # until the most worn sector reaches CYCLES


def _twin(dtype: str, g, p, qm, x, y, xt, pm: int) -> np.ndarray:  # noqa: ANN001
    if dtype == "f32":
        tr = R.F32Trainer(g, p, lr=LR[dtype])
    else:
        tr = R.S8Trainer(qm, lr=LR[dtype], seed=1)
    if pm < 1000:
        tr.set_update_policy("channel-norm", permille=pm)
    R.train_in_order(tr, x, y, 1)
    return np.asarray(tr.predict(xt))


def run_one(board: str, dtype: str, pm: int, paged: bool, ds, n_train: int,  # noqa: ANN001
            log_size: int = LOG) -> Run:
    m = M.mlp(list(SIZES))
    g, p = m.graph, m.init(1)
    qm = None
    if dtype == "f32":
        x, xt = ds.x_train[:n_train], ds.x_test
        blob = export.export_f32(g, p, paged=paged)
    else:
        qm = R.quantize_model(g, p, ds.x_train[:100])
        x, xt = qm.quantize_input(ds.x_train[:n_train]), qm.quantize_input(ds.x_test)
        blob = export.export_s8(qm, paged=paged)
    y = ds.y_train[:n_train]
    upd = None if pm >= 1000 else (selective.POLICIES["channel-norm"], pm)
    img = job.build(blob, x, y, xt, ds.y_test, lr=LR[dtype], seed=1, epochs=1,
                    arena_size=ARENA if paged else 0, update=upd, paged=paged,
                    log_size=log_size if paged else 0)
    rep = runner.run_job(img, board, timeout=7200)
    ep = rep.one("epoch")
    pred = _twin(dtype, g, p, qm, x, y, xt, pm)
    twin_acc = float((pred == ds.y_test).mean())
    steps = len(y)
    insn = ep["train_insn"] / steps if rep.one("model")["counter"] else None
    fb = ep.get("flash_bytes", 0) / steps * 1000
    fe = ep.get("flash_erases", 0) / steps * 1000
    store = rep.one("store") if paged else {"slots": 0, "log": 0, "sectors": 0}
    wear = rep.one("wear")["max_sector_erases"] if paged else 0
    same = None
    if dtype == "s8":  # the board's predictions are not printed: its count against the twin's
        same = ep["test_correct"] == int((pred == ds.y_test).sum())
    return Run(dtype, pm, paged, steps, ep["test_correct"] / ep["n_test"], twin_acc, same,
               rep.one("done")["arena_peak"], insn, fb, fe, ep.get("folds", 0), wear,
               store["sectors"], store["slots"] + store["log"],
               CYCLES * steps / wear if wear else None)


def measure(board: str = "mps2-an386", dtypes: list[str] | None = None,
            fractions: list[int] | None = None, n_train: int = 1500, n_test: int = 500,
            log_size: int = LOG) -> list[Run]:
    ds = datasets.fashion(n_train, n_test, size=28)
    runs: list[Run] = []
    for dtype in dtypes or ["f32", "s8"]:
        print(f"  {dtype} in SRAM ...", flush=True)
        runs.append(run_one(board, dtype, 1000, False, ds, n_train))
        for pm in fractions or list(FRACTIONS):
            print(f"  {dtype} paged {pm / 10:g} % ...", flush=True)
            runs.append(run_one(board, dtype, pm, True, ds, n_train, log_size))
    return runs


def _life(r: Run) -> str:
    if r.lifetime_steps is None:
        return "-"
    v = r.lifetime_steps
    return f"{v / 1e6:.2f} M" if v >= 1e6 else f"{v / 1e3:.0f} k"


def table(runs: list[Run]) -> str:
    rows = ["| model | rows updated | accuracy: board / twin in memory | arena peak | "
            "instructions per step | flash programmed per 1,000 steps | sectors erased per "
            "1,000 steps | folds | lifetime (steps) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        where = "paged" if r.paged else "in SRAM"
        insn = f"{r.insn_per_step / 1e6:.2f} M" if r.insn_per_step else "-"
        rows.append(
            f"| {r.dtype} {where} | {r.permille / 10:g} % | {100 * r.device_acc:.1f} / "
            f"{100 * r.twin_acc:.1f} % | {r.arena_peak:,} B | {insn} | "
            f"{r.flash_bytes_per_1k / 1e6:,.1f} MB | {r.erases_per_1k:,.0f} | {r.folds} | "
            f"{_life(r)} |")
    return "\n".join(rows)


def run_from_dict(d: dict) -> Run:
    return Run(**d)


def measure_figure() -> dict:
    """``kilolearn docs --measure paged-bench``: the command's defaults, as JSON data."""
    return {"board": "mps2-an386", "n_train": 1500, "n_test": 500, "log_size": LOG,
            "runs": [asdict(r) for r in measure()]}


def render(rec: dict) -> str:
    d = rec["data"]
    runs = [run_from_dict(r) for r in d["runs"]]
    params = sum(a * b + b for a, b in zip(SIZES[:-1], SIZES[1:], strict=False))
    paged = [r for r in runs if r.paged]
    full = {r.dtype: r for r in paged if r.permille >= 1000}
    cheaper = [f"{r.dtype} {r.permille / 10:g} %: "
               f"{r.insn_per_step / full[r.dtype].insn_per_step:.2f}x"
               for r in paged if r.permille <= 200 and r.dtype in full and r.insn_per_step
               and full[r.dtype].insn_per_step]
    worst = max((abs(r.device_acc - r.twin_acc) for r in runs), default=0.0)
    lines = [
        f"{SIZES[0]}-{SIZES[1]}-{SIZES[2]}-{SIZES[3]} MLP ({params:,} parameters), "
        f"{d['n_train']:,} Fashion-MNIST 28x28 training samples (one epoch), {d['n_test']} test "
        f"samples, QEMU {d['board']} (Cortex-M4), instructions under `-icount shift=0`; paged "
        f"runs in a {ARENA // 1024} KB arena with a {d['log_size'] >> 20} MB weight log "
        f"(measured {rec['measured']}; rerun: `kilolearn docs --measure paged-bench`):",
        "",
        table(runs),
        "",
        f"- Board against the twin with every weight in memory: at most "
        f"{100 * worst:.1f} points apart (int8: the same predictions).",
        "- Instructions per step of the selected rows against all rows (paged): "
        + (", ".join(cheaper) if cheaper else "none") + ".",
    ]
    s8 = {r.permille: r for r in paged if r.dtype == "s8"}
    if 1000 in s8 and 185 in s8 and s8[1000].flash_bytes_per_1k:
        lines.append(
            "- int8: a row whose rounded step is zero is not written, and most rows' quantised "
            "gradients are zero, so updating every row already writes "
            f"{s8[1000].flash_bytes_per_1k / 1e6:,.1f} MB per 1,000 steps against "
            f"{s8[185].flash_bytes_per_1k / 1e6:,.1f} MB for 18.5 % of the rows: the selection "
            "saves flash and instructions mainly in float32.")
    return "\n".join(lines)


def run(a: argparse.Namespace) -> int:
    runs = measure(a.board, a.dtypes, a.fractions, a.n_train, a.n_test, a.log_size)
    print("\n" + table(runs))
    if a.json:
        Path(a.json).write_text(json.dumps([asdict(r) for r in runs], indent=1))
    bad = [r for r in runs if r.same_predictions is False]
    for r in bad:
        print(f"MISMATCH {r.dtype} {r.permille}: board and twin differ")
    return 1 if bad else 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cliargs import BOARDS, ByteSize, IntRange, OutFile

    p.add_argument("--board", default="mps2-an386", choices=BOARDS + ["host"])
    p.add_argument("--dtypes", nargs="+", default=["f32", "s8"], choices=["f32", "s8"])
    p.add_argument("--fractions", nargs="+", type=IntRange(1, 1000), default=list(FRACTIONS),
                   metavar="PERMILLE", help="rows updated per step, per mille (1000: all)")
    p.add_argument("--n-train", type=IntRange(1, 60000), default=1500)
    p.add_argument("--n-test", type=IntRange(1, 10000), default=500)
    p.add_argument("--log-size", type=ByteSize(64 << 10, 64 << 20), default=LOG,
                   help="bytes of the weight log (e.g. 4M; at least one step's rows)")
    p.add_argument("--json", type=OutFile(), default=None, help="also write the runs here")
