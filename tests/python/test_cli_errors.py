"""Bad arguments to every ``kilolearn`` subcommand (issue 15): exit status 2, exactly one line
on stderr naming the argument, no traceback, and no work started.

The sweep derives its bad values from the parser itself: every subcommand, every argument
that takes a value, by the kind of its type (``kilolearn.cliargs``: numbers with ranges, input
files, output paths, sizes, budgets, ports, ...) or its choices, so a new subcommand or
argument is swept without a change here; ``test_every_value_argument_is_checked`` fails for
one whose type the sweep does not know. The whole sweep runs in-process with the entry points
of real work (builds, devices, jobs, the planner, exports) replaced by a trap; a sample of it
and every case that needs a real process (ports, silent devices, files of random bytes) runs
as ``kilolearn`` subprocesses. The sweep's machinery (the bad calls, the files they name, the
runners and the checks of a refusal) is in cli_sweep.py.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cli_sweep import (
    UNTYPED,
    WORKERS,
    Case,
    Files,
    WorkStarted,
    closed_port,
    env_for,
    kind_of,
    make_files,
    name_of,
    problems,
    run_inprocess,
    run_subprocess,
    semantic,
    subcommands,
    sweep,
    tcp_device,
    trap_work,
    value_actions,
)

from kilolearn import cli
from kilolearn import cliargs as ca


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return make_files(tmp_path_factory.mktemp("cli-errors"))


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every entry point of real work raises WorkStarted (a BaseException: the CLI's guard
    does not catch it), so a bad call that gets past the checks fails the test."""
    trap_work(monkeypatch)


# ---------------------------------------------------------------------------- tests


def test_every_value_argument_is_checked() -> None:
    """Each argument that takes a value has a checked type the sweep knows, or choices."""
    known = {"int", "float", "in", "dir", "out", "data", "sizes", "budget", "port", "update",
             "size", "choices", "traindata", "outdir", "trains"}
    unchecked = [f"{cmd} {name_of(a)}" for cmd, p in subcommands().items()
                 for a in value_actions(p)
                 if kind_of(a) not in known and (cmd, name_of(a)) not in UNTYPED]
    assert not unchecked, ("arguments without a checked type (use kilolearn.cliargs): "
                           + ", ".join(unchecked))


def test_sweep_in_process(files: Files, no_work: None) -> None:
    cases = sweep(files) + semantic(files)
    bad = []
    for c in cases:
        try:
            rc, out, err = run_inprocess(c.argv)
        except WorkStarted as e:
            bad.append(f"{c} ({c.kind}): started work ({e}) instead of refusing")
            continue
        if (p := problems(c, rc, out, err)) is not None:
            bad.append(p)
    assert not bad, f"{len(bad)} of {len(cases)} bad calls:\n" + "\n".join(bad)
    assert not (files.tmp / "build-must-stay-empty").exists()
    print(f"{len(cases)} bad calls over {len(subcommands())} subcommands refused in-process")


def test_sweep_subprocess(files: Files) -> None:
    """A sample of the sweep (per subcommand, one case of each kind of argument, and every
    semantic case), plus what needs a real process: real ports, devices that never answer,
    hang up or talk nonsense, and the hook's sample calls."""
    seen: set[tuple[str, str]] = set()
    cases: list[Case] = []
    for c in sweep(files) + semantic(files):
        key = (c.argv[0] if c.argv else "", c.group)
        if key not in seen:
            seen.add(key)
            cases.append(c)
    cases += [Case(["info", "/nonexistent.klm"], ["/nonexistent.klm"], "hook"),
              Case(["import", "/etc/hostname"], ["/etc/hostname"], "hook"),
              Case(["train", "--epochs", "0"], ["--epochs"], "hook")]
    dead = f"socket://127.0.0.1:{closed_port()}"
    with tcp_device("silent") as silent, tcp_device("hangup") as hangup, \
            tcp_device("chatter") as chatter:
        for cmd, extra in (("session", []),
                           ("stream", ["--blob", files.blob, "--data", files.bad["small.npz"]])):
            for port, what in (("/dev/ttyNOPE", "no such device"), (dead, "connection refused"),
                               (silent, "silent device"), (hangup, "hangs up"),
                               (chatter, "talks nonsense")):
                cases.append(Case([cmd, *extra, "--port", port, "--timeout", "0.3"],
                                  [port, "device", "--port"], what))
        env = env_for(files.tmp)
        t0 = time.monotonic()
        with ThreadPoolExecutor(WORKERS) as pool:
            results = list(pool.map(lambda c: run_subprocess(c.argv, env), cases))
        wall = time.monotonic() - t0
    bad = [p for c, (rc, out, err, _dt) in zip(cases, results, strict=True)
           if (p := problems(c, rc, out, err)) is not None]
    assert not bad, f"{len(bad)} of {len(cases)} bad calls:\n" + "\n".join(bad)
    # quickly: against the calls' own median (a loaded machine slows every start alike); a
    # call that hangs is a timeout above
    limit = 10.0 + 3.0 * statistics.median(dt for *_, dt in results)
    slow = [f"{c}: {dt:.1f} s" for c, (*_, dt) in zip(cases, results, strict=True) if dt > limit]
    assert not slow, f"bad calls not refused quickly (> {limit:.1f} s):\n" + "\n".join(slow)
    assert not (files.tmp / "build-must-stay-empty").exists()
    print(f"{len(cases)} bad calls in subprocesses, {wall:.1f} s")


