"""``kilolearn footprint`` against independent references: arm-none-eabi-size / -nm / -readelf
on the project's firmware for every QEMU board, and small ELFs built here with known contents."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kilolearn import cli, footprint
from kilolearn.device import build

QEMU_BOARDS = ["mps2-an385", "mps2-an386", "mps2-an500", "mps2-an505", "mps3-an547"]
KINDS = ("text", "data", "bss")
ARM_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-O1", "-ffunction-sections", "-fdata-sections"]


def need_gcc() -> None:
    if not build.toolchain_available():
        pytest.skip("arm-none-eabi-gcc not installed")


def run(cmd: list[str], cwd: Path | None = None) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=cwd).stdout


def size_of(elf: Path, tool: str = "arm-none-eabi-size") -> dict[str, int]:
    """text / data / bss from the Berkeley output of ``size``."""
    lines = run([tool, str(elf)]).splitlines()
    assert lines[0].split()[:3] == ["text", "data", "bss"]
    text, data, bss = (int(v) for v in lines[1].split()[:3])
    return {"text": text, "data": data, "bss": bss}


def nm_symbols(elf: Path, lines: bool = False) -> list[tuple[int, int, str, str, str | None]]:
    """(address, size, type letter, name, file or None) of every sized symbol nm lists."""
    out = []
    cmd = ["arm-none-eabi-nm", "-S", "--defined-only"] + (["-l"] if lines else []) + [str(elf)]
    for line in run(cmd).splitlines():
        loc = None
        if "\t" in line:
            line, loc = line.split("\t", 1)
        parts = line.split()
        if len(parts) != 4:
            continue
        addr, size, letter, name = parts
        file = os.path.normpath(loc.rsplit(":", 1)[0]) if loc else None
        out.append((int(addr, 16), int(size, 16), letter, name, file))
    return out


def union_bytes(intervals: list[tuple[int, int]]) -> int:
    total, end = 0, -1
    for lo, hi in sorted(intervals):
        if hi > end:
            total += hi - max(lo, end)
            end = hi
    return total


def cli_run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = cli.main(["footprint", *args])
    out, err = capsys.readouterr()
    return rc, out, err


# ----------------------------------------------------------------------------- firmware ELFs

_FIRMWARE: dict[str, Path] = {}


def firmware(board: str) -> Path:
    need_gcc()
    if board not in _FIRMWARE:
        _FIRMWARE[board] = build.build(board)
    return _FIRMWARE[board]


@pytest.mark.parametrize("board", QEMU_BOARDS)
def test_firmware_totals_equal_arm_none_eabi_size(board: str) -> None:
    elf = firmware(board)
    ref = size_of(elf)
    r = footprint.analyze(str(elf))
    assert {k: getattr(r.totals, k) for k in KINDS} == ref
    assert r.totals.rom == ref["text"] + ref["data"]
    assert r.totals.ram == ref["data"] + ref["bss"]


@pytest.mark.parametrize("board", QEMU_BOARDS)
def test_firmware_segments_match_readelf(board: str) -> None:
    elf = firmware(board)
    rom = 0
    spans = []
    for line in run(["arm-none-eabi-readelf", "-lW", str(elf)]).splitlines():
        f = line.split()
        if f and f[0] == "LOAD":
            rom += int(f[4], 16)
            flags = "".join(f[6:-1])
            # writable, and not code at its load address (Zephyr's RWE flash segment)
            if "W" in flags and not ("E" in flags and f[2] == f[3]):
                spans.append(range(int(f[2], 16), int(f[2], 16) + int(f[5], 16)))
    ram = len(set().union(*spans)) if spans else 0  # bytes covered, overlaps once
    r = footprint.analyze(str(elf))
    assert (r.segments_rom, r.segments_ram) == (rom, ram)
    # segments can only add alignment padding between sections
    assert 0 <= rom - r.totals.rom < 64 and 0 <= ram - r.totals.ram < 64


@pytest.mark.parametrize("board", QEMU_BOARDS)
def test_firmware_per_file_and_component_sums_equal_totals(board: str) -> None:
    r = footprint.analyze(str(firmware(board)))
    for kind in KINDS:
        want = getattr(r.totals, kind)
        assert sum(getattr(u, kind) for _c, u in r.files.values()) == want
        assert sum(getattr(u, kind) for u in r.components.values()) == want
        assert sum(s.bytes for s in r.symbols if s.kind == kind) == want
    # the project's own code is found and split into its components
    for comp in (footprint.ENGINE, footprint.KERNELS, footprint.APP, footprint.PORT):
        assert r.components[comp].text > 0, comp


@pytest.mark.parametrize("board", QEMU_BOARDS)
def test_firmware_symbols_match_nm_and_aliases_count_once(board: str) -> None:
    elf = firmware(board)
    ref = [s for s in nm_symbols(elf) if s[1] > 0 and s[2].lower() in "tdbrwv"]
    by_name = {}
    for addr, size, _l, name, _f in ref:
        by_name.setdefault(name, set()).add((addr, size))
    real = [s for s in footprint.analyze(str(elf)).symbols if s.type not in ("gap", "anon")]
    for s in real:
        assert (s.address, s.size) in by_name[s.name], s.name
        for alias in s.aliases:
            assert alias in by_name
    # every sized nm symbol is reported once, as itself or as an alias
    reported = [n for s in real for n in (s.name, *s.aliases)]
    assert sorted(reported) == sorted(n for _a, _s, _l, n, _f in ref)
    # bytes given to symbols = the union of the symbols' extents (overlaps once)
    assert sum(s.bytes for s in real) == union_bytes([(a, a + n) for a, n, *_ in ref])


@pytest.mark.parametrize("board", QEMU_BOARDS)
def test_firmware_files_define_their_symbols(board: str) -> None:
    """Every symbol given to a file of this repository is named in that file's source."""
    root = build.repo_root()
    r = footprint.analyze(str(firmware(board)))
    checked = 0
    for s in r.symbols:
        path = root / s.file
        if s.type in ("gap", "anon") or os.path.isabs(s.file) or not path.is_file():
            continue
        base = s.name.split(".")[0]
        assert re.search(rf"\b{re.escape(base)}\b", path.read_text()), (s.name, s.file)
        checked += 1
    assert checked >= 30
    assert footprint.NO_FILE not in r.files


