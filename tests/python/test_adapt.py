"""The user's loop (issue 18): session semantics a user can predict (every class active by
default, each CONFIG the whole configuration, INFO reporting it), on-device epochs over a
buffer of recent samples (device = numpy, weight for weight), and the loop through the CLI
(example-data -> fit -> adapt -> eval) with the pulled-back blob evaluating on the host to the
device's accuracy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require_target

from kilolearn.core import fit, model, reference
from kilolearn.core.samples import SESSION_SEED_XOR, SampleBuffer
from kilolearn.device import protocol as P
from kilolearn.device import session
from kilolearn.formats import export


@pytest.fixture(scope="module")
def pretrained(digits) -> bytes:
    """A digits MLP trained on the host (numpy) and quantised: a model worth deploying."""
    blob, r = fit.fit_new(digits.x_train[:600], digits.y_train[:600], "mlp", "s8", epochs=8)
    assert r.train_acc > 0.9
    return blob


def _device_preds(dev: P.Client, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    return np.array([dev.eval(int(y), x.tobytes())[0] for x, y in zip(xs, ys, strict=True)])


def _params(blob: bytes) -> list[np.ndarray]:
    qm = export.read(blob).qmodel
    return [a for a in qm.w + qm.b if a is not None]


# ---------------------------------------------------------------------------- class mask


def test_pretrained_model_evaluates_with_every_class_active(pretrained, digits):
    """After LOAD, EVAL of a pretrained model is its accuracy (was: chance, every logit masked
    until its label had been trained)."""
    b = export.read(pretrained)
    xt = b.qmodel.quantize_input(digits.x_test[:200])
    host = reference.S8Trainer(b.qmodel).predict(xt)
    with session.open_device("host") as dev:
        dev.load(pretrained)
        cfg = dev.info().config
        assert cfg is not None and cfg.active_classes == 10 and not cfg.grow_classes
        got = _device_preds(dev, xt, digits.y_test[:200])
    assert list(got) == list(host)
    assert np.mean(got == digits.y_test[:200]) > 0.85


def test_class_incremental_growth_is_an_explicit_mode(pretrained, digits):
    b = export.read(pretrained)
    xq = b.qmodel.quantize_input(digits.x_train[:40])
    with session.open_device("host") as dev:
        dev.load(pretrained)
        dev.config(classes=b"")  # grow: nothing active until trained
        assert dev.info().config.active_classes == 0
        idx = [i for i in range(40) if digits.y_train[i] in (3, 7)]
        for i in idx:
            dev.train(int(digits.y_train[i]), xq[i].tobytes())
        assert dev.info().config.grow_classes and dev.info().config.active_classes == 2
        preds = _device_preds(dev, xq, digits.y_train[:40])
        assert set(preds.tolist()) <= {3, 7}  # only the active classes are ever predicted
        dev.config()  # the next CONFIG without classes: every class again
        assert dev.info().config.active_classes == 10


# ---------------------------------------------------------------------------- CONFIG


def test_config_states_the_whole_configuration(pretrained, digits):
    """Keys a CONFIG leaves out return to their defaults (was: carried over silently from the
    previous CONFIG); INFO reports the configuration in force; training follows it (the twin
    of the defaults matches bit for bit)."""
    b = export.read(pretrained)
    xq = b.qmodel.quantize_input(digits.x_train[:60])
    with session.open_device("host") as dev:
        dev.load(pretrained)
        d0 = dev.info().config
        dev.config(lr=0.2, seed=9, update=(1, 200), buffer=16, classes=bytes([1, 1]))
        c = dev.info().config
        assert (round(c.lr, 6), c.seed, c.update_policy, c.update_permille, c.buffer_cap,
                c.active_classes) == (0.2, 9, 1, 200, 16, 2)
        dev.config(lr=0.03)
        c = dev.info().config
        assert (c.seed, c.update_policy, c.update_permille, c.buffer_cap, c.active_classes,
                c.grow_classes) == (d0.seed, P.UPDATE_BLOB, 1000, 0, 10, False)
        assert abs(c.lr - 0.03) < 1e-7
        with pytest.raises(P.DeviceError) as e:
            dev.epochs(1)  # the buffer went with the CONFIG that did not ask for it
        assert e.value.status == -208
        twin = reference.S8Trainer(b.qmodel, lr=0.03, seed=d0.seed)  # no policy: every weight
        for x, y in zip(xq, digits.y_train[:60], strict=True):
            dev.train(int(y), x.tobytes())
            twin.step(x, int(y))
        got = dev.read_blob()
    for a, t in zip(_params(got), [a for a in twin.m.w + twin.m.b if a is not None],
                    strict=True):
        assert np.array_equal(a, t)


def test_refused_buffer_config_changes_nothing(pretrained):
    with session.open_device("host") as dev:
        dev.load(pretrained)
        dev.config(lr=0.1, buffer=8)
        before = dev.info().config
        for bad, status in ((70000, -22), (60000, -12)):  # over the cap; over the arena
            with pytest.raises(P.DeviceError) as e:
                dev.config(buffer=bad)
            assert e.value.status == status
            assert dev.info().config == before
        for n in (0, 101):
            with pytest.raises(P.DeviceError) as e:
                dev.epochs(n)
            assert e.value.status == -22
        xq = export.read(pretrained).qmodel.quantize_input(np.zeros((1, 64)))
        dev.config(buffer=1000)
        for _ in range(700):
            dev.train(0, xq[0].tobytes())
        assert dev.epochs(93)[0] == 93 * 700  # 65,100 steps: within the bound
        with pytest.raises(P.DeviceError) as e:
            dev.epochs(94)  # 65,800 steps in one request: refused, nothing trained
        assert e.value.status == -22 and dev.stats().train_steps == 700 + 93 * 700


# ---------------------------------------------------------------------------- EPOCHS


def test_sample_buffer_keeps_the_most_recent_and_shuffles_a_permutation():
    buf = SampleBuffer(8, 5)
    for i in range(20):
        buf.add(np.array([i], np.int8), i % 10)
    assert sorted(int(s[0]) for s in buf.samples) == list(range(12, 20))
    orders = [buf.order() for _ in range(4)]
    for o in orders:
        assert sorted(o) == list(range(8))
    assert len({tuple(o) for o in orders}) > 1  # a new order each epoch


@pytest.mark.parametrize("target", ["host", "mps2-an386"])
def test_epochs_on_the_device_are_the_twins(target, pretrained, digits):
    """N samples, then E epochs over the device's ring buffer (smaller than N: the most recent
    ones are revisited): weights and predictions equal the numpy twin's."""
    require_target(target)
    b = export.read(pretrained)
    n, cap, epochs, seed = 30, 24, 3, 11
    xq = b.qmodel.quantize_input(digits.x_train[600:600 + n])
    ys = digits.y_train[600:600 + n]
    twin = reference.S8Trainer(b.qmodel, lr=0.05, seed=seed)
    buf = SampleBuffer(cap, seed ^ SESSION_SEED_XOR)
    with session.open_device(target) as dev:
        dev.load(pretrained)
        dev.config(lr=0.05, seed=seed, buffer=cap)
        for x, y in zip(xq, ys, strict=True):
            dev.train(int(y), x.tobytes())
            twin.step(x, int(y))
            buf.add(x, int(y))
        for _ in range(epochs - 1):
            steps, correct = dev.epochs(1)
            ok = 0
            for x, y in buf.epoch():
                ok += int(reference.masked_argmax(twin.logits(x), None) == y)
                twin.step(x, y)
            assert (steps, correct) == (cap, ok)
        assert dev.info().config.buffered == cap
        assert dev.stats().train_steps == n + cap * (epochs - 1)
        got = dev.read_blob()
        xt = b.qmodel.quantize_input(digits.x_test[:100])
        dp = _device_preds(dev, xt, digits.y_test[:100])
    for a, t in zip(_params(got), [a for a in twin.m.w + twin.m.b if a is not None],
                    strict=True):
        assert np.array_equal(a, t)
    assert list(dp) == list(twin.predict(xt))


