"""Plans as engine steps: buffers freed after their last read, compact steps trimmed, static
offsets in one region.
"""

from __future__ import annotations

import bisect
import dataclasses
import struct
from dataclasses import dataclass, field

import numpy as np

from .memory import (
    FWD_RECOMPUTE,
    STEP_BWD,
    STEP_COMPACT,
    STEP_FREE_DATA,
    STEP_FREE_GRAD,
    STEP_FWD,
    STEP_GRAD,
    STEP_IN_PLACE,
    STEP_LOSS,
    MemModel,
    PlanError,
    _al,
)

# --------------------------------------------------------------------------- steps


@dataclass
class Step:
    kind: int
    index: int  # op (fwd, bwd) or tensor (grad, free*)
    offset: int = 0  # fwd: output data, loss: logits gradient, grad: gradient
    flags: int = 0


@dataclass
class Plan:
    name: str
    steps: list[Step]
    region: int  # bytes of the arena region holding every buffer of the steps
    static: int  # arena bytes before the region
    live_peak: int  # most bytes live at once in the region (<= region: fragmentation)
    macs: int  # forward MACs executed per step, first pass included
    base_macs: int  # one forward pass
    phases: list[tuple[int, list[int], int]] = field(default_factory=list)  # (op, ckpts, live)
    store_all_engine: int = 0  # arena peak of the engine with no schedule
    seconds: float = 0.0
    macros: list[tuple] = field(default_factory=list, repr=False)  # what the steps came from
    split: int = 0  # the region split at this offset (blob 2.7, MemModel.split); 0: one block

    @property
    def peak(self) -> int:
        return self.static + self.region

    @property
    def extra_macs(self) -> int:
        return self.macs - self.base_macs

    @property
    def extra_pct(self) -> float:
        return 100.0 * self.extra_macs / max(1, self.base_macs)

    def pack(self) -> bytes:
        """The schedule section of the blob (docs/blob-format.md)."""
        head = struct.pack("<IIII", len(self.steps), self.region, self.live_peak,
                           min(self.extra_macs, 0xFFFFFFFF))
        if self.split:  # format 2.7: the boundary and the second part's bytes
            head += struct.pack("<II", self.split, self.region - self.split)
        return head + b"".join(struct.pack("<BBHI", s.kind, s.flags, s.index, s.offset)
                               for s in self.steps)


