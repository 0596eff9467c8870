"""The analysis: every allocated byte attributed to a symbol, a file and a component."""

from __future__ import annotations

import bisect
import fnmatch
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .boards import (
    CALLOUT_PATTERNS,
    COMPONENTS,
    MAPPING_SYMBOL,
    NO_FILE,
    OTHER,
    STT_FUNC,
    STT_OBJECT,
    STT_TLS,
    UNATTRIBUTED,
    FootprintError,
)
from .dwarf import _dwarf
from .elf import _open_elf, _sections, _segments, _Sym, _symbols, ram_by_address
from .report import Report, SymbolInfo, Usage
from .sources import SourceIndex, classify

# ----------------------------------------------------------------------------- analysis

_TYPE_NAMES = {STT_FUNC: "func", STT_OBJECT: "object", STT_TLS: "tls"}
_BIND_RANK = {1: 0, 2: 1, 0: 2}          # global, weak, local


def analyze(path: str, groups: Sequence[tuple[str, str]] = (),
            callouts: Sequence[str] = CALLOUT_PATTERNS,
            source_root: Path | None = None, regions: tuple = ()) -> Report:
    """Read ``path`` and attribute every allocated byte. ``regions``: the board's memory map
    (zbuild.Region), for the RAM cross-check by address. Raises FootprintError on bad input."""
    t0 = time.perf_counter()
    elf, raw = _open_elf(path)
    try:
        return _analyze(path, elf, raw, groups, callouts, source_root, t0, regions)
    except FootprintError:
        raise
    except Exception as e:
        raise FootprintError(f"{path}: corrupt ELF ({type(e).__name__}: {e})") from None


def _default_root() -> Path | None:
    try:
        from ..device.build import repo_root
        return repo_root()
    except Exception:
        return None


def _analyze(path: str, elf: Any, raw: bytes, groups: Sequence[tuple[str, str]],
             callouts: Sequence[str], source_root: Path | None, t0: float,
             regions: tuple = ()) -> Report:
    src = SourceIndex(source_root if source_root is not None else _default_root())
    headers, sections = _sections(elf, raw, path)
    is_rel = elf["e_type"] == "ET_REL"
    is_arm = elf["e_machine"] == "EM_ARM"
    seg_rom, seg_ram, seg_notes = _segments(elf, regions)
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
                  seconds=time.perf_counter() - t0, has_symtab=bool(syms),
                  segment_notes=seg_notes, ram_in_regions=ram_by_address(sections, regions))
