"""The planner's memory model: step and schedule constants, the engine's arena bookkeeping mirrored
byte for byte (MemModel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core import selective
from ..core.model import Graph

#: every name here, the private helpers too: the ``planner`` package re-exports them all
__all__ = ["BAND_BYTES", "FWD_RECOMPUTE", "INF", "SCHED_HEADER", "SCHED_HEADER_SPLIT", "STEP_BWD",
           "STEP_COMPACT", "STEP_FREE_DATA", "STEP_FREE_GRAD", "STEP_FWD", "STEP_GRAD",
           "STEP_IN_PLACE", "STEP_LOSS", "STEP_NAMES", "STEP_SIZE", "STRUCT_SIZES", "TARGET_PTR",
           "MemModel", "PlanError", "_al", "_Arena", "band_rows", "compact_scratch",
           "conv_s8_scratch"]

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
SCHED_HEADER_SPLIT = 24  # blob 2.7: + u32 boundary, u32 the second part's bytes
STEP_SIZE = 8
INF = float("inf")

# sizeof(kl_tensor_t), sizeof(kl_op_t) by pointer size (kilolearn.h)
STRUCT_SIZES = {4: (24, 64), 8: (32, 104)}
PART_SIZE = {4: 12, 8: 24}  # kl_part_t (KL_UPDATE_PARTIAL laid out)
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
    momentum: bool = False  # momentum buffers (f32: float, s8: int32 velocity)
    optimizer: str = "sgd"  # "sgd" | "adam" (f32: two moment buffers)
    batch: int = 1  # samples per update (> 1: the batch's summed gradients are kept)
    target: str = "arm"
    in_place: bool = True  # plans quantise input gradients in their backward scratch
    compact: bool = True  # ... from int16 sums made in bands, where that needs less scratch
    uncompact: frozenset[int] = frozenset()  # ops kept on int32 sums (trim_compact)
    paged: bool = False  # trainable dense ops read in place, rows to the weight log (2.4)
    partial_pm: int = 0  # KL_UPDATE_PARTIAL in the blob (per mille): kept blocks and slots
    #: the schedule's region split at this offset (blob 2.7; 0: one block): offsets below it
    #: in the arena's second memory region (kl_arena_set_far), the rest in the arena after the
    #: static part; no buffer lies across it (a wall in assign_offsets)
    split: int = 0
    cmsis_nn: bool = False  # the cmsis_nn kernel backend's parameter blocks (s8)

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
        # Paissan's partial activations laid out (kl_model_init): channels kept per tensor
        self.pk = [0] * len(g.shapes)
        self.partial_layout = bool(self.partial_pm and self.dtype == "s8" and self.training
                                   and not self.keep_grads)
        if self.partial_layout:
            for t in selective.partial_tensors(g, self.need_grad):
                self.pk[t] = selective.count(g.shapes[t][-1], self.partial_pm)

    def lsize(self, t: int) -> int:
        """Elements of tensor t that are kept (its block when partial)."""
        s = self.graph.shapes[t]
        return int(np.prod(s[:-1])) * self.pk[t] if self.pk[t] else self.tsize[t]

    # -- what kl_model_init allocates ------------------------------------------------------
    def _n_w(self, i: int) -> int:
        g = self.graph
        return int(np.prod(g.weight_shape(i))) if g.ops[i].has_params else 0

    def is_paged(self, i: int) -> bool:
        """Is op i paged (export.pageable, in a paged blob)?"""
        op = self.graph.ops[i]
        return (self.paged and op.kind == "dense" and bool(op.trainable)
                and not op.bias_only)

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
                need = max(need, self.lsize(op.inputs[0]) * 4)
            upd = 0
            if self.trainable[i] and op.has_params:
                n_b = y if op.kind == "dense" else g.shapes[op.output][2]
                if op.bias_only:
                    upd = 4 * n_b
                elif self.partial_pm and op.kind == "conv":  # the weights joining the blocks
                    kx = self.pk[op.inputs[0]] or g.shapes[op.inputs[0]][-1]
                    ky = self.pk[op.output] or n_b
                    upd = (ky * op.kernel[0] * op.kernel[1] * kx + ky) * 4
                elif op.kind in ("conv", "dwconv"):
                    upd = (self._n_w(i) + n_b) * 4
                elif self.defer:  # dense: weight gradients, then the optimiser
                    upd = (self._n_w(i) + n_b) * 4
                elif s8_dense:  # paged: a 256-byte chunk of a row at a time; KL_FC_SGD_S8_SCRATCH
                    upd = (2 * 256 + 4 + 8 if self.is_paged(i)
                           else max(2 * x + 4 * y + 8, 12 * min(x, 40) + 48))
            need = max(need, (_al(x * self.es, 8) if in_place else 0) + upd)
        return need

    def _static(self, arena: _Arena) -> None:
        g = self.graph
        ts, os_ = STRUCT_SIZES[TARGET_PTR[self.target]]
        arena.alloc(ts * len(g.shapes))
        arena.alloc(os_ * self.n)
        for i, op in enumerate(g.ops):
            if self.is_paged(i):  # a pointer per row (paged ops are trained or read alike)
                ptr = TARGET_PTR[self.target]  # aligned as pointers
                arena.alloc(ptr * self.tsize[op.output], ptr)
                continue
            n_w = self._n_w(i)
            if n_w == 0 or not self.trainable[i]:
                continue
            bsize = 4 * (self.tsize[op.output] if op.kind == "dense"
                         else g.shapes[op.output][2])
            wt = not op.bias_only  # a bias-only op reads its weights in place
            if wt:
                arena.alloc(n_w * self.es)
            arena.alloc(bsize)
            for _ in range((self.momentum or self.optimizer == "adam")
                           + (self.optimizer == "adam")):  # momentum / Adam's moments
                if wt:
                    arena.alloc(n_w * 4)
                arena.alloc(bsize)
            if self.keep_grads or self.batch > 1:  # kept, or summed over a batch
                if wt:
                    arena.alloc(n_w * 4)
                arena.alloc(bsize)
        if self.cmsis_nn and self.dtype == "s8":
            self._cmsis_blocks(arena)

    def _cmsis_blocks(self, arena: _Arena) -> None:
        """kl_cmsis_blocks (kl_model_init.c): a pointer per op, then KL_CMSIS_PREP_BYTES per
        int8 dense (not paged), conv and depthwise op: 12 bytes, then per output channel the
        bias (and for conv and depthwise its multiplier and shift)."""
        g = self.graph
        ptr = TARGET_PTR[self.target]
        arena.alloc(ptr * self.n, ptr)
        for i, op in enumerate(g.ops):
            if (self._n_w(i) == 0 or self.is_paged(i)
                    or op.kind not in ("dense", "conv", "dwconv")):
                continue
            dense = op.kind == "dense"
            n = self.tsize[op.output] if dense else g.shapes[op.output][2]
            arena.alloc(12 + (4 if dense else 12) * n)

    @property
    def defer(self) -> bool:
        """kl_model_t.defer: updates after the weight gradients (Adam, int8 momentum, a
        batch), not fused into the dense backward step."""
        return self.training and (self.batch > 1 or self.optimizer == "adam" or
                                  (self.dtype == "s8" and self.momentum))

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

    def static_bytes(self, aligned: bool = True) -> int:
        """Arena bytes before the plan's region (which starts 8-aligned right after); unaligned:
        the arena's high-water mark when the region lies in a second memory region."""
        a = _Arena()
        self._static(a)
        s, k = self.scratch_sizes(planned=True)
        a.alloc(s, 8)
        a.alloc(k, 8)
        return _al(a.used, 8) if aligned else a.used

    def region_peaks(self, region: int, far: bool = True) -> tuple[int, int]:
        """High-water marks (arena, second memory region) of kl_model_init with a schedule
        region of `region` bytes; far: the arena has a second memory region (else the second
        is 0 and the arena holds static + region, one block even when split)."""
        if not far:
            return self.static_bytes() + region, 0
        if self.split and region > self.split:
            return self.static_bytes() + region - self.split, self.split
        return self.static_bytes(aligned=False), region

    def store_all_bytes(self) -> int:
        """Arena peak of the engine without a schedule: every activation and gradient."""
        g = self.graph
        a = _Arena()
        self._static(a)
        if self.partial_layout:
            a.alloc(PART_SIZE[TARGET_PTR[self.target]] * len(g.shapes), 8)
        slots = [0, 0]  # partial tensors are written whole into a slot by producer parity
        for t, k in enumerate(self.pk):
            if k:
                slots[self.producer[t] & 1] = max(slots[self.producer[t] & 1], self.tsize[t])
        for size in slots:
            if size:
                a.alloc(size * self.es)
        for t in range(len(g.shapes)):
            if t != g.input:
                a.alloc(self.lsize(t) * self.es)
            if self.training and (self.need_grad[t] or t == g.output):
                a.alloc(self.lsize(t) * self.es)
        s, k = self.scratch_sizes()
        a.alloc(s, 8)
        a.alloc(k, 8)
        sel_scratch = max((self._n_w(i) for i, op in enumerate(g.ops)
                           if op.kind == "conv" and self.trainable[i] and not op.bias_only),
                          default=0)
        if self.partial_layout and sel_scratch:  # the packed block weights
            a.alloc(sel_scratch, 8)
        return a.used

    # -- what a backward step reads (kl_model.c bwd_reads: keep the two identical) ---------
    def _mask_on_give(self, t: int) -> bool:
        p = self.producer[t]
        return (self.dtype == "s8" and p >= 0 and self.n_users[t] == 1
                and self.graph.ops[p].act in ("relu", "relu6"))

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
