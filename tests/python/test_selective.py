"""Selective updates (docs/selective-updates.md): top-r (Kwon & Park), channel selection by
gradient norm (Deutel et al.) and structured channel-sparse backprop (Paissan et al.), in the C
engine against the numpy twin (int8 bit for bit on the host, under ASan/UBSan and on the
emulated M3/M4/M7/M33; float32 to rounding), the selection against brute-force counts, the
blob 2.2 policy field, the run-time API and the claims of ``kilolearn sparse-bench``."""

from __future__ import annotations

import re
import struct
import subprocess

import numpy as np
import pytest
from conftest import HOST_TARGETS, QEMU_BOARDS, require_target, run_fuzz_firmware, split_target
from test_blob import reseal
from test_engine import MODELS, data_for

from kilolearn.bench import sparsebench
from kilolearn.core import model as M
from kilolearn.core import quant as q
from kilolearn.core import reference as R
from kilolearn.core import selective
from kilolearn.device import build, job, runner
from kilolearn.formats import export
from kilolearn.planner.memory import MemModel

TGT = {"host": "host", **{b: "arm" for b in QEMU_BOARDS}}

TARGETS = HOST_TARGETS + QEMU_BOARDS
POLICIES = [("topr", 200), ("channel-norm", 500), ("channel-sparse", 500),
            ("channel-sparse", 250), ("topr", 100)]


def s8_setup(name: str, rng, n: int):
    m = M.mlp([64, 32, 10]) if name == "mlp-big" else MODELS[name]()
    g = m.graph
    p = m.init(5)
    x, y = data_for(m, rng, n)
    qm = R.quantize_model(g, p, x[:10])
    return g, p, x, y, qm, qm.quantize_input(x)


def weights_equal(rep, g, ref) -> bool:
    return all(np.array_equal(rep.dump(f"w{i:02d}", "i1").reshape(ref.m.w[i].shape), ref.m.w[i])
               and np.array_equal(rep.dump(f"b{i:02d}", "<i4"), ref.m.b[i])
               for i, op in enumerate(g.ops) if op.has_params)


@pytest.mark.parametrize("target", TARGETS)
def test_s8_policies_bit_exact(target, rng):
    """Fused steps under every policy: weights, biases, exponents and the engine's count of
    selected weights equal the twin's, on every target."""
    require_target(target)
    board, asan = split_target(target)
    for name in ("mlp-big", "cnn", "residual"):
        g, _, _, y, qm, xq = s8_setup(name, rng, 40)
        for policy, pm in POLICIES:
            pid = selective.POLICIES[policy]
            rep = runner.run_job(job.build(export.export_s8(qm), xq, y, xq[:20], y[:20], lr=0.3,
                                           seed=9, epochs=2, dump_weights=True,
                                           update=(pid, pm)), board, sanitize=asan)
            assert rep.one("model")["policy"] == pid and rep.one("model")["permille"] == pm
            ref = R.S8Trainer(qm, lr=0.3, seed=9)
            ref.set_update_policy(policy, permille=pm)
            R.train_in_order(ref, xq, y, 2)
            assert weights_equal(rep, g, ref), (name, policy, pm)
            for i, op in enumerate(g.ops):
                assert rep.records["exps"][i]["y"] == ref.m.exp[op.output], (name, policy, i)
            eps = rep.records["epoch"]
            assert sum(e["upd_touched"] for e in eps) == ref.upd_touched, (name, policy, pm)
            assert sum(e["upd_weights"] for e in eps) == ref.upd_weights
            assert eps[-1]["test_correct"] == int((ref.predict(xq[:20]) == y[:20]).sum())
            assert ref.upd_touched < ref.upd_weights  # the policy really held updates back


def changed_rows(before: np.ndarray, after: np.ndarray, axis: int) -> set[int]:
    d = np.moveaxis(before != after, axis, 0)
    return {int(c) for c in np.flatnonzero(d.reshape(d.shape[0], -1).any(axis=1))}