@pytest.mark.parametrize("board", QEMU_BOARDS)
def test_firmware_arena_called_out_and_board_percentages(board: str,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    elf = firmware(board)
    nm = {name: size for _a, size, _l, name, _f in nm_symbols(elf)}
    rc, out, _err = cli_run([str(elf), "--board", board, "--json"], capsys)
    assert rc == 0
    doc = json.loads(out)
    called = {c["name"]: c for c in doc["callouts"]}
    assert called["arena_mem"]["bytes"] == nm["arena_mem"]
    assert called["arena_mem"]["kind"] == "bss"
    # the board table agrees with the board's linker script
    ld = (build.repo_root() / "boards" / "qemu" / board / "link.ld").read_text()
    length = {m[0]: footprint.parse_size(m[1])
              for m in re.findall(r"^\s*(\w+)\s*\([rwx]+\)\s*:.*LENGTH\s*=\s*(\w+)", ld, re.M)}
    assert doc["capacity"] == {"flash": length["CODE"], "ram": length["RAM"]}
    ref = size_of(elf)
    assert doc["percent"]["ram"] == pytest.approx(100 * (ref["data"] + ref["bss"]) / length["RAM"])
    assert doc["percent"]["rom"] == pytest.approx(
        100 * (ref["text"] + ref["data"]) / length["CODE"])


def test_firmware_limits_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    elf = firmware("mps2-an386")
    ref = size_of(elf)
    ram, rom = ref["data"] + ref["bss"], ref["text"] + ref["data"]
    assert cli_run([str(elf), "--max-ram", str(ram), "--max-flash", str(rom)], capsys)[0] == 0
    rc, _out, err = cli_run([str(elf), "--max-ram", str(ram - 1)], capsys)
    assert rc == 3
    assert err.count("\n") == 1 and "--max-ram" in err and "over" in err
    rc, _out, err = cli_run([str(elf), "--max-flash", str(rom - 1), "--json"], capsys)
    assert rc == 3 and "--max-flash" in err


def test_firmware_markdown_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    elf = firmware("mps2-an385")
    rc, out, _ = cli_run([str(elf), "--markdown", "--board", "mps2/an385"], capsys)
    assert rc == 0
    assert "| component" in out and "|--" in out and "arena_mem" in out
    rc, out, _ = cli_run([str(elf), "--ram", "192K", "--flash", "2M", "--top", "5"], capsys)
    assert rc == 0
    ref = size_of(elf)
    pct = 100 * (ref["data"] + ref["bss"]) / (192 * 1024)
    assert f"{pct:.2f} %" in out


# ----------------------------------------------------------------------------- hand-built ELFs

SRC_A = """#include <stdint.h>
uint8_t replay_buffer[300];
static uint32_t scratch[10];
const int32_t a_table[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
int32_t a_data[5] = {1, 2, 3, 4, 5};
int32_t a_sum(const int32_t *p, int n) {
    int32_t s = 0;
    for (int i = 0; i < n; i++) { s += p[i]; scratch[i % 10] += (uint32_t)s; }
    return s + a_data[n % 5];
}
int32_t a_alias(const int32_t *p, int n) __attribute__((alias("a_sum")));
"""
SRC_B = """#include <stdint.h>
extern const int32_t a_table[16];
extern uint8_t replay_buffer[300];
int32_t a_sum(const int32_t *p, int n);
int32_t a_alias(const int32_t *p, int n);
int c_bump(void);
uint8_t model_arena[1024];
int32_t b_twice(int32_t x) { return 2 * x + a_table[x & 15]; }
#ifdef EXTRA
uint8_t b_more[64];
int32_t b_extra(int32_t x) { b_more[x & 63]++; return x * 3 + b_more[(x + 1) & 63]; }
#endif
int main(void) {
    int32_t s = a_sum(a_table, 16) + a_alias(a_table, 3) + b_twice(model_arena[5]);
#ifdef EXTRA
    s += b_extra(s);
#endif
    replay_buffer[s & 255] = (uint8_t)c_bump();
    return s;
}
"""
SRC_C = """static int c_count;
const char c_msg[] = "no debug info here";
int c_bump(void) { c_count += c_msg[c_count & 7]; return c_count; }
"""


def _build_app(tmp: Path, extra: bool = False) -> Path:
    need_gcc()
    out = tmp / ("v2" if extra else "v1")
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("a.c", SRC_A), ("b.c", SRC_B), ("c.c", SRC_C)):
        (out / name).write_text(text)
    defs = ["-DEXTRA"] if extra else []
    run(["arm-none-eabi-gcc", *ARM_FLAGS, "-g", "-c", "a.c", "b.c", *defs], cwd=out)
    run(["arm-none-eabi-gcc", *ARM_FLAGS, "-c", "c.c"], cwd=out)
    run(["arm-none-eabi-gcc", *ARM_FLAGS, "-Wl,--gc-sections", "--specs=nosys.specs",
         "a.o", "b.o", "c.o", "-o", "app.elf"], cwd=out)
    return out / "app.elf"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_app(tmp_path_factory.mktemp("app"))


