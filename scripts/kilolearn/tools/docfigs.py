"""Figures of the documentation, generated from measurements (``kilolearn docs``).

A measured figure lives in two places: its data in ``docs/figures/<name>.json`` (what was
measured, the command that measures it, the date) and its text in a marked block of README.md
or docs/*.md::

    <!-- figure: NAME (rerun: kilolearn docs --measure NAME) -->

    ... render(the JSON) exactly ...

    <!-- /figure -->

``kilolearn docs`` rewrites every block from its JSON, ``--measure NAME`` reruns a figure
(the library calls its kilolearn command makes) and writes its JSON first, ``--check`` lists
the blocks that differ from their JSON. Every figure appears in exactly one block; a figure
with a ``source`` renders another figure's JSON (one measurement, two places that use it).
tests/python/test_docs_figures.py holds every block to its JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

FIGURES_DIR = "docs/figures"
START = re.compile(r"^<!-- figure: (?P<name>\S+) \(rerun: kilolearn docs --measure "
                   r"(?P<again>\S+)\) -->$")
END = "<!-- /figure -->"


class FigureError(ValueError):
    """A marker that is malformed, names no figure, or a figure without its JSON."""


class Skipped(Exception):  # noqa: N818 - not an error: the figure cannot be measured here
    """The figure cannot be measured on this machine (the reason in one line)."""


@dataclass(frozen=True)
class Figure:
    name: str
    command: str  # the command line that measures it (recorded in its JSON)
    render: Callable[[dict], str]  # JSON record -> the exact text of its block
    measure: Callable[[], dict] | None = None  # -> the record's "data"
    source: str | None = None  # render this figure's JSON instead of its own
    where: str = ""  # the file holding its block (documentation; the test checks it)

    @property
    def data_name(self) -> str:
        return self.source or self.name


# ---------------------------------------------------------------------------- helpers


def today() -> str:
    return datetime.date.today().isoformat()


def _stamp(rec: dict, what: str = "") -> str:
    """The provenance line of a block: when and with what it was measured."""
    return f"*Measured {rec['measured']}{what}: `{rec['command']}`.*"


def _pct(v: float, digits: int = 2) -> str:
    return f"{100 * v:.{digits}f} %"


def _n(v: float) -> str:
    return f"{v:,.0f}"


def _range(vals: list[float], fmt: str = "{:,.0f}") -> str:
    lo, hi = min(vals), max(vals)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else \
        f"{fmt.format(lo)}–{fmt.format(hi)}"


def _no_nan(d: dict) -> dict:
    """NaN (a field that was not measured) as null: JSON has no NaN."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in d.items()}


def _fence(text: str) -> str:
    return f"```\n{text}\n```"


# ---------------------------------------------------------------------------- train / bench

BOARD = "mps2-an386"


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


def _by_dtype(rec: dict) -> dict[str, dict]:
    return {r["dtype"]: r for r in rec["data"]["results"]}


def render_train_mlp(rec: dict) -> str:
    from ..device import train

    return _fence(train.table(rec["data"]["results"])) + "\n\n" + _stamp(rec)


def render_int8_accuracy(rec: dict) -> str:
    r = _by_dtype(rec)
    f, s = r["f32"], r["s8"]
    return (f"64-32-10 MLP, sklearn digits (first 1,200 train / 597 test), lr 0.05, "
            f"{rec['data']['epochs']} epochs, seed 0, on QEMU {rec['data']['board']}: int8 "
            f"{_pct(s['device_acc'][-1])} (numpy {_pct(s['reference_acc'])}), float32 "
            f"{_pct(f['device_acc'][-1])} (numpy {_pct(f['reference_acc'])}); "
            f"{_n(s['insn_per_train_sample'])} and {_n(f['insn_per_train_sample'])} "
            f"instructions per training sample. These are the README's training table "
            f"(measured {rec['measured']}: `{rec['command']}`).")


def render_bench_m3(rec: dict) -> str:
    r = _by_dtype(rec)
    f, s = r["f32"]["insn_per_train_sample"], r["s8"]["insn_per_train_sample"]
    return (f"On a core without an FPU int8 is {f / s:.1f}× faster: on the Cortex-M3 "
            f"(`{rec['data']['board']}`, the portable `ref` kernels, software floating point) "
            f"an int8 step takes {_n(s)} instructions per sample and a float32 one {_n(f)} "
            f"(mean of {rec['data']['epochs']} epochs; measured {rec['measured']}: "
            f"`{rec['command']}`).")


def render_train_cnn(rec: dict) -> str:
    r = _by_dtype(rec)
    f, s = r["f32"], r["s8"]
    return (f"`kilolearn train --model cnn --epochs {rec['data']['epochs']}` trains a small "
            "CNN (conv-BN-ReLU, max-pool, conv-BN-ReLU, global average pool, dense): "
            f"{_pct(f['device_acc'][-1])} float32, {_pct(s['device_acc'][-1])} int8 (numpy: "
            f"{100 * f['reference_acc']:.2f} / {_pct(s['reference_acc'])}), "
            f"{_n(f['insn_per_train_sample'])} / {_n(s['insn_per_train_sample'])} instructions "
            f"per training sample on the M4 (measured {rec['measured']}: `{rec['command']}`).")


