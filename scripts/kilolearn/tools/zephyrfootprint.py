"""The figure ``footprint-zephyr`` (docs/footprint.md): `kilolearn footprint` on Zephyr ELFs.

The session app (app/) built with ``west build`` for three boards in the Zephyr workspace of
$ZEPHYR_BASE. For each ELF: ``kilolearn footprint --json`` (the board taken from the build, no
``--board``) against ``arm-none-eabi-size`` (text, data, bss), its RAM cross-check (the bytes the
PT_LOAD segments take in the board's RAM regions) against the linker's own figure
(``--print-memory-usage`` of the same link, summed over its RAM regions), the board it read from
the build against ``CONFIG_SRAM_SIZE``/``CONFIG_FLASH_SIZE``, Zephyr's ``ram_report`` and
``rom_report`` totals, and the wall time of ``kilolearn footprint`` (a new process, as a user
runs it) against ``west build -t ram_report`` and ``-t rom_report`` on the same build, the median
of ``RUNS`` runs each. Without a workspace the recorded figures are kept (Skipped).
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BOARDS = ("qemu_cortex_m3", "mps2/an521/cpu0", "nucleo_f429zi")
RUNS = 5
NOT_RAM = ("FLASH", "IDT_LIST", "ROM", "ITCM")  # the linker's other regions are RAM
UNITS = {"B": 1, "KB": 1024, "MB": 1 << 20, "GB": 1 << 30}


def linker_ram(stdout: str) -> dict[str, int]:
    """Bytes used per RAM region (RAM, SRAM*, CCM, DTCM, ...: every region but flash and the
    like) from the linker's --print-memory-usage table in a build's output."""
    used: dict[str, int] = {}
    for name, n, unit in re.findall(r"^\s*(\w+):\s+(\d+) (B|KB|MB|GB)\s", stdout, re.M):
        if not any(k in name.upper() for k in NOT_RAM):
            used[name] = used.get(name, 0) + int(n) * UNITS[unit]
    return used


def size_berkeley(elf: Path) -> dict[str, int]:
    """text, data, bss as arm-none-eabi-size prints them."""
    out = subprocess.run(["arm-none-eabi-size", str(elf)], capture_output=True, text=True,
                         check=True).stdout.splitlines()[-1].split()
    return {"text": int(out[0]), "data": int(out[1]), "bss": int(out[2])}


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _timed(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + sys of the command and every process it waited for)
    and the stdout of one command."""
    c0, t0 = _cpu(), time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=900, check=False)
    dt, dc = time.perf_counter() - t0, _cpu() - c0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: "
                           f"{(p.stderr or p.stdout).strip()[-300:]}")
    return dt, dc, p.stdout


def _config(build: Path) -> dict[str, str]:
    text = (build / "zephyr" / ".config").read_text(errors="replace")
    return {k: v.strip('"') for k, v in re.findall(r"^(CONFIG_\w+)=(.*)$", text, re.M)}


def measure_board(board: str, build: Path, ws: Path, root: Path, runs: int = RUNS) -> dict:
    """Build the app for ``board`` into ``build`` and measure it (see the module's doc)."""
    _, _, stdout = _timed(["west", "build", "-p", "always", "-b", board, "-d", str(build),
                        str(root / "app"), "--", f"-DZEPHYR_EXTRA_MODULES={root}"], ws)
    elf = build / "zephyr" / "zephyr.elf"
    fp_cmd = [sys.executable, "-m", "kilolearn.cli", "footprint", str(elf), "--json"]
    times: dict[str, list[float]] = {"footprint": [], "ram_report": [], "rom_report": []}
    cpu: dict[str, list[float]] = {k: [] for k in times}
    doc: dict = {}
    for _ in range(runs):
        dt, dc, out = _timed(fp_cmd, ws)
        times["footprint"].append(dt)
        cpu["footprint"].append(dc)
        doc = json.loads(out)
        for t in ("ram_report", "rom_report"):
            dt, dc, _ = _timed(["west", "build", "-d", str(build), "-t", t], ws)
            times[t].append(dt)
            cpu[t].append(dc)
    reports = {t: int(json.loads((build / f"{t[:3]}.json").read_text())["symbols"]["size"])
               for t in ("ram_report", "rom_report")}
    cfg = _config(build)
    regions = linker_ram(stdout)
    return {
        "board": board,
        "footprint": {k: doc["totals"][k] for k in ("text", "data", "bss", "rom", "ram")},
        "size": size_berkeley(elf),
        "segments_ram": doc["segments"]["ram"], "ram_in_regions": doc["ram_in_regions"],
        "linker_ram": sum(regions.values()), "linker_regions": regions,
        "board_from_build": doc["board"],
        "capacity": doc["capacity"],
        "config": {"CONFIG_BOARD_TARGET": cfg.get("CONFIG_BOARD_TARGET", cfg.get("CONFIG_BOARD")),
                   "CONFIG_SRAM_SIZE": int(cfg["CONFIG_SRAM_SIZE"]) * 1024,
                   "CONFIG_FLASH_SIZE": int(cfg["CONFIG_FLASH_SIZE"]) * 1024},
        **reports,
        "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "median_s": {k: round(statistics.median(v), 3) for k, v in times.items()},
        "cpu_s": {k: [round(x, 3) for x in v] for k, v in cpu.items()},
        "median_cpu_s": {k: round(statistics.median(v), 3) for k, v in cpu.items()},
        "load_average": round(os.getloadavg()[0], 1),
    }


