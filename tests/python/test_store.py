"""The weight store (docs/flash-store.md): power cuts at every program/erase step of a COMMIT and
of a LOAD on the host (file-backed NOR simulation, ASan/UBSan) and on the emulated M4 (NOR
simulation over PSRAM): after each cut and reboot the blob is exactly the old or exactly the new
one. Persistence across restarts through the protocol, wear counters in STATS, the store bench."""

from __future__ import annotations

import re
import struct

import numpy as np
import pytest
from conftest import require_target

from kilolearn.bench import storebench
from kilolearn.core import model, reference
from kilolearn.device import build, protocol, qemu
from kilolearn.formats import export

LINE = re.compile(r"(commit|load): (\d+) steps, (clean|torn) cut at each of (\d+) points: "
                  r"(\d+) old, (\d+) new")


@pytest.fixture(scope="module")
def session_blob() -> bytes:
    return storebench.session_blob()


@pytest.fixture(scope="module")
def small_blob(digits) -> bytes:
    m = model.mlp([64, 16, 10])
    return export.export_s8(reference.quantize_model(m.graph, m.init(3), digits.x_train[:100]))


def _check_report(out: str, min_steps: int, write_block: int = 16) -> None:
    assert out.rstrip().endswith("PASS"), out
    found = LINE.findall(out)
    assert sorted((w, c) for w, _, c, *_ in found) == sorted(
        [("commit", "clean"), ("commit", "torn"), ("load", "clean"), ("load", "torn")]), out
    for _what, steps, _kind, points, old, new in found:
        steps, points, old, new = int(steps), int(points), int(old), int(new)
        # every step is a cut point (plus one after the last): all old until the header landed;
        # the header's last writes may only hold erased padding (its 28 bytes, KLS2 with a
        # 64-bit sequence number, then 0xFF/0x00)
        data_off, used = max(32, write_block), 28
        assert steps >= min_steps and points == steps + 1
        assert (old, new) == (points - 1 - (data_off - used) // write_block,
                              1 + (data_off - used) // write_block), out


def test_power_cut_at_every_step_host_asan(tmp_path, session_blob):
    exe = build.build("host", sanitize=True, target="kl_store_faults")
    blob = tmp_path / "session.klm"
    blob.write_bytes(session_blob)
    import subprocess

    r = subprocess.run([str(exe), str(blob), str(tmp_path / "flash.bin")], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    # 14 KB in 16-byte writes: > 870 program steps and the sector erases
    _check_report(r.stdout, len(session_blob) // 16)


@pytest.mark.parametrize("geometry", ["128K,8K,8,0", "64K,4K,64,0xFF"])
def test_power_cut_other_geometries_host_asan(tmp_path, small_blob, geometry):
    """Erased to 0x00 with 8-byte writes; a write block larger than the slot header."""
    exe = build.build("host", sanitize=True, target="kl_store_faults")
    blob = tmp_path / "small.klm"
    blob.write_bytes(small_blob)
    import subprocess

    r = subprocess.run([str(exe), str(blob), str(tmp_path / "flash.bin"), geometry, "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    wb = int(geometry.split(",")[2])
    _check_report(r.stdout, len(small_blob) // wb, wb)


@pytest.mark.qemu
def test_power_cut_at_every_step_emulated_m4(session_blob):
    require_target("mps2-an386")
    elf = build.build("mps2-an386", target="kl_store_faults")
    r = qemu.run_firmware(elf, "mps2-an386", job=session_blob, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    _check_report(r.stdout, len(session_blob) // 16)


def _client(exe, flash, *extra: str) -> protocol.Client:
    return protocol.Client(protocol.ProcessLink(
        [str(exe), "--flash", str(flash), "--geometry", "96K,16K,4,0xFF", *extra]))


ALL = bytes([1] * 10)


def _sample(i: int) -> bytes:
    return np.random.default_rng(i).integers(-128, 128, 64, dtype=np.int8).tobytes()


def test_commit_survives_restart_and_cut(tmp_path, session_blob):
    """The host firmware on the file store: a committed generation comes back after a restart
    (same logits); a COMMIT cut short by --cut leaves the old one; 6 sectors, 1-sector slots."""
    exe = build.build("host", target="kl_session")
    flash = tmp_path / "flash.bin"
    c = _client(exe, flash)
    assert not c.info().loaded
    c.load(session_blob)
    st = c.stats()
    assert (st.generation, st.erase_block, st.write_block, st.n_sectors) == (1, 16384, 4, 6)
    assert st.memory_mapped and sum(st.sector_erases) == st.store_erases == 1
    assert sum(st.sector_bytes) == st.store_bytes_written == 32 + len(session_blob)
    c.config(classes=ALL)  # predictions over every class (not only the ones seen since boot)
    for i in range(20):
        c.train(i % 10, _sample(i))
    c.commit()
    gen2 = c.predict(_sample(99))
    assert c.stats().generation == 2
    for i in range(20):
        c.train(i % 10, _sample(100 + i))
    c.close()

    c = _client(exe, flash)  # reboot: generation 2, not the uncommitted steps
    info = c.info()
    assert info.loaded and info.store_size == 96 * 1024
    c.config(classes=ALL)
    assert c.predict(_sample(99)) == gen2 and c.stats().generation == 2
    for i in range(20):
        c.train(i % 10, _sample(200 + i))
    c.close()
    image = flash.read_bytes()

    # a cut at each of a few steps of the next COMMIT: 1 erase, ~3,500 writes of 4 bytes
    for k in (1, 2, 1000, 3500):
        flash.write_bytes(image)
        c = _client(exe, flash, "--cut", f"{k},{k}")
        for i in range(5):
            c.train(i % 10, _sample(300 + i))
        with pytest.raises(protocol.DeviceError) as e:
            c.commit()
        assert e.value.status == -5  # KL_EIO
        c.close()
        c = _client(exe, flash)
        c.config(classes=ALL)
        assert c.stats().generation == 2 and c.predict(_sample(99)) == gen2, k
        c.close()


def test_commit_needs_a_free_slot_besides_the_pinned_one(tmp_path, session_blob):
    """Two slots only: the model reads frozen weights from its slot, so a second COMMIT has no
    room (KL_ENOSPC) until RESET moves the model to the newest generation."""
    exe = build.build("host", target="kl_session")
    c = protocol.Client(protocol.ProcessLink(
        [str(exe), "--flash", str(tmp_path / "f.bin"), "--geometry", "32K,16K,4,0xFF"]))
    c.load(session_blob)
    c.train(1, _sample(1))
    c.commit()
    with pytest.raises(protocol.DeviceError) as e:
        c.commit()
    assert e.value.status == -28
    c.reset()
    c.train(1, _sample(2))
    c.commit()
    assert c.stats().generation == 3
    c.close()


def test_ram_store_stats_and_rotation(session_blob):
    """The default host store (RAM, 4 KB virtual sectors): generations rotate over the ring."""
    exe = build.build("host", target="kl_session")
    c = protocol.Client(protocol.ProcessLink([str(exe)]))
    c.load(session_blob)
    offsets = []
    for g in range(17):
        c.train(g % 10, _sample(g))
        c.commit()
        st = c.stats()
        assert st.generation == g + 2
        offsets.append(st.slot_offset)
    span = 4 * 4096  # 14 KB + header in 4 KB sectors
    # LOAD went to slot 0, which the model reads in place (pinned): the ring of 64 sectors
    # has 15 more slots, then wraps around it
    assert offsets == [span * (1 + g % 15) for g in range(17)]
    assert sum(st.sector_erases) == st.store_erases and st.n_sectors == 64
    assert st.sector_erases[:4 * 4] == [1] * 4 + [2] * 8 + [1] * 4
    c.close()


def test_stats_reply_layout():
    """STATS grew at its end only: the 38 bytes of protocol 1 come first, unchanged."""
    p = struct.pack("<IIIIIIIIIH", 1, 2, 3, 0, 4, 5, 6, 7, 8, 9)
    p += struct.pack("<IIIHBBHH", 5, 4096, 16384, 4, 0xFF, 3, 2, 2) + struct.pack("<4I", 1, 2, 3, 4)

    class _L:
        def write(self, data):
            pass

    c = protocol.Client.__new__(protocol.Client)
    c.request = lambda cmd, payload=b"": p  # type: ignore[method-assign]
    st = c.stats()
    assert (st.train_steps, st.store_erases, st.active_classes, st.generation) == (1, 8, 9, 5)
    assert st.sector_erases == [1, 3] and st.sector_bytes == [2, 4] and st.memory_mapped


def test_store_bench_figures(session_blob):
    exe = build.build("host", target="kl_session")
    r = storebench.run_one(exe, session_blob, "4x16K", every=10, steps=300)
    assert r.commits == 30
    assert r.erases_per_1k == pytest.approx(100.0)  # one 16 KB sector per commit
    # the pinned LOAD slot is never erased: the commits rotate over the other 3 sectors
    assert r.max_sector_erases_per_1k == pytest.approx(100 / 3, abs=0.1)
    assert r.bytes_per_commit == 32 + len(session_blob)
    assert r.lifetime_commits == pytest.approx(30_000, rel=0.01)
