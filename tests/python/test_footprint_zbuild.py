"""`kilolearn footprint --board BUILD_DIR`: a board's memories read from a Zephyr build's
generated devicetree header (kilolearn.footprint.zbuild), without Zephyr.

The header here is written the way Zephyr v3.7's gen_defines.py writes it (a nucleo_f429zi
excerpt: 192 KB SRAM, 64 KB CCM, 2 MB flash, a disabled SRAM node); the expected regions are
the numbers written into it. Bad or garbled build directories give one line and exit 2.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from kilolearn import footprint
from kilolearn.footprint import zbuild

ROOT = Path(__file__).resolve().parents[2]

HEADER = """\\
#define DT_CHOSEN_zephyr_sram               DT_N_S_memory_20000000
#define DT_CHOSEN_zephyr_flash              DT_N_S_soc_S_flash_controller_40023c00_S_flash_8000000
#define DT_N_S_memory_20000000_PATH "/memory@20000000"
#define DT_N_S_memory_20000000_REG_IDX_0_VAL_ADDRESS {sram_addr} /* 0x20000000 */
#define DT_N_S_memory_20000000_REG_IDX_0_VAL_SIZE {sram_size} /* 0x30000 */
#define DT_N_S_memory_20000000_COMPAT_MATCHES_mmio_sram 1
#define DT_N_S_memory_20000000_STATUS_okay 1
#define DT_N_S_memory_10000000_PATH "/memory@10000000"
#define DT_N_S_memory_10000000_REG_IDX_0_VAL_ADDRESS 268435456 /* 0x10000000 */
#define DT_N_S_memory_10000000_REG_IDX_0_VAL_SIZE 65536 /* 0x10000 */
#define DT_N_S_memory_10000000_COMPAT_MATCHES_zephyr_memory_region 1
#define DT_N_S_memory_10000000_COMPAT_MATCHES_st_stm32_ccm 1
#define DT_N_S_memory_10000000_STATUS_okay 1
#define DT_N_S_memory_30000000_PATH "/memory@30000000"
#define DT_N_S_memory_30000000_REG_IDX_0_VAL_ADDRESS 805306368 /* 0x30000000 */
#define DT_N_S_memory_30000000_REG_IDX_0_VAL_SIZE 4096 /* 0x1000 */
#define DT_N_S_memory_30000000_COMPAT_MATCHES_mmio_sram 1
#define DT_N_S_memory_30000000_STATUS_disabled 1
#define DT_N_S_soc_S_flash_controller_40023c00_S_flash_8000000_PATH "/soc/flash@8000000"
#define DT_N_S_soc_S_flash_controller_40023c00_S_flash_8000000_REG_IDX_0_VAL_ADDRESS 134217728
#define DT_N_S_soc_S_flash_controller_40023c00_S_flash_8000000_REG_IDX_0_VAL_SIZE 2097152
"""


def make_build(tmp: Path, text: str, config: str | None = 'CONFIG_BOARD="nucleo_f429zi"\n'
               'CONFIG_BOARD_TARGET="nucleo_f429zi/stm32f429xx"\n') -> Path:
    z = tmp / "build" / "zephyr"
    (z / zbuild.DT_HEADER).parent.mkdir(parents=True)
    (z / zbuild.DT_HEADER).write_text(text)
    if config is not None:
        (z / ".config").write_text(config)
    return tmp / "build"


def test_board_from_build_reads_sram_ccm_and_flash(tmp_path):
    d = make_build(tmp_path, HEADER.format(sram_addr=0x20000000, sram_size=192 * 1024))
    for where in (d, d / "zephyr", d / "zephyr" / "zephyr.elf"):
        if where.suffix == ".elf":
            where.write_bytes(b"")
        b = footprint.find_board(str(where))
        assert b.name == "nucleo_f429zi/stm32f429xx"
        assert (b.ram, b.flash) == (192 * 1024, 2 * 1024 * 1024)
        got = sorted((r.kind, r.addr, r.size) for r in b.regions)
        assert got == [("flash", 0x08000000, 2 * 1024 * 1024), ("ram", 0x10000000, 64 * 1024),
                       ("ram", 0x20000000, 192 * 1024)]  # the disabled node left out
        assert "/memory@10000000 65,536 B at 0x10000000 (not counted)" in b.note


def test_board_name_falls_back_to_config_board_then_directory(tmp_path):
    text = HEADER.format(sram_addr=0x20000000, sram_size=65536)
    d = make_build(tmp_path / "a", text, 'CONFIG_BOARD="qemu_cortex_m3"\n')
    assert footprint.find_board(str(d)).name == "qemu_cortex_m3"
    d = make_build(tmp_path / "b", text, None)
    assert footprint.find_board(str(d)).name == "build"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from kilolearn.cli import main; "
                           "sys.exit(main())", "footprint", *args], capture_output=True,
                          text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT / "scripts"),
                                                    "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("text", [
    "",                                                   # empty header
    "#define DT_CHOSEN_zephyr_sram DT_N_S_x\n",           # chosen node without a reg
    "#define DT_CHOSEN_zephyr_sram DT_N_S_x\n#define DT_N_S_x_REG_IDX_0_VAL_ADDRESS zz\n"
    "#define DT_N_S_x_REG_IDX_0_VAL_SIZE 0x\n",           # numbers that are not numbers
])
def test_bad_build_dir_is_one_line_exit_2(tmp_path, text):
    d = make_build(tmp_path, text)
    p = _cli("/dev/null", "--board", str(d))
    assert p.returncode == 2, p.stderr
    assert "zephyr,sram" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_not_a_build_dir_is_one_line_exit_2(tmp_path):
    p = _cli("/dev/null", "--board", str(tmp_path))
    assert p.returncode == 2
    assert "not a Zephyr build directory" in p.stderr and "Traceback" not in p.stderr


def test_garbled_headers_never_crash(tmp_path):
    """Random cuts, byte flips and line shuffles of the header: a Board or a FootprintError."""
    rng = random.Random(7)
    base = HEADER.format(sram_addr=0x20000000, sram_size=192 * 1024)
    for i in range(200):
        t = list(base)
        for _ in range(rng.randint(1, 20)):
            t[rng.randrange(len(t))] = chr(rng.choice([0, 10, 32, 35, 48, 57, 95, 120, 255]))
        text = "".join(t)
        if i % 3 == 0:
            lines = text.splitlines()
            rng.shuffle(lines)
            text = "\n".join(lines[: rng.randint(0, len(lines))])
        d = make_build(tmp_path / str(i), text)
        try:
            b = footprint.find_board(str(d))
        except footprint.FootprintError:
            continue
        assert b.ram > 0 and all(r.size > 0 for r in b.regions)
