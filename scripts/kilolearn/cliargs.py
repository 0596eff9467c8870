"""Argument checking for the ``kilolearn`` command line.

Every subcommand checks its arguments before it starts any work: argparse ``type`` callables
for numbers (with ranges), paths (an input file that exists and is readable; an output path
whose directory exists and can be written) and the structured strings (layer sizes, budgets,
pyserial URLs, selective-update specs); each command then checks what depends on several
arguments or on the data (``UsageError``). A bad argument ends the run with one line on stderr,
``kilolearn <command>: <what is wrong>``, and exit status 2; see :func:`report` for the other
exit statuses. The type callables carry their limits as attributes so that a test can derive
bad values for every argument of every subcommand from the parser itself.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

if TYPE_CHECKING:
    from .core.model import Graph
    from .device import protocol
    from .formats import export

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEBUG_ENV = "KILOLEARN_DEBUG"
MAX_LINE = 2000  # characters of an error line (the rest is cut)
_T = TypeVar("_T")


class UsageError(Exception):
    """A bad argument or input found before (or instead of) the work: one line, exit 2."""


def one_line(text: str) -> str:
    """``text`` as one line: the first line and, when there are more, the last one."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    if not lines:
        return ""
    s = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    return s if len(s) <= MAX_LINE else s[:MAX_LINE - 3] + "..."


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``kilolearn <command>: <message>``, exit 2 (argparse
    prints the usage and the message on two lines). Subparsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {one_line(message)}\n")


def _fmt(v: float) -> str:
    return f"{v:,}" if isinstance(v, int) else f"{v:g}"


def _reworded(parse: Callable[[str], _T], text: str,
              errors: type[Exception] | tuple[type[Exception], ...],
              why: Callable[[Exception], str]) -> _T:
    """``parse(text)``; one of its ``errors`` becomes argparse's error with the line ``why(e)``
    (for the structured strings that a library function parses)."""
    try:
        return parse(text)
    except errors as e:
        raise argparse.ArgumentTypeError(why(e)) from None


