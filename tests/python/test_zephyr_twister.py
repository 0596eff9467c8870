"""Run the Zephyr engine ztest suite (tests/zephyr/engine) with twister on the QEMU boards:
the reference kernels (with and without logging) and the CMSIS-NN backend
(kilolearn.engine.cmsis_nn), one twister run for all.

Needs a Zephyr v3.7.1 or 4.x workspace (options a workspace needs, e.g. 4.x's -x ones of
docs/zephyr.md, in $KILOLEARN_TWISTER_ARGS): ZEPHYR_BASE set, the toolchain in the environment
(e.g. ZEPHYR_TOOLCHAIN_VARIANT=gnuarmemb GNUARMEMB_TOOLCHAIN_PATH=/usr) and, if the
workspace's west manifest does not list them, the CMSIS modules in ZEPHYR_MODULES
(cmsis, cmsis-nn and cmsis-dsp: CONFIG_CMSIS_NN selects CMSIS_DSP). This repository is
added with ZEPHYR_EXTRA_MODULES. Skipped where there is no Zephyr (CI).

Twister runs under the first Python that can start it (`twister --help`): $TWISTER_PYTHON,
this interpreter, then `python3` on PATH, so the repository's venv need not hold twister's
requirements (Zephyr's scripts/requirements-base.txt and psutil, setuptools, ...).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import asked_platform, twister_extra_args, twister_python

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "tests" / "zephyr" / "engine"
PLATFORMS = ["qemu_cortex_m3", "mps2/an385", "mps2/an521/cpu0"]
REF_SCENARIOS = ["kilolearn.engine.ref", "kilolearn.engine.ref.logging"]
CMSIS_NN_SCENARIO = "kilolearn.engine.cmsis_nn"
ZEPHYR_BASE = os.environ.get("ZEPHYR_BASE")

pytestmark = [
    pytest.mark.skipif(not ZEPHYR_BASE, reason="ZEPHYR_BASE not set: no Zephyr workspace"),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def twister_run(tmp_path_factory) -> dict:
    """One twister run of every scenario the QEMU boards allow; the suites by
    (platform, scenario)."""
    if shutil.which("qemu-system-arm") is None:
        pytest.skip("qemu-system-arm not installed")
    twister = Path(ZEPHYR_BASE or "") / "scripts" / "twister"
    out = tmp_path_factory.mktemp("twister") / "twister-out"
    cmd = [twister_python(twister), str(twister), "-T", str(SUITE), "-O", str(out), "-j", "2",
           "--inline-logs", "-x", f"ZEPHYR_EXTRA_MODULES={ROOT}", "-e", "sweep",
           *twister_extra_args()]
    for p in PLATFORMS:
        cmd += ["-p", p]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    summary = [ln for ln in proc.stdout.splitlines() + proc.stderr.splitlines()
               if any(s in ln for s in ("test configurations passed", "test cases were executed",
                                        "executed test cases passed"))]
    print("\n".join(summary))
    assert proc.returncode == 0, "\n".join([*summary, proc.stdout[-4000:], proc.stderr[-4000:]])
    report = json.loads((out / "twister.json").read_text())
    return {(asked_platform(s["platform"], PLATFORMS), s["name"].rsplit("/", 1)[-1]): s
            for s in report["testsuites"]}


def _check_passed(s: dict, min_cases: int) -> list[str]:
    assert s["status"] == "passed", (s["platform"], s["name"], s["status"], s.get("reason"))
    cases = s["testcases"]
    assert len(cases) >= min_cases, (s["platform"], s["name"], len(cases))
    assert all(c["status"] == "passed" for c in cases), (s["platform"], s["name"], cases)
    return [c["identifier"] for c in cases]  # <scenario>.<case without test_>


def test_engine_ztest_suite_passes_under_twister(twister_run):
    # every scenario that runs in QEMU with the reference kernels, on every board
    assert {p for p, _ in twister_run} == set(PLATFORMS)
    for p in PLATFORMS:
        for name in REF_SCENARIOS:
            assert (p, name) in twister_run, (p, name)
            _check_passed(twister_run[(p, name)], 6)
    for s in twister_run.values():
        assert s["status"] in ("passed", "filtered", "skipped"), (s["platform"], s["name"])


def test_engine_cmsis_nn_variant_passes_under_twister(twister_run):
    """The golden vectors bit for bit with the CMSIS-NN backend, and its own suite
    (kilolearn_cmsis_nn: CMSIS-NN calls counted, kl_cmsis_* against kl_ref_*)."""
    for p in PLATFORMS:
        s = twister_run.get((p, CMSIS_NN_SCENARIO))
        assert s is not None, (p, CMSIS_NN_SCENARIO)
        if s["status"] == "filtered" and "modules" in (s.get("reason") or ""):
            pytest.skip(f"{CMSIS_NN_SCENARIO}: {s['reason']} (cmsis-nn, cmsis-dsp)")
        ids = _check_passed(s, 10)
        for case in ("backend_is_cmsis_nn", "fully_connected_matches_ref",
                     "conv_matches_ref", "depthwise_matches_ref",
                     "s8_grads_bit_exact", "s8_train_bit_exact"):
            assert any(i.endswith(case) for i in ids), (p, case, ids)
