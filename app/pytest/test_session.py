"""A short class-incremental session on the Zephyr app: split digits, 5 tasks of 2 classes,
1 epoch per task, latent replay (50 latents), every third test sample. The device must agree
with the numpy twin after every task, and STATS must account for every step."""

from __future__ import annotations

import logging

from kilolearn.core import data
from kilolearn.device import session

log = logging.getLogger(__name__)


def test_short_class_incremental_session(client):
    info = client.info()
    assert info.version == 1 and info.window == 1
    ds = data.digits()
    ds.x_test, ds.y_test = ds.x_test[::3], ds.y_test[::3]
    sc = session.Scenario(epochs=1, replay_cap=50, replay_ratio=2)
    res = session.run(client, "replay", sc, ds)
    for t, (dev, ref) in enumerate(zip(res.acc_after_task, res.reference_acc_after_task,
                                             strict=True)):
        log.info("task %d: device %.2f %%  numpy %.2f %%  per task %s", t + 1, 100 * dev,
                 100 * ref, " ".join(f"{100 * a:.1f}" for a in res.task_acc[t]))
    assert res.acc_after_task == res.reference_acc_after_task  # bit-exact int8 twin
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

