"""Strategies: store-all, recompute-all, sqrt(n) segments, the optimal plan for a budget, the
smallest budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from ..core.model import Graph
from .chain import EXACT_MAX, GRID_LEVELS, Chain, _GridDp, _search, chain_of
from .memory import INF, STEP_COMPACT, MemModel, PlanError
from .steps import Plan, build_steps, trim_compact

# --------------------------------------------------------------------------- strategies


def _store_all_macros(mm: MemModel) -> list[tuple]:
    p = mm.first_bwd()
    return ([("F", i) for i in range(mm.n)] + [("L",)]
            + [("B", i) for i in range(mm.n - 1, p - 1, -1)])


def _recompute_all_macros(mm: MemModel) -> list[tuple]:
    p = mm.first_bwd()
    out: list[tuple] = [("F", i) for i in range(mm.n)] + [("L",)]
    for i in range(mm.n - 1, p - 1, -1):
        out += [("F", k) for k in range(i)]
        out.append(("B", i))
    return out


def _segments_macros(mm: MemModel, cuts: list[int]) -> list[tuple]:
    """Checkpoint the bundles at `cuts` in the first pass; backprop each segment from its
    checkpoint keeping all its activations (Chen et al.)."""
    p = mm.first_bwd()
    out: list[tuple] = [("F", i) for i in range(mm.n)] + [("L",)]
    bounds = sorted(set([0] + [c for c in cuts if 0 < c < mm.n] + [mm.n]))
    for lo, hi in reversed(list(zip(bounds[:-1], bounds[1:], strict=True))):
        if hi <= p:
            break
        out += [("F", i) for i in range(lo, hi - 1)]
        out += [("B", i) for i in range(hi - 1, max(lo, p) - 1, -1)]
    return out


def sqrt_n_macros(mm: MemModel) -> list[tuple]:
    n = mm.n
    seg = max(1, math.ceil(n / max(1, round(math.sqrt(n)))))
    return _segments_macros(mm, list(range(seg, n, seg)))


def _finish(mm: MemModel, macros: list[tuple], name: str, t0: float, trim: bool = True) -> Plan:
    pl = build_steps(mm, macros, name)
    pl = trim_compact(mm, pl) if trim else pl
    pl.seconds = time.perf_counter() - t0
    return pl


def baseline(mm: MemModel, which: str, trim: bool = True) -> Plan:
    t0 = time.perf_counter()
    mac = {"store-all": _store_all_macros, "recompute-all": _recompute_all_macros,
           "sqrt-n": sqrt_n_macros}[which](mm)
    return _finish(mm, mac, which, t0, trim)


def _probe_bounds(mm: MemModel, budget: int, m: int, hi_m: int, q: int,
                  solve: Callable[[int], tuple[float, list[tuple]]]) -> Plan | None:
    """The cheapest plan whose real peak fits, over chain bounds: down from m until one fits,
    then up while plans still fit (bisection)."""
    built: dict[int, Plan | None] = {}

    def probe(mb: int) -> Plan | None:
        if mb not in built:
            cost, macros = solve(mb)
            built[mb] = None if cost == INF else build_steps(mm, macros, "optimal")
        return built[mb]

    best: Plan | None = None
    fit = None
    mb, too_big = m, None
    for _ in range(24):  # down from m until the real peak fits
        if mb < 0:
            break
        pl = probe(mb)
        if pl is None:  # stepped below what the chain model can do: bisect back up
            lo, hi = mb, too_big
            while hi is not None and hi - lo > q:
                mid = (lo + hi) // 2
                pl = probe(mid)
                if pl is None:
                    lo = mid
                elif pl.peak > budget:
                    hi = mid
                else:
                    best, fit = pl, mid
                    break
            break
        if pl.peak <= budget:
            best, fit = pl, mb
            break
        too_big = mb
        mb -= max(4, q, pl.peak - budget)  # at least one grid level
    if fit is not None:  # up from there while it still fits (bisection on the bound)
        lo, hi = fit, hi_m
        while hi - lo > q:
            mid = (lo + hi) // 2
            pl = probe(mid)
            if pl is not None and pl.peak <= budget:
                lo = mid
                if best is None or pl.macs < best.macs:
                    best = pl
            else:
                hi = mid
    return best


def optimal(mm: MemModel, budget: int, *, chain: Chain | None = None) -> Plan | None:
    """The fewest recomputed MACs with static + region <= budget, or None."""
    t0 = time.perf_counter()
    ch = chain or chain_of(mm)
    static = mm.static_bytes()
    m = budget - static
    cands: list[Plan | None] = []
    if m >= 0:
        # the chain bound m' that gives the cheapest plan whose real peak fits: the chain model
        # over-counts (rounding, tensors a step does not read) and under-counts (offset
        # fragmentation, skip tensors), so probe bounds below and above m
        hi_m = m + m // 4
        if ch.n <= EXACT_MAX:
            cands.append(_probe_bounds(mm, budget, m, hi_m, 1, lambda mb: _search(ch, mb)))
        elif max(ch.a) <= 2 * hi_m:  # one grid DP serves every bound up to hi_m; sizes
            # rounded up, and to nearest (a larger bundle fits no bound: every real plan holds
            # each bundle once, so no plan of the DP could pass the real-peak check)
            q = max(1, -(-hi_m // GRID_LEVELS))
            for nearest in (False, True):
                dp = _GridDp(ch, hi_m // q + 1, q, nearest=nearest)
                cands.append(_probe_bounds(mm, budget, m, hi_m, q, dp.solve))
    # the chain model is conservative (bundles sharing a skip tensor count it twice, a step
    # may not read every tensor of its bundles): a baseline may fit where the DP sees no room
    for which in ("store-all", "sqrt-n", "recompute-all"):
        pl = baseline(mm, which, trim=False)
        if pl.peak > budget and any(st.flags & STEP_COMPACT for st in pl.steps):
            pl = trim_compact(mm, pl)  # the other offsets may pack tighter
        cands.append(pl)
    fits = [p for p in cands if p is not None and p.peak <= budget]
    if not fits:
        return None
    best = min(fits, key=lambda p: (p.macs, p.peak))
    best.name = "optimal"
    best = trim_compact(mm, best)
    best.seconds = time.perf_counter() - t0
    return best


def min_budget(mm: MemModel) -> int:
    """The smallest arena budget some plan fits in (binary search over the optimal planner)."""
    ra = baseline(mm, "recompute-all").peak
    lo, hi = mm.static_bytes(), max(ra, baseline(mm, "store-all").peak)
    if optimal(mm, lo) is not None:
        return lo
    while hi - lo > 4:
        mid = (lo + hi) // 2 // 4 * 4
        if optimal(mm, mid) is not None:
            hi = mid
        else:
            lo = mid
    return hi


def plan(graph: Graph, budget: int, dtype: str = "s8", *, keep_grads: bool = False,
         target: str = "arm") -> Plan | None:
    return optimal(MemModel(graph, dtype, keep_grads=keep_grads, target=target), budget)


def budget_of(arg: str) -> int:
    """'262144', '256K', '1M' or a board name (its SRAM)."""
    s = arg.strip()
    mult = {"k": 1024, "m": 1024 * 1024}
    try:
        if s[-1:].lower() in mult:
            return int(float(s[:-1]) * mult[s[-1].lower()])
        return int(s)
    except ValueError:
        from ..footprint import FootprintError, find_board
        try:
            b = find_board(s)
        except FootprintError as e:
            raise PlanError(str(e)) from e
        return BoardBudget(b.ram, b)


class BoardBudget(int):
    """A budget given as a board name: its main SRAM in bytes, with the board (its regions)."""

    board: object

    def __new__(cls, value: int, board: object) -> BoardBudget:
        v = super().__new__(cls, value)
        v.board = board
        return v


def format_plan(pl: Plan, budget: int | None = None) -> list[str]:
    rows = [f"  {pl.name}: peak {pl.peak:,} B (static {pl.static:,} + region {pl.region:,}; "
            f"live max {pl.live_peak:,}), extra MACs {pl.extra_macs:,} "
            f"({pl.extra_pct:.1f} %), {len(pl.steps)} steps"]
    if budget is not None:
        rows[0] += "  fits" if pl.peak <= budget else "  DOES NOT FIT"
    return rows
