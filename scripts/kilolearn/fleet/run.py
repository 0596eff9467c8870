"""A fleet run end to end (``kilolearn fleet``): the initial model, the non-IID split, the
Flower rounds (devices or virtual boards), and beside them what the figure is judged against:
the same fleet in the numpy twin (device rounds = twin rounds, bit for bit), each board
training alone on its own data, and one model trained on all the data (centralised)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from ..core import fit
from ..core import reference as R
from ..formats import export
from . import boards as B


@dataclass
class FleetConfig:
    n_boards: int = 8
    board: str = "mps2-an386"  # an emulated board, 'host', or boards.TWIN (virtual boards)
    urls: list[str] = field(default_factory=list)  # real boards instead (one per board)
    data: str = "digits"
    classes_per_board: int = 3
    max_samples: int | None = None  # per board (a random subset of its share)
    rounds: int = 10
    local: B.Local = field(default_factory=B.Local)
    dtype: str = "s8"
    hidden: int = 32
    seed: int = 0
    engine: str = "inline"  # or 'simulation' (Flower's simulation engine, Ray)
    workers: int = 2  # simulation: ClientApps at a time
    timeout: float = 10.0
    faults: dict[tuple[int, int], str] = field(default_factory=dict)
    twin_fleet: bool = True  # devices: also run the fleet in the numpy twin and compare
    baselines: bool = True  # each board alone, centralised


@dataclass
class FleetResult:
    config: dict
    initial_accuracy: float
    rounds: list[dict] = field(default_factory=list)
    alone: list[float] = field(default_factory=list)  # each board alone, after all rounds
    centralised: list[float] = field(default_factory=list)  # per round
    twin_rounds_equal: bool | None = None  # the device fleet's global models = the twin's
    seconds: float = 0.0
    partition: list[list[int]] = field(default_factory=list)  # classes per board
    samples: list[int] = field(default_factory=list)  # per board

    def as_dict(self) -> dict:
        return asdict(self)


def initial_model(cfg: FleetConfig, x: np.ndarray, n_classes: int) -> bytes:
    """The fleet's starting model: a fresh MLP (int8: quantised on the first samples)."""
    m, p = fit.build("mlp", x.shape[1], n_classes, cfg.hidden, seed=cfg.seed)
    if cfg.dtype == "f32":
        return export.export_f32(m.graph, p)
    return export.export_s8(R.quantize_model(m.graph, p, x[:fit.CALIBRATION]))


def _alone(blob: bytes, x: np.ndarray, y: np.ndarray, local: B.Local, board: int,
           rounds: int, after: Callable[[int, bytes], None] | None = None) -> bytes:
    """A board that never talks to the others: ``rounds`` of the same local training."""
    for r in range(1, rounds + 1):
        order = local.order(len(x), board, r)
        blob = B.train_twin(blob, x[order], y[order], local.settings(len(x), board, r))
        if after is not None:
            after(r, blob)
    return blob


