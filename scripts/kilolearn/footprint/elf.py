"""ELF reading: sections, symbols, segments (pyelftools for headers, raw tables for speed)."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .boards import (
    PF_W,
    PF_X,
    SHF_ALLOC,
    SHF_EXECINSTR,
    SHF_WRITE,
    SHN_LORESERVE,
    STB_LOCAL,
    STT_FILE,
    STT_SECTION,
    FootprintError,
)
from .report import SectionInfo

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


def _segments(elf: Any, regions: tuple = ()) -> tuple[int, int, list[str]]:
    """(ROM, RAM, notes) from the ``PT_LOAD`` program headers. ROM: the file bytes. RAM: the
    bytes of the address space the segments cover in RAM, overlaps counted once. With a memory
    map (``regions``, zbuild.Region): in each RAM region, from the first to the last byte a
    segment takes there (padding between segments included, as the linker's
    ``--print-memory-usage`` counts).
    Without one a segment is RAM if it is writable, except an executable one placed at its
    load address: Zephyr links with ``-N``, which makes its code and rodata in flash one
    RWE segment."""
    rom = 0
    spans: list[tuple[int, int]] = []
    notes: list[str] = []
    ram_regions = [r for r in regions if r.kind == "ram"]
    for i in range(elf.num_segments()):
        h = elf._get_segment_header(i)
        if h["p_type"] != "PT_LOAD":
            continue
        rom += h["p_filesz"]
        lo, hi = h["p_vaddr"], h["p_vaddr"] + h["p_memsz"]
        if hi <= lo:
            continue
        if ram_regions:
            spans += [(max(lo, r.addr), min(hi, r.end), k) for k, r in enumerate(ram_regions)
                      if lo < r.end and r.addr < hi]
        elif h["p_flags"] & PF_W:
            if h["p_flags"] & PF_X and h["p_vaddr"] == h["p_paddr"]:
                notes.append(f"PT_LOAD {i} (RWE at {lo:#x}, {hi - lo:,} B) is code at its "
                             "load address: counted as flash, not RAM")
            else:
                spans.append((lo, hi, -1))
    if ram_regions:  # in each region, what the linker counts: first to last byte used
        spans = [(min(lo for lo, _h, k in spans if k == j), max(h for _l, h, k in spans if k == j),
                  j) for j in {k for _l, _h, k in spans}]
    ram = end = 0
    for lo, hi, _k in sorted(spans):
        if hi > end:
            ram += hi - max(lo, end)
            end = hi
    return rom, ram, notes


def ram_by_address(sections: list[SectionInfo], regions: tuple) -> int | None:
    """Bytes of the allocated sections placed inside the RAM regions; None without a map."""
    ram_regions = [r for r in regions if r.kind == "ram"]
    if not ram_regions:
        return None
    return sum(s.size for s in sections
               if any(r.addr <= s.addr < r.end for r in ram_regions))
