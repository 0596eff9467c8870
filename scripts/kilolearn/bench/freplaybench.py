"""Latent replay in flash against the SRAM buffer (docs/replay.md): the default session scenario
(split digits, int8, 5 tasks of 2 classes) on an emulated board with the replay buffer's latents
in the arena (200) or in the board's replay store (200, and 2,000: more than the arena holds),
each run against the numpy twin; per task the flash traffic; and the power-cut test
(kl_freplay_faults) on the host under ASan/UBSan and on the board.

    kilolearn docs --measure replay-flash
"""

from __future__ import annotations

import re

from ..device import build, protocol, qemu
from ..device import session as S

BOARD = "mps2-an386"
RUNS = [("SRAM", 200, False), ("flash", 200, True), ("flash", 2000, True)]
SEEDS = [2, 3, 4, 5, 6]  # the scenario's seed first: the spread over seeds of SRAM 200 / flash 2000


def _run(client: protocol.Client, where: str, cap: int, flash: bool, seed: int = 2) -> dict:
    r = S.run(client, "replay", S.Scenario(replay_cap=cap, replay_flash=flash, seed=seed))
    keys = ("replay_bytes_written", "replay_erases", "replay_copies")
    prev = dict.fromkeys(keys, 0)
    tasks = []
    for st in r.stats:
        tasks.append({k: st[k] - prev[k] for k in keys} | {"held": st["replay_count"]})
        prev = st
    last = r.stats[-1]
    info = client.info()
    return {"lines": info.config.replay_lines if info.config else 0, "where": where, "cap": cap,
            "acc": r.acc_after_task,
            "twin": r.reference_acc_after_task, "task_acc": r.task_acc[-1], "tasks": tasks,
            "arena_used": last["arena_used"], "arena_peak": last["arena_peak"],
            "insn_per_sample": last["train_insn"] / max(last["train_steps"], 1),
            "hits": last["replay_cache_hits"], "misses": last["replay_cache_misses"],
            "store_size": last["replay_store_size"], "seconds": r.seconds}


def _sram_refusal(client: protocol.Client, cap: int) -> dict:
    """CONFIG of an arena buffer of cap latents: what the device says."""
    sc = S.Scenario()
    cut = S.build_model(sc).graph.ops[0].output
    try:
        client.config(lr=sc.lr, seed=sc.seed, cut=cut, replay_ratio=sc.replay_ratio,
                      classes=b"", replay_cap=cap)
        status = 0
    except protocol.DeviceError as e:
        status = e.status
    return {"cap": cap, "status": status, "arena": client.info().arena_size,
            "bytes": S.replay_bytes(cap, sc.backbone, 10)}


def _faults(out: str) -> dict:
    cuts = [int(n) for n in re.findall(r"(\d+) cuts \(", out)]
    return {"pass": out.rstrip().endswith("PASS"), "geometries": len(cuts), "cuts": sum(cuts),
            "restored": sum(int(n) for n in re.findall(r"(\d+) restored the last", out)),
            "went_on": sum(int(n) for n in re.findall(r"(\d+) went on as the reference", out)),
            "latents": sum(int(n) for n in re.findall(r"\((\d+) latents checked\)", out)),
            "copies": sum(int(n) for n in re.findall(r"\((\d+) reclaim copies\)", out)),
            "failed": sum(int(n) for n in re.findall(r"(\d+) failed", out))}


