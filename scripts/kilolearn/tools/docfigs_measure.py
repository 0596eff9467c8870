"""The measurements behind the figures of ``kilolearn docs`` (kilolearn.tools.docfigs): what
``--measure NAME`` runs, each returning the "data" of the figure's JSON record."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

# where and with what the figures are measured (the renderers read KERNEL_BOARDS, PLAN_BUDGET)
BOARD = "mps2-an386"
KERNEL_BOARDS = ("mps2-an386", "mps2-an500")
PLAN_BUDGET, PLAN_RESERVE = 256 * 1024, 8192
ZEPHYR_BOARDS = {"qemu_cortex_m3": "256 KB flash, 64 KB SRAM", "mps2/an385": "4 MB, 4 MB",
                 "nucleo_f429zi": "2 MB, 192 KB", "mimxrt1060_evk": "8 MB QSPI, 1 MB",
                 "nrf52840dk/nrf52840": "1 MB, 256 KB"}


class Skipped(Exception):  # noqa: N818 - not an error: the figure cannot be measured here
    """The figure cannot be measured on this machine (the reason in one line)."""


def today() -> str:
    return datetime.date.today().isoformat()


def _no_nan(d: dict) -> dict:
    """NaN (a field that was not measured) as null: JSON has no NaN."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in d.items()}


# ---------------------------------------------------------------------------- train / bench


def _measure_train(model_name: str, epochs: int, board: str = BOARD,
                   with_reference: bool = True) -> dict:
    from ..core import data as datasets
    from ..device import train

    ds = datasets.digits()
    out = []
    for dt in train.DTYPES:
        print(f"  {model_name} {dt} on {board} ...", flush=True)
        r = train.run(board, dt, epochs=epochs, ds=ds, model_name=model_name,
                      with_reference=with_reference)
        out.append(_no_nan(r.as_dict()))
    return {"board": board, "model": model_name, "epochs": epochs, "results": out}


# ---------------------------------------------------------------------------- sessions


def _measure_session(board: str, data: str, plot: Path | None = None,
                     pretrain: str | None = "all") -> dict:
    """`kilolearn session --data DATA` with its defaults (the replay buffer sized to the
    device's arena)."""
    from ..device import session

    sc = session.Scenario(**session.DATA_DEFAULTS.get(data, {}), pretrain=pretrain)
    sc.fit_replay = True
    ds = session.load_data(data)
    notes: list[str] = []
    results = []
    with session.open_device(board) as client:
        arena = client.info().arena_size
        for st in session.STRATEGIES:
            print(f"  {st} on {board} ...", flush=True)
            results.append(session.run(client, st, sc, ds, note=notes.append))
    if plot is not None:
        try:
            session.plot(results, str(plot))
            print(f"  plot written to {plot}")
        except ImportError:
            print(f"  {plot} not rewritten: matplotlib is not installed")
    return {"board": board, "data": data, "scenario": dataclasses.asdict(sc),
            "arena_size": arena, "notes": notes, "results": [r.as_dict() for r in results]}


def _run_timed(cmd: list[str], cwd: Path, env: dict[str, str], what: str) -> float:
    print(f"  {what}: {' '.join(cmd)}", flush=True)
    t0 = time.monotonic()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    dt = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {r.returncode}): "
                           f"{(r.stderr or r.stdout).strip()[-300:]}")
    print(f"    {dt:.1f} s", flush=True)
    return dt


