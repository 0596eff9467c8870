"""The text of every figure of ``kilolearn docs`` (kilolearn.tools.docfigs): a render function
per figure, from its JSON record to the exact markdown of its block."""

from __future__ import annotations

from collections.abc import Callable

from .docfigs_measure import KERNEL_BOARDS, PLAN_BUDGET

# ---------------------------------------------------------------------------- helpers


def _stamp(rec: dict, what: str = "") -> str:
    """The provenance line of a block: when and with what it was measured."""
    return f"*Measured {rec['measured']}{what}: `{rec['command']}`.*"


def _measured(rec: dict) -> str:
    """The provenance inside a sentence: ``measured <date>: `<command>` ``."""
    return f"measured {rec['measured']}: `{rec['command']}`"


def _pct(v: float, digits: int = 2) -> str:
    return f"{100 * v:.{digits}f} %"


def _n(v: float) -> str:
    return f"{v:,.0f}"


def _range(vals: list[float], fmt: str = "{:,.0f}") -> str:
    lo, hi = min(vals), max(vals)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else \
        f"{fmt.format(lo)}–{fmt.format(hi)}"


def _fence(text: str) -> str:
    return f"```\n{text}\n```"


# ---------------------------------------------------------------------------- train / bench


def _by_dtype(rec: dict) -> dict[str, dict]:
    return {r["dtype"]: r for r in rec["data"]["results"]}


def _f32_s8(rec: dict) -> tuple[dict, dict]:
    """The float32 and the int8 result of a training record."""
    r = _by_dtype(rec)
    return r["f32"], r["s8"]


def render_train_mlp(rec: dict) -> str:
    from ..device import train

    return _fence(train.table(rec["data"]["results"])) + "\n\n" + _stamp(rec)


def render_int8_accuracy(rec: dict) -> str:
    f, s = _f32_s8(rec)
    return (f"64-32-10 MLP, sklearn digits (first 1,200 train / 597 test), lr 0.05, "
            f"{rec['data']['epochs']} epochs, seed 0, on QEMU {rec['data']['board']}: int8 "
            f"{_pct(s['device_acc'][-1])} (numpy {_pct(s['reference_acc'])}), float32 "
            f"{_pct(f['device_acc'][-1])} (numpy {_pct(f['reference_acc'])}); "
            f"{_n(s['insn_per_train_sample'])} and {_n(f['insn_per_train_sample'])} "
            f"instructions per training sample. These are the README's training table "
            f"({_measured(rec)}).")


def render_bench_m3(rec: dict) -> str:
    f, s = (r["insn_per_train_sample"] for r in _f32_s8(rec))
    return (f"On a core without an FPU int8 is {f / s:.1f}× faster: on the Cortex-M3 "
            f"(`{rec['data']['board']}`, the portable `ref` kernels, software floating point) "
            f"an int8 step takes {_n(s)} instructions per sample and a float32 one {_n(f)} "
            f"(mean of {rec['data']['epochs']} epochs; {_measured(rec)}).")


def render_bench_m55(rec: dict) -> str:
    f, s = _f32_s8(rec)
    acc = (f" int8 accuracy {_pct(s['device_acc'][-1])} (numpy {_pct(s['reference_acc'])})"
           if s.get("reference_acc") is not None else "")
    return (f"The 64-32-10 MLP on the Cortex-M55 (`{rec['data']['board']}`, the mve kernels for "
            f"the int8 dense layers, the fpu ones for float32): an int8 step takes "
            f"{_n(s['insn_per_train_sample'])} instructions per sample and a float32 one "
            f"{_n(f['insn_per_train_sample'])} (mean of {rec['data']['epochs']} epochs;{acc}; "
            f"{_measured(rec)}).")


def render_train_cnn(rec: dict) -> str:
    f, s = _f32_s8(rec)
    return (f"`kilolearn train --model cnn --epochs {rec['data']['epochs']}` trains a small "
            "CNN (conv-BN-ReLU, max-pool, conv-BN-ReLU, global average pool, dense): "
            f"{_pct(f['device_acc'][-1])} float32, {_pct(s['device_acc'][-1])} int8 (numpy: "
            f"{100 * f['reference_acc']:.2f} / {_pct(s['reference_acc'])}), "
            f"{_n(f['insn_per_train_sample'])} / {_n(s['insn_per_train_sample'])} instructions "
            f"per training sample on the M4 ({_measured(rec)}).")


