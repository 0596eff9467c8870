"""Blob 2.1 schedules executed by the engine: gradients, updated weights and exponents from
store-all, Chen's sqrt(n), recompute-all and optimal plans at several budgets are bit-identical
to the engine without a schedule (int8), on the host (plain and ASan/UBSan) and on QEMU
mps2-an386; the runner's arena high-water mark equals the planner's peak to the byte."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_target, split_target
from test_engine import data_for, residual_net

from kilolearn import planner as P
from kilolearn.core import model as M
from kilolearn.core import quant as Q
from kilolearn.core import reference as R
from kilolearn.device import job, runner
from kilolearn.formats import export

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


FULL_DEPTH_INPUT = 128  # MobileNetV1 alpha 0.1, every layer trainable (docs/planner.md)
FULL_DEPTH_ALPHA = 0.1
ARENA_256K = 256 * 1024 - 8192  # 256 KiB SRAM less 8 KiB for the firmware's own RAM and stack


@pytest.mark.parametrize("target", ["host", "mps2-an386"])
def test_mobilenet_full_depth_trains_in_256k(target, rng):
    """Full-depth int8 training of MobileNetV1 alpha 0.1 at 128x128, whose engine without a
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


def _compact_quantize(sums: np.ndarray, band: int) -> tuple[np.ndarray, int]:
    """src/model/kl_backward.c kl_give_s8_compact's arithmetic, written independently: bands of
    `band` int32 sums kept as int16 rounded to odd at a growing shift, then rounded to int8."""
    def odd(v: np.ndarray, sh: int) -> np.ndarray:
        return v if sh == 0 else (v >> sh) | ((v & ((1 << sh) - 1)) != 0)

    st = np.zeros(sums.size, dtype=np.int64)
    mx, a = 0, 0
    for k0 in range(0, sums.size, band):
        b = sums[k0:k0 + band].astype(np.int64)
        mx = max(mx, int(np.abs(b).max()))
        a_new = max(a, max(0, mx.bit_length() - 15))
        while mx >> a_new > 32767:
            a_new += 1
        st[:k0] = odd(st[:k0], a_new - a)
        a = a_new
        st[k0:k0 + band] = odd(b, a)
        assert np.abs(st).max() <= 32767
    s = Q.grad_shift(sums)
    return Q.rshift_round(st, s - a).astype(np.int8), s


def test_compact_sums_round_like_int32(rng):
    """int16 sums rounded to odd, re-shifted as the maximum grows, then rounded once more:
    the int8 gradient and exponent equal one rounding of the int32 sums (ties of both signs,
    small sums kept exact, maxima appearing in late bands)."""
    for trial in range(3000):
        n = int(rng.integers(1, 400))
        band = int(rng.integers(1, 64))
        scale = 2 ** int(rng.integers(0, 31))
        v = rng.integers(-scale, scale + 1, n, dtype=np.int64)
        if trial % 3 == 0:  # growing magnitudes: every band re-shifts the earlier ones
            v = (v * np.linspace(0.001, 1, n)).astype(np.int64)
        if trial % 5 == 0:  # exact ties at some shift
            v = (v >> 6 << 6) + 32
        v = np.clip(v.astype(np.int64), -(2 ** 31) + 1, 2 ** 31 - 1)
        want, ws = Q.quantize_grad(v, 0)
        got, s = _compact_quantize(v, band)
        assert s == ws and np.array_equal(got, want), trial


def compact_net() -> M.Model:
    """Depthwise (stride 1 and 2) and 1x1 conv layers on 32x32x16 inputs: several bands per
    input gradient (the sanitizer build keeps 10-bit sums: every band rounds)."""
    return M.Model([M.Input((32, 32, 4)), M.Conv2D(16, 3), M.BatchNorm(), M.ReLU(),
                    M.DepthwiseConv2D(3), M.BatchNorm(), M.ReLU6(), M.Conv2D(16, 1),
                    M.BatchNorm(), M.ReLU(), M.DepthwiseConv2D(3, 2), M.BatchNorm(), M.ReLU(),
                    M.Conv2D(32, 1), M.BatchNorm(), M.ReLU(), M.GlobalAvgPool(), M.Dense(5),
                    M.SoftmaxCrossEntropy()])


