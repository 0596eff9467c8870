"""`kilolearn optim-bench`: the digits MLP (64-32-10) trained on a board with SGD, Adam and
mini-batches (float32), SGD, momentum and mini-batches (int8 FQT): test accuracy after every
epoch (the mean over several seeds: one run's epochs-to-an-accuracy moves by a few epochs with
the seed), the epochs each optimiser needs to reach plain SGD's accuracy, instructions per
training sample (QEMU ``-icount``) and the arena (docs/int8-training.md, issue 20)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: (name, dtype, lr, momentum, optimizer, batch): the configurations the figure compares
CONFIGS: list[tuple[str, str, float, float, str, int]] = [
    ("SGD", "f32", 0.05, 0.0, "sgd", 1),
    ("Adam", "f32", 0.001, 0.0, "adam", 1),
    ("SGD, batch 4", "f32", 0.2, 0.0, "sgd", 4),
    ("Adam, batch 4", "f32", 0.004, 0.0, "adam", 4),
    ("SGD", "s8", 0.05, 0.0, "sgd", 1),
    ("momentum 0.9", "s8", 0.01, 0.9, "sgd", 1),
    ("SGD, batch 4", "s8", 0.2, 0.0, "sgd", 4),
    ("momentum 0.9, batch 4", "s8", 0.05, 0.9, "sgd", 4),
]
EPOCHS = 20
SEEDS = 5  # seeds 0..SEEDS-1: initial weights and the update dither
MARKS = (5, 10, 20)  # plain SGD's accuracy after this many epochs: how soon the others get there


@dataclass
class Run:
    name: str
    dtype: str
    lr: float
    momentum: float
    optimizer: str
    batch: int
    acc: list[float]  # test accuracy after each epoch (%), the mean over the seeds
    insn_per_sample: float | None  # training instructions per sample (None on the host)
    arena: int  # bytes of the arena the model uses (kl_model_init)
    acc_seeds: list[list[float]] = field(default_factory=list)  # each seed's accuracies


def run_one(board: str, cfg: tuple[str, str, float, float, str, int], epochs: int,
            seed: int = 0) -> Run:
    from ..core import data
    from ..device import job, runner, train

    name, dtype, lr, mu, opt, batch = cfg
    ds = data.digits()
    blob, xtr, xte, _, _ = train.prepare(dtype, train.build_model("mlp", ds, 32), ds, seed)
    img = job.build(blob, xtr, ds.y_train, xte, ds.y_test, lr=lr, momentum=mu, epochs=epochs,
                    seed=seed + 1, optimizer=opt, batch=batch)
    rep = runner.run_job(img, board)
    eps = rep.records["epoch"]
    acc = [100.0 * e["test_correct"] / e["n_test"] for e in eps]
    insn = None
    if rep.one("model").get("counter"):
        insn = sum(e["train_insn"] for e in eps) / sum(e["n_train"] for e in eps)
    return Run(name, dtype, lr, mu, opt, batch, acc, insn, rep.one("model")["arena"])


def run_seeds(board: str, cfg: tuple[str, str, float, float, str, int], epochs: int,
              seeds: int) -> Run:
    """run_one for seeds 0..seeds-1: the mean accuracy curve and instructions, each curve."""
    runs = [run_one(board, cfg, epochs, seed=s) for s in range(seeds)]
    r = runs[0]
    insn = ([x.insn_per_sample for x in runs] if r.insn_per_sample is not None else None)
    return Run(r.name, r.dtype, r.lr, r.momentum, r.optimizer, r.batch,
               [sum(x.acc[e] for x in runs) / seeds for e in range(len(r.acc))],
               None if insn is None else sum(insn) / seeds, max(x.arena for x in runs),
               [x.acc for x in runs])


def measure(board: str = "mps2-an386", epochs: int = EPOCHS, seeds: int = SEEDS) -> list[Run]:
    out = []
    for cfg in CONFIGS:
        print(f"  {cfg[1]} {cfg[0]} on {board}, {seeds} seeds ...", flush=True)
        out.append(run_seeds(board, cfg, epochs, seeds))
    return out


def epochs_to(acc: list[float], target: float) -> int | None:
    """The first epoch (1-based) whose accuracy reaches target, or None."""
    return next((k + 1 for k, a in enumerate(acc) if a >= target - 1e-9), None)


def table(runs: list[Run]) -> str:
    marks = [m for m in MARKS if m <= len(runs[0].acc)]
    head = ("| dtype | optimiser | lr | accuracy after epoch 1 / 2 / 5 / 10 / 20 % | "
            + " | ".join(f"epochs to SGD's {m}-epoch accuracy" for m in marks)
            + " | instructions per sample | arena |")
    rows = [head, "|---|---|---:|---|" + "---:|" * len(marks) + "---:|---:|"]
    for r in runs:
        sgd = next(s for s in runs if s.dtype == r.dtype and s.optimizer == "sgd"
                   and s.batch == 1 and not s.momentum)
        shown = " / ".join(f"{r.acc[e - 1]:.1f}" for e in (1, 2, 5, 10, 20) if e <= len(r.acc))
        reach = []
        for m in marks:
            e = epochs_to(r.acc, sgd.acc[m - 1])
            reach.append(f"{e} ({sgd.acc[m - 1]:.1f} %)" if e is not None else
                         f"not in {len(r.acc)}")
        insn = f"{r.insn_per_sample:,.0f}" if r.insn_per_sample else "-"
        rows.append(f"| {'float32' if r.dtype == 'f32' else 'int8'} | {r.name} | {r.lr:g} | "
                    f"{shown} | " + " | ".join(reach) + f" | {insn} | {r.arena:,} B |")
    return "\n".join(rows)


def measure_figure() -> dict:
    """``kilolearn docs --measure optim-bench``: the command's defaults, as JSON data."""
    return {"board": "mps2-an386", "epochs": EPOCHS, "seeds": SEEDS,
            "runs": [asdict(r) for r in measure()]}


