"""The user's loop on the command line: ``example-data`` -> ``fit`` -> ``adapt`` -> ``eval``
(and ``deploy`` / ``pull`` for a board that keeps its model). docs/user-guide.md walks it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tabulate import tabulate

from . import cliargs as ca
from .cliargs import UsageError

DATASETS = ["digits", "fashion"]
MAX_CLASSES = 256  # the session's class mask (kl_session_settings_t)
MAX_BUFFER = 65535  # samples the device's buffer holds at most (KL_SAMPLES_MAX)


def _data(source: str, split: str, what: str):  # noqa: ANN202 - (x, y, shape)
    from .core import userdata

    try:
        return userdata.load_shaped(source, split)
    except (OSError, ValueError, EOFError) as e:
        raise UsageError(f"{what} {source}: {ca.one_line(str(e)) or type(e).__name__}"
                         ) from None


def _checked(source: str, split: str, what: str, blob, scale_check: bool,  # noqa: ANN001
             notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Data for a blob: width, labels and (int8) scale checked, one UsageError naming it."""
    from .core import userdata

    x, y, _ = _data(source, split, what)
    n_in, n_cls = ca.io_sizes(blob.graph)
    try:
        note = userdata.check_for_model(x, y, n_in, n_cls, blob.qmodel, "the model",
                                        scale_check)
    except userdata.DataError as e:
        raise UsageError(f"{what} {source}: {e}") from None
    if note:
        notes.append(f"{what} {source}: {note}")
    return x, y


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _blob_arg(path: str, option: str = ""):  # noqa: ANN202 - (bytes, export.Blob)
    """The blob file's bytes and its parsed form; a bad blob: one line naming it."""
    raw = Path(path).read_bytes()
    return raw, ca.read_blob(raw, f"{option} {path}".strip())


def _retrain(raw: bytes, b, trains: str | None, what: str):  # noqa: ANN001, ANN202
    """(raw, blob) with what trains set by ``trains`` (None: as the blob says); a model in
    which nothing would train: one UsageError."""
    from .core import fit

    try:
        if trains is not None:
            fit.choose_trainable(b, trains)
        if not any(op.trainable for op in b.graph.ops):
            raise fit.FitError("nothing in the model trains (--trains chooses)")
        if trains is not None:
            raw = fit.reexport(b)
    except fit.FitError as e:
        raise UsageError(f"{what}{f' --trains {trains}' if trains else ''}: {e}") from None
    return raw, ca.read_blob(raw, what)


# ---------------------------------------------------------------------------- fit