@pytest.mark.parametrize("target", TARGETS)
def test_compact_steps_bit_identical(target, rng):
    """Plans whose conv and depthwise input gradients are compact (KL_STEP_COMPACT, several
    bands each) give the gradients, weights and exponents of the int32 path (the same blob
    without the flag, and the engine without a schedule), and need less arena."""
    require_target(target)
    board, asan = split_target(target)
    m = compact_net()
    g = m.graph
    p = m.init(6)
    x, y = data_for(m, rng, 4)
    qm = R.quantize_model(g, p, x)
    xq = qm.quantize_input(x)
    mm = P.MemModel(g, "s8", keep_grads=True)
    plain = P.MemModel(g, "s8", keep_grads=True, compact=False)
    for which in ("store-all", "sqrt-n"):
        pl, pl0 = P.baseline(mm, which), P.baseline(plain, which)
        bands = [i for i in range(mm.n) if mm.compact_at(i)
                 and P.band_rows(*g.shapes[g.ops[i].inputs[0]], g.ops[i].stride)
                 < g.shapes[g.ops[i].inputs[0]][0]]
        assert len(bands) >= 3 and sum(s.flags & P.STEP_COMPACT != 0 for s in pl.steps) >= 3
        assert pl.region < pl0.region
        assert export.export_s8(qm, pl)[6] == 3  # minor version: compact steps
        for c in (job.CMD_GRADS, job.CMD_TRAIN):
            ref = run(export.export_s8(qm, pl0), xq, y, board, asan, c)
            assert comparable(run(export.export_s8(qm, pl), xq, y, board, asan, c)) == \
                comparable(ref)
            assert comparable(run(export.export_s8(qm), xq, y, board, asan, c)) == \
                comparable(ref)


def test_engine_rejects_bad_compact_steps(rng):
    """KL_STEP_COMPACT only on an in-place conv or depthwise step whose input gradient the
    grad step right before placed at the start of the scratch; anything else is corrupt."""
    import re
    import struct
    import zlib

    m = compact_net()
    g = m.graph
    x, y = data_for(m, rng, 2)
    qm = R.quantize_model(g, m.init(1), x)
    xq = qm.quantize_input(x)
    pl = P.baseline(P.MemModel(g, "s8"), "store-all")
    blob = bytearray(export.export_s8(qm, pl))
    base = struct.unpack_from("<I", blob, 40)[0] + 16  # the schedule offset, its header
    steps = [(base + 8 * k, s) for k, s in enumerate(pl.steps)]
    comp = next(o for o, s in steps if s.flags & P.STEP_COMPACT)
    plain_bwd = next(o for o, s in steps if s.kind == P.STEP_BWD and not s.flags)
    in_place = next(o for o, s in steps if s.flags == P.STEP_IN_PLACE)

    def patched(edits: list[tuple[int, int]]) -> bytes:
        b = bytearray(blob)
        for off, v in edits:
            b[off] = v
        struct.pack_into("<I", b, 12, zlib.crc32(bytes(b[16:])) & 0xFFFFFFFF)
        return bytes(b)

    runner.run_job(job.build(patched([]), xq, y), "host")
    bad = {"flag without in place": [(comp + 1, P.STEP_COMPACT)],
           "flag on a plain step": [(plain_bwd + 1, P.STEP_COMPACT)],
           "gradient not at the scratch": [(comp - 8 + 4, blob[comp - 8 + 4] ^ 8)]}
    if g.ops[struct.unpack_from("<H", blob, in_place + 2)[0]].kind == "dense":
        bad["a dense step"] = [(in_place + 1, P.STEP_IN_PLACE | P.STEP_COMPACT)]
    assert len(bad) == 4
    for why, edits in bad.items():
        with pytest.raises(runner.RunError) as e:
            runner.run_job(job.build(patched(edits), xq, y), "host")
        got = int(re.search(r"code (-\d+)", str(e.value)).group(1))
        assert export.ERRORS[got] == "KL_ECORRUPT", why


@pytest.mark.parametrize("target", ["host", "mps2-an386"])
def test_plan_measure_reports_device_peaks(target, capsys):
    """`kilolearn plan --measure BOARD`: the store-all plans (int32 sums, every step
    compact) and the optimal plan train on the board in arenas of exactly their planned
    peaks, and the device's high-water marks equal them."""
    require_target(target)
    from types import SimpleNamespace

    args = SimpleNamespace(blob=None, budget="150000", reserve=0, model="mobilenet_v1",
                           input=80, alpha=0.1, dtype="s8", target="host" if target == "host"
                           else "arm", write=None, curve=None, measure=target)
    assert P.cmd_plan(args) == 0
    out = capsys.readouterr().out
    table = out[out.index("measured on"):].splitlines()[3:]
    assert len(table) == 3 and all(" yes " in r for r in table), out
    assert all(int(r.split()[-2]) > 0 for r in table[1:]), out  # compact steps
    if target != "host":
        assert all(int(r.split()[-1].replace(",", "")) > 0 for r in table)