# ---------------------------------------------------------------------------- the CLI loop


def _kilolearn(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("kilolearn")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "kilolearn.cli"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, cwd=cwd,
                          timeout=900)


@pytest.mark.parametrize("target", ["host", "mps2-an386"])
def test_the_loop_through_the_cli(target, tmp_path):
    """Raw arrays -> a pretrained blob -> adapted on the device -> pulled back: the pulled blob
    evaluates on the host (kilolearn eval, numpy) to the device's accuracy exactly, and the
    device agrees with the numpy twin on every prediction."""
    require_target(target)
    r = _kilolearn("example-data", "d", "--adapt-samples", "60", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = _kilolearn("fit", "d/train.npz", "-o", "base.klm", "--epochs", "6", "--trains",
                   "last:1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    b = export.read((tmp_path / "base.klm").read_bytes())
    assert [op.trainable for op in b.graph.ops if op.has_params] == [False, True]
    r = _kilolearn("adapt", "base.klm", "--data", "d/adapt.npz", "--eval", "d/shifted-test.npz",
                   "--samples", "20", "60", "--epochs", "3", "--board", target, "-o",
                   "adapted.klm", "--json", "a.json", "--host-runs", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads((tmp_path / "a.json").read_text())
    assert [p["n"] for p in res["points"]] == [20, 60]
    assert [p["steps"] for p in res["points"]] == [60, 180]
    for p in res["points"]:
        assert p["agree"]["shifted-test"] == 1.0  # device = numpy, prediction for prediction
    last = res["points"][-1]["device"]["shifted-test"]
    assert res["pulled_host"]["shifted-test"] == last
    r = _kilolearn("eval", "adapted.klm", "--data", "d/shifted-test.npz", "--json", "e.json",
                   cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "e.json").read_text())["accuracy"] == last
    # only the last layer trained: the first layer's weights are the base's
    pulled = export.read((tmp_path / "adapted.klm").read_bytes()).qmodel
    assert np.array_equal(pulled.w[0], b.qmodel.w[0])
    assert not np.array_equal(pulled.w[1], b.qmodel.w[1])


def test_fit_a_cnn_from_images_and_continue_a_blob(tmp_path, digits):
    x = digits.x_train[:300].reshape(-1, 8, 8)
    np.savez(tmp_path / "img.npz", x=x, y=digits.y_train[:300])
    r = _kilolearn("fit", "img.npz", "--model", "cnn", "--hidden", "8", "--epochs", "2", "-o",
                   "cnn.klm", "--dtype", "f32", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    g = export.read((tmp_path / "cnn.klm").read_bytes()).graph
    assert g.shapes[g.input] == (8, 8, 1) and g.ops[0].kind == "conv"
    m = model.mlp([64, 16, 10])
    qm = reference.quantize_model(m.graph, m.init(3), digits.x_train[:200])
    (tmp_path / "init.klm").write_bytes(export.export_s8(qm))
    r = _kilolearn("fit", "img.npz", "--init", "init.klm", "--epochs", "1", "-o", "more.klm",
                   "--json", "f.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # int8 fit of a blob is the engine's arithmetic: the twin trained the same way agrees
    t = reference.S8Trainer(qm, lr=0.05, seed=0)
    xq = qm.quantize_input(digits.x_train[:300])
    for i in np.random.default_rng(0).permutation(300):
        t.step(xq[i], int(digits.y_train[i]))
    got = export.read((tmp_path / "more.klm").read_bytes()).qmodel
    assert all(np.array_equal(a, b) for a, b in zip(got.w[::2], t.m.w[::2], strict=True)
               if a is not None)


# ---------------------------------------------------------------------------- data errors


def _bad_data(tmp: Path) -> dict[str, tuple[Path, list[str]]]:
    """name -> (file, words the one-line error must contain)."""
    rng = np.random.default_rng(0)
    out: dict[str, tuple[Path, list[str]]] = {}

    def npz(name: str, words: list[str], **arrays: np.ndarray) -> None:
        np.savez(tmp / name, **arrays)
        out[name] = (tmp / name, words)

    def text(name: str, words: list[str], content: str) -> None:
        (tmp / name).write_text(content)
        out[name] = (tmp / name, words)

    npz("keys.npz", ["no array", "feats", "np.savez"], feats=np.zeros((4, 64)),
        classes=np.zeros(4))
    npz("width.npz", ["63 values", "takes 64"], x=rng.uniform(0, 1, (5, 63)), y=np.arange(5))
    npz("scale.npz", ["calibrated", "scale"], x=rng.uniform(0, 255, (5, 64)), y=np.arange(5))
    npz("labels.npz", ["labels", "10 classes"], x=np.zeros((5, 64)), y=np.arange(5) + 8)
    npz("dtype.npz", ["numbers"], x=np.array([["a"] * 64] * 3), y=np.arange(3))
    text("cell.csv", ["row 3", "column 5", "'oops'"],
         "label," + ",".join(f"p{i}" for i in range(64)) + "\n"
         + "1," + ",".join(["0.5"] * 64) + "\n" + "2,0,0,0,oops," + ",".join(["0"] * 60) + "\n")
    text("ragged.csv", ["row 2", "values"], "1,0,0,0\n2,0,0\n")
    np.save(tmp / "cube.npy", np.zeros((2, 3, 4)))
    out["cube.npy"] = (tmp / "cube.npy", ["3-D", ".npz"])
    return out


def test_data_errors_are_one_line_naming_the_problem(tmp_path, pretrained):
    (tmp_path / "m.klm").write_bytes(pretrained)
    for name, (path, words) in _bad_data(tmp_path).items():
        r = _kilolearn("eval", "m.klm", "--data", str(path), cwd=tmp_path)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, \
            (name, r.stderr)
        assert all(w in lines[0] for w in words), (name, lines[0])
    # a CSV header is skipped, not an error; the scale check can be waived
    xs = np.random.default_rng(1).uniform(0, 1, (4, 64))
    (tmp_path / "ok.csv").write_text("label," + ",".join(f"p{i}" for i in range(64)) + "\n" +
                                     "".join(f"{i}," + ",".join(f"{v:.3f}" for v in x) + "\n"
                                             for i, x in enumerate(xs)))
    r = _kilolearn("eval", "m.klm", "--data", "ok.csv", cwd=tmp_path)
    assert r.returncode == 0 and "of 4" in r.stdout, r.stderr
    r = _kilolearn("eval", "m.klm", "--data", str(tmp_path / "scale.npz"), "--no-scale-check",
                   cwd=tmp_path)
    assert r.returncode == 0 and "saturate" in r.stdout, r.stderr
