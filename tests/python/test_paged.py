"""Paged weights (docs/paged-weights.md): dense weights read in place from simulated NOR flash,
updated rows appended to the weight log, folds into new generations. The C engine against the
numpy twin trained with every weight in memory (int8 bit for bit, on the host under ASan/UBSan
and on the emulated M3/M4/M7/M33; float32 to rounding), the runner's flash counts against the
record sizes, power cuts at every program/erase step (host file store and emulated M4), and the
refusals (blob flags, policies the paged update does not do)."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import HOST_TARGETS, QEMU_BOARDS, require_target, split_target
from test_blob import reseal

from kilolearn.core import model as M
from kilolearn.core import reference as R
from kilolearn.core import selective
from kilolearn.device import build, job, qemu, runner
from kilolearn.formats import export

TARGETS = HOST_TARGETS + QEMU_BOARDS
NORM = selective.POLICIES["channel-norm"]


def setup(rng, sizes=(64, 32, 10), n=48):
    m = M.mlp(list(sizes))
    g, p = m.graph, m.init(5)
    x = rng.standard_normal((n, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], n)
    qm = R.quantize_model(g, p, x[:10])
    return g, p, x, y, qm, qm.quantize_input(x)


def twin_s8(qm, xq, y, epochs, permille):
    ref = R.S8Trainer(qm, lr=0.3, seed=9)
    if permille:
        ref.set_update_policy("channel-norm", permille=permille)
    R.train_in_order(ref, xq, y, epochs)
    return ref


@pytest.mark.parametrize("target", TARGETS)
def test_s8_paged_equals_twin_in_memory(target, rng):
    """Every weight, Deutel's rows at 50 % and 18.5 %: the weights after two epochs (folded back
    into a blob), the count of updated weights and the test predictions equal the twin's, which
    keeps every weight in memory; an 8 KB log makes the engine fold several times."""
    require_target(target)
    board, asan = split_target(target)
    for sizes in ((64, 32, 10), (64, 24, 16, 10)):
        g, _, _, y, qm, xq = setup(rng, sizes)
        for pm in (0, 500, 185):
            img = job.build(export.export_s8(qm, paged=True), xq, y, xq[:20], y[:20], lr=0.3,
                            seed=9, epochs=2, dump_weights=True,
                            update=(NORM, pm) if pm else None, paged=True, log_size=8192)
            rep = runner.run_job(img, board, sanitize=asan)
            assert rep.one("model")["paged"] == 1
            ref = twin_s8(qm, xq, y, 2, pm)
            for i in range(len(g.ops)):
                assert np.array_equal(rep.dump(f"w{i:02d}", "i1").reshape(ref.m.w[i].shape),
                                      ref.m.w[i]), (sizes, pm, i)
                assert np.array_equal(rep.dump(f"b{i:02d}", "<i4"), ref.m.b[i]), (sizes, pm, i)
            eps = rep.records["epoch"]
            assert sum(e["upd_touched"] for e in eps) == ref.upd_touched
            assert eps[-1]["test_correct"] == int((ref.predict(xq[:20]) == y[:20]).sum())
            assert sum(e["folds"] for e in eps) >= 2, "the 8 KB log never filled"


def test_f32_paged_close_to_twin(rng):
    g, p, x, y, _, _ = setup(rng)
    for pm in (0, 500):
        img = job.build(export.export_f32(g, p, paged=True), x, y, x[:20], y[:20], lr=0.05,
                        seed=9, epochs=2, dump_weights=True, update=(NORM, pm) if pm else None,
                        paged=True, log_size=16384)
        rep = runner.run_job(img, sanitize=True)
        ref = R.F32Trainer(g, p, lr=0.05)
        if pm:
            ref.set_update_policy("channel-norm", permille=pm)
        R.train_in_order(ref, x, y, 2)
        for i, _op in enumerate(g.ops):
            w = rep.dump(f"w{i:02d}", "<f4").reshape(ref.p.weights[i].shape)
            np.testing.assert_allclose(w, ref.p.weights[i], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(rep.dump(f"b{i:02d}", "<f4"), ref.p.biases[i], rtol=1e-4,
                                       atol=1e-5)


def test_flash_bytes_are_the_records(rng):
    """Without folds (a log big enough), each step programs one record per row it changes
    (header + row + bias, in 16-byte units; int8 rows whose rounded step is zero are not
    written) and a commit record with the dither and exponents (every step: they change even
    when no row does): the runner's count of
    programmed bytes is that sum, from the rows that changed in the twin."""
    g, _, _, y, qm, xq = setup(rng, n=30)
    img = job.build(export.export_s8(qm, paged=True), xq, y, lr=0.3, seed=9, epochs=1,
                    update=(NORM, 250), paged=True, log_size=1 << 20)
    rep = runner.run_job(img, sanitize=True)
    ep = rep.one("epoch")
    assert ep["folds"] == 0
    ref = R.S8Trainer(qm, lr=0.3, seed=9)
    ref.set_update_policy("channel-norm", permille=250)
    rows = expect = 0
    for i in range(len(xq)):
        b0 = [None if b is None else b.copy() for b in ref.m.b]
        w0 = [None if w is None else w.copy() for w in ref.m.w]
        ref.step(xq[i], int(y[i]))
        step_rows = 0
        for k in range(len(g.ops)):
            changed = (ref.m.b[k] != b0[k]) | (ref.m.w[k] != w0[k]).reshape(len(b0[k]), -1).any(1)
            payload = (w0[k].size // len(b0[k]) + 3) // 4 * 4 + 4
            step_rows += int(changed.sum())
            expect += int(changed.sum()) * (48 + (payload + 15) // 16 * 16)
        rows += step_rows
        # every int8 step commits: the dither (4 bytes) and the exponents (a byte per tensor)
        expect += 48 + (4 + len(g.shapes) + 15) // 16 * 16
    assert rows > 0
    assert ep["flash_bytes"] == expect


def _faults(exe_args, timeout=600):
    r = subprocess.run(exe_args, capture_output=True, text=True, timeout=timeout)
    return r


def _fault_job(rng) -> bytes:
    g, _, _, y, qm, xq = setup(rng, n=20)
    return job.build(export.export_s8(qm, paged=True), xq, y, lr=0.3, seed=9,
                     update=(NORM, 500), paged=True, log_size=8192)


def _check(out: str) -> tuple[int, int]:
    assert "PASS" in out, out[-3000:]
    run = [ln for ln in out.splitlines() if ln.startswith("run:")][0]
    cuts = [ln for ln in out.splitlines() if ln.startswith("cuts:")][0]
    n = [int(t) for t in run.replace(",", " ").split() if t.isdigit()]
    c = [int(t.strip("(),")) for t in cuts.replace(",", " ").split() if t.strip("(),").isdigit()]
    assert n[2] >= 2, "no fold in the run"  # steps, program/erase steps, folds
    assert c[0] == n[1] and c[4] == 0 and c[2] + c[3] == c[0]  # every step cut, none bad
    # every cut went on bit for bit but those between a fold's commit and its state record
    assert c[5] + c[6] == c[0] and c[6] <= c[0] // 50
    return c[0], n[2]


def test_power_cut_every_step_host_file_store(tmp_path, rng):
    exe = build.build("host", sanitize=True, target="kl_paged_faults")
    jp = tmp_path / "job.bin"
    jp.write_bytes(_fault_job(rng))
    r = _faults([str(exe), str(jp), str(tmp_path / "flash.bin"), "12"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    cuts, _ = _check(r.stdout)
    assert cuts > 1000


@pytest.mark.qemu
def test_power_cut_every_step_emulated_m4(rng):
    require_target("mps2-an386")
    elf = build.build("mps2-an386", target="kl_paged_faults")
    r = qemu.run_firmware(elf, "mps2-an386", job=_fault_job(rng), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:]
    cuts, _ = _check(r.stdout)
    assert cuts > 1000


def _op_flags(blob: bytes, i: int) -> int:
    o_off = struct.unpack_from("<I", blob, 32)[0]
    return blob[o_off + i * 48 + 2]


def _set_op_flags(blob: bytes, i: int, flags: int) -> bytes:
    b = bytearray(blob)
    o_off = struct.unpack_from("<I", b, 32)[0]
    b[o_off + i * 48 + 2] = flags
    return reseal(b)


def test_blob_flag_roundtrip_and_refusals(rng):
    g, p, _, _, qm, _ = setup(rng)
    blob = export.export_s8(qm, paged=True)
    assert struct.unpack_from("<HH", blob, 4) == (2, 4)
    assert export.read(blob).paged and not export.read(export.export_s8(qm)).paged
    assert all(_op_flags(blob, i) == 0x05 for i in range(len(g.ops)))
    assert export.export_s8(qm) == export.export_s8(qm, paged=False)  # unchanged when not paged
    bad = [_set_op_flags(blob, 0, 0x04),  # paged, not trainable
           _set_op_flags(blob, 0, 0x07)]  # paged and bias-only
    for b in bad:
        img = job.build(b, np.zeros((1, 64), np.int8), np.zeros(1, np.int64), paged=True)
        with pytest.raises(runner.RunError, match="code -204"):
            runner.run_job(img, sanitize=True)
    with pytest.raises(ValueError, match="schedule"):
        from kilolearn import planner

        export.export_f32(g, p, plan=planner.plan(g, 1 << 20, dtype="f32"), paged=True)


def test_policies_the_paged_update_refuses(rng):
    """Top-r by element and Paissan's channel blocks are not row updates: KL_ENOTSUP, as is
    momentum (its buffers would be the size of the weights)."""
    g, p, x, y, qm, xq = setup(rng, n=4)
    for pol in ("topr", "channel-sparse"):
        img = job.build(export.export_s8(qm, paged=True), xq, y,
                        update=(selective.POLICIES[pol], 200), paged=True)
        with pytest.raises(runner.RunError, match="code -134"):
            runner.run_job(img, sanitize=True)
    img = job.build(export.export_f32(g, p, paged=True), x, y, momentum=0.9, paged=True)
    with pytest.raises(runner.RunError, match="code -134"):
        runner.run_job(img, sanitize=True)


@pytest.mark.parametrize("target", ["host", "mps2-an386"])
def test_planner_sizes_the_paged_arena_to_the_byte(target, rng):
    """MemModel(paged=True) is the arena kl_model_init lays out for a paged model, with every
    row updated or rows selected (the selection takes no memory), and far below the model's
    size."""
    require_target(target)
    from kilolearn.planner.memory import MemModel

    tgt = "host" if target == "host" else "arm"
    for sizes in ((64, 32, 10), (784, 512, 128, 10)):
        g, _, _, y, qm, xq = setup(rng, sizes, n=2)
        for pm in (0, 185):
            rep = runner.run_job(job.build(export.export_s8(qm, paged=True), xq, y,
                                           update=(NORM, pm) if pm else None, paged=True,
                                           log_size=1 << 20), target)
            mm = MemModel(g, "s8", target=tgt, paged=True)
            assert rep.one("done")["arena_peak"] == mm.store_all_bytes(), (sizes, pm)
    assert mm.store_all_bytes() < 20 * 1024 < MemModel(g, "s8", target=tgt).store_all_bytes()


def test_too_small_even_paged_refused_before_flash(tmp_path, rng):
    """An arena smaller than the paged model needs: the planner says KL_ENOMEM with the
    smallest arena (exit 2), and the runner stops with KL_ENOMEM and the arena it needs before
    it writes the blob to its flash."""
    from kilolearn.planner.memory import MemModel

    g, _, _, y, qm, xq = setup(rng, (784, 512, 128, 10), n=2)
    blob = export.export_s8(qm, paged=True)
    need = MemModel(g, "s8", target="host", paged=True).store_all_bytes()
    img = job.build(blob, xq, y, paged=True, arena_size=need - 8)
    with pytest.raises(runner.RunError, match="code -12"):
        runner.run_job(img)
    exe = build.build("host", target="kl_runner")
    jp = tmp_path / "job.bin"
    jp.write_bytes(img)
    out = subprocess.run([str(exe), str(jp)], capture_output=True, text=True).stdout
    assert f"KL need arena {need} have {need - 8}" in out and "KL store" not in out
    bp = tmp_path / "m.klm"
    bp.write_bytes(blob)
    arm = MemModel(g, "s8", target="arm", paged=True).store_all_bytes()
    cli = [str(Path(sys.executable).with_name("kilolearn"))]
    r = subprocess.run([*cli, "plan", "--blob", str(bp), "--budget", str(arm - 1)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and f"smallest arena that fits is {arm:,} B" in r.stdout
    r = subprocess.run([*cli, "plan", "--blob", str(bp), "--budget", str(arm)],
                       capture_output=True, text=True)
    assert r.returncode == 0 and f"fits: {arm:,} B" in r.stdout


def test_session_trains_a_paged_model_across_restarts(tmp_path, digits):
    """The session firmware on the host's file store with a weight log (--log): a paged int8
    model is loaded, trained over the protocol and pulled back equal to the twin trained in
    memory; after a restart without COMMIT the log brings every committed step back and
    training goes on bit for bit; COMMIT folds (the stored generation is the pulled model);
    RESET goes back to the stored generation, also after a restart; a session without a log
    refuses the paged model (KL_ENOTSUP)."""
    from kilolearn.device import protocol as P

    exe = build.build("host", target="kl_session")
    flash = tmp_path / "flash.bin"

    def client(*extra: str) -> P.Client:
        return P.Client(P.ProcessLink([str(exe), "--flash", str(flash), "--geometry",
                                       "256K,4K,16,0xFF", *extra]))

    m = M.mlp([64, 32, 10])
    qm = R.quantize_model(m.graph, m.init(2), digits.x_train[:200])
    blob = export.export_s8(qm, paged=True)
    xq = qm.quantize_input(digits.x_train[:160])
    y = digits.y_train[:160]
    twin = R.S8Trainer(qm, lr=0.05, seed=4)
    twin.set_update_policy("channel-norm", permille=500)

    def train(c: P.Client, lo: int, hi: int) -> None:
        for i in range(lo, hi):
            c.train(int(y[i]), xq[i].tobytes())
            twin.step(xq[i], int(y[i]))

    def same_as_twin(pulled: bytes) -> None:
        got = export.read(pulled).qmodel
        for a, b in zip(got.w + got.b, twin.m.w + twin.m.b, strict=True):
            assert (a is None and b is None) or np.array_equal(a, b)
        assert list(got.exp) == list(twin.m.exp)

    all_classes = bytes([1] * 10)
    c = client("--log", "49152")
    c.load(blob)
    c.config(lr=0.05, seed=4, classes=all_classes, update=(NORM, 500))
    train(c, 0, 100)
    pulled = c.read_blob()
    same_as_twin(pulled)
    c.close()  # a restart, no COMMIT
    c = client("--log", "49152")
    c.config(lr=0.05, seed=4, classes=all_classes, update=(NORM, 500))
    assert c.read_blob() == pulled
    train(c, 100, 160)  # 48 KB of log: folds on the way
    pulled = c.read_blob()
    same_as_twin(pulled)
    c.commit()
    assert c.read_blob(P.READ_STORED) == pulled
    # RESET: back to the stored generation (a reset record in the log), across a restart too
    c.config(lr=0.05, seed=4, classes=all_classes, update=(NORM, 500))
    for i in range(10):
        c.train(int(y[i]), xq[i].tobytes())
    assert c.read_blob() != pulled
    c.reset()
    assert c.read_blob() == pulled
    c.close()
    c = client("--log", "49152")
    assert c.read_blob() == pulled
    c.close()
    c = client("--log", "0")  # no log: a paged model cannot train here
    with pytest.raises(P.DeviceError, match="KL_ENOTSUP"):
        c.load(blob)
    c.close()


@pytest.mark.parametrize("target", ["host", "mps2-an386"])
def test_the_loop_with_a_paged_model(target, tmp_path):
    """kilolearn fit --paged, then adapt on the device (the host session and the QEMU board:
    both give a paged model a weight log): the device agrees with the numpy twin prediction for
    prediction, and the pulled blob is still paged and evaluates on the host to the device's
    accuracy."""
    require_target(target)
    from test_adapt import _kilolearn

    r = _kilolearn("example-data", "d", "--adapt-samples", "40", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = _kilolearn("fit", "d/train.npz", "-o", "base.klm", "--epochs", "4", "--paged",
                   cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert export.read((tmp_path / "base.klm").read_bytes()).paged
    r = _kilolearn("adapt", "base.klm", "--data", "d/adapt.npz", "--eval", "d/shifted-test.npz",
                   "--samples", "40", "--epochs", "2", "--board", target, "-o", "adapted.klm",
                   "--json", "a.json", "--host-runs", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    import json

    res = json.loads((tmp_path / "a.json").read_text())
    assert res["points"][-1]["agree"]["shifted-test"] == 1.0
    pulled = (tmp_path / "adapted.klm").read_bytes()
    assert export.read(pulled).paged
    assert res["pulled_host"]["shifted-test"] == res["points"][-1]["device"]["shifted-test"]


def test_wide_int8_layers_train_at_the_plain_kernels_speed(rng):
    """The in-SRAM baseline of paged-bench (784-512-128-10, int8) on the emulated M4: a trained
    layer wider than 256 inputs keeps the plain weight layout, whose DSP forward kernel runs at
    ~1.2 insn/MAC (figure kernels); the paired layout's kernel handles up to 256 inputs at
    speed and fell to its general path beyond (3.6 insn/MAC: the training forward cost 3x its
    former instructions unnoticed). Instruction counts under -icount are deterministic."""
    require_target("mps2-an386")
    sizes = [784, 512, 128, 10]
    m = M.mlp(sizes)
    g, p = m.graph, m.init(1)
    x = rng.uniform(0, 1, (8, 784)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    qm = R.quantize_model(g, p, x)
    rep = runner.run_job(job.build(export.export_s8(qm), qm.quantize_input(x), y, lr=0.05,
                                   seed=1, profile=True), "mps2-an386")
    macs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    ep = rep.one("epoch")
    assert ep["forward_insn"] / ep["n_train"] / macs < 1.3
