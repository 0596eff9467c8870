"""Configure and build the C side (engine + runner) for the host or a QEMU board with CMake."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

HOST = "host"


class BuildError(RuntimeError):
    pass


def repo_root() -> Path:
    """The source tree holding CMakeLists.txt (this package lives in scripts/kilolearn)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "CMakeLists.txt").is_file() and (parent / "modules" / "kilolearn").is_dir():
            return parent
    raise BuildError("kilolearn sources not found: run from a checkout (pip install -e .)")


def toolchain_available() -> bool:
    return shutil.which("arm-none-eabi-gcc") is not None


def cmsis_nn_dir() -> Path | None:
    """A CMSIS-NN source tree for the cmsis_nn kernel backend: $KILOLEARN_CMSIS_NN, else the
    one of the Zephyr workspace around $ZEPHYR_BASE (modules/lib/cmsis-nn); None if neither."""
    cands = [os.environ.get("KILOLEARN_CMSIS_NN", "")]
    if os.environ.get("ZEPHYR_BASE"):
        cands.append(str(Path(os.environ["ZEPHYR_BASE"]).parent / "modules/lib/cmsis-nn"))
    for c in cands:
        if c and (Path(c) / "Include" / "arm_nnfunctions.h").is_file():
            return Path(c).resolve()
    return None


def build_dir(board: str, sanitize: bool = False, cmsis_nn: bool = False) -> Path:
    base = Path(os.environ.get("KILOLEARN_BUILD_DIR", repo_root() / "build"))
    return base / (board + ("-asan" if sanitize else "") + ("-cmsis-nn" if cmsis_nn else ""))


def cache_dir() -> Path:
    """Where results made on the host are kept between runs (pretrained backbones)."""
    return Path(os.environ.get("KILOLEARN_BUILD_DIR", repo_root() / "build")) / "cache"


def build(board: str = HOST, sanitize: bool = False, target: str = "kl_runner",
          quiet: bool = True, cmsis_nn: bool = False) -> Path:
    """Configure (once) and build ``target``; returns the path of the built program.
    ``cmsis_nn``: with the CMSIS-NN kernel backend (needs cmsis_nn_dir())."""
    root = repo_root()
    out = build_dir(board, sanitize, cmsis_nn)
    if not (out / "CMakeCache.txt").is_file():
        cmd = ["cmake", "-S", str(root), "-B", str(out), f"-DKL_BOARD={board}",
               "-DCMAKE_BUILD_TYPE=Release"]
        if shutil.which("ninja"):
            cmd += ["-G", "Ninja"]
        if board != HOST:
            cmd.append(f"-DCMAKE_TOOLCHAIN_FILE={root / 'cmake' / 'arm-none-eabi.cmake'}")
        if sanitize:
            cmd.append("-DKL_SANITIZE=ON")
        if cmsis_nn:
            src = cmsis_nn_dir()
            if src is None:
                raise BuildError("no CMSIS-NN source tree: set KILOLEARN_CMSIS_NN")
            cmd.append(f"-DKL_CMSIS_NN_DIR={src}")
        _run(cmd, quiet)
    _run(["cmake", "--build", str(out), "--target", target, "-j", "2"], quiet)
    exe = out / (target + ("" if board == HOST else ".elf"))
    if not exe.is_file():
        raise BuildError(f"build produced no {exe}")
    return exe


def _run(cmd: list[str], quiet: bool) -> None:
    r = subprocess.run(cmd, capture_output=quiet, text=True)
    if r.returncode != 0:
        detail = (r.stdout or "") + (r.stderr or "") if quiet else ""
        raise BuildError(f"{' '.join(cmd)} failed:\n{detail[-4000:]}")
