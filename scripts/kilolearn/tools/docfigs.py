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

The measurements are in docfigs_measure, the renderers in docfigs_render; every name is
re-exported here.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .docfigs_measure import (  # noqa: F401
    BOARD,
    KERNEL_BOARDS,
    PLAN_BUDGET,
    PLAN_RESERVE,
    ZEPHYR_BOARDS,
    Skipped,
    _measure_adapt,
    _measure_kernels,
    _measure_planner,
    _measure_quickstart,
    _measure_session,
    _measure_sparse,
    _measure_train,
    _measure_zephyr,
    _no_nan,
    _plan_d,
    _previous,
    _run_timed,
    _runner_ram,
    today,
)
from .docfigs_render import (  # noqa: F401
    DIRS,
    KERNEL_LABELS,
    _by_dtype,
    _f32_s8,
    _fence,
    _find,
    _insn_per_new,
    _ipm,
    _measured,
    _n,
    _pct,
    _range,
    _runs,
    _stamp,
    render_adapt,
    render_bench_m3,
    render_bench_m55,
    render_int8_accuracy,
    render_kernels,
    render_planner,
    render_quickstart,
    render_session_digits,
    render_session_fashion,
    render_session_tables,
    render_sparse,
    render_sparse_traffic,
    render_train_cnn,
    render_train_mlp,
    render_zephyr,
)

FIGURES_DIR = "docs/figures"
START = re.compile(r"^<!-- figure: (?P<name>\S+) \(rerun: kilolearn docs --measure "
                   r"(?P<again>\S+)\) -->$")
END = "<!-- /figure -->"


class FigureError(ValueError):
    """A marker that is malformed, names no figure, or a figure without its JSON."""


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


# ---------------------------------------------------------------------------- the registry


def module_figure(name: str, command: str, module: str, where: str) -> Figure:
    """A figure measured and rendered by a module of its own (imported when used): its
    ``measure_figure() -> dict`` and ``render(record) -> str``."""
    import importlib

    def mod():  # noqa: ANN202
        return importlib.import_module(module, "kilolearn")

    return Figure(name, command, lambda rec: mod().render(rec), lambda: mod().measure_figure(),
                  where=where)


def _fleet_figure(name: str, render: str, source: str | None = None) -> Figure:
    """A figure of the fleet (kilolearn.fleet.figures; one measurement, three blocks)."""
    from ..fleet import figures as ff

    return Figure(name, ff.COMMAND, lambda rec: getattr(ff, render)(rec),
                  None if source else ff.measure_figure, source=source, where="docs/fleet.md")


TRAIN_CMD = f"kilolearn train --board {BOARD} --dtype both --epochs 20"
SESSION_CMD = "kilolearn session"

