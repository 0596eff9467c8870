"""``kilolearn`` command line.

Every subcommand checks its arguments before it starts work (``cliargs``: numbers in range,
input files that exist and parse, output paths that can be written, what depends on the data
or the model). Exit status: 0 done; 2 a bad argument or input (a missing or unreadable file, a
file that is not what it should be, a number out of range, an unreachable or silent device, a
request the device refused), with one line ``kilolearn <command>: <what>`` on stderr; 1 the run
failed (a build, a job on the device) or an internal error, also one line (set
``KILOLEARN_DEBUG=1`` for the traceback); 3 ``footprint`` over a limit; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

from tabulate import tabulate

from . import cliargs as ca
from .cliargs import UsageError
from .core import data as datasets
from .core import model, reference, userdata
from .device import build
from .formats import export

BOARDS = ca.BOARDS
DATASETS = ["digits", "fashion"]
SESSION_DATA = list(datasets.LOADERS)  # what kilolearn session takes
CPU = ca.CPU


def _fmt_insn(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}"


def cmd_train(a: argparse.Namespace) -> int:
    from .device import train

    dtypes = list(train.DTYPES) if a.dtype == "both" else [a.dtype]
    if a.model == "cnn" and a.hidden < 4:
        raise UsageError(f"--hidden {a.hidden}: the CNN needs at least 4 (hidden/4 and hidden/2 "
                         "channels)")
    ds = datasets.load(a.data)
    desc = (f"MLP {ds.x_train.shape[1]}-{a.hidden}-{ds.n_classes}" if a.model == "mlp"
            else f"CNN ({a.hidden // 4}/{a.hidden // 2} channels)")
    print(f"kilolearn: {a.data} ({len(ds.y_train)} train / {len(ds.y_test)} test), {desc}, "
          f"SGD lr {a.lr}, batch 1, {a.epochs} epochs on {a.board} "
          f"({CPU.get(a.board, a.board)})", flush=True)
    results = []
    for dt in dtypes:
        print(f"  training {dt} on the device and in the numpy reference ...", flush=True)
        results.append(train.run(a.board, dt, epochs=a.epochs, lr=a.lr, seed=a.seed, ds=ds,
                                 model_name=a.model, hidden=a.hidden))
    print(train.table([r.as_dict() for r in results]))
    if a.json:
        Path(a.json).write_text(json.dumps([r.as_dict() for r in results], indent=2))
        print(f"results written to {a.json}")
    return 0


def cmd_session(a: argparse.Namespace) -> int:
    import json as _json

    from .device import session

    if a.plot:
        ca.need_matplotlib("--plot")
    given = {k: v for k, v in (("epochs", a.epochs), ("lr", a.lr)) if v is not None}
    sc = session.Scenario(**{**session.DATA_DEFAULTS.get(a.data, {}), **given},
                          replay_ratio=a.replay_ratio, seed=a.seed, update=a.update,
                          pretrain=None if a.pretrain == "none" else a.pretrain)
    if a.replay_in_flash is not None:
        sc.replay_cap, sc.replay_flash = a.replay_in_flash, True
    elif a.replay_cap is not None:
        sc.replay_cap = a.replay_cap
    else:  # the default: as many of the default latents as the device's arena holds
        sc.fit_replay = True
    ds = session.load_data(a.data)
    strategies = list(session.STRATEGIES) if a.strategy == "all" else [a.strategy]
    where = a.port or f"{a.board} ({CPU.get(a.board, a.board)})"
    print(f"kilolearn session: class-incremental {a.data}, {len(session.tasks_of(ds, 2))} tasks "
          f"x 2 classes, int8, {sc.epochs} epochs per task, latent replay {sc.replay_cap} latents "
          f"{'in flash ' if sc.replay_flash else ''}x ratio {a.replay_ratio}, on {where}",
          flush=True)
    if ds.x_pool is not None and sc.pretrain is not None:
        print(f"  backbone: a CNN pretrained on the host on {sc.pretraining.n:,} other "
              f"{a.data} images ({'every class' if sc.pretrain == 'all' else 'the first task'}"
              "), frozen; pretraining the first time takes a minute, then it is cached",
              flush=True)
    results = []
    with ca.open_device(a) as client:
        if a.bench_link:
            b = session.bench_link(client, a.bench_link)
            print(tabulate([[k, f"{v:,.2f}"] for k, v in b.items()], headers=["link", "value"],
                           disable_numparse=True))
            return 0
        info = client.info()
        print(f"  device: protocol v{info.version}, window {info.window}, arena "
              f"{info.arena_size:,} B, store {info.store_size:,} B", flush=True)
        for st in strategies:
            r = session.run(client, st, sc, ds, with_reference=not a.no_reference,
                            progress=(lambda msg: print("  " + msg, end="\r", flush=True))
                            if sys.stdout.isatty() else None,
                            note=lambda msg: print("  " + msg, flush=True))
            results.append(r)
            print(" " * 70, end="\r")
            print(f"\n{st}  ({r.seconds:.1f} s)")
            print(session.task_table(r.as_dict()))
    print("\nsummary after the last task (accuracy on all classes; mean of the per-task "
          "accuracies)")
    print(session.summary_table([r.as_dict() for r in results]))
    if a.json:
        Path(a.json).write_text(_json.dumps([r.as_dict() for r in results], indent=2))
        print(f"results written to {a.json}")
    if a.plot:
        session.plot(results, a.plot)
        print(f"plot written to {a.plot}")
    return 0


def cmd_stream(a: argparse.Namespace) -> int:
    import json as _json

    from .device import session, stream

    if not a.blob:
        raise UsageError("give --blob (the model to load; it also says how to encode the "
                         "samples)")
    if a.resume and not a.state:
        raise UsageError("--resume needs --state (the file recording progress)")
    blob = Path(a.blob).read_bytes()
    b = ca.read_blob(blob, f"--blob {a.blob}")
    n_in, n_classes = ca.io_sizes(b.graph)
    if n_classes < 2:
        raise UsageError(f"--blob {a.blob}: the model has {n_classes} output(s), a classifier "
                         "needs at least 2")
    try:
        x, y = stream.load_samples(a.data, a.split)
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise UsageError(f"--data {a.data}: {ca.one_line(str(e)) or type(e).__name__}") from None
    try:  # width and labels (the input scale is not checked here)
        userdata.check_for_model(x, y, n_in, n_classes, what=f"the model of --blob {a.blob}")
    except userdata.DataError as e:
        raise UsageError(f"--data {a.data}: {e}") from None
    state = Path(a.state) if a.state else None
    start = a.start
    if state is not None and state.is_file() and a.resume:
        start = _resume_point(state, len(x))
    if start >= len(x):
        raise UsageError(f"--start {start} is past the data: {a.data} has {len(x):,} samples "
                         f"(0..{len(x) - 1:,})")
    xs = stream.encode(x, blob)
    with ca.open_device(a) as client:
        if not a.resume or start == 0:
            client.load(blob)
        tty = sys.stdout.isatty()
        res = stream.stream(client, xs, y, a.mode, start, state,
                            (lambda i, n: print(f"  {i}/{n}", end="\r", flush=True))
                            if tty else None)
        raw = session.raw_rate(client, res.frame_bytes, 1000) if a.compare_raw else None
    rows = [["samples", res.sent], ["seconds", f"{res.seconds:.2f}"],
            ["frames/s", f"{res.frames_per_s:,.1f}"], ["bytes/s", f"{res.bytes_per_s:,.0f}"],
            ["frame bytes", res.frame_bytes], ["retransmitted", res.retransmissions]]
    if res.correct is not None:
        rows.append(["accuracy", f"{100 * res.correct / max(res.sent, 1):.2f} %"])
    if raw is not None:
        rows += [["raw link bytes/s", f"{raw:,.0f}"],
                 ["fraction of raw", f"{res.bytes_per_s / raw:.2f}"]]
    print(tabulate(rows, headers=["stream", "value"], disable_numparse=True))
    if a.json:
        d = res.as_dict() | ({"raw_bytes_per_s": raw} if raw else {})
        Path(a.json).write_text(_json.dumps(d, indent=2))
    return 0


def _resume_point(state: Path, n: int) -> int:
    """The next sample recorded in a --state file."""
    try:
        nxt = json.loads(state.read_text())["next"]
        if not isinstance(nxt, int) or isinstance(nxt, bool) or not 0 <= nxt <= n:
            raise ValueError(f"'next' must be a sample index from 0 to {n:,}, not {nxt!r}")
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise UsageError(f"--state {state}: not a progress file of kilolearn stream "
                         f"({ca.one_line(str(e)) or type(e).__name__})") from None
    if nxt == n:
        raise UsageError(f"--state {state}: every one of the {n:,} samples was sent already "
                         "(drop --resume to start again)")
    return nxt


def cmd_bench(a: argparse.Namespace) -> int:
    from .device import train

    ds = datasets.digits()
    rows, out = [], []
    for board in a.boards:
        for dt in train.DTYPES:
            r = train.run(board, dt, epochs=a.epochs, lr=0.05, ds=ds, with_reference=False,
                          profile=a.profile)
            out.append(r.as_dict())
            rows.append([board, CPU[board], dt, _fmt_insn(r.insn_first_epoch),
                         _fmt_insn(r.insn_per_train_sample), _fmt_insn(r.insn_per_inference),
                         f"{100 * r.device_acc[-1]:.2f} %", f"{r.arena_bytes:,}"]
                        + ([_fmt_insn(r.phases[p]) for p in train.PHASES] if r.phases else []))
    print(f"64-32-10 MLP on sklearn digits, SGD lr 0.05, batch 1, {a.epochs} epochs of 1,200 "
          "samples; QEMU -icount shift=0: retired instructions (one timer tick = 40, 50 on "
          "the an505, per timed region of one epoch)")
    print(tabulate(rows, headers=["board", "cpu", "dtype", "insn/sample epoch 1",
                                  f"insn/sample mean of {a.epochs}", "insn/inference",
                                  "test acc", "arena bytes"]
                   + ([f"{p} (profiled)" for p in train.PHASES] if a.profile else [])))
    if a.profile:
        print("profiled phases exclude the profiling hook's own instructions; the totals "
              "come from the same run and include them")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    return 0


def cmd_bench_kernels(a: argparse.Namespace) -> int:
    from .bench import kbench

    return kbench.main(a)


def cmd_export(a: argparse.Namespace) -> int:
    sizes = a.sizes
    if a.dtype == "s8" and sizes[0] != 64:
        raise UsageError(f"--sizes {'-'.join(map(str, sizes))}: int8 export calibrates on "
                         "digits, the input must have 64 features")
    m = model.mlp(sizes)
    p = m.init(a.seed)
    if a.dtype == "f32":
        blob = export.export_f32(m.graph, p, paged=a.paged)
    else:
        ds = datasets.digits()
        blob = export.export_s8(reference.quantize_model(m.graph, p, ds.x_train[:200]),
                                paged=a.paged)
    Path(a.output).write_bytes(blob)
    print(f"wrote {a.output}: {len(blob):,} bytes, {a.dtype}, layers "
          f"{'-'.join(map(str, sizes))}")
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    b = ca.read_blob(Path(a.blob).read_bytes(), a.blob)
    print(f"{a.blob}: kilolearn blob, format {export.VERSION[0]}.x, "
          f"{'float32' if b.dtype == export.DTYPE_F32 else 'int8'}")
    g = b.graph
    rows = [[i, op.kind, "x".join(map(str, g.shapes[op.inputs[0]])),
             "x".join(map(str, g.shapes[op.output])),
             f"{op.kernel[0]}x{op.kernel[1]}/{op.stride}" if op.kind not in ("dense", "add")
             else "-", op.act, op.trainable, g.macs(i)] for i, op in enumerate(g.ops)]
    print(tabulate(rows, headers=["op", "kind", "in", "out", "kernel/stride", "act",
                                  "trainable", "MACs"]))
    return 0


def cmd_build(a: argparse.Namespace) -> int:
    exe = build.build(a.board, sanitize=a.sanitize, quiet=False)
    print(exe)
    return 0


#: subcommands whose module brings both their arguments (``add_arguments(parser)``) and the
#: command (``run(args)``): name, module (relative to this package), help, in the help's order
MODULE_COMMANDS = [
    ("store-bench", ".bench.storebench", "flash wear of training with periodic commits and the "
     "lifetime on STM32F429ZI-like flash"),
    ("sparse-bench", ".bench.sparsebench", "selective updates: accuracy vs fraction updated, "
     "instructions saved, weight-store traffic and flash lifetime"),
    ("partial-bench", ".bench.partialbench", "Paissan's partial activations: arena, "
     "instructions and accuracy of a conv net at 75/50/25 %% of channels kept"),
    ("paged-bench", ".bench.pagedbench", "a 1.9 MB model trained in a 20 KB arena, weights in "
     "flash: accuracy, instructions, flash wear per fraction of rows updated"),
    ("anomaly", ".device.anomaly_cli", "on-device anomaly detection: an int8 autoencoder "
     "learns one BasicMotions class on the device; ROC AUC vs the host, threshold, cost"),
    ("optim-bench", ".bench.optimbench", "the digits MLP with SGD, Adam, momentum and "
     "mini-batches, float32 and int8: accuracy per epoch, epochs to SGD's accuracy"),
    ("link-bench", ".bench.linkbench", "session protocol rate at windows 1/2/4/8 against "
     "the raw link rate, TRAIN and EVAL frames (docs/protocol.md)"),
    ("footprint", ".footprint", "RAM/flash of a firmware ELF by component, file, symbol"),
    ("zephyr-run", ".device.zephyrrun", "the Zephyr app of a build directory in QEMU, its UART "
     "on a TCP socket, and a session against it (or --serve)"),
    ("fleet", ".fleet.cli", "a fleet of boards learning together on Flower (federated "
     "learning): accuracy per round, bytes per board, faults"),
    ("docs", ".tools.docfigs", "rewrite the measured figures of README.md and docs/*.md from "
     "docs/figures/*.json (--measure: rerun them first; --check: list the blocks that differ)"),
    ("fuzz", ".tools.fuzz", "coverage-guided fuzzing of the engine, the session and the store "
     "(libFuzzer; tests/fuzz/README.md)"),
]


def _module_command(sub: argparse._SubParsersAction, name: str, module: str, text: str) -> None:
    mod = importlib.import_module(module, __package__)
    p = sub.add_parser(name, help=text)
    mod.add_arguments(p)
    p.set_defaults(fn=mod.run)


def build_parser() -> argparse.ArgumentParser:
    """The ``kilolearn`` parser with every subcommand (its errors: one line, exit 2)."""
    ap = ca.Parser(prog="kilolearn", description="on-device training for MCUs. Your loop: "
                   "fit a model on your data (fit), adapt it on a board with new samples and "
                   "pull it back (adapt), evaluate it anywhere (eval); docs/user-guide.md",
                   epilog="exit status: 0 done, 2 bad arguments or input (one line on stderr), "
                   "1 the run failed or an internal error (KILOLEARN_DEBUG=1 shows the "
                   "traceback), 3 footprint over a limit, 130 interrupted")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    from . import cliloop

    cliloop.add_parsers(sub)  # the user's loop first: example-data, fit, adapt, eval, ...
    lr_help = "SGD learning rate, in (0, 10]"

    t = sub.add_parser("train", help="train a model on a board beside the numpy reference")
    t.add_argument("--board", default="mps2-an386", choices=BOARDS + ["host"])
    t.add_argument("--dtype", default="both", choices=["f32", "s8", "both"])
    t.add_argument("--data", default="digits", choices=DATASETS)
    t.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    t.add_argument("--hidden", type=ca.IntRange(1, 4096), default=32,
                   help="MLP hidden units; the CNN uses hidden/4 and hidden/2 channels")
    t.add_argument("--epochs", type=ca.EPOCHS, default=20)
    t.add_argument("--lr", type=ca.LR, default=0.05, help=lr_help)
    t.add_argument("--seed", type=ca.SEED, default=0)
    t.add_argument("--json", type=ca.OutFile(), help="write the results as JSON to this file")
    t.set_defaults(fn=cmd_train)

    s = sub.add_parser("session", help="a class-incremental continual-learning session on a "
                       "device (the main job)")
    ca.add_device_args(s)
    s.add_argument("--data", default="digits", choices=SESSION_DATA,
                   help="digits (8x8, a random frozen Dense backbone), fashion (Fashion-MNIST "
                   "28x28, a pretrained CNN backbone), basicmotions (smartwatch motion time "
                   "series from the aeon package, a random 1-D conv backbone)")
    s.add_argument("--pretrain", default="all", choices=["all", "first", "none"],
                   help="fashion: the CNN backbone pretrained on other images of every class "
                   "(all) or of the first task's classes only (first); none: the random Dense "
                   "backbone")
    s.add_argument("--strategy", default="all", choices=["all", "replay", "naive", "joint"])
    s.add_argument("--epochs", type=ca.EPOCHS, default=None,
                   help="epochs per task (default 3; basicmotions 10)")
    s.add_argument("--lr", type=ca.LR, default=None, help=lr_help + " (default 0.05; "
                   "basicmotions 0.01)")
    rc = s.add_mutually_exclusive_group()
    rc.add_argument("--replay-cap", type=ca.IntRange(1, 65535), default=None, metavar="N",
                    help="latents the replay buffer holds (default: 200, or as many as the "
                    "device's arena holds)")
    rc.add_argument("--replay-in-flash", type=ca.IntRange(1, 65534), default=None, metavar="N",
                    help="a replay buffer of N latents kept in the device's replay store "
                    "(flash) instead of its arena (docs/replay.md)")
    s.add_argument("--replay-ratio", type=ca.IntRange(0, 100), default=2)
    s.add_argument("--seed", type=ca.SEED, default=2)
    s.add_argument("--update", type=ca.UpdateSpec(), metavar="POLICY:FRACTION",
                   help="selective updates on the device (CONFIG), e.g. topr:0.2, "
                   "channel-norm:0.5, channel-sparse:0.5 (docs/selective-updates.md)")
    s.add_argument("--no-reference", action="store_true", help="skip the numpy twin")
    s.add_argument("--bench-link", type=ca.IntRange(0, 1_000_000), metavar="N", default=0,
                   help="instead: stream N TRAIN frames and compare with the raw link rate")
    s.add_argument("--json", type=ca.OutFile(), help="write the results as JSON to this file")
    s.add_argument("--plot", type=ca.OutFile(ca.PLOT_SUFFIXES),
                   help="write a plot of accuracy over tasks to this .png/.pdf/.svg file")
    s.set_defaults(fn=cmd_session)

    st = sub.add_parser("stream", help="send a data set to a board as TRAIN/EVAL frames")
    ca.add_device_args(st)
    st.add_argument("--blob", type=ca.InFile("blob"),
                    help="model to LOAD first (also gives the input encoding)")
    st.add_argument("--data", default="digits", type=ca.DataSource(DATASETS),
                    help="built-in name, .npz (x, y), .npy or .csv (label first)")
    st.add_argument("--split", default="train", choices=["train", "test"])
    st.add_argument("--mode", default="train", choices=["train", "eval"])
    st.add_argument("--start", type=ca.IntRange(0, 1 << 31), default=0,
                    help="first sample to send")
    st.add_argument("--state", type=ca.OutFile(),
                    help="file recording progress (with --resume: continue there)")
    st.add_argument("--resume", action="store_true")
    st.add_argument("--compare-raw", action="store_true",
                    help="also measure the raw link rate with back-to-back frames")
    st.add_argument("--json", type=ca.OutFile())
    st.set_defaults(fn=cmd_stream)

    b = sub.add_parser("bench", help="instructions per training sample on emulated boards")
    b.add_argument("--boards", nargs="+", default=BOARDS[:4], choices=BOARDS,
                   help="default: the mps2 boards")
    b.add_argument("--epochs", type=ca.EPOCHS, default=20)
    b.add_argument("--profile", action="store_true",
                   help="also split each step into forward / loss / backward / update")
    b.add_argument("--json", type=ca.OutFile())
    b.set_defaults(fn=cmd_bench)

    k = sub.add_parser("bench-kernels", help="int8 kernels: instructions per MAC, ref vs dsp")
    from .bench import kbench

    kbench.add_arguments(k)
    k.set_defaults(fn=cmd_bench_kernels)

    e = sub.add_parser("export", help="export a freshly initialised MLP to a .klm blob")
    e.add_argument("output", type=ca.OutFile())
    e.add_argument("--sizes", default=[64, 32, 10], type=ca.Sizes(),
                   help="layer sizes, input to classes (default 64-32-10)")
    e.add_argument("--dtype", default="f32", choices=["f32", "s8"])
    e.add_argument("--seed", type=ca.SEED, default=0)
    e.add_argument("--paged", action="store_true",
                   help="weights stay in flash, updated rows go to a weight log "
                   "(docs/paged-weights.md)")
    e.set_defaults(fn=cmd_export)

    i = sub.add_parser("info", help="check a .klm blob and list its layers")
    i.add_argument("blob", type=ca.InFile("blob"))
    i.set_defaults(fn=cmd_info)

    _module_command(sub, "import", ".formats.importer",
                    "import an ONNX or TFLite model as a .klm blob")

    c = sub.add_parser("build", help="build the runner for the host or a board")
    c.add_argument("--board", default="host", choices=BOARDS + ["host"])
    c.add_argument("--sanitize", action="store_true")
    c.set_defaults(fn=cmd_build)

    for name, module, text in MODULE_COMMANDS:
        _module_command(sub, name, module, text)

    from .planner import add_cli as add_plan_cli

    add_plan_cli(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    prog = f"kilolearn {a.cmd}"
    try:
        return a.fn(a)
    except BrokenPipeError:  # stdout closed early (| head): nothing left to say
        try:
            sys.stdout = open(os.devnull, "w")  # no flush error at exit
        except OSError:
            pass
        return 1
    except (Exception, KeyboardInterrupt) as err:  # one line, never a traceback
        if ca.debug() and not isinstance(err, UsageError | KeyboardInterrupt):
            raise
        return ca.report(prog, err)


if __name__ == "__main__":
    sys.exit(main())
