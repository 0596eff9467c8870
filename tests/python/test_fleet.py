"""A fleet of boards learning together on Flower (kilolearn.fleet, docs/fleet.md).

The aggregation against an independent computation (exact rationals, Python's own
round-half-even); the server's check of a board's blob (damaged, foreign, fuzzed); fleets of
host-build and QEMU boards whose rounds are the numpy twin's bit for bit, with a board killed
mid-round and one returning a damaged blob; Flower's simulation engine giving the same global
models as the inline engine; ``kilolearn fleet`` end to end and its refusals."""

from __future__ import annotations

import json
import struct
import zlib
from fractions import Fraction

import numpy as np
import pytest
from cli_sweep import run_inprocess
from conftest import require_target

from kilolearn.core import fit, reference
from kilolearn.core import model as M
from kilolearn.fleet import aggregate as agg
from kilolearn.fleet import boards as B
from kilolearn.fleet import run as FR
from kilolearn.formats import export

pytest.importorskip("flwr")


def _s8_blob(digits, seed: int = 0) -> bytes:
    m = M.mlp([64, 16, 10])
    return export.export_s8(reference.quantize_model(m.graph, m.init(seed),
                                                     digits.x_train[:200]))


def _exact_mean(values, exps, counts, lo, hi):
    """Weighted mean by exact rationals, rounded half to even by Python's round()."""
    e_out = max(exps)
    n = sum(counts)
    flat = [np.asarray(v).reshape(-1) for v in values]
    out = []
    for j in range(flat[0].size):
        s = sum(Fraction(int(f[j]) * c) * Fraction(2) ** e for f, e, c in
                zip(flat, exps, counts, strict=True))
        out.append(min(hi, max(lo, round(s / n / Fraction(2) ** e_out))))
    return np.array(out, np.int64).reshape(np.shape(values[0]))


# ---------------------------------------------------------------------------- aggregation


def test_int8_aggregation_is_the_exact_weighted_mean_rounded_half_even(digits):
    """Boards with different weights, counts and (for the general rule) exponents: every
    tensor equals the exact rational weighted mean at the largest exponent, ties to even;
    activation exponents take the largest; the result is a valid blob of the same layout."""
    rng = np.random.default_rng(3)
    base = _s8_blob(digits)
    qm = export.read(base).qmodel
    boards, counts = [], []
    for k in range(4):
        m = qm.copy()
        for i, w in enumerate(m.w):
            if w is not None:
                m.w[i] = rng.integers(-127, 128, w.shape)
                m.b[i] = rng.integers(-2**31, 2**31, m.b[i].shape)
        m.ew = [e + (k == 2) for e in m.ew]  # one board at a coarser weight scale
        m.eb = [e - (k == 1) for e in m.eb]  # one at a finer bias scale
        m.exp = [e + int(rng.integers(0, 2)) for e in m.exp]
        boards.append(export.read(export.export_s8(m)))
        counts.append(int(rng.integers(1, 500)))
    out = export.read(agg.aggregate(boards, counts, base)).qmodel
    for i, w in enumerate(qm.w):
        if w is None:
            continue
        ms = [b.qmodel for b in boards]
        assert out.ew[i] == max(m.ew[i] for m in ms)
        assert np.array_equal(out.w[i], _exact_mean([m.w[i] for m in ms],
                                                    [m.ew[i] for m in ms], counts, -127, 127))
        assert np.array_equal(out.b[i], _exact_mean([m.b[i] for m in ms],
                                                    [m.eb[i] for m in ms], counts,
                                                    -2**31, 2**31 - 1))
    assert out.exp == [max(b.qmodel.exp[t] for b in boards) for t in range(len(qm.exp))]
    # ties: 1 and 2 -> 1.5 -> 2, 2 and 3 -> 2.5 -> 2, -1 and -2 -> -1.5 -> -2
    got = agg.weighted_mean_q([np.array([1, 2, -1]), np.array([2, 3, -2])], [0, 0], [1, 1],
                              -127, 127)[0]
    assert got.tolist() == [2, 2, -2]


def test_float32_aggregation_is_the_float64_weighted_mean(digits):
    m = M.mlp([64, 16, 10])
    g = m.graph
    ps = [m.init(k) for k in range(3)]
    counts = [5, 17, 101]
    blobs = [export.read(export.export_f32(g, p)) for p in ps]
    out = export.read(agg.aggregate(blobs, counts, export.export_f32(g, ps[0]))).params
    for i, w in enumerate(ps[0].weights):
        if w is None:
            continue
        want = np.average(np.stack([p.weights[i] for p in ps]).astype(np.float64), axis=0,
                          weights=counts).astype(np.float32)
        assert np.allclose(out.weights[i], want, rtol=0, atol=1e-7)
        manual = sum(float(c) * p.weights[i].astype(np.float64) for p, c in
                     zip(ps, counts, strict=True)) / sum(counts)
        assert np.array_equal(out.weights[i], manual.astype(np.float32))


