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

from .analysis import _BIND_RANK, _TYPE_NAMES, _analyze, _default_root, analyze  # noqa: F401
from .bench import _bench_sources, bench, build_bench_elf  # noqa: F401
from .boards import (  # noqa: F401
    _SIZE,
    APP,
    BOARD_ALIASES,
    BOARDS,
    CALLOUT_PATTERNS,
    COMPONENTS,
    ENGINE,
    EXIT_BAD_INPUT,
    EXIT_OVER_LIMIT,
    KERNELS,
    LIBC,
    MAPPING_SYMBOL,
    NO_FILE,
    OTHER,
    PF_W,
    PORT,
    SHF_ALLOC,
    SHF_EXECINSTR,
    SHF_WRITE,
    SHN_LORESERVE,
    SKIP_DIRS,
    SOURCE_SUFFIXES,
    STB_LOCAL,
    STT_FILE,
    STT_FUNC,
    STT_OBJECT,
    STT_SECTION,
    STT_TLS,
    UNATTRIBUTED,
    ZEPHYR,
    Board,
    FootprintError,
    KiB,
    MiB,
    _capacity_arg,
    _size_arg,
    find_board,
    parse_size,
)
from .cli import add_arguments, main, run  # noqa: F401
from .dwarf import _attr_str, _cu_ranges, _declared_elsewhere, _Dwarf, _dwarf  # noqa: F401
from .elf import _cstr, _open_elf, _sections, _segments, _Sym, _symbols  # noqa: F401
from .output import _d, _human, _n, _pct, _sym_keys, diff, render, render_diff  # noqa: F401
from .report import Report, SectionInfo, SymbolInfo, Usage  # noqa: F401
from .sources import _LIBC_NAMES, _LIBC_PARTS, SourceIndex, classify  # noqa: F401
