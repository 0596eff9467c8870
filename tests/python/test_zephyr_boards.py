"""The twister scenarios on Zephyr 3.7 LTS and 4.x, the board sweep's figure (zephyr-boards) and
the footprint figure on Zephyr ELFs (footprint-zephyr).

Without a Zephyr workspace (CI): the figures' version handling, rendering and record keeping on
hand-made records, and that both skip. With ZEPHYR_BASE (3.7.1 or 4.x): every board name the
scenarios list is a board of that tree, so one set of yaml files serves both lines.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from conftest import asked_platform

from kilolearn.tools import docfigs, zephyrboards, zephyrfootprint

ROOT = Path(__file__).resolve().parents[2]
ZEPHYR_BASE = os.environ.get("ZEPHYR_BASE")
SCENARIO_FILES = [ROOT / "app" / "sample.yaml", *sorted((ROOT / "tests" / "zephyr").glob(
    "*/testcase.yaml"))]


def _listed_platforms() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in SCENARIO_FILES:
        doc = yaml.safe_load(f.read_text())
        for name, sc in doc["tests"].items():
            for key in ("platform_allow", "integration_platforms", "platform_exclude"):
                for p in sc.get(key) or []:
                    out.setdefault(p, set()).add(f"{f.relative_to(ROOT)}: {name}")
    return out


@pytest.mark.skipif(not ZEPHYR_BASE, reason="ZEPHYR_BASE not set: no Zephyr workspace")
def test_every_listed_platform_is_a_board_of_this_zephyr() -> None:
    """Zephyr 4.x twister stops at a platform_allow name it does not know: the scenarios list
    only names that 3.7 and 4.x share (the sweep's renamed boards come from zephyrboards)."""
    base = Path(ZEPHYR_BASE or "")
    known = set()
    for f in (base / "boards").rglob("*.yaml"):
        m = re.search(r"^identifier:\s*(\S+)", f.read_text(errors="replace"), re.M)
        if m:
            known.add(m.group(1))
    version = _version(base)
    missing = {p: w for p, w in _listed_platforms().items() if p not in known}
    assert not missing, (version, missing)
    for _, name in zephyrboards.platforms(ROOT, version):
        assert name in known, name


def _version(base: Path) -> str:
    from kilolearn.tools.zephyrpaged import zephyr_version

    return zephyr_version(base)


def test_sweep_boards_per_version() -> None:
    v3 = zephyrboards.platforms(ROOT, "3.7.1")
    v4 = zephyrboards.platforms(ROOT, "4.3.0")
    assert [k for k, _ in v3] == [k for k, _ in v4]
    assert len(v3) >= 20 and len({k for k, _ in v3}) == len(v3)
    assert ("mps3/an547", "mps3/an547") in v3
    assert ("mps3/an547", "mps3/corstone300/an547") in v4
    # the engine's sweep lists the app's boards
    eng = yaml.safe_load((ROOT / "tests" / "zephyr" / "engine" / "testcase.yaml").read_text())
    app = yaml.safe_load((ROOT / "app" / "sample.yaml").read_text())
    assert (eng["tests"]["kilolearn.engine.sweep"]["platform_allow"]
            == app["tests"]["kilolearn.app.sweep"]["platform_allow"])
    # no renamed board in a platform_allow list
    assert not set(zephyrboards.RENAMED) & set(_listed_platforms())
    assert not set(zephyrboards.RENAMED.values()) & set(_listed_platforms())


def test_reported_names_back_to_the_asked_ones() -> None:
    reported = {"qemu_cortex_m3/ti_lm3s6965", "mps2/an385", "mps2/an521/cpu0",
                "nucleo_g0b1re/stm32g0b1xx"}
    assert zephyrboards.full_name("qemu_cortex_m3", reported) == "qemu_cortex_m3/ti_lm3s6965"
    assert zephyrboards.full_name("mps2/an521/cpu0", reported) == "mps2/an521/cpu0"
    assert zephyrboards.full_name("nucleo_g0b1re", reported) == "nucleo_g0b1re/stm32g0b1xx"
    assert zephyrboards.full_name("nucleo_g071rb", reported) == "nucleo_g071rb"
    asked = ["qemu_cortex_m3", "mps2/an385", "mps2/an521/cpu0"]
    assert asked_platform("qemu_cortex_m3/ti_lm3s6965", asked) == "qemu_cortex_m3"
    assert asked_platform("mps2/an521/cpu0", asked) == "mps2/an521/cpu0"
    assert asked_platform("mps2/an3850", asked) == "mps2/an3850"  # a prefix is not a board


def test_extra_args_recorded_without_paths() -> None:
    fake = "/a/b/cmsis_6;/a/b/stm32"  # two absolute module paths, made up
    args = ["-x", "CONFIG_UART_AS32X601=n", "-x", "ZEPHYR_MODULES=" + fake]
    assert zephyrboards.elide_paths(args) == \
        "-x CONFIG_UART_AS32X601=n -x ZEPHYR_MODULES=<path>;<path>"


def _row(board: str, name: str, rom: int) -> dict:
    return {"board": board, "name": name, "platform": name, "rom": rom, "ram": 32768,
            "size_ram": 33000, "board_ram": 65536, "board_flash": 262144, "other_ram": 0,
            "core": "Cortex-M3", "soc": "lm3s6965", "arena": 12288, "replay": 8192,
            "store": "RAM", "engine_rom": 50000, "engine_ram": 30000,
            "status": ["passed", "passed"]}


def _entry(version: str, rows: list[dict]) -> dict:
    return {"zephyr": version, "measured": "2026-12-07", "boards": rows,
            "twister": [f"{2 * len(rows)} of {2 * len(rows)} executed test configurations "
                        "passed (100.00%)"], "command": "twister --build-only ..."}


def test_sweep_render_two_versions() -> None:
    rec = {"measured": "2026-12-07", "data": {"versions": {
        "3.7.1": _entry("3.7.1", [_row("qemu_cortex_m3", "qemu_cortex_m3", 70000),
                                  _row("mps3/an547", "mps3/an547", 80000)]),
        "4.3.0": _entry("4.3.0", [_row("qemu_cortex_m3", "qemu_cortex_m3", 71000),
                                  dict(_row("mps3/an547", "mps3/corstone300/an547", 81000),
                                       soc="an547")])}}}
    text = zephyrboards.render(rec)
    assert "| mps3/an547 / mps3/corstone300/an547 |" in text
    assert "| qemu_cortex_m3 | Cortex-M3 | lm3s6965 |" in text
    assert "lm3s6965 (v4.3.0: an547)" in text
    assert "70,000 / 32,768 (50 %)" in text and "71,000 / 32,768 (50 %)" in text
    assert text.count("executed test configurations passed") == 2
    assert "2 boards, 1 cores (Cortex-M3)" in text


def test_sweep_keeps_the_other_versions_record(tmp_path, monkeypatch) -> None:
    """A run in one workspace replaces its version's entry and keeps the other's."""
    fig = tmp_path / docfigs.FIGURES_DIR / "zephyr-boards.json"
    fig.parent.mkdir(parents=True)
    old = {"figure": "zephyr-boards", "data": {"versions": {
        "3.7.1": _entry("3.7.1", [_row("qemu_cortex_m3", "qemu_cortex_m3", 1)]),
        "4.3.0": _entry("4.3.0", [_row("qemu_cortex_m3", "qemu_cortex_m3", 2)])}}}
    fig.write_text(json.dumps(old))
    monkeypatch.setattr(docfigs, "_ROOT", [tmp_path])
    assert set(zephyrboards._previous_versions()) == {"3.7.1", "4.3.0"}
    assert zephyrboards._previous_versions()["4.3.0"]["boards"][0]["rom"] == 2


@pytest.mark.parametrize("name", ["zephyr-boards", "footprint-zephyr"])
def test_zephyr_figures_skip_without_a_workspace(name, monkeypatch) -> None:
    monkeypatch.delenv("ZEPHYR_BASE", raising=False)
    with pytest.raises(docfigs.Skipped, match="ZEPHYR_BASE is not set"):
        docfigs.FIGURES[name].measure()


def test_linker_ram_from_print_memory_usage() -> None:
    out = """Memory region         Used Size  Region Size  %age Used
           FLASH:       76621 B       256 KB     29.23%
             RAM:       64056 B        64 KB     97.74%
             CCM:          1 KB        64 KB      1.56%
        IDT_LIST:          0 GB        32 KB      0.00%
"""
    assert zephyrfootprint.linker_ram(out) == {"RAM": 64056, "CCM": 1024}


def test_summary_lines_of_both_twisters() -> None:
    log = ("2026-12-07 20:06:27,415 - twister - INFO - \x1b[32m50 of 50\x1b[39m test "
           "configurations passed (100.00%), \x1b[39m0\x1b[39m failed, 0 skipped\n"
           "2026-12-07 20:06:27,415 - twister - DEBUG - Determine test cases for test suite: x\n"
           "INFO    - 9 of 10 executed test configurations passed (90.00%), 1 failed\n"
           "INFO    - 9 of 10 executed test cases passed (90.00%), 1 failed on 3 out of total "
           "1261 platforms (0.24%).\n"
           "INFO    - 0 test configurations executed on platforms, 50 test configurations "
           "were only built.\n")
    assert zephyrboards.summary_lines(log) == [
        "50 of 50 test configurations passed (100.00%), 0 failed, 0 skipped",
        "9 of 10 executed test configurations passed (90.00%), 1 failed",
        "9 of 10 executed test cases passed (90.00%), 1 failed on 3 out of total 1261 platforms "
        "(0.24%).",
        "0 test configurations executed on platforms, 50 test configurations were only built."]