def test_the_server_rejects_damaged_and_foreign_blobs(digits):
    base_bytes = _s8_blob(digits)
    base = export.read(base_bytes)
    assert agg.check(base_bytes, base).graph == base.graph
    with pytest.raises(agg.Rejected, match="KL_ECRC"):
        agg.check(B.corrupt(base_bytes, 1), base)
    other = M.mlp([64, 8, 10])
    with pytest.raises(agg.Rejected, match="graph"):
        agg.check(export.export_s8(reference.quantize_model(other.graph, other.init(0),
                                                            digits.x_train[:200])), base)
    f32 = export.export_f32(M.mlp([64, 16, 10]).graph, M.mlp([64, 16, 10]).init(0))
    with pytest.raises(agg.Rejected, match="dtype"):
        agg.check(f32, base)
    rng = np.random.default_rng(5)  # fuzz: any damage is a Rejected, nothing else; what
    accepted = 0  # passes (damage under a resealed CRC) aggregates into a valid blob
    for _ in range(400):
        b = bytearray(base_bytes)
        for k in rng.integers(0, len(b), int(rng.integers(1, 6))):
            b[k] = int(rng.integers(0, 256))
        if rng.random() < 0.3:
            b = b[:int(rng.integers(0, len(b) + 1))]
        if rng.random() < 0.5 and len(b) >= export.HEADER_SIZE:
            total = min(struct.unpack_from("<I", b, 8)[0], len(b))
            struct.pack_into("<I", b, 12, zlib.crc32(b[export.CRC_START:total]))
        try:
            got = agg.check(bytes(b), base)
        except agg.Rejected:
            continue
        export.read(agg.aggregate([got], [1], base_bytes))
        accepted += 1
    assert accepted > 0


def test_split_is_non_iid_and_covers_every_sample(digits):
    parts = B.split(digits.y_train, 8, 3, 10, 0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(digits.y_train)))
    assert all(len(set(digits.y_train[p].tolist())) == 3 for p in parts)


# ---------------------------------------------------------------------------- fleets


def _check_fault_run(res: FR.FleetResult, killed: int | None, damaged: int | None,
                     hung: int | None = None) -> None:
    """Round 2 drops the killed, the hung and the damaged board with their reasons, rounds 1
    and 3 have every board (they rejoin), every device round is the twin's, bit for bit."""
    n = res.config["n_boards"]
    assert [r["round"] for r in res.rounds] == [1, 2, 3]
    for r in res.rounds:
        dropped = {b["board"]: b["reason"] for b in r["boards"] if not b["ok"]}
        want = {k for k in (killed, damaged, hung) if k is not None} \
            if r["round"] == 2 else set()
        assert set(dropped) == want, dropped
        if killed is not None and r["round"] == 2:
            assert "link lost" in dropped[killed] or "timed out" in dropped[killed]
        if hung is not None and r["round"] == 2:
            assert dropped[hung].startswith("device timed out")
        if damaged is not None and r["round"] == 2:
            assert "KL_ECRC" in dropped[damaged]
        ok = [b for b in r["boards"] if b["ok"]]
        assert len(ok) == n - len(want)
        assert all(b["twin-equal"] == 1.0 and b["link-tx"] > b["blob-down"] for b in ok)
    assert res.twin_rounds_equal is True
    assert res.rounds[-1]["accuracy"] > res.initial_accuracy + 0.2


def test_host_fleet_rounds_equal_the_twin_and_survive_faults():
    """Four host-build boards, three rounds: in round 2 board 1's process is killed
    mid-round, board 3's stops answering (its replies time out) and board 2's blob is damaged
    on the way back; the rounds finish, the reasons are logged, all three rejoin in round 3,
    and every round is the numpy twin's."""
    cfg = FR.FleetConfig(n_boards=4, board="host", rounds=3, max_samples=100, timeout=1.0,
                         faults={(2, 1): B.KILL, (2, 2): B.CORRUPT, (2, 3): B.HANG})
    lines: list[str] = []
    res = FR.run(cfg, lines.append)
    _check_fault_run(res, 1, 2, hung=3)
    assert any(all(f"board {k} dropped" in ln for k in (1, 2, 3)) for ln in lines)
    assert len(res.alone) == 4 and len(res.centralised) == 3


