"""Shared fixtures: data, targets (host, host under ASan/UBSan, the QEMU boards)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from kilolearn import build, data

QEMU_BOARDS = ["mps2-an385", "mps2-an386", "mps2-an500", "mps2-an505"]
HOST_TARGETS = ["host", "host-asan"]


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
    return target, False


def require_target(target: str) -> None:
    if target in QEMU_BOARDS and (why := qemu_missing()):
        pytest.skip(why)


@pytest.fixture(scope="session")
def digits() -> data.Dataset:
    return data.digits()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
