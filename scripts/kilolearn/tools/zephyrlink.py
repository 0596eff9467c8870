"""The figure ``zephyr-window`` (docs/protocol.md): the Zephyr session app with protocol
version 2's window.

One twister run in the Zephyr workspace of $ZEPHYR_BASE: scenario ``kilolearn.app.session``
on qemu_cortex_m3 (the pytest harness drives a class-incremental session, then evaluates the
test set again with the window full) and ``kilolearn.app.usb_cdc_acm`` built for nucleo_f429zi
(the session on USB CDC-ACM). Read back: the window and ring the app reports at boot, the
accuracies of the harness log, the ELF sizes (``arm-none-eabi-size``) and the window settings
of each build's .config.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .zephyrpaged import _twister_python, run_twister

RUNS = (("qemu_cortex_m3", "kilolearn.app.session"),
        ("nucleo_f429zi", "kilolearn.app.usb_cdc_acm"))
BOOT = re.compile(r"session on (?P<uart>\S+): arena (?P<arena>\d+) bytes \(replay \d+\), rx ring "
                  r"(?P<ring>\d+) bytes, max payload \d+, window (?P<window>\d+)")
TASK = re.compile(r"task (\d+): device ([\d.]+) %  numpy ([\d.]+) %")


def _size(elf: Path) -> dict[str, int]:
    out = subprocess.run(["arm-none-eabi-size", str(elf)], capture_output=True, text=True,
                         check=True).stdout.splitlines()[-1].split()
    return {"text": int(out[0]), "data": int(out[1]), "bss": int(out[2])}


def _config(cfg: Path) -> dict[str, str]:
    keys = ("CONFIG_KILOLEARN_APP_WINDOW", "CONFIG_KILOLEARN_APP_RX_BUF_SIZE",
            "CONFIG_USB_DEVICE_STACK", "CONFIG_USB_CDC_ACM")
    found = dict(re.findall(r"^(CONFIG_\w+)=(.*)$", cfg.read_text(), re.M))
    return {k: found.get(k, "n") for k in keys}


def measure_figure() -> dict:
    """Twister in $ZEPHYR_BASE's workspace; Skipped without one (the record is kept)."""
    from ..device import build
    from .docfigs_measure import Skipped, zephyr_base

    zb = Path(zephyr_base())
    if shutil.which("qemu-system-arm") is None:
        raise Skipped("qemu-system-arm is not installed")
    py = _twister_python(zb / "scripts" / "twister")
    if py is None:
        raise Skipped("no Python starts twister (set TWISTER_PYTHON)")
    root = build.repo_root()
    with tempfile.TemporaryDirectory(prefix="kilolearn-zephyr-window-") as tmp:
        out = Path(tmp) / "twister-out"
        cmd = [py, str(zb / "scripts" / "twister"), "-T", str(root / "app"), "-O", str(out),
               "-j", "2", "--inline-logs", "-x", f"ZEPHYR_EXTRA_MODULES={root}"]
        for platform, scenario in RUNS:
            cmd += ["-p", platform, "-s", scenario]
        summary, wall = run_twister(cmd, cwd=zb.parent)  # west finds the workspace from there
        builds = []
        for platform, scenario in RUNS:
            d = next(out.glob(f"{platform}*/**/{scenario}"))
            b = {"platform": platform, "scenario": scenario,
                 "size": _size(d / "zephyr" / "zephyr.elf"),
                 "config": _config(d / "zephyr" / ".config")}
            log = d / "twister_harness.log"
            if log.is_file():
                text = log.read_text(errors="replace")
                if (m := BOOT.search(text)) is not None:
                    b["boot"] = {k: (int(v) if v.isdigit() else v)
                                 for k, v in m.groupdict().items()}
                b["tasks"] = [[int(t), float(dev), float(ref)]
                              for t, dev, ref in TASK.findall(text)]
            builds.append(b)
    return {"twister": summary, "wall_s": round(wall), "builds": builds}


def render(rec: dict) -> str:
    d = rec["data"]
    lines = [f"*Measured {rec['measured']} in a Zephyr v3.7.1 workspace (wall {d['wall_s']} s "
             f"for builds and run): `{rec['command']}`. Rerun there, with `ZEPHYR_BASE` set: "
             "`kilolearn docs --measure zephyr-window` (without it the command keeps these "
             "figures).*", "", "| | " + " | ".join(
                 f"{b['platform']} `{b['scenario']}`" for b in d["builds"]) + " |",
             "|---|" + "---|" * len(d["builds"])]

    def row(name: str, cell) -> None:  # noqa: ANN001
        lines.append(f"| {name} | " + " | ".join(cell(b) for b in d["builds"]) + " |")

    row("window (.config)", lambda b: b["config"]["CONFIG_KILOLEARN_APP_WINDOW"])
    row("receive ring (.config)",
        lambda b: f"{int(b['config']['CONFIG_KILOLEARN_APP_RX_BUF_SIZE']):,} B")
    row("USB CDC-ACM", lambda b: "yes" if b["config"]["CONFIG_USB_CDC_ACM"] == "y" else "no")
    row("at boot", lambda b: f"{b['boot']['uart']}: window {b['boot']['window']}, ring "
        f"{b['boot']['ring']:,} B" if "boot" in b else "built only")
    row("text / data / bss", lambda b: f"{b['size']['text']:,} / {b['size']['data']:,} / "
        f"{b['size']['bss']:,} B")
    row("session (device = numpy after each task)", lambda b: ", ".join(
        f"{dev:.2f} %" + ("" if dev == ref else f" (numpy {ref:.2f} %)")
        for _t, dev, ref in b.get("tasks", [])) or "-")
    lines += ["", "twister: " + "; ".join(d["twister"])]
    return "\n".join(lines)
