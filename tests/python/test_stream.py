"""kilolearn stream: a data set sent as TRAIN / EVAL frames through a pyserial URL (a real pty
pair here) trains the device exactly as the numpy twin trains."""

from __future__ import annotations

import json

from kilolearn import cli
from kilolearn.core import model as M
from kilolearn.core import reference
from kilolearn.device import session, stream
from kilolearn.formats import export


def test_stream_over_a_pty_matches_numpy(digits, tmp_path):
    m = M.mlp([64, 32, 10])
    qm = reference.quantize_model(m.graph, m.init(0), digits.x_train[:200])
    blob = export.export_s8(qm)
    xs = stream.encode(digits.x_train[:300], blob)
    xt = stream.encode(digits.x_test, blob)
    state = tmp_path / "state.json"
    with session.open_device("host-pty") as client:
        client.load(blob)
        client.config(lr=0.05, seed=3)
        r = stream.stream(client, xs, digits.y_train[:300], "train", state=state)
        assert r.sent == 300 and json.loads(state.read_text())["next"] == 300
        e = stream.stream(client, xt, digits.y_test, "eval")
    ref = reference.S8Trainer(qm, lr=0.05, seed=3)  # every class active (the default)
    for i in range(300):
        ref.step(xs[i], int(digits.y_train[i]))
    assert e.correct == int((ref.predict(xt) == digits.y_test).sum())


def test_stream_cli_needs_a_blob(capsys):
    assert cli.main(["stream", "--board", "host"]) == 2
    assert "--blob" in capsys.readouterr().err
