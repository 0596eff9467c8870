"""The figure ``zephyr-boards`` (docs/zephyr.md): the board sweep.

One twister run, build only, in the Zephyr workspace of $ZEPHYR_BASE: scenario
``kilolearn.app.sweep`` (app/sample.yaml: the session app without a board overlay) and
``kilolearn.engine.sweep`` (tests/zephyr/engine: the engine ztest suite, default kernel choice)
on every board of their ``platform_allow`` list. Read back from each build: the core, the SoC,
the board's memories from its devicetree (``kilolearn footprint --board BUILD_DIR``), ROM and
RAM (``kilolearn footprint``: text + data; RAM by address = the linker's figure), the arena and
replay room Kconfig gave the app for that RAM, and where its weight store is. Three of the app
builds are also timed: ``kilolearn footprint`` against ``west build -t ram_report``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

SCENARIOS = ("kilolearn.app.sweep", "kilolearn.engine.sweep")
SUITES = ("app", "tests/zephyr/engine")
TIMED = ("qemu_cortex_m3", "nucleo_f429zi", "mps3/an547")
CORES = (("CORTEX_M0PLUS", "Cortex-M0+"), ("CORTEX_M0", "Cortex-M0"), ("CORTEX_M33", "Cortex-M33"),
         ("CORTEX_M55", "Cortex-M55"), ("CORTEX_M3", "Cortex-M3"), ("CORTEX_M4", "Cortex-M4"),
         ("CORTEX_M7", "Cortex-M7"))


def platforms(root: Path) -> list[str]:
    """The sweep's boards: the app scenario's platform_allow list."""
    import yaml

    doc = yaml.safe_load((root / "app" / "sample.yaml").read_text())
    return list(doc["tests"][SCENARIOS[0]]["platform_allow"])


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


def _timed(build: Path, ws: Path) -> dict:
    from .. import footprint as fp

    t0 = time.perf_counter()
    fp.analyze(str(build / "zephyr" / "zephyr.elf"), regions=fp.find_board(str(build)).regions)
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run(["west", "build", "-d", str(build), "-t", "ram_report"], cwd=ws,
                   capture_output=True, check=True, timeout=600)
    theirs = time.perf_counter() - t0
    ram = json.loads((build / "ram.json").read_text())["symbols"]["size"]
    return {"footprint_s": round(ours, 2), "ram_report_s": round(theirs, 2),
            "ram_report": int(ram)}


def measure_figure() -> dict:
    """The sweep in $ZEPHYR_BASE's workspace; Skipped without one (the record is kept)."""
    from ..device import build as kb
    from .docfigs_measure import Skipped, zephyr_base
    from .zephyrpaged import _twister_python, run_twister

    zb = Path(zephyr_base())
    if shutil.which("west") is None:
        raise Skipped("west is not installed")
    py = _twister_python(zb / "scripts" / "twister")
    if py is None:
        raise Skipped("no Python starts twister (set TWISTER_PYTHON)")
    root = kb.repo_root()
    boards = platforms(root)
    with tempfile.TemporaryDirectory(prefix="kilolearn-zephyr-boards-") as tmp:
        out = Path(tmp) / "twister-out"
        cmd = [py, str(zb / "scripts" / "twister"), "--build-only", "-O", str(out), "-j", "2",
               "--inline-logs", "-x", f"ZEPHYR_EXTRA_MODULES={root}"]
        for s in SUITES:
            cmd += ["-T", str(root / s)]
        for s in SCENARIOS:
            cmd += ["-s", s]
        for p in boards:
            cmd += ["-p", p]
        # 50 builds: over an hour on a shared 2-core machine (the first run here timed out)
        summary, wall = run_twister(cmd, cwd=zb.parent, timeout=6 * 3600)
        report = json.loads((out / "twister.json").read_text())
        status = {(s["platform"], s["name"].rsplit("/", 1)[-1]): s["status"]
                  for s in report["testsuites"]}
        rows = []
        for p in boards:
            app = _row(_build_dir(out, p, SCENARIOS[0]))
            eng = _row(_build_dir(out, p, SCENARIOS[1]))
            row = {"board": p, **app, "engine_rom": eng["rom"], "engine_ram": eng["ram"],
                   "status": [status.get((p, s), "missing") for s in SCENARIOS]}
            if p in TIMED:
                row["timing"] = _timed(_build_dir(out, p, SCENARIOS[0]), zb.parent)
            rows.append(row)
    return {"twister": summary, "wall_s": round(wall), "boards": rows,
            "command": " ".join(["twister", "--build-only", *[f"-T {s}" for s in SUITES],
                                 *[f"-s {s}" for s in SCENARIOS], "-p BOARD ..."])}


def _kb(n: int) -> str:
    return f"{n / 1024:,.0f} KB" if n % 1024 == 0 or n >= 10 * 1024 else f"{n:,} B"


def render(rec: dict) -> str:
    d = rec["data"]
    rows = d["boards"]
    cores = sorted({r["core"].rstrip("F") for r in rows})
    lines = [f"*Measured {rec['measured']} in a Zephyr v3.7.1 workspace (wall {d['wall_s']} s, "
             f"build only): `{d['command']}`. Rerun there, with `ZEPHYR_BASE` set: `kilolearn "
             "docs --measure zephyr-boards` (without it the command keeps these figures).*", "",
             f"{len(rows)} boards, {len(cores)} cores ({', '.join(cores)}). ROM = text + data; "
             "RAM = the bytes the ELF's segments take in the board's RAM (the linker's figure); "
             "arena + replay: what the app's Kconfig defaults give for the board's RAM "
             "(app/Kconfig).", "",
             "| board | core | SoC | board flash / RAM | app ROM | app RAM | arena + replay | "
             "weight store | engine suite ROM / RAM | twister |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        other = f" + {_kb(r['other_ram'])}" if r["other_ram"] > 0 else ""
        lines.append(
            f"| {r['board']} | {r['core']} | {r['soc']} | {_kb(r['board_flash'])} / "
            f"{_kb(r['board_ram'])}{other} | {r['rom']:,} | {r['ram']:,} "
            f"({100 * r['ram'] / r['board_ram']:.0f} %) | {_kb(r['arena'])} + "
            f"{_kb(r['replay'])} | {r['store']} | {r['engine_rom']:,} / {r['engine_ram']:,} | "
            f"{' / '.join(r['status'])} |")
    timed = [r for r in rows if "timing" in r]
    if timed:
        lines += ["", "`kilolearn footprint` (the analysis, in process) against `west build -t "
                  "ram_report` (ninja's check included) on the app's ELF: " + "; ".join(
                      f"{r['board']} {r['timing']['footprint_s']:.2f} s vs "
                      f"{r['timing']['ram_report_s']:.2f} s" for r in timed) + "."]
    lines += ["", "twister: " + "; ".join(d["twister"])]
    return "\n".join(lines)