FIGURES: dict[str, Figure] = {f.name: f for f in [
    Figure("quickstart", "git clone; time ./run.sh main; time ./run.sh test -q",
           render_quickstart, _measure_quickstart,
           where="README.md"),
    Figure("session-digits", SESSION_CMD, render_session_digits,
           lambda: _measure_session(BOARD, "digits", _doc_path("docs/session-digits.png")),
           where="README.md"),
    Figure("session-fashion", f"kilolearn session --board {BOARD} --data fashion",
           render_session_fashion, lambda: _measure_session(BOARD, "fashion"),
           where="README.md"),
    Figure("cl-fashion", f"kilolearn session --board {BOARD} --data fashion",
           render_session_tables, source="session-fashion",
           where="docs/continual-learning.md"),
    Figure("cl-fashion-first", "kilolearn session --board host --data fashion --pretrain first",
           render_session_tables, lambda: _measure_session("host", "fashion", pretrain="first"),
           where="docs/continual-learning.md"),
    Figure("cl-basicmotions", f"kilolearn session --board {BOARD} --data basicmotions",
           render_session_tables, lambda: _measure_session(BOARD, "basicmotions"),
           where="docs/continual-learning.md"),
    Figure("train-mlp", TRAIN_CMD, render_train_mlp, lambda: _measure_train("mlp", 20),
           where="README.md"),
    Figure("bench-m3", "kilolearn bench --boards mps2-an385", render_bench_m3,
           lambda: _measure_train("mlp", 20, "mps2-an385", with_reference=False),
           where="README.md"),
    Figure("bench-m55", "kilolearn bench --boards mps3-an547", render_bench_m55,
           lambda: _measure_train("mlp", 20, "mps3-an547"), where="docs/kernels.md"),
    Figure("train-cnn", f"kilolearn train --board {BOARD} --model cnn --epochs 10",
           render_train_cnn, lambda: _measure_train("cnn", 10), where="README.md"),
    Figure("int8-accuracy", TRAIN_CMD, render_int8_accuracy, source="train-mlp",
           where="docs/int8-training.md"),
    Figure("kernels", "kilolearn bench-kernels --boards mps2-an386 mps2-an500",
           render_kernels, _measure_kernels, where="docs/kernels.md"),
    module_figure("kernels-mve", "kilolearn bench-kernels --boards mps3-an547",
                  ".bench.kbench", "docs/kernels.md"),
    Figure("planner-mobilenet", "kilolearn plan --budget 256K --reserve 8192 --model "
           "mobilenet_v1 --alpha 0.1 --input 128 --measure mps2-an386", render_planner,
           _measure_planner, where="docs/planner.md"),
    module_figure("planner-f429", "kilolearn plan --budget nucleo_f429zi --reserve 8192 --model "
                  "mobilenet_v1 --alpha 0.1 --input 128 --measure mps2-an386", ".bench.regionbench",
                  "docs/planner.md"),
    Figure("sparse-bench", "kilolearn sparse-bench", render_sparse, _measure_sparse,
           where="docs/selective-updates.md"),
    Figure("sparse-bench-traffic", "kilolearn sparse-bench", render_sparse_traffic,
           source="sparse-bench", where="docs/selective-updates.md"),
    module_figure("partial-bench", "kilolearn partial-bench", ".bench.partialbench",
                  "docs/selective-updates.md"),
    module_figure("paged-bench", "kilolearn paged-bench", ".bench.pagedbench",
                  "docs/paged-weights.md"),
    module_figure("replay-flash", "kilolearn session --board mps2-an386 --strategy replay "
                  "--replay-cap 200 / --replay-in-flash 200 / --replay-in-flash 2000; "
                  "kl_freplay_faults (host ASan, mps2-an386)", ".bench.freplaybench",
                  "docs/replay.md"),
    module_figure("anomaly", "kilolearn anomaly --board mps2-an386", ".device.anomaly",
                  "docs/continual-learning.md"),
    module_figure("optim-bench", "kilolearn optim-bench", ".bench.optimbench",
                  "docs/int8-training.md"),
    module_figure("link-window", "kilolearn link-bench --board host-pty --frames 20000 --parts 10; "
                  "kilolearn link-bench --board mps2-an386 --frames 2000 --parts 10",
                  ".bench.linkbench",
                  "docs/protocol.md"),
    Figure("adapt-shift", "kilolearn example-data / fit / adapt / eval (docs/user-guide.md)",
           render_adapt, _measure_adapt, where="docs/user-guide.md"),
    Figure("zephyr-footprint", "west build -b BOARD app for each board; kilolearn footprint "
           "and west build -t rom_report / ram_report on its zephyr.elf", render_zephyr,
           _measure_zephyr, where="docs/zephyr.md"),
    module_figure("footprint-zephyr", "west build -b BOARD app; kilolearn footprint ELF "
                  "--json; arm-none-eabi-size ELF; west build -t ram_report / rom_report",
                  ".tools.zephyrfootprint", "docs/footprint.md"),
    module_figure("zephyr-window", "twister -T app -p qemu_cortex_m3 -s kilolearn.app.session "
                  "-p nucleo_f429zi -s kilolearn.app.usb_cdc_acm", ".tools.zephyrlink",
                  "docs/protocol.md"),
    module_figure("zephyr-boards", "twister --build-only -T app -T tests/zephyr/engine -s "
                  "kilolearn.app.sweep -s kilolearn.engine.sweep --force-platform -p BOARD ... "
                  "(once per Zephyr version)", ".tools.zephyrboards", "docs/zephyr.md"),
    module_figure("zephyr-paged", "twister -T tests/zephyr/paged -p mps2/an385 (scenario "
                  "kilolearn.paged); the suite's 'KL paged' line", ".tools.zephyrpaged",
                  "docs/zephyr.md"),
    _fleet_figure("fleet", "render"),
    _fleet_figure("fleet-faults", "render_faults", source="fleet"),
    _fleet_figure("fleet-sim", "render_sim", source="fleet"),
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
