#!/usr/bin/env python3
"""A QEMU board standing in for real hardware in twister's device testing (HIL rehearsal).

Two roles, for ``twister --device-testing --device-serial-pty ... --west-runner misc-flasher
--west-flash ...`` (see docs/zephyr.md):

``qemu_board.py serve``
    the ``--device-serial-pty`` script: its stdin/stdout are the pty twister reads as the
    board's serial port. It waits until the app is "flashed", then starts QEMU with the UART on
    a local TCP socket and copies bytes both ways, unchanged (the protocol is binary).
``qemu_board.py BUILD_DIR flash``
    the flash command, run by west's misc-flasher runner (``misc-flasher CMD BUILD_DIR ARGS``):
    records which ELF the board runs.

The two meet in a directory: $KILOLEARN_HIL_DIR, else kilolearn-hil-<uid> in the temp dir.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MACHINES = {  # (CONFIG_BOARD, qualifiers) -> QEMU machine
    "qemu_cortex_m3": ["-machine", "lm3s6965evb", "-cpu", "cortex-m3"],
    "mps2/an385": ["-machine", "mps2-an385", "-cpu", "cortex-m3"],
    "mps2/an521/cpu0": ["-machine", "mps2-an521", "-cpu", "cortex-m33"],
}


def rendezvous() -> Path:
    d = Path(os.environ.get("KILOLEARN_HIL_DIR")
             or Path(tempfile.gettempdir()) / f"kilolearn-hil-{os.getuid()}")
    d.mkdir(parents=True, exist_ok=True)
    return d / "flashed"


def flash(build_dir: Path) -> int:
    elf = build_dir / "zephyr" / "zephyr.elf"
    cfg = (build_dir / "zephyr" / ".config").read_text()
    board = re.search(r'^CONFIG_BOARD="([^"]*)"', cfg, re.M).group(1)
    qual = re.search(r'^CONFIG_BOARD_QUALIFIERS="([^"]*)"', cfg, re.M)
    name = board if board in MACHINES else f"{board}/{qual.group(1) if qual else ''}"
    if name not in MACHINES or not elf.is_file():
        print(f"qemu_board: cannot run {name} ({elf})", file=sys.stderr)
        return 1
    tmp = rendezvous().with_suffix(".tmp")
    tmp.write_text(f"{name}\n{elf.resolve()}\n")
    tmp.replace(rendezvous())
    return 0


def serve() -> int:
    rv = rendezvous()
    rv.unlink(missing_ok=True)
    end = time.monotonic() + 300
    while not rv.exists():  # twister connects to the serial port before it flashes
        if time.monotonic() > end:
            return 1
        time.sleep(0.05)
    name, elf = rv.read_text().split()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    qemu = subprocess.Popen(["qemu-system-arm", *MACHINES[name], "-display", "none",
                             "-monitor", "none", "-net", "none", "-serial",
                             f"tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on",
                             "-kernel", elf], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                if qemu.poll() is not None:
                    return 1
                time.sleep(0.05)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fin, fout = sys.stdin.fileno(), sys.stdout.fileno()
        while qemu.poll() is None:
            ready, _, _ = select.select([fin, conn], [], [], 0.5)
            if fin in ready:
                data = os.read(fin, 4096)
                if not data:
                    break
                conn.sendall(data)
            if conn in ready:
                data = conn.recv(4096)
                if not data:
                    break
                while data:
                    data = data[os.write(fout, data):]
    finally:
        qemu.kill()
        qemu.wait()
    return 0


def main(argv: list[str]) -> int:
    if argv[1:2] == ["serve"]:
        return serve()
    if len(argv) >= 2:
        return flash(Path(argv[1]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