def cmd_fit(a: argparse.Namespace) -> int:
    from .core import fit

    notes: list[str] = []
    test_src = a.test or (a.data if a.data in DATASETS else None)
    if a.init:
        raw, b = _blob_arg(a.init, "--init")
        x, y = _checked(a.data, "train", "data", b, not a.no_scale_check, notes)
        xt, yt = (_checked(test_src, "test", "--test", b, not a.no_scale_check, notes)
                  if test_src else (None, None))
        raw, b = _retrain(raw, b, a.trains, f"--init {a.init}")
        print(f"kilolearn fit: {a.init} on {a.data} ({_count(len(x), 'sample')}), "
              f"{a.epochs} epochs, SGD lr {a.lr}, batch 1, numpy", flush=True)
        try:
            blob, r = fit.fit_blob(raw, x, y, a.epochs, a.lr, a.seed, xt, yt)
        except fit.FitError as e:
            raise UsageError(f"--init {a.init}: {e}") from None
    else:
        x, y, shape = _data(a.data, "train", "data")
        xt = yt = None
        if test_src:
            xt, yt, _ = _data(test_src, "test", "--test")
            if xt.shape[1] != x.shape[1]:
                raise UsageError(f"--test {test_src}: samples of {xt.shape[1]} values, the "
                                 f"training data's have {x.shape[1]}")
            if yt.max() > y.max():
                raise UsageError(f"--test {test_src}: labels up to {int(yt.max())}, the "
                                 f"training data's up to {int(y.max())} (classes never "
                                 "trained)")
        n_classes = int(y.max()) + 1
        if n_classes > MAX_CLASSES:
            raise UsageError(f"data {a.data}: labels up to {n_classes - 1}; a session model "
                             f"has at most {MAX_CLASSES} classes (0..{MAX_CLASSES - 1})")
        if n_classes < 2:
            raise UsageError(f"data {a.data}: every label is 0, a classifier needs at least "
                             "2 classes")
        if a.model == "cnn":
            try:
                shape = fit.cnn_shape(x.shape[1], a.hidden, shape)
            except fit.FitError as e:
                raise UsageError(f"data {a.data}: {e}") from None
        print(f"kilolearn fit: a new {a.model.upper()} on {a.data} ({_count(len(x), 'sample')}, "
              f"{x.shape[1]} values, {n_classes} classes), {a.epochs} epochs, SGD lr {a.lr}, "
              f"batch 1, float32 in numpy{', then int8' if a.dtype == 's8' else ''}",
              flush=True)
        try:
            blob, r = fit.fit_new(x, y, a.model, a.dtype, a.hidden, shape, a.epochs, a.lr,
                                  a.seed, xt, yt, n_classes)
            if a.trains:
                blob, b = _retrain(blob, ca.read_blob(blob, "the model"), a.trains, "")
                r.trainable = fit.describe_trainable(b.graph)
        except fit.FitError as e:
            raise UsageError(str(e)) from None
    if a.paged:  # its trainable dense weights stay in flash
        import dataclasses

        from .core import fit as fitm

        blob = fitm.reexport(dataclasses.replace(ca.read_blob(blob, "the model"), paged=True))
    Path(a.output).write_bytes(blob)
    rows = [["model", r.model], ["type", "int8" if r.dtype == "s8" else "float32"],
            ["train accuracy %", _pct(r.train_acc)], ["test accuracy %", _pct(r.test_acc)]]
    if r.f32_test_acc is not None:
        rows.append(["test accuracy % (float32, before int8)", _pct(r.f32_test_acc)])
    rows += [["trains on the device", r.trainable], ["blob bytes", f"{len(blob):,}"]]
    print(tabulate(rows, tablefmt="plain", disable_numparse=True))
    for n in notes:
        print("note: " + n)
    print(f"wrote {a.output}")
    if a.json:
        Path(a.json).write_text(json.dumps(r.__dict__ | {"blob_bytes": len(blob)}, indent=2))
    return 0


# ---------------------------------------------------------------------------- adapt


