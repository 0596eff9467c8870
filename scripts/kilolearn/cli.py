"""``kilolearn`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tabulate import tabulate

from . import build, export, model, reference
from . import data as datasets

BOARDS = ["mps2-an385", "mps2-an386", "mps2-an500", "mps2-an505"]
CPU = {"mps2-an385": "Cortex-M3", "mps2-an386": "Cortex-M4F", "mps2-an500": "Cortex-M7",
       "mps2-an505": "Cortex-M33", "host": "host"}


def _fmt_insn(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}"


def cmd_train(a: argparse.Namespace) -> int:
    from . import train

    dtypes = list(train.DTYPES) if a.dtype == "both" else [a.dtype]
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
    rows = [[r.dtype, f"{100 * r.device_acc[-1]:.2f} %", f"{100 * r.reference_acc:.2f} %",
             _fmt_insn(r.insn_per_train_sample), _fmt_insn(r.insn_per_inference),
             f"{r.arena_bytes:,}", f"{r.blob_bytes:,}"] for r in results]
    print(tabulate(rows, headers=["dtype", "device test acc", "numpy reference",
                                  "insn/train sample", "insn/inference", "arena bytes",
                                  "blob bytes"]))
    if a.json:
        Path(a.json).write_text(json.dumps([r.as_dict() for r in results], indent=2))
        print(f"results written to {a.json}")
    return 0


def cmd_session(a: argparse.Namespace) -> int:
    import json as _json

    from . import session

    update = None
    if a.update:
        name, _, frac = a.update.partition(":")
        update = (name, float(frac or 1.0))
    sc = session.Scenario(epochs=a.epochs, lr=a.lr, replay_cap=a.replay_cap,
                          replay_ratio=a.replay_ratio, seed=a.seed, update=update)
    ds = datasets.load(a.data)
    strategies = list(session.STRATEGIES) if a.strategy == "all" else [a.strategy]
    where = a.port or f"{a.board} ({CPU.get(a.board, a.board)})"
    print(f"kilolearn session: class-incremental {a.data}, {len(session.tasks_of(ds, 2))} tasks "
          f"x 2 classes, int8, {a.epochs} epochs per task, latent replay {a.replay_cap} latents "
          f"x ratio {a.replay_ratio}, on {where}", flush=True)
    results = []
    with session.open_device(a.board, a.port) as client:
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
                            if sys.stdout.isatty() else None)
            results.append(r)
            print(" " * 70, end="\r")
            rows = []
            for t, accs in enumerate(r.task_acc):
                s = r.stats[t]
                rows.append([t + 1, f"{100 * r.acc_after_task[t]:.1f}",
                             f"{100 * r.reference_acc_after_task[t]:.1f}"
                             if r.reference_acc_after_task else "-",
                             " ".join(f"{100 * v:.0f}" for v in accs),
                             f"{s['train_steps'] + s['replay_steps']:,}",
                             f"{s['train_insn'] / max(s['train_steps'], 1):,.0f}"
                             if s["train_insn"] else "n/a",
                             f"{s['arena_peak']:,}", s["replay_count"],
                             f"{s['store_bytes_written']:,}"])
            print(f"\n{st}  ({r.seconds:.1f} s)")
            print(tabulate(rows, headers=["task", "acc seen %", "numpy %", "per-task acc %",
                                          "steps", "insn/new sample", "arena peak",
                                          "replay", "store bytes"]))
    print("\nsummary after the last task (accuracy on all classes; mean of the per-task "
          "accuracies)")
    print(tabulate([[r.strategy, f"{100 * r.acc_after_task[-1]:.2f} %",
                     f"{100 * r.reference_acc_after_task[-1]:.2f} %"
                     if r.reference_acc_after_task else "-",
                     f"{100 * float(np.mean(r.task_acc[-1])):.2f} %"] for r in results],
                   headers=["strategy", "device", "numpy reference", "average task accuracy"]))
    if a.json:
        Path(a.json).write_text(_json.dumps([r.as_dict() for r in results], indent=2))
        print(f"results written to {a.json}")
    if a.plot:
        session.plot(results, a.plot)
        print(f"plot written to {a.plot}")
    return 0


def cmd_stream(a: argparse.Namespace) -> int:
    import json as _json

    from . import session, stream

    x, y = stream.load_samples(a.data, a.split)
    state = Path(a.state) if a.state else None
    start = a.start
    if state is not None and state.is_file() and a.resume:
        start = int(_json.loads(state.read_text())["next"])
    if not a.blob:
        print("kilolearn stream: give --blob (the model to load; it also says how to "
              "encode the samples)", file=sys.stderr)
        return 2
    with session.open_device(a.board, a.port) as client:
        blob = Path(a.blob).read_bytes()
        if not a.resume or start == 0:
            client.load(blob)
        xs = stream.encode(x, blob)
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


def cmd_bench(a: argparse.Namespace) -> int:
    from . import train

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
    from . import kbench

    return kbench.main(a)


def cmd_export(a: argparse.Namespace) -> int:
    sizes = [int(s) for s in a.sizes.split("-")]
    m = model.mlp(sizes)
    p = m.init(a.seed)
    if a.dtype == "f32":
        blob = export.export_f32(m.graph, p)
    else:
        ds = datasets.digits()
        if ds.x_train.shape[1] != sizes[0]:
            print("int8 export calibrates on digits: the input must have 64 features",
                  file=sys.stderr)
            return 2
        blob = export.export_s8(reference.quantize_model(m.graph, p, ds.x_train[:200]))
    Path(a.output).write_bytes(blob)
    print(f"wrote {a.output}: {len(blob):,} bytes, {a.dtype}, layers {a.sizes}")
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    try:
        b = export.read(Path(a.blob).read_bytes())
    except export.BlobError as e:
        print(f"{a.blob}: {e}", file=sys.stderr)
        return 1
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


def cmd_footprint(a: argparse.Namespace) -> int:
    from . import footprint

    return footprint.run(a)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kilolearn", description="on-device training for MCUs")
    sub = ap.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train a model on a board beside the numpy reference")
    t.add_argument("--board", default="mps2-an386", choices=BOARDS + ["host"])
    t.add_argument("--dtype", default="both", choices=["f32", "s8", "both"])
    t.add_argument("--data", default="digits")
    t.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    t.add_argument("--hidden", type=int, default=32,
                   help="MLP hidden units; the CNN uses hidden/4 and hidden/2 channels")
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--json", help="write the results as JSON to this file")
    t.set_defaults(fn=cmd_train)

    s = sub.add_parser("session", help="a class-incremental continual-learning session on a "
                       "device (the main job)")
    s.add_argument("--board", default="mps2-an386", choices=BOARDS + ["host", "host-pty"],
                   help="emulated board started here (default) or the host build")
    s.add_argument("--port", help="pyserial URL of a real board instead: /dev/ttyACM0, "
                   "socket://host:port")
    s.add_argument("--data", default="digits")
    s.add_argument("--strategy", default="all", choices=["all", "replay", "naive", "joint"])
    s.add_argument("--epochs", type=int, default=3)
    s.add_argument("--lr", type=float, default=0.05)
    s.add_argument("--replay-cap", type=int, default=200)
    s.add_argument("--replay-ratio", type=int, default=2)
    s.add_argument("--seed", type=int, default=2)
    s.add_argument("--update", metavar="POLICY:FRACTION",
                   help="selective updates on the device (CONFIG), e.g. topr:0.2, "
                   "channel-norm:0.5, channel-sparse:0.5 (docs/selective-updates.md)")
    s.add_argument("--no-reference", action="store_true", help="skip the numpy twin")
    s.add_argument("--bench-link", type=int, metavar="N", default=0,
                   help="instead: stream N TRAIN frames and compare with the raw link rate")
    s.add_argument("--json", help="write the results as JSON to this file")
    s.add_argument("--plot", help="write a PNG of accuracy over tasks to this file")
    s.set_defaults(fn=cmd_session)

    st = sub.add_parser("stream", help="send a data set to a board as TRAIN/EVAL frames")
    st.add_argument("--board", default="mps2-an386", choices=BOARDS + ["host", "host-pty"])
    st.add_argument("--port", help="pyserial URL of a real board instead")
    st.add_argument("--blob", help="model to LOAD first (also gives the input encoding)")
    st.add_argument("--data", default="digits", help="built-in name, .npz (x, y) or .csv")
    st.add_argument("--split", default="train", choices=["train", "test"])
    st.add_argument("--mode", default="train", choices=["train", "eval"])
    st.add_argument("--start", type=int, default=0, help="first sample to send")
    st.add_argument("--state", help="file recording progress (with --resume: continue there)")
    st.add_argument("--resume", action="store_true")
    st.add_argument("--compare-raw", action="store_true",
                    help="also measure the raw link rate with back-to-back frames")
    st.add_argument("--json")
    st.set_defaults(fn=cmd_stream)

    b = sub.add_parser("bench", help="instructions per training sample on emulated boards")
    b.add_argument("--boards", nargs="+", default=BOARDS, choices=BOARDS)
    b.add_argument("--epochs", type=int, default=20)
    b.add_argument("--profile", action="store_true",
                   help="also split each step into forward / loss / backward / update")
    b.add_argument("--json")
    b.set_defaults(fn=cmd_bench)

    k = sub.add_parser("bench-kernels", help="int8 kernels: instructions per MAC, ref vs dsp")
    from . import kbench

    kbench.add_arguments(k)
    k.set_defaults(fn=cmd_bench_kernels)

    e = sub.add_parser("export", help="export a freshly initialised MLP to a .klm blob")
    e.add_argument("output")
    e.add_argument("--sizes", default="64-32-10")
    e.add_argument("--dtype", default="f32", choices=["f32", "s8"])
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(fn=cmd_export)

    i = sub.add_parser("info", help="check a .klm blob and list its layers")
    i.add_argument("blob")
    i.set_defaults(fn=cmd_info)

    from . import importer

    im = sub.add_parser("import", help="import an ONNX or TFLite model as a .klm blob")
    importer.add_arguments(im)
    im.set_defaults(fn=importer.run)

    c = sub.add_parser("build", help="build the runner for the host or a board")
    c.add_argument("--board", default="host", choices=BOARDS + ["host"])
    c.add_argument("--sanitize", action="store_true")
    c.set_defaults(fn=cmd_build)

    from . import storebench

    w = sub.add_parser("store-bench", help="flash wear of training with periodic commits and "
                       "the lifetime on STM32F429ZI-like flash")
    storebench.add_arguments(w)
    w.set_defaults(fn=storebench.run)

    from . import sparsebench

    sp = sub.add_parser("sparse-bench", help="selective updates: accuracy vs fraction updated, "
                        "instructions saved, weight-store traffic and flash lifetime")
    sparsebench.add_arguments(sp)
    sp.set_defaults(fn=sparsebench.run)

    from . import footprint

    f = sub.add_parser("footprint", help="RAM/flash of a firmware ELF by component, file, symbol")
    footprint.add_arguments(f)
    f.set_defaults(fn=cmd_footprint)

    from .planner import add_cli as add_plan_cli

    add_plan_cli(sub)
    a = ap.parse_args(argv)
    try:
        return a.fn(a)
    except (build.BuildError, RuntimeError, ValueError) as err:
        print(f"kilolearn {a.cmd}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