def test_app_totals_and_sums(app: Path) -> None:
    r = footprint.analyze(str(app))
    assert {k: getattr(r.totals, k) for k in KINDS} == size_of(app)
    for kind in KINDS:
        assert sum(getattr(u, kind) for _c, u in r.files.values()) == getattr(r.totals, kind)


def test_app_dwarf_files_match_nm_line_info(app: Path) -> None:
    """Symbols of the -g objects get the file that nm -l reads from DWARF; the object
    without debug info gets its file from the symbol table."""
    r = footprint.analyze(str(app))
    ours = {n: s.file for s in r.symbols for n in (s.name, *s.aliases)}
    checked = 0
    for _addr, _size, _l, name, file in nm_symbols(app, lines=True):
        if file and os.path.dirname(file) == str(app.parent) and name in ours:
            assert ours[name] == file, name
            checked += 1
    assert checked >= 8
    assert {ours["c_bump"], ours["c_count"], ours["c_msg"]} == {"c.c"}
    assert r.dwarf_units >= 2


def test_app_aliases_counted_once(app: Path) -> None:
    nm = {name: (addr, size) for addr, size, _l, name, _f in nm_symbols(app)}
    assert nm["a_sum"] == nm["a_alias"]
    r = footprint.analyze(str(app))
    hits = [s for s in r.symbols if "a_sum" in (s.name, *s.aliases)]
    assert len(hits) == 1
    assert set([hits[0].name, *hits[0].aliases]) >= {"a_sum", "a_alias"}
    assert hits[0].bytes == nm["a_sum"][1]