def cmd_adapt(a: argparse.Namespace) -> int:
    from .device import adapt

    raw, b = _blob_arg(a.blob)
    notes: list[str] = []
    x, y = _checked(a.data, "train", "--data", b, not a.no_scale_check, notes)
    evals = {}
    for src in a.eval or []:
        name = Path(src).stem if src not in DATASETS else f"{src}-test"
        if name in evals:
            name = src
        evals[name] = _checked(src, "test", "--eval", b, not a.no_scale_check, notes)
    samples = a.samples or [len(x)]
    if max(samples) > len(x):
        raise UsageError(f"--samples {max(samples)}: --data {a.data} has {len(x):,} samples")
    if a.epochs > 1 and max(samples) > MAX_BUFFER:
        raise UsageError(f"{'--samples' if a.samples else '--data'}: {max(samples):,} samples; "
                         f"the device buffers at most {MAX_BUFFER:,} for more epochs "
                         "(--samples N, or --epochs 1)")
    raw, b = _retrain(raw, b, a.trains, a.blob)
    st = adapt.Settings(samples, a.epochs, a.lr, a.seed, a.update, a.classes == "grow",
                        a.host_runs)
    where = a.port or f"{a.board} ({ca.CPU.get(a.board, a.board)})"
    print(f"kilolearn adapt: {a.blob} on {where}: {', '.join(map(str, samples))} samples of "
          f"{a.data}, {a.epochs} epoch{'s' if a.epochs > 1 else ''} (epoch 1 as they come, "
          "then the device's sample buffer shuffled), SGD lr "
          f"{a.lr}{f', {a.update[0]}:{a.update[1]:g}' if a.update else ''}", flush=True)
    for n in notes:
        print("note: " + n)
    tty = sys.stdout.isatty()
    with ca.open_device(a) as client:
        try:
            r = adapt.run(client, raw, x, y, evals, st,
                          progress=(lambda m: print(f"  {m:<60}", end="\r", flush=True))
                          if tty else None)
        except adapt.AdaptError as e:
            raise UsageError(str(e)) from None
        if a.commit:
            client.commit()
        if tty:
            print(" " * 64, end="\r")
        committed = client.stats().generation if a.commit else None
    names = list(evals)
    head = ["samples", "steps", "insn/step"]
    for n in names:
        head += [f"{n} device %", "numpy twin %"] + (["host %"] if st.host_runs else [])
    rows = [["0 (before)", 0, "-"] + [v for n in names for v in
                                      ([_pct(r.before[n]), "="] + (["="] if st.host_runs else []))]]
    for p in r.points:
        row = [p.n, f"{p.steps:,}", f"{p.train_insn / max(p.steps, 1):,.0f}"
               if p.train_insn else "n/a"]
        for n in names:
            row += [_pct(p.device[n]), "=" if p.agree[n] == 1.0 else
                    f"{_pct(p.twin[n])} ({100 * p.agree[n]:.1f} % agree)"]
            if st.host_runs:
                row.append(_pct(p.host[n]))
        rows.append(row)
    if names:
        print(tabulate(rows, headers=head, disable_numparse=True))
        print("numpy twin: the same steps in numpy ('=': every prediction the device's); host: "
              f"the same samples and epochs trained in numpy in numpy's own shuffled orders "
              f"(mean of {st.host_runs} runs)" if st.host_runs else "")
    last = r.points[-1].device if r.points else r.before
    same = all(abs(r.pulled_host[n] - last[n]) < 1e-12 for n in names)
    if a.output and r.pulled is not None:
        Path(a.output).write_bytes(r.pulled)
        acc = ", ".join(f"{n} {_pct(v)} %" for n, v in r.pulled_host.items())
        print(f"pulled the adapted model back: {a.output} ({len(r.pulled):,} bytes)"
              + (f"; on the host: {acc} ({'= the device' if same else 'DIFFERS from the device'})"
                 if names else ""))
    if committed is not None:
        print(f"committed on the device as generation {committed}")
    if a.json:
        Path(a.json).write_text(json.dumps(r.as_dict() | {"samples": samples,
                                                           "epochs": a.epochs}, indent=2))
    return 0 if same else 1


# ---------------------------------------------------------------------------- eval, deploy, pull


def cmd_eval(a: argparse.Namespace) -> int:
    from .core import fit
    from .device import adapt

    raw, b = _blob_arg(a.blob)
    notes: list[str] = []
    x, y = _checked(a.data, "test", "--data", b, not a.no_scale_check, notes)
    for n in notes:
        print("note: " + n)
    if a.port or a.board:
        xs = fit.encode(b, x)
        with ca.open_device(a) as client:
            client.load(raw)
            preds = adapt.device_predict(client, xs, y)
        where = a.port or a.board
    else:
        preds = fit.predict(b, x)
        where = "the host (numpy)"
    n_cls = ca.io_sizes(b.graph)[1]
    per = [f"{c}: {100 * np.mean(preds[y == c] == c):.0f}" for c in range(n_cls) if (y == c).any()]
    print(f"{a.blob} on {a.data}, {where}: accuracy {100 * np.mean(preds == y):.2f} % "
          f"({int(np.sum(preds == y)):,} of {len(y):,})")
    print("per class %: " + ", ".join(per))
    if a.json:
        Path(a.json).write_text(json.dumps({"accuracy": float(np.mean(preds == y)),
                                            "n": len(y)}, indent=2))
    return 0


def cmd_deploy(a: argparse.Namespace) -> int:
    raw, b = _blob_arg(a.blob)
    with ca.open_device(a) as client:
        client.load(raw)
        st = client.stats()
    print(f"deployed {a.blob} ({len(raw):,} bytes) to {a.port or a.board}: generation "
          f"{st.generation} of its weight store, every class active, default settings")
    return 0


