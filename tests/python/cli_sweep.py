"""The sweep of test_cli_errors.py: bad calls of every ``kilolearn`` subcommand derived from
the parser (each value argument by the kind of its type in ``kilolearn.cliargs``, or its
choices) and the bad combinations no single type can see; the good and bad input files they
name; the trap that stops real work in-process; running a call in-process or as a subprocess
and what its refusal must look like; loopback TCP devices that never answer, hang up or talk
nonsense."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from kilolearn import cli
from kilolearn import cliargs as ca
from kilolearn.core import model as M
from kilolearn.formats import export

#: value-taking arguments without a checked type; each is checked by its command (footprint
#: reports every bad ELF, board and group itself) and still gets bad values below
UNTYPED = {("footprint", "elf"), ("footprint", "--diff"), ("footprint", "--board"),
           ("footprint", "--callout"), ("footprint", "--group"),
           # the build directory is checked by zephyr-run itself (is it a Zephyr build?), the
           # session's arguments by `kilolearn session`
           ("zephyr-run", "build_dir"), ("zephyr-run", "session_args")}
SUBPROCESS_TIMEOUT = 30.0
WORKERS = 4


@dataclass
class Case:
    argv: list[str]
    names: list[str] = field(default_factory=list)  # one of these must be in the message
    kind: str = ""  # what is wrong
    group: str = ""  # the subprocess sample takes one case per subcommand and group

    def __str__(self) -> str:
        return "kilolearn " + " ".join(repr(a) if not a or " " in a else a for a in self.argv)


# ---------------------------------------------------------------------------- inputs


@dataclass
class Files:
    tmp: Path
    blob: str  # a good float32 64-32-10 blob
    blob_s8: str
    onnx: str | None  # a good float ONNX model (None without the onnx package)
    bad: dict[str, str]  # name -> path of a bad input


def _onnx_model(path: Path, n_out: int) -> None:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (n_out, 8)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(n_out, np.float32), "b")
    m = helper.make_model(helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1, name="fc")], "fc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n_out])], [w, b]),
        opset_imports=[helper.make_opsetid("", 13)])
    path.write_bytes(m.SerializeToString())


def make_files(tmp: Path) -> Files:
    """Good blobs (float32, int8) and a good ONNX model in ``tmp``, and the bad inputs the
    sweep names: random bytes, empty, truncated and flipped files, bad data sets, directories
    with a file's name."""
    rng = np.random.default_rng(15)
    good = export.export_f32(M.mlp([64, 32, 10]).graph, M.mlp([64, 32, 10]).init(0))
    (tmp / "good.klm").write_bytes(good)
    from kilolearn.core import data, reference

    m = M.mlp([64, 32, 10])
    qm = reference.quantize_model(m.graph, m.init(0), data.digits().x_train[:200])
    (tmp / "good8.klm").write_bytes(export.export_s8(qm))
    one = M.mlp([64, 8, 1])
    bad: dict[str, Path] = {}

    def put(name: str, content: bytes) -> None:
        bad[name] = tmp / name
        bad[name].write_bytes(content)

    noise = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    for suffix in ("klm", "onnx", "tflite", "npz", "npy", "csv", "elf", "json"):
        put(f"random.{suffix}", noise)
        put(f"empty.{suffix}", b"")
    put("tfl3.tflite", noise[:4] + b"TFL3" + noise[8:])  # the identifier, then garbage
    put("truncated.klm", good[:len(good) // 2])
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x5A
    put("flipped.klm", bytes(flipped))
    put("oneclass.klm", export.export_f32(one.graph, one.init(0)))
    put("notes.txt", b"not a model\n")
    put("state.json", b'{"next": "soon"}')
    put("state-past.json", b'{"next": 100000}')

    def npz(name: str, **arrays: np.ndarray) -> None:
        bad[name] = tmp / name
        np.savez(bad[name], **arrays)

    npz("small.npz", x=rng.uniform(0, 1, (20, 64)), y=np.arange(20) % 10)  # good
    npz("width.npz", x=np.zeros((5, 3)), y=np.arange(5))
    npz("labels.npz", x=np.zeros((5, 64)), y=np.arange(5) * 10)
    npz("nan.npz", x=np.full((5, 64), np.nan), y=np.arange(5))
    npz("nokeys.npz", a=np.zeros(3))
    npz("count.npz", x=np.zeros((5, 64)), y=np.arange(4))
    npz("manyclasses.npz", x=np.zeros((3, 64)), y=np.array([0, 1, 300]))
    bad["calib.npy"] = tmp / "calib.npy"
    np.save(bad["calib.npy"], np.zeros((4, 5), np.float32))
    for suffix in ("klm", "onnx", "tflite", "npz", "npy", "csv", "elf", "json", "png"):
        bad[f"dir.{suffix}"] = tmp / f"dir.{suffix}"  # a directory with a file's name
        bad[f"dir.{suffix}"].mkdir()
    onnx_path = None
    try:
        _onnx_model(tmp / "good.onnx", 3)
        _onnx_model(tmp / "oneclass.onnx", 1)
        bad["oneclass.onnx"] = tmp / "oneclass.onnx"
        onnx_path = str(tmp / "good.onnx")
    except ImportError:
        pass
    return Files(tmp, str(tmp / "good.klm"), str(tmp / "good8.klm"), onnx_path,
                 {k: str(v) for k, v in bad.items()})


# ---------------------------------------------------------------------------- the parser


def subcommands() -> dict[str, argparse.ArgumentParser]:
    ap = cli.build_parser()
    act = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    return dict(act.choices)


def value_actions(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in p._actions if a.nargs != 0 and not isinstance(a, argparse._HelpAction)]


def name_of(a: argparse.Action) -> str:
    return a.option_strings[-1] if a.option_strings else a.dest


def kind_of(a: argparse.Action) -> str | None:
    if a.choices is not None and a.type is None:
        return "choices"
    return getattr(a.type, "kind", None)


def baseline(cmd: str, f: Files) -> dict[str, list[str]]:
    """What each subcommand needs besides the argument under test (by argument name): the
    required arguments, and for commands whose inputs are checked against a model, a good
    model, so that the bad argument is what fails."""
    base: dict[str, dict[str, list[str]]] = {
        "export": {"output": [str(f.tmp / "out.klm")]},
        "info": {"blob": [f.blob]},
        "import": {"model": [f.onnx or f.bad["random.onnx"]],
                   "--output": ["--output", str(f.tmp / "imported.klm")],
                   "--dtype": ["--dtype", "s8"]},  # uses --calib
        "plan": {"--budget": ["--budget=256K"]},
        "stream": {"--blob": ["--blob", f.blob], "--data": ["--data", f.bad["small.npz"]]},
        "fit": {"data": [f.bad["small.npz"]], "--output": ["-o", str(f.tmp / "fit.klm")]},
        "adapt": {"blob": [f.blob_s8], "--data": ["--data", f.bad["small.npz"]]},
        "eval": {"blob": [f.blob_s8], "--data": ["--data", f.bad["small.npz"]]},
        "deploy": {"blob": [f.blob]},
        "pull": {"--output": ["-o", str(f.tmp / "pulled.klm")]},
        "example-data": {"dir": [str(f.tmp / "example")]},
        "footprint": {"elf": [str(Path(sys.executable).resolve())]},  # an ELF file
    }
    return base.get(cmd, {})


def _argv(cmd: str, f: Files, name: str, values: list[str], opt: bool) -> list[str]:
    rest = [t for k, v in baseline(cmd, f).items() if k != name for t in v]
    if opt:
        return [cmd, *rest, *(f"{name}={v}" for v in values)]
    return [cmd, *rest, *values]


def bad_values(a: argparse.Action, f: Files) -> list[tuple[str, str]]:
    """(value, kind) pairs that must be refused."""
    t, kind = a.type, kind_of(a)
    big = "1" + "0" * 40
    if kind == "int":
        return [(str(t.lo - 1), "below the range"), (str(t.hi + 1), "above the range"),
                (big, "huge"), ("abc", "garbage"), ("1.5", "not an integer"), ("", "empty")]
    if kind == "float":
        low = t.lo if t.lo_open else t.lo - 1
        return [(f"{low:g}", "at/below the range"), (f"{t.hi * 10 + 1:g}", "above the range"),
                ("nan", "nan"), ("-inf", "infinite"), ("1e999", "overflow"),
                ("x1", "garbage"), ("", "empty")]
    if kind in ("in", "data", "traindata"):
        sfx = (t.suffixes[0] if kind == "in" and t.suffixes else ".npz" if kind != "in"
               else ".klm")
        out = [(str(f.tmp / f"missing{sfx}"), "missing file"),
               (str(f.tmp / "no-dir" / f"x{sfx}"), "missing directory"),
               (str(f.tmp), "a directory"), (f.bad[f"dir{sfx}"], "a directory"),
               ("", "empty name")]
        if kind == "in" and t.suffixes:
            out.append((f.bad["notes.txt"], "wrong suffix"))
        if kind in ("data", "traindata"):
            out += [("no-such-set", "unknown name"), (f.bad["random.npz"], "random bytes"),
                    (f.bad["random.csv"], "random bytes"), (f.bad["empty.csv"], "empty"),
                    (f.bad["random.npy"], "random bytes"), (f.bad["empty.npy"], "empty"),
                    (f.bad["nan.npz"], "NaN"), (f.bad["nokeys.npz"], "no x, y"),
                    (f.bad["count.npz"], "x/y count")]
            if kind == "data":  # checked against the command's model
                out += [(f.bad["width.npz"], "wrong width"),
                        (f.bad["labels.npz"], "bad labels")]
        elif sfx == ".klm" or not t.suffixes:
            out += [(f.bad[n], n) for n in ("random.klm", "empty.klm", "truncated.klm",
                                            "flipped.klm")]
        else:
            for s in t.suffixes:
                out += [(f.bad[f"random{s}"], f"random bytes {s}"),
                        (f.bad[f"empty{s}"], f"empty {s}")]
                if s == ".tflite":
                    out.append((f.bad["tfl3.tflite"], "garbage with the identifier"))
        return out
    if kind == "out":
        out = [(str(f.tmp / "no-dir" / "out.json"), "missing directory"),
               (str(f.tmp), "a directory"), (f.bad["dir.png"], "a directory"),
               (f.blob + "/out.json", "under a file"), ("", "empty name")]
        if t.suffixes:
            out.append((str(f.tmp / "plot.txt"), "wrong suffix"))
        return out
    if kind == "dir":
        return [(str(f.tmp / "missing-dir"), "missing directory"), (f.blob, "a file"),
                ("", "empty name")]
    if kind == "outdir":
        return [(str(f.tmp / "no-dir" / "sub"), "missing parent"), (f.blob, "a file"),
                ("", "empty name")]
    if kind == "trains":
        return [("last:0", "zero layers"), ("first:2", "unknown"), ("last:x", "garbage"),
                ("last:2:weights", "unknown part"), ("", "empty")]
    if kind == "sizes":
        return [("64", "one size"), ("64-0-10", "zero"), ("64-100000-10", "too large"),
                ("a-b", "garbage"), ("64--10", "negative"), ("64-32-1", "one class"),
                ("4096-4096-4096-10", "too many weights"), ("", "empty")]
    if kind == "budget":
        return [("0", "zero"), ("-5", "negative"), ("lots", "garbage"), ("1e999K", "overflow"),
                ("99999999999", "above 4 GiB"), ("", "empty")]
    if kind == "port":
        return [("", "empty"), ("bogus://x", "unknown scheme")]  # real ports: subprocesses
    if kind == "update":
        return [("nope:0.5", "unknown policy"), ("topr:0", "zero"), ("topr:2", "above 1"),
                ("topr:x", "garbage"), ("topr:nan", "nan"), ("", "empty")]
    if kind == "size":
        return [("lots", "garbage"), ("-5", "negative"), ("5G", "above 4 GiB"),
                ("9" * 400, "overflow")]
    if kind == "choices":
        return [("no-such-choice", "not a choice")]
    if kind is None and a.option_strings and a.dest == "board":  # footprint --board
        return [("no-such-board", "unknown board")]
    if kind is None and a.dest == "group":
        return [("no-equals-sign", "not GLOB=COMPONENT")]
    if kind is None and a.dest in ("elf", "diff"):
        return [(str(f.tmp / "missing.elf"), "missing file"), (str(f.tmp), "a directory"),
                (f.bad["random.elf"], "random bytes"), (f.bad["empty.elf"], "empty")]
    return []


def sweep(f: Files) -> list[Case]:
    """Bad calls of every subcommand, derived from the parser."""
    cases: list[Case] = [Case([], ["COMMAND"], "no command", "parse"),
                         Case(["no-such-command"], ["no-such-command"], "unknown command",
                              "parse")]
    for cmd, p in subcommands().items():
        rest = [t for v in baseline(cmd, f).values() for t in v]
        cases.append(Case([cmd, *rest, "--no-such-option"], ["--no-such-option"],
                          "unknown option", "parse"))
        cases.append(Case([cmd, *rest, "--epochs", "1", "extra"], ["extra", "--epochs"],
                          "stray argument", "parse"))
        for a in value_actions(p):
            name, opt = name_of(a), bool(a.option_strings)
            for value, what in bad_values(a, f):
                if value.startswith("-") and not opt:
                    continue
                names = [name, a.dest] + ([value] if value else [])
                cases.append(Case(_argv(cmd, f, name, [value], opt), names, what,
                                  kind_of(a) or "untyped"))
            if opt:  # the option without its value
                cases.append(Case([cmd, *(t for k, v in baseline(cmd, f).items() if k != name
                                          for t in v), name], [name], "missing value", "parse"))
    return cases


def semantic(f: Files) -> list[Case]:
    """Bad combinations and inputs that no single argument's type can see."""
    b, small = f.blob, ["--data", f.bad["small.npz"]]
    out = [
        Case(["train", "--model", "cnn", "--hidden", "3"], ["--hidden"], "too few channels"),
        Case(["export", str(f.tmp / "o.klm"), "--dtype", "s8", "--sizes", "32-10"],
             ["--sizes"], "int8 needs 64 inputs"),
        Case(["stream", "--board", "host"], ["--blob"], "no blob"),
        Case(["stream", "--blob", b, *small, "--start", "20"], ["--start"], "start past data"),
        Case(["stream", "--blob", b, *small, "--start", "99999999"], ["--start"],
             "start far past data"),
        Case(["stream", "--blob", b, "--split", "test", "--start", "597"], ["--start"],
             "start past test data"),
        Case(["stream", "--blob", b, *small, "--resume"], ["--resume"],
             "resume without state"),
        Case(["stream", "--blob", b, *small, "--resume", "--state", f.bad["state.json"]],
             ["--state"], "bad state"),
        Case(["stream", "--blob", b, *small, "--resume", "--state", f.bad["random.json"]],
             ["--state"], "random state"),
        Case(["stream", "--blob", b, *small, "--resume", "--state", f.bad["state-past.json"]],
             ["--state"], "state past data"),
        Case(["stream", "--blob", f.bad["oneclass.klm"], *small], ["--blob"],
             "one-class model"),
        Case(["plan", "--budget", "256K", "--reserve", "262144"], ["--reserve"],
             "reserve takes all"),
        Case(["plan", "--budget", "256K", "--write", str(f.tmp / "w.klm")], ["--write"],
             "write without blob"),
        Case(["plan", "--budget", "256K", "--dtype", "f32", "--measure", "host"],
             ["--measure"], "measure f32"),
        Case(["plan", "--budget", "256K", "--blob", b, "--measure", "host"], ["--measure"],
             "measure f32 blob"),
        Case(["store-bench", "--every", "100000", "--commits", "100000"], ["--every"],
             "too many steps"),
        Case(["footprint"], ["ELF"], "no ELF"),
        Case(["fit", f.bad["manyclasses.npz"], "-o", str(f.tmp / "f.klm")], ["256"],
             "more classes than a session holds"),
        Case(["fit", f.bad["width.npz"], "-o", str(f.tmp / "f.klm"), "--model", "cnn"],
             ["square"], "CNN of non-square samples"),
        Case(["fit", f.bad["small.npz"], "-o", str(f.tmp / "f.klm"), "--test",
              f.bad["width.npz"]], ["--test"], "test data of another width"),
        Case(["fit", f.bad["small.npz"], "-o", str(f.tmp / "f.klm"), "--init", f.blob_s8,
              "--test", f.bad["labels.npz"]], ["--test"], "test labels past the blob's"),
        Case(["adapt", f.blob_s8, *small, "--samples", "10", "21"], ["--samples"],
             "more samples than the data"),
        Case(["adapt", f.blob_s8, *small, "--trains", "none"], ["trains"], "nothing trains"),
        Case(["adapt", f.bad["oneclass.klm"], *small], ["labels", "class"],
             "labels past a one-class model"),
        Case(["example-data", str(f.tmp / "ex"), "--adapt-samples", "5000"],
             ["--adapt-samples"], "more adaptation samples than the data"),
    ]
    if f.onnx:
        o = ["-o", str(f.tmp / "i.klm")]
        out += [
            Case(["import", f.bad["oneclass.onnx"], *o], ["oneclass.onnx"], "one-class model"),
            Case(["import", f.onnx, *o, "--dtype", "s8", "--calib", f.bad["calib.npy"]],
                 ["--calib"], "calibration of the wrong width"),
            Case(["import", f.onnx, *o, "--dtype", "s8", "--calib", f.bad["random.npy"]],
                 ["--calib"], "random calibration"),
            Case(["import", f.onnx, *o, "--calib", f.bad["calib.npy"]], ["--calib"],
                 "calibration not used"),
        ]
    for i, c in enumerate(out):
        c.group = f"semantic {i}"
    return out


# ---------------------------------------------------------------------------- running


class WorkStarted(BaseException):  # noqa: N818 - not an error the CLI may swallow
    pass


def trap_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every entry point of real work raises WorkStarted (a BaseException: the CLI's guard
    does not catch it), so a bad call that gets past the checks fails the test."""
    from kilolearn import planner
    from kilolearn.bench import kbench
    from kilolearn.core import fit
    from kilolearn.device import adapt, build, qemu, runner, session, train
    from kilolearn.formats import importer

    def trap(what: str):  # noqa: ANN202
        def f(*_a: object, **_k: object) -> None:
            raise WorkStarted(what)
        return f

    for mod, attr in ((build, "build"), (runner, "run_job"), (session, "open_device"),
                      (qemu, "run_firmware"), (kbench, "run"), (train, "run"),
                      (planner, "MemModel"), (export, "export_f32"), (export, "export_s8"),
                      (importer, "quantize_model"), (fit, "fit_new"), (fit, "fit_blob"),
                      (adapt, "run")):
        monkeypatch.setattr(mod, attr, trap(f"{mod.__name__}.{attr}"), raising=False)


def run_inprocess(argv: list[str]) -> tuple[int | str | None, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc: int | str | None = cli.main(argv)
        except SystemExit as e:
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def kilolearn_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("kilolearn")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "kilolearn.cli"]


def run_subprocess(argv: list[str], env: dict[str, str]) -> tuple[int | str, str, str, float]:
    t0 = time.monotonic()
    try:
        r = subprocess.run(kilolearn_cmd() + argv, capture_output=True, text=True, env=env,
                           timeout=SUBPROCESS_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        return "timeout", str(e.stdout or ""), str(e.stderr or ""), SUBPROCESS_TIMEOUT
    return r.returncode, r.stdout, r.stderr, time.monotonic() - t0


def problems(c: Case, rc: object, out: str, err: str) -> str | None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    why = []
    if rc != 2:
        why.append(f"exit {rc}")
    if len(lines) != 1 or not err.endswith("\n"):
        why.append(f"{len(lines)} stderr lines")
    if "Traceback" in out + err:
        why.append("a traceback")
    if lines and not lines[0].startswith("kilolearn"):
        why.append("no 'kilolearn ...:' prefix")
    if c.names and lines and not any(n and n in lines[0] for n in c.names):
        why.append(f"does not name {c.names[0]!r}")
    if not why:
        return None
    return f"{c} ({c.kind}): {', '.join(why)}: {err.strip()[-400:]!r}"


def env_for(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(ca.DEBUG_ENV, None)
    env["KILOLEARN_BUILD_DIR"] = str(tmp / "build-must-stay-empty")  # a slip builds here
    env["MPLBACKEND"] = "Agg"
    return env


# ---------------------------------------------------------------------------- loopback devices


@contextlib.contextmanager
def tcp_device(behaviour: str) -> Iterator[str]:
    """A loopback TCP 'device': 'silent' accepts and never answers, 'hangup' closes every
    connection at once, 'chatter' answers every read with bytes that are no frame."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.1)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            if behaviour == "hangup":
                c.close()
                continue
            conns.append(c)
            if behaviour == "chatter":
                threading.Thread(target=chatter, args=(c,), daemon=True).start()

    def chatter(c: socket.socket) -> None:
        c.settimeout(0.1)
        while not stop.is_set():
            try:
                if c.recv(4096) == b"":
                    return
                c.sendall(b"hello\0\x01\x02\x03\0")
            except TimeoutError:
                continue
            except OSError:
                return

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield f"socket://127.0.0.1:{srv.getsockname()[1]}"
    finally:
        stop.set()
        t.join(2)
        for c in conns:
            c.close()
        srv.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there