def measure_figure() -> dict:
    from ..device import build as kb
    from .docfigs_measure import Skipped, zephyr_base
    from .zephyrpaged import zephyr_version

    zb = Path(zephyr_base())
    for tool in ("west", "arm-none-eabi-size"):
        if shutil.which(tool) is None:
            raise Skipped(f"{tool} is not installed")
    root = kb.repo_root()
    rows = []
    with tempfile.TemporaryDirectory(prefix="kilolearn-footprint-zephyr-") as tmp:
        for b in BOARDS:
            print(f"  {b}: west build, then {RUNS} x (kilolearn footprint, ram_report, "
                  "rom_report)", flush=True)
            rows.append(measure_board(b, Path(tmp) / b.replace("/", "_"), zb.parent, root))
    return {"zephyr": zephyr_version(zb), "runs": RUNS, "boards": rows}


def _kb(n: int) -> str:
    return f"{n // 1024:,} KB" if n % 1024 == 0 else f"{n:,} B"


def render(rec: dict) -> str:
    d = rec["data"]
    lines = [
        f"*Measured {rec['measured']} in a Zephyr v{d['zephyr']} workspace: `{rec['command']}`. "
        "Rerun there, with `ZEPHYR_BASE` set: `kilolearn docs --measure footprint-zephyr` "
        "(without it the command keeps these figures).*", "",
        "| board | text / data / bss: `kilolearn footprint` | `arm-none-eabi-size` | RAM "
        "cross-check: PT_LOAD in RAM / the linker's | board from the build (RAM, flash) | "
        "`CONFIG_SRAM_SIZE`, `CONFIG_FLASH_SIZE` | ram_report, rom_report |",
        "|---|---|---|---|---|---|---|"]
    for r in d["boards"]:
        f, s, c = r["footprint"], r["size"], r["config"]
        lines.append(
            f"| {r['board']} | {f['text']:,} / {f['data']:,} / {f['bss']:,} | "
            f"{s['text']:,} / {s['data']:,} / {s['bss']:,} | {r['segments_ram']:,} / "
            f"{r['linker_ram']:,} ({', '.join(r['linker_regions'])}) | {r['board_from_build']} "
            f"({_kb(r['capacity']['ram'])}, {_kb(r['capacity']['flash'])}) | "
            f"{_kb(c['CONFIG_SRAM_SIZE'])}, {_kb(c['CONFIG_FLASH_SIZE'])} | "
            f"{r['ram_report']:,}, {r['rom_report']:,} |")
    lines += ["", f"Time on the same build, median of {d['runs']} runs: `kilolearn footprint ELF "
              "--json` (a new Python process) against `west build -d BUILD -t ram_report` and "
              "`-t rom_report` (each includes west's start and ninja's dependency check). "
              "Wall-clock seconds on this machine (2 cores shared with other jobs: load average "
              "at the end of each board's runs in the last column), and CPU seconds (user + sys "
              "of the command and the processes it waited for), which the load disturbs less:",
              "", "| board | kilolearn footprint | ram_report | rom_report | load |",
              "|---|---|---|---|---|"]
    for r in d["boards"]:
        m, c = r["median_s"], r["median_cpu_s"]
        lines.append(" | ".join([f"| {r['board']}", *(
            f"{m[k]:.2f} s wall, {c[k]:.2f} s CPU" for k in ("footprint", "ram_report",
                                                            "rom_report")),
            f"{r['load_average']} |"]))
    return "\n".join(lines)