@pytest.mark.parametrize("target", ["host", "mps2-an386"])
def test_plan_two_regions_peaks_per_region_equal_the_device(target, capsys):
    """A budget board with two RAM regions (an SRAM and a CCM, as nucleo_f429zi's): the static
    part in the smaller, the schedule's region split at the larger's size (blob 2.7): the part
    below in the larger (kl_arena_set_far), the rest in the smaller after the static part. The
    device's high-water mark of each region equals the planned one, and the optimal plan needs
    no more extra MACs than with the region in one block in the larger region."""
    require_target(target)
    import dataclasses
    import re
    from types import SimpleNamespace

    from kilolearn.footprint.boards import Board, Region
    from kilolearn.planner.strategies import BoardBudget

    board = Board("two-region", 110_000, 1 << 20, "test",
                  (Region("SRAM", 0x20000000, 110_000, "ram"),
                   Region("CCM", 0x10000000, 64 * 1024, "ram")))
    args = SimpleNamespace(blob=None, budget=BoardBudget(110_000, board), reserve=0,
                           model="mobilenet_v1", input=80, alpha=0.1, dtype="s8",
                           target="host" if target == "host" else "arm", write=None, curve=None,
                           measure=target)
    assert P.cmd_plan(args) == 0
    out = capsys.readouterr().out
    assert "two RAM regions: the static part" in out and "split at 110,000" in out
    table = out[out.index("measured on"):].splitlines()[3:]
    assert len(table) == 3 and all(" yes " in r for r in table), out
    rows = [[int(v.replace(",", "")) for v in re.findall(r"(\d[\d,]*) \+ (\d[\d,]*)", r)[k]]
            for r in table for k in (0, 1)]
    assert all(rows[k] == rows[k + 1] for k in (0, 2, 4)), out  # planned = measured
    mm = P.MemModel(_mobilenet(80).graph, "s8", target=args.target)
    split = dataclasses.replace(mm, split=110_000)
    opt_region = int(re.search(r"region ([\d,]+) B", out).group(1).replace(",", ""))
    two = P.optimal(split, 64 * 1024 + 110_000)
    assert two is not None and two.region == opt_region and two.split == 110_000
    assert list(split.region_peaks(two.region)) == rows[4]  # the optimal plan's row
    assert rows[4][0] <= 64 * 1024 and rows[4][1] <= 110_000
    block = P.optimal(mm, mm.static_bytes() + 110_000)  # the region one block in the SRAM
    assert block is not None and two.extra_macs < block.extra_macs