def test_failure_reasons_name_what_happened():
    from kilolearn.device import protocol

    assert B.failure(protocol.DeviceError(protocol.CONFIG, -12)).startswith(
        "device refused a request (command 0x08 failed: KL_ENOMEM")
    assert B.failure(protocol.LinkTimeout("no reply")) == "device timed out (no reply)"
    assert B.failure(BrokenPipeError(32, "Broken pipe")).startswith("link lost (BrokenPipe")
    assert B.failure(B.PowerLost("after 3")) == "power lost (after 3)"


@pytest.mark.qemu
def test_qemu_fleet_rounds_equal_the_twin_and_survive_a_killed_board():
    """Two Cortex-M4 boards (QEMU mps2-an386), three rounds; board 0's QEMU is killed in
    round 2."""
    require_target("mps2-an386")
    cfg = FR.FleetConfig(n_boards=2, board="mps2-an386", rounds=3, classes_per_board=5,
                         max_samples=40, timeout=5.0, faults={(2, 0): B.KILL},
                         baselines=False)
    res = FR.run(cfg)
    _check_fault_run(res, 0, None)
    assert all(b["train-insn"] > 0 for r in res.rounds for b in r["boards"] if b["ok"])


def test_flower_simulation_engine_gives_the_inline_engines_models():
    """Ten virtual boards in Flower's simulation engine (Ray, two at a time): the same global
    model every round as the inline engine, and a corrupt blob dropped there too."""
    pytest.importorskip("ray")
    cfg = FR.FleetConfig(n_boards=10, board=B.TWIN, rounds=2, classes_per_board=2,
                         engine="simulation", baselines=False, faults={(2, 3): B.CORRUPT})
    sim = FR.run(cfg)
    cfg.engine = "inline"
    inline = FR.run(cfg)
    assert [r["accuracy"] for r in sim.rounds] == [r["accuracy"] for r in inline.rounds]
    assert [[b["board"] for b in r["boards"] if not b["ok"]] for r in sim.rounds] == [[], [3]]
    blob = FR.initial_model(cfg, B.load_data("digits").x_train, 10)
    assert fit.evaluate(blob, *_test(cfg)) == sim.initial_accuracy


def _test(cfg: FR.FleetConfig):
    ds = B.load_data(cfg.data)
    return ds.x_test, ds.y_test


# ---------------------------------------------------------------------------- command line


def test_cli_fleet_of_virtual_boards_json_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    rc, out, err = run_inprocess(["fleet", "--board", "twin", "--boards", "5", "--rounds", "2",
                                  "--corrupt", "4", "--json", str(tmp_path / "f.json"),
                                  "--plot", str(tmp_path / "f.png")])
    assert rc == 0, err
    assert "round 2/2" in out and "board 4 dropped: blob rejected: KL_ECRC" in out
    res = json.loads((tmp_path / "f.json").read_text())
    assert len(res["rounds"]) == 2 and len(res["alone"]) == 5
    assert (tmp_path / "f.png").stat().st_size > 1000


@pytest.mark.parametrize("argv, what", [
    (["--kill", "8"], "--kill 8"),
    (["--kill", "1", "--rounds", "1"], "--fault-round"),
    (["--kill", "1", "--corrupt", "1"], "same board"),
    (["--hang", "2", "--corrupt", "2"], "--hang and --corrupt"),
    (["--boards", "3", "--classes-per-board", "2"], "--classes-per-board"),
    (["--port", "loop://", "--boards", "2"], "--boards"),
    (["--port", "loop://", "--kill", "0"], "--kill"),
    (["--lr", "2"], "--lr"),
])
def test_cli_fleet_refuses_bad_combinations(argv, what):
    rc, out, err = run_inprocess(["fleet", *argv])
    assert rc == 2 and err.count("\n") == 1 and what in err, err


def test_hardware_map_gives_the_connected_boards_ports(tmp_path):
    from kilolearn.cliargs import UsageError
    from kilolearn.fleet import cli

    p = tmp_path / "map.yaml"
    p.write_text("- connected: true\n  platform: nucleo_f429zi\n  serial: /dev/ttyACM0\n"
                 "- connected: false\n  serial: /dev/ttyACM1\n"
                 "- connected: true\n  serial: /dev/ttyACM2\n")
    assert cli.hardware_map(str(p)) == ["/dev/ttyACM0", "/dev/ttyACM2"]
    for text in ("", "just a string\n", "- connected: false\n  serial: /dev/x\n", "[: bad"):
        p.write_text(text)
        with pytest.raises(UsageError, match="--hardware-map"):
            cli.hardware_map(str(p))
