"""Run the Zephyr engine ztest suite (tests/zephyr/engine) with twister on the QEMU boards.

Needs a Zephyr v3.7.1 workspace: ZEPHYR_BASE set, the toolchain in the environment
(e.g. ZEPHYR_TOOLCHAIN_VARIANT=gnuarmemb GNUARMEMB_TOOLCHAIN_PATH=/usr) and, if the
workspace's west manifest does not list them, the CMSIS modules in ZEPHYR_MODULES. This
repository is added with ZEPHYR_EXTRA_MODULES. Skipped where there is no Zephyr (CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "tests" / "zephyr" / "engine"
PLATFORMS = ["qemu_cortex_m3", "mps2/an385", "mps2/an521/cpu0"]
ZEPHYR_BASE = os.environ.get("ZEPHYR_BASE")

pytestmark = [
    pytest.mark.skipif(not ZEPHYR_BASE, reason="ZEPHYR_BASE not set: no Zephyr workspace"),
    pytest.mark.slow,
]


def test_engine_ztest_suite_passes_under_twister(tmp_path):
    if shutil.which("qemu-system-arm") is None:
        pytest.skip("qemu-system-arm not installed")
    twister = Path(ZEPHYR_BASE or "") / "scripts" / "twister"
    out = tmp_path / "twister-out"
    cmd = [sys.executable, str(twister), "-T", str(SUITE), "-O", str(out), "-j", "2",
           "--inline-logs", "-x", f"ZEPHYR_EXTRA_MODULES={ROOT}"]
    for p in PLATFORMS:
        cmd += ["-p", p]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    summary = [ln for ln in proc.stdout.splitlines() + proc.stderr.splitlines()
               if "test configurations passed" in ln or "test cases were executed" in ln]
    print("\n".join(summary))
    assert proc.returncode == 0, "\n".join([*summary, proc.stdout[-4000:], proc.stderr[-4000:]])
    report = json.loads((out / "twister.json").read_text())
    suites = report["testsuites"]
    # every scenario that runs in QEMU (engine, engine with logging) on every board
    assert {s["platform"] for s in suites} == set(PLATFORMS)
    assert len(suites) >= 2 * len(PLATFORMS)
    for s in suites:
        assert s["status"] == "passed", (s["platform"], s["name"], s["status"])
        cases = s["testcases"]
        assert len(cases) >= 5 and all(c["status"] == "passed" for c in cases), s["platform"]
