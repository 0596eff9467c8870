"""``kilolearn zephyr-run``: the Zephyr session app of a build directory in QEMU, its console
UART on a local TCP socket, and a session (or any device command) driven against it.

``west build -t run`` leaves the UART on the terminal, where nothing can speak the binary
protocol. This takes the QEMU command line of the build's own ``run`` target (``ninja -t
commands run``: the machine, CPU and options of the board's ``board.cmake``), replaces its
stdio console with ``-serial tcp:127.0.0.1:PORT,server=on,wait=on``, starts it and then either

* runs ``kilolearn session --port socket://127.0.0.1:PORT ARGS...`` (the default), or
* ``--serve``: prints the URL and keeps QEMU running, for ``kilolearn session|eval|adapt|deploy
  --port URL`` from another shell, until Ctrl-C.

Inside a west workspace it is also ``west kilolearn zephyr-run [BUILD_DIR]`` (default
``build``, west's own default). The device's counter is the board's cycle counter
(``k_cycle_get``), and Zephyr's QEMU boards run with ``-icount shift=7`` or none: the
session's table labels it device cycles, never instructions.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import shutil
import socket
import subprocess
import time
from pathlib import Path

from ..cliargs import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cliargs import IntRange

    p.add_argument("build_dir", nargs="?", default="build",
                   help="the app's Zephyr build directory (default: build, as west's)")
    p.add_argument("--serve", action="store_true",
                   help="only start QEMU, print the socket URL and wait (Ctrl-C ends it)")
    p.add_argument("--port", type=IntRange(0, 65535), default=0, metavar="TCP_PORT",
                   help="the local TCP port of the UART (default: a free one)")
    p.add_argument("--print-command", action="store_true",
                   help="print the QEMU command line and exit")
    p.add_argument("session_args", nargs="*", metavar="-- SESSION_ARGS",
                   help="arguments of `kilolearn session`, after BUILD_DIR and --, e.g. "
                   "build -- --strategy replay --epochs 1")


def run_command(build_dir: Path) -> list[str]:
    """The QEMU command of the build's ``run`` target, as a list (without its ``cd``)."""
    if not (build_dir / "build.ninja").is_file():
        raise UsageError(f"{build_dir}: not a Zephyr build directory (no build.ninja; build "
                         "the app first: west build -b BOARD app)")
    ninja = shutil.which("ninja")
    if ninja is None:
        raise UsageError("ninja is not on PATH (it builds Zephyr and names the QEMU command)")
    proc = subprocess.run([ninja, "-C", str(build_dir), "-t", "commands", "run"],
                          capture_output=True, text=True, timeout=60)
    lines = [ln for ln in proc.stdout.splitlines() if "qemu-system-" in ln]
    if proc.returncode != 0 or not lines:
        raise UsageError(f"{build_dir}: the build has no QEMU run target (a board QEMU does "
                         "not emulate?)")
    words = shlex.split(lines[-1])
    if "&&" in words:
        words = words[words.index("&&") + 1:]
    return words


def socket_command(words: list[str], port: int) -> list[str]:
    """``words`` with the console UART on a TCP server socket and no terminal I/O."""
    out: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if w == "-nographic":
            out += ["-display", "none"]
        elif w in ("-chardev", "-serial", "-mon") and ("id=con" in nxt or nxt == "chardev:con"
                                                     or "chardev=con" in nxt):
            i += 1  # the stdio console mux (and the monitor on it) goes
        elif w == "-pidfile":
            i += 1
        else:
            out.append(w)
        i += 1
    first = next((k for k, w in enumerate(out) if w == "-serial"), None)
    uart = ["-serial", f"tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on"]
    k = first if first is not None else out.index("-kernel") if "-kernel" in out else len(out)
    return [*out[:k], *uart, *out[k:], "-monitor", "none"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def started(build_dir: Path, port: int = 0):  # noqa: ANN201
    """QEMU running the build's app with its UART at the yielded ``socket://`` URL."""
    port = port or _free_port()
    cmd = socket_command(run_command(build_dir), port)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, cwd=build_dir)
    try:
        _wait_listening(proc)
        yield f"socket://127.0.0.1:{port}", cmd
    finally:
        proc.kill()
        proc.wait()


def _wait_listening(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Until QEMU says it waits for the connection (server=on,wait=on), on its stderr."""
    import select

    end = time.monotonic() + timeout
    seen = b""
    assert proc.stderr is not None
    while b"waiting for connection" not in seen:
        if proc.poll() is not None:
            err = (seen + proc.stderr.read()).decode(errors="replace").strip()
            raise UsageError(f"QEMU exited ({proc.returncode}): {err[:300]}")
        if time.monotonic() > end:
            raise UsageError(f"QEMU does not listen after {timeout:g} s")
        if select.select([proc.stderr], [], [], 0.1)[0]:
            seen += proc.stderr.read1(4096)  # type: ignore[attr-defined]


def run(a: argparse.Namespace) -> int:
    build_dir = Path(a.build_dir)
    if a.print_command:
        print(shlex.join(socket_command(run_command(build_dir), a.port or 4321)))
        return 0
    args = list(a.session_args)
    if any(x in ("--port", "--board") for x in args):
        raise UsageError("zephyr-run gives the session its --port itself")
    with started(build_dir, a.port) as (url, cmd):
        print(f"kilolearn zephyr-run: {build_dir} in QEMU, UART at {url}\n  {shlex.join(cmd)}",
              flush=True)
        if a.serve:
            print(f"drive it from another shell: kilolearn session --port {url} (Ctrl-C ends "
                  "QEMU)", flush=True)
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                return 0
        from ..cli import main

        return main(["session", "--port", url, *args])
