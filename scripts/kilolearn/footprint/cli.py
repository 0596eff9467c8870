"""``kilolearn footprint``: where the RAM and the flash of a firmware ELF go (the command line)."""

from __future__ import annotations

import argparse
import json
import sys

from . import zbuild
from .analysis import analyze
from .bench import bench
from .boards import (
    BOARDS,
    CALLOUT_PATTERNS,
    EXIT_BAD_INPUT,
    EXIT_OVER_LIMIT,
    FootprintError,
    _capacity_arg,
    _size_arg,
    find_board,
)
from .output import diff, render, render_diff

# ----------------------------------------------------------------------------- command line

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("elf", nargs="?", help="the ELF file to analyse")
    p.add_argument("--board", help="percentages of this board's memory: a Zephyr build "
                   f"directory (its devicetree's memories) or one of {', '.join(BOARDS)}; "
                   "default: the build the ELF lies in, if it is a Zephyr build")
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
    from ..cliargs import FloatRange, IntRange

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
        if board is None and zbuild.zephyr_dir(a.elf) is not None:
            board = zbuild.board_from_build(a.elf)
        patterns = [*CALLOUT_PATTERNS, *a.callout]
        report = analyze(a.elf, groups, patterns, regions=board.regions if board else ())
        report.board = board
        report.ram_capacity = a.ram if a.ram is not None else (board.ram if board else None)
        report.flash_capacity = a.flash if a.flash is not None else \
            (board.flash or None if board else None)
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