# ---------------------------------------------------------------------------- sessions


def _insn_per_new(r: dict) -> list[float]:
    return [s["train_insn"] / max(s["train_steps"], 1) for s in r["stats"]]


def render_session_digits(rec: dict) -> str:
    from ..device import session

    d = rec["data"]
    res = {r["strategy"]: r for r in d["results"]}
    rep, nai = res["replay"], res["naive"]

    def path(r: dict) -> str:
        return " → ".join(f"{100 * a:.1f}" for a in r["acc_after_task"]) + " %"

    last = " / ".join(f"{100 * a:.0f}" for a in nai["task_acc"][-1])
    peak = max(s["arena_peak"] for s in rep["stats"])
    text = (f"Replay keeps the old classes ({path(rep)} on the classes seen so far after each "
            f"task) where fine-tuning forgets them ({path(nai)}; after the last task its "
            f"per-task accuracies are {last} %). On the M4 a new sample costs "
            f"{_range(_insn_per_new(rep))} instructions with its "
            f"{d['scenario']['replay_ratio']} replayed latents, {_range(_insn_per_new(nai))} "
            "without (naive; frozen 64→128 backbone and the 128→32→10 head; the "
            "\"insn/new sample\" column, task 1 to 5); the replay run's arena peak is "
            f"{peak:,} bytes of the device's {d['arena_size']:,}, with {rep['replay_cap']} "
            "latents held.")
    return (_fence(session.summary_table(d["results"])) + "\n\n" + text + "\n\n"
            + _stamp(rec, f" on {d['board']}"))


def render_session_fashion(rec: dict) -> str:
    d = rec["data"]
    res = {r["strategy"]: r for r in d["results"]}
    same = all(r["acc_after_task"] == r["reference_acc_after_task"] for r in d["results"])
    accs = ", ".join(f"{s} {_pct(res[s]['acc_after_task'][-1])}"
                     for s in ("replay", "naive", "joint"))
    return ("A larger scenario, the paper's setting: `kilolearn session --data fashion` "
            "(Fashion-MNIST 28×28 from Debian's `dataset-fashion-mnist`, 3,000 train / 1,000 "
            "test images) on a CNN backbone pretrained on the host on 20,000 other images, "
            "frozen in flash; the head learns the classes on the board. On "
            f"{d['board']}: {accs}, device and numpy {'identical' if same else 'DIFFERENT'}; "
            f"{_range(_insn_per_new(res['naive']))} instructions per new sample "
            f"({_measured(rec)}). Tables and the time-series scenario: "
            "docs/continual-learning.md.")


def render_session_tables(rec: dict) -> str:
    """Every strategy's per-task table of a session record, and the summary."""
    from ..device import session

    d = rec["data"]
    parts = []
    for r in d["results"]:
        parts.append(f"{r['strategy']} ({r['replay_cap']} latents held)" if r["replay_cap"]
                     else r["strategy"])
        parts.append(_fence(session.task_table(r)))
    parts.append("summary (accuracy on every class after the last task; mean of the per-task "
                 "accuracies)")
    parts.append(_fence(session.summary_table(d["results"])))
    notes = "".join(f" {n}." for n in d.get("notes", []))
    return "\n\n".join(parts) + f"\n\n*Arena {d['arena_size']:,} B.{notes} " + \
        _stamp(rec, f" on {d['board']}").lstrip("*")


def render_quickstart(rec: dict) -> str:
    d = rec["data"]
    if "test_s" not in d:  # the older record: main with .venv present, pip alone
        return (f"Timed on the machine that measured these docs ({d['machine']}, {d['cores']} "
                f"cores shared with other jobs; load average {d['load_main']:.1f} when it "
                f"started), with the apt packages installed: `./run.sh main` took "
                f"**{d['main_s']:.0f} s** with `.venv` present (the session firmware built "
                f"from scratch, then the three strategies). Without `.venv`, `run.sh` first "
                f"creates it and runs `pip install -e '.[test,plot]'`: that took "
                f"**{d['install_s']:.0f} s** from PyPI with no pip cache (load average "
                f"{d['load_install']:.1f}). The apt step and `./run.sh test` were not timed. "
                f"(Measured {rec['measured']}.)")
    return (f"Timed from a fresh clone (commit {d['commit']}) on the machine that measured "
            f"these docs ({d['machine']}, {d['cores']} cores), with the apt packages installed "
            f"already: `./run.sh main` took **{d['main_s'] / 60:.1f} min** (creating `.venv`, "
            f"`pip install -e '.[test,plot]'` from PyPI with no pip cache, the session "
            f"firmware built from scratch, the three strategies; load average "
            f"{d['load_main']:.1f} when it started), then `./run.sh test` "
            f"**{d['test_s'] / 60:.1f} min** (lint and the whole suite, every build from "
            f"scratch; load average {d['load_test']:.1f}). Installing the apt packages on a "
            f"bare machine adds their download. (Measured {rec['measured']}.)")