def test_good_calls_still_work(files: Files, tmp_path: Path) -> None:
    """The checks let good input through (the quick commands)."""
    env = env_for(tmp_path)
    calls = [["info", files.blob], ["info", files.blob_s8],
             ["export", str(tmp_path / "e.klm"), "--sizes", "64-16-10", "--seed", "3"],
             ["export", str(tmp_path / "e8.klm"), "--dtype", "s8"]]
    if files.onnx:
        calls.append(["import", files.onnx, "-o", str(tmp_path / "i.klm")])
    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda a: run_subprocess(a, env), calls))
    for a, (rc, _out, err, _dt) in zip(calls, results, strict=True):
        assert rc == 0 and err == "", (a, rc, err)
    assert (tmp_path / "e.klm").is_file() and (tmp_path / "e8.klm").is_file()


def test_internal_error_is_one_line_and_debug_shows_it(monkeypatch: pytest.MonkeyPatch,
                                                       files: Files) -> None:
    """An unexpected exception: one line and exit 1, its traceback with KILOLEARN_DEBUG=1."""
    def boom(_a: argparse.Namespace) -> int:
        raise TypeError("boom")

    monkeypatch.setattr(cli, "cmd_info", boom)
    monkeypatch.delenv(ca.DEBUG_ENV, raising=False)
    rc, out, err = run_inprocess(["info", files.blob])
    assert rc == 1 and err.count("\n") == 1 and "internal error: TypeError: boom" in err
    assert ca.DEBUG_ENV in err and "Traceback" not in out + err
    monkeypatch.setenv(ca.DEBUG_ENV, "1")
    with pytest.raises(TypeError, match="boom"):
        run_inprocess(["info", files.blob])


class _SmallArenaDevice:
    """Enough of protocol.Client for a session's CONFIG on a device with a small arena: the
    model takes ``base`` bytes (measured on the host build with the Zephyr app's 20,480-byte
    arena), a replay buffer kl_replay_init's bytes on top; KL_ENOMEM past the arena."""

    def __init__(self, arena: int = 20480, base: int = 5820):
        from kilolearn.device import protocol

        self.arena, self.base, self.used = arena, base, 0
        self.last_info = protocol.Info(1, 2048, 1, False, 0xFF, 0, 0, 0xFFFF, 0, arena, 1 << 18)
        self.configs: list[int] = []

    def info(self):  # noqa: ANN201
        return self.last_info

    def load(self, blob: bytes) -> None:
        pass

    def config(self, replay_cap: int = 0, cut: int = 0xFFFF, **_k: object) -> None:
        from kilolearn.device import protocol, session

        used = self.base + (session.replay_bytes(replay_cap, 128, 10) if cut != 0xFFFF else 0)
        if used > self.arena:
            raise protocol.DeviceError(protocol.CONFIG, -12)
        self.used = used
        self.configs.append(replay_cap)

    def stats(self):  # noqa: ANN201
        from types import SimpleNamespace

        return SimpleNamespace(arena_used=self.used)


def test_replay_capacity_fits_the_device_arena(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15: the default replay capacity shrinks to what the device's arena holds (INFO's
    arena size, the model's share measured by STATS); an explicit --replay-cap that does not
    fit is one line saying what does, exit 2."""
    from kilolearn.core import data
    from kilolearn.device import session

    dev = _SmallArenaDevice()
    cap, note = session._fit_replay(dev, 200, {"cut": 1}, 128, 10, fit=True)
    assert cap == 112 and "using 112 latents" in note and "20,480-byte arena" in note
    assert dev.base + session.replay_bytes(112, 128, 10) <= dev.arena
    assert dev.base + session.replay_bytes(113, 128, 10) > dev.arena
    with pytest.raises(session.DoesNotFit, match="at most 112 latents fit"):
        session._fit_replay(_SmallArenaDevice(), 150, {"cut": 1}, 128, 10, fit=False)
    with pytest.raises(session.DoesNotFit, match="the model does not fit"):
        session._fit_replay(_SmallArenaDevice(base=30000), 150, {"cut": 1}, 128, 10, fit=True)

    @contextlib.contextmanager
    def fake_device(*_a: object, **_k: object) -> Iterator[_SmallArenaDevice]:
        yield _SmallArenaDevice()

    monkeypatch.setattr(session, "open_device", fake_device)
    ds = data.digits()
    monkeypatch.setattr(data, "load", lambda _name: ds)
    rc, _out, err = run_inprocess(["session", "--port", "socket://127.0.0.1:9", "--strategy",
                                   "replay", "--replay-cap", "150", "--no-reference"])
    assert rc == 2 and err.count("\n") == 1, err
    assert "replay capacity 150 latents" in err and "at most 112 latents fit" in err
