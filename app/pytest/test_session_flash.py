"""The short class-incremental session with the replay buffer's latents in the store
(docs/replay.md): the kilolearn_weights partition's replay part on the flash simulator (erase
value 0x00, 1 KB pages, 4-byte writes) through flash_area. The device must agree with the numpy
twin after every task, and STATS must account for the latents and the flash they took."""

from __future__ import annotations

import logging

from kilolearn.core import data
from kilolearn.device import protocol, session

log = logging.getLogger(__name__)


def test_short_session_with_replay_in_flash(client):
    info = client.info()
    assert info.replay_store_size > 0, "built without CONFIG_KILOLEARN_APP_REPLAY_FLASH_SIZE"
    ds = data.digits()
    ds.x_test, ds.y_test = ds.x_test[::3], ds.y_test[::3]
    sc = session.Scenario(epochs=1, replay_cap=100, replay_ratio=2, replay_flash=True)
    res = session.run(client, "replay", sc, ds)
    log.info("device %s numpy %s", res.acc_after_task, res.reference_acc_after_task)
    assert res.acc_after_task == res.reference_acc_after_task  # bit-exact int8 twin
    assert res.acc_after_task[-1] > 0.6
    st = res.stats[-1]
    log.info("STATS %s", st)
    assert st["replay_where"] == protocol.REPLAY_FLASH and st["replay_count"] == sc.replay_cap
    assert st["replay_steps"] == sc.replay_ratio * len(ds.y_train)
    assert st["replay_bytes_written"] > 0 and st["replay_erases"] > 0
    assert st["replay_copies"] > 0  # the 100 latents come round a region of 112 records
