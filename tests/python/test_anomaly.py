"""On-device anomaly detection (issue 20, `kilolearn anomaly`): an int8 autoencoder learns one
BasicMotions class over the session protocol; its EVAL scores equal the int8 twin's window for
window, its threshold the twin's float32 rule; the ROC AUC is that of the host's float32
training to a few thousandths, and sklearn's."""

from __future__ import annotations

import pytest
from conftest import require_target

from kilolearn.core import data
from kilolearn.device import anomaly as A
from kilolearn.device import session


@pytest.fixture(scope="module")
def motions() -> data.Dataset:
    pytest.importorskip("aeon")
    return data.basic_motions()


def test_roc_auc_matches_sklearn(rng):
    from sklearn.metrics import roc_auc_score

    for _ in range(5):
        y = rng.integers(0, 2, 200)
        s = rng.normal(0, 1, 200) + y * rng.uniform(0, 2) + rng.integers(0, 3, 200)  # ties
        assert abs(A.roc_auc(s, y) - roc_auc_score(y, s)) < 1e-12


@pytest.mark.parametrize("target", ["host", "mps2-an386"])
def test_device_learns_normal_and_scores_like_its_twin(target, motions):
    require_target(target)
    sc = A.Scenario(normal=2, epochs=4 if target == "host" else 2)  # Walking
    with session.open_device(target) as client:
        r = A.run(client, sc, motions)
    assert r.same_scores, "device scores or threshold differ from the int8 twin"
    assert r.n_train == 90 and r.n_test_normal == 90 and r.n_test_anomalous == 270
    assert abs(r.auc_device - r.auc_host) < 0.03
    assert r.auc_device > r.auc_untrained + 0.01  # learning normal helps
    assert r.auc_device > 0.9
    assert 0.0 < r.threshold and r.detected > r.false_alarms
    if target != "host":
        assert r.insn_per_sample is not None and r.insn_per_sample > 0
    assert r.arena_used > 0