# ---------------------------------------------------------------------------- sessions


def _measure_session(board: str, data: str, plot: Path | None = None) -> dict:
    """`kilolearn session` with its defaults (the replay buffer sized to the device's arena)."""
    from ..core import data as datasets
    from ..device import session

    sc = session.Scenario()
    sc.fit_replay = True
    ds = datasets.load(data)
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


def _insn_per_new(r: dict) -> list[float]:
    return [s["train_insn"] / max(s["train_steps"], 1) for s in r["stats"]]


def render_session_digits(rec: dict) -> str:
    from ..device import session

    d = rec["data"]
    res = {r["strategy"]: r for r in d["results"]}
    rep, nai = res["replay"], res["naive"]

    def path(r: dict) -> str:
        return " → ".join(f"{100 * a:.1f}" for a in r["acc_after_task"]) + " %"

    last = " / ".join(f"{100 * a:.0f}" for a in nai["task_acc"][-1])
    peak = max(s["arena_peak"] for s in rep["stats"])
    text = (f"Replay keeps the old classes ({path(rep)} on the classes seen so far after each "
            f"task) where fine-tuning forgets them ({path(nai)}; after the last task its "
            f"per-task accuracies are {last} %). On the M4 a new sample costs "
            f"{_range(_insn_per_new(rep))} instructions with its "
            f"{d['scenario']['replay_ratio']} replayed latents, {_range(_insn_per_new(nai))} "
            "without (naive; frozen 64→128 backbone and the 128→32→10 head; the "
            "\"insn/new sample\" column, task 1 to 5); the replay run's arena peak is "
            f"{peak:,} bytes of the device's {d['arena_size']:,}, with {rep['replay_cap']} "
            "latents held.")
    return (_fence(session.summary_table(d["results"])) + "\n\n" + text + "\n\n"
            + _stamp(rec, f" on {d['board']}"))