class ArgType:
    """Base of the argparse ``type`` callables here. ``kind`` names what a value is checked for
    (tests/python/cli_sweep.py derives the values to refuse from it); ``name`` is what argparse
    calls a value in its own messages (the callable's ``__name__``). A subclass gives both as
    class arguments, ``class Budget(ArgType, kind="budget")`` (``name`` defaults to ``kind``),
    or sets them per instance."""

    kind = ""
    name = ""

    def __init_subclass__(cls, kind: str = "", name: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if kind:
            cls.kind, cls.name = kind, name or kind

    @property
    def __name__(self) -> str:
        return self.name


# ---------------------------------------------------------------------------- numbers


class IntRange(ArgType, kind="int", name="integer"):
    """An integer in [lo, hi]."""

    def __init__(self, lo: int, hi: int):
        self.lo, self.hi = lo, hi

    def __call__(self, text: str) -> int:
        s = text.strip()
        try:
            if not re.fullmatch(r"[+-]?[0-9]{1,30}", s):
                raise ValueError(s)
            v = int(s, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer from {_fmt(self.lo)} to {_fmt(self.hi)}, got {text!r}"
            ) from None
        if not self.lo <= v <= self.hi:
            raise argparse.ArgumentTypeError(
                f"{s} is out of range: expected {_fmt(self.lo)} to {_fmt(self.hi)}")
        return v


class ByteSize(ArgType, kind="size", name="size"):
    """Bytes, plain or with a K or M suffix (65536, 64K, 4M), in [lo, hi]."""

    def __init__(self, lo: int, hi: int):
        self.lo, self.hi = lo, hi

    def __call__(self, text: str) -> int:
        m = re.fullmatch(r"\s*([0-9]{1,12})\s*([KkMm]?)\s*", text)
        if m is None:
            raise argparse.ArgumentTypeError(
                f"{text[:40]!r}: expected bytes such as 65536, 64K or 4M")
        v = int(m.group(1)) << {"": 0, "k": 10, "m": 20}[m.group(2).lower()]
        if not self.lo <= v <= self.hi:
            raise argparse.ArgumentTypeError(
                f"{text.strip()} is out of range: expected {self.lo:,} to {self.hi:,} bytes")
        return v


class FloatRange(ArgType, kind="float", name="number"):
    """A finite number in (lo, hi] (``lo_open``) or [lo, hi]."""

    def __init__(self, lo: float, hi: float, lo_open: bool = True):
        self.lo, self.hi, self.lo_open = lo, hi, lo_open

    def describe(self) -> str:
        return (f"{'above' if self.lo_open else 'from'} {_fmt(self.lo)} "
                f"{'and at most' if self.lo_open else 'to'} {_fmt(self.hi)}")

    def __call__(self, text: str) -> float:
        try:
            v = float(text)
        except (ValueError, TypeError):
            raise argparse.ArgumentTypeError(
                f"expected a number {self.describe()}, got {text!r}") from None
        if not math.isfinite(v) or v > self.hi or v < self.lo or (self.lo_open and v == self.lo):
            raise argparse.ArgumentTypeError(
                f"{text.strip()} is out of range: expected a number {self.describe()}")
        return v


# the emulated boards
BOARDS = ["mps2-an385", "mps2-an386", "mps2-an500", "mps2-an505", "mps3-an547"]
CPU = {"mps2-an385": "Cortex-M3", "mps2-an386": "Cortex-M4F", "mps2-an500": "Cortex-M7",
       "mps2-an505": "Cortex-M33", "mps3-an547": "Cortex-M55", "host": "host", "host-pty": "host"}
U32 = 2**32 - 1
SEED = IntRange(0, 2**31 - 1)  # seeds go to the device as u32, some as seed + 1
LR = FloatRange(0.0, 10.0)
EPOCHS = IntRange(1, 1000)
TIMEOUT = FloatRange(0.0, 3600.0)


# ---------------------------------------------------------------------------- paths


def _path(text: str) -> Path:
    if not isinstance(text, str) or not text or "\0" in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a file name")
    return Path(text)


def _stat(p: Path, text: str) -> os.stat_result | None:
    """``p``'s stat, None when nothing is there; any other OS error is argparse's error."""
    try:
        return p.stat()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{text}: {e.strerror or e}") from None


class InFile(ArgType, kind="in"):
    """An existing, readable regular file; ``suffixes``: the names it may end in."""

    def __init__(self, what: str = "file", suffixes: tuple[str, ...] = ()):
        self.what, self.suffixes = what, suffixes
        self.name = what

    def __call__(self, text: str) -> str:
        p = _path(text)
        if self.suffixes and p.suffix.lower() not in self.suffixes:
            raise argparse.ArgumentTypeError(
                f"{text}: expected a {' or '.join(self.suffixes)} file")
        if (st := _stat(p, text)) is None:
            raise argparse.ArgumentTypeError(f"{text}: no such file")
        if stat.S_ISDIR(st.st_mode):
            raise argparse.ArgumentTypeError(f"{text}: is a directory, expected a {self.what}")
        if not stat.S_ISREG(st.st_mode):
            raise argparse.ArgumentTypeError(f"{text}: not a regular file")
        try:
            with open(p, "rb") as f:
                f.read(1)
        except OSError as e:
            raise argparse.ArgumentTypeError(f"{text}: cannot read: {e.strerror or e}") from None
        return text


class InDir(ArgType, kind="dir", name="directory"):
    """An existing directory."""

    def __call__(self, text: str) -> str:
        p = _path(text)
        if (st := _stat(p, text)) is None:
            raise argparse.ArgumentTypeError(f"{text}: no such directory")
        if not stat.S_ISDIR(st.st_mode):
            raise argparse.ArgumentTypeError(f"{text}: not a directory")
        return text


def check_writable(text: str, suffixes: tuple[str, ...] = ()) -> str:
    """``text`` names a file this process can create or overwrite (checked by opening it, no
    data written; a file created for the check is removed again). Raises ArgumentTypeError."""
    p = _path(text)
    if suffixes and p.suffix.lower() not in suffixes:
        raise argparse.ArgumentTypeError(f"{text}: expected a {', '.join(suffixes)} file name")
    st = _stat(p, text)
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise argparse.ArgumentTypeError(f"{text}: is a directory, expected a file name")
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISCHR(st.st_mode)):
            raise argparse.ArgumentTypeError(f"{text}: not a regular file")
        flags = os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK
    else:
        parent = p.parent
        if not parent.is_dir():
            why = "does not exist" if not parent.exists() else "is not a directory"
            raise argparse.ArgumentTypeError(f"{text}: directory {parent} {why}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(p, flags, 0o644)
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{text}: cannot write: {e.strerror or e}") from None
    os.close(fd)
    if st is None:
        try:
            p.unlink()
        except OSError:
            pass
    return text


class OutFile(ArgType, kind="out", name="output file"):
    """A file to write: its directory exists and it can be created or overwritten."""

    def __init__(self, suffixes: tuple[str, ...] = ()):
        self.suffixes = suffixes

    def __call__(self, text: str) -> str:
        return check_writable(text, self.suffixes)


PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def need_matplotlib(option: str) -> None:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError(f"{option} needs matplotlib: pip install 'kilolearn[plot]'")


# ---------------------------------------------------------------------------- structured


class Sizes(ArgType, kind="sizes"):
    """MLP layer sizes, input to output: 64-32-10; each in [1, 65535] (the blob's u16), at
    least two classes, at most ``max_params`` weights in all."""

    def __init__(self, max_layers: int = 32, max_size: int = 65535, max_params: int = 1 << 24):
        self.max_layers, self.max_size, self.max_params = max_layers, max_size, max_params

    def __call__(self, text: str) -> list[int]:
        parts = text.strip().split("-")
        try:
            sizes = [int(s, 10) for s in parts]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected layer sizes like 64-32-10") from None
        if not 2 <= len(sizes) <= self.max_layers:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected 2 to {self.max_layers} layer sizes (input-...-classes)")
        bad = [s for s in sizes if not 1 <= s <= self.max_size]
        if bad:
            raise argparse.ArgumentTypeError(
                f"{text!r}: layer size {bad[0]} out of range 1 to {self.max_size:,}")
        if sizes[-1] < 2:
            raise argparse.ArgumentTypeError(f"{text!r}: a classifier needs at least 2 classes")
        n = sum(a * b for a, b in zip(sizes, sizes[1:], strict=False))
        if n > self.max_params:
            raise argparse.ArgumentTypeError(
                f"{text!r}: {n:,} weights, more than {self.max_params:,}")
        return sizes


class Budget(ArgType, kind="budget"):
    """Bytes (262144, 256K, 1M) or a board name, in [1, 4 GiB)."""

    def __call__(self, text: str) -> int:
        from .planner import budget_of

        v = _reworded(budget_of, text, (ValueError, OverflowError, IndexError), lambda e: (
            f"{text!r}: expected bytes (262144, 256K, 1M) or a board name ({one_line(str(e))})"))
        if not 1 <= v <= U32:
            raise argparse.ArgumentTypeError(f"{text!r}: expected 1 byte to 4 GiB")
        return v


class PortUrl(ArgType, kind="port"):
    """A pyserial URL or device: /dev/ttyACM0, socket://127.0.0.1:4321, rfc2217://..."""

    def __call__(self, text: str) -> str:
        if not text.strip() or "\0" in text:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected a serial device or URL (/dev/ttyACM0, socket://host:port)")
        if "://" in text:  # pyserial's URL handlers
            scheme = text.split("://", 1)[0].lower()
            if scheme not in ("socket", "rfc2217", "loop", "spy", "alt", "hwgrep", "cp2110"):
                raise argparse.ArgumentTypeError(
                    f"{text!r}: unknown URL scheme {scheme!r} (socket://, rfc2217://, loop://)")
        return text


class UpdateSpec(ArgType, kind="update"):
    """POLICY[:FRACTION] of a selective update: topr:0.2 (fraction in (0, 1])."""

    def __call__(self, text: str) -> tuple[str, float]:
        from .core import selective

        name, _, frac = text.partition(":")
        if name not in selective.POLICIES:
            raise argparse.ArgumentTypeError(
                f"{text!r}: unknown policy {name!r} (known: {', '.join(selective.POLICIES)})")
        try:
            f = float(frac) if frac else 1.0
            if not math.isfinite(f):
                raise ValueError(frac)
            selective.permille(f)  # (0, 1] to the nearest per mille
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: the fraction updated must be a number in (0, 1], e.g. topr:0.2"
            ) from None
        return name, f


class DataSource(ArgType, kind="data"):
    """A built-in data set name, or an existing .npz (arrays x, y), .npy or .csv (label
    first). ``kind`` "data": checked against a model by its command (width, labels, scale);
    "traindata": data a new model is built for (any width, any number of classes)."""
    SUFFIXES = (".npz", ".npy", ".csv")

    def __init__(self, names: list[str], kind: str = "data"):
        self.names = names
        self.kind = kind

    def __call__(self, text: str) -> str:
        if text.lower().endswith(self.SUFFIXES):
            return InFile("data file", self.SUFFIXES)(text)
        if text not in self.names:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected {', '.join(self.names)}, an .npz (x, y), .npy or .csv "
                "file")
        return text


