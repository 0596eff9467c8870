"""Run the Zephyr session app's twister suites (app/sample.yaml): the pytest-harness session on
the QEMU boards, the flash_area probe on mps2/an385, the power-cut test of the flash store's
COMMIT and LOAD on both QEMU boards' flash simulators, the device-testing (HIL) path with
app/hil/qemu_board.py standing in for a board behind --device-serial-pty, and the session on
USB CDC-ACM built for nucleo_f429zi.

Needs a Zephyr v3.7.1 or 4.x west workspace (options a workspace needs, e.g. 4.x's -x ones
of docs/zephyr.md, in $KILOLEARN_TWISTER_ARGS): ZEPHYR_BASE set, the toolchain in the
environment (e.g. ZEPHYR_TOOLCHAIN_VARIANT=gnuarmemb GNUARMEMB_TOOLCHAIN_PATH=/usr) and, if the
workspace's manifest does not list them, the CMSIS module (and hal_stm32 for the nucleo
build) in ZEPHYR_MODULES. This repository is added with ZEPHYR_EXTRA_MODULES. Skipped where
there is no Zephyr (CI).

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

from kilolearn.tools.zephyrpaged import zephyr_version

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app"
HIL = APP / "hil" / "qemu_board.py"
ZEPHYR_BASE = os.environ.get("ZEPHYR_BASE")
SUMMARY = ("test configurations passed", "test cases were executed",  # 3.7
           "executed test cases passed", "were only built")  # 4.x

pytestmark = [
    pytest.mark.skipif(not ZEPHYR_BASE, reason="ZEPHYR_BASE not set: no Zephyr workspace"),
    pytest.mark.slow,
]


def _twister(out: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    if shutil.which("qemu-system-arm") is None:
        pytest.skip("qemu-system-arm not installed")
    base = Path(ZEPHYR_BASE or "")
    # west (the harness runs `west flash`) finds the workspace from the working directory
    twister = base / "scripts" / "twister"
    cmd = [twister_python(twister), str(twister), "-T", str(APP), "-O", str(out),
           "--inline-logs", "-x", f"ZEPHYR_EXTRA_MODULES={ROOT}",
           "-e", "sweep",  # the board sweep (kilolearn.app.sweep) is a figure's
           *twister_extra_args(), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, cwd=base.parent)
    summary = [ln for ln in proc.stdout.splitlines() + proc.stderr.splitlines()
               if any(s in ln for s in SUMMARY)]
    print("\n".join(summary))
    assert proc.returncode == 0, "\n".join([*summary, proc.stdout[-4000:], proc.stderr[-4000:]])
    report = json.loads((out / "twister.json").read_text())
    asked = [args[i + 1] for i, a in enumerate(args) if a == "-p"]
    for s in report["testsuites"]:  # the names given with -p (4.x reports qualified names)
        s["platform"] = asked_platform(s["platform"], asked)
    return proc, report


def _harness_log(out: Path, platform: str, scenario: str = "kilolearn.app.session") -> str:
    logs = list(out.glob(f"{platform}*/**/{scenario}/twister_harness.log"))
    return logs[0].read_text() if logs else ""


def test_app_session_under_twister_on_qemu(tmp_path):
    out = tmp_path / "twister-out"
    _, report = _twister(out, "-p", "qemu_cortex_m3", "-p", "mps2/an385", "-p", "mps2/an521/cpu0",
                         "-j", "2")
    ran = {(s["platform"], s["name"].rsplit("/", 1)[-1]) for s in report["testsuites"]
           if s["status"] == "passed"}
    assert ("qemu_cortex_m3", "kilolearn.app.session") in ran
    assert ("mps2/an385", "kilolearn.app.session") in ran
    # no flash driver on mps2/an521: the RAM store, with its warning
    assert ("mps2/an521/cpu0", "kilolearn.app.session") in ran
    assert "store: RAM" in _harness_log(out, "mps2_an521_cpu0")
    for board in ("qemu_cortex_m3", "mps2/an385", "mps2/an521/cpu0"):  # pretrained backbone
        assert (board, "kilolearn.app.session_pretrained") in ran
        assert "fashion task 2: device" in _harness_log(out, board.replace("/", "_"),
                                                         "kilolearn.app.session_pretrained")
    assert ("mps2/an385", "kilolearn.app.flash_probe") in ran
    assert ("qemu_cortex_m3", "kilolearn.app.powercut") in ran
    assert ("mps2/an385", "kilolearn.app.powercut") in ran
    for s in report["testsuites"]:
        assert s["status"] in ("passed", "filtered", "skipped"), (s["platform"], s["name"])
    assert "STATS" in _harness_log(out, "qemu_cortex_m3")


def test_app_session_device_testing_with_qemu_standin(tmp_path):
    out = tmp_path / "twister-hil"
    env_dir = tmp_path / "hil"
    os.environ["KILOLEARN_HIL_DIR"] = str(env_dir)
    try:
        _, report = _twister(out, "-p", "qemu_cortex_m3", "-j", "1", "--device-testing",
                             "--device-serial-pty", f"{HIL},serve",
                             "--west-runner", "misc-flasher", "--west-flash", f"{HIL},flash",
                             "-x", "KILOLEARN_MISC_FLASHER=ON")
    finally:
        del os.environ["KILOLEARN_HIL_DIR"]
    run = [s for s in report["testsuites"] if s["status"] == "passed"]
    assert "kilolearn.app.session" in [s["name"].rsplit("/", 1)[-1] for s in run]
    assert "Flashing finished" in _harness_log(out, "qemu_cortex_m3")


def test_app_usb_cdc_acm_builds(tmp_path):
    """kilolearn.app.usb_cdc_acm (app/usb.conf, app/usb.overlay): the session on a USB CDC-ACM
    port of nucleo_f429zi's USB OTG FS, built only (needs hal_stm32 in the workspace), with the
    window of eight it offers there."""
    out = tmp_path / "twister-usb"
    # Zephyr 4.x deprecates this USB device stack: its own sources warn, which twister's
    # warnings-as-errors stops there (the module's and the app's sources keep -Werror)
    major = zephyr_version(Path(ZEPHYR_BASE or "")).split(".")[0]
    w = ["--disable-warnings-as-errors"] if major.isdigit() and int(major) >= 4 else []
    _, report = _twister(out, "-p", "nucleo_f429zi", "-s", "kilolearn.app.usb_cdc_acm",
                         "-j", "2", *w)
    built = [s for s in report["testsuites"] if s["status"] == "passed"]
    assert [s["name"].rsplit("/", 1)[-1] for s in built] == ["kilolearn.app.usb_cdc_acm"]
    cfg = next(out.glob("nucleo_f429zi*/**/kilolearn.app.usb_cdc_acm/zephyr/.config"))
    text = cfg.read_text()
    assert "CONFIG_USB_DEVICE_STACK=y" in text and "CONFIG_USB_CDC_ACM=y" in text
    assert "CONFIG_KILOLEARN_APP_WINDOW=8" in text
    dts = (cfg.parent / "zephyr.dts").read_text()
    assert "kilolearn,uart = &kl_cdc_acm;" in dts
