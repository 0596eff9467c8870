"""A short class-incremental session on the Zephyr app: split digits, 5 tasks of 2 classes,
1 epoch per task, latent replay (50 latents), every third test sample. The device must agree
with the numpy twin after every task, and STATS must account for every step. Protocol version
2: the app offers a window; the test set evaluated again with the window full gives the
accuracy of the one-by-one EVALs."""

from __future__ import annotations

import logging

from kilolearn.core import data, reference
from kilolearn.device import session

log = logging.getLogger(__name__)


def test_short_class_incremental_session(client):
    info = client.info()
    assert info.version == 2 and info.window == client.window >= 2  # protocol v2, a window
    ds = data.digits()
    ds.x_test, ds.y_test = ds.x_test[::3], ds.y_test[::3]
    sc = session.Scenario(epochs=1, replay_cap=50, replay_ratio=2)
    res = session.run(client, "replay", sc, ds)
    for t, (dev, ref) in enumerate(zip(res.acc_after_task, res.reference_acc_after_task,
                                             strict=True)):
        log.info("task %d: device %.2f %%  numpy %.2f %%  per task %s", t + 1, 100 * dev,
                 100 * ref, " ".join(f"{100 * a:.1f}" for a in res.task_acc[t]))
    assert res.acc_after_task == res.reference_acc_after_task  # bit-exact int8 twin
    # the test set again, a window of EVALs in flight: the accuracy of the one-by-one EVALs
    m = session.build_model(sc, ds.x_train.shape[1], ds.n_classes)
    qm = reference.quantize_model(m.graph, m.init(sc.seed), ds.x_train[:200])
    xt = qm.quantize_input(ds.x_test)
    ok = [c for _, c in client.eval_many((int(y), x.tobytes()) for y, x in zip(ds.y_test, xt,
                                                                             strict=True))]
    assert sum(ok) / len(ok) == res.acc_after_task[-1]
    assert res.acc_after_task[0] > 0.95
    assert res.acc_after_task[-1] > 0.6  # replay keeps old classes (naive: about 0.2)
    st = res.stats[-1]
    log.info("STATS %s", st)
    assert st["train_steps"] == len(ds.y_train)
    assert st["replay_steps"] == sc.replay_ratio * len(ds.y_train)
    assert st["replay_count"] == sc.replay_cap
    assert st["active_classes"] == 10
    assert 0 < st["arena_peak"] <= info.arena_size
    assert st["train_insn"] > 0
    assert st["store_bytes_written"] > 0

