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
``D_i``, from which ops ``i..`` can be recomputed. On that chain the dynamic programme of
:func:`_Dp` is exact (persistent checkpoints, memory in bytes, heterogeneous sizes and MACs, the
checkpoints re-chosen for every phase of the backward pass as it frees memory); the steps are then
generated with buffers freed right after their last read, and the peak is measured on the steps
and the offsets, not estimated.
"""

from __future__ import annotations

import math
import struct
import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .model import Graph

# step kinds (docs/blob-format.md, kl_blob.h KL_STEP_*)
STEP_FWD, STEP_LOSS, STEP_GRAD, STEP_BWD, STEP_FREE_DATA, STEP_FREE_GRAD = 1, 2, 3, 4, 5, 6
STEP_NAMES = {STEP_FWD: "fwd", STEP_LOSS: "loss", STEP_GRAD: "grad", STEP_BWD: "bwd",
              STEP_FREE_DATA: "free", STEP_FREE_GRAD: "free_grad"}
FWD_RECOMPUTE = 0x01  # step flag: a recomputation (not the first forward pass)
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

    def _op_scratch(self, i: int, training: bool | None = None) -> int:
        op = self.graph.ops[i]
        x, y = self.tsize[op.inputs[0]], self.tsize[op.output]
        need = 2 * x + 4 * y + 8 if op.kind == "dense" and self.dtype == "s8" else 0
        if self.training if training is None else training:
            need = max(need, x * 4)
            if op.kind in ("conv", "dwconv"):
                need = max(need, (self._n_w(i) + self.graph.shapes[op.output][2]) * 4)
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
        """Bytes of int32 scratch the backward step of op i gets in the planned region."""
        return _al(self._op_scratch(i, True), 8)

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
        r = [op.output] if op.act != "none" else []
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
    first op with a backward step, keep_last: the last bundle (the logits) is never freed."""

    a: list[int]
    g: list[int]
    f: list[int]
    p: int = 0
    keep_last: bool = False

    @property
    def n(self) -> int:
        return len(self.f)


def chain_of(mm: MemModel) -> Chain:
    g = mm.graph
    n = mm.n
    a, gr = [], []
    for i in range(n + 1):
        d = [t for t in range(len(g.shapes)) if mm.producer[t] < i and mm.last_use[t] >= i
             and t != g.input]
        a.append(sum(mm.dbytes[t] for t in d))
        gr.append(sum(mm.gbytes[t] for t in d if mm.need_grad[t] or t == g.output))
    return Chain(a, gr, list(mm.macs), mm.first_bwd(), keep_last=True)


