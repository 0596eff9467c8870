"""The figure ``zephyr-boards`` (docs/zephyr.md): the board sweep, on Zephyr 3.7 LTS and 4.x.

One twister run, build only, in the Zephyr workspace of $ZEPHYR_BASE: scenario
``kilolearn.app.sweep`` (app/sample.yaml: the session app without a board overlay) and
``kilolearn.engine.sweep`` (tests/zephyr/engine: the engine ztest suite, default kernel choice)
on every board of their ``platform_allow`` list (names Zephyr 3.7 and 4.x share) plus the
boards whose name differs between the two lines (``RENAMED``: the Cortex-M55 board, given with
``--force-platform``, since a 4.x twister refuses a ``platform_allow`` name it does not know).
Read back from each build: the core, the SoC, the board's memories from its devicetree
(``kilolearn footprint --board BUILD_DIR``), ROM and RAM (``kilolearn footprint``: text + data;
RAM by address = the linker's figure), the arena and replay room Kconfig gave the app for that
RAM, and where its weight store is.

The record holds one entry per Zephyr version (``3.7.1``, ``4.3.0``): a run in one workspace
replaces that version's entry and keeps the others. ``$KILOLEARN_TWISTER_ARGS`` (split as a
shell would) is appended to the twister command (a non-pristine tree's extra ``-x`` options);
it is recorded with its paths elided. ``$KILOLEARN_ZEPHYR_BOARDS_OUT`` names a directory that
keeps twister's output; if it already holds a finished run (``twister.json`` and
``twister.log``), that run is read back instead of building the 50 configurations again.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import tempfile
from pathlib import Path

SCENARIOS = ("kilolearn.app.sweep", "kilolearn.engine.sweep")
SUITES = ("app", "tests/zephyr/engine")
# boards named differently on the two lines: Zephyr 3.7 name -> 4.x name (4.x names every SoC)
RENAMED = {"mps3/an547": "mps3/corstone300/an547"}
CORES = (("CORTEX_M0PLUS", "Cortex-M0+"), ("CORTEX_M0", "Cortex-M0"), ("CORTEX_M33", "Cortex-M33"),
         ("CORTEX_M55", "Cortex-M55"), ("CORTEX_M3", "Cortex-M3"), ("CORTEX_M4", "Cortex-M4"),
         ("CORTEX_M7", "Cortex-M7"))
NAME = "zephyr-boards"
BUILT = ("passed", "not run")


def platforms(root: Path, version: str = "3.7.1") -> list[tuple[str, str]]:
    """The sweep's boards as (key, name on this Zephyr line): the app scenario's platform_allow
    list, then the renamed boards (key: the 3.7 name)."""
    import yaml

    doc = yaml.safe_load((root / "app" / "sample.yaml").read_text())
    common = [(p, p) for p in doc["tests"][SCENARIOS[0]]["platform_allow"]]
    major = int(version.split(".")[0]) if version[:1].isdigit() else 3
    return common + [(k, k if major < 4 else v) for k, v in RENAMED.items()]


def _config(build: Path) -> dict[str, str]:
    text = (build / "zephyr" / ".config").read_text(errors="replace")
    return {k: v.strip('"') for k, v in re.findall(r"^(CONFIG_\w+)=(.*)$", text, re.M)}


def core(cfg: dict[str, str]) -> str:
    name = next((n for key, n in CORES if cfg.get(f"CONFIG_CPU_{key}") == "y"), "?")
    if cfg.get("CONFIG_FPU") == "y" or cfg.get("CONFIG_CPU_HAS_FPU") == "y":
        name += "F"
    return name


def store(build: Path, cfg: dict[str, str]) -> str:
    """Where the app keeps its weights (app/src/store.c's choice)."""
    if cfg.get("CONFIG_KILOLEARN_APP_FLASH_STORE") != "y":
        return "RAM"
    dt = (build / "zephyr" / "include" / "generated" / "zephyr" /
          "devicetree_generated.h").read_text(errors="replace")
    for label in ("kilolearn_weights", "storage_partition"):
        if f"#define DT_N_NODELABEL_{label} " in dt:
            return label
    return "RAM"


def full_name(name: str, reported: set[str]) -> str:
    """The platform's name as twister reports it: 4.x qualifies a board's default SoC and
    variant (``qemu_cortex_m3`` is ``qemu_cortex_m3/ti_lm3s6965``); 3.7 keeps the name."""
    if name in reported:
        return name
    found = sorted(p for p in reported if p.startswith(name + "/"))
    return found[0] if found else name


def _build_dir(out: Path, platform: str, scenario: str) -> Path:
    found = [p for p in (out / platform.replace("/", "_")).glob(f"**/{scenario}")
             if (p / "zephyr" / "zephyr.elf").is_file()]
    if not found:
        raise RuntimeError(f"no {scenario} build for {platform} in {out}")
    return found[0]


def _row(build: Path) -> dict:
    from .. import footprint as fp

    b = fp.find_board(str(build))
    r = fp.analyze(str(build / "zephyr" / "zephyr.elf"), regions=b.regions)
    cfg = _config(build)
    return {"rom": r.totals.rom, "ram": r.segments_ram, "size_ram": r.totals.ram,
            "board_ram": b.ram, "board_flash": b.flash,
            "other_ram": sum(x.size for x in b.regions if x.kind == "ram") - b.ram,
            "core": core(cfg), "soc": cfg.get("CONFIG_SOC", "?"),
            "arena": int(cfg.get("CONFIG_KILOLEARN_ARENA_SIZE", 0)),
            "replay": int(cfg.get("CONFIG_KILOLEARN_REPLAY_SIZE", 0)), "store": store(build, cfg)}


def elide_paths(args: list[str]) -> str:
    """The extra twister arguments as recorded: every absolute path shown as <path>."""
    return " ".join(re.sub(r"/[^\s;\"']+", "<path>", a) for a in args)


SUMMARY = ("test configurations passed", "test cases were executed",
           "executed test configurations passed", "executed test cases passed",
           "test configurations were only built")


def summary_lines(log: str) -> list[str]:
    """Twister's summary lines from its log (twister.log or its stdout), colours removed."""
    out = []
    for ln in re.sub(r"\x1b\[[0-9;]*m", "", log).splitlines():
        if any(s in ln for s in SUMMARY):
            out.append(re.sub(r"^.*?\bINFO\s+- ", "", ln).strip())
    return out


def read_run(out: Path, boards: list[tuple[str, str]]) -> tuple[list[str], list[dict]]:
    """A finished sweep's summary lines and its rows, from twister's output directory."""
    report = json.loads((out / "twister.json").read_text())
    suites = report["testsuites"]
    reported = {s["platform"] for s in suites}
    status = {(s["platform"], s["name"].rsplit("/", 1)[-1]): s["status"] for s in suites}
    rows = []
    for key, name in boards:
        plat = full_name(name, reported)
        app = _row(_build_dir(out, plat, SCENARIOS[0]))
        eng = _row(_build_dir(out, plat, SCENARIOS[1]))
        rows.append({"board": key, "name": name, "platform": plat, **app,
                     "engine_rom": eng["rom"], "engine_ram": eng["ram"],
                     "status": [status.get((plat, s), "missing") for s in SCENARIOS]})
    return summary_lines((out / "twister.log").read_text(errors="replace")), rows


def _previous_versions() -> dict[str, dict]:
    from .docfigs import FIGURES_DIR, _doc_path

    try:
        rec = json.loads(_doc_path(f"{FIGURES_DIR}/{NAME}.json").read_text())
    except (OSError, ValueError):
        return {}
    return dict(rec.get("data", {}).get("versions", {}))


def measure_figure() -> dict:
    """The sweep in $ZEPHYR_BASE's workspace, as that version's entry beside the others kept;
    Skipped without a workspace (the record is kept)."""
    from ..device import build as kb
    from .docfigs_measure import Skipped, today, zephyr_base
    from .zephyrpaged import _twister_python, run_twister, zephyr_version

    zb = Path(zephyr_base())
    if shutil.which("west") is None:
        raise Skipped("west is not installed")
    py = _twister_python(zb / "scripts" / "twister")
    if py is None:
        raise Skipped("no Python starts twister (set TWISTER_PYTHON)")
    version = zephyr_version(zb)
    root = kb.repo_root()
    boards = platforms(root, version)
    extra = shlex.split(os.environ.get("KILOLEARN_TWISTER_ARGS", ""))
    keep = os.environ.get("KILOLEARN_ZEPHYR_BOARDS_OUT")
    with tempfile.TemporaryDirectory(prefix="kilolearn-zephyr-boards-") as tmp:
        out = Path(keep) if keep else Path(tmp) / "twister-out"
        cmd = [py, str(zb / "scripts" / "twister"), "--build-only", "-O", str(out), "-j", "2",
               "--inline-logs", "-x", f"ZEPHYR_EXTRA_MODULES={root}", "--force-platform",
               *extra]
        for s in SUITES:
            cmd += ["-T", str(root / s)]
        for s in SCENARIOS:
            cmd += ["-s", s]
        for _, p in boards:
            cmd += ["-p", p]
        wall = None
        if not ((out / "twister.json").is_file() and (out / "twister.log").is_file()):
            # 50 builds: about an hour on a shared 2-core machine
            _, wall = run_twister(cmd, cwd=zb.parent, timeout=6 * 3600)
        else:
            print(f"  reading the finished sweep in {out}", flush=True)
        summary, rows = read_run(out, boards)
    # a build-only configuration that built: 'passed' on 3.7, 'not run' (built) on 4.x
    if not summary or any(s not in BUILT for r in rows for s in r["status"]):
        raise RuntimeError(f"sweep on Zephyr {version}: not every build passed: {summary}")
    entry = {"zephyr": version, "measured": today(), "twister": summary, "boards": rows,
             "command": " ".join(["twister", "--build-only", *[f"-T {s}" for s in SUITES],
                                  *[f"-s {s}" for s in SCENARIOS], "--force-platform",
                                  "-p BOARD ..."] + ([elide_paths(extra)] if extra else []))}
    if wall is not None:
        entry["wall_s"] = round(wall)
    versions = _previous_versions()
    versions[version] = entry
    return {"versions": dict(sorted(versions.items(), key=lambda kv: _vkey(kv[0])))}


def _vkey(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".") if x.isdigit())