def split_plans(mm: P.MemModel) -> list[tuple[P.MemModel, P.Plan]]:
    """The store-all and a recomputing plan of mm's graph with the region split at about a
    third and a half of the unsplit one (blob 2.7): both parts used."""
    import dataclasses

    out = []
    for which, frac in (("sqrt-n", 0.5), ("store-all", 0.35)):
        flat = P.baseline(mm, which)
        smm = dataclasses.replace(mm, split=int(flat.region * frac) // 8 * 8)
        pl = P.build_steps(smm, flat.macros, which + " split")
        assert 0 < pl.split < pl.region, (which, pl.split, pl.region)
        out.append((smm, pl))
    return out


@pytest.mark.parametrize("target", TARGETS)
def test_split_region_bit_identical_peaks_per_region(target, rng):
    """A schedule whose region is split (blob 2.7) trains the residual net bit-identically to
    the engine without a schedule: with a second memory region (the runner's FAR job: the
    part below the boundary there, the static part and the rest in the arena, each arena of
    exactly its planned size) and without one (one block). The high-water mark of each region
    equals MemModel.region_peaks to the byte."""
    require_target(target)
    board, asan = split_target(target)
    m = residual_net()
    g = m.graph
    x, y = data_for(m, rng, 6)
    qm = R.quantize_model(g, m.init(3), x)
    xq = qm.quantize_input(x)
    tgt = "host" if board == "host" else "arm"
    mm = P.MemModel(g, "s8", keep_grads=True, target="arm")
    ref = {c: run(export.export_s8(qm), xq, y, board, asan, c)
           for c in (job.CMD_GRADS, job.CMD_TRAIN)}
    for _, pl in split_plans(mm):
        blob = export.export_s8(qm, pl)
        assert blob[6] == export.VERSION_SPLIT[1] and export.read(blob).schedule == pl.pack()
        mm_t = P.MemModel(g, "s8", keep_grads=True, target=tgt, split=pl.split)
        main, far = mm_t.region_peaks(pl.region)
        assert far == pl.split and main == mm_t.static_bytes() + pl.region - pl.split
        for c in (job.CMD_GRADS, job.CMD_TRAIN):
            kw = dict(cmd=c, n_steps=3, lr=0.2, seed=77, dump_weights=True) \
                if c == job.CMD_GRADS else dict(lr=0.3, seed=9, epochs=1, dump_weights=True)
            rep = runner.run_job(job.build(blob, xq, y, xq[:4], y[:4], arena_size=main,
                                           far_size=far, **kw), board, sanitize=asan)
            assert comparable(rep) == comparable(ref[c]), (pl.name, c)
            if c == job.CMD_GRADS:  # the fused job's arena holds no kept gradients
                done = rep.one("done")
                assert (done["arena_peak"], done["far_peak"]) == (main, far), pl.name
        one = run(blob, xq, y, board, asan, job.CMD_GRADS)  # no second region: one block
        assert comparable(one) == comparable(ref[job.CMD_GRADS])
        assert one.one("done")["arena_peak"] == mm_t.region_peaks(pl.region, far=False)[0]


def test_engine_rejects_bad_split_boundaries(rng):
    """The split fields of a 2.7 schedule header: a boundary not 8-aligned, at or past the
    region's end, with a second part's size that is not the rest, a size without a boundary, a
    boundary that cuts a buffer, huge values: KL_ECORRUPT from kl_blob_check (under ASan and
    UBSan), never a crash; the same header in a blob marked 2.6 (a reader before 2.7 reads the
    boundary as a step) too. Valid variants train: no boundary (0, 0) in a 2.7 blob."""
    import re
    import struct
    import zlib

    from test_planner import placed_buffers

    m = residual_net()
    g = m.graph
    x, y = data_for(m, rng, 2)
    qm = R.quantize_model(g, m.init(1), x)
    xq = qm.quantize_input(x)
    smm, pl = split_plans(P.MemModel(g, "s8"))[0]
    blob = bytearray(export.export_s8(qm, pl))
    head = struct.unpack_from("<I", blob, 40)[0]
    sp, region = pl.split, pl.region
    # a boundary 8 bytes into a buffer that starts 8-aligned below the split, longer than 8
    cut = next(lo + 8 for lo, hi, *_ in placed_buffers(smm, pl) if lo % 8 == 0 and hi > lo + 8
               and lo + 8 < region)

    def patched(split: int, rest: int, minor: int = 7) -> bytes:
        b = bytearray(blob)
        struct.pack_into("<H", b, 6, minor)
        struct.pack_into("<II", b, head + 16, split & 0xFFFFFFFF, rest & 0xFFFFFFFF)
        struct.pack_into("<I", b, 12, zlib.crc32(bytes(b[16:])) & 0xFFFFFFFF)
        return bytes(b)

    def code(b: bytes) -> str:
        try:
            runner.run_job(job.build(b, xq, y), "host", sanitize=True)
        except runner.RunError as e:
            return export.ERRORS[int(re.search(r"code (-\d+)", str(e)).group(1))]
        return "KL_OK"

    assert code(patched(sp, region - sp)) == "KL_OK"
    assert code(patched(0, 0)) == "KL_OK"  # 2.7, one block: offsets as they are
    bad = {"unaligned": (sp + 4, region - sp - 4), "odd": (sp - 1, region - sp + 1),
           "at the end": (region // 8 * 8, region - region // 8 * 8),
           "past the end": (region + 8, 0), "rest too big": (sp, region - sp + 8),
           "rest too small": (sp, region - sp - 8), "rest without boundary": (0, 8),
           "a buffer cut": (cut, region - cut), "huge": (0xFFFFFFF8, region - 0xFFFFFFF8),
           "huge rest": (8, 0xFFFFFFFF)}
    for why, (s_, r_) in bad.items():
        assert code(patched(s_, r_)) == "KL_ECORRUPT", why
    assert code(patched(sp, region - sp, minor=6)) == "KL_ECORRUPT"
    assert code(patched(0, 0, minor=6)) == "KL_ECORRUPT"


def _mobilenet(size: int):  # noqa: ANN202
    from types import SimpleNamespace

    from kilolearn.planner.cli import _model_from_args

    return _model_from_args(SimpleNamespace(blob=None, model="mobilenet_v1", input=size,
                                            alpha=0.1, sizes=None, dtype="s8"))