def _measure_quickstart() -> dict:
    """Both Quick-start commands from a fresh clone of the committed tree, as a new user runs
    them: `./run.sh main` first (it creates .venv and runs `pip install -e .[test,plot]` from
    PyPI with no pip cache, builds the session firmware, runs the session), then `./run.sh test`
    (lint and the whole suite, every build from scratch). The apt packages are installed
    already (run.sh only checks them)."""
    from ..device import build

    root = build.repo_root()
    out: dict = {"cores": os.cpu_count(), "machine": os.uname().machine}
    with tempfile.TemporaryDirectory(prefix="kilolearn-quickstart-") as tmp:
        clone = Path(tmp) / "kilolearn"
        subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(root), str(clone)],
                       check=True)
        out["commit"] = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short",
                                        "HEAD"], capture_output=True, text=True,
                                       check=True).stdout.strip()
        env = {k: v for k, v in os.environ.items()
               if k not in ("VIRTUAL_ENV", "KILOLEARN_BUILD_DIR", "ZEPHYR_BASE")}
        env.update(PIP_NO_CACHE_DIR="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
        out["load_main"] = os.getloadavg()[0]
        out["main_s"] = _run_timed(["./run.sh", "main"], clone, env, "./run.sh main")
        out["load_test"] = os.getloadavg()[0]
        out["test_s"] = _run_timed(["./run.sh", "test", "-q"], clone, env, "./run.sh test")
    return out


# ---------------------------------------------------------------------------- sparse-bench


def _measure_sparse() -> dict:
    from ..bench import sparsebench as sb

    runs = sb.measure(BOARD)
    return {"board": BOARD, "epochs": 0, "commit_every": list(sb.DEFAULT_COMMIT_EVERY),
            "runs": [_no_nan(dataclasses.asdict(r)) for r in runs]}


# ---------------------------------------------------------------------------- kernels


def _previous(name: str) -> dict | None:
    try:
        from ..device import build
        from .docfigs import FIGURES_DIR

        return json.loads((build.repo_root() / FIGURES_DIR / f"{name}.json").read_text())
    except (OSError, ValueError, RuntimeError):
        return None


def _cmsis_source(tree: Path) -> str:
    """Which CMSIS-NN: its git description, or the Zephyr release whose workspace holds it."""
    desc = subprocess.run(["git", "-C", str(tree), "describe", "--always", "--tags"],
                          capture_output=True, text=True, check=False).stdout.strip()
    if desc:
        what = f"CMSIS-NN {desc} (KILOLEARN_CMSIS_NN)"
    else:
        ver = tree.parent.parent.parent / "zephyr" / "VERSION"
        kv = {}
        if ver.is_file():
            kv = dict(ln.replace(" ", "").split("=", 1) for ln in ver.read_text().splitlines()
                      if "=" in ln)
        what = (f"CMSIS-NN as pinned by Zephyr v{kv['VERSION_MAJOR']}.{kv['VERSION_MINOR']}."
                f"{kv['PATCHLEVEL']}'s manifest"
                if {"VERSION_MAJOR", "VERSION_MINOR", "PATCHLEVEL"} <= kv.keys()
                else "a CMSIS-NN tree (KILOLEARN_CMSIS_NN)")
    return what + ", built `-O2` for the same CPU flags"


def _measure_kernels() -> dict:
    from ..bench import kbench
    from ..device import build

    tree = build.cmsis_nn_dir()
    boards: dict[str, list[dict]] = {}
    cmsis: dict | None = None
    for b in KERNEL_BOARDS:
        with_cm = tree is not None
        print(f"  bench-kernels on {b}{' with CMSIS-NN' if with_cm else ''} ...", flush=True)
        r = kbench.run(b, cmsis_nn=with_cm)
        if not r.ok:
            raise RuntimeError(f"bench-kernels on {b}: exit {r.returncode}, {r.mismatches} "
                               "mismatches" + ("" if r.done else ", no final line"))
        ms = [m for m in r.measurements if not m.op.startswith("edge_")]
        boards[b] = [dict(m.__dict__) for m in ms if m.backend in ("ref", "dsp", "dsp_plain")]
        if with_cm:
            if cmsis is None:
                cmsis = {"measured": today(), "board": b, "source": _cmsis_source(tree),
                         "insn_per_mac": {f"{m.op} {m.direction}": m.insn_per_mac
                                          for m in ms if m.backend == "cmsis_nn"},
                         "insn": {}}
            # the backend (frozen and trained layer) and the raw CMSIS-NN call, per shape
            per: dict[str, dict[str, int]] = {}
            for m in r.measurements:  # the self-test shapes too: the small layers' cost
                if m.backend in ("cmsis_nn", "cmsis_nn_train", "cmsis_raw"):
                    per.setdefault(f"{m.op} {m.direction}", {"macs": m.macs})[m.backend] = m.insn
            cmsis["insn"][b] = per
    if cmsis is None:  # no tree here: keep the last measurement that had one
        prev = _previous("kernels")
        cmsis = prev["data"].get("cmsis_nn") if prev else None
        if cmsis:
            print(f"  no CMSIS-NN tree: its column kept from {cmsis['measured']}")
    return {"boards": boards, "cmsis_nn": cmsis}


# ---------------------------------------------------------------------------- planner


def _plan_d(pl) -> dict:  # noqa: ANN001
    return {"name": pl.name, "peak": pl.peak, "static": pl.static, "region": pl.region,
            "extra_pct": pl.extra_pct}


def _runner_ram(board: str) -> dict:
    """RAM of the bare-metal runner besides its arena: .data and .bss without arena_mem."""
    from elftools.elf.elffile import ELFFile

    from ..device import build

    exe = build.build(board)
    with open(exe, "rb") as f:
        e = ELFFile(f)
        sym = e.get_section_by_name(".symtab")
        arena = next(s["st_size"] for s in sym.iter_symbols() if s.name == "arena_mem")
        return {"elf": f"build/{board}/{exe.name}",
                "data": e.get_section_by_name(".data")["sh_size"],
                "bss": e.get_section_by_name(".bss")["sh_size"] - arena}


def _measure_planner() -> dict:
    import numpy as np

    from .. import planner as P
    from ..bench import planbench as B
    from ..core import model as M
    from ..core import reference as R

    mdl = M.mobilenet_v1((128, 128, 3), 10, alpha=0.1)
    g = mdl.graph
    budget = PLAN_BUDGET - PLAN_RESERVE
    mm = P.MemModel(g, "s8", target="arm")
    base = {w: P.baseline(mm, w) for w in ("store-all", "sqrt-n", "recompute-all")}
    print("  planning ...", flush=True)
    opt = P.optimal(mm, budget)
    if opt is None:
        raise RuntimeError(f"no plan fits {budget:,} B")
    x = np.random.default_rng(0).uniform(0, 1, (4,) + g.shapes[g.input]).astype(np.float32)
    qm = R.quantize_model(g, mdl.init(0), x)
    plain = dataclasses.replace(mm, compact=False)
    plans = [(plain, P.baseline(plain, "store-all")),
             (mm, B.compact_everywhere(mm, base["store-all"])), (mm, opt)]
    print(f"  training with 3 plans on {BOARD} ...", flush=True)
    ms = B.measure(qm, plans, BOARD)
    return {"budget": budget, "ops": len(g.ops), "macs": int(sum(mm.macs)),
            "engine_without_schedule": mm.store_all_bytes(), "runner": _runner_ram(BOARD),
            "plans": {k: _plan_d(v) for k, v in base.items()} | {"optimal": _plan_d(opt)},
            "measured": [dataclasses.asdict(m) for m in ms]}


# ---------------------------------------------------------------------------- Zephyr


def _previous_board(prev: dict | None, board: str) -> dict | None:
    """The board's row of the last zephyr-footprint record, marked with its date."""
    for m in (prev or {}).get("data", {}).get("measurements", [])[:1]:
        row = m.get("boards", {}).get(board)
        if row is not None:
            return dict(row, kept_from=row.get("kept_from", m["measured"]))
    return None


def zephyr_base() -> str:
    """$ZEPHYR_BASE, or Skipped: a Zephyr figure keeps its recorded values without one."""
    zb = os.environ.get("ZEPHYR_BASE")
    if not zb:
        raise Skipped("ZEPHYR_BASE is not set (it needs a Zephyr workspace, v3.7.1 or 4.x, "
                      "docs/zephyr.md); the recorded figures are kept")
    return zb


def _measure_zephyr() -> dict:
    """The session app built for every board in a Zephyr v3.7.1 workspace ($ZEPHYR_BASE):
    sizes from the ELF (kilolearn footprint = arm-none-eabi-size) and Zephyr's own
    rom_report / ram_report."""
    zb = zephyr_base()
    if shutil.which("west") is None:
        raise Skipped("west is not installed")
    from .. import footprint as fp
    from ..device import build

    root = build.repo_root()
    ws = Path(zb).resolve().parent
    extra = [] if ws in root.resolve().parents else [f"-DZEPHYR_EXTRA_MODULES={root}"]
    boards: dict[str, dict] = {}
    kernels: dict | None = None
    with tempfile.TemporaryDirectory(prefix="kilolearn-zephyr-") as tmp:
        prev = _previous("zephyr-footprint")
        for b in ZEPHYR_BOARDS:
            out = Path(tmp) / b.replace("/", "_")
            try:
                _run_timed(["west", "build", "-p", "always", "-b", b, str(root / "app"), "-d",
                            str(out), "--", *extra], ws, dict(os.environ), f"build {b}")
            except RuntimeError as e:  # e.g. a workspace without the board's HAL module
                old = _previous_board(prev, b)
                if old is None:
                    raise
                print(f"    {b} did not build here ({e}): its row kept from "
                      f"{old['kept_from']}", flush=True)
                boards[b] = old
                continue
            rep = fp.analyze(str(out / "zephyr" / "zephyr.elf"))
            row = {"text": rep.totals.text, "data": rep.totals.data, "bss": rep.totals.bss}
            for t in ("rom_report", "ram_report"):
                _run_timed(["west", "build", "-d", str(out), "-t", t], ws, dict(os.environ), t)
                row[t] = int(json.loads((out / f"{t[:3]}.json").read_text())["symbols"]["size"])
            boards[b] = row
            if b == "nucleo_f429zi" and "kernels" in rep.components:
                files = sorted(((f, u.rom) for f, (c, u) in rep.files.items() if c == "kernels"),
                               key=lambda t: -t[1])[:4]
                kernels = {"board": b, "bytes": rep.components["kernels"].rom,
                           "parts": {Path(f).name: n for f, n in files}}
    return {"boards": ZEPHYR_BOARDS, "measurements": [
        {"what": "the session app, default kernel backend", "measured": today(),
         "boards": boards, "kernels": kernels}]}


# ---------------------------------------------------------------------------- the user's loop

ADAPT_SAMPLES = [25, 50, 100, 200]
ADAPT_EPOCHS = 5
ADAPT_STEPS = [  # the loop as a user types it (in a scratch directory)
    ["example-data", "shift", "--shift", "translate"],
    ["fit", "shift/train.npz", "--test", "shift/test.npz", "-o", "base.klm", "--json",
     "fit.json"],
    ["adapt", "base.klm", "--data", "shift/adapt.npz", "--eval", "shift/shifted-test.npz",
     "--eval", "shift/test.npz", "--samples", *map(str, ADAPT_SAMPLES), "--epochs",
     str(ADAPT_EPOCHS), "--board", BOARD, "-o", "adapted.klm", "--json", "adapt.json",
     "--host-runs", "5"],
    ["eval", "adapted.klm", "--data", "shift/shifted-test.npz", "--json", "eval.json"],
]


def _measure_adapt() -> dict:
    """The domain-shift scenario of docs/user-guide.md through the CLI (ADAPT_STEPS), and the
    same adaptation in one pass (--epochs 1) for comparison."""
    from .. import cli

    def run(argv: list[str]) -> None:
        print("  kilolearn " + " ".join(argv), flush=True)
        if cli.main(argv) != 0:
            raise RuntimeError(f"kilolearn {argv[0]} failed")

    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="kilolearn-adapt-") as tmp:
        os.chdir(tmp)
        try:
            for argv in ADAPT_STEPS:
                run(argv)
            one = [a if a != str(ADAPT_EPOCHS) else "1" for a in ADAPT_STEPS[2][:-2]]
            one[one.index("adapt.json")] = "adapt1.json"
            one[one.index("adapted.klm")] = "adapted1.klm"
            run(one + ["--host-runs", "0"])
            rd = {n: json.loads(Path(n).read_text())
                  for n in ("fit.json", "adapt.json", "adapt1.json", "eval.json")}
        finally:
            os.chdir(cwd)
    return {"board": BOARD, "steps": [" ".join(["kilolearn", *s]) for s in ADAPT_STEPS],
            "fit": rd["fit.json"], "adapt": rd["adapt.json"], "single_pass": rd["adapt1.json"],
            "eval": rd["eval.json"]}
