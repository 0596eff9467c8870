"""The figure ``planner-f429`` (docs/planner.md): MobileNetV1 alpha 0.1 128x128, full-depth int8
training, planned for nucleo_f429zi's real memory map (192 KB SRAM + 64 KB CCM, two regions)
and trained on QEMU mps2-an386 with the same two regions (the runner's arena split: the static
part in one region of the CCM's size at most, the schedule's region in a second one,
kl_arena_set_far). Beside it: the same model planned for one contiguous region of the SRAM
alone, and for a hypothetical contiguous 256 KB.
"""

from __future__ import annotations

import dataclasses

BOARD = "mps2-an386"
TARGET_BOARD = "nucleo_f429zi"


def measure_figure() -> dict:
    import numpy as np

    from .. import planner as P
    from ..core import model as M
    from ..core import reference as R
    from ..footprint import find_board
    from . import planbench as B

    board = find_board(TARGET_BOARD)
    rams = sorted((r for r in board.regions if r.kind == "ram"), key=lambda r: -r.size)
    big, small = rams[0], rams[1]
    mdl = M.mobilenet_v1((128, 128, 3), 10, alpha=0.1)
    g = mdl.graph
    mm = P.MemModel(g, "s8", target="arm")
    static = mm.static_bytes(aligned=False)
    if static > small.size:
        raise RuntimeError(f"the static part {static:,} B does not fit {small.name}")
    print("  planning ...", flush=True)
    two = P.optimal(mm, mm.static_bytes() + big.size)
    one = P.optimal(mm, big.size)
    flat = P.optimal(mm, big.size + small.size)
    if two is None:
        raise RuntimeError("no two-region plan")
    x = np.random.default_rng(0).uniform(0, 1, (4,) + g.shapes[g.input]).astype(np.float32)
    qm = R.quantize_model(g, mdl.init(0), x)
    print(f"  training with the two-region plan on {BOARD} ...", flush=True)
    (ms,) = B.measure(qm, [(mm, two)], BOARD, far=True)

    def d(pl: P.Plan | None) -> dict | None:
        return None if pl is None else {"peak": pl.peak, "region": pl.region,
                                        "extra_pct": round(pl.extra_pct, 2),
                                        "phases": len(pl.phases)}

    return {"board": TARGET_BOARD, "regions": {r.name: r.size for r in rams},
            "static": static, "two": d(two), "one": d(one), "flat": d(flat),
            "measured": dataclasses.asdict(ms)}


def render(rec: dict) -> str:
    dd = rec["data"]
    (big, bs), (small, ss) = list(dd["regions"].items())[:2]
    m = dd["measured"]
    two, one, flat = dd["two"], dd["one"], dd["flat"]
    rows = ["| arena layout | static part | schedule's region | extra MACs | measured on "
            f"{BOARD} |", "|---|---|---|---|---|",
            f"| two regions: static in {small} ({ss:,} B), region in {big} ({bs:,} B) | "
            f"{dd['static']:,} B | {two['region']:,} B | {two['extra_pct']:.1f} % | "
            f"{m['measured_peak']:,} + {m['measured_far']:,} B (planned {m['planned_peak']:,} + "
            f"{m['planned_far']:,}) |",
            f"| one region: {big} alone ({bs:,} B) | in it | "
            + (f"{one['region']:,} B | {one['extra_pct']:.1f} % |" if one else "no plan | - |")
            + " - |",
            f"| one contiguous {bs + ss:,} B (not the real board) | in it | "
            + (f"{flat['region']:,} B | {flat['extra_pct']:.1f} % |" if flat else "no plan | - |")
            + " - |"]
    return ("\n".join(rows) + "\n\n" + f"*Measured {rec['measured']}: `{rec['command']}`; "
            f"instructions per sample on {BOARD} with the two-region plan: "
            f"{m['insn_per_sample']:,.0f}.*")
