"""`kilolearn anomaly`: on-device anomaly detection. An autoencoder (Dense layers, mean squared
error) learns a machine's "normal" on the device, in int8, from a stream of unlabelled windows of
one class of aeon's BasicMotions (a smartwatch's accelerometer and gyroscope; 2-second windows,
each as per-channel mean, deviation, minimum and maximum, scaled by the normal stream's own
statistics); the device learns
its threshold from the reconstruction errors of that stream (a moving mean + 3 deviations) and
answers every EVAL with the window's anomaly score, the threshold and its verdict, over the
session protocol. The windows of every class of the test recordings are then scored: ROC AUC on
the device against the same autoencoder trained on the host (float32, numpy) and the int8 twin,
instructions per training sample and the arena (docs/continual-learning.md)."""

from __future__ import annotations

import argparse
import struct
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the CLI builds its parser without the model code (kept quick)
    from ..core import data as datasets
    from ..core import model as M
    from ..core import reference as R

KL_ANOMALY_SHIFT = 5  # kl_session.h: the threshold's moving averages weigh 2^-5
KL_ANOMALY_K = 3.0  # ... mean + 3 standard deviations


@dataclass
class Scenario:
    normal: int = 0  # the class that is "normal" (BasicMotions: 0 Standing .. 3 Badminton)
    window: int = 20  # time steps per window (x 6 channels)
    stride: int = 10
    hidden: tuple[int, ...] = (8,)  # the autoencoder's hidden layers (ReLU)
    epochs: int = 20  # passes over the normal training stream
    lr: float = 0.05
    features: bool = True  # windows -> per channel mean, deviation, min, max (else raw)
    seed: int = 0


@dataclass
class Result:
    normal: str
    n_train: int  # normal training windows in the stream (per epoch)
    n_test_normal: int
    n_test_anomalous: int
    auc_device: float  # int8, learnt on the device
    auc_twin: float  # the int8 numpy twin of the same training (equal scores: same AUC)
    auc_host: float  # the same autoencoder trained on the host in float32
    auc_untrained: float  # the device's scores before any training
    same_scores: bool  # the device's int8 scores equal the twin's, window for window
    threshold: float  # learnt on the device
    detected: float  # share of the anomalous test windows above it
    false_alarms: float  # share of the normal test windows above it
    insn_per_sample: float | None  # training instructions per streamed window (None: host)
    arena_used: int
    arena_peak: int
    model_bytes: int
    scores: dict[str, list[float]] = field(default_factory=dict)


def windows(x: np.ndarray, shape: tuple[int, int, int], window: int, stride: int) -> np.ndarray:
    """(N, H*W*C) recordings of shape (1, T, C) -> (N * k, window * C) windows."""
    t, c = shape[1], shape[2]
    rec = x.reshape(len(x), t, c)
    starts = range(0, t - window + 1, stride)
    return np.stack([r[s:s + window].reshape(-1) for r in rec for s in starts]).astype(
        np.float32)


def features(w: np.ndarray, channels: int) -> np.ndarray:
    """Windows (N, window * C) -> per channel mean, standard deviation, minimum, maximum
    (N, 4 C): what a device computes as it samples, a vibration monitor's usual features."""
    r = w.reshape(len(w), -1, channels)
    return np.concatenate([r.mean(1), r.std(1), r.min(1), r.max(1)], 1).astype(np.float32)


def split(ds: datasets.Dataset, sc: Scenario) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(normal training samples, test samples, test anomaly labels 0/1): windows, or their
    features standardised with the normal training windows' mean and deviation (only the
    normal stream the device learns from sets the scale)."""
    per = len(range(0, ds.shape[1] - sc.window + 1, sc.stride))
    xtr = windows(ds.x_train[ds.y_train == sc.normal], ds.shape, sc.window, sc.stride)
    xte = windows(ds.x_test, ds.shape, sc.window, sc.stride)
    yte = np.repeat((ds.y_test != sc.normal).astype(np.int64), per)
    if sc.features:
        c = ds.shape[2]
        xtr, xte = features(xtr, c), features(xte, c)
        mu, sd = xtr.mean(0), xtr.std(0) + 1e-3
        xtr = ((xtr - mu) / sd).astype(np.float32)
        xte = ((xte - mu) / sd).astype(np.float32)
    return xtr, xte, yte


def build_model(n: int, hidden: tuple[int, ...]) -> M.Model:
    from ..core import model as M

    layers: list[M.Layer] = [M.Input((n,))]
    for h in hidden:
        layers += [M.Dense(h), M.ReLU()]
    return M.Model(layers + [M.Dense(n), M.MeanSquaredError()])


def roc_auc(scores: np.ndarray, anomalous: np.ndarray) -> float:
    """Area under the ROC curve: the probability that an anomalous window scores above a
    normal one (ties count half), by ranks (Mann-Whitney U)."""
    s = np.asarray(scores, np.float64)
    a = np.asarray(anomalous, bool)
    pos, neg = s[a], s[~a]
    if pos.size == 0 or neg.size == 0:
        raise ValueError("ROC AUC needs normal and anomalous samples")
    gt = (pos[:, None] > neg[None, :]).sum()
    eq = (pos[:, None] == neg[None, :]).sum()
    return float((gt + 0.5 * eq) / (pos.size * neg.size))


def twin_threshold(scores: list[float]) -> float:
    """The device's threshold rule (kl_session_cmds.c learn_threshold) in float32."""
    a = np.float32(1.0 / (1 << KL_ANOMALY_SHIFT))
    mean = var = np.float32(0)
    for n, v in enumerate(scores):
        v = np.float32(v)
        if n == 0:
            mean, var = v, np.float32(0)
            continue
        d = np.float32(v - mean)
        mean = np.float32(mean + a * d)
        var = np.float32((np.float32(1) - a) * np.float32(var + a * d * d))
    return float(mean + np.float32(KL_ANOMALY_K) * np.sqrt(var)) if scores else 0.0


