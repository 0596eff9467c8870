"""int8 conv input gradient: dsp == ref bit for bit on random geometries (kl_fuzz_bwd).

Kernels 1-5 (also non-square), strides 1-3, odd channel counts, output channels with and
without a multiple of four, padding, and row bands (shifted pad_t, fewer output rows) as
the engine passes them; the scratch must stay within kl_conv_s8_scratch().
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import require_target

from kilolearn import build, qemu


@pytest.mark.parametrize("board", ["mps2-an386", "mps2-an500"])
def test_conv_input_grad_fuzz_dsp_equals_ref(board: str) -> None:
    require_target(board)
    exe = build.build(board, target="kl_fuzz_bwd")
    r = qemu.run_firmware(Path(exe), board, job=None, timeout=600)
    last = [ln for ln in r.stdout.splitlines() if ln.startswith("KL fuzz done")]
    assert last, r.stdout[-2000:]
    f = last[-1].split()
    assert int(f[4]) > 500 and f[6] == "0", r.stdout[-2000:]
    assert r.returncode == 0
