"""Run kilolearn bare-metal firmware on QEMU's Arm MPS2 / MPS3 boards.

The firmware (built with ``-DKL_BOARD=<board>``, see ``boards/qemu/``) prints
on UART0, which QEMU connects to its stdout, and ends with an Arm semihosting
``SYS_EXIT_EXTENDED`` call whose code becomes QEMU's exit status. A job image
is handed over by QEMU's generic loader at the board's job address, where
``kl_port_job()`` looks for it.

Faults, failed asserts and ``abort()`` on the target exit with
:data:`FAULT_EXIT_CODE`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BOARDS",
    "FAULT_EXIT_CODE",
    "BoardInfo",
    "QemuError",
    "QemuTimeout",
    "RunResult",
    "qemu_available",
    "qemu_command",
    "run_firmware",
]

#: Exit code of a firmware that faulted (HardFault etc.), failed an assert or
#: called abort() (KL_EXIT_FAULT in modules/kilolearn/port/baremetal).
FAULT_EXIT_CODE = 0x7F

#: Environment variable naming the QEMU binary (default: qemu-system-arm on PATH).
QEMU_ENV = "KL_QEMU"
QEMU_DEFAULT = "qemu-system-arm"


@dataclass(frozen=True)
class BoardInfo:
    """A QEMU board supported by the bare-metal port."""

    name: str  #: KL_BOARD value, also the boards/qemu/ directory name
    machine: str  #: QEMU -M machine
    cpu: str  #: GCC -mcpu / QEMU CPU model
    job_addr: int  #: where the job image is loaded (KL_JOB_ADDR)
    has_fpu: bool  #: hard-float build with an FPU
    has_dsp: bool  #: DSP (SIMD) extension available
    job_max: int = 16 * 1024 * 1024  #: size of the job region (KL_JOB_MAX)
    insn_per_tick: float = 40  #: instructions per SysTick tick under -icount shift=0


# Must match boards/qemu/<board>/board.cmake (KL_QEMU_MACHINE, KL_JOB_ADDR,
# KL_JOB_MAX, KL_CPU_HZ); the CMake side reads nothing from here.
BOARDS: dict[str, BoardInfo] = {
    b.name: b
    for b in (
        # 0x21000000: 16 MB PSRAM.
        BoardInfo("mps2-an385", "mps2-an385", "cortex-m3", 0x21000000, False, False),
        BoardInfo("mps2-an386", "mps2-an386", "cortex-m4", 0x21000000, True, True),
        # The AN500's PSRAM is at 0x60000000 (0x21000000 is a RAZ/WI hole there).
        BoardInfo("mps2-an500", "mps2-an500", "cortex-m7", 0x60000000, True, True),
        # IoTKit: 16 MB PSRAM at 0x80000000; the CPU runs at 20 MHz, so one
        # SysTick tick is 50 instructions.
        BoardInfo(
            "mps2-an505", "mps2-an505", "cortex-m33", 0x80000000, True, True, insn_per_tick=50
        ),
        # SSE-300 Cortex-M55 (MVE): 16 MB of the DDR's Secure alias; 32 MHz, so one
        # SysTick tick is 31.25 instructions.
        BoardInfo(
            "mps3-an547", "mps3-an547", "cortex-m55", 0x70000000, True, True, insn_per_tick=31.25
        ),
    )
}


@dataclass
class RunResult:
    """Outcome of one QEMU run."""

    returncode: int  #: the firmware's exit code (via semihosting)
    stdout: str  #: everything the firmware wrote to its UART
    stderr: str = ""  #: QEMU's own diagnostics

    @property
    def faulted(self) -> bool:
        return self.returncode == FAULT_EXIT_CODE


class QemuError(RuntimeError):
    """QEMU could not be started or the arguments are invalid."""


class QemuTimeout(QemuError):
    """The firmware did not finish within the time limit (QEMU was killed)."""

    def __init__(self, elf: Path, board: str, timeout: float, stdout: str) -> None:
        super().__init__(
            f"{elf} on {board} did not exit within {timeout:g} s (QEMU killed); "
            f"last output: {stdout[-500:]!r}"
        )
        self.elf = elf
        self.board = board
        self.timeout = timeout
        self.stdout = stdout


def _qemu_binary() -> str | None:
    return shutil.which(os.environ.get(QEMU_ENV, QEMU_DEFAULT))


def qemu_available() -> bool:
    """True if qemu-system-arm (or $KL_QEMU) can be found."""
    return _qemu_binary() is not None


def _board(board: str) -> BoardInfo:
    try:
        return BOARDS[board]
    except KeyError:
        raise QemuError(f"unknown board {board!r}; known: {', '.join(BOARDS)}") from None


def _opt_path(path: Path) -> str:
    # QEMU option values are comma-separated; a literal comma is written ",,".
    return str(path).replace(",", ",,")


def qemu_command(
    elf: Path, board: str, job_file: Path | None = None, qemu: str | None = None
) -> list[str]:
    """The qemu-system-arm command line that runs ``elf`` on ``board``."""
    info = _board(board)
    exe = qemu or _qemu_binary() or QEMU_DEFAULT
    cmd = [
        exe,
        "-M", info.machine,
        "-nographic",  # UART0 -> stdio, no display
        "-monitor", "none",  # ... without the monitor multiplexed onto it
        "-semihosting-config", "enable=on,target=native",  # exit code
        "-icount", "shift=0",  # 1 instruction = 1 ns: exact SysTick counter
        "-kernel", str(elf),
    ]  # fmt: skip
    if job_file is not None:
        cmd += [
            "-device",
            f"loader,file={_opt_path(job_file)},addr={info.job_addr:#x},force-raw=on",
        ]
    return cmd


def run_firmware(
    elf: Path, board: str, job: bytes | None = None, timeout: float = 120
) -> RunResult:
    """Run ``elf`` on ``board`` under QEMU, optionally with a job image.

    Returns the exit code and UART output. Raises :class:`QemuTimeout` if the
    firmware runs longer than ``timeout`` seconds (QEMU is killed) and
    :class:`QemuError` if QEMU is missing or the job does not fit.
    """
    info = _board(board)
    elf = Path(elf)
    if not elf.is_file():
        raise QemuError(f"firmware not found: {elf}")
    qemu = _qemu_binary()
    if qemu is None:
        raise QemuError(f"{os.environ.get(QEMU_ENV, QEMU_DEFAULT)} not found on PATH")
    if job is not None and len(job) > info.job_max:
        raise QemuError(f"job image is {len(job)} bytes; {board} has room for {info.job_max}")

    with tempfile.TemporaryDirectory(prefix="kl-qemu-") as tmp:
        job_file: Path | None = None
        if job is not None:
            job_file = Path(tmp) / "job.bin"
            job_file.write_bytes(job)
        cmd = qemu_command(elf, board, job_file, qemu)
        try:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as e:  # run() has killed QEMU already
            out = e.stdout.decode("utf-8", "replace") if e.stdout else ""
            raise QemuTimeout(elf, board, timeout, out) from None
        except OSError as e:
            raise QemuError(f"cannot run {qemu}: {e}") from e

    return RunResult(
        returncode=proc.returncode,
        stdout=proc.stdout.decode("utf-8", "replace"),
        stderr=proc.stderr.decode("utf-8", "replace"),
    )