def _s8_score(tr: R.S8Trainer, xq: np.ndarray) -> float:
    mant, e = tr.error(xq)
    return float(np.ldexp(np.float32(mant), e))


def score_many(client, xq: np.ndarray) -> list[tuple[float, bool, float]]:  # noqa: ANN001
    """EVAL of each window on the device: (score, anomalous, threshold)."""
    from . import protocol

    out = []
    for p in client.pipeline((protocol.EVAL, struct.pack("<H", 0) + x.tobytes()) for x in xq):
        _, _, mant, e, flag, thr = struct.unpack("<HBIbBf", p)
        out.append((float(np.ldexp(np.float32(mant), e)), bool(flag), thr))
    return out


def run(client, sc: Scenario, ds: datasets.Dataset | None = None,  # noqa: ANN001
        names: list[str] | None = None) -> Result:
    from ..core import data as datasets
    from ..core import reference as R
    from ..formats import export

    ds = ds or datasets.basic_motions()
    names = names or ["Standing", "Running", "Walking", "Badminton"]
    xtr, xte, yte = split(ds, sc)
    m = build_model(xtr.shape[1], sc.hidden)
    g = m.graph
    p = m.init(sc.seed)
    qm = R.quantize_model(g, p, xtr)
    blob = export.export_s8(qm)
    xq_tr, xq_te = qm.quantize_input(xtr), qm.quantize_input(xte)
    client.info()
    client.load(blob)
    client.config(lr=sc.lr, seed=sc.seed + 1)
    before = score_many(client, xq_te)
    st0 = client.stats()
    for _ in range(sc.epochs):  # the stream: the normal windows, in order, label unused
        for _r in client.train_many((0, x.tobytes()) for x in xq_tr):
            pass
    st = client.stats()
    dev = score_many(client, xq_te)
    # the int8 twin: the same steps; the threshold from its training errors
    tw = R.S8Trainer(qm, lr=sc.lr, seed=sc.seed + 1)
    train_scores = []
    for _ in range(sc.epochs):
        for x in xq_tr:
            tw.step(x, 0)
            train_scores.append(float(np.ldexp(np.float32(tw.train_err[0]), tw.train_err[1])))
    twin = [_s8_score(tw, x) for x in xq_te]
    host = R.F32Trainer(g, p, lr=sc.lr)
    for _ in range(sc.epochs):
        for x in xtr:
            host.step(x, 0)
    host_scores = [host.error(x) for x in xte]
    dscores = np.array([d[0] for d in dev])
    flags = np.array([d[1] for d in dev])
    thr = dev[0][2]
    a = yte.astype(bool)
    steps = st.train_steps - st0.train_steps
    insn = (st.train_insn - st0.train_insn) / steps if steps and st.train_insn else None
    return Result(
        normal=names[sc.normal], n_train=len(xtr), n_test_normal=int((~a).sum()),
        n_test_anomalous=int(a.sum()), auc_device=roc_auc(dscores, a),
        auc_twin=roc_auc(np.array(twin), a), auc_host=roc_auc(np.array(host_scores), a),
        auc_untrained=roc_auc(np.array([d[0] for d in before]), a),
        same_scores=bool(np.array_equal(dscores, np.array(twin, np.float64)))
        and abs(thr - twin_threshold(train_scores)) <= 1e-4 * max(thr, 1e-30),
        threshold=thr, detected=float(flags[a].mean()), false_alarms=float(flags[~a].mean()),
        insn_per_sample=insn, arena_used=st.arena_used, arena_peak=st.arena_peak,
        model_bytes=len(blob),
        scores={"device": dscores.tolist(), "host": [float(v) for v in host_scores],
                "anomalous": yte.tolist()})


