"""Constants, errors, boards and sizes of `kilolearn footprint`."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

UNATTRIBUTED = "(unattributed)"
NO_FILE = "(no file info)"
ENGINE, KERNELS, APP, PORT = "kilolearn engine", "kernels", "app/runner", "port"
ZEPHYR, LIBC, OTHER = "Zephyr kernel", "libc/libgcc", "other"
COMPONENTS = (ENGINE, KERNELS, APP, PORT, ZEPHYR, LIBC, OTHER, UNATTRIBUTED)
CALLOUT_PATTERNS = ("arena_mem", "*arena*", "*replay*")
EXIT_BAD_INPUT, EXIT_OVER_LIMIT = 2, 3

SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
PF_X, PF_W = 0x1, 0x2
STB_LOCAL = 0
STT_OBJECT, STT_FUNC, STT_SECTION, STT_FILE, STT_TLS = 1, 2, 3, 4, 6
SHN_LORESERVE = 0xFF00
MAPPING_SYMBOL = re.compile(r"^\$[atdx](\..*)?$")
SOURCE_SUFFIXES = {".c", ".h", ".s", ".S", ".cc", ".cpp", ".cxx", ".asm"}
SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache"}


class FootprintError(Exception):
    """The input cannot be analysed (missing, not an ELF, truncated, corrupt)."""


# ----------------------------------------------------------------------------- boards and sizes

@dataclass(frozen=True)
class Region:
    """One memory of a board: its name (a devicetree path), address, size, "ram" or "flash"."""

    name: str
    addr: int
    size: int
    kind: str

    @property
    def end(self) -> int:
        return self.addr + self.size


@dataclass(frozen=True)
class Board:
    name: str
    ram: int        # bytes of the main SRAM the linker places data/bss/stack in
    flash: int      # bytes of the memory holding code + rodata + the .data image
    note: str
    # the memory map (zbuild.Region: addr, size, kind "ram"/"flash"), where known: from a
    # Zephyr build's devicetree (--board BUILD_DIR); empty for the fixed boards below
    regions: tuple[Region, ...] = ()


KiB, MiB = 1024, 1024 * 1024

BOARDS: dict[str, Board] = {b.name: b for b in (
    Board("mps2-an385", 4 * MiB, 4 * MiB,
          "Cortex-M3; 4 MB code SSRAM (used as flash), 4 MB SSRAM2/3 (boards/qemu)"),
    Board("mps2-an386", 4 * MiB, 4 * MiB,
          "Cortex-M4F; 4 MB code SSRAM (used as flash), 4 MB SSRAM2/3 (boards/qemu)"),
    Board("mps2-an500", 4 * MiB, 4 * MiB,
          "Cortex-M7; 4 MB code SSRAM (used as flash), 4 MB SSRAM2/3 (boards/qemu)"),
    Board("mps2-an505", 4 * MiB, 4 * MiB,
          "Cortex-M33; 4 MB SSRAM1 (used as flash), 4 MB SSRAM2/3, secure aliases"),
    Board("mps3-an547", 4 * MiB, 512 * KiB,
          "Cortex-M55; 512 KB ITCM (used as flash), 4 MB ISRAM0/1, secure aliases"),
    Board("nucleo_f429zi", 192 * KiB, 2 * MiB,
          "STM32F429ZI; 192 KB SRAM1-3 (+64 KB CCM not counted), 2 MB flash",
          (Region("SRAM", 0x20000000, 192 * KiB, "ram"), Region("CCM", 0x10000000, 64 * KiB, "ram"),
           Region("flash", 0x08000000, 2 * MiB, "flash"))),
    Board("mimxrt1060_evk", 1 * MiB, 8 * MiB,
          "i.MX RT1062; 1 MB on-chip RAM (512 KB FlexRAM ITCM/DTCM/OCRAM + 512 KB OCRAM), "
          "8 MB QSPI flash (IS25WP064; 32 MB SDRAM not counted)"),
    Board("nrf52840dk/nrf52840", 256 * KiB, 1 * MiB, "nRF52840; 256 KB RAM, 1 MB flash"),
    Board("qemu_cortex_m3", 64 * KiB, 256 * KiB, "TI LM3S6965 (Zephyr qemu_cortex_m3); "
          "64 KB SRAM, 256 KB flash"),
)}
BOARD_ALIASES = {
    "mps2/an385": "mps2-an385", "mps2/an386": "mps2-an386", "mps2/an500": "mps2-an500",
    "mps2/an521": "mps2-an505", "mps2-an521": "mps2-an505", "mps2/an505": "mps2-an505",
    "mps3/an547": "mps3-an547", "mps3/corstone300/an547": "mps3-an547",
    "nrf52840dk": "nrf52840dk/nrf52840", "nrf52840dk_nrf52840": "nrf52840dk/nrf52840",
    "nucleo-f429zi": "nucleo_f429zi", "mimxrt1060-evk": "mimxrt1060_evk",
    "mimxrt1060_evk/mimxrt1062/qspi": "mimxrt1060_evk",
}


def find_board(name: str) -> Board:
    """A known board by name, or the board of a Zephyr build directory (its memory map from
    the build's devicetree, zbuild.py)."""
    key = BOARD_ALIASES.get(name.lower(), name.lower())
    if key not in BOARDS:
        from pathlib import Path

        if Path(name).exists():
            from .zbuild import board_from_build

            return board_from_build(name)
        raise FootprintError(f"unknown board {name!r} (known: {', '.join(BOARDS)}, or a Zephyr "
                             "build directory; or give --ram/--flash)")
    return BOARDS[key]


_SIZE = re.compile(r"^\s*(0x[0-9a-f]+|\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'192K' -> 196608, '2M', '1.5M', '65536', '0x10000', '64KB', '64KiB' (K = 1024)."""
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"not a size: {text!r} (use bytes, 0x..., or a K/M/G suffix)")
    num, unit = m.group(1), m.group(2).lower()
    value = int(num, 16) if num.lower().startswith("0x") else float(num)
    result = value * {"": 1, "k": KiB, "m": MiB, "g": 1024 * MiB}[unit]
    if result != int(result):
        raise ValueError(f"not a whole number of bytes: {text!r}")
    return int(result)


def _size_arg(text: str) -> int:
    """A memory size for the command line: 0 .. 4 GiB (a 32-bit address space)."""
    try:
        v = parse_size(text)
    except (ValueError, OverflowError) as e:
        raise argparse.ArgumentTypeError(str(e) if isinstance(e, ValueError) else
                                         f"not a size: {text!r} (too large)") from None
    if v > 1 << 32:
        raise argparse.ArgumentTypeError(f"{text!r}: more than 4 GiB")
    return v


def _capacity_arg(text: str) -> int:
    """A memory's capacity: 1 byte .. 4 GiB."""
    v = _size_arg(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a memory of 0 bytes")
    return v


_size_arg.kind = _capacity_arg.kind = "size"  # type: ignore[attr-defined]  # for tests
