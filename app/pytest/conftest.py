"""Twister pytest harness glue for the kilolearn session app.

The app's UART carries boot text, the line "kilolearn ready", then binary protocol frames.
The harness's ``dut`` adapters read text lines, so after the banner ``DutLink`` takes the byte
stream over (QEMU's FIFO, or the serial port of a board or of --device-serial-pty) and hands
whole frames to the ``kilolearn`` protocol client.
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from kilolearn.device import protocol  # noqa: E402


class DutLink:
    """A protocol link over a pytest-twister-harness DeviceAdapter (QEMU or hardware)."""

    def __init__(self, dut):
        self.dut = dut
        self.qemu = hasattr(dut, "_fifo_connection")
        self.buf = bytearray()
        self.cond = threading.Condition()
        # the adapter's reader thread now puts raw bytes here instead of text lines
        dut._read_device_output = self._pump
        # That thread may still sit in a line read started before; INFO is accepted with any
        # sequence number, and one numbered 0x0A0A carries a newline that ends that read.
        self.write(protocol.pack(protocol.INFO, 0x0A0A))
        time.sleep(0.5)
        with self.cond:
            self.buf.clear()

    def _raw(self) -> bytes:
        if self.qemu:
            f = self.dut._fifo_connection._fifo_out_file
            if f is None or not select.select([f], [], [], 0.05)[0]:
                return b""
            return os.read(f.fileno(), 4096)
        ser = self.dut._serial_connection
        out = bytes(self.dut._serial_buffer)
        self.dut._serial_buffer.clear()
        if ser is not None and ser.is_open and ser.in_waiting:
            out += ser.read(ser.in_waiting)
        elif not out:
            time.sleep(0.01)
        return out

    def _pump(self) -> bytes:
        try:
            data = self._raw()
        except (OSError, ValueError, TypeError):
            data = b""
        if data:
            with self.cond:
                self.buf += data
                self.cond.notify_all()
        return b""

    def write(self, data: bytes) -> None:
        if self.qemu:  # QEMU's console chardev is a mux: Ctrl-A (0x01) is its escape
            data = data.replace(b"\x01", b"\x01\x01")
        self.dut.write(data)

    def read_frame(self, timeout: float) -> bytes:
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                frame = protocol.pop_frame(self.buf)
                if frame is not None:
                    return frame
                left = end - time.monotonic()
                if left <= 0:
                    raise protocol.LinkTimeout("no reply")
                self.cond.wait(left)

    def close(self) -> None:
        pass


@pytest.fixture
def client(dut):
    """A protocol client for the app under test, once it has booted."""
    dut.readlines_until(regex="kilolearn ready", timeout=60)
    c = protocol.Client(DutLink(dut), timeout=20)
    yield c