def table(results: list[Result]) -> str:
    rows = ["| normal class | normal windows streamed (per pass) | "
            "test windows normal / anomalous | "
            "ROC AUC: device int8 (untrained) | host float32 | device threshold: anomalies "
            "detected / false alarms | instructions per window | arena |",
            "|---|---:|---:|---|---:|---|---:|---:|"]
    for r in results:
        insn = f"{r.insn_per_sample:,.0f}" if r.insn_per_sample else "-"
        rows.append(f"| {r.normal} | {r.n_train} | {r.n_test_normal} / {r.n_test_anomalous} | "
                    f"{r.auc_device:.3f} ({r.auc_untrained:.3f}) | {r.auc_host:.3f} | "
                    f"{100 * r.detected:.1f} % / {100 * r.false_alarms:.1f} % | {insn} | "
                    f"{r.arena_used:,} B |")
    return "\n".join(rows)


def run_all(board: str, sc: Scenario, classes: list[int]) -> list[Result]:
    from ..core import data as datasets
    from .session import open_device

    out = []
    ds = datasets.basic_motions()
    with open_device(board) as client:
        for c in classes:
            print(f"  normal: class {c} on {board} ...", flush=True)
            out.append(run(client, Scenario(**{**asdict(sc), "normal": c}), ds))
    return out


def cmd(a: argparse.Namespace) -> int:
    sc = Scenario(window=a.window, stride=a.stride, epochs=a.epochs, lr=a.lr, seed=a.seed,
                  features=not a.raw)
    classes = list(range(4)) if a.normal is None else [a.normal]
    res = run_all(a.board, sc, classes)
    print()
    print(table(res))
    for r in res:
        print(f"{r.normal}: ROC AUC device {r.auc_device:.3f}, host {r.auc_host:.3f}; "
              f"device scores {'=' if r.same_scores else '!='} int8 twin")
    return 0 if all(r.same_scores for r in res) else 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cliargs import BOARDS, FloatRange, IntRange

    p.add_argument("--board", default="mps2-an386", choices=BOARDS + ["host"])
    p.add_argument("--normal", type=IntRange(0, 3), default=None,
                   help="the normal class (0 Standing, 1 Running, 2 Walking, 3 Badminton); "
                   "default: each in turn")
    p.add_argument("--window", type=IntRange(2, 100), default=Scenario.window)
    p.add_argument("--stride", type=IntRange(1, 100), default=Scenario.stride)
    p.add_argument("--epochs", type=IntRange(1, 200), default=Scenario.epochs)
    p.add_argument("--lr", type=FloatRange(0.0, 1.0), default=Scenario.lr)
    p.add_argument("--seed", type=IntRange(0, 2**31 - 1), default=0)
    p.add_argument("--raw", action="store_true",
                   help="the raw windows (window x 6 values) instead of their features")


def measure_figure() -> dict:
    """``kilolearn docs --measure anomaly``: `kilolearn anomaly` (every class normal in turn)
    on the emulated M4, as JSON data."""
    sc = Scenario()
    res = run_all("mps2-an386", sc, list(range(4)))
    out = []
    for r in res:
        d = asdict(r)
        d.pop("scores")
        out.append(d)
    return {"board": "mps2-an386", "scenario": asdict(sc), "results": out}


def render(rec: dict) -> str:
    d = rec["data"]
    sc = d["scenario"]
    res = [Result(**r) for r in d["results"]]
    same = all(r.same_scores for r in res)
    return "\n".join([
        f"BasicMotions (aeon): one class normal, the other three anomalies; {sc['window']}-step "
        f"windows every {sc['stride']} steps, as features (per channel mean, deviation, minimum, "
        f"maximum: 24 values); autoencoder 24-{'-'.join(map(str, sc['hidden']))}-24 (ReLU, "
        f"mean squared error), int8, learnt on QEMU {d['board']} (Cortex-M4) from the stream of "
        f"the normal training windows ({sc['epochs']} passes, lr {sc['lr']}), scored over the "
        f"session protocol; host: the same autoencoder, float32 numpy, the same stream "
        f"(measured {rec['measured']}; rerun: `kilolearn docs --measure anomaly`):",
        "",
        table(res),
        "",
        f"- The device's scores {'equal' if same else 'DIFFER from'} its int8 numpy twin's, "
        "window for window, and its threshold the twin's float32 rule (to 1e-4).",
        "- Untrained (in brackets): the scores of the initial autoencoder, whose error already "
        "grows with the distance from the normal stream's mean (the features are scaled by it).",
    ])
