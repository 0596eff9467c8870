"""The figure ``planner-f429`` (docs/planner.md): MobileNetV1 alpha 0.1 128x128, full-depth int8
training, planned for nucleo_f429zi's real memory map (192 KB SRAM + 64 KB CCM, two regions)
and trained on QEMU mps2-an386 with the same two regions (the runner's arena split,
kl_arena_set_far): the static part in the CCM, the schedule's region split at the SRAM's size
(blob 2.7), its offsets below that in the SRAM, the rest in the CCM after the static part.
Beside it: the region in the SRAM as one block (the static part alone in the CCM), one
contiguous region of the SRAM alone, and a hypothetical contiguous 256 KB.
"""

from __future__ import annotations

import dataclasses

BOARD = "mps2-an386"
TARGET_BOARD = "nucleo_f429zi"
RESERVE = 8192  # of the SRAM, for the firmware's own RAM and stack (as the 256 KB figure's)


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
    sram = (big.size - RESERVE) // 8 * 8
    mms = dataclasses.replace(mm, split=sram)
    two = P.optimal(mms, small.size + sram)  # the region split across the two
    full = dataclasses.replace(mm, split=big.size // 8 * 8)  # no reserve: the SRAM all arena
    two_full = P.optimal(full, small.size + full.split)
    block = P.optimal(mm, mm.static_bytes() + sram)  # the region in the SRAM, one block
    one = P.optimal(mm, sram)
    flat = P.optimal(mm, big.size + small.size - RESERVE)
    if two is None:
        raise RuntimeError("no two-region plan")
    x = np.random.default_rng(0).uniform(0, 1, (4,) + g.shapes[g.input]).astype(np.float32)
    qm = R.quantize_model(g, mdl.init(0), x)
    print(f"  training with the split two-region plan on {BOARD} ...", flush=True)
    (ms,) = B.measure(qm, [(mms, two)], BOARD, far=True)

    def d(pl: P.Plan | None) -> dict | None:
        return None if pl is None else {"peak": pl.peak, "region": pl.region,
                                        "extra_pct": round(pl.extra_pct, 2),
                                        "phases": len(pl.phases), "split": pl.split}

    peaks = {"two": mms.region_peaks(two.region),
             "two_full": full.region_peaks(two_full.region) if two_full else None}
    return {"board": TARGET_BOARD, "regions": {r.name: r.size for r in rams},
            "reserve": RESERVE, "static": static, "two": d(two), "two_full": d(two_full),
            "block": d(block), "one": d(one), "flat": d(flat), "peaks": peaks,
            "measured": dataclasses.asdict(ms)}


def render(rec: dict) -> str:
    dd = rec["data"]
    (big, bs), (small, ss) = list(dd["regions"].items())[:2]
    res = dd["reserve"]
    m = dd["measured"]
    two, full, block, one, flat = dd["two"], dd["two_full"], dd["block"], dd["one"], dd["flat"]

    def cells(pl: dict | None) -> str:
        return f"{pl['region']:,} B | {pl['extra_pct']:.1f} % |" if pl else "no plan | - |"

    def parts(pl: dict) -> str:
        sp = pl["split"]
        return (f"{pl['region']:,} B: {sp:,} in {big}, {pl['region'] - sp:,} in {small}" if sp
                else f"{pl['region']:,} B in {big}")

    rows = ["| arena layout | static part | schedule's region | extra MACs | "
            f"{small} / {big} high-water mark: measured on {BOARD} (planned) |",
            "|---|---|---|---|---|",
            f"| **two regions, the region split at {two['split']:,}**: the static part and the "
            f"region's offsets from {two['split']:,} on in {small} ({ss:,} B), the offsets below "
            f"in {big} ({bs:,} B - {res:,} B for the firmware) | {dd['static']:,} B | "
            f"{parts(two)} | **{two['extra_pct']:.1f} %** | **{m['measured_peak']:,} / "
            f"{m['measured_far']:,} B** ({m['planned_peak']:,} / {m['planned_far']:,}) |"]
    if full:
        pk = dd["peaks"]["two_full"]
        rows.append(f"| the same, nothing of {big} left for the firmware (no reserve) | "
                    f"{dd['static']:,} B | {parts(full)} | {full['extra_pct']:.1f} % | "
                    f"- ({pk[0]:,} / {pk[1]:,}) |")
    rows += [f"| two regions, the region one block: the static part in {small}, the region in "
             f"{big} ({bs - res:,} B) | {dd['static']:,} B | " + cells(block) + " - |",
             f"| one region: {big} alone ({bs - res:,} B) | in it | " + cells(one) + " - |",
             f"| one contiguous {bs + ss - res:,} B (not the real board) | in it | "
             + cells(flat) + " - |"]
    return ("\n".join(rows) + "\n\n" + f"*Measured {rec['measured']}: `{rec['command']}`; "
            f"instructions per sample on {BOARD} with the split plan: "
            f"{m['insn_per_sample']:,.0f}.*")
