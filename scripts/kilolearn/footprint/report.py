"""The report's data model: sections, symbols, usage per component and file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .boards import Board

# ----------------------------------------------------------------------------- data model

@dataclass
class SectionInfo:
    index: int
    name: str
    kind: str          # text | data | bss (as arm-none-eabi-size counts it)
    addr: int
    size: int


@dataclass
class SymbolInfo:
    name: str
    type: str          # func | object | tls | notype | gap
    section: str
    kind: str          # text | data | bss
    address: int
    size: int          # st_size (clipped to the section)
    bytes: int         # bytes counted for this symbol (aliases and overlaps once)
    file: str
    component: str
    aliases: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "section": self.section, "kind": self.kind,
                "address": self.address, "size": self.size, "bytes": self.bytes,
                "file": self.file, "component": self.component, "aliases": self.aliases}


@dataclass
class Usage:
    text: int = 0
    data: int = 0
    bss: int = 0

    def add(self, kind: str, n: int) -> None:
        setattr(self, kind, getattr(self, kind) + n)

    @property
    def rom(self) -> int:
        return self.text + self.data

    @property
    def ram(self) -> int:
        return self.data + self.bss

    def as_dict(self) -> dict[str, int]:
        return {"text": self.text, "data": self.data, "bss": self.bss, "rom": self.rom,
                "ram": self.ram}


@dataclass
class Report:
    path: str
    machine: str
    elf_class: int
    totals: Usage
    segments_rom: int
    segments_ram: int
    sections: list[SectionInfo]
    symbols: list[SymbolInfo]
    files: dict[str, tuple[str, Usage]]
    components: dict[str, Usage]
    callouts: list[SymbolInfo]
    callout_patterns: list[str]
    dwarf_units: int
    dwarf_note: str
    board: Board | None = None
    ram_capacity: int | None = None
    flash_capacity: int | None = None
    seconds: float = 0.0
    has_symtab: bool = True
    # segments the RAM cross-check did not count as RAM, and why
    segment_notes: list[str] = field(default_factory=list)
    # bytes of the allocated sections inside the board's RAM regions (a memory map given)
    ram_in_regions: int | None = None

    def percent(self) -> dict[str, float | None]:
        def pct(n: int, cap: int | None) -> float | None:
            return None if not cap else 100.0 * n / cap
        return {"rom": pct(self.totals.rom, self.flash_capacity),
                "ram": pct(self.totals.ram, self.ram_capacity)}

    def as_dict(self) -> dict[str, Any]:
        return {
            "elf": self.path, "machine": self.machine, "class": self.elf_class,
            "totals": self.totals.as_dict(),
            "segments": {"rom": self.segments_rom, "ram": self.segments_ram,
                         "notes": self.segment_notes},
            "ram_in_regions": self.ram_in_regions,
            "board": None if self.board is None else self.board.name,
            "capacity": {"flash": self.flash_capacity, "ram": self.ram_capacity},
            "percent": self.percent(),
            "sections": [{"name": s.name, "kind": s.kind, "address": s.addr, "size": s.size}
                         for s in self.sections],
            "components": [{"component": c, **u.as_dict()} for c, u in self.components.items()],
            "files": [{"file": f, "component": c, **u.as_dict()}
                      for f, (c, u) in self.files.items()],
            "callout_patterns": self.callout_patterns,
            "callouts": [s.as_dict() for s in self.callouts],
            "symbols": [s.as_dict() for s in self.symbols],
            "dwarf": {"units": self.dwarf_units, "note": self.dwarf_note},
            "symbol_table": self.has_symtab,
            "seconds": round(self.seconds, 4),
        }
