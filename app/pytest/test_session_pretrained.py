"""A class-incremental session on the Zephyr app with a pretrained backbone: Fashion-MNIST
28x28 on a small CNN pretrained on the host (on images the session never sees), frozen in the
weight store and read in place; 2 tasks of 2 classes, latent replay. The device must agree
with the numpy twin after every task (docs/continual-learning.md)."""

from __future__ import annotations

import logging

from kilolearn.device import session

log = logging.getLogger(__name__)


def test_pretrained_backbone_session(client):
    """Fashion-MNIST 28x28 on a small CNN backbone pretrained on the host (on other images),
    frozen in the store; 2 tasks of 2 classes, latent replay: device = numpy after each task."""
    from kilolearn.core import backbone as bb

    ds = session.load_data("fashion").subset(4, n_train=160, n_test=120, n_pool=1500)
    sc = session.Scenario(epochs=1, replay_cap=40, replay_ratio=1,
                          cnn=bb.CnnSpec(c1=4, embed=32, head=16),
                          pretraining=bb.Pretraining(n=1500, epochs=1))
    res = session.run(client, "replay", sc, ds)
    for t, (dev, ref) in enumerate(zip(res.acc_after_task, res.reference_acc_after_task,
                                       strict=True)):
        log.info("fashion task %d: device %.2f %%  numpy %.2f %%  per task %s", t + 1,
                 100 * dev, 100 * ref, " ".join(f"{100 * a:.1f}" for a in res.task_acc[t]))
    assert res.acc_after_task == res.reference_acc_after_task  # bit-exact int8 twin
    assert len(res.acc_after_task) == 2
    assert res.acc_after_task[-1] > 0.5  # 4 classes: chance is 0.25
    st = res.stats[-1]
    log.info("STATS %s", st)
    assert st["train_steps"] == len(ds.y_train)
    assert st["replay_count"] == sc.replay_cap