def build_steps(mm: MemModel, macros: list[tuple], name: str) -> Plan:
    """Turn ('F', op) / ('L',) / ('B', op) into engine steps: buffers freed after their last
    read, forward steps whose output is still live skipped, offsets assigned."""
    g = mm.graph
    reads: list[list[int]] = []
    for mc in macros:
        if mc[0] == "F":
            reads.append([t for t in g.ops[mc[1]].inputs if t != g.input])
        elif mc[0] == "L":
            reads.append([g.output])
        else:
            reads.append(mm.bwd_reads(mc[1]))
    producer_at = [g.ops[mc[1]].output if mc[0] == "F" else -1 for mc in macros]
    # next read / next production of each tensor after macro j
    n_t = len(g.shapes)
    steps: list[Step] = []
    # [size, start step, end step, buffer it shares an offset with (, pinned to its start)]
    bufs: list[list[int]] = []
    live_d: dict[int, int] = {}  # tensor -> buffer id
    live_g: dict[int, int] = {}
    seen_out = set()
    cur = peak = macs = 0
    phases: list[tuple[int, list[int], int]] = []
    in_recompute = False
    bwd_pos = -1

    def alloc(size: int, tie: int = -1) -> int:
        """A buffer from the next step on; tie: at the offset of that buffer, inside it, so
        counted only once that one is freed."""
        nonlocal cur, peak
        bufs.append([size, len(steps), -1, tie])
        if tie < 0:
            cur += size
            peak = max(peak, cur)
        return len(bufs) - 1

    def free(buf: int) -> None:
        nonlocal cur
        bufs[buf][2] = len(steps)
        cur -= bufs[buf][0]

    # per tensor: the macros reading it and the macros producing it, in order
    read_at: dict[int, list[int]] = {}
    prod_at: dict[int, list[int]] = {}
    for j, r in enumerate(reads):
        for t in r:
            read_at.setdefault(t, []).append(j)
        if producer_at[j] >= 0:
            prod_at.setdefault(producer_at[j], []).append(j)

    def still_read(t: int, j: int) -> bool:
        """Is tensor t read after macro j before it is produced again?"""
        r, p = read_at.get(t, []), prod_at.get(t, [])
        nr = bisect.bisect_right(r, j)
        if nr == len(r):
            return False
        npr = bisect.bisect_right(p, j)
        return npr == len(p) or r[nr] < p[npr]

    for j, mc in enumerate(macros):
        if mc[0] == "F":
            op = g.ops[mc[1]]
            for t in op.inputs:
                if t != g.input and t not in live_d:
                    raise PlanError(f"forward op {mc[1]} reads tensor {t}, not live")
            if op.output not in live_d:
                recompute = op.output in seen_out
                if recompute and not in_recompute:
                    phases.append((bwd_pos, sorted(live_d), cur))
                in_recompute = recompute
                b = alloc(mm.dbytes[op.output])
                live_d[op.output] = b
                steps.append(Step(STEP_FWD, mc[1], b, FWD_RECOMPUTE if recompute else 0))
                seen_out.add(op.output)
                macs += mm.macs[mc[1]]
        elif mc[0] == "L":
            in_recompute = False
            b = alloc(mm.gbytes[g.output])
            live_g[g.output] = b
            steps.append(Step(STEP_LOSS, g.output, b))
        else:
            in_recompute = False
            i = mc[1]
            op = g.ops[i]
            bwd_pos = i
            for t in reads[j]:
                if t not in live_d:
                    raise PlanError(f"backward op {i} reads tensor {t}, not live")
            if not mm.need_grad[op.output] and op.output != g.output:
                continue
            if op.output not in live_g:
                raise PlanError(f"backward op {i}: no gradient for tensor {op.output}")
            ip = mm.in_place_at(i)
            x = op.inputs[0]
            if ip and x in live_g:
                raise PlanError(f"backward op {i}: input gradient {x} already live")
            for t in op.inputs:
                if mm.need_grad[t] and t not in live_g and not (ip and t == x):
                    b = alloc(mm.gbytes[t])
                    live_g[t] = b
                    steps.append(Step(STEP_GRAD, t, b))
            sb = alloc(mm.bwd_scratch(i)) if mm.training else 0  # int32 scratch, this step
            cp = mm.compact_at(i)
            if ip:  # the input gradient, quantised in place at the start or end of the scratch
                live_g[x] = alloc(mm.gbytes[x], tie=sb)  # (compact: at the start)
                bufs[live_g[x]].append(cp)
                steps.append(Step(STEP_GRAD, x, live_g[x]))
            steps.append(Step(STEP_BWD, i, sb, (STEP_IN_PLACE if ip else 0)
                              | (STEP_COMPACT if cp else 0)))
            if mm.training:
                free(sb)
            if ip:
                cur += mm.gbytes[x]
            steps.append(Step(STEP_FREE_GRAD, op.output))
            free(live_g.pop(op.output))
        for t in list(live_d):
            if t == g.output or still_read(t, j):
                continue
            steps.append(Step(STEP_FREE_DATA, t))
            free(live_d.pop(t))
    end = len(steps)
    for b in bufs:
        if b[2] < 0:
            b[2] = end
    offs, region = assign_offsets(bufs, mm.split)
    for s in steps:
        if s.kind in (STEP_FWD, STEP_LOSS, STEP_GRAD, STEP_BWD):
            s.offset = offs[s.offset]
    del n_t
    return Plan(name, steps, region, mm.static_bytes(), peak, macs, sum(mm.macs), phases,
                mm.store_all_bytes(), macros=macros,
                split=mm.split if 0 < mm.split < region else 0)


