"""DWARF: the compile unit (or declaring file) of every code address and variable."""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .sources import SourceIndex

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