def run(cfg: FleetConfig, progress: Callable[[str], None] | None = None) -> FleetResult:
    from . import flower as F

    say = progress or (lambda _m: None)
    t0 = time.monotonic()
    ds = B.load_data(cfg.data)
    n_classes = int(ds.y_train.max()) + 1
    parts = B.split(ds.y_train, cfg.n_boards, cfg.classes_per_board, n_classes, cfg.seed)
    if cfg.max_samples is not None:
        parts = [np.sort(np.random.default_rng([cfg.seed, k]).permutation(p)[:cfg.max_samples])
                 for k, p in enumerate(parts)]
    blob = initial_model(cfg, ds.x_train, n_classes)

    def evaluate(b: bytes) -> float:
        return fit.evaluate(b, ds.x_test, ds.y_test)

    res = FleetResult({**asdict(cfg), "faults": [[r, k, f] for (r, k), f in cfg.faults.items()]},
                      evaluate(blob),
                      partition=[sorted({int(c) for c in ds.y_train[p]}) for p in parts],
                      samples=[len(p) for p in parts])
    if cfg.urls:
        boards = [B.Board("port", url, cfg.timeout) for url in cfg.urls]
    else:
        boards = [B.Board(cfg.board, None, cfg.timeout)]
    spec = F.FleetSpec(cfg.data, parts, cfg.local, boards, dict(cfg.faults))

    def on_round(rep: F.RoundReport) -> None:
        row = {"round": rep.round, "accuracy": rep.accuracy, "elapsed": time.monotonic() - t0,
               "boards": [{"board": b.board, "ok": b.ok, "reason": b.reason, **b.metrics}
                          for b in rep.boards]}
        res.rounds.append(row)
        ok = [b for b in rep.boards if b.ok]
        link = sum(b.metrics.get("link-tx", 0) + b.metrics.get("link-rx", 0) for b in ok)
        model = sum(b.metrics.get("blob-down", 0) + b.metrics.get("blob-up", 0) for b in ok)
        say(f"round {rep.round}/{cfg.rounds}: accuracy {100 * (rep.accuracy or 0):.2f} %, "
            f"{len(ok)}/{cfg.n_boards} boards, model {model / 1024:.1f} KiB"
            + (f", link {link / 1024:.1f} KiB" if link else "")
            + "".join(f"; board {b.board} dropped: {b.reason}" for b in rep.dropped))

    if not cfg.urls and cfg.board != B.TWIN:  # build the firmware once, before any round
        from ..device import build

        build.build(cfg.board, target="kl_session")
    strategy = F.KiloFedAvg(cfg.n_boards, on_round)
    say(f"{cfg.n_boards} boards ({'real' if cfg.urls else cfg.board}), {cfg.rounds} rounds, "
        f"{cfg.engine} engine; initial accuracy {100 * res.initial_accuracy:.2f} %")
    if cfg.engine == "simulation":
        F.run_simulation(spec, strategy, blob, cfg.rounds, evaluate, cfg.workers)
    else:
        F.run_inline(spec, strategy, blob, cfg.rounds, evaluate)
    devices = bool(cfg.urls) or cfg.board != B.TWIN
    if devices and cfg.twin_fleet:
        say("the same fleet in the numpy twin")
        twin = F.KiloFedAvg(cfg.n_boards)
        F.run_inline(F.FleetSpec(cfg.data, parts, cfg.local, [B.Board()], dict(cfg.faults)),
                     twin, blob, cfg.rounds, evaluate)
        res.twin_rounds_equal = len(twin.rounds) == len(strategy.rounds) and all(
            a.blob == b.blob and [x.board for x in a.dropped] == [x.board for x in b.dropped]
            for a, b in zip(strategy.rounds, twin.rounds, strict=True))
    if cfg.baselines:
        say("baselines: each board alone, one model on all the data")
        res.alone = [evaluate(_alone(blob, ds.x_train[p], ds.y_train[p], cfg.local, k,
                                     cfg.rounds)) for k, p in enumerate(parts)]
        _alone(blob, ds.x_train, ds.y_train, cfg.local, 0, cfg.rounds,
               lambda _r, b: res.centralised.append(evaluate(b)))
    res.seconds = time.monotonic() - t0
    return res


def summary(res: FleetResult) -> str:
    """The table ``kilolearn fleet`` ends with: accuracy per round beside centralised."""
    from tabulate import tabulate

    rows = []
    for k, r in enumerate(res.rounds):
        ok = [b for b in r["boards"] if b["ok"]]
        per = np.mean([b.get("link-tx", 0) + b.get("link-rx", 0) for b in ok]) if ok else 0
        rows.append([r["round"], f"{100 * r['accuracy']:.2f} %",
                     f"{100 * res.centralised[k]:.2f} %" if k < len(res.centralised) else "-",
                     f"{len(ok)}/{len(r['boards'])}", f"{per:,.0f}" if per else "-",
                     "; ".join(f"{b['board']}: {b['reason']}" for b in r["boards"]
                               if not b["ok"])])
    return tabulate(rows, headers=["round", "global", "centralised", "boards",
                                   "link B/board", "dropped"])


def plot(res: FleetResult, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [r["round"] for r in res.rounds]
    ax.plot([0, *xs], [100 * res.initial_accuracy] + [100 * r["accuracy"] for r in res.rounds],
            marker="o", label=f"fleet of {res.config['n_boards']} (Flower, FedAvg)")
    if res.centralised:
        ax.plot(range(len(res.centralised) + 1),
                [100 * res.initial_accuracy] + [100 * a for a in res.centralised],
                ls="--", color="gray", label="centralised (all data)")
    if res.alone:
        ax.axhline(100 * float(np.mean(res.alone)), ls=":", color="tab:red",
                   label="each board alone (mean)")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{res.config['data']}, {res.config['classes_per_board']} classes per board, "
                 f"{res.config['dtype']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
