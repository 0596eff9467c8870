"""Run a job on the host build or on an emulated board and return the runner's report."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from . import build, job


class RunError(RuntimeError):
    pass


def run_job(img: bytes, board: str = build.HOST, sanitize: bool = False,
            timeout: float = 300.0, cmsis_nn: bool = False) -> job.Report:
    exe = build.build(board, sanitize=sanitize, cmsis_nn=cmsis_nn)
    if board == build.HOST:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "job.bin"
            path.write_bytes(img)
            r = subprocess.run([str(exe), str(path)], capture_output=True, text=True,
                               timeout=timeout)
            text, rc, err = r.stdout, r.returncode, r.stderr
    else:
        from . import qemu

        res = qemu.run_firmware(exe, board, job=img, timeout=timeout)
        text, rc, err = res.stdout, res.returncode, ""
    rep = job.parse(text)
    if rc != 0 or rep.errors or "done" not in rep.records:
        raise RunError(f"runner on {board} failed (exit {rc}): "
                       f"{'; '.join(rep.errors) or err[-2000:] or text[-2000:]}")
    return rep