# ---------------------------------------------------------------------------- sparse-bench


def _runs(rec: dict) -> list:
    from ..bench import sparsebench as sb

    return [sb.run_from_dict(r) for r in rec["data"]["runs"]]


def _find(runs: list, model: str, policy: str, fraction: float):  # noqa: ANN202
    return next((r for r in runs if (r.model, r.policy) == (model, policy)
                 and abs(r.fraction - fraction) < 1e-9), None)


def render_sparse(rec: dict) -> str:
    from ..bench import sparsebench as sb

    d = rec["data"]
    runs = _runs(rec)
    full = {r.model: r for r in runs if r.policy == "all"}
    near = [f"{r.model} {r.policy} {100 * r.fraction:g} % "
            f"({100 * (r.device_acc - full[r.model].device_acc):+.2f})"
            for r in runs if r.policy != "all" and r.model in full
            and round(100 * (r.device_acc - full[r.model].device_acc), 2) >= -1.0]
    saved = []
    for frac, frozen in ((0.75, 25), (0.5, 50)):
        parts = []
        for m, f in full.items():
            r = _find(runs, m, "channel-sparse", frac)
            if r and r.insn_per_step and f.insn_per_step:
                parts.append(f"{m.upper()} {100 * (1 - r.insn_per_step / f.insn_per_step):.1f} %")
        if parts:
            saved.append(f"{frozen} % of channels frozen (`channel-sparse {100 * frac:g} %`) "
                         f"saves {', '.join(parts)}")
    lines = [
        "- **Within one point of the full update** (device accuracy, points against it): "
        + (", ".join(near) if near else "none") + "; the full update: "
        + ", ".join(f"{m.upper()} {_pct(r.device_acc)}" for m, r in full.items()) + ".",
        "- **Non-zero weight steps under the full update** (int8 stochastic rounding), per "
        "step: " + ", ".join(f"{r.changed_pct:.2f} % of the weights on the {m.upper()}"
                             for m, r in full.items()) + ".",
    ]
    if saved:
        lines.append("- **Instructions saved by structured channel sparsity** (M4, "
                     "`-icount shift=0`, mean over the epochs, against the full update): "
                     + "; ".join(saved) + ".")
    return (_fence(sb.accuracy_report(runs, d["board"], d["epochs"])) + "\n\n"
            + "\n".join(lines) + "\n\n" + _stamp(rec))


def render_sparse_traffic(rec: dict) -> str:
    from ..bench import sparsebench as sb

    d = rec["data"]
    runs = _runs(rec)
    full, topr = _find(runs, "mlp", "all", 1.0), _find(runs, "mlp", "topr", 0.2)
    lines = []
    if full is not None:
        if topr is not None:
            lines.append(
                f"- **Read and written per step** (int8 MLP): a Kwon-style store pages in "
                f"{full.read_per_step:,.0f} weights per step for the full update and "
                f"{topr.read_per_step:,.0f} for top-r 20 %; {full.changed_per_step:.1f} and "
                f"{topr.changed_per_step:.1f} weights change.")
        for every in d["commit_every"]:
            t = sb.traffic(full, every)
            p16 = t["parts"].get("4x16K")
            g, j = t["gen_kb"], t["journal_kb"]
            erase = ""
            if p16 and p16["journal_erases"]:
                ge, je = p16["gen_erases"], p16["journal_erases"]
                erase = (f", {max(ge, je) / min(ge, je):.1f}× "
                         f"{'fewer' if ge > je else 'more'} 16 KB sector erases")
            lines.append(
                f"- **A commit every {every} steps** (full update): a generation writes "
                f"{g:,.1f} KB per 1,000 steps, a journal would write {j:,.1f} KB ("
                f"{max(g, j) / min(g, j):.1f}× {'less' if g >= j else 'more'}{erase}).")
        every = d["commit_every"]
        lives = [f"{part} " + " / ".join(sb._life(sb.traffic(full, e)["parts"][part]["gen_life"])
                                         for e in every) for part in sb.SECTORS]
        lines.append("- **Generation lifetimes** at one step per second (full update; a commit "
                     f"every {' / '.join(map(str, every))} steps): {', '.join(lives)}.")
    return (_fence(sb.traffic_report(runs, d["commit_every"])) + "\n\n" + "\n".join(lines)
            + "\n\n" + _stamp(rec, " (the runs of the accuracy table above)"))


