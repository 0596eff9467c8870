"""Blob 2.1 schedules executed by the engine: gradients, updated weights and exponents from
store-all, Chen's sqrt(n), recompute-all and optimal plans at several budgets are bit-identical
to the engine without a schedule (int8), on the host (plain and ASan/UBSan) and on QEMU
mps2-an386; the runner's arena high-water mark equals the planner's peak to the byte."""

from __future__ import annotations

import pytest
from conftest import require_target, split_target
from test_engine import data_for, residual_net

from kilolearn import export, job, runner
from kilolearn import model as M
from kilolearn import planner as P
from kilolearn import reference as R

TARGETS = ["host", "host-asan", "mps2-an386"]

MODELS = {
    "mlp": lambda: M.mlp([12, 10, 8, 6, 3]),
    "cnn": lambda: M.small_cnn((8, 8, 1), 4, 3),
    "residual": residual_net,
    "mobilenet_v2": lambda: M.mobilenet_v2((16, 16, 3), 4, alpha=0.35, trainable_last=2),
}


def plans_for(name: str, mm: P.MemModel) -> list[P.Plan]:
    base = [P.baseline(mm, w) for w in ("store-all", "sqrt-n")]
    if name != "mobilenet_v2":
        base.append(P.baseline(mm, "recompute-all"))
    hi, lo = base[0].peak, min(b.peak for b in base)
    budgets = [hi - (hi - lo) // 3, lo + (hi - lo) // 3] if name != "mobilenet_v2" else \
        [(hi + lo) // 2]
    opt = [p for p in (P.optimal(mm, b) for b in budgets) if p is not None]
    assert opt, name
    return base + opt


def run(blob: bytes, xq, y, board: str, asan: bool, cmd: int) -> job.Report:
    kw = dict(cmd=cmd, n_steps=3, lr=0.2, seed=77, dump_weights=True) if cmd == job.CMD_GRADS \
        else dict(lr=0.3, seed=9, epochs=1, dump_weights=True)
    return runner.run_job(job.build(blob, xq, y, xq[:4], y[:4], **kw), board, sanitize=asan)


def comparable(rep: job.Report) -> tuple:
    recs = {k: v for k, v in rep.records.items() if k not in ("model", "done", "epoch")}
    ep = [{k: v for k, v in e.items() if not k.endswith("_insn")}
          for e in rep.records.get("epoch", [])]
    return recs, ep, rep.dumps


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", list(MODELS))
def test_schedules_bit_identical_to_store_all(target, name, rng):
    require_target(target)
    board, asan = split_target(target)
    m = MODELS[name]()
    g = m.graph
    p = m.init(3)
    x, y = data_for(m, rng, 6)
    qm = R.quantize_model(g, p, x)
    xq = qm.quantize_input(x)
    arm = board != "host"
    mm = P.MemModel(g, "s8", keep_grads=True, target="arm")
    mm_t = P.MemModel(g, "s8", keep_grads=True, target="arm" if arm else "host")
    cmds = [job.CMD_GRADS] + ([job.CMD_TRAIN] if name != "mobilenet_v2" else [])
    ref = {c: run(export.export_s8(qm), xq, y, board, asan, c) for c in cmds}
    assert ref[job.CMD_GRADS].one("done")["arena_peak"] == mm_t.store_all_bytes()
    for pl in plans_for(name, mm):
        blob = export.export_s8(qm, pl)
        assert export.read(blob).schedule == pl.pack()
        for c in cmds:
            rep = run(blob, xq, y, board, asan, c)
            assert comparable(rep) == comparable(ref[c]), (name, pl.name, pl.peak, c)
            if c == job.CMD_GRADS:
                want = mm_t.static_bytes() + pl.region
                assert rep.one("done")["arena_peak"] == want, (name, pl.name)


@pytest.mark.parametrize("target", ["host", "host-asan"])
def test_f32_schedule_identical_and_cli_writes_blob(target, rng, tmp_path):
    """float32 too: a recomputing plan gives the same bits; `kilolearn plan --write`."""
    board, asan = split_target(target)
    m = residual_net()
    g = m.graph
    p = m.init(4)
    x, y = data_for(m, rng, 4)
    mm = P.MemModel(g, "f32", keep_grads=True)
    src = tmp_path / "m.klm"
    src.write_bytes(export.export_f32(g, p))
    sq = P.baseline(mm, "sqrt-n")
    from types import SimpleNamespace

    out = tmp_path / "planned.klm"
    args = SimpleNamespace(blob=str(src), budget=str(sq.peak), reserve=0, model="cnn", input=0,
                           alpha=0.0, dtype="s8", target="arm", write=str(out))
    assert P.cmd_plan(args) == 0
    planned = out.read_bytes()
    assert export.read(planned).schedule is not None and planned[6] == 1
    for blob in (export.export_f32(g, p, sq), planned):
        for c in (job.CMD_GRADS, job.CMD_TRAIN):
            ref = run(export.export_f32(g, p), x, y, board, asan, c)
            assert comparable(run(blob, x, y, board, asan, c)) == comparable(ref)


FULL_DEPTH_INPUT = 118  # MobileNetV1 alpha 0.1, every layer trainable (docs/planner.md)
FULL_DEPTH_ALPHA = 0.1
ARENA_256K = 256 * 1024 - 8192  # 256 KiB SRAM less 8 KiB for the firmware's own RAM and stack


@pytest.mark.parametrize("target", ["host", "mps2-an386"])
def test_mobilenet_full_depth_trains_in_256k(target, rng):
    """Full-depth int8 training of MobileNetV1 alpha 0.1 at 118x118, whose engine without a
    schedule needs more than 512 KiB of arena: the optimal plan for 256 KiB - 8 KiB costs at
    most 15 % extra MACs, runs in an arena of exactly its planned peak, its gradients
    (kept-gradient job) and its fused training epoch are bit-identical to store-all, and the
    measured high-water mark is the planned peak to the byte."""
    require_target(target)
    board, asan = split_target(target)
    m = M.mobilenet_v1((FULL_DEPTH_INPUT,) * 2 + (3,), 10, alpha=FULL_DEPTH_ALPHA)
    g = m.graph
    assert all(op.trainable for op in g.ops if op.has_params)
    p = m.init(5)
    x, y = data_for(m, rng, 3)
    qm = R.quantize_model(g, p, x)
    xq = qm.quantize_input(x)
    tgt = "host" if board == "host" else "arm"
    mm = P.MemModel(g, "s8", target="arm")
    assert mm.store_all_bytes() > 512 * 1024
    pl = P.optimal(mm, ARENA_256K)
    assert pl is not None and pl.peak <= ARENA_256K and 0 < pl.extra_pct <= 15.0
    blob = export.export_s8(qm, pl)
    ref_blob = export.export_s8(qm)
    mm_t = P.MemModel(g, "s8", target=tgt)
    mm_k = P.MemModel(g, "s8", keep_grads=True, target=tgt)
    # fused training in an arena of exactly the planned peak
    exact = mm_t.static_bytes() + pl.region
    kw = dict(lr=0.3, seed=9, epochs=1, dump_weights=True)
    rep = runner.run_job(job.build(blob, xq, y, xq[:2], y[:2], arena_size=exact, **kw), board,
                         sanitize=asan)
    ref = runner.run_job(job.build(ref_blob, xq, y, xq[:2], y[:2], **kw), board, sanitize=asan)
    assert ref.one("done")["arena_peak"] == mm_t.store_all_bytes()
    assert rep.one("done")["arena_peak"] == exact
    if tgt == "arm":
        assert exact == pl.peak
    assert comparable(rep) == comparable(ref)
    # every layer's int8 gradients over two steps (the same schedule, kept-gradient buffers)
    kw = dict(cmd=job.CMD_GRADS, n_steps=2, lr=0.2, seed=77, dump_weights=True)
    rep = runner.run_job(job.build(blob, xq, y, xq[:2], y[:2], **kw), board, sanitize=asan)
    ref = runner.run_job(job.build(ref_blob, xq, y, xq[:2], y[:2], **kw), board, sanitize=asan)
    assert rep.one("done")["arena_peak"] == mm_k.static_bytes() + pl.region
    assert comparable(rep) == comparable(ref)
    assert sum(k.startswith("g") for k in rep.dumps) >= 2 * 28