class TrainsSpec(ArgType, kind="trains"):
    """What trains: all, bias, none, last:N, last:N:bias (core.fit.parse_trains)."""

    def __call__(self, text: str) -> str:
        from .core import fit

        _reworded(fit.parse_trains, text, ValueError, str)
        return text


class OutDir(ArgType, kind="outdir", name="directory"):
    """A directory to write into: an existing one, or a new one whose parent exists."""

    def __call__(self, text: str) -> str:
        p = _path(text)
        if p.exists() and not p.is_dir():
            raise argparse.ArgumentTypeError(f"{text}: exists and is not a directory")
        parent = p if p.is_dir() else (p.parent if str(p.parent) else Path("."))
        if not parent.is_dir():
            raise argparse.ArgumentTypeError(f"{text}: {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f"{text}: cannot write in {parent}")
        return text


# ---------------------------------------------------------------------------- the guard


def _is(e: BaseException, module_prefix: str) -> bool:
    return any(c.__module__.startswith(module_prefix) for c in type(e).__mro__)


def classify(e: BaseException) -> tuple[int, str]:
    """(exit status, one line) for an exception that ended a command."""
    import pickle
    import struct
    import subprocess
    import zipfile

    from .device import build, protocol

    msg = one_line(str(e)) or type(e).__name__
    if isinstance(e, UsageError):
        return EXIT_USAGE, msg
    if isinstance(e, protocol.LinkTimeout):
        return EXIT_USAGE, ("the device did not reply" + ("" if msg == "no reply" else f" ({msg})")
                            + ": is it running the kilolearn session firmware? (--timeout sets "
                            "the wait)")
    if isinstance(e, protocol.DeviceError):
        return EXIT_USAGE, f"the device refused: {msg}"
    if isinstance(e, FileNotFoundError) and e.filename:
        return EXIT_USAGE, f"{e.filename}: no such file or directory"
    if isinstance(e, MemoryError):
        return EXIT_USAGE, "out of memory (an input too large?)"
    if isinstance(e, OSError | ValueError | EOFError | struct.error | zipfile.BadZipFile |
                  pickle.UnpicklingError) or _is(e, "google.protobuf") or _is(e, "serial"):
        return EXIT_USAGE, msg
    if type(e).__name__ == "FootprintError":
        return EXIT_USAGE, msg
    if isinstance(e, build.BuildError | subprocess.SubprocessError | RuntimeError):
        return EXIT_FAILED, msg
    return EXIT_FAILED, (f"internal error: {type(e).__name__}: {msg} (set {DEBUG_ENV}=1 for "
                         "the traceback)")


def report(prog: str, e: BaseException) -> int:
    """Print one line for ``e`` and return the exit status: 2 for bad arguments and inputs
    (files, data, models, unreachable or silent devices, a device refusing a request), 1 when
    the run itself failed (a build, a job on the device) or on an internal error, 130 on ^C."""
    if isinstance(e, KeyboardInterrupt):
        code, msg = EXIT_INTERRUPTED, "interrupted"
    else:
        code, msg = classify(e)
    try:
        sys.stdout.flush()
    except Exception:  # noqa: BLE001 - a closed pipe: nothing more to say there
        pass
    print(f"{prog}: {msg}", file=sys.stderr)
    return code


def debug() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


# ---------------------------------------------------------------------------- devices, blobs


@contextlib.contextmanager
def open_device(a: argparse.Namespace) -> Iterator[protocol.Client]:
    """session.open_device for --board / --port; a port that cannot be opened, a device that
    does not answer, hangs up or does not speak the protocol: one UsageError naming it."""
    from .device import protocol, session

    where = f"--port {a.port}" if a.port else f"--board {a.board}"
    try:
        with session.open_device(a.board, a.port, timeout=a.timeout) as client:
            if getattr(a, "window", None):
                client.window = min(client.window, a.window)
            yield client
    except protocol.LinkTimeout as e:
        raise UsageError(f"{where}: the device did not reply within {a.timeout:g} s"
                         + ("" if str(e) == "no reply" else f" ({one_line(str(e))})")
                         + ": is it running the kilolearn session firmware? (--timeout)"
                         ) from None
    except protocol.FrameError as e:
        raise UsageError(f"{where}: the device's replies are not kilolearn session frames "
                         f"({one_line(str(e))})") from None
    except Exception as e:
        if not _is(e, "serial"):
            raise
        raise UsageError(f"{where}: {one_line(str(e)) or type(e).__name__}") from None


def add_device_args(p: argparse.ArgumentParser, default: str | None = "mps2-an386") -> None:
    """--board / --port / --timeout of a command that talks to a session device."""
    p.add_argument("--board", default=default, choices=BOARDS + ["host", "host-pty"],
                   help="emulated board started here" + (" (default)" if default else "")
                   + ", or the host build")
    p.add_argument("--port", type=PortUrl(), help="pyserial URL of a real board instead: "
                   "/dev/ttyACM0, socket://host:port")
    p.add_argument("--timeout", type=TIMEOUT, default=20.0, metavar="SECONDS",
                   help="wait this long for each reply (3 retries; default 20)")
    p.add_argument("--window", type=IntRange(1, 32), default=None, metavar="N",
                   help="requests in flight at most (protocol version 2; default: as many as "
                   "the device offers)")


def read_blob(blob: bytes, what: str) -> export.Blob:
    """export.read with any failure as one UsageError naming ``what``."""
    from .formats import export

    try:
        return export.read(blob)
    except Exception as e:  # noqa: BLE001 - random bytes may break the reader anywhere
        msg = one_line(str(e)) or type(e).__name__
        if not isinstance(e, export.BlobError):
            msg = f"not a valid kilolearn blob ({type(e).__name__}: {msg})"
        raise UsageError(f"{what}: {msg}") from None


def io_sizes(g: Graph) -> tuple[int, int]:
    """(inputs, outputs) of a graph."""
    import numpy as np

    return int(np.prod(g.shapes[g.input])), int(np.prod(g.shapes[g.output]))
