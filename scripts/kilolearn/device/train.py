"""Train a model on a board (emulated or host) and beside it in the numpy reference.

This is what ``kilolearn train`` and ``kilolearn bench`` run: the same job goes to the device,
the reference trains the same model on the same data, and the two are reported side by side.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..core import data as datasets
from ..core import model, reference
from ..formats import export
from . import job, runner

DTYPES = ("f32", "s8")
CALIBRATION_SAMPLES = 200
PHASES = ("forward", "loss", "backward", "update")


@dataclass
class Result:
    board: str
    dtype: str
    epochs: int
    device_acc: list[float]  # test accuracy after each epoch
    reference_acc: float  # numpy reference, after the last epoch
    insn_per_train_sample: float | None  # mean over the epochs; None without a counter
    insn_first_epoch: float | None  # per sample in epoch 1 (densest gradients)
    insn_per_inference: float | None
    arena_bytes: int
    blob_bytes: int
    phases: dict[str, float] | None = None  # per-sample mean by phase (profile runs)

    def as_dict(self) -> dict:
        return asdict(self)


MODELS = ("mlp", "cnn")


def build_model(name: str, ds: datasets.Dataset, hidden: int = 32) -> model.Model:
    """The built-in models: 'mlp' (features-hidden-classes) and 'cnn' (small_cnn on the
    images; digits are 8x8x1)."""
    if name == "mlp":
        return model.mlp([ds.x_train.shape[1], hidden, ds.n_classes])
    if name == "cnn":
        side = int(round(np.sqrt(ds.x_train.shape[1])))
        if side * side != ds.x_train.shape[1]:
            raise ValueError(f"cnn needs square single-channel images, {ds.name} is not")
        return model.small_cnn((side, side, 1), ds.n_classes, hidden // 4)
    raise ValueError(f"unknown model {name!r} (known: {', '.join(MODELS)})")


def prepare(dtype: str, m: model.Model, ds: datasets.Dataset, seed: int):
    """(blob, train x, test x, numpy trainer factory, model) for one dtype."""
    p = m.init(seed)
    g = m.graph
    if dtype == "f32":
        return (export.export_f32(g, p), ds.x_train, ds.x_test,
                lambda lr: reference.F32Trainer(g, p, lr=lr), m)
    qm = reference.quantize_model(g, p, ds.x_train[:CALIBRATION_SAMPLES])
    return (export.export_s8(qm), qm.quantize_input(ds.x_train), qm.quantize_input(ds.x_test),
            lambda lr: reference.S8Trainer(qm, lr=lr, seed=seed + 1), m)


def run(board: str, dtype: str, *, epochs: int = 20, lr: float = 0.05, seed: int = 0,
        model_name: str = "mlp", hidden: int = 32, ds: datasets.Dataset | None = None,
        with_reference: bool = True, profile: bool = False, timeout: float = 1800.0) -> Result:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}")
    ds = ds or datasets.digits()
    blob, xtr, xte, make_ref, _ = prepare(dtype, build_model(model_name, ds, hidden), ds, seed)
    img = job.build(blob, xtr, ds.y_train, xte, ds.y_test, lr=lr, epochs=epochs,
                    seed=seed + 1, profile=profile)
    rep = runner.run_job(img, board, timeout=timeout)
    eps = rep.records["epoch"]
    counter = bool(rep.one("model").get("counter"))
    ref_acc = float("nan")
    if with_reference:
        tr = make_ref(lr)
        reference.train_in_order(tr, xtr, ds.y_train, epochs)
        ref_acc = float((tr.predict(xte) == ds.y_test).mean())
    last = eps[-1]
    return Result(
        board=board, dtype=dtype, epochs=epochs,
        device_acc=[e["test_correct"] / e["n_test"] for e in eps],
        reference_acc=ref_acc,
        insn_per_train_sample=(float(np.mean([e["train_insn"] / e["n_train"] for e in eps]))
                               if counter else None),
        insn_first_epoch=(eps[0]["train_insn"] / eps[0]["n_train"]) if counter else None,
        insn_per_inference=(last["eval_insn"] / last["n_test"]) if counter else None,
        arena_bytes=rep.one("done")["arena_peak"],
        blob_bytes=len(blob),
        phases=({p: float(np.mean([e[f"{p}_insn"] / e["n_train"] for e in eps]))
                 for p in PHASES} if profile and counter else None),
    )


def _insn(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}"


def table(results: list[dict]) -> str:
    """The table ``kilolearn train`` prints, from Result.as_dict() records."""
    from tabulate import tabulate

    rows = [[r["dtype"], f"{100 * r['device_acc'][-1]:.2f} %",
             f"{100 * r['reference_acc']:.2f} %", _insn(r["insn_per_train_sample"]),
             _insn(r["insn_per_inference"]), f"{r['arena_bytes']:,}", f"{r['blob_bytes']:,}"]
            for r in results]
    return tabulate(rows, headers=["dtype", "device test acc", "numpy reference",
                                   "insn/train sample", "insn/inference", "arena bytes",
                                   "blob bytes"])
