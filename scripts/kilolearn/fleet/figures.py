"""The fleet's figures in the docs (``kilolearn docs --measure fleet``; docs/fleet.md): eight
emulated Cortex-M4 boards against each board alone and one centralised model, a fault run,
and Flower's simulation engine with 10 to 100 virtual boards."""

from __future__ import annotations

import numpy as np

from . import boards as B
from . import run as R

BOARD = "mps2-an386"
N_BOARDS = 8
ROUNDS = 10
FAULT_ROUNDS = 3
KILLED, DAMAGED = 3, 5
SIM_BOARDS = (10, 30, 100)
PLOT = "docs/fleet-digits.png"
COMMAND = (f"kilolearn fleet --board {BOARD} --boards {N_BOARDS} --rounds {ROUNDS} --plot "
           f"{PLOT}; the same with --rounds {FAULT_ROUNDS} --kill {KILLED} --corrupt "
           f"{DAMAGED}; kilolearn fleet --board twin --engine simulation --boards N "
           f"--classes-per-board 2 --rounds {ROUNDS} for N in {', '.join(map(str, SIM_BOARDS))}")


def _rounds(res: R.FleetResult) -> list[dict]:
    """Per round: accuracy, boards kept, reasons, bytes per kept board (mean), twin checks."""
    out = []
    for r in res.rounds:
        ok = [b for b in r["boards"] if b["ok"]]

        def mean(key: str, ok: list[dict] = ok) -> float:
            return float(np.mean([b.get(key, 0.0) for b in ok])) if ok else 0.0

        out.append({"round": r["round"], "accuracy": r["accuracy"], "elapsed": r["elapsed"],
                    "boards": len(ok), "dropped": {str(b["board"]): b["reason"]
                                                   for b in r["boards"] if not b["ok"]},
                    "link_tx": mean("link-tx"), "link_rx": mean("link-rx"),
                    "blob_down": mean("blob-down"), "blob_up": mean("blob-up"),
                    "twin_equal": int(sum(b.get("twin-equal", 0) for b in ok)),
                    "insn": mean("train-insn"), "steps": mean("train-steps")})
    return out


def _summary(res: R.FleetResult) -> dict:
    return {"initial": res.initial_accuracy, "rounds": _rounds(res), "alone": res.alone,
            "centralised": res.centralised, "twin_rounds_equal": res.twin_rounds_equal,
            "seconds": res.seconds, "partition": res.partition,
            "samples": res.samples}


def measure_figure() -> dict:
    from ..tools.docfigs import _doc_path
    from .cli import quiet_flower

    quiet_flower(False)
    main = R.run(R.FleetConfig(n_boards=N_BOARDS, board=BOARD, rounds=ROUNDS))
    R.plot(main, str(_doc_path(PLOT)))
    faults = R.run(R.FleetConfig(n_boards=N_BOARDS, board=BOARD, rounds=FAULT_ROUNDS,
                                 faults={(2, KILLED): B.KILL, (2, DAMAGED): B.CORRUPT},
                                 baselines=False))
    sims = {}
    for n in SIM_BOARDS:
        sims[str(n)] = _summary(R.run(R.FleetConfig(
            n_boards=n, board=B.TWIN, classes_per_board=2, rounds=ROUNDS, engine="simulation",
            baselines=False)))
    return {"board": BOARD, "n_boards": N_BOARDS, "data": "digits", "classes_per_board": 3,
            "epochs": main.config["local"]["epochs"], "lr": main.config["local"]["lr"],
            "main": _summary(main), "faults": _summary(faults), "simulation": sims}


def _pct(v: float) -> str:
    return f"{100 * v:.2f} %"


