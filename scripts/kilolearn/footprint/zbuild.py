"""A board's memory map read from a Zephyr build directory.

The build's devicetree (``zephyr/include/generated/zephyr/devicetree_generated.h``, generated
from ``zephyr.dts`` with every ``reg`` already translated through its parents' ``ranges``) gives
the memories: the chosen ``zephyr,sram`` and ``zephyr,flash`` nodes, and every enabled node that
is RAM by its compatible (``mmio-sram``, ``zephyr,memory-region``, a TCM or a CCM) such as the
STM32F4's 64 KB CCM beside its 192 KB SRAM. The board's name is the build's ``.config``
``CONFIG_BOARD_TARGET`` (``CONFIG_BOARD`` before Zephyr 3.7).
"""

from __future__ import annotations

import re
from pathlib import Path

from .boards import Board, FootprintError, Region

DT_HEADER = Path("include") / "generated" / "zephyr" / "devicetree_generated.h"
# compatibles (as devicetree_generated.h spells them) of RAM besides the chosen zephyr,sram
RAM_COMPATS = ("mmio_sram", "zephyr_memory_region", "arm_dtcm", "arm_itcm", "nxp_imx_dtcm",
               "nxp_imx_itcm", "st_stm32_ccm")
_DEFINE = re.compile(r"^#define (\S+)\s+(.*?)\s*(?:/\*.*\*/)?\s*$")


def zephyr_dir(path: str | Path) -> Path | None:
    """The ``zephyr/`` folder of a build directory given as the build, its ``zephyr/`` folder
    or a file in it (``zephyr.elf``); None if there is no generated devicetree there."""
    p = Path(path)
    if p.is_file():
        p = p.parent
    for d in (p, p / "zephyr"):
        if (d / DT_HEADER).is_file():
            return d
    return None


def _defines(header: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        text = header.read_text(errors="replace")
    except OSError as e:
        raise FootprintError(f"{header}: cannot read ({e.strerror})") from None
    for line in text.splitlines():
        if line.startswith("#define "):
            m = _DEFINE.match(line)
            if m:
                out[m.group(1)] = m.group(2)
    return out


def _int(text: str | None) -> int | None:
    try:
        return None if text is None else int(text, 0)
    except ValueError:
        return None


def _reg(d: dict[str, str], node: str) -> tuple[int, int] | None:
    addr = _int(d.get(f"{node}_REG_IDX_0_VAL_ADDRESS"))
    size = _int(d.get(f"{node}_REG_IDX_0_VAL_SIZE"))
    if addr is None or size is None or addr < 0 or size <= 0 or addr + size > 1 << 64:
        return None
    return addr, size


def _path(d: dict[str, str], node: str) -> str:
    return d.get(f"{node}_PATH", node).strip('"')


def regions(zdir: Path) -> tuple[list[Region], Region | None, Region | None]:
    """(every memory region, the chosen SRAM, the chosen flash) of a build's ``zephyr/``."""
    d = _defines(zdir / DT_HEADER)
    chosen = {k: d.get(f"DT_CHOSEN_zephyr_{k}") for k in ("sram", "flash")}
    out: list[Region] = []
    main: dict[str, Region | None] = {"sram": None, "flash": None}
    for key, kind in (("sram", "ram"), ("flash", "flash")):
        node = chosen[key]
        if node and (r := _reg(d, node)):
            main[key] = Region(_path(d, node), r[0], r[1], kind)
            out.append(main[key])
    seen = {chosen["sram"], chosen["flash"]}
    nodes = sorted({k.split("_COMPAT_MATCHES_")[0] for k, v in d.items()
                    if v == "1" and "_COMPAT_MATCHES_" in k
                    and k.rsplit("_COMPAT_MATCHES_", 1)[1] in RAM_COMPATS})
    for node in nodes:
        if node in seen or d.get(f"{node}_STATUS_okay") != "1":
            continue
        if (r := _reg(d, node)) and not any(r[0] < x.end and x.addr < r[0] + r[1] for x in out):
            out.append(Region(_path(d, node), r[0], r[1], "ram"))
    return out, main["sram"], main["flash"]


def board_from_build(path: str | Path) -> Board:
    """The Board of a Zephyr build (its directory, ``zephyr/`` folder or ``zephyr.elf``)."""
    zdir = zephyr_dir(path)
    if zdir is None:
        raise FootprintError(f"{path}: not a Zephyr build directory (no {DT_HEADER})")
    regs, sram, flash = regions(zdir)
    if sram is None:
        raise FootprintError(f"{zdir / DT_HEADER}: no chosen zephyr,sram node with a reg")
    name = zdir.parent.name
    cfg = zdir / ".config"
    if cfg.is_file():
        text = cfg.read_text(errors="replace")
        for key in ("CONFIG_BOARD_TARGET", "CONFIG_BOARD"):
            if m := re.search(rf'^{key}="([^"]+)"', text, re.M):
                name = m.group(1)
                break
    extra = [r for r in regs if r.kind == "ram" and r is not sram]
    note = (f"from the build's devicetree: SRAM {sram.name} {sram.size:,} B at {sram.addr:#x}"
            + "".join(f", RAM {r.name} {r.size:,} B at {r.addr:#x} (not counted)"
                      for r in extra)
            + (f", flash {flash.name} {flash.size:,} B at {flash.addr:#x}" if flash else ""))
    return Board(name, sram.size, flash.size if flash else 0, note, tuple(regs))
