"""``kilolearn partial-bench``: Paissan's partial activations (``--update partial:R``) measured.

The setting where the paper's saving lives: consecutive conv layers at the image's resolution,
whose activations (kept for the backward pass) dominate training memory. A conv net on
Fashion-MNIST 28x28 (five 3x3 conv layers of 8 channels at 28x28, two stride-2 ones of 16, the
class layer; int8 FQT, trained from scratch, all of it) is trained with the full update and
with partial activations keeping 75 / 50 / 25 % of each conv input's channels
(docs/selective-updates.md):

* accuracy: the whole training on the host build of the engine, beside the numpy twin (the
  same integers: the test set's predictions must be identical);
* instructions per training step and the arena peak on the emulated board (QEMU
  ``-icount shift=0``) over the first training samples, the board's weights equal to the twin's
  after them; the arena the planner's memory model predicts for the same layout.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..core import data as datasets
from ..core import model as M
from ..core import reference as R
from ..core import selective
from ..device import job, runner
from ..formats import export
from ..planner.memory import MemModel

BOARD = "mps2-an386"
FRACTIONS = (1.0, 0.75, 0.5, 0.25)  # 1.0: the full update
COMMAND = "kilolearn partial-bench"


def conv_net(c: int = 8, n: int = 4) -> M.Model:
    """A stem and ``n`` more 3x3 conv layers of ``c`` channels at the input's resolution, two
    stride-2 conv layers of 2c, the class layer."""
    layers: list[M.Layer] = [M.Input((28, 28, 1)), M.Conv2D(c, 3, activation="relu")]
    layers += [M.Conv2D(c, 3, activation="relu") for _ in range(n)]
    layers += [M.Conv2D(2 * c, 3, 2, activation="relu"), M.Conv2D(2 * c, 3, 2, activation="relu"),
               M.Flatten(), M.Dense(10), M.SoftmaxCrossEntropy()]
    return M.Model(layers)


def _blob(qm: R.QModel, frac: float) -> bytes:
    return export.export_s8(qm) if frac >= 1.0 else export.export_s8(qm, update=("partial",
                                                                                  frac))


def _twin(qm: R.QModel, frac: float, lr: float, seed: int) -> R.S8Trainer:
    tr = R.S8Trainer(qm, lr=lr, seed=seed)
    if frac < 1.0:
        tr.set_update_policy("partial", frac)
    return tr


def _weights_equal(rep: job.Report, tr: R.S8Trainer) -> bool:
    return all(np.array_equal(rep.dump(f"w{i:02d}", "i1").reshape(tr.m.w[i].shape), tr.m.w[i])
               for i, op in enumerate(tr.g.ops) if op.has_params)


def run_one(qm: R.QModel, ds: datasets.Dataset, xtr: np.ndarray, xte: np.ndarray, frac: float,
            board: str, epochs: int, lr: float, device_steps: int, seed: int = 1) -> dict:
    g = qm.graph
    blob = _blob(qm, frac)
    acc_job = job.build(blob, xtr, ds.y_train, xte, ds.y_test, lr=lr, epochs=epochs, seed=seed)
    dev_job = job.build(blob, xtr[:device_steps], ds.y_train[:device_steps], lr=lr, epochs=1,
                        seed=seed, dump_weights=True)
    with ThreadPoolExecutor(2) as pool:  # the host build and the board run beside the twin
        acc_f = pool.submit(runner.run_job, acc_job, "host", False, 7200.0)
        dev_f = pool.submit(runner.run_job, dev_job, board, False, 7200.0)
        dev_tr = _twin(qm, frac, lr, seed)
        R.train_in_order(dev_tr, xtr[:device_steps], ds.y_train[:device_steps], 1)
        tr = _twin(qm, frac, lr, seed)
        R.train_in_order(tr, xtr, ds.y_train, epochs)
        pred = tr.predict(xte)
        acc, dev = acc_f.result(), dev_f.result()
    last = acc.records["epoch"][-1]
    ep = dev.records["epoch"][0]
    pm = selective.permille(frac)
    return {
        "fraction": frac,
        "kept": [selective.count(g.shapes[t][-1], pm) for t in
                 sorted(selective.partial_tensors(g, R.needs_grad(g)))] if frac < 1.0 else [],
        "host_acc": last["test_correct"] / last["n_test"],
        "numpy_acc": float((pred == ds.y_test).mean()),
        "acc_per_epoch": [e["test_correct"] / e["n_test"] for e in acc.records["epoch"]],
        "device_equal": _weights_equal(dev, dev_tr),
        "insn_per_step": ep["train_insn"] / ep["n_train"] if ep.get("train_insn") else None,
        "arena_peak": dev.one("done")["arena_peak"],
        "planned": MemModel(g, "s8", target="arm",
                            partial_pm=0 if frac >= 1.0 else pm).store_all_bytes(),
        "selected_pct": 100.0 * ep["upd_touched"] / max(ep["upd_weights"], 1),
    }


def measure(board: str = BOARD, fractions: tuple[float, ...] = FRACTIONS, n_train: int = 2000,
            n_test: int = 1000, epochs: int = 4, lr: float = 0.005, device_steps: int = 32,
            seed: int = 0) -> dict:
    ds = datasets.fashion(n_train=n_train, n_test=n_test, size=28)
    m = conv_net()
    g = m.graph
    qm = R.quantize_model(g, m.init(seed), ds.x_train[:100])
    xtr, xte = qm.quantize_input(ds.x_train), qm.quantize_input(ds.x_test)
    runs = [run_one(qm, ds, xtr, xte, f, board, epochs, lr, device_steps) for f in fractions]
    return {"board": board, "n_train": n_train, "n_test": n_test, "epochs": epochs, "lr": lr,
            "device_steps": device_steps, "macs": int(sum(g.macs(i) for i in range(len(g.ops)))),
            "runs": runs}


def measure_figure() -> dict:
    return measure()


def _pct(v: float) -> str:
    return f"{100 * v:.2f} %"


def render(rec: dict) -> str:
    rec = rec.get("data", rec)  # a docs figure's record, or the measurement itself
    runs = rec["runs"]
    full = next(r for r in runs if r["fraction"] >= 1.0)
    rows = []
    for r in runs:
        name = "full update" if r["fraction"] >= 1.0 else f"partial {100 * r['fraction']:g} %"
        ins = r["insn_per_step"]
        rows.append([name, "/".join(map(str, r["kept"])) if r["kept"] else "all",
                     _pct(r["host_acc"]), _pct(r["numpy_acc"]),
                     f"{100 * (r['host_acc'] - full['host_acc']):+.2f}",
                     f"{ins:,.0f}" if ins else "-",
                     f"{full['insn_per_step'] / ins:.2f}x" if ins and full["insn_per_step"]
                     else "-",
                     f"{r['arena_peak']:,}", f"{r['planned']:,}",
                     f"{full['arena_peak'] / r['arena_peak']:.2f}x",
                     "yes" if r["device_equal"] and r["host_acc"] == r["numpy_acc"] else "NO"])
    head = ["update", "channels kept", "accuracy", "numpy", "vs full (pts)", "insn/step",
            "fewer insn", "arena peak B", "planned B", "less arena", "= twin"]
    w = [max(len(x[i]) for x in rows + [head]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w[i]) if i < 2 else c.rjust(w[i]) for i, c in enumerate(x))
             for x in [head] + rows]
    lines.insert(1, "  ".join("-" * n for n in w))
    title = (f"int8 conv net on Fashion-MNIST 28x28 ({rec['macs']:,} MACs forward; "
             f"{rec['n_train']:,} train / {rec['n_test']:,} test images, {rec['epochs']} epochs, "
             f"SGD lr {rec['lr']:g}, batch 1); accuracy on the host build, instructions and "
             f"arena on {rec['board']} under QEMU -icount shift=0 over the first "
             f"{rec['device_steps']} training steps")
    half = next((r for r in runs if r["fraction"] == 0.5), None)
    out = ["```", title] + lines + ["```", ""]
    if half and half["insn_per_step"] and full["insn_per_step"]:
        out.append(f"At 50 %: {full['arena_peak'] / half['arena_peak']:.2f}x less arena "
                   f"({half['arena_peak']:,} B against {full['arena_peak']:,} B; planned "
                   f"{half['planned']:,} B), {full['insn_per_step'] / half['insn_per_step']:.2f}x "
                   f"fewer instructions per step, "
                   f"{100 * (half['host_acc'] - full['host_acc']):+.2f} points of accuracy "
                   f"against the full update. Accuracy after each epoch (full / 75 / 50 / 25 %): "
                   + "; ".join(" / ".join(f"{100 * r['acc_per_epoch'][e]:.1f}" for r in runs)
                               for e in range(rec["epochs"])) + ".")
    return "\n".join(out)


def run(a: argparse.Namespace) -> int:
    rec = measure(a.board, tuple(a.fractions), a.n_train, a.n_test, a.epochs, a.lr,
                  a.device_steps)
    print(render(rec))
    if a.json:
        Path(a.json).write_text(json.dumps(rec, indent=1))
    bad = [r for r in rec["runs"] if not r["device_equal"] or r["host_acc"] != r["numpy_acc"]]
    for r in bad:
        print(f"MISMATCH at {r['fraction']}: engine and numpy twin differ")
    return 1 if bad else 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cliargs import BOARDS, FloatRange, IntRange, OutFile

    p.add_argument("--board", default=BOARD, choices=BOARDS + ["host"])
    p.add_argument("--fractions", nargs="+", type=FloatRange(0.001, 1.0, lo_open=False),
                   default=list(FRACTIONS), help="1 is the full update")
    p.add_argument("--n-train", type=IntRange(1, 60000), default=2000)
    p.add_argument("--n-test", type=IntRange(1, 10000), default=1000)
    p.add_argument("--epochs", type=IntRange(1, 100), default=4)
    p.add_argument("--lr", type=FloatRange(0.0, 1.0), default=0.005)
    p.add_argument("--device-steps", type=IntRange(1, 60000), default=32,
                   help="training steps measured on the board")
    p.add_argument("--json", type=OutFile(), help="write the measurement as JSON")
