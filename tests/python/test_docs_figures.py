"""The measured figures of README.md and docs/*.md are generated (``kilolearn docs``,
scripts/kilolearn/tools/docfigs.py): every marked block must equal the render of its JSON in
docs/figures/, every figure must appear in exactly one block, markers must name known figures,
and one cheap figure is measured again here and held to its JSON.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
from conftest import qemu_missing

from kilolearn import cli
from kilolearn.device import build, train
from kilolearn.tools import docfigs

ROOT = build.repo_root()


def all_blocks(root: Path = ROOT) -> list[docfigs.Block]:
    return [b for p in docfigs.doc_files(root)
            for b in docfigs.blocks(p.read_text(), p.relative_to(root))]


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv)
        except SystemExit as e:
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def test_every_block_equals_its_json() -> None:
    """The drift test: a block typed by hand, or a JSON remeasured without `kilolearn docs`,
    fails here."""
    diffs, n = docfigs.sync(ROOT, write=False)
    assert n >= len(docfigs.FIGURES)
    assert not diffs, ("figure blocks that differ from docs/figures/*.json (run `kilolearn "
                       "docs` to rewrite them, `kilolearn docs --measure NAME` to remeasure):\n"
                       + "\n".join(diffs))


def test_every_figure_in_exactly_one_place() -> None:
    seen: dict[str, list[str]] = {}
    for b in all_blocks():
        seen.setdefault(b.name, []).append(f"{b.path}:{b.line}")
    for name, fig in docfigs.FIGURES.items():
        assert len(seen.get(name, [])) == 1, f"figure {name} appears at {seen.get(name, [])}"
        assert seen[name][0].split(":")[0] == fig.where, (name, seen[name], fig.where)
        assert (ROOT / docfigs.FIGURES_DIR / f"{fig.data_name}.json").is_file(), name
    stray = {p.stem for p in (ROOT / docfigs.FIGURES_DIR).glob("*.json")} - set(docfigs.FIGURES)
    assert not stray, f"JSON of no figure: {sorted(stray)}"


def test_every_json_records_how_it_was_measured() -> None:
    for name, fig in docfigs.FIGURES.items():
        if fig.source:
            continue
        rec = json.loads((ROOT / docfigs.FIGURES_DIR / f"{name}.json").read_text())
        assert rec["figure"] == name and rec["command"] == fig.command
        assert len(rec["measured"]) == 10 and rec["data"]


@pytest.mark.parametrize("text, why", [
    ("<!-- figure: no-such-figure (rerun: kilolearn docs --measure no-such-figure) -->\n"
     "x\n<!-- /figure -->\n", "unknown figure 'no-such-figure'"),
    ("<!-- figure: train-mlp (rerun: kilolearn docs --measure bench-m3) -->\n<!-- /figure -->\n",
     "malformed marker"),
    ("<!-- figure: train-mlp -->\n<!-- /figure -->\n", "malformed marker"),
    ("<!-- figure: train-mlp (rerun: kilolearn docs --measure train-mlp) -->\ntext\n",
     "has no <!-- /figure -->"),
    ("text\n<!-- /figure -->\n", "without a figure"),
    ("<!-- figure: train-mlp (rerun: kilolearn docs --measure train-mlp) -->\n"
     "<!-- figure: bench-m3 (rerun: kilolearn docs --measure bench-m3) -->\n"
     "<!-- /figure -->\n<!-- /figure -->\n", "starts inside 'train-mlp'"),
])
def test_bad_markers_fail(text: str, why: str) -> None:
    with pytest.raises(docfigs.FigureError, match=why.replace("(", r"\(")):
        docfigs.blocks("intro\n" + text, Path("doc.md"))


def test_render_of_a_hand_made_record() -> None:
    """train-mlp's block from a JSON written here, against the table typed by hand."""
    def res(dtype: str, acc: float, ref: float, insn: float, inf: float, arena: int,
            blob: int) -> dict:
        return {"board": "mps2-an386", "dtype": dtype, "epochs": 2, "device_acc": [0.5, acc],
                "reference_acc": ref, "insn_per_train_sample": insn, "insn_first_epoch": insn,
                "insn_per_inference": inf, "arena_bytes": arena, "blob_bytes": blob,
                "phases": None}

    rec = {"figure": "train-mlp", "command": "kilolearn train --epochs 2",
           "measured": "2020-01-02",
           "data": {"board": "mps2-an386", "model": "mlp", "epochs": 2, "results": [
               res("f32", 0.9296, 0.93301, 10707.6, 5036.2, 10284, 9820),
               res("s8", 0.5, 1.0, 1234567.0, 12.0, 3, 77777)]}}
    table = [
        "dtype    device test acc    numpy reference      insn/train sample    "
        "insn/inference    arena bytes    blob bytes",
        "-------  -----------------  -----------------  -------------------  "
        "----------------  -------------  ------------",
        "f32      92.96 %            93.30 %                         10,708    "
        "         5,036         10,284         9,820",
        "s8       50.00 %            100.00 %                     1,234,567    "
        "            12              3        77,777",
    ]
    expect = ("\n```\n" + "\n".join(table) + "\n```\n\n"
              "*Measured 2020-01-02: `kilolearn train --epochs 2`.*\n\n")
    assert docfigs.body(docfigs.FIGURES["train-mlp"], rec) == expect


def test_wrap_keeps_markdown() -> None:
    long = "word " * 30 + "- not a list " + "word " * 10
    out = docfigs.wrap(long.strip(), 40)
    assert all(len(x) <= 40 or " " not in x[1:] for x in out.split("\n")[:-1])
    assert not any(x.startswith("- ") for x in out.split("\n"))
    assert out.split() == long.split()
    table = "| " + "a | " * 60
    assert docfigs.wrap(table, 40) == table
    assert docfigs.wrap("- " + "item " * 30, 40).split("\n")[1].startswith("  ")


