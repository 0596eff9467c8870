"""Output: tables, JSON, Markdown, and diffs of two reports."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from .boards import KiB, MiB
from .report import Report, SymbolInfo, Usage

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
    if r.ram_in_regions is not None:
        out.append(f"\nRAM by address (the board's RAM regions): sections {_n(r.ram_in_regions)}"
                   f" B, PT_LOAD segments {_n(r.segments_ram)} B (alignment padding "
                   f"{_n(r.segments_ram - r.ram_in_regions)} B); data + bss counts "
                   f"{_n(t.ram - r.ram_in_regions)} B of writable sections kept in flash")
    for note in r.segment_notes:
        out.append(f"note: {note}")

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