class _Dp:
    """Optimal persistent checkpointing of a chain under a memory bound, in bytes.

    T(s, m): bundle s held, m bytes free: the cheapest way to run forward to the loss and back
    to cut s. C(s, t, m): bundle s held, bundle t and its gradient held: backprop ops s..t-1,
    leaving the gradient of bundle s. Both pick the next checkpoint k; the right part runs
    with bundle k held, the left part with the memory the right part has freed."""

    def __init__(self, ch: Chain, quantum: int = 1):
        self.ch = ch
        self.q = quantum  # free memory is rounded down to this (1: exact)
        n = ch.n
        self.F = [0] * (n + 1)
        for i in range(n):
            self.F[i + 1] = self.F[i] + ch.f[i]
        self.fp = [[0] * (n + 1) for _ in range(n + 1)]  # forward-and-drop peak s -> k
        for s in range(n + 1):
            peak = 0
            for k in range(s + 1, n + 1):
                i = k - 1
                peak = max(peak, (ch.a[i] if i > s else 0) + ch.a[k])
                self.fp[s][k] = peak
        self.C = lru_cache(maxsize=None)(self._C)
        self.T = lru_cache(maxsize=None)(self._T)

    def freed(self, t: int) -> int:
        ch = self.ch
        return ch.g[t] + (0 if (ch.keep_last and t == ch.n) else ch.a[t])

    def _C(self, s: int, t: int, m: int, held: bool = True) -> tuple[float, int]:
        """held: bundle t is in memory (else it is recomputed from the left)."""
        if m % self.q:
            return self.C(s, t, m - m % self.q, held)
        ch = self.ch
        if t <= ch.p:
            return 0, -1
        best: tuple[float, int] = (INF, -1)
        if held and not (ch.keep_last and t == ch.n):
            best = (self.C(s, t, m + ch.a[t], False)[0], -2)  # drop bundle t, recompute it
        if t == s + 1:
            need = ch.g[s] + (0 if held else ch.a[t])
            c = 0 if held else ch.f[s]
            return (c, -1) if need <= m and c < best[0] else best
        for k in range(s + 1, t):
            if self.fp[s][k] > m:
                break
            r = self.C(k, t, m - ch.a[k], held)[0]
            if r == INF:
                continue
            c = self.F[k] - self.F[s] + r
            if c >= best[0]:
                continue
            back = self.freed(t) if held else ch.g[t]
            left = self.C(s, k, m + back - ch.a[k] - ch.g[k])[0]
            if c + left < best[0]:
                best = (c + left, k)
        return best

    def _T(self, s: int, m: int) -> tuple[float, int]:
        if m % self.q:
            return self.T(s, m - m % self.q)
        ch = self.ch
        n = ch.n
        best: tuple[float, int] = (INF, -1)
        pin = ch.a[n] if ch.keep_last else 0
        for k in range(s + 1, n + 1):
            if self.fp[s][k] > m:
                break
            c = self.F[k] - self.F[s]
            if k == n:
                if ch.a[n] + ch.g[n] > m:
                    continue
                c += self.C(s, n, m - ch.a[n] - ch.g[n])[0]
            else:
                r = self.T(k, m - ch.a[k])[0]
                if r == INF:
                    continue
                c += r
                if c >= best[0]:
                    continue
                c += self.C(s, k, m - ch.a[k] - ch.g[k] - pin)[0]
            if c < best[0]:
                best = (c, k)
        return best

    def solve(self, m: int) -> tuple[float, list[tuple]]:
        cost, _ = self.T(0, m - self.ch.a[0])
        if cost == INF:
            return INF, []
        out: list[tuple] = []
        self._genT(0, m - self.ch.a[0], out)
        return cost, out

    def _fw(self, s: int, k: int, out: list[tuple]) -> None:
        out.extend(("F", i) for i in range(s, k))

    def _genT(self, s: int, m: int, out: list[tuple]) -> None:
        ch = self.ch
        k = self.T(s, m)[1]
        self._fw(s, k, out)
        if k == ch.n:
            out.append(("L",))
            self._genC(s, ch.n, m - ch.a[k] - ch.g[k], out)
        else:
            self._genT(k, m - ch.a[k], out)
            pin = ch.a[ch.n] if ch.keep_last else 0
            self._genC(s, k, m - ch.a[k] - ch.g[k] - pin, out)

    def _genC(self, s: int, t: int, m: int, out: list[tuple], held: bool = True) -> None:
        ch = self.ch
        if t <= ch.p:
            return
        k = self.C(s, t, m, held)[1]
        if k == -2:
            self._genC(s, t, m + ch.a[t], out, False)
            return
        if t == s + 1:
            if not held:
                out.append(("F", s))
            out.append(("B", s))
            return
        self._fw(s, k, out)
        self._genC(k, t, m - ch.a[k], out, held)
        back = self.freed(t) if held else ch.g[t]
        self._genC(s, k, m + back - ch.a[k] - ch.g[k], out)


