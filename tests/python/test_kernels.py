"""int8 kernels: the dsp and mve backends equal ref bit for bit (kl_bench_kernels self-test).

Runs the kernel benchmark firmware on the DSP boards (M4, M7, M33, M55), on the M3
(ref only: it must still build and run) and on the host under ASan/UBSan, and
asserts zero mismatches. Timing is printed by ``kilolearn bench-kernels``, not
tested here.
"""

from __future__ import annotations

import re

import pytest
from conftest import QEMU_BOARDS, require_target, split_target

from kilolearn.bench import kbench
from kilolearn.device import build, qemu

DSP_BOARDS = ["mps2-an386", "mps2-an500", "mps2-an505", "mps3-an547"]
OPS = ["fc64x32", "fc256x128", "conv1x1", "conv3x3", "conv3x3s2", "dw3x3", "dw3x3s2"]


@pytest.mark.parametrize("target", DSP_BOARDS + ["mps2-an385", "host-asan"])
def test_kernels_dsp_equals_ref(target: str) -> None:
    require_target(target)
    board, sanitize = split_target(target)
    r = kbench.run(board, sanitize=sanitize)
    assert r.done, f"no final line; exit {r.returncode}:\n{r.output[-2000:]}"
    bad = [m for m in r.measurements if m.mismatches]
    assert not bad, f"dsp != ref: {bad}"
    assert r.mismatches == 0 and r.returncode == 0, r.output[-2000:]
    assert r.dsp == (board in DSP_BOARDS)
    ops = {m.op for m in r.measurements}
    assert set(OPS) <= ops
    assert any(op.startswith("edge_") for op in ops)
    for op in OPS:
        for d in kbench.DIRS:
            assert r.get(op, d, "ref") is not None, (op, d)
    if r.dsp:
        # every conv / depthwise direction and the FC forward and input gradient have a dsp
        # variant (the FC weight gradient is fused into the dsp SGD step)
        for op in OPS:
            dirs = ["fwd", "bwd"] if op.startswith("fc") else list(kbench.DIRS)
            for d in dirs:
                assert r.get(op, d, "dsp") is not None, (op, d)
        # the dense layers a trained model keeps paired (n_in % 4 == 0: every FC layer of the
        # table but edge_fc37x11): the paired forward, input gradient and SGD step were checked
        # (unpaired, weight by weight, with biases and dither) against ref, and so was the
        # plain-layout forward kernel beside them
        fcs = sorted(op for op in ops if op.startswith(("fc", "edge_fc")))
        assert len(fcs) >= 8
        for op in fcs:
            assert r.get(op, "sgd", "ref") is not None, op
            assert r.get(op, "sgd", "dsp") is not None, op
            paired = op != "edge_fc37x11"
            assert (r.get(op, "fwd", "dsp_plain") is not None) == paired, op
    else:
        assert not any(m.backend == "dsp" for m in r.measurements)
    # the mve backend on the Cortex-M55 only: dense forward / input / weight gradient and the
    # three depthwise directions, each checked against ref by the firmware
    assert r.mve == (board == "mps3-an547")
    mve = {(m.op, m.direction) for m in r.measurements if m.backend == "mve"}
    if r.mve:
        want = {(op, d) for op in OPS if op.startswith(("fc", "dw")) for d in kbench.DIRS}
        assert want <= mve, want - mve
    else:
        assert not mve


@pytest.mark.parametrize("target", ["mps2-an386-cmsis-nn", "host-cmsis-nn"])
def test_kernels_cmsis_nn_equals_ref(target: str) -> None:
    """The CMSIS-NN backend's forward kernels (through arm_fully_connected_s8,
    arm_convolve_wrapper_s8, arm_depthwise_conv_wrapper_s8) equal ref bit for bit, outputs
    and saturation flag, on every layer including the odd-shaped and fallback ones."""
    require_target(target)
    board, _ = split_target(target)
    r = kbench.run(board, cmsis_nn=True)
    assert r.ok, r.output[-2000:]
    for op in {m.op for m in r.measurements}:
        cm = r.get(op, "fwd", "cmsis_nn")
        assert cm is not None and cm.mismatches == 0, op
    assert not any(m.backend == "cmsis_nn" and m.direction != "fwd" for m in r.measurements)


def test_parse_and_rows() -> None:
    text = (
        "KL kbench op conv3x3 dir fwd backend ref macs 1000 insn 9000 mismatches 0\n"
        "KL kbench op conv3x3 dir fwd backend dsp macs 1000 insn 2000 mismatches 0\n"
        "KL kbench op edge_x dir fwd backend ref macs 10 insn 90 mismatches 0\n"
        "KL kbench done dsp 1 counter 1 mismatches 0\n"
    )
    r = kbench.parse(text, "mps2-an386")
    assert r.ok and r.dsp and len(r.measurements) == 3
    assert r.rows() == [["mps2-an386", "conv3x3", "forward", "1,000", "9.00", "2.00", "4.5x"]]
    assert len(r.rows(edge=True)) == 2
    bad = kbench.parse(text.replace("mismatches 0\nKL kbench done", "mismatches 3\nKL kbench done"),
                       "b")
    assert not bad.ok and bad.mismatches == 3
    assert not kbench.parse("KL kbench op x", "b").ok


@pytest.mark.parametrize("board", QEMU_BOARDS)
def test_instruction_counter_against_known_loops(board: str) -> None:
    """The counter behind every insn figure (SysTick under -icount shift=0, 1e9 / clock
    instructions per tick: 40 on the mps2 boards at 25 MHz, 50 on the an505 at 20 MHz, 31.25 on
    the an547 at 32 MHz): a 2-instruction loop of n iterations costs 2n more than one of m < n
    iterations, to one tick per end of each timed region."""
    require_target(board)
    r = qemu.run_firmware(build.build(board, target="kl_insn_calib"), board, timeout=60)
    assert r.returncode == 0, r.stdout[-2000:]
    got = [(int(n), int(i)) for n, i in re.findall(r"KL calib n (\d+) insn (\d+)", r.stdout)]
    assert len(got) == 4, r.stdout
    tick = qemu.BOARDS[board].insn_per_tick
    for (n0, i0), (n1, i1) in zip(got, got[1:], strict=False):
        assert abs((i1 - i0) - 2 * (n1 - n0)) <= 2 * tick, (board, got)
    # and the call overhead around the loop is small (to a tick)
    assert all(-tick <= i - 2 * n <= 100 + tick for n, i in got), got


def test_parse_and_rows_mve() -> None:
    text = (
        "KL kbench op fc8 dir fwd backend ref macs 1000 insn 6000 mismatches 0\n"
        "KL kbench op fc8 dir fwd backend dsp macs 1000 insn 1500 mismatches 0\n"
        "KL kbench op fc8 dir fwd backend mve macs 1000 insn 500 mismatches 0\n"
        "KL kbench op fc8 dir wgrad backend ref macs 1000 insn 6000 mismatches 0\n"
        "KL kbench op fc8 dir wgrad backend mve macs 1000 insn 750 mismatches 0\n"
        "KL kbench done dsp 1 mve 1 counter 1 mismatches 0\n"
    )
    r = kbench.parse(text, "mps3-an547")
    assert r.ok and r.dsp and r.mve
    assert r.rows(mve=True) == [
        ["mps3-an547", "fc8", "forward", "1,000", "6.00", "1.50", "4.0x", "0.50", "3.0x"],
        ["mps3-an547", "fc8", "weight grad", "1,000", "6.00", "n/a", "n/a", "0.75", "n/a"],
    ]
    assert not kbench.parse(text.replace(" mve 1 ", " mve 0 "), "b").mve
