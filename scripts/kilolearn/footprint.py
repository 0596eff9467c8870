"""``kilolearn footprint``: where the RAM and the flash of a firmware ELF go.

Totals follow ``arm-none-eabi-size`` (Berkeley format) exactly, section by section:

* every section with ``SHF_ALLOC`` counts, nothing else does;
* ``text`` -- executable or read-only sections (code, rodata, ``.ARM.exidx``, notes);
* ``data`` -- the remaining sections with file contents (``.data``, ``.init_array``, ...);
* ``bss``  -- the remaining ``SHT_NOBITS`` sections (``.bss``, ``.stack``, ``.noinit``, ``.tbss``).

ROM (flash) = text + data (the .data initialisers are stored in flash and copied at boot);
RAM = data + bss. The program headers give an independent figure: ROM = the file bytes of the
``PT_LOAD`` segments, RAM = the memory size of the writable ``PT_LOAD`` segments.

Every allocated byte is then given to one symbol (symbols at the same address -- aliases -- count
once; a symbol overlapping an earlier one only gets the bytes not yet taken) or, where no symbol
covers it (alignment padding, fill, linker-reserved space such as the stack), to an explicit
``(unattributed)`` bucket, so the per-symbol, per-file and per-component sums equal the totals.
Each symbol's source file comes from DWARF when the object was compiled with ``-g`` (the
translation unit whose ``.debug_aranges``/CU ranges cover a function, the CU that defines a
variable at that address), otherwise from the symbol table (the ``STT_FILE`` entry a local symbol
follows, and for global symbols the local symbols and ARM mapping symbols ``$t``/``$d`` of the same
input section). Files are grouped into components by their path. See ``docs/footprint.md``.
"""

from __future__ import annotations

import argparse
import bisect
import fnmatch
import io
import json
import os
import re
import struct
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

UNATTRIBUTED = "(unattributed)"
NO_FILE = "(no file info)"
ENGINE, KERNELS, APP, PORT = "kilolearn engine", "kernels", "app/runner", "port"
ZEPHYR, LIBC, OTHER = "Zephyr kernel", "libc/libgcc", "other"
COMPONENTS = (ENGINE, KERNELS, APP, PORT, ZEPHYR, LIBC, OTHER, UNATTRIBUTED)
CALLOUT_PATTERNS = ("arena_mem", "*arena*", "*replay*")
EXIT_BAD_INPUT, EXIT_OVER_LIMIT = 2, 3

SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
PF_W = 0x2
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
class Board:
    name: str
    ram: int        # bytes of the main SRAM the linker places data/bss/stack in
    flash: int      # bytes of the memory holding code + rodata + the .data image
    note: str


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
    Board("nucleo_f429zi", 192 * KiB, 2 * MiB,
          "STM32F429ZI; 192 KB SRAM1-3 (+64 KB CCM not counted), 2 MB flash"),
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
    "nrf52840dk": "nrf52840dk/nrf52840", "nrf52840dk_nrf52840": "nrf52840dk/nrf52840",
    "nucleo-f429zi": "nucleo_f429zi", "mimxrt1060-evk": "mimxrt1060_evk",
    "mimxrt1060_evk/mimxrt1062/qspi": "mimxrt1060_evk",
}


