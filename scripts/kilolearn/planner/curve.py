"""Extra compute against the budget: the planner's curve (table and PNG)."""

from __future__ import annotations

import numpy as np

from .memory import MemModel
from .steps import Plan
from .strategies import baseline, min_budget, optimal


def curve(mm: MemModel, points: int = 12, extra: int | None = None
          ) -> list[tuple[int, Plan | None]]:
    """Optimal plans for budgets from the smallest feasible one to the store-all peak (and
    the budget `extra`, when given). A plan for a smaller budget fits every larger one: each
    point is the cheapest plan found at or below its budget (`optimal` alone is not
    monotone in the budget on every long chain: its grid and bound probing depend on it)."""
    lo, hi = min_budget(mm), baseline(mm, "store-all").peak
    budgets = set((np.linspace(lo, hi, points).astype(int) // 4 * 4).tolist())
    if extra is not None and lo <= extra <= hi:
        budgets.add(extra)
    out: list[tuple[int, Plan | None]] = []
    best: Plan | None = None
    for b in sorted(budgets):
        pl = optimal(mm, b)
        if pl is not None and (best is None or pl.macs < best.macs):
            best = pl
        out.append((b, best))
    return out


def plot_curve(mm: MemModel, path: str, title: str, budget: int | None = None) -> list[list]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(b, p) for b, p in curve(mm, extra=budget) if p is not None]
    base = {w: baseline(mm, w) for w in ("store-all", "sqrt-n", "recompute-all")}
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot([p.peak / 1024 for _, p in pts], [p.extra_pct for _, p in pts], "o-",
            label="optimal plan")
    for w, mk, lab in (("store-all", "s", "store-all plan (activations kept, buffers packed)"),
                       ("sqrt-n", "^", "Chen's sqrt(n)")):
        ax.plot(base[w].peak / 1024, base[w].extra_pct, mk, ms=9, label=lab)
    ax.axvline(mm.store_all_bytes() / 1024, ls=":", c="gray",
               label="engine without a schedule (every activation and gradient)")
    ax.set_yscale("symlog", linthresh=10)
    mine = [p for b, p in pts if b == budget]
    if mine:
        ax.plot(mine[0].peak / 1024, mine[0].extra_pct, "*", ms=13, c="red",
                label=f"optimal in {budget:,} B")
    ax.set_xlabel("arena peak (KiB)")
    ax.set_ylabel("extra MACs (% of a forward pass, symlog)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return [[b, p.peak, f"{p.extra_pct:.1f}"] for b, p in pts] + \
        [[w, pl.peak, f"{pl.extra_pct:.1f}"] for w, pl in base.items()]
