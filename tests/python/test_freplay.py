"""Latent replay in flash (docs/replay.md): the reservoir's latents in a NOR-simulated replay
store instead of the arena. The C fault test (power cut at every program/erase step, against
kl_replay in memory), a split-digits session on the host build whose flash buffer comes round
its region (reclaims) and stays bit-identical to the numpy twin, with the flash traffic equal to
the records the twin's choices imply; CONFIG's refusals and resume; a power cut in a session's
latent write on the host's file-backed replay store, restart and resume; the host firmware's
--replay argument."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest
from conftest import require_target

from kilolearn.core import reference
from kilolearn.core.replay import ReplayBuffer
from kilolearn.device import build, qemu
from kilolearn.device import protocol as P
from kilolearn.device import session as S
from kilolearn.formats import export

SECTOR, WRITE = 4096, 16  # the host firmware's replay store (runner/kl_session_main.c)


def record_span(latent: int, n_classes: int, write: int = WRITE) -> int:
    """Bytes of one record (kl_freplay.h): the 44-byte header and the payload (per-class
    counts, the latent), each rounded up to the write block (8 bytes at least)."""
    unit = max(8, write)
    return -(-44 // unit) * unit + -(-(4 * n_classes + latent) // unit) * unit


def test_power_cut_at_every_step_loses_no_committed_latent():
    exe = build.build("host", sanitize=True, target="kl_freplay_faults")
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.rstrip().endswith("PASS"), r.stdout[-3000:]
    cuts = [int(n) for n in re.findall(r"(\d+) cuts \(", r.stdout)]
    restored = [int(n) for n in re.findall(r"(\d+) restored the last committed", r.stdout)]
    went_on = [int(n) for n in re.findall(r"(\d+) went on as the reference", r.stdout)]
    copies = [int(n) for n in re.findall(r"\((\d+) reclaim copies\)", r.stdout)]
    assert len(cuts) == 3 and min(cuts) > 100  # three geometries, every step of each
    assert restored == cuts and went_on == cuts and min(copies) > 0
    assert r.stdout.count(" 0 failed") == 3


@pytest.mark.qemu
def test_power_cut_at_every_step_emulated_m4():
    require_target("mps2-an386")
    elf = build.build("mps2-an386", target="kl_freplay_faults")
    r = qemu.run_firmware(elf, "mps2-an386", timeout=600)
    assert r.returncode == 0 and r.stdout.rstrip().endswith("PASS"), r.stdout[-3000:]
    assert r.stdout.count(" 0 failed") == 3


def twin_kept(sc: S.Scenario, ds) -> int:
    """Latents the reservoir kept in session.run's replay stream: its choices depend on the
    labels and its generator only, so the twin replays the labels (and the picks)."""
    buf = ReplayBuffer(sc.replay_cap, ds.n_classes, sc.seed ^ 0x9E3779B9)
    rng = np.random.default_rng(sc.seed)
    kept = 0
    for classes in S.tasks_of(ds, sc.classes_per_task):
        idx = np.flatnonzero(np.isin(ds.y_train, classes))
        for _ in range(sc.epochs):
            for i in rng.permutation(idx):
                kept += buf.add(np.zeros(1), int(ds.y_train[i])) >= 0
                for _ in range(sc.replay_ratio):
                    buf.pick()
    return kept


def host_client(replay_bytes: int) -> P.Client:
    exe = build.build("host", sanitize=True, target="kl_session")
    return P.Client(P.ProcessLink([str(exe), "--replay", str(replay_bytes)]))


def test_session_flash_replay_equals_twin_and_reclaims(digits):
    """500 latents in a 256 KB region (64 sectors of 18 records): the log comes round, live
    records are copied forward; accuracy equals the twin's after every task; the bytes
    programmed and the sectors erased are those of the records the twin's choices imply."""
    sc = S.Scenario(epochs=2, replay_cap=500, replay_flash=True)
    client = host_client(256 * 1024)
    try:
        assert client.info().replay_store_size == 256 * 1024
        r = S.run(client, "replay", sc, digits)
        assert r.acc_after_task == r.reference_acc_after_task
        assert r.acc_after_task[-1] > 0.6 and r.task_acc[-1][0] > 0.3  # replay keeps task 1
        st = r.stats[-1]
        assert (st["replay_where"], st["replay_count"], st["replay_cap"]) == \
            (P.REPLAY_FLASH, 500, 500)
        span = record_span(sc.backbone, 10)  # the backbone's int8 activations
        records = twin_kept(sc, digits) + 1 + st["replay_copies"]  # + the buffer's state record
        assert st["replay_copies"] > 0
        assert st["replay_bytes_written"] == records * span
        assert st["replay_erases"] == -(-records // (SECTOR // span))
        assert st["store_erases"] == r.stats[0]["store_erases"]  # the weight store: untouched
        assert st["replay_cache_hits"] + st["replay_cache_misses"] == st["replay_steps"]
        # the same settings, resuming: the buffer comes back from the region (a new one
        # without resume, or when the shape differs)
        cut = S.build_model(sc).graph.ops[0].output
        cfg = dict(lr=sc.lr, seed=sc.seed, cut=cut, replay_ratio=sc.replay_ratio, classes=b"")
        for where, cap, held in ((P.REPLAY_FLASH_RESUME, 500, 500), (P.REPLAY_FLASH, 500, 0),
                                 (P.REPLAY_FLASH_RESUME, 400, 0)):
            client.config(replay_cap=cap, replay_where=where, **cfg)
            assert client.stats().replay_count == held, (where, cap)
        # refusals: a region too small, an unknown place, no cache
        for kw, status in ((dict(replay_cap=5000, replay_where=P.REPLAY_FLASH), -28),
                           (dict(replay_cap=10, replay_where=3), -22),
                           (dict(replay_cap=10, replay_where=P.REPLAY_FLASH, replay_lines=0),
                            -22)):
            with pytest.raises(P.DeviceError) as e:
                client.config(**cfg, **kw)
            assert e.value.status == status, kw
        assert client.info().config.replay_where == P.REPLAY_FLASH_RESUME  # unchanged
    finally:
        client.close()


def test_no_replay_store_and_bad_arguments():
    client = host_client(0)
    try:
        assert client.info().replay_store_size == 0
        sc = S.Scenario(epochs=1, replay_cap=50, replay_flash=True)
        with pytest.raises(S.DoesNotFit, match="no replay store"):
            S.run(client, "replay", sc, with_reference=False)
    finally:
        client.close()
    exe = build.build("host", sanitize=True, target="kl_session")
    for bad in ("12345", "-4096", "x", str(64 << 20)):
        r = subprocess.run([str(exe), "--replay", bad], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=30)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1 and "--replay" in lines[0], (bad, r.stderr)


def test_power_cut_during_a_latent_write_then_resume(digits, tmp_path):
    """The host firmware's file-backed replay store: 30 latents kept, a restart (the weight
    store is RAM: LOAD again), CONFIG key 9 = 2 resumes the 30; then the power goes at a step
    of the second TRAIN's record (its payload, its header torn, or right after it): after the
    next restart the buffer holds the latents of every record that was complete."""
    sc = S.Scenario()
    m = S.build_model(sc)
    qm = reference.quantize_model(m.graph, m.init(sc.seed), digits.x_train[:200])
    blob, xq = export.export_s8(qm), qm.quantize_input(digits.x_train)
    cfg = dict(lr=sc.lr, seed=sc.seed, cut=m.graph.ops[0].output, replay_ratio=2,
               classes=b"", replay_cap=100)
    steps = record_span(sc.backbone, 10) // WRITE  # program steps of one record
    exe = build.build("host", sanitize=True, target="kl_session")
    flash = tmp_path / "replay.bin"

    def boot(*extra: str) -> P.Client:
        c = P.Client(P.ProcessLink([str(exe), "--replay", "262144", "--replay-file",
                                    str(flash), *extra]))
        c.load(blob)
        return c

    def train(c: P.Client, n: int, start: int) -> None:
        for i in range(start, start + n):
            assert c.train(int(digits.y_train[i]), xq[i].tobytes())[1] == 2  # replayed

    for k, seed, held in ((steps + steps // 2, 0, 31), (2 * steps, 7, 31),
                          (2 * steps + 1, 0, 32)):
        flash.unlink(missing_ok=True)
        c = boot()
        c.config(replay_where=P.REPLAY_FLASH, **cfg)
        train(c, 30, 0)
        c.close()
        c = boot("--replay-cut", f"{k},{seed}")
        c.config(replay_where=P.REPLAY_FLASH_RESUME, **cfg)
        assert c.stats().replay_count == 30
        train(c, 1, 30)  # its record: steps 1..steps
        with pytest.raises(P.DeviceError) as e:  # the cut in the next records
            for i in range(31, 34):
                c.train(int(digits.y_train[i]), xq[i].tobytes())
        assert e.value.status == -5  # KL_EIO
        c.close()
        c = boot()
        c.config(replay_where=P.REPLAY_FLASH_RESUME, **cfg)
        assert c.stats().replay_count == held, (k, seed)
        train(c, 5, 40)  # goes on: the next records after the torn one
        assert c.stats().replay_count == held + 5
        c.close()
