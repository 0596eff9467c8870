"""Memory planner: checkpointed backprop that fits training into an SRAM budget.

Given a lowered :class:`~kilolearn.model.Graph`, a dtype and an arena budget, :func:`plan`
returns the schedule with the fewest recomputed MACs whose arena peak fits: a list of steps the
engine executes one by one (forward into a buffer, free a buffer, loss, allocate a gradient,
backward through an op), static offsets for every buffer in one region of the arena, and the
exact arena peak (the engine's bookkeeping, weight copies and scratch mirrored byte for byte from
``kl_model_init``). docs/planner.md describes the model, the algorithm and the figures.

The graph is treated as a chain of *cuts*: cut ``i`` lies before op ``i`` (ops in blob order);
its bundle ``D_i`` is every tensor made before the cut and read at or after it (for a plain chain
one tensor; inside a residual block the block input as well). Checkpointing cut ``i`` keeps
``D_i``, from which ops ``i..`` can be recomputed. On that chain :func:`_search` is exact over
every schedule the engine can run (chains of up to ``EXACT_MAX`` ops: checkpoints dropped and
recomputed whenever that pays) and :class:`_GridDp` is optimal among persistent schedules on a
grid of memory levels (longer chains; heterogeneous sizes and MACs, the checkpoints re-chosen for
every phase of the backward pass as it frees memory); the steps are then generated with buffers
freed right after their last read, and the peak is measured on the steps and the offsets, not
estimated.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import math
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .model import Graph

# step kinds (docs/blob-format.md, kl_blob.h KL_STEP_*)
STEP_FWD, STEP_LOSS, STEP_GRAD, STEP_BWD, STEP_FREE_DATA, STEP_FREE_GRAD = 1, 2, 3, 4, 5, 6
STEP_NAMES = {STEP_FWD: "fwd", STEP_LOSS: "loss", STEP_GRAD: "grad", STEP_BWD: "bwd",
              STEP_FREE_DATA: "free", STEP_FREE_GRAD: "free_grad"}
FWD_RECOMPUTE = 0x01  # step flag: a recomputation (not the first forward pass)
STEP_IN_PLACE = 0x02  # bwd flag: the input's gradient is made at the start of the scratch
STEP_COMPACT = 0x04  # bwd flag: int16 input-gradient sums made in bands (kl_blob.h)
BAND_BYTES = 8192  # KL_BAND_BYTES


def band_rows(h: int, w: int, c: int, stride: int) -> int:
    """kl_band_rows: input rows per band of a compact step, a multiple of the stride."""
    row = w * c * 4 * stride
    return min(h, max(1, BAND_BYTES // row if row else 1) * stride)


def compact_scratch(h: int, w: int, c: int, stride: int) -> int:
    """kl_compact_scratch: int16 sums (8-aligned) and one band of int32 sums."""
    return _al(2 * h * w * c, 8) + 4 * band_rows(h, w, c, stride) * w * c
SCHED_HEADER = 16
STEP_SIZE = 8
INF = float("inf")

# sizeof(kl_tensor_t), sizeof(kl_op_t) by pointer size (kilolearn.h)
STRUCT_SIZES = {4: (24, 52), 8: (32, 80)}
TARGET_PTR = {"arm": 4, "host": 8}


class PlanError(ValueError):
    pass


def _al(x: int, a: int) -> int:
    return (x + a - 1) // a * a


class _Arena:
    """kl_arena_alloc on an 8-aligned base."""

    def __init__(self) -> None:
        self.used = 0

    def alloc(self, size: int, align: int = 4) -> int:
        off = _al(self.used, align)
        self.used = off + size
        return off


# --------------------------------------------------------------------------- memory model


def conv_s8_scratch(kh: int, kw: int, c: int, co: int) -> int:
    """kl_conv_s8_scratch() of kl_kernels.h."""
    taps = kh * kw
    k4 = _al(taps * c, 4)
    c4 = _al(max(co, c), 4)
    wt = k4 * c4
    wt_max = max(8192, 4 * c4)
    wt_bytes = min(wt, wt_max)
    wt_rows = min((wt_bytes // c4) & ~3, k4)
    need = 6 * k4 + 8 * c4
    need = max(need, wt_bytes + 4 * c4 + 8 * wt_rows)
    kt = min(k4, 256)
    need = max(need, 4 * 4 * (kt + c4) + 2 * kt)
    need = max(need, 2 * taps * c4 + 9 * c4 + 8 * taps)
    return need + 16


@dataclass
class MemModel:
    """What kl_model_init() lays out, for one graph, dtype and training configuration."""

    graph: Graph
    dtype: str = "s8"  # "s8" | "f32"
    training: bool = True
    keep_grads: bool = False  # KL_CFG_KEEP_GRADS (the gradient-dump job)
    momentum: bool = False  # f32 momentum buffers
    target: str = "arm"
    in_place: bool = True  # plans quantise input gradients in their backward scratch
    compact: bool = True  # ... from int16 sums made in bands, where that needs less scratch
    uncompact: frozenset[int] = frozenset()  # ops kept on int32 sums (trim_compact)

    def __post_init__(self) -> None:
        g = self.graph
        self.es = 1 if self.dtype == "s8" else 4
        self.n = len(g.ops)
        self.tsize = [int(np.prod(s)) for s in g.shapes]
        self.dbytes = [_al(v * self.es, 4) for v in self.tsize]  # data buffer bytes
        self.producer = [-1] * len(g.shapes)
        self.n_users = [0] * len(g.shapes)
        self.need_grad = [False] * len(g.shapes)
        self.trainable = [op.trainable and self.training for op in g.ops]
        for i, op in enumerate(g.ops):
            self.producer[op.output] = i
            for t in op.inputs:
                self.n_users[t] += 1
            self.need_grad[op.output] = self.trainable[i] or any(self.need_grad[t]
                                                                  for t in op.inputs)
        self.gbytes = [d if (ng or t == g.output) and self.training else 0
                       for t, (d, ng) in enumerate(zip(self.dbytes, self.need_grad, strict=True))]
        self.last_use = [-1] * len(g.shapes)
        for i, op in enumerate(g.ops):
            for t in op.inputs:
                self.last_use[t] = i
        self.last_use[g.output] = self.n  # the logits stay (kl_logits after a step)
        self.macs = [g.macs(i) for i in range(self.n)]

    # -- what kl_model_init allocates ------------------------------------------------------
    def _n_w(self, i: int) -> int:
        g = self.graph
        return int(np.prod(g.weight_shape(i))) if g.ops[i].has_params else 0

    def _need_dx(self, i: int) -> bool:
        """Does the backward step of op i compute an input gradient (kl_model.c need_dx)?"""
        return any(self.need_grad[t] for t in self.graph.ops[i].inputs)

    def in_place_at(self, i: int) -> bool:
        """Does the backward step of op i quantise its input gradient in place, inside its
        int32 scratch, at its start or at its end (KL_STEP_IN_PLACE)? Planned, int8,
        training, not an add, the input needs a gradient and op i is its last reader (the
        first backward step to give it one)."""
        op = self.graph.ops[i]
        x = op.inputs[0]
        return (self.in_place and self.training and self.dtype == "s8" and op.kind != "add"
                and self.need_grad[x] and self.last_use[x] == i)

    def compact_at(self, i: int) -> bool:
        """Does the backward step of op i (in place) make its input gradient from int16 sums
        in bands (KL_STEP_COMPACT)? Conv and depthwise, where that needs less scratch."""
        op = self.graph.ops[i]
        if not (self.compact and i not in self.uncompact and self.in_place_at(i)
                and op.kind in ("conv", "dwconv")):
            return False
        return self._op_scratch(i, True, True, True) < self._op_scratch(i, True, True)

    def _op_scratch(self, i: int, training: bool | None = None, in_place: bool = False,
                    compact: bool = False) -> int:
        """kl_model.c op_scratch(): forward (dense s8 kernel scratch) and, training, the
        input-gradient accumulators (when the input needs a gradient; compact: int16 and a
        band, kl_blob.c) and the update's scratch (weight and bias gradients), the latter
        after the in-place input gradient."""
        g = self.graph
        op = g.ops[i]
        x, y = self.tsize[op.inputs[0]], self.tsize[op.output]
        s8_dense = op.kind == "dense" and self.dtype == "s8"
        need = 2 * x + 4 * y + 8 if s8_dense else 0
        if self.training if training is None else training:
            if compact:
                need = compact_scratch(*g.shapes[op.inputs[0]], op.stride)
            elif self._need_dx(i):
                need = max(need, x * 4)
            upd = 0
            if self.trainable[i] and op.has_params:
                n_b = y if op.kind == "dense" else g.shapes[op.output][2]
                if op.bias_only:
                    upd = 4 * n_b
                elif op.kind in ("conv", "dwconv"):
                    upd = (self._n_w(i) + n_b) * 4
                elif s8_dense:
                    upd = 2 * x + 4 * y + 8
            need = max(need, (_al(x * self.es, 8) if in_place else 0) + upd)
        return need

    def _static(self, arena: _Arena) -> None:
        g = self.graph
        ts, os_ = STRUCT_SIZES[TARGET_PTR[self.target]]
        arena.alloc(ts * len(g.shapes))
        arena.alloc(os_ * self.n)
        for i, op in enumerate(g.ops):
            n_w = self._n_w(i)
            if n_w == 0 or not self.trainable[i]:
                continue
            bsize = 4 * (self.tsize[op.output] if op.kind == "dense"
                         else g.shapes[op.output][2])
            wt = not op.bias_only  # a bias-only op reads its weights in place
            if wt:
                arena.alloc(n_w * self.es)
            arena.alloc(bsize)
            if self.dtype == "f32" and self.momentum:
                if wt:
                    arena.alloc(n_w * 4)
                arena.alloc(bsize)
            if self.keep_grads:
                if wt:
                    arena.alloc(n_w * 4)
                arena.alloc(bsize)

    def bwd_scratch(self, i: int) -> int:
        """Bytes of int32 scratch the backward step of op i gets in the planned region (with
        in_place_at(i), its input gradient ends up in the first bytes)."""
        return _al(self._op_scratch(i, True, self.in_place_at(i), self.compact_at(i)), 8)

    def bwd_extra(self, i: int) -> int:
        """Bytes the backward step of op i adds to its gradients: its scratch, less the input
        gradient it holds when quantised in place (the chain model's w[i])."""
        x = self.graph.ops[i].inputs[0]
        return self.bwd_scratch(i) - (self.gbytes[x] if self.in_place_at(i) else 0)

    def scratch_sizes(self, planned: bool = False) -> tuple[int, int]:
        """planned: with a schedule the backward steps' int32 scratch is in the region."""
        g = self.graph
        scratch = self.tsize[g.output] * 4 if self.dtype == "s8" else 0
        kscratch = 4
        for i, op in enumerate(g.ops):
            scratch = max(scratch, self._op_scratch(i, False if planned else None))
            if self.dtype == "s8" and op.kind in ("conv", "dwconv"):
                c = g.shapes[op.inputs[0]][2]
                kscratch = max(kscratch, conv_s8_scratch(*op.kernel, c, g.shapes[op.output][2]))
        return scratch, kscratch

    def static_bytes(self) -> int:
        """Arena bytes before the plan's region (which starts 8-aligned right after)."""
        a = _Arena()
        self._static(a)
        s, k = self.scratch_sizes(planned=True)
        a.alloc(s, 8)
        a.alloc(k, 8)
        return _al(a.used, 8)

    def store_all_bytes(self) -> int:
        """Arena peak of the engine without a schedule: every activation and gradient."""
        g = self.graph
        a = _Arena()
        self._static(a)
        for t in range(len(g.shapes)):
            if t != g.input:
                a.alloc(self.tsize[t] * self.es)
            if self.training and (self.need_grad[t] or t == g.output):
                a.alloc(self.tsize[t] * self.es)
        s, k = self.scratch_sizes()
        a.alloc(s, 8)
        a.alloc(k, 8)
        return a.used

    # -- what a backward step reads (kl_model.c bwd_reads: keep the two identical) ---------
    def _mask_on_give(self, t: int) -> bool:
        p = self.producer[t]
        return (self.dtype == "s8" and p >= 0 and self.n_users[t] == 1
                and self.graph.ops[p].act != "none")

    def bwd_reads(self, i: int) -> list[int]:
        op = self.graph.ops[i]
        # its output's activations mask its gradient, unless the gradient was masked when it
        # was given (s8, a single consumer: kl_model.c give_s8)
        r = [op.output] if op.act != "none" and not self._mask_on_give(op.output) else []
        if op.kind != "add":
            x = op.inputs[0]
            if ((self.trainable[i] and op.has_params) or (op.kind == "maxpool" and
                                                          self.need_grad[x])
                    or (self.need_grad[x] and self._mask_on_give(x))):
                r.append(x)
        else:
            r += [t for t in op.inputs if self.need_grad[t] and self._mask_on_give(t)]
        return [t for t in r if t != self.graph.input]

    def first_bwd(self) -> int:
        """Index of the first op the backward pass runs (n when nothing trains)."""
        return next((i for i in range(self.n) if self.need_grad[self.graph.ops[i].output]),
                    self.n)


# --------------------------------------------------------------------------- the chain


@dataclass
class Chain:
    """Cuts 0..n: a[i] data bytes of bundle i, g[i] its gradient bytes, f[i] MACs of op i, p the
    first op with a backward step, keep_last: the last bundle (the logits) is never freed,
    w[i]: scratch bytes the backward step of op i needs besides the gradients (none if empty),
    r[i]: does the backward step of op i read bundle i + 1 (always if empty)."""

    a: list[int]
    g: list[int]
    f: list[int]
    p: int = 0
    keep_last: bool = False
    w: list[int] = field(default_factory=list)
    r: list[bool] = field(default_factory=list)

    def scratch(self, i: int) -> int:
        return self.w[i] if self.w else 0

    def reads_out(self, i: int) -> bool:
        return self.r[i] if self.r else True

    @property
    def n(self) -> int:
        return len(self.f)


def chain_of(mm: MemModel) -> Chain:
    g = mm.graph
    n = mm.n
    a, gr, bundles = [], [], []
    for i in range(n + 1):
        d = [t for t in range(len(g.shapes)) if mm.producer[t] < i and mm.last_use[t] >= i
             and t != g.input]
        bundles.append(set(d))
        a.append(sum(mm.dbytes[t] for t in d))
        gr.append(sum(mm.gbytes[t] for t in d if mm.need_grad[t] or t == g.output))
    w = [mm.bwd_extra(i) if mm.training and (mm.need_grad[op.output] or op.output == g.output)
         else 0 for i, op in enumerate(g.ops)]
    r = [bool(set(mm.bwd_reads(i)) & bundles[i + 1]) for i in range(n)]
    return Chain(a, gr, list(mm.macs), mm.first_bwd(), keep_last=True, w=w, r=r)


# ------------------------------------------------------------ exact search (short chains)

EXACT_MAX = 10  # chains of up to this many ops are planned by the exact search


def _replay(ch: Chain, macros: list[tuple]) -> tuple[float, int]:
    """(forward MACs, peak bytes) of a macro schedule on the chain, every bundle dropped right
    after its last read (what build_steps does); inf if a step reads a bundle not held."""
    n = ch.n
    reads: list[set[int]] = []
    for mc in macros:
        reads.append({mc[1]} if mc[0] == "F" else {n} if mc[0] == "L" else
                     {mc[1], mc[1] + 1} if ch.reads_out(mc[1]) else {mc[1]})
    held: set[int] = set()
    cost, peak, grad = 0, 0, -1  # grad: the bundle whose gradient is held

    def mem() -> int:
        return sum(ch.a[i] for i in held) + (ch.g[grad] if grad >= 0 else 0) + ch.a[0]

    def needed(i: int, j: int) -> bool:
        if ch.keep_last and i == n and any(mc[0] == "L" for mc in macros[:j + 1]):
            return True
        for mc, r in zip(macros[j + 1:], reads[j + 1:], strict=True):
            if i in r:
                return True
            if mc[0] == "F" and mc[1] + 1 == i:
                return False
        return False

    for j, mc in enumerate(macros):
        if any(i != 0 and i not in held for i in reads[j]):
            return INF, 0
        if mc[0] == "F":
            if mc[1] + 1 in held:
                return INF, 0
            held.add(mc[1] + 1)
            cost += ch.f[mc[1]]
            peak = max(peak, mem())
        elif mc[0] == "L":
            grad = n
            peak = max(peak, mem())
        else:
            if grad != mc[1] + 1:
                return INF, 0
            peak = max(peak, mem() + ch.g[mc[1]] + ch.scratch(mc[1]))
            grad = mc[1]
        for i in list(held):
            if not needed(i, j):
                held.discard(i)
    return cost, peak


def _search(ch: Chain, m: int) -> tuple[float, list[tuple]]:
    """The cheapest schedule of a short chain within m bytes: Dijkstra over (bundles held,
    backward frontier) with forward, drop, loss and backward moves, i.e. every schedule the
    engine can run on the chain (the gradient buffer of a step exists only during it; a
    bundle is dropped whenever that helps, kept as long as that helps)."""
    n = ch.n
    a, g, f = ch.a, ch.g, ch.f
    m -= a[0]
    start = (0, n + 1)
    best = {start: 0}
    prev: dict[tuple[int, int], tuple[tuple[int, int], tuple]] = {}
    pq = [(0, 0, start)]
    tie = 0
    sizes = [0] * (1 << (n + 1))  # bytes of a held set (bit i: bundle i)
    for s in range(1, len(sizes)):
        low = (s & -s).bit_length() - 1
        sizes[s] = sizes[s & (s - 1)] + a[low]
    while pq:
        cost, _, st = heapq.heappop(pq)
        if best[st] != cost:
            continue
        held, b = st
        if b <= ch.p or b == 0:
            out: list[tuple] = []
            while st in prev:
                st, mv = prev[st]
                if mv:
                    out.append(mv)
            return cost, out[::-1]
        have = held | 1
        cur = sizes[held] + (g[b] if b <= n else 0)
        nxt: list[tuple[int, int, int, tuple]] = []
        for i in range(min(b, n)):  # forward op i: bundle i held, i + 1 not
            if have >> i & 1 and not held >> (i + 1) & 1 and cur + a[i + 1] <= m:
                nxt.append((cost + f[i], held | 1 << (i + 1), b, ("F", i)))
        h = held
        while h:  # drop a bundle
            j = (h & -h).bit_length() - 1
            h &= h - 1
            if not (ch.keep_last and j == n and b <= n):
                nxt.append((cost, held & ~(1 << j), b, ()))
        if b == n + 1 and held >> n & 1 and cur + g[n] <= m:
            nxt.append((cost, held, n, ("L",)))
        if (b <= n and have >> (b - 1) & 1 and (held >> b & 1 or not ch.reads_out(b - 1))
                and cur + g[b - 1] + ch.scratch(b - 1) <= m):
            keep = ch.keep_last and b == n
            nxt.append((cost, held if keep else held & ~(1 << b), b - 1, ("B", b - 1)))
        for c, hh, bb, mv in nxt:
            if c < best.get((hh, bb), INF):
                best[(hh, bb)] = c
                prev[(hh, bb)] = (st, mv)
                tie += 1
                heapq.heappush(pq, (c, tie, (hh, bb)))
    return INF, []


# ------------------------------------------------------------ dynamic programme (long chains)


class _GridDp:
    """Optimal persistent checkpointing of a chain, memory on a grid of `q`-byte levels
    (bundle sizes rounded up, free memory down: every plan found fits).

    C(s, t, m): bundle s held, bundle t (held or not: `Ch` / `Cn`) and its gradient held, m
    levels free: the cheapest way to backprop ops s..t-1, leaving the gradient of bundle s.
    It picks the next checkpoint k, runs the right part with bundle k held and the left part
    with the memory the right part freed (the checkpoints re-chosen for every phase of the
    backward pass); a held end bundle may be dropped and recomputed. T(s, m): bundle s held,
    forward to the loss and back to s. Every C(s, t, .) and T(s, .) is a numpy vector over
    all memory levels, computed bottom-up, segments of one length at a time (vectorised over
    their start)."""

    def __init__(self, ch: Chain, levels: int, q: int, nearest: bool = False):
        self.ch, self.L, self.q = ch, levels, q
        n = ch.n
        r = q // 2 if nearest else q - 1  # sizes to the nearest level, or up
        self.A = [(x + r) // q for x in ch.a]
        self.G = [(x + r) // q for x in ch.g]
        self.S = [(ch.scratch(i) + r) // q for i in range(ch.n)]  # backward scratch
        self.F = [0] * (n + 1)
        for i in range(n):
            self.F[i + 1] = self.F[i] + ch.f[i]
        self.FP = np.zeros((n + 1, n + 1), dtype=np.int64)  # forward-and-drop peak s -> k
        for s in range(n + 1):
            peak = 0
            for k in range(s + 1, n + 1):
                peak = max(peak, (self.A[k - 1] if k - 1 > s else 0) + self.A[k])
                self.FP[s, k] = peak
        self.pin = self.A[n] if ch.keep_last else 0
        self._solve()

    def back(self, t: int, held: bool) -> int:
        """Levels freed when the frontier leaves bundle t."""
        pinned = self.ch.keep_last and t == self.ch.n
        return self.G[t] + (self.A[t] if held and not pinned else 0)

    def _solve(self) -> None:
        ch, L, A, G = self.ch, self.L, self.A, self.G
        n = ch.n
        lv = np.arange(L)
        An = np.array(A, dtype=np.int64)
        Gn = np.array(G, dtype=np.int64)
        Fn = np.array(self.F, dtype=np.float64)
        pad = int(An.max() + Gn.max()) + self.pin + 1
        self.pad = pad
        W = pad + L + pad  # [inf pad | levels 0..L-1 | the last level repeated]
        need = 2 * (n + 1) * (n + 1) * W * 8
        if need > GRID_MEMORY_MAX:  # tensors far larger than the budget: refuse, do not swap
            raise PlanError(f"the planner's grid would need {need / 2**30:.1f} GiB ({n} ops, "
                            f"{L} levels of {self.q:,} B, tensors up to {max(ch.a):,} B): "
                            "the model is too large for the budget")
        # Ch[d, s, pad + m] = C(s, s + d, m, held), Cn: the end bundle not held
        self.Ch = np.full((n + 1, n + 1, W), INF)
        self.Cn = np.full((n + 1, n + 1, W), INF)
        flat_h, flat_n = self.Ch.reshape(-1), self.Cn.reshape(-1)
        need_h = np.full((n + 1, n + 1), L, dtype=np.int64)  # first level with a finite C
        need_n = need_h.copy()
        pinned_t = np.zeros(n + 1, dtype=bool)
        pinned_t[n] = ch.keep_last
        for d in range(1, n + 1):
            s = np.arange(n + 1 - d)
            t = s + d
            if d == 1:
                Sn = np.array(self.S, dtype=np.int64)
                ro = np.array([ch.reads_out(i) for i in range(n)], dtype=bool)
                ch_d = np.where(lv[None, :] >= (Gn[s] + Sn[s])[:, None], 0.0, INF)
                # not held: recompute it first, unless the step does not read it
                cn_d = np.where(lv[None, :] >= (Gn[s] + np.where(ro, An[t], 0) + Sn[s])[:, None],
                                np.where(ro, np.array(ch.f, dtype=np.float64), 0.0)[:, None],
                                INF)
            else:
                jj, s0 = np.divmod(np.arange((d - 1) * len(s)), len(s))
                j = jj + 1  # every (checkpoint offset, start) pair of this length
                k = s0 + j
                tt = s0 + d
                back_n = Gn[tt]
                back_h = back_n + np.where(pinned_t[tt], 0, An[tt])
                outs = []
                for held, back in ((True, back_h), (False, back_n)):
                    nr = (need_h if held else need_n)[d - j, k]
                    # the least memory each pair needs: skip the pairs that never fit
                    lo = np.maximum(np.maximum(self.FP[s0, k], An[k] + nr),
                                    need_h[j, s0] - back + An[k] + Gn[k])
                    sel = np.nonzero(lo < L)[0]
                    out = np.full((len(s), L), INF)
                    if len(sel) == len(j):
                        sel = slice(None)
                    if len(j[sel]):
                        js, ss, ks, bs = j[sel], s0[sel], k[sel], back[sel]
                        base_r = (((d - js) * (n + 1) + ks) * W + pad - An[ks])[:, None]
                        base_l = ((js * (n + 1) + ss) * W + pad - An[ks] - Gn[ks] + bs)[:, None]
                        c = (Fn[ks] - Fn[ss])[:, None] + (flat_h if held else flat_n)[base_r + lv]
                        c += flat_h[base_l + lv]
                        c[lv[None, :] < lo[sel][:, None]] = INF
                        if isinstance(sel, slice):
                            out = c.reshape(d - 1, len(s), L).min(axis=0)
                        else:
                            full = np.full((len(j), L), INF)
                            full[sel] = c
                            out = full.reshape(d - 1, len(s), L).min(axis=0)
                    outs.append(out)
                ch_d, cn_d = outs
            # drop the end bundle and recompute it (not the pinned logits)
            drop = np.take_along_axis(cn_d, np.minimum(lv[None, :] + An[t][:, None], L - 1), 1)
            drop[pinned_t[t]] = INF
            np.minimum(ch_d, drop, out=ch_d)
            done = t <= ch.p
            ch_d[done] = 0
            cn_d[done] = 0
            for arr, v, need in ((self.Ch, ch_d, need_h), (self.Cn, cn_d, need_n)):
                arr[d, : len(s), pad: pad + L] = v
                arr[d, : len(s), pad + L:] = v[:, -1:]
                fin = v < INF
                need[d, : len(s)] = np.where(fin.any(axis=1), fin.argmax(axis=1), L)
        self.T = np.full((n + 1, L), INF)
        for s_ in range(n - 1, -1, -1):
            best = np.full(L, INF)
            for k_ in range(s_ + 1, n + 1):
                c0_ = self.F[k_] - self.F[s_]
                if k_ == n:
                    c = c0_ + self.Ch[n - s_, s_, pad - A[n] - G[n]: pad - A[n] - G[n] + L]
                else:
                    i0 = pad - A[k_] - G[k_] - self.pin
                    r = np.full(L, INF)
                    if A[k_] < L:
                        r[A[k_]:] = self.T[k_][: L - A[k_]]
                    c = c0_ + r + self.Ch[k_ - s_, s_, i0: i0 + L]
                c[lv < self.FP[s_, k_]] = INF
                np.minimum(best, c, out=best)
            self.T[s_] = best

    # -- the schedule of the optimum: re-derive each choice at its memory level ------------
    def _c(self, s: int, t: int, m: int, held: bool) -> float:
        if m < 0:
            return INF
        return float((self.Ch if held else self.Cn)[t - s, s, self.pad + min(m, self.L - 1)])

    def solve(self, m_bytes: int) -> tuple[float, list[tuple]]:
        m = min(m_bytes // self.q - self.A[0], self.L - 1)
        if m < 0 or self.T[0][m] == INF:
            return INF, []
        out: list[tuple] = []
        self._genT(0, m, out)
        return float(self.T[0][m]), out

    def _genT(self, s: int, m: int, out: list[tuple]) -> None:
        n, A, G = self.ch.n, self.A, self.G
        want = self.T[s][m]
        for k in range(s + 1, n + 1):
            if self.FP[s, k] > m:
                break
            c0 = self.F[k] - self.F[s]
            if k == n:
                c = c0 + self._c(s, n, m - A[n] - G[n], True)
                if c == want:
                    out.extend(("F", i) for i in range(s, n))
                    out.append(("L",))
                    self._genC(s, n, m - A[n] - G[n], True, out)
                    return
                continue
            r = float(self.T[k][m - A[k]]) if m >= A[k] else INF
            c = c0 + r + self._c(s, k, m - A[k] - G[k] - self.pin, True)
            if c == want:
                out.extend(("F", i) for i in range(s, k))
                self._genT(k, m - A[k], out)
                self._genC(s, k, m - A[k] - G[k] - self.pin, True, out)
                return
        raise AssertionError("no choice reproduces T")

    def _genC(self, s: int, t: int, m: int, held: bool, out: list[tuple]) -> None:
        ch, A, G = self.ch, self.A, self.G
        if t <= ch.p:
            return
        m = min(m, self.L - 1)
        want = self._c(s, t, m, held)
        if t == s + 1:
            if held and G[s] + self.S[s] <= m:
                out.append(("B", s))
                return
            if not held and not ch.reads_out(s) and G[s] + self.S[s] <= m:
                out.append(("B", s))
                return
            if not held and G[s] + A[t] + self.S[s] <= m:
                out.extend([("F", s), ("B", s)])
                return
        back = self.back(t, held)
        for k in range(s + 1, t):
            if self.FP[s, k] > m:
                break
            c = (self.F[k] - self.F[s] + self._c(k, t, m - A[k], held)
                 + self._c(s, k, m + back - A[k] - G[k], True))
            if c == want:
                out.extend(("F", i) for i in range(s, k))
                self._genC(k, t, m - A[k], held, out)
                self._genC(s, k, m + back - A[k] - G[k], True, out)
                return
        if held and not (ch.keep_last and t == ch.n):
            self._genC(s, t, m + A[t], False, out)
            return
        raise AssertionError("no choice reproduces C")


GRID_LEVELS = 256
GRID_MEMORY_MAX = 2 << 30  # bytes the grid DP may take; more raises PlanError


def chain_plan(ch: Chain, m: int, levels: int = GRID_LEVELS) -> tuple[float, list[tuple]]:
    """Forward MACs (first pass included) and macros of the cheapest schedule within m bytes
    (inf, [] if none): the exact search up to EXACT_MAX ops, the grid DP above."""
    if ch.n <= EXACT_MAX:
        return _search(ch, m)
    q = max(1, -(-m // levels))
    return _GridDp(ch, m // q + 1, q).solve(m)


def chain_cost(ch: Chain, m: int) -> float:
    """Minimal MACs of a whole step (first forward included) within m bytes; inf if none."""
    return chain_plan(ch, m)[0]


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
    offs, region = assign_offsets(bufs)
    for s in steps:
        if s.kind in (STEP_FWD, STEP_LOSS, STEP_GRAD, STEP_BWD):
            s.offset = offs[s.offset]
    del n_t
    return Plan(name, steps, region, mm.static_bytes(), peak, macs, sum(mm.macs), phases,
                mm.store_all_bytes(), macros=macros)


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


def assign_offsets(bufs: list[list[int]]) -> tuple[list[int], int]:
    """The smallest region of _assign_offsets over a few placement orders: biggest buffers
    first, earliest first, or longest-lived first."""
    best: tuple[list[int], int] | None = None
    for key in ("size", "start", "area"):
        offs, region = _assign_offsets(bufs, key)
        if best is None or region < best[1]:
            best = (offs, region)
    assert best is not None
    return best


def _assign_offsets(bufs: list[list[int]], key: str) -> tuple[list[int], int]:
    """Static offsets: biggest buffers first (key), each at the lowest 8-aligned offset free for its
    whole lifetime [start, end); a buffer tied to another (bufs[b][3] >= 0) lies at that one's
    start or at its end (its offset + its size - the tied one's size), whichever gives the
    lower offset (the group is placed together, each rectangle free)."""
    nb = len(bufs)
    members: dict[int, list[int]] = {}
    for b in range(nb):
        root = b
        while len(bufs[root]) > 3 and bufs[root][3] >= 0:
            root = bufs[root][3]
        members.setdefault(root, []).append(b)
    def rank(r: int) -> tuple:
        size = max(bufs[b][0] for b in members[r])
        life = max(bufs[b][2] for b in members[r]) - bufs[r][1]
        return {"size": (-size, bufs[r][1]), "start": (bufs[r][1], -size),
                "area": (-size * life, bufs[r][1])}[key]

    order = sorted(members, key=rank)
    p_lo = np.zeros(nb, dtype=np.int64)  # placed buffers: offset, end offset, lifetime
    p_hi = np.zeros(nb, dtype=np.int64)
    p_s = np.zeros(nb, dtype=np.int64)
    p_e = np.zeros(nb, dtype=np.int64)
    offs = [0] * nb
    region = 0
    npl = 0
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
        from .footprint import FootprintError, find_board
        try:
            return find_board(s).ram
        except FootprintError as e:
            raise PlanError(str(e)) from e


def format_plan(pl: Plan, budget: int | None = None) -> list[str]:
    rows = [f"  {pl.name}: peak {pl.peak:,} B (static {pl.static:,} + region {pl.region:,}; "
            f"live max {pl.live_peak:,}), extra MACs {pl.extra_macs:,} "
            f"({pl.extra_pct:.1f} %), {len(pl.steps)} steps"]
    if budget is not None:
        rows[0] += "  fits" if pl.peak <= budget else "  DOES NOT FIT"
    return rows


# --------------------------------------------------------------------------- command line


def _model_from_args(a):  # noqa: ANN001, ANN202
    from . import model as M

    shape = (a.input, a.input, 3)
    if a.model == "mobilenet_v1":
        return M.mobilenet_v1(shape, 10, alpha=a.alpha or 0.25)
    if a.model == "mobilenet_v2":
        return M.mobilenet_v2(shape, 10, alpha=a.alpha or 0.35)
    return M.small_cnn()


def _graph_from_args(a) -> Graph:  # noqa: ANN001
    from . import export

    if a.blob:
        from pathlib import Path

        return export.read(Path(a.blob).read_bytes()).graph
    return _model_from_args(a).graph


def phase_rows(pl: Plan) -> list[str]:
    return [f"    phase {k}: backward at op {op}, checkpoints (tensors) {ck}, {live:,} B live"
            for k, (op, ck, live) in enumerate(pl.phases)]


def _check_plan_args(a):  # noqa: ANN001, ANN202
    """What ``kilolearn plan`` checks before planning: (graph, dtype, budget)."""
    from pathlib import Path

    from . import export
    from .cliargs import UsageError, need_matplotlib

    budget = (a.budget if isinstance(a.budget, int) else budget_of(a.budget)) - a.reserve
    if budget < 1:
        raise UsageError(f"--reserve {a.reserve:,} leaves no arena of the budget "
                         f"{budget + a.reserve:,} B")
    if a.write and not a.blob:
        raise UsageError("--write needs --blob (the model to attach the schedule to)")
    if getattr(a, "curve", None):
        need_matplotlib("--curve")
    if a.blob:
        try:
            b = export.read(Path(a.blob).read_bytes())
        except export.BlobError as e:
            raise UsageError(f"--blob {a.blob}: {e}") from None
        except Exception as e:  # noqa: BLE001 - random bytes may break the reader anywhere
            raise UsageError(f"--blob {a.blob}: not a valid kilolearn blob "
                             f"({type(e).__name__}: {e})") from None
        g, dtype = b.graph, ("f32" if b.qmodel is None else "s8")
    else:
        g, dtype = _model_from_args(a).graph, a.dtype
    if getattr(a, "measure", None) and dtype != "s8":
        raise UsageError("--measure runs int8 training only (--dtype s8 or an int8 --blob)")
    return g, dtype, budget


def cmd_plan(a) -> int:  # noqa: ANN001
    from tabulate import tabulate

    g, dtype, budget = _check_plan_args(a)
    mm = MemModel(g, dtype, target=a.target)
    plans = [baseline(mm, w) for w in ("store-all", "sqrt-n", "recompute-all")]
    t0 = time.perf_counter()
    opt = optimal(mm, budget)
    dt = time.perf_counter() - t0
    rows = [["engine without a schedule", f"{mm.store_all_bytes():,}", "0.0 %", "-",
             "yes" if mm.store_all_bytes() <= budget else "no"]]
    for pl in plans + ([opt] if opt else []):
        rows.append([pl.name, f"{pl.peak:,}", f"{pl.extra_pct:.1f} %", len(pl.phases),
                     "yes" if pl.peak <= budget else "no"])
    print(f"{len(g.ops)} ops, {sum(mm.macs):,} MACs per forward pass, {dtype}, target "
          f"{a.target}; arena budget {budget:,} B (static part {mm.static_bytes():,} B: "
          "bookkeeping, weight copies, scratch)")
    print(tabulate(rows, headers=["plan", "arena peak B", "extra MACs", "recompute phases",
                                  "fits"]))
    if opt is None:
        mb = min_budget(mm)
        print(f"NO PLAN FITS {budget:,} B; the smallest budget that fits is {mb:,} B")
        return 1
    print(f"optimal plan: {opt.peak:,} B (region {opt.region:,} B, live max "
          f"{opt.live_peak:,} B), +{opt.extra_pct:.1f} % MACs, planned in {dt * 1000:.0f} ms")
    for r in phase_rows(opt):
        print(r)
    if getattr(a, "curve", None):
        alpha = a.alpha or (0.25 if a.model == "mobilenet_v1" else 0.35)
        title = (f"{a.model} alpha {alpha} {a.input}x{a.input}, {dtype}, {len(g.ops)} ops"
                 if not a.blob else a.blob)
        rows = plot_curve(mm, a.curve, title, budget)
        print(tabulate(rows, headers=["budget B", "arena peak B", "extra MACs %"]))
        print(f"wrote {a.curve}")
    if getattr(a, "measure", None):
        _measure(a, g, mm, plans[0], opt)
    if a.write:
        write_blob(a.blob, opt, a.write)
        with open(a.write, "rb") as f:
            minor = f.read(8)[6]
        print(f"wrote {a.write} (format 2.{minor}, {len(opt.steps)} steps)")
    return 0


def _measure(a, g: Graph, mm: MemModel, store_all: Plan, opt: Plan) -> None:  # noqa: ANN001
    """--measure: the store-all plan with int32 sums and with every eligible step compact,
    and the optimal plan, trained on the board; measured vs planned peak, insn per sample."""
    from pathlib import Path

    from tabulate import tabulate

    from . import export
    from . import planbench as B
    from . import reference as R

    if a.blob:
        qm = export.read(Path(a.blob).read_bytes()).qmodel
    else:
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 1, (4,) + g.shapes[g.input]).astype(np.float32)
        qm = R.quantize_model(g, _model_from_args(a).init(0), x)
    plain = dataclasses.replace(mm, compact=False)
    plans = [(plain, baseline(plain, "store-all")), (mm, B.compact_everywhere(mm, store_all)),
             (mm, opt)]
    plans[0][1].name = "store-all (int32 sums)"
    ms = B.measure(qm, plans, a.measure)
    print(f"measured on {a.measure} (one fused training step per sample, arena = planned peak):")
    print(tabulate(B.rows(ms), headers=B.HEADERS))


def write_blob(src: str | None, pl: Plan, dst: str) -> None:
    """Re-export the .klm at src with the schedule of pl (format 2.1)."""
    from pathlib import Path

    from . import export

    if not src:
        raise PlanError("--write needs --blob (the model to attach the schedule to)")
    b = export.read(Path(src).read_bytes())
    out = export.export_f32(b.graph, b.params, pl) if b.qmodel is None else \
        export.export_s8(b.qmodel, pl)
    Path(dst).write_bytes(out)


def add_cli(sub) -> None:  # noqa: ANN001
    from . import cliargs as ca

    p = sub.add_parser("plan", help="checkpointed-backprop schedule for an SRAM budget")
    p.add_argument("--budget", required=True, type=ca.Budget(),
                   help="arena bytes (262144, 256K) or a board name")
    p.add_argument("--reserve", type=ca.IntRange(0, ca.U32), default=0,
                   help="bytes of the budget not for the arena")
    p.add_argument("--model", default="mobilenet_v1",
                   choices=["mobilenet_v1", "mobilenet_v2", "cnn"])
    p.add_argument("--blob", type=ca.InFile("blob"), help="plan the graph of this .klm instead")
    p.add_argument("--write", type=ca.OutFile(),
                   help="with --blob: write that model with the optimal schedule "
                   "(format 2.1, 2.3 with compact steps) to this path")
    p.add_argument("--input", type=ca.IntRange(8, 512), default=96,
                   help="input resolution (H = W) of the MobileNets")
    p.add_argument("--alpha", type=ca.FloatRange(0.0, 2.0), default=None,
                   help="width multiplier of the MobileNets, in (0, 2] (default: v1 0.25, "
                   "v2 0.35)")
    p.add_argument("--dtype", default="s8", choices=["s8", "f32"])
    p.add_argument("--target", default="arm", choices=list(TARGET_PTR))
    p.add_argument("--curve", type=ca.OutFile(ca.PLOT_SUFFIXES),
                   help="also plot extra MACs vs budget (optimal, store-all, "
                   "sqrt(n)) to this .png/.pdf/.svg and print its table")
    p.add_argument("--measure", metavar="BOARD", choices=ca.BOARDS + ["host"],
                   help="also train with the plans on BOARD (mps2-an386, ..., host): the "
                   "measured arena high-water mark and instructions per sample")
    p.set_defaults(fn=cmd_plan)


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