def render(rec: dict) -> str:
    d = rec["data"]
    runs = [Run(**r) for r in d["runs"]]
    faster = []
    m = max(MARKS)
    for dt in ("f32", "s8"):
        sgd = next(r for r in runs if r.dtype == dt and r.name == "SGD")
        if m > len(sgd.acc):
            continue
        target = sgd.acc[m - 1]
        own = epochs_to(sgd.acc, target)  # plain SGD's own first epoch at that accuracy
        for r in runs:
            e = epochs_to(r.acc, target)
            if r.dtype == dt and r is not sgd and e is not None and own is not None and e < own:
                faster.append(f"{'float32' if dt == 'f32' else 'int8'} {r.name}: {e} epochs "
                              f"against plain SGD's {own} to {target:.1f} %")
    seeds = d.get("seeds", 1)
    best = [f"{'float32' if r.dtype == 'f32' else 'int8'} {r.name} {max(r.acc):.1f} % "
            f"(epoch {r.acc.index(max(r.acc)) + 1})" for r in runs]
    return "\n".join([
        f"sklearn digits (1,200 training / 597 test samples), MLP 64-32-10, {d['epochs']} epochs "
        f"in sample order on QEMU {d['board']} (Cortex-M4), instructions under `-icount "
        f"shift=0`; accuracies and instructions are the means over {seeds} seed"
        f"{'s' if seeds != 1 else ''} (initial weights and update dither; every configuration "
        f"from the same {seeds} initial models) (measured {rec['measured']}; rerun: "
        "`kilolearn docs --measure optim-bench`):",
        "",
        table(runs),
        "",
        f"- Fewer epochs than plain SGD to its {m}-epoch accuracy: "
        + ("; ".join(faster) if faster else "none") + ".",
        "- Best mean accuracy within the epochs: " + "; ".join(best) + ".",
        "- Adam, int8 momentum and batches take the deferred path (docs/int8-training.md): the "
        "weight gradients are written out, then summed or stepped, instead of the fused dense "
        "SGD step; per sample that costs more instructions (the column) and the arena holds "
        "the optimiser's state.",
    ])


def run(a: argparse.Namespace) -> int:
    runs = [run_seeds(a.board, c, a.epochs, a.seeds) for c in CONFIGS]
    print(f"\naccuracies and instructions: means over {a.seeds} seed{'s' if a.seeds != 1 else ''}")
    print(table(runs))
    if a.json:
        Path(a.json).write_text(json.dumps([asdict(r) for r in runs], indent=1))
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cliargs import BOARDS, IntRange, OutFile

    p.add_argument("--board", default="mps2-an386", choices=BOARDS + ["host"])
    p.add_argument("--epochs", type=IntRange(1, 100), default=EPOCHS)
    p.add_argument("--seeds", type=IntRange(1, 20), default=SEEDS,
                   help="runs per configuration, seeds 0..N-1; accuracies are their means")
    p.add_argument("--json", type=OutFile(), default=None, help="also write the runs here")
