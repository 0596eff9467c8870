"""`kilolearn footprint` on Zephyr ELFs: the session app built for qemu_cortex_m3,
mps2/an521/cpu0 (no flash driver: the RAM store) and nucleo_f429zi (192 KB SRAM + 64 KB CCM).

Zephyr links with ``-N``: its code and rodata in flash form one RWE ``PT_LOAD`` segment, and its
NOBITS segment spans the RAM its .data segment also covers. The RAM cross-check must count
neither: it equals the linker's own figure (``--print-memory-usage``, summed over the RAM
regions). ``--board`` is the build directory: the sizes come from its devicetree and equal the
``CONFIG_SRAM_SIZE`` / ``CONFIG_FLASH_SIZE`` Zephyr derives from it. The timing of the analysis
is printed beside `west build -t ram_report` on the same build.

Needs a Zephyr v3.7.1 west workspace (ZEPHYR_BASE, the toolchain in the environment, west on
PATH); skipped where there is none (CI).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from kilolearn import footprint

ROOT = Path(__file__).resolve().parents[2]
ZEPHYR_BASE = os.environ.get("ZEPHYR_BASE")
BOARDS = ["qemu_cortex_m3", "mps2/an521/cpu0", "nucleo_f429zi"]
NOT_RAM = ("FLASH", "IDT_LIST", "ROM", "ITCM")  # the linker's other regions are RAM

pytestmark = [
    pytest.mark.skipif(not ZEPHYR_BASE or shutil.which("west") is None,
                       reason="ZEPHYR_BASE not set or west not on PATH: no Zephyr workspace"),
    pytest.mark.slow,
]

_BUILDS: dict[str, tuple[Path, str]] = {}


def build(board: str, tmp_path_factory) -> tuple[Path, str]:
    """(build dir, the link's stdout) of the app for ``board``."""
    if board not in _BUILDS:
        d = tmp_path_factory.mktemp(board.replace("/", "_"))
        proc = subprocess.run(
            ["west", "build", "-b", board, "-d", str(d), str(ROOT / "app"), "--",
             f"-DZEPHYR_EXTRA_MODULES={ROOT}"], capture_output=True, text=True, timeout=900,
            cwd=Path(ZEPHYR_BASE or "").parent)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        _BUILDS[board] = (d, proc.stdout)
    return _BUILDS[board]


def linker_ram(stdout: str) -> int:
    """Bytes used in the RAM regions (RAM, SRAM1..4, CCM, DTCM, ...: every region but flash
    and the like), from the linker's --print-memory-usage table."""
    units = {"B": 1, "KB": 1024, "MB": 1 << 20, "GB": 1 << 30}
    used = 0
    for name, n, unit in re.findall(r"^\s*(\w+):\s+(\d+) (B|KB|MB|GB)\s", stdout, re.M):
        if not any(k in name.upper() for k in NOT_RAM):
            used += int(n) * units[unit]
    return used


def readelf_sections(elf: Path) -> list[tuple[str, str, int, int, str]]:
    out = subprocess.run(["arm-none-eabi-readelf", "-SW", str(elf)], capture_output=True,
                         text=True, check=True).stdout
    rows = []
    for m in re.finditer(r"\]\s+(\S+)\s+(\w+)\s+([0-9a-f]{8}) [0-9a-f]{6} ([0-9a-f]{6}) "
                         r"[0-9a-f]{2}\s+(\w*)", out):
        rows.append((m.group(1), m.group(2), int(m.group(3), 16), int(m.group(4), 16),
                     m.group(5)))
    return rows


@pytest.mark.parametrize("board", BOARDS)
def test_zephyr_footprint_totals_ram_and_board_from_build(board, tmp_path_factory):
    d, stdout = build(board, tmp_path_factory)
    elf = d / "zephyr" / "zephyr.elf"
    size = subprocess.run(["arm-none-eabi-size", str(elf)], capture_output=True, text=True,
                          check=True).stdout.splitlines()[-1].split()
    b = footprint.find_board(str(d))
    t0 = time.perf_counter()
    r = footprint.analyze(str(elf), regions=b.regions)
    ours = time.perf_counter() - t0
    # totals = arm-none-eabi-size
    assert (r.totals.text, r.totals.data, r.totals.bss) == tuple(int(x) for x in size[:3])
    # the board from the build: the sizes Zephyr's Kconfig takes from the same devicetree
    cfg = dict(re.findall(r"^(CONFIG_\w+)=(.*)$", (d / "zephyr" / ".config").read_text(), re.M))
    assert b.ram == int(cfg["CONFIG_SRAM_SIZE"]) * 1024
    assert b.flash == int(cfg["CONFIG_FLASH_SIZE"]) * 1024
    assert b.name.startswith(board.split("/")[0])
    # the RAM of the program headers = the linker's figure (not the RWE flash segment)
    want = linker_ram(stdout)
    assert want > 0
    assert r.segments_ram == want, (r.segments_ram, want, r.segment_notes)
    # sections inside RAM: the same bytes less alignment padding; size's data + bss adds the
    # writable sections kept in flash (Zephyr's sw_isr_table, ...)
    ram_lo = [(x.addr, x.end) for x in b.regions if x.kind == "ram"]
    rows = [s for s in readelf_sections(elf) if "A" in s[4]]
    in_ram = sum(n for _nm, _t, a, n, _f in rows if any(lo <= a < hi for lo, hi in ram_lo))
    in_flash_w = sum(n for _nm, t, a, n, f in rows if "W" in f and "X" not in f
                     and t != "NOBITS" and not any(lo <= a < hi for lo, hi in ram_lo))
    assert r.ram_in_regions == in_ram
    assert 0 <= r.segments_ram - in_ram < 64
    assert r.totals.ram - r.ram_in_regions == in_flash_w
    # the old rule (every writable PT_LOAD is RAM) would have counted the RWE flash segment
    naive = footprint.analyze(str(elf))
    # without a map the RWE segment is left out too (the padding between segments is not known)
    assert 0 <= r.segments_ram - naive.segments_ram < 64
    assert any("RWE" in n for n in naive.segment_notes)
    if board == "nucleo_f429zi":  # the CCM beside the 192 KB SRAM
        assert any(x.kind == "ram" and x.addr == 0x10000000 and x.size == 64 * 1024
                   for x in b.regions)
    t0 = time.perf_counter()
    rep = subprocess.run(["west", "build", "-d", str(d), "-t", "ram_report"],
                         capture_output=True, text=True, timeout=300,
                         cwd=Path(ZEPHYR_BASE or "").parent)
    theirs = time.perf_counter() - t0
    assert rep.returncode == 0, rep.stderr[-2000:]
    print(f"{board}: kilolearn footprint analysis {ours:.2f} s, west build -t ram_report "
          f"{theirs:.2f} s")