def render(rec: dict) -> str:
    d = rec["data"]
    m = d["main"]
    rows = ["| round | fleet (global model) | centralised (all data) | boards | "
            "bytes per board: link to / from the board | model blob down / up |",
            "|---|---|---|---|---|---|",
            f"| 0 | {_pct(m['initial'])} | {_pct(m['initial'])} | | | |"]
    for r, c in zip(m["rounds"], m["centralised"], strict=False):
        rows.append(f"| {r['round']} | {_pct(r['accuracy'])} | {_pct(c)} | "
                    f"{r['boards']}/{d['n_boards']} | {r['link_tx']:,.0f} / {r['link_rx']:,.0f}"
                    f" | {r['blob_down']:,.0f} / {r['blob_up']:,.0f} |")
    n_rounds = sum(r["boards"] for r in m["rounds"])
    same = sum(r["twin_equal"] for r in m["rounds"])
    alone = m["alone"]
    parts = ", ".join("{" + ",".join(map(str, p)) + "}" for p in m["partition"])
    insn = float(np.mean([r["insn"] / r["steps"] for r in m["rounds"] if r["steps"]]))
    return "\n".join([
        f"{d['n_boards']} Cortex-M4 boards (QEMU {d['board']}), sklearn digits, "
        f"{d['classes_per_board']} classes per board ({parts}), int8 64-32-10 MLP, "
        f"{len(m['rounds'])} rounds of {d['epochs']} local epochs (lr {d['lr']:g}), every "
        f"board every round, boards one after the other ({m['seconds']:,.0f} s in all with "
        f"the twin fleet and the baselines); {_measured(rec)}:",
        "",
        *rows,
        "",
        f"- Each board alone (its own data, the same {len(m['rounds'])} rounds of local "
        f"training, never aggregated): {_pct(float(np.mean(alone)))} on average "
        f"({_pct(min(alone))}–{_pct(max(alone))}): a board that has seen 3 classes knows 3.",
        f"- Device = numpy twin: {same} of {n_rounds} board rounds pulled back the twin's "
        f"model bit for bit; the global model of every round equals the twin fleet's: "
        f"{'yes' if m['twin_rounds_equal'] else 'NO'}.",
        f"- On the board: {insn:,.0f} instructions per training step (icount).",
    ])


def render_faults(rec: dict) -> str:
    d = rec["data"]
    f = d["faults"]
    rows = ["| round | fleet (global model) | boards | dropped (the server's log) |",
            "|---|---|---|---|"]
    for r in f["rounds"]:
        why = "; ".join(f"board {k}: {v}" for k, v in r["dropped"].items()) or "-"
        rows.append(f"| {r['round']} | {_pct(r['accuracy'])} | {r['boards']}/{d['n_boards']} "
                    f"| {why} |")
    return "\n".join([
        f"The same {d['n_boards']} boards, {len(f['rounds'])} rounds; in round 2 board "
        f"{KILLED}'s QEMU is killed once its first epoch is sent and board {DAMAGED}'s pulled "
        f"blob has 3 bytes flipped on its way to the server ({_same(rec)}):",
        "",
        *rows,
        "",
        f"Both are back in round 3; the global models of every round equal the twin fleet's "
        f"(the same faults): {'yes' if f['twin_rounds_equal'] else 'NO'}.",
    ])


def render_sim(rec: dict) -> str:
    sims = rec["data"]["simulation"]
    ns = list(sims)
    head = "| round | " + " | ".join(f"{n} boards" for n in ns) + " |"
    rows = [head, "|---|" + "---|" * len(ns)]
    for k in range(len(sims[ns[0]]["rounds"])):
        rows.append(f"| {k + 1} | " + " | ".join(
            f"{_pct(sims[n]['rounds'][k]['accuracy'])}" for n in ns) + " |")
    per_round = [sims[n]["rounds"][-1]["blob_down"] + sims[n]["rounds"][-1]["blob_up"]
                 for n in ns]
    wall = [sims[n]["rounds"][-1]["elapsed"] - sims[n]["rounds"][0]["elapsed"] for n in ns]
    return "\n".join([
        "Flower's simulation engine (`run_simulation`, Ray, 2 workers), virtual boards running "
        "the numpy twin (= the device, bit for bit), 2 classes of digits per board "
        f"({_same(rec)}): test accuracy of the global model per round:",
        "",
        *rows,
        "",
        "| boards | samples per board | model bytes per round (all boards, down + up) | "
        "wall time: whole run / per round after the first |",
        "|---|---|---|---|",
        *[f"| {n} | {np.mean(sims[n]['samples']):,.0f} | {int(n) * b:,.0f} | "
          f"{sims[n]['seconds']:,.1f} s / {w / max(len(sims[n]['rounds']) - 1, 1):,.2f} s |"
          for n, b, w in zip(ns, per_round, wall, strict=True)],
    ])


def _same(rec: dict) -> str:
    return f"measured {rec['measured']} with the figure above, `kilolearn docs --measure fleet`"


def _measured(rec: dict) -> str:
    from ..tools.docfigs_render import _measured as m

    return m(rec)