def cmd_pull(a: argparse.Namespace) -> int:
    from .device import protocol

    with ca.open_device(a) as client:
        raw = client.read_blob(protocol.READ_STORED if a.stored else protocol.READ_TRAINED)
    b = ca.read_blob(raw, "the pulled model")
    Path(a.output).write_bytes(raw)
    print(f"pulled the {'stored' if a.stored else 'trained'} model from {a.port or a.board}: "
          f"{a.output} ({len(raw):,} bytes, {'int8' if b.qmodel is not None else 'float32'}, "
          f"CRC checked)")
    return 0


def cmd_example_data(a: argparse.Namespace) -> int:
    from .core import data as datasets
    from .core import shifts

    try:
        ds = datasets.load(a.data)
    except (OSError, ValueError) as e:
        raise UsageError(f"--data {a.data}: {ca.one_line(str(e))}") from None
    if a.adapt_samples >= len(ds.x_train):
        raise UsageError(f"--adapt-samples {a.adapt_samples}: {a.data} has "
                         f"{len(ds.x_train):,} training samples")
    side = int(round(np.sqrt(ds.x_train.shape[1])))
    k = len(ds.x_train) - a.adapt_samples
    out = Path(a.dir)
    out.mkdir(exist_ok=True)

    def save(name: str, x: np.ndarray, y: np.ndarray) -> None:
        np.savez(out / name, x=x.reshape(len(x), side, side), y=y)

    save("train.npz", ds.x_train[:k], ds.y_train[:k])
    save("test.npz", ds.x_test, ds.y_test)
    save("adapt.npz", shifts.apply(a.shift, ds.x_train[k:], side, a.seed), ds.y_train[k:])
    save("shifted-test.npz", shifts.apply(a.shift, ds.x_test, side, a.seed + 1), ds.y_test)
    print(f"wrote {out}/: train.npz ({k:,} {a.data} images), test.npz ({len(ds.x_test):,}), "
          f"adapt.npz ({a.adapt_samples} new images, {a.shift}: "
          f"{shifts.SHIFTS[a.shift].__doc__.split(':')[0].lower()}), shifted-test.npz")
    return 0


# ---------------------------------------------------------------------------- parsers