def render_session_fashion(rec: dict) -> str:
    d = rec["data"]
    res = {r["strategy"]: r for r in d["results"]}
    same = all(r["acc_after_task"] == r["reference_acc_after_task"] for r in d["results"])
    accs = ", ".join(f"{s} {_pct(res[s]['acc_after_task'][-1])}"
                     for s in ("replay", "naive", "joint"))
    return ("A larger scenario: `kilolearn session --data fashion` (Fashion-MNIST from "
            "Debian's `dataset-fashion-mnist`, 3,000 train / 1,000 test images pooled to "
            f"14×14; on the host build: {accs}, device and numpy "
            f"{'identical' if same else 'DIFFERENT'}; measured {rec['measured']}: "
            f"`{rec['command']}`).")


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
    """Wall time of `./run.sh main` with the apt packages and .venv present (the firmware built
    from scratch in a fresh build directory), and of what run.sh adds without .venv: a new
    venv and `pip install -e .[test,plot]` from PyPI with no pip cache."""
    from ..device import build

    root = build.repo_root()
    py = shutil.which("python3") or sys.executable
    out: dict = {"cores": os.cpu_count(), "machine": os.uname().machine}
    with tempfile.TemporaryDirectory(prefix="kilolearn-quickstart-") as tmp:
        env = dict(os.environ, PIP_NO_CACHE_DIR="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
        out["load_install"] = os.getloadavg()[0]
        v = f"{tmp}/venv/bin/python"
        out["install_s"] = (
            _run_timed([py, "-m", "venv", f"{tmp}/venv"], root, env, "venv")
            + _run_timed([v, "-m", "pip", "install", "-q", "--upgrade", "pip"], root, env,
                         "pip upgrade")
            + _run_timed([v, "-m", "pip", "install", "-q", "-e", ".[test,plot]"], root, env,
                         "pip install"))
        env = dict(os.environ, KILOLEARN_BUILD_DIR=f"{tmp}/build")
        out["load_main"] = os.getloadavg()[0]
        out["main_s"] = _run_timed(["./run.sh", "main"], root, env, "./run.sh main")
    return out


def render_quickstart(rec: dict) -> str:
    d = rec["data"]
    return (f"Timed on the machine that measured these docs ({d['machine']}, {d['cores']} "
            f"cores shared with other jobs; load average {d['load_main']:.1f} when it "
            f"started), with the apt packages installed: `./run.sh main` took "
            f"**{d['main_s']:.0f} s** with `.venv` present (the session firmware built from "
            f"scratch, then the three strategies). Without `.venv`, `run.sh` first creates "
            f"it and runs `pip install -e '.[test,plot]'`: that took **{d['install_s']:.0f} "
            f"s** from PyPI with no pip cache (load average {d['load_install']:.1f}). The "
            f"apt step and `./run.sh test` were not timed. (Measured {rec['measured']}.)")


# ---------------------------------------------------------------------------- sparse-bench


def _measure_sparse() -> dict:
    from ..bench import sparsebench as sb

    runs = sb.measure(BOARD)
    return {"board": BOARD, "epochs": 0, "commit_every": list(sb.DEFAULT_COMMIT_EVERY),
            "runs": [_no_nan(dataclasses.asdict(r)) for r in runs]}


def _runs(rec: dict) -> list:
    from ..bench import sparsebench as sb

    return [sb.run_from_dict(r) for r in rec["data"]["runs"]]


def _find(runs: list, model: str, policy: str, fraction: float):  # noqa: ANN202
    return next((r for r in runs if (r.model, r.policy) == (model, policy)
                 and abs(r.fraction - fraction) < 1e-9), None)


def render_sparse(rec: dict) -> str:
    from ..bench import sparsebench as sb

    d = rec["data"]
    runs = _runs(rec)
    full = {r.model: r for r in runs if r.policy == "all"}
    near = [f"{r.model} {r.policy} {100 * r.fraction:g} % "
            f"({100 * (r.device_acc - full[r.model].device_acc):+.2f})"
            for r in runs if r.policy != "all" and r.model in full
            and round(100 * (r.device_acc - full[r.model].device_acc), 2) >= -1.0]
    saved = []
    for frac, frozen in ((0.75, 25), (0.5, 50)):
        parts = []
        for m, f in full.items():
            r = _find(runs, m, "channel-sparse", frac)
            if r and r.insn_per_step and f.insn_per_step:
                parts.append(f"{m.upper()} {100 * (1 - r.insn_per_step / f.insn_per_step):.1f} %")
        if parts:
            saved.append(f"{frozen} % of channels frozen (`channel-sparse {100 * frac:g} %`) "
                         f"saves {', '.join(parts)}")
    lines = [
        "- **Within one point of the full update** (device accuracy, points against it): "
        + (", ".join(near) if near else "none") + "; the full update: "
        + ", ".join(f"{m.upper()} {_pct(r.device_acc)}" for m, r in full.items()) + ".",
        "- **Non-zero weight steps under the full update** (int8 stochastic rounding), per "
        "step: " + ", ".join(f"{r.changed_pct:.2f} % of the weights on the {m.upper()}"
                             for m, r in full.items()) + ".",
    ]
    if saved:
        lines.append("- **Instructions saved by structured channel sparsity** (M4, "
                     "`-icount shift=0`, mean over the epochs, against the full update): "
                     + "; ".join(saved) + ".")
    return (_fence(sb.accuracy_report(runs, d["board"], d["epochs"])) + "\n\n"
            + "\n".join(lines) + "\n\n" + _stamp(rec))


def render_sparse_traffic(rec: dict) -> str:
    from ..bench import sparsebench as sb

    d = rec["data"]
    runs = _runs(rec)
    full, topr = _find(runs, "mlp", "all", 1.0), _find(runs, "mlp", "topr", 0.2)
    lines = []
    if full is not None:
        if topr is not None:
            lines.append(
                f"- **Read and written per step** (int8 MLP): a Kwon-style store pages in "
                f"{full.read_per_step:,.0f} weights per step for the full update and "
                f"{topr.read_per_step:,.0f} for top-r 20 %; {full.changed_per_step:.1f} and "
                f"{topr.changed_per_step:.1f} weights change.")
        for every in d["commit_every"]:
            t = sb.traffic(full, every)
            p16 = t["parts"].get("4x16K")
            g, j = t["gen_kb"], t["journal_kb"]
            erase = ""
            if p16 and p16["journal_erases"]:
                ge, je = p16["gen_erases"], p16["journal_erases"]
                erase = (f", {max(ge, je) / min(ge, je):.1f}× "
                         f"{'fewer' if ge > je else 'more'} 16 KB sector erases")
            lines.append(
                f"- **A commit every {every} steps** (full update): a generation writes "
                f"{g:,.1f} KB per 1,000 steps, a journal would write {j:,.1f} KB ("
                f"{max(g, j) / min(g, j):.1f}× {'less' if g >= j else 'more'}{erase}).")
        every = d["commit_every"]
        lives = [f"{part} " + " / ".join(sb._life(sb.traffic(full, e)["parts"][part]["gen_life"])
                                         for e in every) for part in sb.SECTORS]
        lines.append("- **Generation lifetimes** at one step per second (full update; a commit "
                     f"every {' / '.join(map(str, every))} steps): {', '.join(lives)}.")
    return (_fence(sb.traffic_report(runs, d["commit_every"])) + "\n\n" + "\n".join(lines)
            + "\n\n" + _stamp(rec, " (the runs of the accuracy table above)"))


# ---------------------------------------------------------------------------- kernels

KERNEL_BOARDS = ("mps2-an386", "mps2-an500")
KERNEL_LABELS = {"conv1x1": "conv1x1 16→32", "conv3x3": "conv3x3 8→16",
                 "conv3x3s2": "conv3x3s2 8→16"}
DIRS = {"fwd": "forward", "bwd": "input grad", "wgrad": "weight grad"}


def _previous(name: str) -> dict | None:
    try:
        from ..device import build

        return json.loads((build.repo_root() / FIGURES_DIR / f"{name}.json").read_text())
    except (OSError, ValueError, RuntimeError):
        return None


def _measure_kernels() -> dict:
    from ..bench import kbench
    from ..device import build

    tree = build.cmsis_nn_dir()
    boards: dict[str, list[dict]] = {}
    cmsis: dict | None = None
    for b in KERNEL_BOARDS:
        with_cm = tree is not None and b == KERNEL_BOARDS[0]
        print(f"  bench-kernels on {b}{' with CMSIS-NN' if with_cm else ''} ...", flush=True)
        r = kbench.run(b, cmsis_nn=with_cm)
        if not r.ok:
            raise RuntimeError(f"bench-kernels on {b}: exit {r.returncode}, {r.mismatches} "
                               "mismatches" + ("" if r.done else ", no final line"))
        ms = [m for m in r.measurements if not m.op.startswith("edge_")]
        boards[b] = [dict(m.__dict__) for m in ms if m.backend in ("ref", "dsp")]
        if with_cm:
            desc = subprocess.run(["git", "-C", str(tree), "describe", "--always", "--tags"],
                                  capture_output=True, text=True, check=False).stdout.strip()
            cmsis = {"measured": today(), "board": b,
                     "source": f"CMSIS-NN {desc or 'tree'} (KILOLEARN_CMSIS_NN), `-O2` for the "
                               "same CPU flags",
                     "insn_per_mac": {f"{m.op} {m.direction}": m.insn_per_mac
                                      for m in ms if m.backend == "cmsis_nn"}}
    if cmsis is None:  # no tree here: keep the last measurement that had one
        prev = _previous("kernels")
        cmsis = prev["data"].get("cmsis_nn") if prev else None
        if cmsis:
            print(f"  no CMSIS-NN tree: its column kept from {cmsis['measured']}")
    return {"boards": boards, "cmsis_nn": cmsis}


def _ipm(rows: list[dict], op: str, direction: str, backend: str) -> float | None:
    for m in rows:
        if (m["op"], m["direction"], m["backend"]) == (op, direction, backend):
            return m["insn"] / m["macs"] if m["macs"] else None
    return None


def render_kernels(rec: dict) -> str:
    d = rec["data"]
    m4, m7 = KERNEL_BOARDS
    rows4 = d["boards"][m4]
    cm = d.get("cmsis_nn") or {}
    cmv = cm.get("insn_per_mac", {})
    keys: list[tuple[str, str]] = []
    for m in rows4:
        if (m["op"], m["direction"]) not in keys and m["backend"] == "dsp":
            keys.append((m["op"], m["direction"]))
    out = ["| op | direction | MACs | insn/MAC ref | insn/MAC dsp | speed-up | insn/MAC cmsis_nn |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for op, di in keys:
        macs = next(m["macs"] for m in rows4 if (m["op"], m["direction"]) == (op, di))
        ref, dsp = _ipm(rows4, op, di, "ref"), _ipm(rows4, op, di, "dsp")
        if ref is None or dsp is None:  # the dense weight gradient: ref only (fused in SGD)
            continue
        c = cmv.get(f"{op} {di}")
        out.append(f"| {KERNEL_LABELS.get(op, op)} | {DIRS.get(di, di)} | {macs:,} | "
                   f"{ref:.2f} | {dsp:.2f} | {ref / dsp:.1f}× | "
                   f"{'' if c is None else f'{c:.2f}'} |")
    text = ["\n".join(out), ""]
    if cm:
        same = cm.get("measured") == rec["measured"]
        text.append(f"Cortex-M4 (`{m4}`). The cmsis_nn column: {cm['source']}, "
                    + ("measured with the other columns." if same else
                       f"measured {cm['measured']}, the last run with a CMSIS-NN tree; the "
                       "other columns were measured without one, so it is carried over, not "
                       "rerun (`KILOLEARN_CMSIS_NN=<tree> kilolearn docs --measure kernels` "
                       "reruns it)."))
    diffs: dict[str, list[float]] = {"dsp": [], "ref": []}
    for m in rows4:
        v7 = _ipm(d["boards"].get(m7, []), m["op"], m["direction"], m["backend"])
        if v7 is not None and m["backend"] in diffs:
            diffs[m["backend"]].append(abs(v7 - m["insn"] / m["macs"]))
    if diffs["dsp"] and diffs["ref"]:
        text.append(f"The Cortex-M7 (`{m7}`) is within {max(diffs['dsp']):.2f} insn/MAC of "
                    f"every dsp figure and {max(diffs['ref']):.2f} of every ref one (QEMU "
                    "counts instructions, not cycles).")
    text.append("")

    def dsp_vals(pred: Callable[[str, str], bool], boards: tuple[str, ...] = KERNEL_BOARDS
                 ) -> list[float]:
        return [m["insn"] / m["macs"] for b in boards for m in d["boards"].get(b, [])
                if m["backend"] == "dsp" and pred(m["op"], m["direction"])]

    def met(vals: list[float], bar: float) -> str:
        return "met" if max(vals) <= bar else "not met"

    def cms(pred: Callable[[str, str], bool]) -> list[float]:
        return [v for k, v in cmv.items() if pred(*k.split(" "))]

    conv_f = dsp_vals(lambda o, di: o.startswith("conv") and di == "fwd")
    fc_f = {o: _ipm(rows4, o, "fwd", "dsp") for o, di in keys if o.startswith("fc") and di == "fwd"}
    bwd = dsp_vals(lambda o, di: o[:2] in ("fc", "co") and di != "fwd")
    dw_f = [v for v in (_ipm(rows4, o, "fwd", "dsp") for o, di in keys
                        if o.startswith("dw") and di == "fwd") if v is not None]
    dw_b = dsp_vals(lambda o, di: o.startswith("dw") and di != "fwd")
    tight = max(((o, _ipm(rows4, o, "fwd", "dsp")) for o, di in keys
                 if o.startswith("conv") and di == "fwd"), key=lambda t: t[1])
    c_conv = cms(lambda o, di: o.startswith("conv") and di == "fwd")
    c_dw = cms(lambda o, di: o.startswith("dw") and di == "fwd")
    bars = ["Against the bar (≤ 1.2 forward, ≤ 2.0 backward GEMMs, ≤ 4 depthwise):", ""]
    bars.append(f"- **Conv forward ≤ 1.2: {met(conv_f, 1.2)}** ({_range(conv_f, '{:.2f}')} on "
                f"M4 and M7" + (f"; CMSIS-NN {_range(c_conv, '{:.2f}')}" if c_conv else "")
                + f"). The highest, {KERNEL_LABELS.get(tight[0], tight[0])} on the M4, is "
                f"{tight[1]:.3f}.")
    fc_txt = ", ".join(f"{v:.2f} at {o[2:]}" for o, v in
                       sorted(fc_f.items(), key=lambda t: t[1]) if v is not None)
    fc_ok = met([v for v in fc_f.values() if v is not None], 1.2)
    bars.append(f"- **Dense forward ≤ 1.2: {fc_ok}** ({fc_txt.replace('x', '×')})."
                + (" Every weight is used once, so it costs half an `SXTB16` and half an "
                   "`SMLAD` by itself (≈ 1.0), loads add ≈ 0.17, and a small layer adds ≈ 12 "
                   "instructions per output and the input centring." if fc_ok != "met" else ""))
    bars.append(f"- **Backward GEMMs ≤ 2.0: {met(bwd, 2.0)}** for the FC and conv input and "
                f"weight gradients ({_range(bwd, '{:.2f}')}, M4 and M7).")
    bars.append(f"- **Depthwise ≤ 4: {met(dw_f + dw_b, 4.0)}** (forward "
                f"{' / '.join(f'{v:.2f}' for v in dw_f)}, backward {_range(dw_b, '{:.2f}')}"
                + (f"; CMSIS-NN forward {_range(c_dw, '{:.2f}')}" if c_dw else "") + ").")
    saves = [1 - _ipm(rows4, *k.split(" "), "dsp") / v for k, v in cmv.items()
             if _ipm(rows4, *k.split(" "), "dsp") is not None and v]
    if saves:
        bars.append(f"- **dsp vs CMSIS-NN** (the same integers): dsp needs "
                    f"{_range([100 * s for s in saves], '{:.0f}')} % fewer instructions on every "
                    "forward layer measured"
                    + ("." if cm.get("measured") == rec["measured"] else
                       f" (this run's dsp column against the CMSIS-NN column of "
                       f"{cm['measured']}).")
                    )
    return "\n".join(text + bars) + "\n\n" + _stamp(rec)


# ---------------------------------------------------------------------------- planner

PLAN_BUDGET, PLAN_RESERVE = 256 * 1024, 8192


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


def render_planner(rec: dict) -> str:
    d = rec["data"]
    kib = PLAN_BUDGET

    def pct(v: float) -> str:
        return "0 %" if v == 0 else f"{v:,.1f} %"

    def ins(v: float | None) -> str:
        return "" if v is None else f"{v:,.0f}"

    m0, m1, m2 = d["measured"]
    p = d["plans"]
    sq, ra, op = p["sqrt-n"], p["recompute-all"], p["optimal"]
    e = d["engine_without_schedule"]
    fits = "" if sq["peak"] <= d["budget"] else f" (does not fit {d['budget']:,})"
    rows = [
        "| plan | arena peak B | × 256 KiB | extra MACs | measured on QEMU M4 | insn / sample |",
        "|---|---|---|---|---|---|",
        f"| engine without a schedule (every activation and gradient, as AIfES keeps them) | "
        f"**{e:,}** | **{e / kib:.2f}** | 0 % | (test below) | |",
        f"| store-all plan, int32 sums | {m0['planned_peak']:,} | {m0['planned_peak'] / kib:.2f} "
        f"| {pct(m0['extra_macs_pct'])} | {m0['measured_peak']:,} | "
        f"{ins(m0['insn_per_sample'])} |",
        f"| store-all plan, every eligible step compact | {m1['planned_peak']:,} | "
        f"{m1['planned_peak'] / kib:.2f} | {pct(m1['extra_macs_pct'])} | "
        f"{m1['measured_peak']:,} | {ins(m1['insn_per_sample'])} |",
        f"| Chen's √n | {sq['peak']:,} | {sq['peak'] / kib:.2f}{fits} | {pct(sq['extra_pct'])} "
        "| | |",
        f"| recompute-all (the smallest feasible budget) | {ra['peak']:,} | "
        f"{ra['peak'] / kib:.2f} | {pct(ra['extra_pct'])} | | |",
        f"| **optimal in {d['budget']:,} B** | **{op['peak']:,}** (static {op['static']:,} + "
        f"region {op['region']:,}) | **{op['peak'] / kib:.2f}** | **{pct(op['extra_pct'])}** | "
        f"{m2['measured_peak']:,} | {ins(m2['insn_per_sample'])} |",
    ]
    equal = all(m["measured_peak"] == m["planned_peak"] for m in d["measured"])
    text = ("The measured arena high-water mark equals the planned peak to the byte for all "
            "three plans. " if equal else "The measured arena high-water mark DIFFERS from "
            "the planned peak. ")
    if all(m["insn_per_sample"] for m in d["measured"]):
        a, c, o = m0["insn_per_sample"], m1["insn_per_sample"], m2["insn_per_sample"]
        text += ("\"insn / sample\" is a whole fused training step (forward, loss, backward, "
                 f"update) under `-icount`: the optimal plan costs {100 * (o / a - 1):+.1f} % "
                 f"instructions over the store-all plan with int32 sums for "
                 f"+{op['extra_pct']:.1f} % forward MACs; compacting every eligible step of "
                 f"the store-all plan costs {100 * (c / a - 1):+.1f} % "
                 "(so the planner compacts only where the region needs it, "
                 f"{m2['compact_steps']} steps here).")
    r = d.get("runner")
    if r:
        own = r["data"] + r["bss"]
        text += (f" With the runner's own {own:,} B (.data {r['data']:,} B + .bss {r['bss']:,} "
                 f"B without `arena_mem`, `{r['elf']}`) the optimal plan needs "
                 f"{op['peak'] + own:,} B of {kib:,} B.")
    return "\n".join(rows) + "\n\n" + text + "\n\n" + _stamp(rec)


# ---------------------------------------------------------------------------- Zephyr

ZEPHYR_BOARDS = {"qemu_cortex_m3": "256 KB flash, 64 KB SRAM", "mps2/an385": "4 MB, 4 MB",
                 "nucleo_f429zi": "2 MB, 192 KB", "mimxrt1060_evk": "8 MB QSPI, 1 MB",
                 "nrf52840dk/nrf52840": "1 MB, 256 KB"}


def _measure_zephyr() -> dict:
    """The session app built for every board in a Zephyr v3.7.1 workspace ($ZEPHYR_BASE):
    sizes from the ELF (kilolearn footprint = arm-none-eabi-size) and Zephyr's own
    rom_report / ram_report."""
    zb = os.environ.get("ZEPHYR_BASE")
    if not zb:
        raise Skipped("ZEPHYR_BASE is not set (it needs a Zephyr v3.7.1 workspace, "
                      "docs/zephyr.md); the recorded figures are kept")
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
        for b in ZEPHYR_BOARDS:
            out = Path(tmp) / b.replace("/", "_")
            _run_timed(["west", "build", "-p", "always", "-b", b, str(root / "app"), "-d",
                        str(out), "--", *extra], ws, dict(os.environ), f"build {b}")
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


def render_zephyr(rec: dict) -> str:
    d = rec["data"]
    parts = [f"*{rec.get('note') or 'Measured in a Zephyr v3.7.1 workspace.'} Rerun there, "
             "with `ZEPHYR_BASE` set: `kilolearn docs --measure zephyr-footprint` (without it "
             "the command keeps these figures).*"]
    for m in d["measurements"]:
        reports = any("rom_report" in v for v in m["boards"].values())
        hdr = "| board | text | data | bss | ROM = text + data | RAM = data + bss |"
        sep = "|---|---|---|---|---|---|"
        if reports:
            hdr += " rom_report | ram_report |"
            sep += "---|---|"
        hdr += " of the board's |"
        sep += "---|"
        rows = [hdr, sep]
        for b, v in m["boards"].items():
            row = (f"| {b} | {v['text']:,} | {v['data']:,} | {v['bss']:,} | "
                   f"{v['text'] + v['data']:,} | {v['data'] + v['bss']:,} |")
            if reports:
                row += (f" {v['rom_report']:,} | {v['ram_report']:,} |" if "rom_report" in v
                        else " | |")
            rows.append(row + f" {d['boards'].get(b, '')} |")
        parts.append(f"{m['what']} (measured {m['measured']}):\n\n" + "\n".join(rows))
        k = m.get("kernels")
        if k:
            parts.append(f"On {k['board']} the kernels are {k['bytes']:,} B of the ROM ("
                         + ", ".join(f"{n} {v:,} B" for n, v in k["parts"].items()) + ").")
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------- the registry

TRAIN_CMD = f"kilolearn train --board {BOARD} --dtype both --epochs 20"
SESSION_CMD = "kilolearn session"

FIGURES: dict[str, Figure] = {f.name: f for f in [
    Figure("quickstart", "time ./run.sh main; time (python3 -m venv V && "
           "V/bin/pip install -e '.[test,plot]')", render_quickstart, _measure_quickstart,
           where="README.md"),
    Figure("session-digits", SESSION_CMD, render_session_digits,
           lambda: _measure_session(BOARD, "digits", _doc_path("docs/session-digits.png")),
           where="README.md"),
    Figure("session-fashion", "kilolearn session --board host --data fashion",
           render_session_fashion, lambda: _measure_session("host", "fashion"),
           where="README.md"),
    Figure("train-mlp", TRAIN_CMD, render_train_mlp, lambda: _measure_train("mlp", 20),
           where="README.md"),
    Figure("bench-m3", "kilolearn bench --boards mps2-an385", render_bench_m3,
           lambda: _measure_train("mlp", 20, "mps2-an385", with_reference=False),
           where="README.md"),
    Figure("train-cnn", f"kilolearn train --board {BOARD} --model cnn --epochs 10",
           render_train_cnn, lambda: _measure_train("cnn", 10), where="README.md"),
    Figure("int8-accuracy", TRAIN_CMD, render_int8_accuracy, source="train-mlp",
           where="docs/int8-training.md"),
    Figure("kernels", "kilolearn bench-kernels --boards mps2-an386 mps2-an500",
           render_kernels, _measure_kernels, where="docs/kernels.md"),
    Figure("planner-mobilenet", "kilolearn plan --budget 256K --reserve 8192 --model "
           "mobilenet_v1 --alpha 0.1 --input 128 --measure mps2-an386", render_planner,
           _measure_planner, where="docs/planner.md"),
    Figure("sparse-bench", "kilolearn sparse-bench", render_sparse, _measure_sparse,
           where="docs/selective-updates.md"),
    Figure("sparse-bench-traffic", "kilolearn sparse-bench", render_sparse_traffic,
           source="sparse-bench", where="docs/selective-updates.md"),
    Figure("zephyr-footprint", "west build -b BOARD app for each board; kilolearn footprint "
           "and west build -t rom_report / ram_report on its zephyr.elf", render_zephyr,
           _measure_zephyr, where="docs/zephyr.md"),
]}
NAMES = list(FIGURES)

_ROOT: list[Path] = []  # the checkout being rewritten (set by main; measure writes there)


def _doc_path(rel: str) -> Path:
    from ..device import build

    return (_ROOT[0] if _ROOT else build.repo_root()) / rel


# ---------------------------------------------------------------------------- blocks


@dataclass
class Block:
    path: Path
    line: int  # of the start marker, 1-based
    name: str
    start: int  # offset of the text after the start marker's line
    end: int  # offset of the end marker


def doc_files(root: Path) -> list[Path]:
    """README.md and docs/*.md: where figure blocks may be."""
    return [p for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))]
            if p.is_file()]