def test_check_and_rewrite(tmp_path: Path) -> None:
    """--check lists a block edited by hand (exit 1) and writes nothing; without it the block
    is rewritten from its JSON."""
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs",
                    ignore=shutil.ignore_patterns("*.png"))
    readme = tmp_path / "README.md"
    good = readme.read_text()
    b = next(b for b in all_blocks(tmp_path) if b.name == "train-mlp")
    bad = good[:b.start] + good[b.start:b.end].replace(" %", " %!", 1) + good[b.end:]
    readme.write_text(bad)
    rc, out, err = run_cli(["docs", "--check", "--root", str(tmp_path)])
    assert rc == 1 and out.strip() == f"README.md:{b.line}: figure train-mlp differs from " \
        "docs/figures/train-mlp.json", (rc, out, err)
    assert readme.read_text() == bad
    rc, out, err = run_cli(["docs", "--root", str(tmp_path)])
    assert rc == 0 and "1 of" in out and "train-mlp" in out, (out, err)
    assert readme.read_text() == good
    rc, out, _ = run_cli(["docs", "--check", "--root", str(tmp_path)])
    assert rc == 0 and "equal their JSON" in out


def test_bad_marker_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("<!-- figure: nope (rerun: kilolearn docs --measure "
                                        "nope) -->\n<!-- /figure -->\n")
    rc, out, err = run_cli(["docs", "--root", str(tmp_path)])
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "unknown figure 'nope'" in err
    rc, _, err = run_cli(["docs", "--check", "--measure", "train-mlp"])
    assert rc == 2 and "--check" in err


def test_zephyr_figure_skips_without_a_workspace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZEPHYR_BASE", raising=False)
    with pytest.raises(docfigs.Skipped, match="ZEPHYR_BASE is not set"):
        docfigs.FIGURES["zephyr-footprint"].measure()


def test_first_epoch_measured_again_equals_the_json() -> None:
    """A figure held to the code: the int8 MLP trained for one epoch on QEMU M4 now gives the
    first epoch of the recorded 20-epoch run (same seed, same order: the accuracy after epoch
    1, its instructions per sample, arena and blob bytes). A change to the engine that moves
    these numbers fails here until `kilolearn docs --measure train-mlp` is rerun."""
    if why := qemu_missing():
        pytest.skip(why)
    rec = json.loads((ROOT / docfigs.FIGURES_DIR / "train-mlp.json").read_text())
    want = next(r for r in rec["data"]["results"] if r["dtype"] == "s8")
    got = train.run(rec["data"]["board"], "s8", epochs=1, with_reference=False)
    assert (got.device_acc[0], got.insn_first_epoch, got.arena_bytes, got.blob_bytes) == \
        (want["device_acc"][0], want["insn_first_epoch"], want["arena_bytes"],
         want["blob_bytes"]), "rerun `kilolearn docs --measure train-mlp`"


def test_kernels_figure_without_a_cmsis_nn_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no CMSIS-NN tree (CI) the kernels figure keeps its cmsis_nn record (backend, raw
    CMSIS-NN and overhead columns) from the JSON; its overhead columns are the instruction counts'
    ratios: a hand-made record renders 1,020 against 1,000 instructions as +2.0 %."""
    from kilolearn.bench import kbench
    from kilolearn.tools import docfigs_measure, docfigs_render

    def fake_run(board: str, cmsis_nn: bool = False, **kw) -> kbench.KernelBench:
        assert not cmsis_nn
        ms = [kbench.Measurement(op, di, b, macs, n, 0)
              for op, macs in (("fc64x32", 2048), ("conv1x1", 4096), ("dw3x3", 1024))
              for di in ("fwd", "bwd")
              for b, n in (("ref", 7 * macs), ("dsp", macs + macs // 4))]
        return kbench.KernelBench(board, 0, True, 0, measurements=ms, done=True)

    monkeypatch.setattr(build, "cmsis_nn_dir", lambda: None)
    monkeypatch.setattr(kbench, "run", fake_run)
    with contextlib.redirect_stdout(io.StringIO()):
        data = docfigs_measure._measure_kernels()
    kept = json.loads((ROOT / "docs/figures/kernels.json").read_text())["data"]["cmsis_nn"]
    assert data["cmsis_nn"] == kept and kept["insn"]
    cm = {"measured": "2020-01-01", "board": "mps2-an386", "source": "CMSIS-NN x",
          "insn_per_mac": {"fc64x32 fwd": 1020 / 2048},
          "insn": {b: {"fc64x32 fwd": {"macs": 2048, "cmsis_nn": 1020, "cmsis_nn_train": 1100,
                                       "cmsis_raw": 1000}} for b in ("mps2-an386", "mps2-an500")}}
    rec = {"figure": "kernels", "command": "kilolearn bench-kernels", "measured": "2020-01-02",
           "data": {"boards": data["boards"], "cmsis_nn": cm}}
    text = docfigs_render.render_kernels(rec)
    row = "| fc64x32 | forward | 2,048 | 7.00 | 1.25 | 5.6× |  | 0.50 | 0.49 | +2.0 % | +10.0 % |"
    assert row in text
    assert "cmsis_nn ≤ 3 % over the raw CMSIS-NN calls: met** for frozen layers (2.0 % more" in text
    assert "over 3 % at fc64x32 (10.0 %, of which the bias rescale 80 instructions)" in text
    assert "measured 2020-01-01" in text
