"""Continual learning on real backbones (docs/continual-learning.md): the pretrained CNN on
Fashion-MNIST 28x28, the random 1-D conv backbone on BasicMotions time series, their data."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import require_target

from kilolearn.core import backbone as bb
from kilolearn.core import data
from kilolearn.device import session as S

SMALL_CNN = bb.CnnSpec(c1=4, embed=32, head=16)
SMALL_PRE = bb.Pretraining(n=1500, epochs=1)


def _fashion_small() -> data.Dataset:
    if not os.path.isdir(data.FASHION_DIR):
        pytest.skip("dataset-fashion-mnist not installed")
    return S.load_data("fashion").subset(4, n_train=240, n_test=200, n_pool=SMALL_PRE.n)


def _aeon_missing() -> None:
    try:
        data.basic_motions()
    except FileNotFoundError as e:
        pytest.skip(str(e))


def _ncm_accuracy(g, params, cut: int, ds: data.Dataset) -> float:
    from kilolearn.core import reference

    t = reference.F32Trainer(g, params)

    def latents(xs: np.ndarray) -> np.ndarray:
        return np.array([t.forward(x)[cut].reshape(-1) for x in xs])

    ztr, zte = latents(ds.x_train), latents(ds.x_test)
    means = np.array([ztr[ds.y_train == c].mean(axis=0) for c in range(4)])
    pred = np.argmin(((zte[:, None, :] - means[None]) ** 2).sum(axis=2), axis=1)
    return float(np.mean(pred == ds.y_test))


def test_pretrained_backbone_frozen_head_fresh_and_cached(tmp_path):
    ds = _fashion_small()
    args = (SMALL_CNN, SMALL_PRE, ds.x_pool, ds.y_pool, ds.n_classes, [0, 1], 5)
    m, p, cut, seen = bb.pretrained_cnn(*args, cache_dir=tmp_path)
    assert np.array_equal(seen, ds.x_pool[:SMALL_PRE.n])  # source 'all': the pool
    g = m.graph
    fresh = m.init(5)
    with_w = [i for i, op in enumerate(g.ops) if op.has_params]
    backbone, head = with_w[:4], with_w[4:]
    assert [g.ops[i].trainable for i in with_w] == [False] * 4 + [True] * len(head)
    assert cut == g.ops[head[0]].inputs[0] and g.shapes[cut] == (1, 1, SMALL_CNN.embed)
    for i in head:  # the head starts anew: the device knows no class
        assert np.array_equal(p.weights[i], fresh.weights[i])
    for i in backbone:  # the backbone learned from the pool
        assert not np.array_equal(p.weights[i], m.init(SMALL_PRE.seed).weights[i])
    # the pretrained latents separate the session's classes (images the pool never held)
    # better than the same network's random ones: nearest class mean, train -> test
    assert _ncm_accuracy(g, p, cut, ds) > _ncm_accuracy(g, m.init(SMALL_PRE.seed), cut, ds) + 0.05
    files = list(tmp_path.glob("backbone-*.npz"))
    assert len(files) == 1
    m2, p2, _, _ = bb.pretrained_cnn(*args, cache_dir=tmp_path)  # from the cache: identical
    for a, b in zip(p.weights, p2.weights, strict=True):
        assert (a is None and b is None) or np.array_equal(a, b)
    files[0].write_bytes(b"not an npz")  # a damaged cache is made again, not trusted
    _, p3, _, _ = bb.pretrained_cnn(*args, cache_dir=tmp_path)
    for a, b in zip(p.weights, p3.weights, strict=True):
        assert (a is None and b is None) or np.array_equal(a, b)


def test_pretrain_source_reaches_the_backbone():
    """--pretrain first pretrains on the first task's images only: another backbone than all,
    calibrated on those images."""
    ds = _fashion_small()
    nets = {}
    for source in ("all", "first"):
        sc = S.Scenario(cnn=SMALL_CNN, pretraining=SMALL_PRE, pretrain=source)
        g, p, cut, calib = S.scenario_model(sc, ds)
        nets[source] = p
        first = np.isin(ds.y_pool, [0, 1])
        want = ds.x_pool if source == "all" else ds.x_pool[first]
        assert np.array_equal(calib, want[:200])
    assert not np.array_equal(nets["all"].weights[0], nets["first"].weights[0])


def test_fashion_on_pretrained_backbone_replay_vs_naive():
    """The fashion scenario, made small, on the host build: device = numpy after every task,
    replay keeps the first task where fine-tuning loses it."""
    ds = _fashion_small()
    sc = S.Scenario(epochs=2, replay_cap=60, replay_ratio=2, cnn=SMALL_CNN,
                    pretraining=SMALL_PRE)
    with S.open_device("host") as client:
        res = {st: S.run(client, st, sc, ds) for st in ("replay", "naive")}
    for r in res.values():
        assert r.acc_after_task == r.reference_acc_after_task, r.strategy
        assert len(r.acc_after_task) == 2
    assert res["naive"].task_acc[-1][0] < 0.2  # fine-tuning forgets the first task
    assert res["replay"].task_acc[-1][0] > res["naive"].task_acc[-1][0] + 0.3
    st = res["replay"].stats[-1]
    assert st["replay_count"] == sc.replay_cap and st["replay_steps"] == 2 * st["train_steps"]


def test_basicmotions_time_series_replay_vs_naive():
    """BasicMotions, 2 tasks, the random 1-D conv backbone, on the host build: device =
    numpy; replay keeps both tasks, naive forgets the first."""
    _aeon_missing()
    ds = S.load_data("basicmotions")
    sc = S.Scenario(**S.DATA_DEFAULTS["basicmotions"])
    with S.open_device("host") as client:
        res = {st: S.run(client, st, sc, ds) for st in ("replay", "naive")}
    for r in res.values():
        assert r.acc_after_task == r.reference_acc_after_task, r.strategy
    assert res["naive"].task_acc[-1][0] < 0.2
    assert res["replay"].acc_after_task[-1] >= 0.8


@pytest.mark.parametrize("scenario", ["fashion", "basicmotions"])
def test_conv_backbones_on_emulated_m4_equal_the_twin(scenario):
    """Both backbones on the emulated Cortex-M4, one epoch of replay: device = numpy."""
    require_target("mps2-an386")
    if scenario == "fashion":
        ds = _fashion_small().subset(4, n_train=120, n_test=80, n_pool=SMALL_PRE.n)
        assert ds.x_pool is not None  # the pretrained CNN, not the Dense fallback
        sc = S.Scenario(epochs=1, replay_cap=30, replay_ratio=1, cnn=SMALL_CNN,
                        pretraining=SMALL_PRE)
    else:
        _aeon_missing()
        ds = S.load_data("basicmotions").subset(4, n_train=40, n_test=40)
        sc = S.Scenario(epochs=1, lr=0.01, replay_cap=30, replay_ratio=1)
    with S.open_device("mps2-an386") as client:
        r = S.run(client, "replay", sc, ds)
    assert r.acc_after_task == r.reference_acc_after_task
    assert len(r.acc_after_task) == 2 and r.stats[-1]["train_insn"] > 0


TS_HEAD = "#comment\n@problemName X\n@univariate false\n@classLabel true a b c\n@data\n"


def test_read_ts_parses_against_hand_built_arrays(tmp_path):
    f = tmp_path / "x.ts"
    f.write_text(TS_HEAD + "1,2,3:4,5,6:b\n-1,0.5,2e1:7,8,9:a\n")
    x, y, classes = data.read_ts(str(f))
    assert classes == ["a", "b", "c"]
    assert y.tolist() == [1, 0]
    assert x.shape == (2, 3, 2) and x.dtype == np.float32  # (n, length, dims)
    assert np.array_equal(x[0], np.array([[1, 4], [2, 5], [3, 6]], np.float32))
    assert np.array_equal(x[1, :, 0], np.array([-1, 0.5, 20], np.float32))


@pytest.mark.parametrize("body", ["1,2:3,4:z\n", "1,2:3,4,5:a\n", "1,x:3,4:a\n",
                                  "1,2:3,4:a\n1,2,3:3,4,5:a\n", "", "1,2:a\n:a\n"])
def test_read_ts_rejects_malformed_files_with_a_line(tmp_path, body):
    f = tmp_path / "bad.ts"
    f.write_text(TS_HEAD + body)
    with pytest.raises(ValueError, match="bad.ts"):
        data.read_ts(str(f))


def test_read_ts_fuzzed_never_crashes(tmp_path, rng):
    good = (TS_HEAD + "1,2,3:4,5,6:b\n-1,0.5,2:7,8,9:a\n").encode()
    f = tmp_path / "f.ts"
    for _ in range(400):
        b = bytearray(good)
        for _ in range(int(rng.integers(1, 6))):
            b[int(rng.integers(len(b)))] = int(rng.integers(256))
        f.write_bytes(bytes(b))
        try:
            x, y, _ = data.read_ts(str(f))
        except ValueError:  # UnicodeDecodeError included: one clear error
            continue
        assert len(x) == len(y)