def trim_compact(mm: MemModel, pl: Plan) -> Plan:
    """Compact steps cost instructions (about 6 % of a MobileNet step on the M4, docs/
    planner.md): rebuild the plan with int32 sums at every compact step the region does not
    need (kept where turning it off would grow the region)."""
    ops = sorted((s.index for s in pl.steps if s.kind == STEP_BWD and s.flags & STEP_COMPACT),
                 key=mm.bwd_scratch)
    off: frozenset[int] = mm.uncompact
    for i in ops:
        trial = build_steps(dataclasses.replace(mm, uncompact=off | {i}), pl.macros, pl.name)
        if trial.region <= pl.region:
            pl, off = trial, off | {i}
    return pl


def assign_offsets(bufs: list[list[int]], split: int = 0) -> tuple[list[int], int]:
    """The smallest region of _assign_offsets over a few placement orders: biggest buffers
    first, earliest first, or longest-lived first. split (> 0): no buffer lies across this
    offset (the boundary of a region in two memories, blob 2.7): the orders with a wall there
    (_walled), and the offsets placed without one moved up from a cut (_cut_at)."""
    best: tuple[list[int], int] | None = None
    for key in ("size", "start", "area"):
        for offs, region in ([_walled(bufs, key, split), _cut_at(bufs, *_assign_offsets(
                bufs, key), split)] if split else [_assign_offsets(bufs, key)]):
            if best is None or region < best[1]:
                best = (offs, region)
    assert best is not None
    return best


SPLIT_TRIES = 12  # placements _walled tries


def _walled(bufs: list[list[int]], key: str, split: int) -> tuple[list[int], int]:
    """Offsets with a wall at split, the best of a few placements: the greedy order, then again
    with the biggest group that ended above the wall placed before the others (its space below
    was taken by buffers placed before it), and so on."""
    members = _groups(bufs)
    first: tuple[int, ...] = ()
    best: tuple[list[int], int] | None = None
    for _ in range(SPLIT_TRIES):
        offs, region = _assign_offsets(bufs, key, split, first=first)
        if best is None or region < best[1]:
            best = (offs, region)
        above = [r for r in members if r not in first
                 and any(offs[b] + bufs[b][0] > split for b in members[r])]
        if region <= split or not above:
            break
        first += (max(above, key=lambda r: (max(bufs[b][0] for b in members[r]),
                                            -bufs[r][1])),)
    assert best is not None
    return best


def _cut_at(bufs: list[list[int]], offs: list[int], region: int,
            split: int) -> tuple[list[int], int]:
    """Offsets placed without a wall, made to respect one at split: the highest offset c <= split
    that no buffer lies across, every offset from c on moved up by split - c (so the part from c
    on starts at split; the region grows by as much)."""
    if region <= split:
        return offs, region
    cut, reach = 0, 0  # every c in [reach, lo] lies across no buffer placed so far
    for lo, hi in sorted((o, o + b[0]) for o, b in zip(offs, bufs, strict=True) if b[0]):
        if lo >= reach and min(lo, split) >= reach:
            cut = min(lo, split)  # 8-aligned: offsets and split are
        if lo >= split:
            break
        reach = max(reach, hi)
    shift = split - cut
    return [o + shift if o >= cut else o for o in offs], _al(region + shift, 8)


def _groups(bufs: list[list[int]]) -> dict[int, list[int]]:
    """Buffers by the buffer they are tied to (bufs[b][3]), each group under its root."""
    members: dict[int, list[int]] = {}
    for b in range(len(bufs)):
        root = b
        while len(bufs[root]) > 3 and bufs[root][3] >= 0:
            root = bufs[root][3]
        members.setdefault(root, []).append(b)
    return members


