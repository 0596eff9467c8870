"""Shared fixtures: data, targets (host, host under ASan/UBSan, the QEMU boards)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from kilolearn.core import data
from kilolearn.device import build

QEMU_BOARDS = ["mps2-an385", "mps2-an386", "mps2-an500", "mps2-an505", "mps3-an547"]
HOST_TARGETS = ["host", "host-asan"]
# the CMSIS-NN kernel backend, where a CMSIS-NN tree is found (build.cmsis_nn_dir())
CMSIS_NN_TARGETS = ["host-cmsis-nn", "mps2-an386-cmsis-nn"]


def qemu_missing() -> str | None:
    if not build.toolchain_available():
        return "arm-none-eabi-gcc not installed"
    if shutil.which("qemu-system-arm") is None:
        return "qemu-system-arm not installed"
    return None


def split_target(target: str) -> tuple[str, bool]:
    """'host-asan' -> ('host', True); a board name -> (board, False)."""
    if target == "host-asan":
        return "host", True
    return target.removesuffix("-cmsis-nn"), False


def require_target(target: str) -> None:
    board = target.removesuffix("-cmsis-nn")
    if board in QEMU_BOARDS and (why := qemu_missing()):
        pytest.skip(why)
    if target.endswith("-cmsis-nn") and build.cmsis_nn_dir() is None:
        pytest.skip("no CMSIS-NN tree (set KILOLEARN_CMSIS_NN or ZEPHYR_BASE)")


def run_job(img: bytes, target: str):
    """runner.run_job on a test target (host, host-asan, a board, <board>-cmsis-nn)."""
    from kilolearn.device import runner

    board, asan = split_target(target)
    return runner.run_job(img, board, sanitize=asan, cmsis_nn=target.endswith("-cmsis-nn"))


@pytest.fixture(scope="session")
def digits() -> data.Dataset:
    return data.digits()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def twister_python(twister) -> str:
    """The first interpreter that starts Zephyr's twister: $TWISTER_PYTHON, this one, python3
    (the repository's venv may lack twister's requirements, e.g. pkg_resources)."""
    import os
    import subprocess
    import sys

    tried = []
    for py in (os.environ.get("TWISTER_PYTHON"), sys.executable, shutil.which("python3")):
        if not py or py in tried:
            continue
        tried.append(py)
        probe = subprocess.run([py, str(twister), "--help"], capture_output=True, timeout=120)
        if probe.returncode == 0:
            return py
    pytest.fail(f"no Python among {tried} starts twister: install Zephyr's "
                "scripts/requirements-base.txt (+ psutil, setuptools) or set TWISTER_PYTHON")


def run_fuzz_firmware(board: str, target: str) -> tuple[int, int]:
    """Build and run a kernel fuzz firmware (tests/c/kl_fuzz_*.c) on a QEMU board or the host
    build (host, host-asan); returns (cases, mismatches) from its final "KL fuzz done cases N
    mismatches N" line."""
    import subprocess
    from pathlib import Path

    from kilolearn.device import build, qemu

    if board in ("host", "host-asan"):  # the host build runs natively
        exe = build.build("host", sanitize=board == "host-asan", target=target)
        r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600)
    else:
        exe = build.build(board, target=target)
        r = qemu.run_firmware(Path(exe), board, job=None, timeout=600)
    last = [ln for ln in r.stdout.splitlines() if ln.startswith("KL fuzz done")]
    assert last, r.stdout[-2000:]
    f = last[-1].split()
    assert r.returncode == (0 if f[6] == "0" else 1), r.stdout[-2000:]
    return int(f[4]), int(f[6])


def twister_extra_args() -> list[str]:
    """$KILOLEARN_TWISTER_ARGS split as a shell would: options appended to every twister
    command of the Zephyr tests (a workspace's own -x options, docs/zephyr.md "Zephyr 4.x")."""
    import os
    import shlex

    return shlex.split(os.environ.get("KILOLEARN_TWISTER_ARGS", ""))


def asked_platform(reported: str, asked: list[str]) -> str:
    """The name given with -p for a platform twister reports: Zephyr 4.x reports a board's
    qualified name (qemu_cortex_m3 -> qemu_cortex_m3/ti_lm3s6965), 3.7 the name itself."""
    for p in asked:
        if reported == p or reported.startswith(p + "/"):
            return p
    return reported


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / ||b|| (float32 results against numpy's)."""
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def check_f32_grads(rep, g, dws: list, dbs: list, s: int, name: str, tol: float = 1e-5) -> None:
    """Step s of a CMD_GRADS job: every trainable op's dumped weight and bias gradients equal
    the twin's (dws, dbs) within tol; frozen ops and bias-only weights dump none."""
    for i, op in enumerate(g.ops):
        if not op.trainable:
            assert f"g{i:02d}w" not in rep.dumps
            continue
        if op.bias_only:
            assert dws[i] is None and f"g{i:02d}w" not in rep.dumps
        else:
            gw = rep.dump(f"g{i:02d}w", "<f4", s).reshape(dws[i].shape)
            assert rel_err(gw, dws[i]) < tol, (name, s, i)
        assert rel_err(rep.dump(f"g{i:02d}b", "<f4", s), dbs[i]) < tol, (name, s, i)


def check_f32_weights(rep, g, weights: list, name: str, tol: float = 1e-5) -> None:
    """The dumped float32 weights of every op with parameters equal `weights` within tol."""
    for i, op in enumerate(g.ops):
        if op.has_params:
            w = rep.dump(f"w{i:02d}", "<f4").reshape(weights[i].shape)
            assert rel_err(w, weights[i]) < tol, (name, i)
