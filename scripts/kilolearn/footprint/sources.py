"""Source files: STT_FILE names and DWARF paths to repository paths, components by path."""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Sequence
from pathlib import Path

from .boards import (
    APP,
    ENGINE,
    KERNELS,
    LIBC,
    OTHER,
    PORT,
    SKIP_DIRS,
    SOURCE_SUFFIXES,
    UNATTRIBUTED,
    ZEPHYR,
)

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