def chain_cost(ch: Chain, m: int) -> float:
    """Minimal MACs of a whole step (first forward included) within m bytes; inf if none."""
    return _Dp(ch).T(0, m - ch.a[0])[0]


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
    bufs: list[list[int]] = []  # [size, start step, end step]
    live_d: dict[int, int] = {}  # tensor -> buffer id
    live_g: dict[int, int] = {}
    seen_out = set()
    cur = peak = macs = 0
    phases: list[tuple[int, list[int], int]] = []
    in_recompute = False
    bwd_pos = -1

    def alloc(size: int) -> int:
        nonlocal cur, peak
        bufs.append([size, len(steps), -1])
        cur += size
        peak = max(peak, cur)
        return len(bufs) - 1

    def free(buf: int) -> None:
        nonlocal cur
        bufs[buf][2] = len(steps)
        cur -= bufs[buf][0]

    def still_read(t: int, j: int) -> bool:
        for j2 in range(j + 1, len(macros)):
            if t in reads[j2]:
                return True
            if producer_at[j2] == t:
                return False
        return False

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
            for t in op.inputs:
                if mm.need_grad[t] and t not in live_g:
                    b = alloc(mm.gbytes[t])
                    live_g[t] = b
                    steps.append(Step(STEP_GRAD, t, b))
            sb = alloc(mm.bwd_scratch(i)) if mm.training else 0  # int32 scratch, this step
            steps.append(Step(STEP_BWD, i, sb))
            if mm.training:
                free(sb)
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
                mm.store_all_bytes())


def assign_offsets(bufs: list[list[int]]) -> tuple[list[int], int]:
    """Static offsets: biggest buffers first, each at the lowest 8-aligned offset free for its
    whole lifetime [start, end)."""
    order = sorted(range(len(bufs)), key=lambda b: (-bufs[b][0], bufs[b][1]))
    placed: list[tuple[int, int, int, int]] = []  # off, size, start, end
    offs = [0] * len(bufs)
    region = 0
    for b in order:
        size, s, e = bufs[b]
        busy = sorted((o, o + sz) for o, sz, s2, e2 in placed if s2 < e and s < e2)
        off = 0
        for lo, hi in busy:
            if off + size <= lo:
                break
            off = max(off, _al(hi, 8))
        offs[b] = off
        placed.append((off, size, s, e))
        region = max(region, off + size)
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


def _finish(mm: MemModel, macros: list[tuple], name: str, t0: float) -> Plan:
    pl = build_steps(mm, macros, name)
    pl.seconds = time.perf_counter() - t0
    return pl


def baseline(mm: MemModel, which: str) -> Plan:
    t0 = time.perf_counter()
    mac = {"store-all": _store_all_macros, "recompute-all": _recompute_all_macros,
           "sqrt-n": sqrt_n_macros}[which](mm)
    return _finish(mm, mac, which, t0)