def blocks(text: str, path: Path, known: dict[str, Figure] | None = None) -> list[Block]:
    """The figure blocks of one file; FigureError for a malformed or unknown marker."""
    known = FIGURES if known is None else known
    out: list[Block] = []
    cur: Block | None = None
    off = 0
    for i, line in enumerate(text.splitlines(keepends=True), 1):
        s = line.rstrip("\n")
        where = f"{path}:{i}"
        if s.startswith("<!-- figure:"):
            m = START.match(s)
            if m is None or m["name"] != m["again"]:
                raise FigureError(f"{where}: malformed marker {s!r} (expected "
                                  "'<!-- figure: NAME (rerun: kilolearn docs --measure NAME) -->')")
            if m["name"] not in known:
                raise FigureError(f"{where}: unknown figure {m['name']!r} (known: "
                                  f"{', '.join(known)})")
            if cur is not None:
                raise FigureError(f"{where}: figure {m['name']!r} starts inside "
                                  f"{cur.name!r} (line {cur.line})")
            cur = Block(path, i, m["name"], off + len(line), -1)
        elif s == END:
            if cur is None:
                raise FigureError(f"{where}: {END} without a figure")
            cur.end = off
            out.append(cur)
            cur = None
        off += len(line)
    if cur is not None:
        raise FigureError(f"{path}:{cur.line}: figure {cur.name!r} has no {END}")
    return out