def test_app_callouts(app: Path) -> None:
    nm = {name: size for _a, size, _l, name, _f in nm_symbols(app)}
    r = footprint.analyze(str(app))
    called = {s.name: s.bytes for s in r.callouts}
    assert called == {"replay_buffer": nm["replay_buffer"], "model_arena": nm["model_arena"]}


def test_app_diff(app: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new = _build_app(tmp_path, extra=True)
    old_size, new_size = size_of(app), size_of(new)
    nm_old = {n: s for _a, s, _l, n, _f in nm_symbols(app)}
    nm_new = {n: s for _a, s, _l, n, _f in nm_symbols(new)}
    d = footprint.diff(footprint.analyze(str(app)), footprint.analyze(str(new)))
    assert d["totals"]["delta"]["text"] == new_size["text"] - old_size["text"]
    assert d["totals"]["delta"]["bss"] == new_size["bss"] - old_size["bss"]
    syms = {s["symbol"]: s for s in d["symbols"]}
    assert syms["b_extra"]["status"] == "added" and syms["b_extra"]["delta"] == nm_new["b_extra"]
    assert syms["b_more"]["delta"] == nm_new["b_more"]
    assert syms["main"]["delta"] == nm_new["main"] - nm_old["main"]
    comp = {c["component"]: c["delta"] for c in d["components"]}
    assert sum(c["rom"] for c in comp.values()) == d["totals"]["delta"]["rom"]
    rc, out, _ = cli_run([str(new), "--diff", str(app)], capsys)
    assert rc == 0 and "b_extra" in out and "added" in out


def test_object_file_totals(app: Path) -> None:
    obj = app.parent / "a.o"
    r = footprint.analyze(str(obj))
    assert {k: getattr(r.totals, k) for k in KINDS} == size_of(obj)
    assert r.files and all(f.endswith("a.c") for f in r.files if f != footprint.UNATTRIBUTED)


def test_host_x86_elf(tmp_path: Path) -> None:
    cc, size = shutil.which("gcc") or shutil.which("cc"), shutil.which("size")
    if cc is None or size is None:
        pytest.skip("no host C compiler or size")
    (tmp_path / "h.c").write_text("int big[1000]; int v = 3;\n"
                                  "int main(void) { return big[v] + v; }\n")
    run([cc, "-O1", "h.c", "-o", "h"], cwd=tmp_path)
    r = footprint.analyze(str(tmp_path / "h"))
    assert {k: getattr(r.totals, k) for k in KINDS} == size_of(tmp_path / "h", size)
    assert r.machine == "X86_64"


def test_bench_elf_small(tmp_path: Path) -> None:
    need_gcc()
    elf = footprint.build_bench_elf(tmp_path, size_mb=0.25)
    r = footprint.analyze(str(elf))
    assert {k: getattr(r.totals, k) for k in KINDS} == size_of(elf)
    assert {"arena_mem", "replay_buf0"} <= {s.name for s in r.callouts}
    assert r.dwarf_units >= 2


# ----------------------------------------------------------------------------- bad input

def _truncated_elf(tmp: Path, frac: float) -> Path:
    if build.toolchain_available():
        src = firmware("mps2-an385")
    else:
        src = Path(sys.executable).resolve()
    data = src.read_bytes()
    p = tmp / f"trunc{frac}.elf"
    p.write_bytes(data[:max(64, int(len(data) * frac))])
    return p


@pytest.mark.parametrize("case", ["missing", "empty", "text", "directory", "short-header",
                                  "truncated-half", "truncated-64"])
def test_bad_input_one_line_exit_2(case: str, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    if case == "missing":
        path = tmp_path / "nope.elf"
    elif case == "empty":
        path = tmp_path / "empty.elf"
        path.write_bytes(b"")
    elif case == "text":
        path = tmp_path / "notes.txt"
        path.write_text("this is not an ELF file\n" * 20)
    elif case == "directory":
        path = tmp_path
    elif case == "short-header":
        path = tmp_path / "short.elf"
        path.write_bytes(b"\x7fELF\x01\x01\x01")
    elif case == "truncated-half":
        path = _truncated_elf(tmp_path, 0.5)
    else:
        path = _truncated_elf(tmp_path, 0.0)
    rc, out, err = cli_run([str(path)], capsys)
    assert rc == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("kilolearn footprint: ")
    assert "Traceback" not in err


def test_bad_input_subprocess_has_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "junk.bin"
    path.write_bytes(b"\x7fELF" + bytes(range(256)) * 4)
    r = subprocess.run([sys.executable, "-m", "kilolearn.cli", "footprint", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_bad_sizes_and_boards(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["footprint", "x.elf", "--ram", "lots"])
    assert e.value.code == 2
    rc, _out, err = cli_run([sys.executable, "--board", "no-such-board"], capsys)
    assert rc == 2 and "unknown board" in err


# ----------------------------------------------------------------------------- units

def test_parse_size() -> None:
    assert footprint.parse_size("192K") == 192 * 1024
    assert footprint.parse_size("2M") == 2 * 1024 * 1024
    assert footprint.parse_size("64KiB") == footprint.parse_size("64kb") == 65536
    assert footprint.parse_size("0x10000") == 65536
    assert footprint.parse_size("1.5M") == 3 * 512 * 1024
    assert footprint.parse_size("1000") == 1000
    for bad in ("", "12Q", "1.5", "-4K"):
        with pytest.raises(ValueError):
            footprint.parse_size(bad)


def test_classify() -> None:
    c = footprint.classify
    assert c("modules/kilolearn/src/kernels/ref/kl_pool_f32.c") == footprint.KERNELS
    assert c("/ws/modules/lib/kilolearn/modules/kilolearn/src/kl_model.c") == footprint.ENGINE
    assert c("modules/kilolearn/port/zephyr/kl_port_zephyr.c") == footprint.PORT
    assert c("runner/kl_runner.c") == footprint.APP
    assert c("/ws/zephyr/kernel/sched.c") == footprint.ZEPHYR
    assert c("/ws/zephyr/lib/libc/minimal/source/string/string.c") == footprint.LIBC
    assert c("/src/newlib/libc/string/memset.c") == footprint.LIBC
    assert c("lib_a-memcpy.o") == footprint.LIBC
    assert c("_udivsi3.o") == footprint.LIBC
    assert c("mystery.c") == footprint.OTHER
    assert c("vendor/x.c", [("vendor/*", "vendor")]) == "vendor"


def test_stripped_elf_totals_stay_exact(app: Path, tmp_path: Path) -> None:
    stripped = tmp_path / "stripped.elf"
    run(["arm-none-eabi-strip", "-o", str(stripped), str(app)])
    r = footprint.analyze(str(stripped))
    assert {k: getattr(r.totals, k) for k in KINDS} == size_of(stripped)
    assert not r.has_symtab and list(r.files) == [footprint.UNATTRIBUTED]