def _assign_offsets(bufs: list[list[int]], key: str, split: int = 0,
                    fixed: dict[int, int] | None = None,
                    first: tuple[int, ...] = ()) -> tuple[list[int], int]:
    """Static offsets: biggest buffers first (key), each at the lowest 8-aligned offset free for its
    whole lifetime [start, end); a buffer tied to another (bufs[b][3] >= 0) lies at that one's
    start or at its end (its offset + its size - the tied one's size), whichever gives the
    lower offset (the group is placed together, each rectangle free). split (> 0, 8-aligned): a
    wall of no bytes at that offset, live for the whole schedule, so that no buffer lies across
    it. fixed: buffers (whole groups) already placed at these offsets; first: groups (their
    roots) placed before the others, in this order."""
    nb = len(bufs)
    fixed = fixed or {}
    members = _groups(bufs)

    def rank(r: int) -> tuple:
        size = max(bufs[b][0] for b in members[r])
        life = max(bufs[b][2] for b in members[r]) - bufs[r][1]
        return {"size": (-size, bufs[r][1]), "start": (bufs[r][1], -size),
                "area": (-size * life, bufs[r][1])}[key]

    order = list(first) + sorted((r for r in members if r not in fixed and r not in first),
                                 key=rank)
    p_lo = np.zeros(nb + 1, dtype=np.int64)  # placed buffers: offset, end offset, lifetime
    p_hi = np.zeros(nb + 1, dtype=np.int64)
    p_s = np.zeros(nb + 1, dtype=np.int64)
    p_e = np.zeros(nb + 1, dtype=np.int64)
    offs = [0] * nb
    region = 0
    npl = 0
    if split > 0:  # the wall: [split, split) over every step (forbids (split - size, split))
        assert split % 8 == 0, split
        p_lo[0] = p_hi[0] = split
        p_s[0], p_e[0] = -1, 1 << 62
        npl = 1
    for b, o in fixed.items():
        offs[b] = o
        p_lo[npl], p_hi[npl], p_s[npl], p_e[npl] = o, o + bufs[b][0], bufs[b][1], bufs[b][2]
        npl += 1
        region = max(region, o + bufs[b][0])
    for r in order:
        tied = [b for b in members[r] if b != r]
        best: tuple[int, list[int]] | None = None
        for mode in range(1 << len(tied)):  # each tied buffer at the start (0) or the end
            if any(mode >> k & 1 and len(bufs[b]) > 4 and bufs[b][4]
                   for k, b in enumerate(tied)):
                continue  # pinned to the start (a compact step's gradient)
            delta = {r: 0}
            for k, b in enumerate(tied):
                delta[b] = bufs[r][0] - bufs[b][0] if mode >> k & 1 else 0
            # offsets forbidden for the group: (lo - size - delta, hi - delta) of every placed
            # buffer a member's lifetime overlaps
            lo_l, hi_l = [], []
            for b in members[r]:
                size, s, e = bufs[b][:3]
                ov = (p_s[:npl] < e) & (s < p_e[:npl])
                lo_l.append(p_lo[:npl][ov] - size - delta[b])
                hi_l.append(p_hi[:npl][ov] - delta[b])
            lo, hi = np.concatenate(lo_l), np.concatenate(hi_l)
            srt = np.argsort(lo, kind="stable")
            off = 0
            for lo_, hi_ in zip(lo[srt].tolist(), hi[srt].tolist(), strict=True):
                if off <= lo_:
                    break
                off = max(off, _al(hi_, 8))
            if best is None or off < best[0]:
                best = (off, [off + delta[b] for b in members[r]])
        assert best is not None
        for b, o in zip(members[r], best[1], strict=True):
            size, s, e = bufs[b][:3]
            offs[b] = o
            p_lo[npl], p_hi[npl], p_s[npl], p_e[npl] = o, o + size, s, e
            npl += 1
            region = max(region, o + size)
    return offs, _al(region, 8)