def load(root: Path, fig: Figure) -> dict:
    p = root / FIGURES_DIR / f"{fig.data_name}.json"
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise FigureError(f"{p.relative_to(root)} missing: run kilolearn docs --measure "
                          f"{fig.data_name}") from None
    except ValueError as e:
        raise FigureError(f"{p.relative_to(root)}: not JSON ({e})") from None


WIDTH = 100
_NOT_AT_LINE_START = re.compile(r"^([-+*>#|]|\d+[.)])( |$)")


def wrap(text: str, width: int = WIDTH) -> str:
    """Prose lines folded at ``width`` as the docs are (a bullet's continuation indented);
    code fences and table rows are left alone, and no line is made to start with what
    markdown would read as a list, quote, heading or table."""
    import textwrap

    out: list[str] = []
    fence = False
    text = text.replace(" %", "\0%")  # a number keeps its per cent sign
    for line in text.split("\n"):
        if line.startswith("```"):
            fence = not fence
        if fence or line.startswith(("```", "|")) or len(line) <= width:
            out.append(line)
            continue
        ind = "  " if line.startswith("- ") else ""
        parts = textwrap.wrap(line, width, subsequent_indent=ind, break_long_words=False,
                              break_on_hyphens=False)
        merged = [parts[0]]
        for p in parts[1:]:
            if _NOT_AT_LINE_START.match(p[len(ind):]):
                merged[-1] += " " + p[len(ind):]
            else:
                merged.append(p)
        out += merged
    return "\n".join(out).replace("\0", " ")