@pytest.mark.parametrize("target", ["host", "mps2-an386"])
# top-r at lr 0.9 from these samples: the hidden layer makes 646-812 non-zero steps, the
# classifier 109-119; the fraction binds at 5 % and 20 % (the kernel undoes the steps not chosen)
# and not at 50 %
@pytest.mark.parametrize("policy,pm", [("topr", 200), ("topr", 50), ("topr", 500),
                                       ("channel-norm", 250), ("channel-sparse", 250)])
def test_one_step_touches_only_the_chosen_weights(target, policy, pm, rng):
    """One step on the device from a known state: the weights it changed are exactly the ones a
    brute-force selection (full sort of the update steps, channel norms summed in Python) picks
    from the gradients of a plain twin; never more than the fraction."""
    require_target(target)
    g, _, _, y, qm, xq = s8_setup("cnn" if policy == "channel-sparse" else "mlp-big", rng, 3)
    lr, seed = 0.9, 21
    for s in range(3):  # three different samples, each one step from the initial model
        rep = runner.run_job(job.build(export.export_s8(qm), xq[s:s + 1], y[s:s + 1], lr=lr,
                                       seed=seed, epochs=1, dump_weights=True,
                                       update=(selective.POLICIES[policy], pm)), target)
        plain = R.S8Trainer(qm, lr=lr, seed=seed)
        grads = plain.grads(xq[s], int(y[s]))
        dither = seed
        for i in range(len(g.ops) - 1, -1, -1):  # the dither runs last op first
            op, gr = g.ops[i], grads[i]
            if gr is None:
                continue
            w0 = qm.w[i]
            w1 = rep.dump(f"w{i:02d}", "i1").reshape(w0.shape)
            n = w0.size
            n_ch = gr.gb.size
            ax = -1 if op.kind == "dwconv" else 0
            sh = qm.ew[i] + q.LR_FRAC_BITS - gr.gw_exp
            steps = np.clip(q.stochastic_shift(gr.gw * plain.lr_q, sh, q.weyl_offsets(
                dither, n).reshape(w0.shape)), -128, 127)
            dither = q.weyl_advance(dither, n)
            moved = np.clip(w0 - steps, -127, 127) != w0  # what a full update would change
            if policy == "topr":
                k = max(1, (n * pm + 500) // 1000)
                flat = steps.reshape(-1).tolist()
                order = sorted(range(n), key=lambda j: (-abs(flat[j]), j))[:k]
                want = np.zeros(n, bool)
                want[order] = True
                want &= moved.reshape(-1)
                got = (w1 != w0).reshape(-1)
                assert np.array_equal(got, want), (s, i)
                assert got.sum() <= k
                if moved.sum() > k:
                    assert got.sum() == k  # the fraction was binding here
                continue
            k = max(1, (n_ch * pm + 500) // 1000)
            rows = changed_rows(w0, w1, ax)
            if policy == "channel-norm":
                assert len(rows) <= k, (s, i)
                gw = np.moveaxis(gr.gw, ax, 0).reshape(n_ch, -1)
                norms = [sum(int(v) ** 2 for v in gw[c]) + int(gr.gb[c]) ** 2
                         for c in range(n_ch)]
                pick = set(sorted(range(n_ch), key=lambda c: (-norms[c], c))[:k])
                assert rows == pick & changed_rows(w0, np.clip(w0 - steps, -127, 127), ax)
            elif op.kind in ("dense", "conv") and op.output != g.output:
                # step 0: the first block of channels (the classifier trains fully)
                assert rows <= set(range(k)), (s, i)
        twin = R.S8Trainer(qm, lr=lr, seed=seed)
        twin.set_update_policy(policy, permille=pm)
        twin.step(xq[s], int(y[s]))
        assert weights_equal(rep, g, twin)
        assert rep.records["epoch"][0]["upd_touched"] == twin.upd_touched


@pytest.mark.parametrize("target", ["host", "mps2-an386"])
@pytest.mark.parametrize("pm", [50, 200, 500, 1000])
def test_topr_steps_at_the_weight_range_bit_exact(target, pm, rng):
    """Weights at the edge of their range (+-127): most non-zero steps clamp, which the top-r
    kernel cannot undo by adding the step back, so it keeps the replaced bytes (and, past 64
    of them, stops applying and finishes in a second pass). Weights, biases and the count of
    selected weights equal the twin's after a few steps, fraction binding or not."""
    require_target(target)
    g, _, _, y, qm, xq = s8_setup("mlp-big", rng, 4)
    edge = qm.copy()
    for i, op in enumerate(g.ops):
        if op.kind == "dense":
            edge.w[i] = np.where(rng.random(edge.w[i].shape) < 0.5, 127, -127).astype(np.int8)
    lr, seed = 0.9, 33
    rep = runner.run_job(job.build(export.export_s8(edge), xq, y, lr=lr, seed=seed, epochs=1,
                                   dump_weights=True, update=(selective.POLICIES["topr"], pm)),
                         target)
    twin = R.S8Trainer(edge, lr=lr, seed=seed)
    twin.set_update_policy("topr", permille=pm)
    clamped = 0
    for s in range(len(y)):
        plain = R.S8Trainer(twin.m.copy(), lr=lr, seed=seed)
        plain.dither = twin.dither
        grads = plain.grads(xq[s], int(y[s]))
        d = plain.dither
        for i in range(len(g.ops) - 1, -1, -1):
            gr = grads[i]
            if gr is None or gr.gw is None:
                continue
            n = gr.gw.size
            sh = twin.m.ew[i] + q.LR_FRAC_BITS - gr.gw_exp
            st = np.clip(q.stochastic_shift(gr.gw * plain.lr_q, sh,
                                            q.weyl_offsets(d, n).reshape(gr.gw.shape)), -128, 127)
            d = q.weyl_advance(d, n)
            r = twin.m.w[i].astype(np.int32) - st
            clamped = max(clamped, int(((st != 0) & ((r > 127) | (r < -127))).sum()))
        twin.step(xq[s], int(y[s]))
    assert clamped > 64  # some step clamps more weights than the kernel lists
    assert weights_equal(rep, g, twin)
    assert rep.records["epoch"][0]["upd_touched"] == twin.upd_touched


@pytest.mark.parametrize("target", ["host", "host-asan", "mps2-an385", "mps2-an386"])
def test_topr_kernel_fuzz_equals_its_rule(target):
    """kl_topr_sgd_weights_s8 against the top-r rule written plainly in C (tests/c/
    kl_fuzz_topr.c: every step, the k largest by magnitude in index order): fused dense layers
    (paired layout too) and kept gradients, shifts -2..40, fractions from one weight to all,
    weights at +-127; weights, count and dither."""
    require_target(target)
    cases, mismatches = run_fuzz_firmware(target, "kl_fuzz_topr")
    assert cases > 1500 and mismatches == 0


@pytest.mark.parametrize("name", ["mlp", "cnn", "residual", "bias-only"])
@pytest.mark.parametrize("policy,pm", POLICIES[:4])
def test_f32_policies_match_numpy(name, policy, pm, rng):
    g = MODELS[name]().graph
    m = MODELS[name]()
    p = m.init(3)
    x, y = data_for(m, rng, 30)
    rep = runner.run_job(job.build(export.export_f32(g, p), x, y, lr=0.1, epochs=2,
                                   dump_weights=True, update=(selective.POLICIES[policy], pm)),
                         "host", sanitize=True)
    ref = R.F32Trainer(g, p, lr=0.1)
    ref.set_update_policy(policy, permille=pm)
    R.train_in_order(ref, x, y, 2)
    for i, op in enumerate(g.ops):
        if op.has_params:
            w = rep.dump(f"w{i:02d}", "<f4").reshape(ref.p.weights[i].shape)
            err = np.linalg.norm(w - ref.p.weights[i]) / np.linalg.norm(ref.p.weights[i])
            assert err < 1e-5, (name, policy, i)
    touched = sum(e["upd_touched"] for e in rep.records["epoch"])
    assert touched == ref.upd_touched
    # (bias-only: the one layer with weights is the classifier, which channel-sparse spares)
    assert touched < ref.upd_weights or (name, policy) == ("bias-only", "channel-sparse")


def test_policy_in_the_blob_equals_the_runtime_call(rng):
    g, _, _, y, qm, xq = s8_setup("cnn", rng, 30)
    plain = export.export_s8(qm)
    blob = export.export_s8(qm, update=("channel-sparse", 0.5))
    assert struct.unpack_from("<HH", blob, 4) == (2, 2)
    assert struct.unpack_from("<HH", plain, 4) == (2, 0)  # no policy: byte for byte as before
    assert export.read(blob).update == (3, 500) and export.read(plain).update == (0, 0)
    a = runner.run_job(job.build(blob, xq, y, lr=0.3, epochs=1, dump_weights=True), "host")
    b = runner.run_job(job.build(plain, xq, y, lr=0.3, epochs=1, dump_weights=True,
                                 update=(3, 500)), "host")
    c = runner.run_job(job.build(plain, xq, y, lr=0.3, epochs=1, dump_weights=True), "host")
    assert a.one("model")["policy"] == 3 and a.dumps == b.dumps
    assert a.dumps != c.dumps
    # the job option overrides the blob's policy, also back to every weight
    d = runner.run_job(job.build(blob, xq, y, lr=0.3, epochs=1, dump_weights=True,
                                 update=(0, 0)), "host")
    assert d.dumps == c.dumps


def test_bad_policy_fields_are_rejected(rng):
    *_, qm, xq = s8_setup("mlp", rng, 2)
    blob = export.export_s8(qm, update=("topr", 0.2))
    y = np.zeros(2, np.int64)
    bad = {"policy": (44, "<B", 5), "fraction 0": (46, "<H", 0), "fraction": (46, "<H", 1001),
           "reserved": (45, "<B", 1)}
    for what, (off, fmt, v) in bad.items():
        b = bytearray(blob)
        struct.pack_into(fmt, b, off, v)
        with pytest.raises(runner.RunError, match="code -204"):
            runner.run_job(job.build(reseal(b), xq, y), "host", sanitize=True)
        assert what
    zero = bytearray(blob)
    struct.pack_into("<B", zero, 44, 0)  # 'all' with a fraction
    with pytest.raises(runner.RunError, match="code -204"):
        runner.run_job(job.build(reseal(zero), xq, y), "host", sanitize=True)
    old = bytearray(blob)
    struct.pack_into("<H", old, 6, 0)  # a 2.0 reader's view: the bytes are reserved, ignored
    assert runner.run_job(job.build(reseal(old), xq, y), "host").one("model")["policy"] == 0


def test_runtime_api_errors(rng):
    g, p, x, y, qm, xq = s8_setup("mlp", rng, 2)
    f32 = export.export_f32(g, p)
    with pytest.raises(runner.RunError, match="code -134"):  # momentum: not supported
        runner.run_job(job.build(f32, x, y, momentum=0.5, update=(1, 200)), "host")
    for upd in ((1, 0), (1, 1001), (5, 500)):
        with pytest.raises(runner.RunError, match="code -22"):
            runner.run_job(job.build(export.export_s8(qm), xq, y, update=upd), "host")
    used = runner.run_job(job.build(export.export_s8(qm), xq, y), "host").one("model")["arena"]
    # int8 top-r's scratch (docs/selective-updates.md): 129 histogram words, 128 words of listed
    # steps and two words per input column of the widest dense layer, from the arena
    cols = max(int(np.prod(g.shapes[op.inputs[0]])) for op in g.ops if op.kind == "dense")
    need = 4 * (129 + 128 + 2 * cols)
    with pytest.raises(runner.RunError, match="code -12"):
        runner.run_job(job.build(export.export_s8(qm), xq, y, update=(1, 200),
                                 arena_size=used + need - 8), "host")
    runner.run_job(job.build(export.export_s8(qm), xq, y, update=(1, 200),
                             arena_size=used + need + 8), "host")


@pytest.mark.parametrize("name,update", [("mlp-s8", ("topr", 0.2)),
                                         ("cnn-s8", ("channel-sparse", 0.5)),
                                         ("cnn-f32", ("channel-norm", 0.3)),
                                         ("chain-s8", ("partial", 0.5))])
def test_fuzz_blob_with_policy_under_sanitizers(name, update, tmp_path, rng):
    exe = build.build("host", sanitize=True, target="kl_fuzz_blob")
    m = M.mlp([64, 32, 10]) if name.startswith("mlp") else conv_chain() \
        if name.startswith("chain") else M.small_cnn((8, 8, 1), 4, 3)
    p = m.init(2)
    x = rng.uniform(0, 1, (4,) + m.graph.shapes[0]).astype(np.float32)
    blob = export.export_f32(m.graph, p, update=update) if name.endswith("f32") else \
        export.export_s8(R.quantize_model(m.graph, p, x), update=update)
    path = tmp_path / "model.klm"
    path.write_bytes(blob)
    r = subprocess.run([str(exe), str(path), "50000", "11"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    counts = dict(re.findall(r"(-\d+):(\d+)", r.stdout))
    assert int(re.search(r"accepted (\d+)", r.stdout).group(1)) > 0
    for code in ("-200", "-201", "-202", "-203", "-204"):
        assert int(counts[code]) > 0, r.stdout


def test_digits_mlp_20_percent_within_a_point_of_full_update_on_m4(digits):
    """The issue's claim, on the emulated M4 beside the numpy twin (identical predictions)."""
    require_target("mps2-an386")
    full = sparsebench.run_one("mps2-an386", "mlp", "all", 1.0, 20, digits, [100])
    assert full.same_predictions and full.device_acc >= 0.88
    r = sparsebench.run_one("mps2-an386", "mlp", "topr", 0.2, 20, digits, [100])
    assert r.same_predictions
    assert abs(r.device_acc - full.device_acc) <= 0.01, r.device_acc
    assert r.selected_pct <= 20.0 and r.changed_pct <= 20.0


def test_cnn_channel_sparsity_saves_instructions_on_m4(digits):
    """Structured channel sparsity skips weight- and input-gradient work: fewer retired
    instructions per step on the M4 (counts, not times), device equal to the twin."""
    require_target("mps2-an386")
    runs = {f: sparsebench.run_one("mps2-an386", "cnn", "channel-sparse" if f < 1 else "all",
                                   f, 1, digits, [100]) for f in (1.0, 0.75, 0.5)}
    for r in runs.values():
        assert r.same_predictions
    full = runs[1.0].insn_per_step
    assert runs[0.75].insn_per_step < full and runs[0.5].insn_per_step < runs[0.75].insn_per_step
    assert 1 - runs[0.5].insn_per_step / full > 0.10


def conv_chain(frozen_first: bool = False) -> M.Model:
    """Conv layers one after another (Paissan's setting for partial activations): the
    tensors between them keep a block of channels; the last conv feeds the classifier."""
    return M.Model([M.Input((8, 8, 1)),
                    M.Conv2D(8, 3, activation="relu", trainable=not frozen_first),
                    M.Conv2D(8, 3, activation="relu"), M.Conv2D(6, 3, 2, activation="relu6"),
                    M.Conv2D(12, 3, activation="relu"), M.Flatten(), M.Dense(5),
                    M.SoftmaxCrossEntropy()])


@pytest.mark.parametrize("target", TARGETS)
def test_partial_activations_bit_exact(target, rng):
    """KL_UPDATE_PARTIAL (Paissan's partial activations) equals the twin bit for bit, laid
    out from the blob (kept blocks and slots) and set at run time (whole buffers); the blob's
    layout needs less arena; only the weights joining the kept blocks change in a step."""
    require_target(target)
    board, asan = split_target(target)
    for frozen_first in (False, True):
        m = conv_chain(frozen_first)
        g = m.graph
        p = m.init(5)
        x, y = data_for(m, rng, 40)
        qm = R.quantize_model(g, p, x[:10])
        xq = qm.quantize_input(x)
        part = selective.partial_tensors(g, R.needs_grad(g))
        assert len(part) == 3  # between the four conv layers
        for pm in (250, 500, 750):
            ref = R.S8Trainer(qm, lr=0.3, seed=9)
            ref.set_update_policy("partial", permille=pm)
            R.train_in_order(ref, xq, y, 2)
            assert ref.upd_touched < ref.upd_weights
            reps = [runner.run_job(job.build(blob, xq, y, xq[:20], y[:20], lr=0.3, seed=9,
                                             epochs=2, dump_weights=True, update=upd),
                                   board, sanitize=asan)
                    for blob, upd in ((export.export_s8(qm, update=("partial", pm / 1000)),
                                       None),
                                      (export.export_s8(qm), (4, pm)))]
            for rep in reps:
                assert rep.one("model")["policy"] == 4
                assert weights_equal(rep, g, ref), (frozen_first, pm)
                eps = rep.records["epoch"]
                assert sum(e["upd_touched"] for e in eps) == ref.upd_touched
                assert eps[-1]["test_correct"] == int((ref.predict(xq[:20]) == y[:20]).sum())
            laid = reps[0].one("done")["arena_peak"]
            assert laid == MemModel(g, "s8", target=TGT[board], partial_pm=pm).store_all_bytes()
            if pm <= 500:  # less than the full update's arena (beside two whole slots)
                assert laid < MemModel(g, "s8", target=TGT[board]).store_all_bytes()


def test_partial_one_step_touches_the_joined_blocks(rng):
    """After one step, the conv weights that changed lie in [output block, input block]."""
    m = conv_chain()
    g = m.graph
    x, y = data_for(m, rng, 1)
    qm = R.quantize_model(g, m.init(3), x)
    xq = qm.quantize_input(x)
    rep = runner.run_job(job.build(export.export_s8(qm, update=("partial", 0.5)), xq, y,
                                   lr=1.0, seed=4, epochs=1, dump_weights=True), "host")
    part = selective.partial_tensors(g, R.needs_grad(g))
    changed_any = False
    for i, op in enumerate(g.ops):
        if op.kind != "conv":
            continue
        w0 = qm.w[i]
        w1 = rep.dump(f"w{i:02d}", "i1").reshape(w0.shape)
        cx = selective.active_block(w0.shape[-1], 500, 0) if op.inputs[0] in part else \
            (0, w0.shape[-1])
        cy = selective.active_block(w0.shape[0], 500, 0) if op.output in part else \
            (0, w0.shape[0])
        inside = np.zeros(w0.shape, bool)
        inside[cy[0]:cy[0] + cy[1], ..., cx[0]:cx[0] + cx[1]] = True
        assert not (w0 != w1)[~inside].any(), i
        changed_any |= bool((w0 != w1)[inside].any())
    assert changed_any


def test_partial_bench_claims_on_m4():
    """The figure's claims at 50 % (docs/selective-updates.md), on a few steps of its conv net on
    the emulated M4: arena and instructions per step both at most 1/1.3 of the full update's,
    the arena as planned, the board's weights equal to the twin's."""
    require_target("mps2-an386")
    from kilolearn.bench import partialbench as pb

    rec = pb.measure("mps2-an386", (1.0, 0.5), n_train=12, n_test=10, epochs=1,
                     device_steps=6)
    full, half = rec["runs"]
    for r in (full, half):
        assert r["device_equal"] and r["host_acc"] == r["numpy_acc"]
        assert r["arena_peak"] == r["planned"]
    assert half["arena_peak"] * 1.3 <= full["arena_peak"]
    assert half["insn_per_step"] * 1.3 <= full["insn_per_step"]
