"""``kilolearn sparse-bench``: selective updates (docs/selective-updates.md) measured.

1. Accuracy vs the fraction of weights updated, per policy, for the int8 MLP (64-32-10) and the
   small CNN on sklearn digits: the emulated board and the numpy twin side by side (the int8
   predictions must be identical), with the % of weights the policy selected (the engine's
   counter) and the % that changed (counted in the twin, bit-identical to the board).
2. Instructions per training step on the board (QEMU ``-icount shift=0``) for each run, and
   the saving of structured channel sparsity (25 % / 50 % of channels frozen) against the full
   update.
3. Weight-store traffic per step and flash wear per 1,000 steps vs updating everything, and
   the lifetime on STM32F429ZI-like flash (10,000 cycles; 16, 64 and 128 KB sectors).
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..core import data as datasets
from ..core import selective
from ..device import job, runner, train

CYCLES = 10_000
SECTORS = {"4x16K": (4, 16 * 1024), "2x64K": (2, 64 * 1024), "7x128K": (7, 128 * 1024)}
JOURNAL_RECORD = 4  # bytes per changed weight in a delta commit: u16 index, i8 value, u8 tag
BIAS_RECORD = 8  # a changed int32 bias: u16 index, u16 tag, i32 value
COMMIT_HEADER = 32  # as the generation header of docs/flash-store.md


@dataclass
class Run:
    model: str
    policy: str
    fraction: float
    epochs: int
    device_acc: float
    numpy_acc: float
    same_predictions: bool
    selected_pct: float  # engine counter: weights the policy let the update write
    changed_pct: float  # twin: weights whose value changed, per step
    insn_per_step: float | None  # mean over the epochs
    insn_first_epoch: float | None
    arena_bytes: int
    blob_bytes: int
    trainable_weights: int
    trainable_biases: int
    changed_per_step: float = 0.0
    changed_biases_per_step: float = 0.0
    read_per_step: float = 0.0  # weights paged in from the store (what the policy selects)
    dirty: dict[int, float] = field(default_factory=dict)  # commit every N: dirty weights
    dirty_biases: dict[int, float] = field(default_factory=dict)


def _twin(tr, xtr, ytr, xte, yte, epochs: int, commit_every: list[int]):  # noqa: ANN001
    """Train the numpy twin, counting changed weights per step and per commit interval."""
    ops = [i for i, op in enumerate(tr.g.ops) if op.has_params and op.trainable]
    changed = changed_b = 0
    dirty = {n: 0 for n in commit_every}
    dirty_b = {n: 0 for n in commit_every}
    snap = {n: ([tr.m.w[i].copy() for i in ops], [tr.m.b[i].copy() for i in ops])
            for n in commit_every}
    step = 0
    for _ in range(epochs):
        for k in range(len(xtr)):
            before_w = [tr.m.w[i].copy() for i in ops]
            before_b = [tr.m.b[i].copy() for i in ops]
            tr.step(xtr[k], int(ytr[k]))
            step += 1
            changed += sum(int((tr.m.w[i] != w).sum()) for i, w in zip(ops, before_w,
                                                                         strict=True))
            changed_b += sum(int((tr.m.b[i] != b).sum()) for i, b in zip(ops, before_b,
                                                                           strict=True))
            for n in commit_every:
                if step % n == 0:
                    sw, sb = snap[n]
                    dirty[n] += sum(int((tr.m.w[i] != w).sum()) for i, w in zip(ops, sw,
                                                                                  strict=True))
                    dirty_b[n] += sum(int((tr.m.b[i] != b).sum()) for i, b in zip(ops, sb,
                                                                                    strict=True))
                    snap[n] = ([tr.m.w[i].copy() for i in ops], [tr.m.b[i].copy() for i in ops])
    pred = tr.predict(xte)
    return pred, changed / step, changed_b / step, \
        {n: dirty[n] / max(step // n, 1) for n in commit_every}, \
        {n: dirty_b[n] / max(step // n, 1) for n in commit_every}


def run_one(board: str, model_name: str, policy: str, fraction: float, epochs: int,
            ds: datasets.Dataset, commit_every: list[int], lr: float = 0.05,
            seed: int = 0) -> Run:
    blob, xtr, xte, make_ref, _ = train.prepare("s8", train.build_model(model_name, ds), ds,
                                                seed)
    pid = selective.policy_id(policy)
    pm = selective.permille(fraction) if pid else selective.FRAC_ONE
    img = job.build(blob, xtr, ds.y_train, xte, ds.y_test, lr=lr, epochs=epochs, seed=seed + 1,
                    update=(pid, pm), dump_weights=True)
    with ThreadPoolExecutor(1) as pool:  # the board runs while the twin trains
        fut = pool.submit(runner.run_job, img, board, False, 3600.0)
        tr = make_ref(lr)
        tr.set_update_policy(pid, permille=pm)
        pred, ch, chb, dirty, dirty_b = _twin(tr, xtr, ds.y_train, xte, ds.y_test, epochs,
                                              commit_every)
        rep = fut.result()
    eps = rep.records["epoch"]
    counter = bool(rep.one("model").get("counter"))
    ops = [i for i, op in enumerate(tr.g.ops) if op.has_params and op.trainable]
    n_w = sum(tr.m.w[i].size for i in ops)
    n_b = sum(tr.m.b[i].size for i in ops)
    same = all(np.array_equal(rep.dump(f"w{i:02d}", "i1").reshape(tr.m.w[i].shape), tr.m.w[i])
               for i in ops)
    dev_acc = eps[-1]["test_correct"] / eps[-1]["n_test"]
    np_acc = float((pred == ds.y_test).mean())
    steps = sum(e["n_train"] for e in eps)
    sel_pct = 100.0 * sum(e["upd_touched"] for e in eps) / max(sum(e["upd_weights"]
                                                                   for e in eps), 1)
    return Run(model_name, policy if pid else "all", fraction if pid else 1.0, epochs, dev_acc,
               np_acc, same and dev_acc == np_acc, sel_pct, 100.0 * ch / n_w,
               float(np.mean([e["train_insn"] / e["n_train"] for e in eps])) if counter else None,
               eps[0]["train_insn"] / eps[0]["n_train"] if counter else None,
               rep.one("done")["arena_peak"], len(blob), n_w, n_b, ch, chb,
               sum(e["upd_touched"] for e in eps) / steps, dirty, dirty_b)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    out = [headers] + rows
    w = [max(len(r[i]) for r in out) for i in range(len(headers))]
    lines = []
    for j, r in enumerate(out):
        lines.append("  ".join(c.ljust(w[i]) if i < 3 else c.rjust(w[i])
                               for i, c in enumerate(r)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * x for x in w))
    return "\n".join(lines)


def _insn(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}"


def _life(steps: float) -> str:
    days = steps / 86400
    return f"{days:,.1f} d" if days < 365.25 else f"{days / 365.25:,.1f} y"


def accuracy_table(runs: list[Run]) -> str:
    full = {r.model: r for r in runs if r.policy == "all"}
    rows = []
    for r in runs:
        f = full.get(r.model)
        rows.append([r.model, r.policy, f"{100 * r.fraction:g} %",
                     f"{100 * r.device_acc:.2f} %", f"{100 * r.numpy_acc:.2f} %",
                     "yes" if r.same_predictions else "NO",
                     f"{100 * (r.device_acc - f.device_acc):+.2f}" if f else "",
                     f"{r.selected_pct:.1f} %", f"{r.changed_pct:.2f} %",
                     _insn(r.insn_per_step),
                     f"{100 * (1 - r.insn_per_step / f.insn_per_step):+.1f} %"
                     if f and r.insn_per_step and f.insn_per_step else "",
                     f"{r.arena_bytes:,}"])
    return _table(["model", "policy", "fraction", "device acc", "numpy acc", "bit-exact",
                   "vs full (pts)", "selected", "changed/step", "insn/step", "insn saved",
                   "arena B"], rows)


def traffic(r: Run, every: int) -> dict:
    """Flash figures of one run with a commit every ``every`` steps: KB per 1,000 steps for a
    generation COMMIT and a projected delta journal, and per partition layout (SECTORS) the
    sector erases per 1,000 steps and the lifetime in steps (1 step/s: seconds)."""
    commits = 1000 / every
    journal = COMMIT_HEADER + JOURNAL_RECORD * r.dirty.get(every, 0) + \
        BIAS_RECORD * r.dirty_biases.get(every, 0)
    gen = r.blob_bytes + COMMIT_HEADER
    out: dict = {"gen_kb": gen * commits / 1024, "journal_kb": journal * commits / 1024,
                 "parts": {}}
    for part, (n_sec, sec) in SECTORS.items():
        # a generation takes whole sectors; a journal fills sectors in turn
        rotating = n_sec - 1  # the pinned slot stays out (flash-store.md)
        out["parts"][part] = {
            "gen_erases": commits * -(-gen // sec), "journal_erases": journal * commits / sec,
            "gen_life": CYCLES * rotating * every if gen <= sec * rotating else 0,
            "journal_life": CYCLES * n_sec * sec / (journal / every)}
    return out


def traffic_tables(runs: list[Run], every: int) -> tuple[str, str]:
    rows1, rows2 = [], []
    for r in runs:
        if r.model != "mlp":
            continue
        sram_w = r.changed_per_step + 4 * r.changed_biases_per_step
        rows1.append([r.model, r.policy, f"{100 * r.fraction:g} %", f"{r.read_per_step:,.0f}",
                      f"{r.changed_per_step:,.1f}", f"{sram_w:,.1f}",
                      f"{r.dirty.get(every, 0):,.0f}",
                      f"{r.dirty_biases.get(every, 0):,.0f}"])
        t = traffic(r, every)
        row = [r.model, r.policy, f"{100 * r.fraction:g} %", f"{t['gen_kb']:,.1f}",
               f"{t['journal_kb']:,.1f}"]
        for f in t["parts"].values():
            row += [f"{f['gen_erases']:g} / {f['journal_erases']:.2f}",
                    f"{_life(f['gen_life'])} / {_life(f['journal_life'])}"]
        rows2.append(row)
    t1 = _table(["model", "policy", "fraction", "weights read/step", "weights changed/step",
                 "SRAM bytes written/step", f"dirty weights/{every} steps",
                 f"dirty biases/{every} steps"], rows1)
    hdr = ["model", "policy", "fraction", "KB/1k steps generation", "KB/1k steps journal"]
    for part in SECTORS:
        hdr += [f"erases/1k {part} gen/journal", f"lifetime {part} gen/journal"]
    return t1, _table(hdr, rows2)


def accuracy_report(runs: list[Run], board: str, epochs: int = 0) -> str:
    """The accuracy table with its title line (what ``sparse-bench`` prints first)."""
    return (f"int8 on sklearn digits (1,200 train / 597 test), SGD lr 0.05, batch 1; MLP "
            f"64-32-10 {epochs or 20} epochs, CNN {epochs or 10} epochs; {board} under "
            "QEMU -icount shift=0 beside the numpy twin\n" + accuracy_table(runs))


def traffic_report(runs: list[Run], commit_every: list[int]) -> str:
    """The traffic and flash tables, two per commit interval, with their title lines."""
    parts = []
    for every in commit_every:
        t1, t2 = traffic_tables(runs, every)
        parts.append(f"weight-store traffic per training step (int8 MLP; weights are bytes; a "
                     f"commit every {every} steps)\n{t1}")
        parts.append(f"flash per 1,000 steps and lifetime at 1 step/s, STM32F429ZI-like "
                     f"({CYCLES:,} cycles), a commit every {every} steps: generation = the "
                     "implemented COMMIT (whole blob, docs/flash-store.md); journal = projected "
                     f"delta commit of the changed weights only\n{t2}")
    return "\n\n".join(parts)


def run_from_dict(d: dict) -> Run:
    """A Run from its JSON form (dict keys of dirty counts back to ints)."""
    d = dict(d)
    for k in ("dirty", "dirty_biases"):
        d[k] = {int(n): v for n, v in d.get(k, {}).items()}
    return Run(**d)


def measure(board: str = "mps2-an386", models: list[str] | None = None,
            policies: list[str] | None = None, fractions: list[float] | None = None,
            epochs: int = 0, commit_every: list[int] | None = None) -> list[Run]:
    """Every run of ``sparse-bench`` (the defaults are the command's)."""
    ds = datasets.digits()
    runs: list[Run] = []
    for model_name in models or list(DEFAULT_MODELS):
        ep = epochs if epochs else (20 if model_name == "mlp" else 10)
        configs = [("all", 1.0)] + [(p, f) for p in policies or list(DEFAULT_POLICIES)
                                    for f in fractions or list(DEFAULT_FRACTIONS) if f < 1.0]
        for p, f in configs:
            print(f"  {model_name} {p} {100 * f:g} % ...", flush=True)
            runs.append(run_one(board, model_name, p, f, ep, ds,
                                commit_every or list(DEFAULT_COMMIT_EVERY)))
    return runs


def run(a: argparse.Namespace) -> int:
    runs = measure(a.board, a.models, a.policies, a.fractions, a.epochs, a.commit_every)
    print("\n" + accuracy_report(runs, a.board, a.epochs))
    print("\n" + traffic_report(runs, a.commit_every))
    if a.json:
        Path(a.json).write_text(json.dumps([asdict(r) for r in runs], indent=1))
    bad = [r for r in runs if not r.same_predictions]
    for r in bad:
        print(f"MISMATCH {r.model} {r.policy} {r.fraction}: device and numpy differ")
    return 1 if bad else 0


DEFAULT_MODELS = ("mlp", "cnn")
DEFAULT_POLICIES = ("topr", "channel-norm", "channel-sparse")
DEFAULT_FRACTIONS = (0.5, 0.2, 0.1, 0.75)
DEFAULT_COMMIT_EVERY = (10, 100)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cliargs import BOARDS, FloatRange, IntRange, OutFile

    p.add_argument("--board", default="mps2-an386", choices=BOARDS + ["host"])
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                   choices=list(train.MODELS))
    p.add_argument("--policies", nargs="+", default=list(DEFAULT_POLICIES),
                   choices=[k for k in selective.POLICIES if k != "all"])
    p.add_argument("--fractions", nargs="+", type=FloatRange(0.001, 1.0, lo_open=False),
                   default=list(DEFAULT_FRACTIONS),
                   help="fractions updated (0.75 and 0.5 of channel-sparse are 25 %% and 50 %% "
                   "of channels frozen)")
    p.add_argument("--epochs", type=IntRange(0, 1000), default=0,
                   help="default (0): MLP 20, CNN 10")
    p.add_argument("--commit-every", type=IntRange(1, 1_000_000), nargs="+",
                   default=list(DEFAULT_COMMIT_EVERY),
                   help="commit intervals (training steps) of the traffic tables")
    p.add_argument("--json", type=OutFile(), help="write every run as JSON to this file")