def add_parsers(sub) -> None:  # noqa: ANN001 - argparse's subparsers action
    from .core import fit

    data_help = "an .npz (x, y), .npy or .csv file (label first), or digits / fashion"
    e = sub.add_parser("example-data", help="the loop, step 0: write example arrays (a data "
                       "set and a domain-shifted copy) to try it with")
    e.add_argument("dir", type=ca.OutDir(), help="directory to write the .npz files to")
    e.add_argument("--data", default="digits", choices=DATASETS)
    e.add_argument("--shift", default="translate", choices=["translate", "gain", "blur",
                                                            "noise"])
    e.add_argument("--adapt-samples", type=ca.IntRange(1, 65535), default=200)
    e.add_argument("--seed", type=ca.SEED, default=0)
    e.set_defaults(fn=cmd_example_data)

    f = sub.add_parser("fit", help="the loop, step 1: train a model on the host from your "
                       "data (a new MLP/CNN, or --init a blob) and write its .klm blob")
    f.add_argument("data", type=ca.DataSource(DATASETS, "traindata"), help=data_help)
    f.add_argument("-o", "--output", type=ca.OutFile(), required=True, help="the .klm to write")
    f.add_argument("--test", type=ca.DataSource(DATASETS), help="data to report accuracy on")
    f.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    f.add_argument("--init", type=ca.InFile("blob"), help="continue training this blob "
                   "instead (in its own type; what it marks trainable trains)")
    f.add_argument("--dtype", default="s8", choices=["s8", "f32"])
    f.add_argument("--hidden", type=ca.IntRange(1, 4096), default=32,
                   help="MLP hidden units; the CNN uses hidden/4 and hidden/2 channels")
    f.add_argument("--epochs", type=ca.EPOCHS, default=20)
    f.add_argument("--lr", type=ca.LR, default=0.05, help="SGD learning rate")
    f.add_argument("--seed", type=ca.SEED, default=0)
    f.add_argument("--trains", type=ca.TrainsSpec(), help=fit.TRAINS_HELP + " (default all)")
    f.add_argument("--paged", action="store_true",
                   help="the trainable dense layers' weights stay in the device's flash, read "
                   "in place, updated rows logged (a model larger than SRAM; "
                   "docs/paged-weights.md)")
    f.add_argument("--no-scale-check", action="store_true",
                   help="accept data far outside an int8 blob's calibrated input range")
    f.add_argument("--json", type=ca.OutFile())
    f.set_defaults(fn=cmd_fit)

    d = sub.add_parser("adapt", help="the loop, step 2: deploy a blob to a board, adapt it "
                       "there with your samples, evaluate before/after, pull it back")
    d.add_argument("blob", type=ca.InFile("blob"))
    d.add_argument("--data", type=ca.DataSource(DATASETS), required=True,
                   help="the labelled samples to adapt with: " + data_help)
    d.add_argument("--eval", type=ca.DataSource(DATASETS), action="append",
                   help="evaluate on this data on the device before and after (repeatable)")
    d.add_argument("--samples", type=ca.IntRange(1, 65535), nargs="+",
                   help="adapt with the first N samples, for each N from the blob's state "
                   "(default: all of --data)")
    d.add_argument("--epochs", type=ca.EPOCHS, default=5,
                   help="epochs over the samples (the device buffers them; default 5)")
    d.add_argument("--lr", type=ca.LR, default=0.05, help="SGD learning rate")
    d.add_argument("--seed", type=ca.SEED, default=1)
    d.add_argument("--trains", type=ca.TrainsSpec(), help=fit.TRAINS_HELP +
                   " (default: as the blob says)")
    d.add_argument("--update", type=ca.UpdateSpec(), metavar="POLICY:FRACTION",
                   help="selective updates, e.g. topr:0.2 (docs/selective-updates.md)")
    d.add_argument("--classes", default="all", choices=["all", "grow"],
                   help="all classes active (default), or grow: a class becomes active when "
                   "its first label is trained (class-incremental)")
    d.add_argument("-o", "--output", type=ca.OutFile(), help="write the adapted model here")
    d.add_argument("--commit", action="store_true",
                   help="also keep the adapted model on the device (a new generation)")
    d.add_argument("--host-runs", type=ca.IntRange(0, 20), default=3, help="independent host "
                   "runs to compare with (numpy's own shuffles, averaged; default 3, 0: none)")
    d.add_argument("--no-scale-check", action="store_true",
                   help="accept data far outside the model's calibrated input range")
    d.add_argument("--json", type=ca.OutFile())
    ca.add_device_args(d)
    d.set_defaults(fn=cmd_adapt)

    v = sub.add_parser("eval", help="the loop, step 3: accuracy of a blob on data, on the host "
                       "(numpy) or on a device (--board/--port)")
    v.add_argument("blob", type=ca.InFile("blob"))
    v.add_argument("--data", type=ca.DataSource(DATASETS), required=True, help=data_help +
                   " (a built-in name: its test split)")
    v.add_argument("--no-scale-check", action="store_true")
    v.add_argument("--json", type=ca.OutFile())
    ca.add_device_args(v, default=None)
    v.set_defaults(fn=cmd_eval)

    p = sub.add_parser("deploy", help="load a blob into a board's weight store (it boots "
                       "with it)")
    p.add_argument("blob", type=ca.InFile("blob"))
    ca.add_device_args(p)
    p.set_defaults(fn=cmd_deploy)

    u = sub.add_parser("pull", help="read the model back from a board: as trained now, or "
                       "--stored (the committed one)")
    u.add_argument("-o", "--output", type=ca.OutFile(), required=True)
    u.add_argument("--stored", action="store_true")
    ca.add_device_args(u)
    u.set_defaults(fn=cmd_pull)