# ---------------------------------------------------------------------------- kernels


KERNEL_LABELS = {"conv1x1": "conv1x1 16→32", "conv3x3": "conv3x3 8→16",
                 "conv3x3s2": "conv3x3s2 8→16"}
DIRS = {"fwd": "forward", "bwd": "input grad", "wgrad": "weight grad", "sgd": "SGD step"}


def _ipm(rows: list[dict], op: str, direction: str, backend: str) -> float | None:
    for m in rows:
        if (m["op"], m["direction"], m["backend"]) == (op, direction, backend):
            return m["insn"] / m["macs"] if m["macs"] else None
    return None


def render_kernels(rec: dict) -> str:
    d = rec["data"]
    m4, m7 = KERNEL_BOARDS
    rows4 = d["boards"][m4]
    cm = d.get("cmsis_nn") or {}
    cmv = cm.get("insn_per_mac", {})
    keys: list[tuple[str, str]] = []
    for m in rows4:
        if (m["op"], m["direction"]) not in keys and m["backend"] == "dsp":
            keys.append((m["op"], m["direction"]))
    cins = cm.get("insn", {})  # per board and shape: the backend's and the raw call's counts

    def over(board: str, key: str, backend: str = "cmsis_nn") -> float | None:
        v = cins.get(board, {}).get(key, {})
        raw, got = v.get("cmsis_raw"), v.get(backend)
        return None if not raw or got is None else 100.0 * (got - raw) / raw

    def pct(v: float | None) -> str:
        return "" if v is None else f"{v:+.1f} %"

    out = ["| op | direction | MACs | insn/MAC ref | insn/MAC dsp | speed-up | dsp, plain layout "
           "| insn/MAC cmsis_nn | insn/MAC raw CMSIS-NN | cmsis_nn over raw | trained layer |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for op, di in keys:
        macs = next(m["macs"] for m in rows4 if (m["op"], m["direction"]) == (op, di))
        ref, dsp = _ipm(rows4, op, di, "ref"), _ipm(rows4, op, di, "dsp")
        if ref is None or dsp is None:  # the dense weight gradient: ref only (fused in SGD)
            continue
        c = cmv.get(f"{op} {di}")
        pl = _ipm(rows4, op, di, "dsp_plain")
        raw = cins.get(m4, {}).get(f"{op} {di}", {}).get("cmsis_raw")
        out.append(f"| {KERNEL_LABELS.get(op, op)} | {DIRS.get(di, di)} | {macs:,} | "
                   f"{ref:.2f} | {dsp:.2f} | {ref / dsp:.1f}× | "
                   f"{'' if pl is None else f'{pl:.2f}'} | "
                   f"{'' if c is None else f'{c:.2f}'} | "
                   f"{'' if raw is None else f'{raw / macs:.2f}'} | "
                   f"{pct(over(m4, f'{op} {di}'))} | "
                   f"{pct(over(m4, f'{op} {di}', 'cmsis_nn_train'))} |")
    text = ["\n".join(out), ""]
    if cm:
        same = cm.get("measured") == rec["measured"]
        text.append(f"Cortex-M4 (`{m4}`). The cmsis_nn column: {cm['source']}, "
                    + ("measured with the other columns." if same else
                       f"measured {cm['measured']}, the last run with a CMSIS-NN tree; the "
                       "other columns were measured without one, so it is carried over, not "
                       "rerun (`KILOLEARN_CMSIS_NN=<tree> kilolearn docs --measure kernels` "
                       "reruns it).")
                    + (" Raw CMSIS-NN: the function the backend calls, called directly with "
                       "every parameter prepared before the timer starts; cmsis_nn: the backend "
                       "as the engine calls it on a frozen layer (its parameter block made at "
                       "the first call), the trained layer's column with its bias rescaled in "
                       "the call (it changes every step)." if cins else ""))
    diffs: dict[str, list[float]] = {"dsp": [], "ref": []}
    for m in rows4:
        v7 = _ipm(d["boards"].get(m7, []), m["op"], m["direction"], m["backend"])
        if v7 is not None and m["backend"] in diffs:
            diffs[m["backend"]].append(abs(v7 - m["insn"] / m["macs"]))
    if diffs["dsp"] and diffs["ref"]:
        text.append(f"The Cortex-M7 (`{m7}`) is within {max(diffs['dsp']):.2f} insn/MAC of "
                    f"every dsp figure and {max(diffs['ref']):.2f} of every ref one (QEMU "
                    "counts instructions, not cycles).")
    text.append("")

    def dsp_vals(pred: Callable[[str, str], bool], boards: tuple[str, ...] = KERNEL_BOARDS
                 ) -> list[float]:
        return [m["insn"] / m["macs"] for b in boards for m in d["boards"].get(b, [])
                if m["backend"] == "dsp" and pred(m["op"], m["direction"])]

    def met(vals: list[float], bar: float) -> str:
        return "met" if max(vals) <= bar else "not met"

    def cms(pred: Callable[[str, str], bool]) -> list[float]:
        return [v for k, v in cmv.items() if pred(*k.split(" "))]

    conv_f = dsp_vals(lambda o, di: o.startswith("conv") and di == "fwd")
    fc_f = {o: _ipm(rows4, o, "fwd", "dsp") for o, di in keys if o.startswith("fc") and di == "fwd"}
    bwd = dsp_vals(lambda o, di: o[:2] in ("fc", "co") and di in ("bwd", "wgrad"))
    dw_f = [v for v in (_ipm(rows4, o, "fwd", "dsp") for o, di in keys
                        if o.startswith("dw") and di == "fwd") if v is not None]
    dw_b = dsp_vals(lambda o, di: o.startswith("dw") and di in ("bwd", "wgrad"))
    tight = max(((o, _ipm(rows4, o, "fwd", "dsp")) for o, di in keys
                 if o.startswith("conv") and di == "fwd"), key=lambda t: t[1])
    c_conv = cms(lambda o, di: o.startswith("conv") and di == "fwd")
    c_dw = cms(lambda o, di: o.startswith("dw") and di == "fwd")
    bars = ["Against the bar (≤ 1.2 forward, ≤ 2.0 backward GEMMs, ≤ 4 depthwise):", ""]
    bars.append(f"- **Conv forward ≤ 1.2: {met(conv_f, 1.2)}** ({_range(conv_f, '{:.2f}')} on "
                f"M4 and M7" + (f"; CMSIS-NN {_range(c_conv, '{:.2f}')}" if c_conv else "")
                + f"). The highest, {KERNEL_LABELS.get(tight[0], tight[0])} on the M4, is "
                f"{tight[1]:.3f}.")
    fc_txt = ", ".join(f"{v:.2f} at {o[2:]}" for o, v in
                       sorted(fc_f.items(), key=lambda t: t[1]) if v is not None)
    fc_big, fc_small = fc_f.get("fc256x128"), fc_f.get("fc64x32")
    bars.append(f"- **Dense forward ≤ 1.0 at 256×128 and ≤ 1.2 at 64×32** (paired layout): "
                f"256×128 {met([fc_big], 1.0) if fc_big else 'n/a'}, 64×32 "
                f"{met([fc_small], 1.2) if fc_small else 'n/a'} ({fc_txt.replace('x', '×')})."
                " The loop is 43 instructions per 48 MACs (0.90); a layer adds per output "
                "about 13 (the bias folded into the accumulator, the pair's correction, "
                "shift, saturation, store) and per input about 1.6 (centring, the input sum): "
                "at 64 inputs that is 0.2 insn/MAC more, at 256 0.05.")
    sgd = {o: (_ipm(rows4, o, "sgd", "dsp"), _ipm(rows4, o, "sgd", "dsp_plain"))
           for o, di in keys if di == "sgd"}
    if sgd:
        bars.append("- **SGD step on the paired layout** (instructions per weight, paired vs "
                    "plain): " + ", ".join(f"{o[2:].replace('x', '×')} {a:.2f} vs {b:.2f}"
                                            for o, (a, b) in sgd.items() if a and b)
                    + ". The benchmark's gradients and inputs are random: nearly every step "
                    "is non-zero (mean magnitude in the tens), so the paired kernel takes its "
                    "dense path, four steps per weight word, about what the plain kernel costs "
                    "(≈ 8 per weight). In training steps are small (1.6 % non-zero on the "
                    "digits MLP) and it walks only the rows with a gradient and the inputs "
                    "off their zero point, 4 instructions per weight visited and 11 per "
                    "non-zero step (see the paired layout above).")
    bars.append(f"- **Backward GEMMs ≤ 2.0: {met(bwd, 2.0)}** for the FC and conv input and "
                f"weight gradients ({_range(bwd, '{:.2f}')}, M4 and M7).")
    bars.append(f"- **Depthwise ≤ 4: {met(dw_f + dw_b, 4.0)}** (forward "
                f"{' / '.join(f'{v:.2f}' for v in dw_f)}, backward {_range(dw_b, '{:.2f}')}"
                + (f"; CMSIS-NN forward {_range(c_dw, '{:.2f}')}" if c_dw else "") + ").")
    if cins:
        def shapes(board: str, edge: bool) -> list[str]:
            return [k for k in cins[board] if k.startswith("edge_") == edge]

        fro = [v for b in cins for k in shapes(b, False) if (v := over(b, k)) is not None]
        tra = {(b, k): v for b in cins for k in shapes(b, False)
               if (v := over(b, k, "cmsis_nn_train")) is not None}
        worst: dict[str, list[tuple[float, int]]] = {}
        for (b, k), v in sorted(tra.items()):
            if v > 3.0:
                x = cins[b][k]
                worst.setdefault(k.split(" ")[0], []).append(
                    (v, x["cmsis_nn_train"] - x["cmsis_nn"]))
        boards_txt = " and ".join(f"`{b}`" for b in sorted(cins))
        bars.append(f"- **cmsis_nn ≤ 3 % over the raw CMSIS-NN calls: {met(fro, 3.0)}** for "
                    f"frozen layers ({_range(fro, '{:.1f}')} % more instructions, {boards_txt})"
                    f"; a trained layer {_range(list(tra.values()), '{:.1f}')} % more"
                    + (", over 3 % at " + ", ".join(
                        f"{o} ({_range([v for v, _ in w], '{:.1f}')} %, of which the bias "
                        f"rescale {_range([float(n) for _, n in w])} instructions)"
                        for o, w in worst.items())
                       + ": its bias changes every step (see cmsis_nn above)" if worst else "")
                    + ".")
        small = sorted((cins[m4][k]["macs"], k.split(" ")[0], v,
                        cins[m4][k]["cmsis_nn"] - cins[m4][k]["cmsis_raw"])
                       for k in shapes(m4, True) if (v := over(m4, k)) is not None)
        big = [t for t in small if t[2] > 3.0]
        if big:
            bars.append(f"- **Small layers** (the benchmark's self-test shapes, `--edge`, "
                        f"M4, frozen): {len(big)} of {len(small)} over 3 %, "
                        + ", ".join(f"{o} {mc:,} MACs {v:.1f} %" for mc, o, v, n in big)
                        + f": {_range([float(t[3]) for t in big])} instructions more per "
                        "call, mostly fixed (see cmsis_nn above).")
    saves = [1 - _ipm(rows4, *k.split(" "), "dsp") / v for k, v in cmv.items()
             if _ipm(rows4, *k.split(" "), "dsp") is not None and v]
    if saves:
        bars.append(f"- **dsp vs CMSIS-NN** (the same integers): dsp needs "
                    f"{_range([100 * s for s in saves], '{:.0f}')} % fewer instructions on every "
                    "forward layer measured"
                    + ("." if cm.get("measured") == rec["measured"] else
                       f" (this run's dsp column against the CMSIS-NN column of "
                       f"{cm['measured']}).")
                    )
    return "\n".join(text + bars) + "\n\n" + _stamp(rec)


# ---------------------------------------------------------------------------- planner


def render_planner(rec: dict) -> str:
    d = rec["data"]
    kib = PLAN_BUDGET

    def pct(v: float) -> str:
        return "0 %" if v == 0 else f"{v:,.1f} %"

    def ins(v: float | None) -> str:
        return "" if v is None else f"{v:,.0f}"

    m0, m1, m2 = d["measured"]
    p = d["plans"]
    sq, ra, op = p["sqrt-n"], p["recompute-all"], p["optimal"]
    e = d["engine_without_schedule"]
    fits = "" if sq["peak"] <= d["budget"] else f" (does not fit {d['budget']:,})"
    rows = [
        "| plan | arena peak B | × 256 KiB | extra MACs | measured on QEMU M4 | insn / sample |",
        "|---|---|---|---|---|---|",
        f"| engine without a schedule (every activation and gradient, as AIfES keeps them) | "
        f"**{e:,}** | **{e / kib:.2f}** | 0 % | (test below) | |",
        f"| store-all plan, int32 sums | {m0['planned_peak']:,} | {m0['planned_peak'] / kib:.2f} "
        f"| {pct(m0['extra_macs_pct'])} | {m0['measured_peak']:,} | "
        f"{ins(m0['insn_per_sample'])} |",
        f"| store-all plan, every eligible step compact | {m1['planned_peak']:,} | "
        f"{m1['planned_peak'] / kib:.2f} | {pct(m1['extra_macs_pct'])} | "
        f"{m1['measured_peak']:,} | {ins(m1['insn_per_sample'])} |",
        f"| Chen's √n | {sq['peak']:,} | {sq['peak'] / kib:.2f}{fits} | {pct(sq['extra_pct'])} "
        "| | |",
        f"| recompute-all (the smallest feasible budget) | {ra['peak']:,} | "
        f"{ra['peak'] / kib:.2f} | {pct(ra['extra_pct'])} | | |",
        f"| **optimal in {d['budget']:,} B** | **{op['peak']:,}** (static {op['static']:,} + "
        f"region {op['region']:,}) | **{op['peak'] / kib:.2f}** | **{pct(op['extra_pct'])}** | "
        f"{m2['measured_peak']:,} | {ins(m2['insn_per_sample'])} |",
    ]
    equal = all(m["measured_peak"] == m["planned_peak"] for m in d["measured"])
    text = ("The measured arena high-water mark equals the planned peak to the byte for all "
            "three plans. " if equal else "The measured arena high-water mark DIFFERS from "
            "the planned peak. ")
    if all(m["insn_per_sample"] for m in d["measured"]):
        a, c, o = m0["insn_per_sample"], m1["insn_per_sample"], m2["insn_per_sample"]
        text += ("\"insn / sample\" is a whole fused training step (forward, loss, backward, "
                 f"update) under `-icount`: the optimal plan costs {100 * (o / a - 1):+.1f} % "
                 f"instructions over the store-all plan with int32 sums for "
                 f"+{op['extra_pct']:.1f} % forward MACs; compacting every eligible step of "
                 f"the store-all plan costs {100 * (c / a - 1):+.1f} % "
                 "(so the planner compacts only where the region needs it, "
                 f"{m2['compact_steps']} steps here).")
    r = d.get("runner")
    if r:
        own = r["data"] + r["bss"]
        text += (f" With the runner's own {own:,} B (.data {r['data']:,} B + .bss {r['bss']:,} "
                 f"B without `arena_mem`, `{r['elf']}`) the optimal plan needs "
                 f"{op['peak'] + own:,} B of {kib:,} B.")
    return "\n".join(rows) + "\n\n" + text + "\n\n" + _stamp(rec)


# ---------------------------------------------------------------------------- Zephyr


def render_zephyr(rec: dict) -> str:
    d = rec["data"]
    parts = [f"*{rec.get('note') or 'Measured in a Zephyr v3.7.1 workspace.'} Rerun there, "
             "with `ZEPHYR_BASE` set: `kilolearn docs --measure zephyr-footprint` (without it "
             "the command keeps these figures).*"]
    for m in d["measurements"]:
        reports = any("rom_report" in v for v in m["boards"].values())
        hdr = "| board | text | data | bss | ROM = text + data | RAM = data + bss |"
        sep = "|---|---|---|---|---|---|"
        if reports:
            hdr += " rom_report | ram_report |"
            sep += "---|---|"
        hdr += " of the board's |"
        sep += "---|"
        rows = [hdr, sep]
        for b, v in m["boards"].items():
            name = f"{b} (measured {v['kept_from']})" if "kept_from" in v else b
            row = (f"| {name} | {v['text']:,} | {v['data']:,} | {v['bss']:,} | "
                   f"{v['text'] + v['data']:,} | {v['data'] + v['bss']:,} |")
            if reports:
                row += (f" {v['rom_report']:,} | {v['ram_report']:,} |" if "rom_report" in v
                        else " | |")
            rows.append(row + f" {d['boards'].get(b, '')} |")
        parts.append(f"{m['what']} (measured {m['measured']}):\n\n" + "\n".join(rows))
        k = m.get("kernels")
        if k:
            parts.append(f"On {k['board']} the kernels are {k['bytes']:,} B of the ROM ("
                         + ", ".join(f"{n} {v:,} B" for n, v in k["parts"].items()) + ").")
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------- the user's loop


def render_adapt(rec: dict) -> str:
    d = rec["data"]
    a, one = d["adapt"], d["single_pass"]
    sets = list(a["before"])
    head = ("| new samples | epochs | " + " | ".join(
        f"{s}: device | numpy twin | host" for s in sets) + " |")
    sep = "|---|---|" + "---|---|---|" * len(sets)

    def p(v: float) -> str:
        return f"{100 * v:.1f}"

    rows = ["| 0 (before) | – | " + " | ".join(f"{p(a['before'][s])} | = | =" for s in sets)
            + " |"]
    def host(pt: dict, s: str) -> str:
        runs = [r[s] for r in pt["host_runs"]]
        return f"{p(pt['host'][s])} ({p(min(runs))}–{p(max(runs))})"

    for pt in a["points"]:
        rows.append(f"| {pt['n']} | {a['epochs']} | " + " | ".join(
            f"**{p(pt['device'][s])}** | {'=' if pt['agree'][s] == 1 else p(pt['twin'][s])} | "
            f"{host(pt, s)}" for s in sets) + " |")
    for pt in one["points"]:
        rows.append(f"| {pt['n']} | 1 | " + " | ".join(
            f"{p(pt['device'][s])} | {'=' if pt['agree'][s] == 1 else p(pt['twin'][s])} | –"
            for s in sets) + " |")
    steps = "\n".join(d["steps"])
    last = a["points"][-1]
    n_runs = len(last["host_runs"])
    gap = max(abs(last["device"][s] - last["host"][s]) for s in sets)
    worst = max(abs(pt["device"][s] - pt["host"][s]) for pt in a["points"] for s in sets)
    inside = sum(min(r[s] for r in pt["host_runs"]) <= pt["device"][s] <=
                 max(r[s] for r in pt["host_runs"]) for pt in a["points"] for s in sets)
    return (f"```\n{steps}\n```\n\n{head}\n{sep}\n" + "\n".join(rows) + "\n\n"
            f"Accuracy in % on QEMU {d['board']} (Cortex-M4), int8. *device*: EVAL on the board "
            "after adapting with the first N samples of `adapt.npz` from the pretrained blob; "
            "*numpy twin*: the same steps in numpy, in the device's order (=: every prediction "
            "equal to the device's: 0 points apart); *host*: the same samples and epochs "
            f"trained in numpy in its own shuffled orders, mean (min–max) of {n_runs} runs. "
            f"Device vs the host's mean: {100 * gap:.1f} points at {last['n']} samples, at "
            f"most {100 * worst:.1f} over the table; the device lies within the host runs' "
            f"range in {inside} of {len(a['points']) * len(sets)} cells (the order of the "
            "samples alone moves a result by a few points). The pulled-back `adapted.klm` on "
            f"the host (`kilolearn eval`, numpy): {p(d['eval']['accuracy'])} % on shifted-test "
            f"= the device's {p(last['device'][sets[0]])} %. Pretrained: "
            f"{p(d['fit']['test_acc'])} % on the original test set ({d['fit']['model']}, "
            f"{d['fit']['dtype']}).\n\n"
            + _stamp(rec))