def find_board(name: str) -> Board:
    key = BOARD_ALIASES.get(name.lower(), name.lower())
    if key not in BOARDS:
        raise FootprintError(f"unknown board {name!r} (known: {', '.join(BOARDS)}; "
                             "or give --ram/--flash)")
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

    def percent(self) -> dict[str, float | None]:
        def pct(n: int, cap: int | None) -> float | None:
            return None if not cap else 100.0 * n / cap
        return {"rom": pct(self.totals.rom, self.flash_capacity),
                "ram": pct(self.totals.ram, self.ram_capacity)}

    def as_dict(self) -> dict[str, Any]:
        return {
            "elf": self.path, "machine": self.machine, "class": self.elf_class,
            "totals": self.totals.as_dict(),
            "segments": {"rom": self.segments_rom, "ram": self.segments_ram},
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


# ----------------------------------------------------------------------------- source files

class SourceIndex:
    """Maps bare file names (from STT_FILE symbols) to paths in the source tree, and absolute
    paths (from DWARF) to paths relative to it."""

    def __init__(self, root: Path | None) -> None:
        self.root = root.resolve() if root else None
        self._by_name: dict[str, list[str]] | None = None
        self._resolved: dict[tuple[str, tuple[str, ...]], str] = {}
        self._texts: dict[str, str] = {}
        self._units: dict[str, set[str]] = {}
        self._parts: dict[str, list[str]] = {}

    def add_unit(self, path: str) -> None:
        """A DWARF compile unit: bare names outside the source tree may resolve to it."""
        self._units.setdefault(os.path.basename(path), set()).add(path)

    def _scan(self) -> dict[str, list[str]]:
        if self._by_name is None:
            self._by_name = {}
            if self.root and self.root.is_dir():
                for dirpath, dirnames, filenames in os.walk(self.root):
                    dirnames[:] = [d for d in dirnames
                                   if d not in SKIP_DIRS and not d.startswith("build")]
                    for fn in filenames:
                        if os.path.splitext(fn)[1] in SOURCE_SUFFIXES:
                            rel = os.path.relpath(os.path.join(dirpath, fn), self.root)
                            self._by_name.setdefault(fn, []).append(rel.replace(os.sep, "/"))
        return self._by_name

    def from_symtab(self, name: str, symbols: Sequence[str] = ()) -> str:
        """The source path of an ``STT_FILE`` name. A name that several files share is settled
        by which of them mentions the symbol; failing that the alternatives are listed in
        braces (``kernels/{dsp,ref}/x.c``)."""
        key = (name, tuple(symbols))
        if key not in self._resolved:
            self._resolved[key] = self._resolve(name, symbols)
        return self._resolved[key]

    def _resolve(self, name: str, symbols: Sequence[str]) -> str:
        hits = self._scan().get(os.path.basename(name), [])
        if len(hits) == 1:
            return hits[0]
        if not hits:
            units = self._units.get(os.path.basename(name), set())
            return next(iter(units)) if len(units) == 1 else name
        words = {s.split(".")[0] for s in symbols if s}
        if words and self.root:
            found = [h for h in hits if any(re.search(rf"\b{re.escape(w)}\b", self._text(h))
                                            for w in words)]
            if len(found) == 1:
                return found[0]
        parts = [h.split("/") for h in hits]
        head = os.path.commonprefix(parts)
        tail = os.path.commonprefix([p[len(head):][::-1] for p in parts])[::-1]
        mids = sorted({"/".join(p[len(head):len(p) - len(tail)]) for p in parts})
        return "/".join([*head, "{" + ",".join(mids) + "}", *tail])

    def part_of(self, rel: str, symbols: Sequence[str]) -> str:
        """A unit that ``#include``s other .c files (src/model/kl_model.c compiles its parts as
        one translation unit) gets its symbols attributed to the part that defines them."""
        if not rel.endswith(".c") or self.root is None:
            return rel
        parts = self._parts.get(rel)
        if parts is None:
            here = os.path.dirname(rel)
            parts = self._parts[rel] = [
                os.path.normpath(os.path.join(here, inc)).replace(os.sep, "/")
                for inc in re.findall(r'^\s*#\s*include\s+"([^"]+\.c)"', self._text(rel), re.M)]
        words = {w.split(".")[0] for w in symbols if w}
        for part in parts:
            if any(re.search(rf"\b{re.escape(w)}\s*\(", self._text(part)) or
                   re.search(rf"^\S.*\b{re.escape(w)}\b", self._text(part), re.M)
                   for w in words):
                return part
        return rel

    def _text(self, rel: str) -> str:
        if rel not in self._texts:
            try:
                assert self.root is not None
                self._texts[rel] = (self.root / rel).read_text(errors="replace")
            except OSError:
                self._texts[rel] = ""
        return self._texts[rel]

    def from_dwarf(self, path: str) -> str:
        if self.root and os.path.isabs(path):
            try:
                return Path(path).relative_to(self.root).as_posix()
            except ValueError:
                pass
        return path.replace("\\", "/")


_LIBC_PARTS = ("newlib", "picolibc", "libgcc", "/libc/", "/libm/", "compiler-rt", "/gcc/config/",
               "libstdc++", "libsupc++", "/lib/libc/", "/glibc", "/musl")
_LIBC_NAMES = re.compile(r"^(lib[a-z]*_a-.*|_.*\.o|crt[a-z0-9_]*\.(o|c|s|S)|lib1funcs\.(S|asm)|"
                         r"ieee754-[sd]f\.S|bpabi.*|libgcc2\.c|unwind-arm\.c|pr-support\.c|"
                         r"crtstuff\.c|fp-bit\.c|gthr.*)$")


def classify(path: str, groups: Sequence[tuple[str, str]] = ()) -> str:
    """Component of a source file path (repo-relative, absolute, or a bare file name)."""
    if path in (UNATTRIBUTED,):
        return UNATTRIBUTED
    for pattern, component in groups:
        if fnmatch.fnmatch(path, pattern):
            return component
    p = "/" + path.replace("\\", "/").lstrip("/")
    low = p.lower()
    if "/modules/kilolearn/src/kernels/" in p:
        return KERNELS
    if "/modules/kilolearn/src/" in p:
        return ENGINE
    if "/modules/kilolearn/port/" in p:
        return PORT
    if re.match(r"^/(runner|app|apps|samples)/", p) or re.search(r"/kilolearn/(runner|app)/", p):
        return APP
    if any(s in low for s in _LIBC_PARTS) or _LIBC_NAMES.match(os.path.basename(p)):
        return LIBC
    if "/zephyr/" in p:
        return ZEPHYR
    return OTHER


# ----------------------------------------------------------------------------- ELF reading

@dataclass
class _Sym:
    name: str
    value: int
    size: int
    type: int
    bind: int
    shndx: int
    file: str | None      # the STT_FILE a local symbol follows


def _open_elf(path: str) -> tuple[Any, bytes]:
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    p = Path(path)
    if not p.exists():
        raise FootprintError(f"{path}: no such file")
    if p.is_dir():
        raise FootprintError(f"{path}: is a directory, not an ELF file")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise FootprintError(f"{path}: cannot read ({e.strerror})") from None
    if len(raw) == 0:
        raise FootprintError(f"{path}: empty file, not an ELF file")
    if raw[:4] != b"\x7fELF":
        raise FootprintError(f"{path}: not an ELF file (no ELF magic)")
    if len(raw) < 52 or raw[4] not in (1, 2) or raw[5] not in (1, 2):
        raise FootprintError(f"{path}: truncated or corrupt ELF header")
    try:
        elf = ELFFile(io.BytesIO(raw))
        shoff, shnum, shentsize = elf["e_shoff"], elf.num_sections(), elf["e_shentsize"]
    except (ELFError, struct.error, ValueError, IndexError, KeyError) as e:
        raise FootprintError(f"{path}: truncated or corrupt ELF header ({e})") from None
    except Exception as e:  # construct raises its own error types on short reads
        raise FootprintError(f"{path}: truncated or corrupt ELF ({type(e).__name__})") from None
    if shnum == 0:
        raise FootprintError(f"{path}: ELF file has no section headers (stripped of them?); "
                             "footprint needs sections")
    if shoff + shnum * shentsize > len(raw):
        raise FootprintError(f"{path}: truncated ELF ({len(raw):,} bytes, section headers end "
                             f"at {shoff + shnum * shentsize:,})")
    return elf, raw


def _sections(elf: Any, raw: bytes, path: str) -> tuple[list[Any], list[SectionInfo]]:
    headers, alloc = [], []
    for i in range(elf.num_sections()):
        h = elf._get_section_header(i)
        headers.append(h)
        if h["sh_type"] != "SHT_NOBITS" and h["sh_type"] != "SHT_NULL" and \
                h["sh_offset"] + h["sh_size"] > len(raw):
            raise FootprintError(f"{path}: truncated ELF (section {i} ends at "
                                 f"{h['sh_offset'] + h['sh_size']:,}, file has {len(raw):,} "
                                 "bytes)")
    strtab_index = elf["e_shstrndx"]
    names = b""
    if 0 < strtab_index < len(headers):
        h = headers[strtab_index]
        names = raw[h["sh_offset"]:h["sh_offset"] + h["sh_size"]]
    for i, h in enumerate(headers):
        flags = h["sh_flags"]
        if not flags & SHF_ALLOC or h["sh_type"] == "SHT_NULL":
            continue
        name = _cstr(names, h["sh_name"]) or f"[{i}]"
        # the same order of tests as binutils size.c (Berkeley format)
        if flags & SHF_EXECINSTR or not flags & SHF_WRITE:
            kind = "text"
        elif h["sh_type"] != "SHT_NOBITS":
            kind = "data"
        else:
            kind = "bss"
        alloc.append(SectionInfo(i, name, kind, h["sh_addr"], h["sh_size"]))
    return headers, alloc


def _cstr(blob: bytes, off: int) -> str:
    end = blob.find(b"\0", off)
    return blob[off:end if end >= 0 else len(blob)].decode("utf-8", "replace")


def _symbols(elf: Any, raw: bytes, headers: list[Any]) -> list[_Sym]:
    tab = next((h for h in headers if h["sh_type"] == "SHT_SYMTAB"), None) or \
        next((h for h in headers if h["sh_type"] == "SHT_DYNSYM"), None)
    if tab is None:
        return []
    link = headers[tab["sh_link"]] if tab["sh_link"] < len(headers) else None
    strtab = raw[link["sh_offset"]:link["sh_offset"] + link["sh_size"]] if link else b""
    data = raw[tab["sh_offset"]:tab["sh_offset"] + tab["sh_size"]]
    end = "<" if elf.little_endian else ">"
    if elf.elfclass == 32:
        fmt, order = end + "IIIBBH", (0, 1, 2, 3, 4, 5)
    else:
        fmt, order = end + "IBBHQQ", (0, 4, 5, 1, 2, 3)
    width = struct.calcsize(fmt)
    data = data[:len(data) - len(data) % width]
    out: list[_Sym] = []
    current: str | None = None
    for fields in struct.iter_unpack(fmt, data):
        name_off, value, size, info, _other, shndx = (fields[k] for k in order)
        bind, typ = info >> 4, info & 0xF
        if typ == STT_FILE:
            current = (_cstr(strtab, name_off) or None) if bind == STB_LOCAL else None
            continue
        if bind != STB_LOCAL:
            current = None
        if typ == STT_SECTION or shndx == 0 or shndx >= SHN_LORESERVE:
            continue
        out.append(_Sym(_cstr(strtab, name_off), value, size, typ, bind, shndx, current))
    return out


def _segments(elf: Any) -> tuple[int, int]:
    rom = ram = 0
    for i in range(elf.num_segments()):
        h = elf._get_segment_header(i)
        if h["p_type"] == "PT_LOAD":
            rom += h["p_filesz"]
            if h["p_flags"] & PF_W:
                ram += h["p_memsz"]
    return rom, ram


# ----------------------------------------------------------------------------- DWARF

@dataclass
class _Dwarf:
    units: int = 0
    note: str = "no DWARF"
    starts: list[int] = field(default_factory=list)         # sorted code range starts
    ranges: list[tuple[int, int, str]] = field(default_factory=list)
    variables: dict[int, list[tuple[str, str]]] = field(default_factory=dict)  # addr -> names
    single: str | None = None                                # a relocatable with one CU
    # functions declared in another file than their CU's (a unit that #includes .c parts, an
    # out-of-line static inline of a header): (lo, hi, declaring file), sorted
    fn_starts: list[int] = field(default_factory=list)
    fn_ranges: list[tuple[int, int, str]] = field(default_factory=list)

    def code_file(self, addr: int) -> str | None:
        for starts, ranges in ((self.fn_starts, self.fn_ranges), (self.starts, self.ranges)):
            i = bisect.bisect_right(starts, addr) - 1
            if i >= 0:
                lo, hi, path = ranges[i]
                if lo <= addr < hi:
                    return path
        return self.single

    def variable_file(self, addr: int, names: Iterable[str]) -> str | None:
        """The CU defining a variable at ``addr`` whose DWARF name matches one of ``names``
        (GCC's ``name.N`` suffixes of function-local statics ignored). The name check keeps
        variables of discarded sections, whose DWARF address the linker set to 0, out."""
        cands = self.variables.get(addr)
        if cands:
            bases = {n.split(".")[0] for n in names}
            for name, path in cands:
                if name in bases:
                    return path
        return self.single


def _attr_str(die: Any, name: str) -> str | None:
    a = die.attributes.get(name)
    if a is None:
        return None
    v = a.value
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _dwarf(elf: Any, headers: list[Any], is_rel: bool, src: SourceIndex) -> _Dwarf:
    out = _Dwarf()
    if not any(h["sh_type"] != "SHT_NOBITS" for h in headers) or not elf.has_dwarf_info():
        return out
    try:
        dw = elf.get_dwarf_info(relocate_dwarf_sections=is_rel)
        if dw.debug_info_sec is None:
            return out
        cu_path: dict[int, str] = {}
        cus = []
        for cu in dw.iter_CUs():
            top = cu.get_top_DIE()
            name = _attr_str(top, "DW_AT_name") or f"(CU at {cu.cu_offset:#x})"
            comp_dir = _attr_str(top, "DW_AT_comp_dir")
            path = name if os.path.isabs(name) or not comp_dir else os.path.join(comp_dir, name)
            cu_path[cu.cu_offset] = src.from_dwarf(os.path.normpath(path))
            src.add_unit(cu_path[cu.cu_offset])
            cus.append((cu, top))
        out.units = len(cus)
        if is_rel:
            # addresses are section-relative in an object file: one CU means one file
            out.single = next(iter(cu_path.values())) if len(cu_path) == 1 else None
            out.note = f"{len(cus)} compile unit(s), object file"
            return out
        ranges: list[tuple[int, int, str]] = []
        aranges = dw.get_aranges()
        if aranges is not None:
            for e in aranges.entries:
                # a range at 0 is a discarded (--gc-sections) function's tombstone
                if e.length and e.begin_addr and e.info_offset in cu_path:
                    ranges.append((e.begin_addr, e.begin_addr + e.length, cu_path[e.info_offset]))
            source = ".debug_aranges"
        else:
            rl = None
            for cu, top in cus:
                path = cu_path[cu.cu_offset]
                for lo, hi in _cu_ranges(dw, cu, top, rl):
                    if lo:
                        ranges.append((lo, hi, path))
            source = "CU ranges"
        ranges.sort()
        out.ranges = ranges
        out.starts = [r[0] for r in ranges]
        fn = sorted(r for cu, top in cus for r in _declared_elsewhere(dw, cu, top, cu_path, src))
        out.fn_ranges = fn
        out.fn_starts = [r[0] for r in fn]
        for cu, top in cus:
            path = cu_path[cu.cu_offset]
            size = cu["address_size"]
            for die in top.iter_children():
                if die.tag != "DW_TAG_variable":
                    continue
                loc = die.attributes.get("DW_AT_location")
                if loc is None or not isinstance(loc.value, list) or len(loc.value) != 1 + size:
                    continue
                if loc.value[0] != 0x03:      # DW_OP_addr
                    continue
                addr = int.from_bytes(bytes(loc.value[1:]),
                                      "little" if elf.little_endian else "big")
                named = die      # a definition may only point at its declaration for a name
                if "DW_AT_specification" in die.attributes:
                    named = die.get_DIE_from_attribute("DW_AT_specification")
                for key in ("DW_AT_name", "DW_AT_linkage_name"):
                    vname = _attr_str(die, key) or _attr_str(named, key)
                    if vname:
                        out.variables.setdefault(addr, []).append((vname, path))
        out.note = f"{len(cus)} compile units, code ranges from {source}"
    except Exception as e:  # a damaged debug section should not stop the size report
        out.note = f"DWARF unreadable ({type(e).__name__}: {e}); files from the symbol table"
        out.ranges, out.starts, out.variables = [], [], {}
    return out


def _declared_elsewhere(dw: Any, cu: Any, top: Any, cu_path: dict[int, str],
                        src: SourceIndex) -> list[tuple[int, int, str]]:
    """Code ranges of the CU's functions whose DW_AT_decl_file is not the CU's own file. A
    file index of the primary file (1; 0 too in DWARF 5) is the common case and costs nothing;
    only a CU with another one has its line-program file table read."""
    v5 = cu["version"] >= 5
    found: list[tuple[int, int, int]] = []
    for die in top.iter_children():
        if die.tag != "DW_TAG_subprogram":
            continue
        a = die.attributes
        f, lo, hi = a.get("DW_AT_decl_file"), a.get("DW_AT_low_pc"), a.get("DW_AT_high_pc")
        if f is None or lo is None or hi is None or f.value in (0, 1) or not lo.value:
            continue
        end = hi.value if hi.form == "DW_FORM_addr" else lo.value + hi.value
        if end > lo.value:
            found.append((lo.value, end, f.value))
    if not found:
        return []
    lp = dw.line_program_for_CU(cu)
    if lp is None:
        return []
    files, dirs = lp["file_entry"], lp["include_directory"]
    comp_dir = _attr_str(top, "DW_AT_comp_dir") or ""
    out = []
    for lo, hi, k in found:
        i = k if v5 else k - 1
        if not 0 <= i < len(files):
            continue
        e = files[i]
        name = e.name.decode("utf-8", "replace") if isinstance(e.name, bytes) else str(e.name)
        d = e.dir_index if v5 else e.dir_index - 1
        if not os.path.isabs(name) and 0 <= d < len(dirs):
            dd = dirs[d]
            name = os.path.join(dd.decode("utf-8", "replace") if isinstance(dd, bytes)
                                else str(dd), name)
        if not os.path.isabs(name):
            name = os.path.join(comp_dir, name)
        path = src.from_dwarf(os.path.normpath(name))
        if path != cu_path[cu.cu_offset]:
            out.append((lo, hi, path))
    return out


def _cu_ranges(dw: Any, cu: Any, top: Any, _rl: Any) -> Iterable[tuple[int, int]]:
    attrs = top.attributes
    lo = attrs.get("DW_AT_low_pc")
    if "DW_AT_ranges" in attrs:
        rl = dw.range_lists()
        if rl is None:
            return []
        base = lo.value if lo is not None else 0
        out = []
        for e in rl.get_range_list_at_offset(attrs["DW_AT_ranges"].value, cu=cu):
            if hasattr(e, "base_address"):
                base = e.base_address
            elif e.begin_offset != e.end_offset:
                off = 0 if getattr(e, "is_absolute", False) else base
                out.append((off + e.begin_offset, off + e.end_offset))
        return out
    hi = attrs.get("DW_AT_high_pc")
    if lo is not None and hi is not None:
        end = hi.value if hi.form == "DW_FORM_addr" else lo.value + hi.value
        return [(lo.value, end)] if end > lo.value else []
    return []


# ----------------------------------------------------------------------------- analysis

_TYPE_NAMES = {STT_FUNC: "func", STT_OBJECT: "object", STT_TLS: "tls"}
_BIND_RANK = {1: 0, 2: 1, 0: 2}          # global, weak, local


def analyze(path: str, groups: Sequence[tuple[str, str]] = (),
            callouts: Sequence[str] = CALLOUT_PATTERNS,
            source_root: Path | None = None) -> Report:
    """Read ``path`` and attribute every allocated byte. Raises FootprintError on bad input."""
    t0 = time.perf_counter()
    elf, raw = _open_elf(path)
    try:
        return _analyze(path, elf, raw, groups, callouts, source_root, t0)
    except FootprintError:
        raise
    except Exception as e:
        raise FootprintError(f"{path}: corrupt ELF ({type(e).__name__}: {e})") from None


def _default_root() -> Path | None:
    try:
        from .build import repo_root
        return repo_root()
    except Exception:
        return None


def _analyze(path: str, elf: Any, raw: bytes, groups: Sequence[tuple[str, str]],
             callouts: Sequence[str], source_root: Path | None, t0: float) -> Report:
    src = SourceIndex(source_root if source_root is not None else _default_root())
    headers, sections = _sections(elf, raw, path)
    is_rel = elf["e_type"] == "ET_REL"
    is_arm = elf["e_machine"] == "EM_ARM"
    seg_rom, seg_ram = _segments(elf)
    syms = _symbols(elf, raw, headers)
    dwarf = _dwarf(elf, headers, is_rel, src)

    by_index = {s.index: s for s in sections}
    per_section: dict[int, list[_Sym]] = {}
    anchors: dict[int, list[tuple[int, str]]] = {}
    for s in syms:
        sec = by_index.get(s.shndx)
        if sec is None:
            continue
        if is_arm and s.type == STT_FUNC:
            s.value &= ~1
        if s.file is not None:
            off = s.value - (0 if is_rel else sec.addr)
            anchors.setdefault(s.shndx, []).append((off, s.file))
        if s.size > 0 and not MAPPING_SYMBOL.match(s.name):
            per_section.setdefault(s.shndx, []).append(s)
    for lst in anchors.values():
        lst.sort(key=lambda a: a[0])

    totals = Usage()
    symbols: list[SymbolInfo] = []

    def from_anchor(anchor_list: list[tuple[int, str]], offs: list[int], lo: int, hi: int,
                    names: Sequence[str]) -> str | None:
        i = bisect.bisect_left(offs, lo)
        return src.from_symtab(anchor_list[i][1], names) if i < len(offs) and offs[i] < hi \
            else None

    for sec in sections:
        totals.add(sec.kind, sec.size)
        base = 0 if is_rel else sec.addr
        cands = sorted(per_section.get(sec.index, []),
                       key=lambda s: (s.value, -s.size, 0 if s.type in _TYPE_NAMES else 1,
                                      _BIND_RANK.get(s.bind, 3), s.name))
        sec_anchors = anchors.get(sec.index, [])
        anchor_offs = [a[0] for a in sec_anchors]
        # 1. one group per distinct start: the longest symbol there, its aliases, and any
        #    symbol lying inside it; each byte goes to the first group that covers it
        groups_: list[tuple[int, int, int, list[_Sym]]] = []   # start, end, bytes, members
        gaps: list[tuple[int, int]] = []
        covered = 0
        for s in cands:
            start = s.value - base
            if start >= sec.size or start < 0:
                continue
            end = min(start + s.size, sec.size)
            take = max(0, end - max(start, covered))
            if groups_ and (take == 0 or start == groups_[-1][0]):
                g0, g1, gb, members = groups_[-1]
                members.append(s)
                groups_[-1] = (g0, max(g1, end), gb + take, members)
            else:
                if start > covered:
                    gaps.append((covered, start))
                groups_.append((start, end, take, [s]))
            covered = max(covered, end)
        if sec.size > covered:
            gaps.append((covered, sec.size))
        # 2. the source file of each group
        for start, end, nbytes, members in groups_:
            head = members[0]
            names = [m.name for m in members]
            addr = sec.addr + start
            is_code = sec.kind == "text" and head.type != STT_OBJECT
            file = dwarf.code_file(addr) if is_code else dwarf.variable_file(addr, names)
            if file is None:
                local = next((m.file for m in members if m.file is not None), None)
                if local is not None:
                    file = src.from_symtab(local, names)
            if file is None:
                file = from_anchor(sec_anchors, anchor_offs, start, end, names)
            file = src.part_of(file, names) if file else NO_FILE
            symbols.append(SymbolInfo(head.name, _TYPE_NAMES.get(head.type, "notype"), sec.name,
                                      sec.kind, addr, min(head.size, sec.size - start), nbytes,
                                      file, classify(file, groups) if file != NO_FILE else OTHER,
                                      names[1:]))
        # 3. bytes no symbol covers: from a symbol-table anchor (an ARM mapping symbol or a
        #    local of a known file) onwards they belong to that anchor's file; before any
        #    anchor (alignment padding, fill, linker-reserved space) they stay unattributed
        anon: dict[str, int] = {}
        for g0, g1 in gaps:
            i = bisect.bisect_left(anchor_offs, g0)
            owner, pos = UNATTRIBUTED, g0
            while i < len(anchor_offs) and anchor_offs[i] < g1:
                if anchor_offs[i] > pos:
                    anon[owner] = anon.get(owner, 0) + anchor_offs[i] - pos
                    pos = anchor_offs[i]
                owner = sec_anchors[i][1]
                i += 1
            anon[owner] = anon.get(owner, 0) + g1 - pos
        for owner, n in anon.items():
            if owner == UNATTRIBUTED:
                symbols.append(SymbolInfo(f"{UNATTRIBUTED} {sec.name}", "gap", sec.name,
                                          sec.kind, sec.addr, sec.size, n, UNATTRIBUTED,
                                          UNATTRIBUTED))
            else:
                file = src.from_symtab(owner, ())
                symbols.append(SymbolInfo(f"(no symbol) {sec.name}", "anon", sec.name, sec.kind,
                                          sec.addr, sec.size, n, file, classify(file, groups)))

    files: dict[str, tuple[str, Usage]] = {}
    components: dict[str, Usage] = {c: Usage() for c in COMPONENTS}
    for sym in symbols:
        comp, usage = files.setdefault(sym.file, (sym.component, Usage()))
        usage.add(sym.kind, sym.bytes)
        components.setdefault(sym.component, Usage()).add(sym.kind, sym.bytes)
    components = {c: u for c, u in components.items() if u.text or u.data or u.bss}

    pats = [p.lower() for p in callouts]
    called = [s for s in symbols if s.type != "gap" and any(
        fnmatch.fnmatchcase(n.lower(), p) for n in [s.name, *s.aliases] for p in pats)]
    symbols.sort(key=lambda s: (-s.bytes, s.name))
    called.sort(key=lambda s: (-s.bytes, s.name))
    machine = str(elf["e_machine"]).removeprefix("EM_")
    return Report(path, machine, elf.elfclass, totals, seg_rom, seg_ram, sections, symbols,
                  dict(sorted(files.items(), key=lambda kv: -(kv[1][1].rom + kv[1][1].ram))),
                  components, called, list(callouts), dwarf.units, dwarf.note,
                  seconds=time.perf_counter() - t0, has_symtab=bool(syms))


# ----------------------------------------------------------------------------- output

def _n(v: int) -> str:
    return f"{v:,}"


def _d(v: int) -> str:
    return f"{v:+,}" if v else "0"


def _pct(n: int, cap: int | None) -> str:
    return "-" if not cap else f"{100.0 * n / cap:.2f} %"


def _human(n: int) -> str:
    for unit, div in (("MiB", MiB), ("KiB", KiB)):
        if n >= div and n % (div // 4 if div > 1 else 1) == 0:
            return f"{n / div:g} {unit}"
    return f"{n:,} B"


def render(r: Report, fmt: str = "table", top: int = 25, all_rows: bool = False) -> str:
    md = fmt == "markdown"
    tf = "github" if md else "simple"
    out: list[str] = []

    def head(title: str) -> None:
        out.append(f"\n### {title}\n" if md else f"\n{title}")

    t = r.totals
    cap = ""
    if r.board or r.ram_capacity or r.flash_capacity:
        who = f"board {r.board.name}" if r.board else "capacity"
        cap = (f"{who}: flash {_human(r.flash_capacity) if r.flash_capacity else '?'}, "
               f"SRAM {_human(r.ram_capacity) if r.ram_capacity else '?'}")
        if r.board:
            cap += f" ({r.board.note})"
    what = f"ELF{r.elf_class} {r.machine}, DWARF: {r.dwarf_note}" + \
        ("" if r.has_symtab else "; no symbol table (stripped): nothing can be attributed")
    out.append(f"## footprint of `{r.path}`\n\n{what}" if md else f"{r.path}: {what}")
    if cap:
        out.append(cap if not md else f"\n{cap}")
    rows = [["ROM (flash) = text + data", _n(t.rom), _pct(t.rom, r.flash_capacity),
             _n(r.segments_rom)],
            ["RAM = data + bss", _n(t.ram), _pct(t.ram, r.ram_capacity), _n(r.segments_ram)]]
    out.append("")
    out.append(tabulate([[_n(t.text), _n(t.data), _n(t.bss)]],
                        headers=["text", "data", "bss"], tablefmt=tf, disable_numparse=True))
    out.append("")
    out.append(tabulate(rows, headers=["", "bytes", "of board", "PT_LOAD segments"],
                        tablefmt=tf, disable_numparse=True))

    head("by component")
    out.append(tabulate([[c, _n(u.text), _n(u.data), _n(u.bss), _n(u.rom), _n(u.ram),
                          _pct(u.rom, r.flash_capacity), _pct(u.ram, r.ram_capacity)]
                         for c, u in r.components.items()],
                        headers=["component", "text", "data", "bss", "ROM", "RAM", "% flash",
                                 "% SRAM"], tablefmt=tf, disable_numparse=True))

    called = r.callouts if all_rows else r.callouts[:top]
    head("training arena and replay buffer (symbols matching " + ", ".join(r.callout_patterns)
         + (f"; {len(called)} of {len(r.callouts)}" if len(called) < len(r.callouts) else "")
         + ")")
    if called:
        out.append(tabulate([[s.name, s.section, f"{s.address:#x}", _n(s.bytes),
                              "RAM" if s.kind != "text" else "flash", s.file]
                             for s in called],
                            headers=["symbol", "section", "address", "bytes", "in", "file"],
                            tablefmt=tf, disable_numparse=True))
    else:
        out.append("none found")

    files = list(r.files.items())
    shown = files if all_rows else files[:top]
    head(f"by source file ({len(shown)} of {len(files)}"
         + ("" if all_rows or len(shown) == len(files) else "; --all for every one") + ")")
    out.append(tabulate([[f, c, _n(u.text), _n(u.data), _n(u.bss), _n(u.rom), _n(u.ram)]
                         for f, (c, u) in shown],
                        headers=["file", "component", "text", "data", "bss", "ROM", "RAM"],
                        tablefmt=tf, disable_numparse=True))

    syms = r.symbols if all_rows else r.symbols[:top]
    head(f"largest symbols ({len(syms)} of {len(r.symbols)})")
    out.append(tabulate([[s.name + (f" (= {', '.join(s.aliases)})" if s.aliases else ""),
                          s.type, s.section, _n(s.bytes), s.file, s.component] for s in syms],
                        headers=["symbol", "type", "section", "bytes", "file", "component"],
                        tablefmt=tf, disable_numparse=True))
    return "\n".join(out) + "\n"


def _sym_keys(r: Report) -> dict[str, SymbolInfo]:
    counts: dict[str, int] = {}
    for s in r.symbols:
        counts[s.name] = counts.get(s.name, 0) + 1
    return {(s.name if counts[s.name] == 1 else f"{s.name} ({s.file})"): s for s in r.symbols}


def diff(old: Report, new: Report) -> dict[str, Any]:
    comps = []
    for c in dict.fromkeys([*old.components, *new.components]):
        o, n = old.components.get(c, Usage()), new.components.get(c, Usage())
        comps.append({"component": c, "old": o.as_dict(), "new": n.as_dict(),
                      "delta": {k: n.as_dict()[k] - o.as_dict()[k] for k in o.as_dict()}})
    ko, kn = _sym_keys(old), _sym_keys(new)
    syms = []
    for k in dict.fromkeys([*ko, *kn]):
        o, n = ko.get(k), kn.get(k)
        ob, nb = (o.bytes if o else 0), (n.bytes if n else 0)
        if ob == nb and o is not None and n is not None:
            continue
        ref = n or o
        assert ref is not None
        syms.append({"symbol": k, "kind": ref.kind, "file": ref.file, "old": ob, "new": nb,
                     "delta": nb - ob,
                     "status": "added" if o is None else "removed" if n is None else "changed"})
    syms.sort(key=lambda d: (-abs(d["delta"]), d["symbol"]))
    tot = {k: new.totals.as_dict()[k] - old.totals.as_dict()[k] for k in new.totals.as_dict()}
    return {"old": old.path, "new": new.path, "totals": {"old": old.totals.as_dict(),
            "new": new.totals.as_dict(), "delta": tot}, "components": comps, "symbols": syms}


def render_diff(d: dict[str, Any], fmt: str = "table", top: int = 25,
                all_rows: bool = False) -> str:
    md = fmt == "markdown"
    tf = "github" if md else "simple"
    out = [f"\n## diff `{d['old']}` -> `{d['new']}`\n" if md
           else f"\ndiff {d['old']} -> {d['new']}"]
    t = d["totals"]
    out.append(tabulate([[k, _n(t["old"][k]), _n(t["new"][k]), _d(t["delta"][k])]
                         for k in ("text", "data", "bss", "rom", "ram")],
                        headers=["", "old", "new", "delta"], tablefmt=tf,
                        disable_numparse=True))
    out.append("\n### by component\n" if md else "\nby component")
    out.append(tabulate([[c["component"], _n(c["old"]["rom"]), _n(c["new"]["rom"]),
                          _d(c["delta"]["rom"]), _n(c["old"]["ram"]), _n(c["new"]["ram"]),
                          _d(c["delta"]["ram"])] for c in d["components"]],
                        headers=["component", "ROM old", "ROM new", "ROM delta", "RAM old",
                                 "RAM new", "RAM delta"], tablefmt=tf, disable_numparse=True))
    syms = d["symbols"] if all_rows else d["symbols"][:top]
    out.append(f"\n### symbols that changed ({len(syms)} of {len(d['symbols'])})\n" if md
               else f"\nsymbols that changed ({len(syms)} of {len(d['symbols'])})")
    out.append(tabulate([[s["symbol"], s["status"], s["kind"], _n(s["old"]), _n(s["new"]),
                          _d(s["delta"]), s["file"]] for s in syms],
                        headers=["symbol", "status", "kind", "old", "new", "delta", "file"],
                        tablefmt=tf, disable_numparse=True) if syms else "none")
    return "\n".join(out) + "\n"



# ----------------------------------------------------------------------------- benchmark

def _bench_sources(n_files: int, n_funcs: int) -> dict[str, str]:
    files: dict[str, str] = {}
    decls, names = [], []
    for f in range(n_files):
        lines = [f"/* generated by kilolearn footprint --bench: unit {f} */", "#include <stdint.h>",
                 f"struct rec{f} {{ int32_t a; int16_t b[4]; float w; }};",
                 f"static struct rec{f} table{f}[8];", f"int32_t counter{f};",
                 f"int32_t buf{f}[32] = {{1}};", f"uint8_t replay_buf{f}[{64 + f}];"]
        for g in range(n_funcs):
            name = f"f{f}_{g}"
            names.append(name)
            decls.append(f"int32_t {name}(int32_t, const int32_t *, int);")
            lines.append(
                f"int32_t {name}(int32_t x, const int32_t *p, int n) {{\n"
                f"  int32_t acc = x ^ {(g * 2654435761) % 65536};\n"
                f"  for (int i = 0; i < n; i++) {{ int32_t t = p[i] * {g % 13 + 3}; "
                f"acc += t >> {g % 7}; }}\n"
                f"  table{f}[{g % 8}].a += acc; counter{f} += {g}; replay_buf{f}[{g % 64}]++;\n"
                f"  return acc + buf{f}[{g % 32}];\n}}")
        files[f"unit{f}.c"] = "\n".join(lines) + "\n"
    files["main.c"] = "\n".join(
        ["#include <stdint.h>", *decls,
         "typedef int32_t (*fn)(int32_t, const int32_t *, int);",
         "const fn all[] = {" + ", ".join(names) + "};",
         "uint8_t arena_mem[16384];",
         "int main(void) { int32_t s = arena_mem[0];",
         "  for (unsigned i = 0; i < sizeof all / sizeof all[0]; i++) s += all[i](s, 0, 0);",
         "  return s; }"]) + "\n"
    return files


def build_bench_elf(out_dir: Path, size_mb: float = 5.0, jobs: int = 2) -> Path:
    """Generate C with thousands of functions, compile it with arm-none-eabi-gcc -g into
    ``out_dir/bench.elf`` (about ``size_mb`` MB, most of it DWARF) and return its path."""
    import shutil
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    gcc = shutil.which("arm-none-eabi-gcc")
    if gcc is None:
        raise FootprintError("--bench needs arm-none-eabi-gcc")
    n_files = max(1, round(4 * size_mb))          # about 250 KB of ELF per 400-function unit
    sources = _bench_sources(n_files, 400)
    flags = ["-mcpu=cortex-m4", "-mthumb", "-O1", "-g", "-ffunction-sections", "-fdata-sections"]
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in sources.items():
        (out_dir / name).write_text(text)

    def compile_one(name: str) -> str:
        obj = out_dir / (name[:-2] + ".o")
        r = subprocess.run([gcc, *flags, "-c", str(out_dir / name), "-o", str(obj)],
                           capture_output=True, text=True)
        if r.returncode:
            raise FootprintError(f"compiling {name} failed: {r.stderr.strip()[:300]}")
        return str(obj)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        objs = list(pool.map(compile_one, sorted(sources)))
    elf = out_dir / "bench.elf"
    r = subprocess.run([gcc, *flags, "--specs=nosys.specs", *objs, "-o", str(elf)],
                       capture_output=True, text=True)
    if r.returncode:
        raise FootprintError(f"linking the benchmark ELF failed: {r.stderr.strip()[:300]}")
    return elf


def bench(size_mb: float = 5.0, keep: Path | None = None) -> int:
    """Build a large ELF with DWARF and time ``analyze`` on it (in process and end to end)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kl-footprint-bench-") as tmp:
        work = keep or Path(tmp)
        t0 = time.perf_counter()
        elf = build_bench_elf(work, size_mb)
        t_build = time.perf_counter() - t0
        sz = elf.stat().st_size
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            r = analyze(str(elf))
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "kilolearn.cli", "footprint", str(elf)], check=True,
                       stdout=subprocess.DEVNULL)
        t_cli = time.perf_counter() - t0
        print(f"benchmark ELF: {sz:,} bytes ({sz / MiB:.2f} MiB), {r.dwarf_note}, "
              f"{len(r.symbols):,} symbols, {len(r.files)} files; built in {t_build:.1f} s")
        print(f"analysis: first {times[0]:.3f} s, best of 3 {min(times):.3f} s (in process); "
              f"end to end `kilolearn footprint ELF` (a new Python process) {t_cli:.3f} s")
    return 0


# ----------------------------------------------------------------------------- command line

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("elf", nargs="?", help="the ELF file to analyse")
    p.add_argument("--board", help=f"percentages of this board's memory ({', '.join(BOARDS)})")
    p.add_argument("--ram", type=_capacity_arg,
                   help="SRAM size (192K, 2M, bytes); overrides --board")
    p.add_argument("--flash", type=_capacity_arg, help="flash size; overrides --board")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the report as JSON")
    out.add_argument("--markdown", action="store_true", help="print Markdown tables")
    p.add_argument("--diff", metavar="OLD.elf", help="also show deltas against an older ELF")
    p.add_argument("--max-ram", type=_size_arg, metavar="SIZE",
                   help=f"exit {EXIT_OVER_LIMIT} if RAM (data + bss) exceeds SIZE")
    p.add_argument("--max-flash", type=_size_arg, metavar="SIZE",
                   help=f"exit {EXIT_OVER_LIMIT} if ROM (text + data) exceeds SIZE")
    from .cliargs import FloatRange, IntRange

    p.add_argument("--top", type=IntRange(1, 1_000_000), default=25,
                   help="rows per table (default 25)")
    p.add_argument("--all", action="store_true", help="every file and symbol")
    p.add_argument("--callout", action="append", default=[], metavar="GLOB",
                   help="also call out symbols matching GLOB (besides *arena*, *replay*)")
    p.add_argument("--group", action="append", default=[], metavar="GLOB=COMPONENT",
                   help="put source files matching GLOB in COMPONENT (checked first)")
    p.add_argument("--bench", action="store_true",
                   help="build a large ELF with DWARF in a temp dir and time the analysis")
    p.add_argument("--bench-size", type=FloatRange(0.0, 200.0), default=5.0, metavar="MB",
                   help="approximate size of the benchmark ELF (default 5)")


def run(a: argparse.Namespace) -> int:
    """Entry point for ``kilolearn footprint``; returns the exit code."""
    prog = "kilolearn footprint"
    try:
        if a.bench:
            return bench(a.bench_size)
        if not a.elf:
            raise FootprintError("give an ELF file (or --bench)")
        groups = []
        for g in a.group:
            if "=" not in g:
                raise FootprintError(f"--group {g!r}: expected GLOB=COMPONENT")
            pat, comp = g.split("=", 1)
            groups.append((pat, comp))
        board = find_board(a.board) if a.board else None
        patterns = [*CALLOUT_PATTERNS, *a.callout]
        report = analyze(a.elf, groups, patterns)
        report.board = board
        report.ram_capacity = a.ram if a.ram is not None else (board.ram if board else None)
        report.flash_capacity = a.flash if a.flash is not None else \
            (board.flash if board else None)
        old = analyze(a.diff, groups, patterns) if a.diff else None
    except FootprintError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    d = diff(old, report) if old is not None else None
    if a.json:
        doc = report.as_dict()
        if d is not None:
            doc["diff"] = d
        print(json.dumps(doc, indent=2))
    else:
        fmt = "markdown" if a.markdown else "table"
        text = render(report, fmt, a.top, a.all)
        if d is not None:
            text += render_diff(d, fmt, a.top, a.all)
        sys.stdout.write(text)
    sys.stdout.flush()
    status = 0
    for what, used, limit, opt in (("RAM (data + bss)", report.totals.ram, a.max_ram, "--max-ram"),
                                   ("ROM (text + data)", report.totals.rom, a.max_flash,
                                    "--max-flash")):
        if limit is not None and used > limit:
            print(f"{prog}: {a.elf}: {what} is {used:,} bytes, over {opt} {limit:,} by "
                  f"{used - limit:,}", file=sys.stderr)
            status = EXIT_OVER_LIMIT
    return status


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kilolearn footprint", description=__doc__.split("\n")[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
