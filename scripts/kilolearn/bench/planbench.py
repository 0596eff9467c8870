"""`kilolearn plan --measure BOARD`: run plans on a board (QEMU or the host build) and report
what the device measured: the arena high-water mark of a training step in an arena of exactly
the planned size, and the instructions per trained sample (QEMU `-icount`, docs/planner.md).

The model gets seeded weights and uniform random inputs: memory and instruction counts depend
on the shapes, not on what is learnt (the zero-gradient skips aside)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import planner as P
from ..core import reference as R
from ..device import job, runner
from ..formats import export


@dataclass
class Measured:
    plan: str
    planned_peak: int
    measured_peak: int
    extra_macs_pct: float
    compact_steps: int
    insn_per_sample: float | None  # None on the host (no instruction count)
    # two regions (kl_arena_set_far): the schedule's region, planned and measured
    planned_far: int | None = None
    measured_far: int | None = None
    split: int = 0  # the schedule's region split there (blob 2.7): the far region holds the
    # offsets below it, the first region the static part and the offsets from it on


def compact_everywhere(mm: P.MemModel, pl: P.Plan) -> P.Plan:
    """The same schedule with every eligible backward step compact (no trim_compact)."""
    return P.build_steps(mm, pl.macros, pl.name + " (every step compact)")


def measure(qm: R.QModel, plans: list[tuple[P.MemModel, P.Plan]], board: str,
            samples: int = 2, seed: int = 0, far: bool = False) -> list[Measured]:
    """One epoch of fused int8 training on `samples` random inputs per plan; each arena is
    the plan's static part plus its region for the board's pointer size. far: the region in a
    second arena region of its size (kl_arena_set_far), the static part alone in the first; or,
    for a split region (Plan.split), its first part in the second arena region and the static
    part and its second part in the first (each arena exactly MemModel.region_peaks)."""
    g = qm.graph
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (samples,) + g.shapes[g.input]).astype(np.float32)
    y = rng.integers(0, g.shapes[g.output][-1], samples)
    xq = qm.quantize_input(x)
    tgt = "host" if board == "host" else "arm"
    out = []
    for mm, pl in plans:
        smm = P.MemModel(g, "s8", target=tgt, compact=mm.compact, split=pl.split)
        main, far_peak = smm.region_peaks(pl.region, far)  # the arenas: exactly those
        img = job.build(export.export_s8(qm, pl), xq, y, lr=0.1, seed=1, epochs=1,
                        arena_size=main, far_size=far_peak)
        rep = runner.run_job(img, board)
        insn = rep.records["epoch"][0].get("train_insn")
        done = rep.one("done")
        out.append(Measured(pl.name, main, done["arena_peak"],
                            pl.extra_pct, sum(s.flags & P.STEP_COMPACT != 0 for s in pl.steps),
                            None if board == "host" or insn is None else insn / samples,
                            far_peak if far else None, done.get("far_peak") if far else None,
                            pl.split))
    return out


def _pair(a: int, b: int | None) -> str:
    return f"{a:,}" if b is None else f"{a:,} + {b:,}"


def rows(ms: list[Measured]) -> list[list]:
    return [[m.plan, _pair(m.planned_peak, m.planned_far), _pair(m.measured_peak, m.measured_far),
             "yes" if (m.measured_peak, m.measured_far) == (m.planned_peak, m.planned_far)
             else "NO", f"{m.extra_macs_pct:.1f} %",
             m.compact_steps, "-" if m.insn_per_sample is None else f"{m.insn_per_sample:,.0f}"]
            for m in ms]


HEADERS = ["plan", "planned peak B", "measured peak B", "equal", "extra MACs",
           "compact steps", "insn / sample"]
