"""`kilolearn plan`: the command line of the memory planner (plan, write, measure on a board)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from ..core.model import Graph
from .curve import plot_curve
from .memory import TARGET_PTR, MemModel, PlanError
from .steps import Plan
from .strategies import baseline, budget_of, min_budget, optimal

# --------------------------------------------------------------------------- command line


def _model_from_args(a):  # noqa: ANN001, ANN202
    from ..core import model as M

    shape = (a.input, a.input, 3)
    if a.model == "mlp":
        return M.mlp(list(a.sizes))
    if a.model == "mobilenet_v1":
        return M.mobilenet_v1(shape, 10, alpha=a.alpha or 0.25)
    if a.model == "mobilenet_v2":
        return M.mobilenet_v2(shape, 10, alpha=a.alpha or 0.35)
    return M.small_cnn()


def _graph_from_args(a) -> Graph:  # noqa: ANN001
    from ..formats import export

    if a.blob:
        from pathlib import Path

        return export.read(Path(a.blob).read_bytes()).graph
    return _model_from_args(a).graph


def phase_rows(pl: Plan) -> list[str]:
    return [f"    phase {k}: backward at op {op}, checkpoints (tensors) {ck}, {live:,} B live"
            for k, (op, ck, live) in enumerate(pl.phases)]


def _two_regions(a, mm: MemModel):  # noqa: ANN001, ANN202
    """(small, big): the budget's board has two RAM regions or more and the static part fits
    the second largest; else None (one contiguous arena)."""
    board = getattr(a.budget, "board", None)
    rams = sorted((r for r in getattr(board, "regions", ()) if r.kind == "ram"),
                  key=lambda r: -r.size)
    if len(rams) < 2 or mm.static_bytes(aligned=False) > rams[1].size:
        return None
    return rams[1], rams[0]


def _one_region_pct(mm: MemModel, budget: int) -> str:
    opt = optimal(mm, budget)
    return "no plan" if opt is None else f"+{opt.extra_pct:.1f} % MACs"


def _check_plan_args(a):  # noqa: ANN001, ANN202
    """What ``kilolearn plan`` checks before planning: (graph, dtype, budget)."""
    from pathlib import Path

    from ..cliargs import UsageError, need_matplotlib
    from ..formats import export

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
        a.paged = getattr(a, "paged", False) or b.paged
    else:
        g, dtype = _model_from_args(a).graph, a.dtype
    if getattr(a, "measure", None) and dtype != "s8":
        raise UsageError("--measure runs int8 training only (--dtype s8 or an int8 --blob)")
    return g, dtype, budget


def _paged_need(g: Graph, dtype: str, target: str) -> int:
    """Arena bytes of a paged model (the row selection needs none: keys read as made)."""
    return MemModel(g, dtype, target=target, paged=True).store_all_bytes()


def cmd_plan_paged(a, g: Graph, dtype: str, budget: int) -> int:  # noqa: ANN001
    """A paged model (blob 2.4, or --paged): no schedule; the arena holds activations,
    gradients, scratch and a pointer per row of the paged ops. KL_ENOMEM with the smallest
    arena when it does not fit (before anything is written to a board's flash)."""
    from ..cliargs import UsageError
    from ..formats import export

    if getattr(a, "write", None) or getattr(a, "measure", None) or getattr(a, "curve", None):
        raise UsageError("a paged model trains without a schedule: leave out --write, "
                         "--measure and --curve")
    mm = MemModel(g, dtype, target=a.target, paged=True)
    paged = [i for i, op in enumerate(g.ops) if export.pageable(op)]
    if not paged:
        raise UsageError("--paged: the model has no trainable dense op to page")
    es = 1 if dtype == "s8" else 4
    in_flash = sum(mm._n_w(i) * es + 4 * mm.tsize[g.ops[i].output] for i in paged)
    need = _paged_need(g, dtype, a.target)
    print(f"{len(g.ops)} ops, {dtype}, target {a.target}, paged: {len(paged)} dense ops read in "
          f"place, {in_flash:,} B of weights and biases stay in flash")
    print(f"arena: {need:,} B (every row or rows selected by gradient alike); budget "
          f"{budget:,} B")
    if need > budget:
        print(f"kilolearn: KL_ENOMEM: the model needs {need:,} B of arena even paged; the "
              f"smallest arena that fits is {need:,} B (budget {budget:,} B)")
        return 2
    print(f"fits: {need:,} B of {budget:,} B")
    return 0


def cmd_plan(a) -> int:  # noqa: ANN001
    from tabulate import tabulate

    g, dtype, budget = _check_plan_args(a)
    if getattr(a, "paged", False):
        return cmd_plan_paged(a, g, dtype, budget)
    mm = MemModel(g, dtype, target=a.target)
    regions = _two_regions(a, mm)
    if regions is not None:  # the static part in the small region, the schedule's region
        small, big = regions  # in the big one and on in the small one after the static part
        split = (big.size - a.reserve) // 8 * 8
        if split < 8:
            from ..cliargs import UsageError

            raise UsageError(f"--reserve {a.reserve:,} leaves nothing of {big.name}")
        mm = dataclasses.replace(mm, split=split)
        budget = small.size + split
        print(f"{a.budget.board.name}: two RAM regions: the static part "  # type: ignore
              f"({mm.static_bytes(aligned=False):,} B) in {small.name} ({small.size:,} B), the "
              f"schedule's region in {big.name} ({big.size:,} B"
              + (f" - --reserve {a.reserve:,} B" if a.reserve else "")
              + f"), split at {split:,}: its offsets from there on in {small.name} after the "
              "static part")
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
        from ..formats import export

        if any(export.pageable(op) for op in g.ops):
            print(f"paged (kilolearn export --paged; docs/paged-weights.md) it needs "
                  f"{_paged_need(g, dtype, a.target):,} B")
        return 1
    print(f"optimal plan: {opt.peak:,} B (region {opt.region:,} B, live max "
          f"{opt.live_peak:,} B), +{opt.extra_pct:.1f} % MACs, planned in {dt * 1000:.0f} ms")
    if regions is not None:
        main, far = mm.region_peaks(opt.region)
        one_mm = dataclasses.replace(mm, split=0)
        print(f"  per region: {regions[1].name} {far:,} B of {regions[1].size:,} B (the "
              f"schedule's region" + (f" below {opt.split:,}" if opt.split else "")
              + f"), {regions[0].name} {main:,} B of {regions[0].size:,} B (the static part"
              + (f" and the region's {opt.region - opt.split:,} B from {opt.split:,} on"
                 if opt.split else "")
              + f"); one region of {regions[1].size - a.reserve:,} B: "
              f"{_one_region_pct(one_mm, regions[1].size - a.reserve)}")
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

    from ..bench import planbench as B
    from ..core import reference as R
    from ..formats import export

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
    far = _two_regions(a, mm) is not None
    ms = B.measure(qm, plans, a.measure, far=far)
    print(f"measured on {a.measure} (one fused training step per sample, arena = planned peak"
          + ("; two regions, peaks as arena + second region: the static part (and a split "
             "region's part from the boundary on) + the schedule's region (below the boundary)"
             if far else "") + "):")
    print(tabulate(B.rows(ms), headers=B.HEADERS))


def write_blob(src: str | None, pl: Plan, dst: str) -> None:
    """Re-export the .klm at src with the schedule of pl (format 2.1; 2.7 when split)."""
    from pathlib import Path

    from ..formats import export

    if not src:
        raise PlanError("--write needs --blob (the model to attach the schedule to)")
    b = export.read(Path(src).read_bytes())
    out = export.export_f32(b.graph, b.params, pl) if b.qmodel is None else \
        export.export_s8(b.qmodel, pl)
    Path(dst).write_bytes(out)


def add_cli(sub) -> None:  # noqa: ANN001
    from .. import cliargs as ca

    p = sub.add_parser("plan", help="checkpointed-backprop schedule for an SRAM budget")
    p.add_argument("--budget", required=True, type=ca.Budget(),
                   help="arena bytes (262144, 256K) or a board name")
    p.add_argument("--reserve", type=ca.IntRange(0, ca.U32), default=0,
                   help="bytes of the budget not for the arena")
    p.add_argument("--model", default="mobilenet_v1",
                   choices=["mobilenet_v1", "mobilenet_v2", "cnn", "mlp"])
    p.add_argument("--sizes", default=[784, 512, 128, 10], type=ca.Sizes(),
                   help="with --model mlp: layer sizes, input to classes (default 784-512-128-10)")
    p.add_argument("--paged", action="store_true",
                   help="the trainable dense ops' weights stay in flash (docs/paged-weights.md): "
                   "the arena the model needs paged (a paged --blob is planned so anyway)")
    p.add_argument("--blob", type=ca.InFile("blob"), help="plan the graph of this .klm instead")
    p.add_argument("--write", type=ca.OutFile(),
                   help="with --blob: write that model with the optimal schedule "
                   "(format 2.1, 2.3 with compact steps, 2.7 with a region split across a "
                   "board's two RAM regions) to this path")
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
