"""MobileNet-class training on the emulated Cortex-M4 and M55 (mve depthwise kernels): a
MobileNetV2-0.35 training step with the last blocks trainable matches the numpy reference (int8
bit for bit, float32 to 1e-5)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_target, run_job

from kilolearn.core import model as M
from kilolearn.core import reference as R
from kilolearn.device import job
from kilolearn.formats import export


@pytest.mark.parametrize("target", ["host", "mps2-an386", "mps2-an386-cmsis-nn", "mps3-an547"])
def test_mobilenet_v2_step_matches_reference(target, rng):
    require_target(target)
    m = M.mobilenet_v2((32, 32, 3), 10, alpha=0.35, trainable_last=3)
    g = m.graph
    assert sum(op.kind == "add" for op in g.ops) >= 8  # real inverted residual blocks
    p = m.init(4)
    x = rng.uniform(0, 1, (2,) + g.shapes[g.input]).astype(np.float32)
    y = np.array([3, 7])
    qm = R.quantize_model(g, p, x)
    xq = qm.quantize_input(x)
    rep = run_job(job.build(export.export_s8(qm), xq, y, cmd=job.CMD_GRADS, n_steps=2,
                            lr=0.1, seed=5, dump_weights=True), target)
    ref = R.S8Trainer(qm, lr=0.1, seed=5)
    trained = [i for i, op in enumerate(g.ops) if op.trainable]
    assert len(trained) >= 8 and not g.ops[0].trainable
    for s in range(2):
        gs = ref.grads(xq[s], int(y[s]))
        assert np.array_equal(rep.dump("logits", "i1", s), ref._fw.acts[g.output].reshape(-1))
        for i in trained:
            assert np.array_equal(rep.dump(f"g{i:02d}w", "<i4", s).reshape(gs[i].gw.shape),
                                  gs[i].gw), (s, i)
        ref.apply(gs)
    for i in trained:
        assert np.array_equal(rep.dump(f"w{i:02d}", "i1").reshape(ref.m.w[i].shape), ref.m.w[i])

    rep = run_job(job.build(export.export_f32(g, p), x, y, cmd=job.CMD_GRADS, n_steps=1,
                            lr=0.1), target)
    dws, _, _ = R.F32Trainer(g, p, lr=0.1).grads(x[0], int(y[0]))
    for i in trained:
        got = rep.dump(f"g{i:02d}w", "<f4", 0).reshape(dws[i].shape)
        assert np.linalg.norm(got - dws[i]) <= 1e-5 * np.linalg.norm(dws[i]), i