def body(fig: Figure, rec: dict) -> str:
    """The exact text between a block's marker lines: the figure's render, wrapped."""
    return "\n" + wrap(fig.render(rec).strip("\n")) + "\n\n"


def sync(root: Path, write: bool) -> tuple[list[str], int]:
    """Every block against its JSON: the ones that differ (one line each) and the number of
    blocks; with ``write`` the differing blocks are rewritten."""
    diffs, n = [], 0
    cache: dict[str, dict] = {}
    for path in doc_files(root):
        text = path.read_text()
        new, last = [], 0
        for b in blocks(text, path.relative_to(root)):
            n += 1
            fig = FIGURES[b.name]
            if fig.data_name not in cache:
                try:
                    cache[fig.data_name] = load(root, fig)
                except FigureError as e:  # no JSON yet: reported, the block left as it is
                    cache[fig.data_name] = {"missing": str(e)}
            if "missing" in cache[fig.data_name]:
                diffs.append(f"{b.path}:{b.line}: figure {b.name}: "
                             f"{cache[fig.data_name]['missing']}")
                continue
            want = body(fig, cache[fig.data_name])
            if text[b.start:b.end] != want:
                diffs.append(f"{b.path}:{b.line}: figure {b.name} differs from "
                             f"{FIGURES_DIR}/{fig.data_name}.json")
            new += [text[last:b.start], want]
            last = b.end
        new.append(text[last:])
        if write and "".join(new) != text:
            path.write_text("".join(new))
    return diffs, n


