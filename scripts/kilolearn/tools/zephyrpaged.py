"""The figure ``zephyr-paged`` (docs/zephyr.md): paged weights under Zephyr.

Twister runs the ztest suite tests/zephyr/paged (scenario ``kilolearn.paged``) on mps2/an385 in
QEMU: an int8 784-512-128-10 MLP whose weights stay in the flash simulator's kilolearn_weights
partition trains in a 20 KB arena, rows written back through the weight log, folds, a remount;
bit for bit the same blob trained in memory. The suite prints its figures in one line,
``KL paged key=value ...``, which this module reads from twister's handler.log.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITE = "tests/zephyr/paged"
SCENARIO = "kilolearn.paged"
PLATFORM = "mps2/an385"
LINE = re.compile(r"^KL paged board=(?P<rest>.*)$", re.M)
SUMMARY = ("test configurations passed", "test cases were executed")


def run_twister(cmd: list[str], cwd: Path | None = None,
                timeout: float = 3600) -> tuple[list[str], float]:
    """Run a twister command line (printed first): its summary lines and wall seconds, or
    RuntimeError with the summary (or the end of its stderr) when it fails."""
    print("  " + " ".join(cmd), flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                          cwd=cwd)
    wall = time.monotonic() - t0
    summary = [ln.split(" - ", 1)[-1].strip()
               for ln in proc.stdout.splitlines() + proc.stderr.splitlines()
               if any(s in ln for s in SUMMARY)]
    if proc.returncode != 0:
        raise RuntimeError(f"twister failed (exit {proc.returncode}): "
                           + " / ".join(summary or [proc.stderr.strip()[-300:]]))
    return summary, wall


def parse(text: str) -> dict[str, int | str]:
    """The figures of the suite's 'KL paged board=...' line (the last one in text): numbers as
    int (decimal or 0x hex), the board as it printed it. KeyError when there is none."""
    found = LINE.findall(text)
    if not found:
        raise KeyError("no 'KL paged board=' line in the output")
    out: dict[str, int | str] = {}
    for kv in ("board=" + found[-1].strip()).split():
        k, _, v = kv.partition("=")
        out[k] = int(v, 0) if re.fullmatch(r"-?(0x[0-9a-fA-F]+|\d+)", v) else v
    return out


def twister_cmd(py: str, zephyr_base: Path, root: Path, out: Path, jobs: int = 2) -> list[str]:
    """The twister command line of the scenario (this repository as an extra module)."""
    twister = zephyr_base / "scripts" / "twister"
    return [py, str(twister), "-T", str(root / SUITE), "-O", str(out), "-p", PLATFORM,
            "-j", str(jobs), "--inline-logs", "-x", f"ZEPHYR_EXTRA_MODULES={root}"]


def zephyr_version(zephyr_base: Path) -> str:
    """'3.7.1' from the tree's VERSION file ('' without one)."""
    f = zephyr_base / "VERSION"
    text = f.read_text() if f.is_file() else ""
    return ".".join(re.findall(r"^(?:VERSION_MAJOR|VERSION_MINOR|PATCHLEVEL) = (\d+)$", text,
                               re.M))


def _twister_python(twister: Path) -> str | None:
    """$TWISTER_PYTHON, this interpreter or python3: the first that starts twister."""
    for py in (os.environ.get("TWISTER_PYTHON"), sys.executable, shutil.which("python3")):
        if py and subprocess.run([py, str(twister), "--help"], capture_output=True,
                                 timeout=120).returncode == 0:
            return py
    return None


def measure_figure() -> dict:
    """Run the scenario with twister in the Zephyr workspace of $ZEPHYR_BASE; Skipped without
    one (the recorded figures are kept)."""
    from ..device import build
    from .docfigs_measure import Skipped, zephyr_base

    zb = zephyr_base()
    if shutil.which("qemu-system-arm") is None:
        raise Skipped("qemu-system-arm is not installed")
    py = _twister_python(Path(zb) / "scripts" / "twister")
    if py is None:
        raise Skipped("no Python starts twister (set TWISTER_PYTHON)")
    root = build.repo_root()
    ver = zephyr_version(Path(zb))
    with tempfile.TemporaryDirectory(prefix="kilolearn-zephyr-paged-") as tmp:
        out = Path(tmp) / "twister-out"
        cmd = twister_cmd(py, Path(zb), root, out)
        summary, wall = run_twister(cmd)
        logs = sorted(out.rglob("handler.log"))
        figures = parse("\n".join(p.read_text(errors="replace") for p in logs))
    return {"zephyr": ver, "platform": PLATFORM, "scenario": SCENARIO, "twister": summary,
            "wall_s": round(wall), "figures": figures}


def _kb(v: int) -> str:
    return f"{v // 1024:,} KB" if v % 1024 == 0 else f"{v:,} B"


def render(rec: dict) -> str:
    d = rec["data"]
    f = d["figures"]
    steps = int(f["steps"])
    lines = [
        f"*Measured {rec['measured']} in a Zephyr v{d['zephyr']} workspace (wall "
        f"{d['wall_s']} s for build and run on a 2-core machine): `{rec['command']}`. Rerun "
        "there, with `ZEPHYR_BASE` set: `kilolearn docs --measure zephyr-paged` (without it "
        "the command keeps these figures).*",
        "",
        "| | |",
        "|---|---|",
        f"| network | int8 784-512-128-10, {f['params']:,} parameters, blob {f['blob']:,} B |",
        f"| arena | {f['arena']:,} B, peak {f['arena_peak']:,} B (the same blob without the "
        f"paged flag, trained in memory: {f['twin_arena_peak']:,} B) |",
        f"| training | {steps} steps ({f['steps_before']} before the remount), channel-norm "
        f"{f['permille'] / 10:g} % of the rows; held-out accuracy {f['acc_before']}/"
        f"{f['n_test']} before, {f['acc_after']}/{f['n_test']} after (synthetic 784-pixel "
        "classes) |",
        f"| flash | kilolearn_weights {_kb(int(f['partition']))} on the flash simulator "
        f"({_kb(int(f['erase_block']))} erase blocks, {f['write_block']} B writes, erased to "
        f"0x{int(f['erase_value']):02X}): two generations {_kb(int(f['slots']))}, weight log "
        f"{_kb(int(f['log']))} |",
        f"| written | {f['bytes_programmed']:,} B programmed "
        f"({f['bytes_programmed'] / steps / 1024:,.0f} KB a step), {f['sectors_erased']:,} "
        f"sectors erased ({f['folds']} folds); the most worn sector "
        f"{f['max_sector_erases']} erases |",
        f"| remount | {f['mounted_records']:,} logged rows mounted; blob CRC "
        f"0x{int(f['crc']):08x} before, 0x{int(f['remount_crc']):08x} after; "
        f"{f['exp_moved']} activation exponents had grown in training, back from the log's "
        "commit records with the dither |",
        "| in memory | every prediction, weight and bias equal, bit for bit, before and after "
        "the remount |",
        "",
        "```",
        *d["twister"],
        "```",
    ]
    return "\n".join(lines)
