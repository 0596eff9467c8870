"""``kilolearn fleet``: boards learning together on Flower (docs/fleet.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from .. import cliargs as ca
from ..cliargs import UsageError
from . import boards as B

if TYPE_CHECKING:
    from .run import FleetConfig

DATASETS = ["digits", "fashion"]
N_CLASSES = 10  # both built-in data sets


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--boards", type=ca.IntRange(1, 10_000), default=None, metavar="N",
                   help="boards in the fleet (default 8; with --port/--hardware-map: one "
                   "per port)")
    p.add_argument("--board", default="mps2-an386", choices=ca.BOARDS + ["host", B.TWIN],
                   help="what each board is: an emulated board started here (default), the "
                   "host build, or twin (a virtual board: the numpy twin)")
    p.add_argument("--port", type=ca.PortUrl(), action="append", default=[],
                   help="a real board's pyserial URL (repeat: one board each)")
    p.add_argument("--hardware-map", type=ca.InFile("hardware map"),
                   help="twister's hardware map (west twister --generate-hardware-map): one "
                   "board per connected entry's serial port")
    p.add_argument("--data", default="digits", choices=DATASETS)
    p.add_argument("--classes-per-board", type=ca.IntRange(1, N_CLASSES), default=3,
                   metavar="K", help="each board sees K classes (non-IID; default 3)")
    p.add_argument("--max-samples", type=ca.IntRange(1, 1_000_000), metavar="N",
                   help="at most N samples per board (a random subset of its share)")
    p.add_argument("--rounds", type=ca.IntRange(1, 1000), default=10)
    p.add_argument("--epochs", type=ca.EPOCHS, default=2,
                   help="local epochs per round on each board (default 2)")
    p.add_argument("--lr", type=ca.LR, default=0.05, help="SGD learning rate, in (0, 10]")
    p.add_argument("--dtype", default="s8", choices=["s8", "f32"])
    p.add_argument("--hidden", type=ca.IntRange(1, 4096), default=32,
                   help="the MLP's hidden units")
    p.add_argument("--seed", type=ca.SEED, default=0)
    p.add_argument("--engine", default="inline", choices=["inline", "simulation"],
                   help="inline: Flower's messages served in this process, one board after "
                   "the other; simulation: Flower's simulation engine (Ray), --workers boards "
                   "at a time")
    p.add_argument("--workers", type=ca.IntRange(1, 256), default=2,
                   help="simulation: boards trained at a time (default 2)")
    p.add_argument("--timeout", type=ca.TIMEOUT, default=10.0, metavar="SECONDS",
                   help="wait this long for each reply of a device (default 10)")
    p.add_argument("--kill", type=ca.IntRange(0, 9_999), metavar="BOARD",
                   help="fault test: this board's device is killed mid-round in --fault-round")
    p.add_argument("--hang", type=ca.IntRange(0, 9_999), metavar="BOARD",
                   help="fault test: this board's device stops answering mid-round in "
                   "--fault-round (its replies time out)")
    p.add_argument("--corrupt", type=ca.IntRange(0, 9_999), metavar="BOARD",
                   help="fault test: this board's returned blob is damaged in --fault-round")
    p.add_argument("--fault-round", type=ca.IntRange(1, 1000), default=2, metavar="ROUND")
    p.add_argument("--no-twin", action="store_true",
                   help="devices: skip running the same fleet in the numpy twin")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip each board alone and the centralised model")
    p.add_argument("--verbose", action="store_true", help="Flower's own log lines too")
    p.add_argument("--json", type=ca.OutFile(), help="write the results as JSON to this file")
    p.add_argument("--plot", type=ca.OutFile(ca.PLOT_SUFFIXES),
                   help="write a plot of accuracy per round to this .png/.pdf/.svg file")


def hardware_map(path: str) -> list[str]:
    """The serial ports of a twister hardware map's connected boards (UsageError if none)."""
    import yaml

    try:
        entries = yaml.safe_load(Path(path).read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UsageError(f"--hardware-map {path}: not YAML ({ca.one_line(str(e))})") from None
    if not isinstance(entries, list):
        raise UsageError(f"--hardware-map {path}: expected a list of boards (twister's "
                         "hardware map)")
    ports = [str(e["serial"]) for e in entries
             if isinstance(e, dict) and e.get("serial") and e.get("connected", True)]
    if not ports:
        raise UsageError(f"--hardware-map {path}: no connected board with a serial port")
    return ports


def config(a: argparse.Namespace) -> FleetConfig:
    """The FleetConfig of the arguments, or UsageError (before any work)."""
    from .run import FleetConfig

    urls = list(a.port) + (hardware_map(a.hardware_map) if a.hardware_map else [])
    n = len(urls) if urls else (a.boards or 8)
    if urls and a.boards not in (None, n):
        raise UsageError(f"--boards {a.boards}: {len(urls)} real boards given (--port, "
                         "--hardware-map)")
    given = [(opt, k) for opt, k in (("--kill", a.kill), ("--hang", a.hang),
                                      ("--corrupt", a.corrupt)) if k is not None]
    for opt, k in given:
        if k >= n:
            raise UsageError(f"{opt} {k}: the fleet has boards 0 to {n - 1}")
    if given and a.fault_round > a.rounds:
        raise UsageError(f"--fault-round {a.fault_round}: the run has {a.rounds} rounds")
    if len({k for _, k in given}) < len(given):
        raise UsageError(f"{' and '.join(o for o, _ in given)} name the same board")
    if urls and (a.kill is not None or a.hang is not None):
        raise UsageError(f"{'--kill' if a.kill is not None else '--hang'} acts on an emulated "
                         "board's process; real boards (--port, --hardware-map) cannot be")
    if n * a.classes_per_board < N_CLASSES:
        raise UsageError(f"--classes-per-board {a.classes_per_board}: {n} boards of "
                         f"{a.classes_per_board} classes leave classes out (need boards x "
                         f"classes >= {N_CLASSES})")
    if a.lr > 1 and a.dtype == "s8":
        raise UsageError(f"--lr {a.lr:g}: int8 training takes a learning rate up to 1")
    import importlib.util

    for mod, why in (("flwr", "kilolearn fleet"), ("ray", "--engine simulation")):
        if (mod == "flwr" or a.engine == "simulation") and importlib.util.find_spec(mod) is None:
            raise UsageError(f"{why} needs Flower{' with Ray' if mod == 'ray' else ''}: "
                             "pip install 'kilolearn[fleet]'")
    if a.plot:
        ca.need_matplotlib("--plot")
    faults = {}
    if a.kill is not None:
        faults[(a.fault_round, a.kill)] = B.KILL
    if a.hang is not None:
        faults[(a.fault_round, a.hang)] = B.HANG
    if a.corrupt is not None:
        faults[(a.fault_round, a.corrupt)] = B.CORRUPT
    return FleetConfig(n_boards=n, board=a.board, urls=urls, data=a.data,
                       classes_per_board=a.classes_per_board,
                       max_samples=a.max_samples, rounds=a.rounds,
                       local=B.Local(a.epochs, a.lr, a.seed + 1), dtype=a.dtype,
                       hidden=a.hidden, seed=a.seed, engine=a.engine, workers=a.workers,
                       timeout=a.timeout, faults=faults, twin_fleet=not a.no_twin,
                       baselines=not a.no_baselines)


def quiet_flower(verbose: bool) -> None:
    """Flower's INFO lines (and Ray's tips) only with --verbose."""
    import logging
    import warnings

    import flwr  # noqa: F401 - sets up its logger, which is then quietened

    logging.getLogger("flwr").setLevel(logging.INFO if verbose else logging.ERROR)
    if not verbose:
        warnings.filterwarnings("ignore", category=FutureWarning)


def run(a: argparse.Namespace) -> int:
    import numpy as np

    from . import run as R

    cfg = config(a)
    quiet_flower(a.verbose)
    res = R.run(cfg, lambda m: print(m, flush=True))
    print("\n" + R.summary(res))
    if res.alone:
        print(f"\neach board alone after {len(res.rounds)} rounds: mean "
              f"{100 * float(np.mean(res.alone)):.2f} % (best {100 * max(res.alone):.2f} %); "
              f"centralised {100 * res.centralised[-1]:.2f} %; fleet "
              f"{100 * res.rounds[-1]['accuracy']:.2f} %")
    equal = [b.get("twin-equal") for r in res.rounds for b in r["boards"] if b["ok"]]
    if any(e is not None for e in equal):
        print(f"device rounds = numpy twin, bit for bit: {int(sum(e or 0 for e in equal))} of "
              f"{len(equal)} board rounds")
    if res.twin_rounds_equal is not None:
        print(f"global models = the twin fleet's: {'yes' if res.twin_rounds_equal else 'NO'}")
    print(f"{res.seconds:.1f} s")
    if a.json:
        Path(a.json).write_text(json.dumps(res.as_dict(), indent=1))
    if a.plot:
        R.plot(res, a.plot)
    mismatch = res.twin_rounds_equal is False or any(e == 0 for e in equal)
    if mismatch:
        print("MISMATCH: the devices and the numpy twin differ")
    return 1 if mismatch else 0