def measure(root: Path, name: str) -> Path:
    """Run one figure's measurement and write its JSON; Skipped if it cannot run here."""
    fig = FIGURES[FIGURES[name].data_name]
    if fig.measure is None:
        raise FigureError(f"figure {name} has nothing to measure")
    _ROOT[:] = [root]
    data = fig.measure()
    rec = {"figure": fig.name, "command": fig.command, "measured": today(), "data": data}
    p = root / FIGURES_DIR / f"{fig.name}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(rec, indent=1, ensure_ascii=False) + "\n")
    return p


# ---------------------------------------------------------------------------- command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cliargs import InDir

    p.add_argument("--measure", nargs="+", choices=["all", *NAMES], metavar="NAME",
                   help="rerun these figures (all: every one) and write their JSON first: "
                   + ", ".join(NAMES))
    p.add_argument("--check", action="store_true",
                   help="write nothing; list the blocks that differ from their JSON (exit 1)")
    p.add_argument("--root", type=InDir(), default=None,
                   help="the checkout holding README.md, docs/ and docs/figures/ (default: "
                   "this package's)")


def run(a: argparse.Namespace) -> int:
    from ..cliargs import UsageError
    from ..device import build

    if a.check and a.measure:
        raise UsageError("--check writes nothing: leave out --measure")
    root = Path(a.root).resolve() if a.root else build.repo_root()
    try:  # markers first: a bad one stops the command before any measurement
        for path in doc_files(root):
            blocks(path.read_text(), path.relative_to(root))
        if a.check:
            diffs, n = sync(root, write=False)
    except FigureError as e:
        raise UsageError(str(e)) from None
    if a.check:
        for d in diffs:
            print(d)
        if not diffs:
            print(f"all {n} figure blocks equal their JSON")
        return 1 if diffs else 0
    if a.measure:
        names = NAMES if "all" in a.measure else a.measure
        todo = list(dict.fromkeys(FIGURES[n].data_name for n in names))
        for n in todo:
            print(f"measuring {n}: {FIGURES[n].command}", flush=True)
            t0 = time.monotonic()
            try:
                p = measure(root, n)
            except Skipped as e:
                print(f"kilolearn docs: {n} skipped: {e}")
                continue
            print(f"  wrote {p.relative_to(root)} ({time.monotonic() - t0:.0f} s)", flush=True)
    try:
        diffs, n = sync(root, write=True)
    except FigureError as e:
        raise UsageError(str(e)) from None
    missing = [d for d in diffs if " missing: " in d]
    done = [d.split(": figure ")[1].split(" ")[0] for d in diffs if d not in missing]
    print(f"{len(done)} of {n} figure blocks rewritten" + (": " + ", ".join(done) if done else ""))
    for d in missing:
        print(d)
    return 1 if missing else 0