def _kb(n: int) -> str:
    return f"{n / 1024:,.0f} KB" if n % 1024 == 0 or n >= 10 * 1024 else f"{n:,} B"


def _same(rows: list[tuple[str, dict]], key: str) -> str:
    """One value, or the first version's with the others' where they differ."""
    first = str(rows[0][1][key])
    return first + "".join(f" (v{v}: {r[key]})" for v, r in rows[1:] if str(r[key]) != first)


def render(rec: dict) -> str:
    vs = rec["data"]["versions"]
    names = list(vs)
    by = {v: {r["board"]: r for r in vs[v]["boards"]} for v in names}
    keys = list(dict.fromkeys(k for v in names for k in by[v]))
    first = [next(by[v][k] for v in names if k in by[v]) for k in keys]
    cores = sorted({r["core"].rstrip("F") for r in first})
    runs = "; ".join(
        f"v{v} measured {vs[v]['measured']}"
        + (f" (wall {vs[v]['wall_s']:,} s)" if "wall_s" in vs[v] else "") for v in names)
    lines = [f"*Build only, one twister run per Zephyr version ({runs}; commands below). Rerun "
             "in a "
             "workspace, with `ZEPHYR_BASE` set: `kilolearn docs --measure "
             "zephyr-boards` (it replaces that version's figures and keeps the others; without "
             "a workspace it keeps them all).*", "",
             f"{len(keys)} boards, {len(cores)} cores ({', '.join(cores)}). ROM = text + data; "
             "RAM = the bytes the ELF's segments take in the board's RAM (the linker's figure); "
             "arena + replay: what the app's Kconfig defaults give for the board's RAM "
             "(app/Kconfig). A board renamed in 4.x is shown with both names.", "",
             "| board | core | SoC | board flash / RAM | arena + replay | weight store | "
             + " | ".join(f"app ROM / RAM v{v} | engine suite ROM / RAM v{v}" for v in names)
             + " |",
             "|---|---|---|---|---|---|" + "---|---|" * len(names)]
    for k in keys:
        vr = [(v, by[v][k]) for v in names if k in by[v]]
        r = vr[0][1]
        board = " / ".join(dict.fromkeys(x["name"] for _, x in vr))
        other = f" + {_kb(r['other_ram'])}" if r["other_ram"] > 0 else ""
        cells = []
        for v in names:
            x = by[v].get(k)
            if x is None:
                cells += ["not built", "not built"]
                continue
            cells += [f"{x['rom']:,} / {x['ram']:,} ({100 * x['ram'] / x['board_ram']:.0f} %)",
                      f"{x['engine_rom']:,} / {x['engine_ram']:,}"]
        lines.append(
            f"| {board} | {_same(vr, 'core')} | {_same(vr, 'soc')} | {_kb(r['board_flash'])} / "
            f"{_kb(r['board_ram'])}{other} | {_kb(r['arena'])} + {_kb(r['replay'])} | "
            f"{_same(vr, 'store')} | {' | '.join(cells)} |")
    for v in names:
        lines += ["", f"Zephyr v{v}: `{vs[v]['command']}`", "", "```", *vs[v]["twister"], "```"]
    return "\n".join(lines)