def optimal(mm: MemModel, budget: int, *, chain: Chain | None = None,
            quantum: int = 0) -> Plan | None:
    """The fewest recomputed MACs with static + region <= budget, or None."""
    t0 = time.perf_counter()
    ch = chain or chain_of(mm)
    static = mm.static_bytes()
    m = budget - static
    dp = _Dp(ch, quantum if quantum else (1 if ch.n <= 16 else max(4, m // 128 // 4 * 4)))
    best: Plan | None = None
    for _ in range(24):  # the region may exceed the DP's bound (fragmentation, DAG overlap)
        if m < 0:
            break
        cost, macros = dp.solve(m)
        if cost == INF:
            break
        pl = build_steps(mm, macros, "optimal")
        if pl.peak <= budget:
            best = pl
            break
        m -= max(4, pl.peak - budget)
    # the chain model is conservative (bundles sharing a skip tensor count it twice, a step
    # may not read every tensor of its bundles): a baseline may fit where the DP sees no room
    if best is None or best.extra_macs > 0:
        for which in ("store-all", "sqrt-n", "recompute-all"):
            pl = baseline(mm, which)
            if pl.peak <= budget and (best is None or pl.macs < best.macs):
                pl.name = "optimal"
                best = pl
    if best is not None:
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


def _graph_from_args(a) -> Graph:  # noqa: ANN001
    from . import export
    from . import model as M

    if a.blob:
        from pathlib import Path

        return export.read(Path(a.blob).read_bytes()).graph
    shape = (a.input, a.input, 3)
    if a.model == "mobilenet_v1":
        return M.mobilenet_v1(shape, 10, alpha=a.alpha or 0.25).graph
    if a.model == "mobilenet_v2":
        return M.mobilenet_v2(shape, 10, alpha=a.alpha or 0.35).graph
    return M.small_cnn().graph


def phase_rows(pl: Plan) -> list[str]:
    return [f"    phase {k}: backward at op {op}, checkpoints (tensors) {ck}, {live:,} B live"
            for k, (op, ck, live) in enumerate(pl.phases)]


def cmd_plan(a) -> int:  # noqa: ANN001
    from tabulate import tabulate

    g = _graph_from_args(a)
    dtype = a.dtype
    if a.blob:
        from pathlib import Path

        from . import export

        dtype = "f32" if export.read(Path(a.blob).read_bytes()).qmodel is None else "s8"
    mm = MemModel(g, dtype, target=a.target)
    budget = budget_of(a.budget) - a.reserve
    plans = [baseline(mm, w) for w in ("store-all", "sqrt-n", "recompute-all")]
    t0 = time.perf_counter()
    opt = optimal(mm, budget)
    dt = time.perf_counter() - t0
    rows = [["engine without a schedule", f"{mm.store_all_bytes():,}", "0.0 %", "-",
             "yes" if mm.store_all_bytes() <= budget else "no"]]
    for pl in plans + ([opt] if opt else []):
        rows.append([pl.name, f"{pl.peak:,}", f"{pl.extra_pct:.1f} %", len(pl.phases),
                     "yes" if pl.peak <= budget else "no"])
    print(f"{len(g.ops)} ops, {sum(mm.macs):,} MACs per forward pass, {a.dtype}, target "
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
    if a.write:
        write_blob(a.blob, opt, a.write)
        print(f"wrote {a.write} (format 2.1, {len(opt.steps)} steps)")
    return 0


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
    p = sub.add_parser("plan", help="checkpointed-backprop schedule for an SRAM budget")
    p.add_argument("--budget", required=True, help="arena bytes (262144, 256K) or a board name")
    p.add_argument("--reserve", type=int, default=0, help="bytes of the budget not for the arena")
    p.add_argument("--model", default="mobilenet_v1",
                   choices=["mobilenet_v1", "mobilenet_v2", "cnn"])
    p.add_argument("--blob", help="plan the graph of this .klm instead")
    p.add_argument("--write", help="with --blob: write that model with the optimal schedule "
                   "(format 2.1) to this path")
    p.add_argument("--input", type=int, default=96, help="input resolution (H = W)")
    p.add_argument("--alpha", type=float, default=0.0, help="width multiplier")
    p.add_argument("--dtype", default="s8", choices=["s8", "f32"])
    p.add_argument("--target", default="arm", choices=list(TARGET_PTR))
    p.set_defaults(fn=cmd_plan)


def curve(mm: MemModel, points: int = 12) -> list[tuple[int, Plan | None]]:
    """Optimal plans for budgets from the smallest feasible one to the store-all peak."""
    lo, hi = min_budget(mm), baseline(mm, "store-all").peak
    return [(b, optimal(mm, b)) for b in np.linspace(lo, hi, points).astype(int) // 4 * 4]


def plot_curve(mm: MemModel, path: str, title: str) -> list[list]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(b, p) for b, p in curve(mm) if p is not None]
    base = {w: baseline(mm, w) for w in ("store-all", "sqrt-n", "recompute-all")}
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot([p.peak / 1024 for _, p in pts], [p.extra_pct for _, p in pts], "o-",
            label="optimal plan")
    for w, mk in (("store-all", "s"), ("sqrt-n", "^")):
        ax.plot(base[w].peak / 1024, base[w].extra_pct, mk, ms=9, label=w)
    ax.axvline(mm.store_all_bytes() / 1024, ls=":", c="gray", label="engine without schedule")
    ax.set_xlabel("arena peak (KiB)")
    ax.set_ylabel("extra MACs (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return [[b, p.peak, f"{p.extra_pct:.1f}"] for b, p in pts] + \
        [[w, pl.peak, f"{pl.extra_pct:.1f}"] for w, pl in base.items()]
