"""int8 forward kernels: dsp == ref bit for bit on random layers (kl_fuzz_fwd).

Random conv / FC shapes (channels and im2col lengths with and without a multiple of four,
padding, strides, 1x1 in place), zero points, activations, output and bias shifts (inside
and outside the fast output stage) and biases near the int32 limits; outputs and the
saturation flag must equal ref on the DSP boards.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import require_target

from kilolearn import build, qemu


@pytest.mark.parametrize("board", ["mps2-an386", "mps2-an500", "mps2-an505"])
def test_forward_fuzz_dsp_equals_ref(board: str) -> None:
    require_target(board)
    exe = build.build(board, target="kl_fuzz_fwd")
    r = qemu.run_firmware(Path(exe), board, job=None, timeout=600)
    last = [ln for ln in r.stdout.splitlines() if ln.startswith("KL fuzz done")]
    assert last, r.stdout[-2000:]
    f = last[-1].split()
    assert int(f[4]) > 10000 and f[6] == "0", r.stdout[-2000:]
    assert r.returncode == 0
