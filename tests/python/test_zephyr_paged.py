"""Run the Zephyr paged-weights suite (tests/zephyr/paged, scenario kilolearn.paged) with
twister on mps2/an385: the 784-512-128-10 int8 MLP with its weights in the flash simulator
trains in a 20 KB arena, folds, equals the model trained in memory bit for bit and survives a
remount (the suite asserts all of it; here its figures line is checked too). The figures line's
parser (kilolearn.tools.zephyrpaged, the docs figure zephyr-paged) is checked everywhere.

Needs a Zephyr v3.7.1 workspace as tests/python/test_zephyr_twister.py does (ZEPHYR_BASE, the
toolchain in the environment, qemu-system-arm); this repository is added with
ZEPHYR_EXTRA_MODULES. Skipped where there is no Zephyr (CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import twister_python

from kilolearn.tools import zephyrpaged

ROOT = Path(__file__).resolve().parents[2]
ZEPHYR_BASE = os.environ.get("ZEPHYR_BASE")



@pytest.mark.slow
@pytest.mark.skipif(not ZEPHYR_BASE, reason="ZEPHYR_BASE not set: no Zephyr workspace")
def test_paged_suite_passes_under_twister(tmp_path):
    if shutil.which("qemu-system-arm") is None:
        pytest.skip("qemu-system-arm not installed")
    zb = Path(ZEPHYR_BASE or "")
    out = tmp_path / "twister-out"
    cmd = zephyrpaged.twister_cmd(twister_python(zb / "scripts" / "twister"), zb, ROOT, out)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    summary = [ln for ln in proc.stdout.splitlines() + proc.stderr.splitlines()
               if any(s in ln for s in zephyrpaged.SUMMARY)]
    print("\n".join(summary))
    assert proc.returncode == 0, "\n".join([*summary, proc.stdout[-4000:], proc.stderr[-4000:]])
    report = json.loads((out / "twister.json").read_text())
    suites = [s for s in report["testsuites"]
              if s["name"].rsplit("/", 1)[-1] == zephyrpaged.SCENARIO]
    assert [s["platform"] for s in suites] == [zephyrpaged.PLATFORM]
    s = suites[0]
    assert s["status"] == "passed", (s["status"], s.get("reason"))
    assert len(s["testcases"]) == 2
    assert all(c["status"] == "passed" for c in s["testcases"]), s["testcases"]

    f = zephyrpaged.parse("\n".join(p.read_text(errors="replace")
                                    for p in out.rglob("handler.log")))
    assert f["board"] == zephyrpaged.PLATFORM
    assert f["params"] >= 400_000 and f["arena"] <= 20_480 and f["arena_peak"] <= f["arena"]
    assert f["steps_before"] >= 200 and f["steps"] > f["steps_before"]
    assert f["permille"] == 185 and f["folds"] >= 1
    assert f["bytes_programmed"] > 0 and f["sectors_erased"] > 0
    assert f["crc"] == f["remount_crc"]


def test_parse_reads_the_last_figures_line():
    text = ("boot\nKL paged trained steps=200 folds=16\n"
            "KL paged board=mps2/an385 params=468874 erase_value=0x00 crc=0x99a53fd2\n")
    f = zephyrpaged.parse(text)
    assert f == {"board": "mps2/an385", "params": 468874, "erase_value": 0, "crc": 0x99A53FD2}
    with pytest.raises(KeyError):
        zephyrpaged.parse("KL paged trained steps=200\n")
