"""The chain of cuts and the searches on it: exact search for short chains, the grid dynamic
programme for long ones.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

from .memory import INF, MemModel, PlanError

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