def measure_figure() -> dict:
    import subprocess

    runs = []
    with S.open_device(BOARD, timeout=120) as client:
        for where, cap, flash in RUNS:
            runs.append(_run(client, where, cap, flash))
        spread = {f"{w}, {c}": [(r["acc"][-1], r["twin"][-1], r["task_acc"][0]) for r in
                                [next(x for x in runs if (x["where"], x["cap"]) == (w, c))]
                                + [_run(client, w, c, f, seed) for seed in SEEDS[1:]]]
                  for w, c, f in (RUNS[0], RUNS[2])}
        refusal = _sram_refusal(client, 2000)
    exe = build.build("host", sanitize=True, target="kl_freplay_faults")
    host = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600).stdout
    elf = build.build(BOARD, target="kl_freplay_faults")
    board = qemu.run_firmware(elf, BOARD, timeout=900).stdout
    return {"board": BOARD, "runs": runs, "seeds": SEEDS, "spread": spread, "sram_2000": refusal,
            "faults": {"host": _faults(host), BOARD: _faults(board)}}


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def render(rec: dict) -> str:
    d = rec["data"]
    runs, ref = d["runs"], d["sram_2000"]
    rows = ["| replay buffer | latents held | accuracy on the classes seen, after task 1…5: "
            "board (twin) % | first task at the end | arena used | flash programmed | "
            "sectors erased | reclaim copies | instructions per new sample |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        same = r["acc"] == r["twin"]
        acc = " / ".join(_pct(a) for a in r["acc"]) + (" (= twin)" if same else " (twin: " +
                                                         " / ".join(_pct(a) for a in r["twin"])
                                                         + ")")
        flash = r["where"] == "flash"
        tot = {k: sum(t[k] for t in r["tasks"]) for k in r["tasks"][0]}
        rows.append(f"| {r['where']}, {r['cap']:,} | {r['tasks'][-1]['held']:,} | {acc} | "
                    f"{_pct(r['task_acc'][0])} % | {r['arena_used']:,} B | "
                    + (f"{tot['replay_bytes_written']:,} B | {tot['replay_erases']:,} | "
                       f"{tot['replay_copies']:,} | " if flash else "- | - | - | ")
                    + f"{r['insn_per_sample']:,.0f} |")
    big = next(r for r in runs if r["where"] == "flash" and r["cap"] == max(x["cap"] for x in runs))
    per = ["| task | " + " | ".join(str(i + 1) for i in range(len(big["tasks"]))) + " |",
           "|---|" + "---:|" * len(big["tasks"])]
    per.append("| latents held | " + " | ".join(f"{t['held']:,}" for t in big["tasks"]) + " |")
    per.append("| flash programmed | " + " | ".join(f"{t['replay_bytes_written'] / 1024:,.0f} KB"
                                                     for t in big["tasks"]) + " |")
    per.append("| sectors erased | " + " | ".join(f"{t['replay_erases']:,}"
                                                   for t in big["tasks"]) + " |")
    per.append("| reclaim copies | " + " | ".join(f"{t['replay_copies']:,}"
                                                   for t in big["tasks"]) + " |")
    seeds = ["| replay buffer | " + " | ".join(f"seed {x}" for x in d["seeds"]) + " | mean |",
             "|---|" + "---:|" * (len(d["seeds"]) + 1)]
    means = {}
    for k, v in d["spread"].items():
        mark = "" if all(a == t for a, t, _ in v) else " (board ≠ twin)"
        mean_a, mean_f = (sum(x[i] for x in v) / len(v) for i in (0, 2))
        means[k] = mean_a
        where, cap = k.split(", ")
        seeds.append(f"| {where}, {int(cap):,}{mark} | " + " | ".join(f"{_pct(a)} % ({_pct(f)} %)"
                                                     for a, _, f in v)
                     + f" | {_pct(mean_a)} % ({_pct(mean_f)} %) |")
    f = d["faults"]
    fault_lines = [f"- Power cuts ({k}): {v['cuts']:,} cut points over {v['geometries']} "
                   f"geometries (every program/erase step, clean and torn in turn): "
                   f"{v['restored']:,} reboots found exactly the state of the last committed "
                   f"record ({v['latents']:,} latents compared byte for byte, 0 committed latents "
                   f"lost), {v['went_on']:,} then went on exactly as the in-memory reference; "
                   f"{v['failed']} failed." for k, v in f.items()]
    status = protocol.STATUS.get(ref["status"], ref["status"]) if ref["status"] else "accepted"
    n = len(runs[0]["acc"])
    return "\n".join([
        f"Default session scenario (split digits, int8, {n} tasks of 2 classes, 3 epochs, "
        f"replay ratio 2), QEMU {d['board']} (Cortex-M4), instructions under `-icount shift=0`; "
        f"the board's replay store is a NOR simulation of {big['store_size'] // 1024:,} KB "
        f"(4 KB sectors, 16-byte writes) (measured {rec['measured']}; rerun: `kilolearn docs "
        f"--measure replay-flash`):", "", *rows, "",
        f"Flash traffic per task of the {big['cap']:,}-latent flash buffer:", "", *per, "",
        "Accuracy on all classes after the last task (and on the first task's classes) over "
        "seeds of the scenario (the model's initialisation, the order of the samples, the "
        "reservoir's generator), board = twin in every run unless marked:", "", *seeds, "",
        f"- An arena buffer of {ref['cap']:,} latents needs {ref['bytes']:,} B besides the model: "
        f"the board ({ref['arena']:,} B arena) answers CONFIG with {status}.",
        f"- The flash buffer of 200 makes the very choices of the arena one (the same accuracy "
        f"after every task, equal to the twin's) in "
        f"{runs[1]['arena_used']:,} B of arena instead of {runs[0]['arena_used']:,} B; it costs "
        f"{runs[1]['insn_per_sample'] - runs[0]['insn_per_sample']:,.0f} instructions more per "
        f"new sample (the record's write, the replayed latents' reads), the 2,000 "
        f"{big['insn_per_sample'] - runs[0]['insn_per_sample']:,.0f} (the reservoir finds the "
        f"j-th latent of a class by a walk over the labels held).",
        f"- Over the {len(d['seeds'])} seeds the 2,000-latent buffer ends at "
        f"{_pct(means['flash, 2000'])} % on average, the 200-latent one at "
        f"{_pct(means['SRAM, 200'])} %: at replay ratio 2 ten times more latents "
        + ("do not buy accuracy in this scenario" if means["flash, 2000"] <= means["SRAM, 200"]
           else "buy accuracy") + (
            "; the scenario's own seed is the 2,000's lowest run."
            if d["spread"]["flash, 2000"][0][0] == min(x[0] for x in d["spread"]["flash, 2000"])
            else "."),
        f"- Cache: {big['hits']:,} of {big['hits'] + big['misses']:,} replayed latents came from "
        f"the {big['lines']} cached ones (picks are uniform over the "
        f"buffer), the rest were read from the store.",
        *fault_lines])
